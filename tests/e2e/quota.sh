#!/usr/bin/env bash
# A server over its quota stops alone: with --quota-bytes 12M, web1 (20 MiB of data) is refused with
# "quota exceeded" and its --once agent waits (STALLED), keeping what it has to send, while db1
# keeps replicating. Restarted with a larger quota (same port), the staging lets web1 finish,
# byte-identical.
# Bad quota flags are refused in one line.
source "$(dirname "$0")/lib.sh"

make_keys web1 db1
head -c 20M /dev/urandom >"$WORK/web.img"
truncate -s 32M "$WORK/web.img"
head -c 2M /dev/urandom >"$WORK/db.img"
for bad in "--quota-bytes 12X" "--quota-bytes -1" "--quota-records-per-point 0"; do
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
