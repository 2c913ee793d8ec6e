#!/usr/bin/env bash
# A staging whose store is a bucket (--store s3://BUCKET/PREFIX --s3-cache DIR) on a real Ceph RGW:
# two points replicated, the staging stopped and its cache deleted, and recovery reads the bucket
# alone (list, verify --key, restore: identical). A staging started on an empty cache takes the
# bucket's chain and an agent's next point goes on it incrementally; with --keep-last 1 retention
# then deletes what the dropped points alone used, in the bucket too. A staging whose cache keeps
# no published pack (--s3-cache-bytes 0) serves a restore by fetching them. Runs under the `rgw` CTest
# fixture (tests/rgw/with_rgw.sh); skips (77) without a gateway.
source "$(dirname "$0")/lib.sh"
[[ -n ${BLOCKREP_S3_ENDPOINT:-} ]] || { echo "SKIP: no Ceph RGW (run through tests/rgw/with_rgw.sh)"; exit 77; }

BUCKET=blockrep-e2e
URL="s3://$BUCKET/staging-$$"
S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS"
  --s3-region default)
STORE=$URL  # start_staging's --store

make_keys web1
mkdir -p "$WORK/empty"  # put_tree.sh creates the bucket (an operator's step); nothing to copy
bash "$(dirname "$0")/../rgw/put_tree.sh" "$WORK/empty" "$BUCKET" unused >/dev/null || fail "create the bucket"
mkdir -p "$WORK/tree"
seq 1 300000 >"$WORK/tree/numbers.txt"
head -c 3M /dev/urandom >"$WORK/tree/random.bin"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/web.img" 24M >/dev/null
start_staging "${S3[@]}" --s3-cache "$WORK/cache"
agent web1 --volume "$WORK/web.img" >/dev/null 2>>"$WORK/agent.log" || fail "point 1: $(tail -n 2 "$WORK/agent.log")"
cp "$WORK/web.img" "$WORK/web-1.img"
head -c 2M /dev/urandom >"$WORK/tree/more.bin"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/web.img" 24M >/dev/null
agent web1 --volume "$WORK/web.img" >/dev/null 2>>"$WORK/agent.log" || fail "point 2: $(tail -n 2 "$WORK/agent.log")"
stop_staging
rm -rf "$WORK/cache"
pass "two points through a staging on $URL; staging stopped, its cache deleted"

recover list --store "$URL" "${S3[@]}" --server-id web1 --json >"$WORK/list.json" || fail "list from the bucket"
[[ $(grep -c '"id"' "$WORK/list.json") -eq 2 ]] || { cat "$WORK/list.json" >&2; fail "expected 2 points in the bucket"; }
recover verify --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" >"$WORK/verify.out" ||
  { cat "$WORK/verify.out" >&2; fail "verify --key of the bucket"; }
grep -q "authenticated and decompressed with the key.*: ok" "$WORK/verify.out" || { cat "$WORK/verify.out" >&2; fail "verify not clean"; }
pass "verify --key of the bucket: $(head -n 1 "$WORK/verify.out")"
# restore_matches POINT IMAGE: restores POINT from the bucket and compares it with IMAGE.
restore_matches() {
  rm -rf "$WORK/out"
  recover restore --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" --point "$1" \
    --output "$WORK/out" >/dev/null || fail "restore point $1 from the bucket"
  cmp "$WORK/out/vol-0.img" "$2" || fail "point $1 restored from the bucket differs from $2"
}
restore_matches 1 "$WORK/web-1.img"
restore_matches latest "$WORK/web.img"
pass "points 1 and 2 restore identical from the bucket, no staging running"

