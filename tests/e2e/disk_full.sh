#!/usr/bin/env bash
# The staging's store fills up (a small ext4 on a loop device): the staging stops acknowledging and
# says so in one line, the agent shows STALLED (staging full) and backs off keeping what it has to
# send, every acknowledged point still restores identical; once space is freed the same agent
# finishes its point without being restarted.
# With E2E_STORE=s3 (lib.sh) the store is a bucket of its own on the Ceph RGW and "full" is its
# quota (radosgw-admin), raised to let the agent finish; the injected manifest ENOSPC is the
# directory's part only.
[[ ${E2E_STORE:-dir} == s3 ]] && E2E_S3_BUCKET=blockrep-full-$$
source "$(dirname "$0")/lib.sh"
need_root "disk_full"

make_keys full1
if [[ ${#STORE_S3[@]} -eq 0 ]]; then
  truncate -s 48M "$WORK/storefs.img"
  loop_attach "$WORK/storefs.img"
  mkfs.ext4 -q -F -m 0 -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP"
  mkdir "$WORK/storefs"
  mount "$LOOP" "$WORK/storefs"
  MOUNTS=("$WORK/storefs")
  STORE=$WORK/storefs/store
  # Leave ~20 MiB free: enough for the first point (12 MiB of random data), not for the second (16).
  avail_kib() { df --output=avail -k "$WORK/storefs" | tail -n1 | tr -d ' '; }
  fallocate -l $(( ($(avail_kib) - 20 * 1024) * 1024 )) "$WORK/storefs/filler"
  make_room() { rm "$WORK/storefs/filler"; }
else
  # The bucket's quota: 20 MiB, room for the first point (12 MiB), not for the second (16 more).
  bucket_quota() {
    radosgw-admin --conf "$BLOCKREP_RGW_CONF" -n client.admin quota "$@" --quota-scope=bucket --bucket="$S3_BUCKET" >/dev/null 2>&1 ||
      fail "radosgw-admin quota $*"
  }
  bucket_quota set --max-size=$((20 << 20))
  bucket_quota enable
  avail_kib() {
    local used
    used=$(radosgw-admin --conf "$BLOCKREP_RGW_CONF" -n client.admin bucket stats --bucket="$S3_BUCKET" 2>/dev/null |
      grep -o '"size_actual": [0-9]*' | awk '{ s += $2 } END { print s + 0 }')
    echo $(( (QUOTA_BYTES - used) / 1024 ))
  }
  QUOTA_BYTES=$((20 << 20))
  make_room() { QUOTA_BYTES=$((256 << 20)); bucket_quota set --max-size=$QUOTA_BYTES; }
  cleanup_bucket() {  # the bucket of this run goes, with what is in it
    radosgw-admin --conf "$BLOCKREP_RGW_CONF" -n client.admin bucket rm --bucket="$S3_BUCKET" --purge-objects >/dev/null 2>&1 || true
  }
  trap 'rc=$?; kill9_staging; cleanup_bucket; cleanup $rc' EXIT
fi
echo "store: $(( $(avail_kib) / 1024 )) MiB free"

head -c 12M /dev/urandom >"$WORK/vol.img"
truncate -s 64M "$WORK/vol.img"
start_staging
agent full1 --volume "$WORK/vol.img" --compress none >/dev/null 2>"$WORK/agent1.log" || fail "first point: $(tail -n1 "$WORK/agent1.log")"
cp "$WORK/vol.img" "$WORK/point1.img"
echo "point 1 stored; $(( $(avail_kib) / 1024 )) MiB free"

# 16 MiB more that cannot fit.
dd if=/dev/urandom of="$WORK/vol.img" bs=1M count=16 seek=20 conv=notrunc status=none
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id full1 --key "$KEYS/data-full1.key" \
  --tls-cert "$KEYS/agent-full1.crt" --tls-key "$KEYS/agent-full1.key" --tls-ca "$KEYS/ca.crt" \
  --volume "$WORK/vol.img" --compress none --once >"$WORK/agent2.out" 2>"$WORK/agent2.log" &
AGENT=$!
PIDS+=("$AGENT")
for _ in $(seq 1 600); do
  grep -q "STALLED: staging full" "$WORK/agent2.log" && break
  kill -0 "$AGENT" 2>/dev/null || fail "the agent exited instead of waiting for space: $(tail -n 2 "$WORK/agent2.log")"
  sleep 0.1
done
grep -q "STALLED: staging full" "$WORK/agent2.log" || fail "the agent never showed STALLED (staging full): $(tail -n 3 "$WORK/agent2.log")"
echo "agent: $(grep -m1 "STALLED" "$WORK/agent2.log" | sed 's/^[^ ]* //')"
grep -q "store is full" "$WORK/staging.log" || fail "the staging did not say its store is full"
echo "staging: $(grep -m1 "store is full" "$WORK/staging.log" | sed 's/^[^ ]* //')"

# While full: the acknowledged point is intact and restores identical (onto another filesystem).
sleep 2
kill -0 "$AGENT" 2>/dev/null || fail "the agent gave up while the store was full: $(tail -n 2 "$WORK/agent2.log")"
recover list --store "$STORE" --server-id full1 --json | grep -q '"id": 1' || fail "point 1 is not listed while full"
recover list --store "$STORE" --server-id full1 --json | grep -q '"id": 2' && fail "point 2 listed although it cannot have fit"
recover restore --store "$STORE" --server-id full1 --key "$KEYS/data-full1.key" --point 1 --output "$WORK/out1" >/dev/null
[[ $(sha "$WORK/out1/vol-0.img") == $(sha "$WORK/point1.img") ]] || fail "point 1 restores different data while the store is full"
echo "while full: point 1 restores identical; $(grep -c "reconnecting in" "$WORK/agent2.log") reconnect attempt(s) so far"

# Space returns: the waiting agent finishes on its own (its backoff is at most 30 s).
make_room
echo "room made: $(( $(avail_kib) / 1024 )) MiB free"
for _ in $(seq 1 900); do
  kill -0 "$AGENT" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$AGENT" 2>/dev/null && fail "the agent did not finish within 90 s of space returning: $(tail -n 2 "$WORK/agent2.log")"
wait "$AGENT" || fail "the agent failed after space returned: $(tail -n 2 "$WORK/agent2.log")"
grep -q "point 2 acknowledged" "$WORK/agent2.log" || fail "point 2 was not acknowledged: $(tail -n 3 "$WORK/agent2.log")"
stop_staging
for p in 1 2; do
  rm -rf "$WORK/out"
  recover restore --store "$STORE" --server-id full1 --key "$KEYS/data-full1.key" --point "$p" --output "$WORK/out" >/dev/null
  want=$([[ $p -eq 1 ]] && sha "$WORK/point1.img" || sha "$WORK/vol.img")
  [[ $(sha "$WORK/out/vol-0.img") == "$want" ]] || fail "point $p restores different data after the store filled up"
done

if [[ ${#STORE_S3[@]} -ne 0 ]]; then
  recover verify --store "$STORE" --key "$KEYS/data-full1.key" >"$WORK/verify.out" || fail "verify: $(cat "$WORK/verify.out")"
  pass "bucket quota full: STALLED while full, point 1 intact, point 2 stored once the quota was raised; both restore identical, verify clean"
  exit 0
fi
# ENOSPC at the commit itself (the MANIFEST write, injected with strace): the point is not
# committed, the agent waits as above, and the retry commits it.
dd if=/dev/urandom of="$WORK/vol.img" bs=1M count=2 seek=50 conv=notrunc status=none
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -o /dev/null -P "$STORE/servers/full1/MANIFEST.tmp" \
  -e trace=write -e inject=write:error=ENOSPC:when=1 "$BIN/blockrep-staging" --listen 127.0.0.1:0 --store "$STORE" \
  --tls-cert "$KEYS/staging.crt" --tls-key "$KEYS/staging.key" --tls-ca "$KEYS/ca.crt" --retention all >"$WORK/traced.log" 2>&1 &
PIDS+=($!)
TRACED=$!
for _ in $(seq 1 200); do grep -q listening "$WORK/traced.log" && break; sleep 0.05; done
port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/traced.log" | sed 's/.*://' || true)
[[ -n $port ]] || fail "the traced staging did not start: $(tail -n 2 "$WORK/traced.log")"
"$BIN/blockrep-agent" --staging "127.0.0.1:$port" --server-id full1 --key "$KEYS/data-full1.key" \
  --tls-cert "$KEYS/agent-full1.crt" --tls-key "$KEYS/agent-full1.key" --tls-ca "$KEYS/ca.crt" \
  --volume "$WORK/vol.img" --compress none --once >/dev/null 2>"$WORK/agent3.log" || fail "third point: $(tail -n 1 "$WORK/agent3.log")"
grep -q "STALLED: staging full: .*MANIFEST.tmp: write: No space left" "$WORK/agent3.log" || fail "no STALLED for the failed manifest write"
grep -q "point 3 acknowledged" "$WORK/agent3.log" || fail "point 3 not acknowledged after the retry"
pkill -TERM -P "$TRACED" blockrep-stagin || true
wait "$TRACED" || fail "the traced staging exited non-zero"
rm -rf "$WORK/out"
recover restore --store "$STORE" --server-id full1 --key "$KEYS/data-full1.key" --point 3 --output "$WORK/out" >/dev/null
[[ $(sha "$WORK/out/vol-0.img") == $(sha "$WORK/vol.img") ]] || fail "point 3 restores different data"
echo "manifest write ENOSPC: $(grep -m1 "STALLED" "$WORK/agent3.log" | sed 's/^[^ ]* //' | cut -c1-160)...; retried, point 3 identical"
recover verify --store "$STORE" --key "$KEYS/data-full1.key" >"$WORK/verify.out" || fail "verify: $(cat "$WORK/verify.out")"
pass "disk full: STALLED while full, point 1 intact, point 2 stored once space returned, ENOSPC on the manifest retried; all restore identical, verify clean"
