#!/usr/bin/env bash
# A staging frontend whose lease was taken over cannot commit. Frontends A and B share a bucket
# prefix on a real Ceph RGW (3 s leases). A session of web1 on A takes the lease; A is paused
# (SIGSTOP) with that session's point 1 (records, SEAL, END_POINT) in its socket. Past the lease,
# web1's agent commits point 1 through B (B takes the lease over and fences the manifest). A is
# resumed and handles END_POINT: its commit is refused, and the bucket holds B's point, restored
# identical. A recovery through A then reads the bucket's chain, not A's cache, also of a server
# A never saw. Runs under the `rgw` CTest fixture; skips (77) without a gateway.
source "$(dirname "$0")/lib.sh"
[[ -n ${BLOCKREP_S3_ENDPOINT:-} ]] || { echo "SKIP: no Ceph RGW (run through tests/rgw/with_rgw.sh)"; exit 77; }

BUCKET=blockrep-e2e
URL="s3://$BUCKET/fence-$$"
S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS"
  --s3-region default --s3-lease-seconds 3)
STORE=$URL
make_keys web1 db1 nosuch1
mkdir -p "$WORK/empty"
bash "$(dirname "$0")/../rgw/put_tree.sh" "$WORK/empty" "$BUCKET" unused >/dev/null || fail "create the bucket"

# image NAME: 16 MiB, zero but for 32 KiB of random bytes at 1 MiB.
image() {
  truncate -s 16M "$WORK/$1"
  head -c 32K /dev/urandom | dd of="$WORK/$1" bs=32K seek=32 conv=notrunc status=none
}
image b.img

start_staging "${S3[@]}" --s3-cache "$WORK/cache-a" --frontend-name A
A_PID=$STAGING_PID A_PORT=$STAGING_PORT
start_staging "${S3[@]}" --s3-cache "$WORK/cache-b" --frontend-name B
B_PID=$STAGING_PID B_PORT=$STAGING_PORT
PIDS+=("$A_PID" "$B_PID")

# web1's session on A (blockrep_hostile_peer with web1's real certificate and key, in its "stall"
# mode): HELLO (A takes the lease), then A is paused, then the point's 16 records, SEAL and
# END_POINT go into A's socket.
"$BIN/blockrep_hostile_peer" stall --staging "127.0.0.1:$A_PORT" --server-id web1 --key "$KEYS/data-web1.key" \
  --tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" --tls-ca "$KEYS/ca.crt" --records 16 \
  --go-file "$WORK/go" >"$WORK/peer.out" 2>&1 &
PEER=$!
PIDS+=("$PEER")
for _ in $(seq 1 200); do grep -q "hello ok" "$WORK/peer.out" && break; sleep 0.05; done
grep -q "hello ok" "$WORK/peer.out" || fail "A did not accept web1's HELLO: $(cat "$WORK/peer.out")"
kill -STOP "$A_PID"
touch "$WORK/go"
socket_settled "$A_PORT" ||
  { kill -CONT "$A_PID"; fail "point 1's END_POINT never reached A's socket (send queue $SOCKET_TX, receive queue $SOCKET_RX bytes)"; }
pass "A holds web1's lease and is paused with point 1 whole in its socket ($SOCKET_RX bytes)"

sleep 4  # A's 3 s lease runs out
"$BIN/blockrep-agent" --staging "127.0.0.1:$B_PORT" --server-id web1 --key "$KEYS/data-web1.key" --once \
  --volume "$WORK/b.img" --state-dir "$WORK/state-b" >/dev/null 2>"$WORK/agent-b.log" ||
  fail "point 1 through B: $(tail -n 3 "$WORK/agent-b.log")"
grep -q "server 'web1': this frontend holds its lease now (token 2)" "$WORK/staging.log" ||
  fail "B did not take the lease over with token 2"
pass "B took the lease over (token 2) and committed point 1"

kill -CONT "$A_PID"
wait "$PEER" || true
answer=$(cat "$WORK/peer.out")
[[ $answer == *"point 1 refused: "* ]] || fail "A's point 1 was not refused: $answer"
[[ $(grep -c "point 1 committed" "$WORK/staging.log") -eq 1 ]] || fail "point 1 was committed twice (by A too)"
pass "A, resumed, could not commit: ${answer#*refused: }"

# Recovery through A, which does not hold the lease: it reads the bucket's chain (B's point 1),
# not its own cache's (no point), and restores B's point identical.
recover list --staging "127.0.0.1:$A_PORT" --server-id web1 --key "$KEYS/data-web1.key" --json >"$WORK/list-a.json" ||
  fail "list through A"
[[ $(grep -c '"id"' "$WORK/list-a.json") -eq 1 ]] || { cat "$WORK/list-a.json" >&2; fail "A does not list B's point 1"; }
recover restore --staging "127.0.0.1:$A_PORT" --server-id web1 --key "$KEYS/data-web1.key" --point 1 --output "$WORK/out-a" \
  >/dev/null || fail "restore of point 1 through A"
cmp "$WORK/out-a/vol-0.img" "$WORK/b.img" || fail "point 1 restored through A is not B's"
pass "recovery through A reads the bucket's chain: B's point 1 listed and restored identical"
# A server A has never seen (its agent only ever reached B, after A started): a restore through
# A gets it from the bucket too. One in neither place is refused in one line.
image db.img
"$BIN/blockrep-agent" --staging "127.0.0.1:$B_PORT" --server-id db1 --key "$KEYS/data-db1.key" --once \
  --volume "$WORK/db.img" --state-dir "$WORK/state-db" >/dev/null 2>"$WORK/agent-db.log" ||
  fail "db1's point 1 through B: $(tail -n 3 "$WORK/agent-db.log")"
[[ ! -d $WORK/cache-a/servers/db1 ]] || fail "A's cache holds db1 before any reader asked"
recover restore --staging "127.0.0.1:$A_PORT" --server-id db1 --key "$KEYS/data-db1.key" --point latest --output "$WORK/out-db" \
  >/dev/null || fail "restore of db1 through A"
cmp "$WORK/out-db/vol-0.img" "$WORK/db.img" || fail "db1 restored through A differs"
rc=0
recover list --staging "127.0.0.1:$A_PORT" --server-id nosuch1 --key "$KEYS/data-nosuch1.key" >/dev/null 2>"$WORK/err" || rc=$?
((rc != 0)) && grep -q "no recovery points" "$WORK/err" || fail "a server in neither the cache nor the bucket, through A: exit $rc, $(cat "$WORK/err")"
pass "a server A never saw, replicated through B, restores identical through A; a server nowhere is refused: $(cat "$WORK/err")"

kill -TERM "$A_PID" "$B_PID"
wait "$A_PID" "$B_PID" || fail "a frontend exited non-zero on SIGTERM"
STAGING_PID=
recover list --store "$URL" "${S3[@]:0:8}" --server-id web1 --json >"$WORK/list.json" || fail "list from the bucket"
[[ $(grep -c '"id"' "$WORK/list.json") -eq 1 ]] || { cat "$WORK/list.json" >&2; fail "expected 1 point in the bucket"; }
recover restore --store "$URL" "${S3[@]:0:8}" --server-id web1 --key "$KEYS/data-web1.key" --point 1 --output "$WORK/out" >/dev/null ||
  fail "restore point 1 from the bucket"
cmp "$WORK/out/vol-0.img" "$WORK/b.img" || fail "point 1 in the bucket is not B's"
pass "the bucket holds B's point 1, restored identical; A's never reached it"
