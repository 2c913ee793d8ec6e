#!/usr/bin/env bash
# A staging whose store is a bucket (--store s3://BUCKET/PREFIX --s3-cache DIR) on a real Ceph RGW:
# two points replicated, the staging stopped and its cache deleted, and recovery reads the bucket
# alone (list, verify --key, restore: identical). A staging started on an empty cache takes the
# bucket's chain and an agent's next point goes on it incrementally; with --keep-last 1 retention
# then deletes what the dropped points alone used, in the bucket too. Runs under the `rgw` CTest
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