# A new staging, an empty cache: it takes the chain from the bucket; the next point is incremental.
head -c 1M /dev/urandom >"$WORK/tree/third.bin"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/web.img" 24M >/dev/null
STAGING_RETENTION=none start_staging "${S3[@]}" --s3-cache "$WORK/cache2" --keep-last 1
grep -q "server 'web1': the cache took the bucket's chain" "$WORK/staging.log" || fail "the new staging did not take the bucket's chain"
agent web1 --volume "$WORK/web.img" >/dev/null 2>"$WORK/agent3.log" || fail "point 3: $(tail -n 2 "$WORK/agent3.log")"
grep -q "incremental on point 2" "$WORK/agent3.log" || { cat "$WORK/agent3.log" >&2; fail "point 3 was not incremental on the bucket's point 2"; }
stop_staging
recover list --store "$URL" "${S3[@]}" --server-id web1 --json >"$WORK/list.json" || fail "list from the bucket"
[[ $(grep -c '"id"' "$WORK/list.json") -eq 1 ]] || { cat "$WORK/list.json" >&2; fail "--keep-last 1: expected 1 point in the bucket"; }
restore_matches latest "$WORK/web.img"
# keys PREFIX: the keys in the bucket below the store's PREFIX (a ListObjectsV2 signed by curl).
keys() {
  local prefix="${URL#s3://$BUCKET/}/$1"
  curl -sS --fail --aws-sigv4 "aws:amz:default:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    --cacert "$BLOCKREP_S3_CA" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
    "$BLOCKREP_S3_ENDPOINT/$BUCKET?list-type=2&prefix=${prefix//\//%2F}" | grep -o '<Key>[^<]*</Key>' || true
}
n_index=$(keys servers/web1/index/ | wc -l)
[[ $n_index -eq 1 ]] || { keys servers/web1/; fail "expected 1 index object left in the bucket, found $n_index"; }
n_packs=$(keys servers/web1/packs/ | wc -l)
pass "the bucket holds 1 index and $n_packs pack(s) for web1 after retention and compaction"
pass "a staging on a new cache took the chain from the bucket; point 3 restores identical; retention left 1 point"

# A cache bounded to nothing (--s3-cache-bytes 0): a new staging takes the chain without its packs,
# a new point's packs leave the cache once published, and a restore through the staging
# (--staging) fetches what it reads from the bucket, identical; the metrics count it.
head -c 1M /dev/urandom >"$WORK/tree/fourth.bin"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/web.img" 24M >/dev/null
start_staging "${S3[@]}" --s3-cache "$WORK/cache3" --s3-cache-bytes 0 --metrics 127.0.0.1:0
agent web1 --volume "$WORK/web.img" >/dev/null 2>"$WORK/agent4.log" || fail "point 4: $(tail -n 2 "$WORK/agent4.log")"
local_packs() { find "$WORK/cache3/servers/web1/packs" -name '*.pack' | wc -l; }
[[ $(local_packs) -eq 0 ]] || { ls -l "$WORK/cache3/servers/web1/packs" >&2; fail "--s3-cache-bytes 0 left published packs in the cache"; }
rm -rf "$WORK/out"
recover restore --staging "127.0.0.1:$STAGING_PORT" --server-id web1 --key "$KEYS/data-web1.key" --point latest \
  --output "$WORK/out" >/dev/null || fail "restore through the staging with an empty cache"
cmp "$WORK/out/vol-0.img" "$WORK/web.img" || fail "the restore through the staging differs"
port=$(metrics_port "$WORK/staging.log")
for _ in $(seq 1 50); do  # the staging renders its metrics once a second at most
  curl -fsS "http://127.0.0.1:$port/metrics" >"$WORK/metrics.txt" || fail "GET /metrics"
  fetches=$(awk '/^blockrep_cache_fetches_total / {print $2}' "$WORK/metrics.txt")
  evictions=$(awk '/^blockrep_cache_evictions_total / {print $2}' "$WORK/metrics.txt")
  ((fetches >= 1 && evictions >= 1)) && break
  sleep 0.1
done
grep -q '^blockrep_cache_limit_bytes 0$' "$WORK/metrics.txt" || fail "blockrep_cache_limit_bytes is not 0"
((fetches >= 1 && evictions >= 1)) || { grep blockrep_cache "$WORK/metrics.txt" >&2; fail "no fetch or no eviction counted"; }
(($(local_packs) <= 1)) || fail "$(local_packs) packs left in a cache bounded to 0 (at most the last one fetched)"
stop_staging
pass "--s3-cache-bytes 0: published packs left the cache; a restore through the staging fetched $fetches pack(s), identical ($evictions eviction(s))"
