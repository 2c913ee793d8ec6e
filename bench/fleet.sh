#!/usr/bin/env bash
# P8 and the staging's part of P6 (docs/PERFORMANCE.md): 64 agents at once into one staging,
# aggregate ingest vs. one agent alone; the staging's peak RSS meanwhile; and its RSS per idle
# session. Each agent protects its own 64 MiB image file (BENCH_VOLUME_MIB): half executables and
# libraries from /usr (compressible), half random bytes. One agent syncs alone first (the best of
# BENCH_ROUNDS, default 2, each a new server-id); then BENCH_AGENTS (default 64) agents, each
# a new server-id, start together, and ingest is the bytes of all their volumes over the wall
# time from the first start to the last exit. The page cache is dropped before each run.
# Every agent runs --once over TLS to 127.0.0.1. Then the same agents run continuously (scan
# tracker, a point an hour): each sends its rescan and stays connected, idle; the staging's RSS
# with them all connected, less its RSS before they came, over their number is the memory of an
# idle session.
# Needs root (dropping the page cache). Usage: sudo bench/fleet.sh
# With BENCH_ROWS=FILE it appends its table rows to FILE (bench/run.sh collects them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "bench/fleet.sh: needs root (dropping the page cache)" >&2; exit 1; }
"$root/scripts/setup.sh"
"$root/scripts/build.sh" "$root/build" >/dev/null
BIN=$root/build/bin
source "$root/bench/lib.sh"
AGENTS=${BENCH_AGENTS:-64}
ROUNDS=${BENCH_ROUNDS:-2}
VOLUME_MIB=${BENCH_VOLUME_MIB:-64}
W=$(mktemp -d "${BENCH_DIR:-/tmp}/blockrep-fleet.XXXXXX")
SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null || true
  wait 2>/dev/null || true
  [[ -n ${BENCH_KEEP:-} ]] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT

ids=()
for i in $(seq 1 "$ROUNDS"); do ids+=("alone$i"); done
for i in $(seq 1 "$AGENTS"); do ids+=("fleet$i"); done
keygen_args=()
for id in "${ids[@]}"; do keygen_args+=(--server-id "$id"); done
"$BIN/blockrep-keygen" --out "$W/keys" "${keygen_args[@]}" >/dev/null

echo "building $AGENTS + 1 volumes of $VOLUME_MIB MiB in $W ..." >&2
half=$((VOLUME_MIB / 2))
# Executables from /usr/bin (370 MiB here) up to half the volume, then random bytes.
find /usr/bin -maxdepth 1 -type f -print0 | xargs -0 cat 2>/dev/null | head -c "${half}M" >"$W/template.img" || true
head -c "$((VOLUME_MIB - half))M" /dev/urandom >>"$W/template.img"
[[ $(stat -c %s "$W/template.img") -eq $((VOLUME_MIB << 20)) ]] || { echo "bench/fleet.sh: could not build the template volume" >&2; exit 1; }
for id in "${ids[@]}"; do cp "$W/template.img" "$W/$id.img"; done

start_staging --retention all
agent() {  # server-id
  "$BIN/blockrep-agent" --staging "127.0.0.1:$PORT" --server-id "$1" --key "$W/keys/data-$1.key" \
    --tls-cert "$W/keys/agent-$1.crt" --tls-key "$W/keys/agent-$1.key" --tls-ca "$W/keys/ca.crt" \
    --volume "$W/$1.img" --once >"$W/$1.out" 2>"$W/$1.err" ||
    { echo "bench/fleet.sh: agent $1 failed: $(tail -n 1 "$W/$1.err")" >&2; return 1; }
}
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
volume_bytes=$((VOLUME_MIB << 20))

alone=()
for r in $(seq 1 "$ROUNDS"); do
  drop_caches
  t0=$(now)
  agent "alone$r"
  t1=$(now)
  alone+=("$(mbps "$volume_bytes" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")")
done
alone_mbps=$(printf '%s\n' "${alone[@]}" | sort -n | tail -n 1)

drop_caches
pids=()
t0=$(now)
for i in $(seq 1 "$AGENTS"); do
  agent "fleet$i" &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
t1=$(now)
((failed == 0)) || exit 1
wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
fleet_mbps=$(mbps "$((volume_bytes * AGENTS))" "$wall_s")
staging_hwm_mib=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$SPID/status")
ratio=$(awk -v a="$fleet_mbps" -v b="$alone_mbps" 'BEGIN { printf "%.2f", a / b }')
met=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8 ? "yes" : "NO") }')

