#!/usr/bin/env bash
# One server's large commits do not stall the staging for another: web1 (blockrep_hostile_peer
# with web1's real certificate and key) commits a point of 400,000 records and then three empty
# incremental points, each of which loads and rebuilds a 400,000-entry index, while db1 pings the
# staging every 20 ms. Commits run on the staging's store worker threads, so db1's round trips stay
# short (p99 < 50 ms, printed beside the commit times).
source "$(dirname "$0")/lib.sh"

records=${BIG_COMMIT_RECORDS:-400000}
make_keys web1 db1
start_staging
peer() {  # mode id args...
  local mode=$1 id=$2
  shift 2
  "$BIN/blockrep_hostile_peer" "$mode" --staging "127.0.0.1:$STAGING_PORT" --server-id "$id" \
    --key "$KEYS/data-$id.key" --tls-cert "$KEYS/agent-$id.crt" --tls-key "$KEYS/agent-$id.key" --tls-ca "$KEYS/ca.crt" "$@"
}
peer ping db1 --seconds 600 >"$WORK/ping.out" &
ping_pid=$!
PIDS+=($ping_pid)
sleep 0.5
peer big web1 --records "$records" --points 3 >"$WORK/big.out" 2>"$WORK/big.err" || fail "web1: $(cat "$WORK/big.err")"
cat "$WORK/big.out"
pkill -TERM -P "$ping_pid"  # the tool under the subshell: it prints its line and exits
wait "$ping_pid" || fail "the pinging session failed"
read -r _ n _ p50 _ p99 _ max <"$WORK/ping.out"
echo "db1 meanwhile: $n pings, round trip p50 $p50 ms, p99 $p99 ms, max $max ms"
grep -c "committed" "$WORK/staging.log" | grep -qx 4 || fail "expected 4 committed points in the staging log"
awk -v p="$p99" 'BEGIN { exit !(p < 50) }' || fail "db1's PING round trip p99 $p99 ms during web1's commits (limit 50 ms)"
pass "web1 committed 4 points over a $records-entry index; db1's round trips stayed short"
