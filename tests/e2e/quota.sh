#!/usr/bin/env bash
# A server over its quota stops alone: with --quota-bytes 12M, web1 (20 MiB of data) is refused with
# "quota exceeded" and its --once agent waits (STALLED), keeping what it has to send, while db1
# keeps replicating. Restarted with a larger quota (same port), the staging lets web1 finish,
# byte-identical.
# --quota-packs 16: app1 commits one point per session (a small pack each); the 17th session is
# refused with "quota exceeded", which starts a compaction that merges the small packs, and the
# next session goes through.
# Bad quota flags are refused in one line.
source "$(dirname "$0")/lib.sh"

make_keys web1 db1 app1
head -c 20M /dev/urandom >"$WORK/web.img"
truncate -s 32M "$WORK/web.img"
head -c 2M /dev/urandom >"$WORK/db.img"
for bad in "--quota-bytes 12X" "--quota-bytes -1" "--quota-records-per-point 0" "--quota-packs 4"; do
  rc=0
  # shellcheck disable=SC2086
  "$BIN/blockrep-staging" --listen 127.0.0.1:0 --store "$STORE" $bad >"$WORK/bad.out" 2>&1 || rc=$?
  [[ $rc -ne 0 && $(wc -l <"$WORK/bad.out") -eq 1 ]] || fail "$bad: exit $rc, $(cat "$WORK/bad.out")"
  echo "$bad: $(cat "$WORK/bad.out")"
done

start_staging --quota-bytes 12M
agent web1 --volume "$WORK/web.img" --compress none >"$WORK/web.out" 2>"$WORK/web.err" &
WEB=$!
PIDS+=($WEB)
for _ in $(seq 1 100); do grep -q "quota exceeded" "$WORK/web.err" && break; sleep 0.1; done
grep -q "staging refused: quota exceeded: server 'web1': its packs would hold [0-9]* bytes, over its quota of 12582912 (--quota-bytes)" \
  "$WORK/web.err" || fail "web1 was not told its quota is exceeded: $(cat "$WORK/web.err")"
grep -m1 "quota exceeded" "$WORK/web.err"
kill -0 "$WEB" 2>/dev/null || fail "web1's --once gave up instead of waiting: $(tail -n 2 "$WORK/web.err")"
for p in 1 2; do
  agent db1 --volume "$WORK/db.img" >/dev/null 2>"$WORK/db.err" || fail "db1 point $p while web1 is over quota: $(tail -n 1 "$WORK/db.err")"
  dd if=/dev/urandom of="$WORK/db.img" bs=64k count=2 seek=$((p * 5)) conv=notrunc status=none
done
recover list --store "$STORE" --server-id web1 --json 2>/dev/null | grep -q '"id"' && fail "web1 has a point over its quota"
pass "web1 over quota waits; db1 replicated 2 points meanwhile"

stop_staging
STAGING_LISTEN_PORT=$STAGING_PORT start_staging --quota-bytes 64M
wait "$WEB" || fail "web1 did not finish once the quota was raised: $(tail -n 2 "$WORK/web.err")"
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point latest --output "$WORK/out" >/dev/null
cmp -s "$WORK/out/vol-0.img" "$WORK/web.img" || fail "web1's point differs from its volume"
pass "with the quota raised web1 finished, byte-identical"

stop_staging
STAGING_LISTEN_PORT=$STAGING_PORT start_staging --quota-packs 16
one_point() {
  "$BIN/blockrep_hostile_peer" big --staging "127.0.0.1:$STAGING_PORT" --server-id app1 --key "$KEYS/data-app1.key" \
    --tls-cert "$KEYS/agent-app1.crt" --tls-key "$KEYS/agent-app1.key" --tls-ca "$KEYS/ca.crt" --records 1 --points 0
}
for i in $(seq 1 16); do one_point >/dev/null 2>"$WORK/app.err" || fail "app1 session $i under its pack quota: $(cat "$WORK/app.err")"; done
packs=$(ls "$STORE/servers/app1/packs" | wc -l)
[[ $packs -eq 16 ]] || fail "expected 16 packs after 16 sessions, found $packs"
one_point >/dev/null 2>"$WORK/app.err" && fail "a 17th pack was accepted over --quota-packs 16"
grep -q "quota exceeded: server 'app1': it has 16 pack files, its quota (--quota-packs 16)" "$WORK/app.err" ||
  fail "app1 was not told its pack quota is reached: $(cat "$WORK/app.err")"
cat "$WORK/app.err"
for _ in $(seq 1 100); do grep -q "server 'app1': compacted" "$WORK/staging.log" && break; sleep 0.1; done
grep "server 'app1': compacted" "$WORK/staging.log" || fail "no compaction merged app1's small packs"
one_point >/dev/null 2>"$WORK/app.err" || fail "app1 after the compaction: $(cat "$WORK/app.err")"
packs=$(ls "$STORE/servers/app1/packs" | wc -l)
echo "app1: $packs pack files after the merge and one more session"
((packs <= 16)) || fail "app1 has $packs packs"
# Without --key: the peer seals its records but not its points (its seal MACs are zeros).
recover verify --store "$STORE" --server-id app1 >/dev/null || fail "verify (checksums, placement) after the merge"
pass "app1 at its pack quota was refused, its small packs merged, and it went on"