# Every agent's point restores identical: the figure is only worth something if the data landed.
for id in "fleet1" "fleet$AGENTS"; do
  rm -rf "$W/out"
  "$BIN/blockrep-recover" restore --store "$W/store" --server-id "$id" --key "$W/keys/data-$id.key" \
    --point latest --output "$W/out" >/dev/null
  cmp "$W/out/vol-0.img" "$W/$id.img" || { echo "bench/fleet.sh: $id restores different data" >&2; exit 1; }
done
sessions=$(grep -c "connected from" "$W/staging.log" || true)

# Idle sessions: the fleet's agents again, continuous, each idle once its rescan is acknowledged.
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$SPID/status"; }
sleep 3  # the closed sessions' memory is given back within a second or two
rss_before_mib=$(rss_mib)
idle_pids=()
for i in $(seq 1 "$AGENTS"); do
  id=fleet$i
  "$BIN/blockrep-agent" --staging "127.0.0.1:$PORT" --server-id "$id" --key "$W/keys/data-$id.key" \
    --tls-cert "$W/keys/agent-$id.crt" --tls-key "$W/keys/agent-$id.key" --tls-ca "$W/keys/ca.crt" \
    --volume "$W/$id.img" --tracker scan --point-interval 1h --state-dir "$W/state-$id" 2>"$W/$id.idle.err" &
  idle_pids+=($!)
done
for _ in $(seq 1 600); do
  acked=$( (grep -l "acknowledged" "$W"/fleet*.idle.err 2>/dev/null || true) | wc -l)
  [[ $acked -ge $AGENTS ]] && break
  sleep 0.5
done
[[ $acked -ge $AGENTS ]] || { echo "bench/fleet.sh: only $acked of $AGENTS continuous agents got their point acknowledged" >&2; exit 1; }
sleep 5  # past the staging's idle trim (2 s) and its once-a-second return of memory
rss_idle_mib=$(rss_mib)
connected=$(( $(grep -c "connected from" "$W/staging.log") - sessions ))
kill -TERM "${idle_pids[@]}" 2>/dev/null || true
wait "${idle_pids[@]}" 2>/dev/null || true
per_idle_mib=$(awk -v a="$rss_idle_mib" -v b="$rss_before_mib" -v n="$AGENTS" 'BEGIN { printf "%.2f", (a - b) / n }')
idle_met=$(awk -v r="$per_idle_mib" 'BEGIN { print (r <= 4 ? "yes" : "NO") }')
peak_met=$(awk -v r="$staging_hwm_mib" -v n="$AGENTS" 'BEGIN { print (n < 64 ? "-" : (r <= 256 ? "yes" : "NO")) }')

printf '\n%-52s %12s %10s %6s\n' "figure ($VOLUME_MIB MiB volume per agent, TLS on 127.0.0.1)" "blockrep" "target" "met"
printf '%-52s %12s %10s %6s\n' "one agent alone, ingest (MB/s, best of $ROUNDS)" "$alone_mbps" "-" ""
printf '%-52s %12s %10s %6s\n' "$AGENTS agents at once, aggregate ingest (MB/s)" "$fleet_mbps" "-" ""
printf '%-52s %12s %10s %6s\n' "P8 aggregate / alone" "$ratio" ">= 0.8" "$met"
printf '%-52s %12s %10s %6s\n' "staging peak RSS, $AGENTS agents syncing at once (MiB)" "$staging_hwm_mib" "<= 256" "$peak_met"
printf '%-52s %12s %10s %6s\n' "staging RSS per idle session, $connected idle (MiB)" "$per_idle_mib" "<= 4" "$idle_met"
echo "alone rounds (MB/s): ${alone[*]}; $AGENTS agents: ${wall_s} s for $((VOLUME_MIB * AGENTS)) MiB"
echo "staging RSS: ${rss_before_mib} MiB with no session, ${rss_idle_mib} MiB with $connected idle sessions"
if [[ -n ${BENCH_ROWS:-} ]]; then
  printf '| P8 %d agents at once, aggregate ingest (MB/s) | %s | | | | | %d agents/1 agent (%s MB/s) %s | >= 0.8 | %s |\n' \
    "$AGENTS" "$fleet_mbps" "$AGENTS" "$alone_mbps" "$ratio" "$met" >>"$BENCH_ROWS"
  printf '| P6 staging peak RSS, %d agents syncing at once (MiB) | %s | | | | | | <= 256 | %s |\n' \
    "$AGENTS" "$staging_hwm_mib" "$peak_met" >>"$BENCH_ROWS"
  printf '| P6 staging RSS per idle session, %d idle (MiB) | %s | | | | | %s MiB with none, %s with them | <= 4 | %s |\n' \
    "$connected" "$per_idle_mib" "$rss_before_mib" "$rss_idle_mib" "$idle_met" >>"$BENCH_ROWS"
fi
