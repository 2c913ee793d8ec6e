#!/usr/bin/env bash
# The systemd units in scripts/ are valid (systemd-analyze verify) and sandboxed: the staging runs
# as a dynamic user with no capabilities and a read-only system; the agent keeps only the
# capabilities eBPF tracking and FIFREEZE need. Prints systemd's exposure score of each.
source "$(dirname "$0")/lib.sh"
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed" >&2; exit 77; }
src=$(dirname "$0")/../../scripts
for u in agent staging; do
  sed "s|/usr/local/bin/|$BIN/|" "$src/blockrep-$u.service" >"$WORK/blockrep-$u.service"
done
systemd-analyze verify "$WORK"/blockrep-*.service 2>"$WORK/verify.err" || fail "systemd-analyze verify: $(cat "$WORK/verify.err")"
[[ ! -s $WORK/verify.err ]] || fail "systemd-analyze verify warned: $(cat "$WORK/verify.err")"
score() { systemd-analyze security --offline=true "$WORK/blockrep-$1.service" 2>/dev/null | grep -o "exposure level for blockrep-$1.service: [0-9.]*" | awk '{print $NF}'; }
agent=$(score agent)
staging=$(score staging)
echo "systemd exposure (0 safest .. 10): staging $staging, agent $agent"
[[ -n $agent && -n $staging ]] || fail "no exposure score from systemd-analyze security --offline"
awk -v s="$staging" 'BEGIN { exit !(s <= 2.0) }' || fail "staging exposure $staging (want <= 2.0)"
awk -v s="$agent" 'BEGIN { exit !(s <= 5.0) }' || fail "agent exposure $agent (want <= 5.0)"
grep -q '^DynamicUser=yes' "$src/blockrep-staging.service" || fail "the staging does not run as a dynamic user"
grep -q '^CapabilityBoundingSet=$' "$src/blockrep-staging.service" || fail "the staging keeps capabilities"
pass "units verify; staging unprivileged and sandboxed"
