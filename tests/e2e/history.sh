#!/usr/bin/env bash
# A compromised agent cannot erase the history before it (docs/FORMAT.md, Point times). With the
# server's real certificate and data key, blockrep_hostile_peer commits empty, "consistent"
# points to the real staging: backdated just past each genuine point, dated ahead of the
# staging's clock, and many at the present time. The first two are refused in one clear line; the
# third are stored, and with --min-retention every genuine point stays listed and restores
# byte-identical. The same staging restarted without --min-retention shows what it prevented.
source "$(dirname "$0")/lib.sh"

make_keys web1
head -c 6M /dev/urandom >"$WORK/vol.img"
truncate -s 16M "$WORK/vol.img"
STAGING_RETENTION=1h:1d start_staging --min-retention 1h
declare -A expected
for p in 1 2 3 4; do
  agent web1 --volume "$WORK/vol.img" >/dev/null 2>>"$WORK/agent.log" || fail "genuine point $p: $(tail -n1 "$WORK/agent.log")"
  expected[$p]=$(sha "$WORK/vol.img")
  dd if=/dev/urandom of="$WORK/vol.img" bs=64k count=4 seek=$((p * 13)) conv=notrunc status=none
  sleep 1  # list shows whole seconds: one genuine point per second
done
point_time_ns() {  # id -> the listed time, in ns (list prints milliseconds)
  local iso
  iso=$(recover list --store "$STORE" --server-id web1 --json |
    python3 -c "import json,sys; print(next(p['time'] for p in json.load(sys.stdin) if p['id'] == $1))")
  echo $(($(date -d "$iso" +%s%N) + 1000000))
}
hostile() {
  "$BIN/blockrep_hostile_peer" points --staging "127.0.0.1:$STAGING_PORT" --server-id web1 \
    --key "$KEYS/data-web1.key" --tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" \
    --tls-ca "$KEYS/ca.crt" --volume-bytes $((16 << 20)) "$@"
}

# Backdated just after each genuine point (the attack that used to expire them one by one).
args=()
for p in 1 2 3 4; do args+=(--time "$(point_time_ns "$p")"); done
hostile "${args[@]}" >"$WORK/backdated.out"
cat "$WORK/backdated.out"
[[ $(grep -c "refused: point 5 is dated .*, not after the chain's last point 4 .*: point times only move forward" \
  "$WORK/backdated.out") -eq 4 ]] || fail "backdated points were not all refused"
# Dated an hour ahead: refused too (it would hold the chain's clock hostage).
hostile --time now+3600 >"$WORK/ahead.out"
cat "$WORK/ahead.out"
grep -q "refused: point 5 is dated .*, 3[56][0-9][0-9] s ahead of the staging's clock .*set the clocks of the agent and the staging (NTP)" \
  "$WORK/ahead.out" || fail "a point dated an hour ahead was not refused"

# At the present time the staging cannot tell forged from genuine: 12 points are stored. Under
# --retention 1h:1d each would outrank the genuine, inconsistent points of its hour.
args=()
for _ in $(seq 1 12); do args+=(--time now); done
hostile "${args[@]}" >"$WORK/now.out"
[[ $(grep -c ": acknowledged" "$WORK/now.out") -eq 12 ]] || fail "forged points at the present time: $(cat "$WORK/now.out")"
listed() { recover list --store "$STORE" --server-id web1 --json | python3 -c "import json,sys; print(' '.join(str(p['id']) for p in json.load(sys.stdin)))"; }
ids=$(listed)
echo "listed with --min-retention 1h: $ids"
for p in 1 2 3 4; do
  [[ " $ids " == *" $p "* ]] || fail "genuine point $p was expired by forged ones (listed: $ids)"
  rm -rf "$WORK/out"
  recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point "$p" --output "$WORK/out" >/dev/null ||
    fail "genuine point $p does not restore"
  [[ $(sha "$WORK/out/vol-0.img") == "${expected[$p]}" ]] || fail "genuine point $p restores other bytes"
done
pass "every genuine point younger than --min-retention is listed and restores byte-identical"

# A forged point itself restores to nothing the agent sealed: its seal's MAC is not the key's.
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point 16 --output "$WORK/forged" \
  >/dev/null 2>"$WORK/forged.err" && fail "a forged point restored"
echo "forged point 16: $(cat "$WORK/forged.err")"
grep -q "seal" "$WORK/forged.err" || fail "the forged point was not refused for its seal"

# What --min-retention prevented: without it, a policy that keeps only the newest point (the
# forged one) expires every genuine point at once. (1h:1d would too, unless the run straddles
# the hour.)
stop_staging
STAGING_RETENTION=none start_staging
ids=$(listed)
echo "listed after a restart without --min-retention: $ids"
for p in 1 2 3 4; do [[ " $ids " != *" $p "* ]] || fail "point $p survived without --min-retention: the test shows nothing"; done
pass "without --min-retention the forged points would have expired points 1-4"
