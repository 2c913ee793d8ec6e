#!/usr/bin/env bash
# Recovery straight from a bucket, with no staging running: a store replicated as usual is copied
# into a real Ceph RGW (object by object with curl's own SigV4, not with blockrep's client), then
# `list`, `servers`, `verify --key`, `restore`, `mount` and `drill` read it from s3://BUCKET/PREFIX: restored
# and mounted images equal the sources, and the drill's e2fsck passes. A flipped byte in a pack
# object is found by verify and refused by restore; bad credentials, an untrusted certificate and a
# wrong prefix are each one clear line. Runs under the `rgw` CTest fixture (tests/rgw/with_rgw.sh);
# skips (77) without a gateway or without root (mount and drill need FUSE and loop devices).
source "$(dirname "$0")/lib.sh"
[[ -n ${BLOCKREP_S3_ENDPOINT:-} ]] || { echo "SKIP: no Ceph RGW (run through tests/rgw/with_rgw.sh)"; exit 77; }
need_root "recovery from a bucket (mount and drill)"

BUCKET=blockrep-e2e
PREFIX="site-a/run-$$"
S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS"
  --s3-region default)

make_keys web1
# Two points of a 24 MiB ext4 volume: files of text and random bytes, then more of them.
mkdir -p "$WORK/tree"
seq 1 300000 >"$WORK/tree/numbers.txt"
head -c 3M /dev/urandom >"$WORK/tree/random.bin"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/web.img" 24M >/dev/null
start_staging
agent web1 --volume "$WORK/web.img" >/dev/null 2>>"$WORK/agent.log"
cp "$WORK/web.img" "$WORK/web-1.img"
head -c 2M /dev/urandom >"$WORK/tree/more.bin"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/web.img" 24M >/dev/null
agent web1 --volume "$WORK/web.img" >/dev/null 2>>"$WORK/agent.log"
stop_staging

S3_BUCKET=$BUCKET  # lib.sh's curl_s3
n=$(bash "$(dirname "$0")/../rgw/put_tree.sh" "$STORE" "$BUCKET" "$PREFIX") || fail "copying the store into the bucket"
pass "copied the store into s3://$BUCKET/$PREFIX: $n objects"

URL="s3://$BUCKET/$PREFIX"
recover list --store "$URL" "${S3[@]}" --server-id web1 --json >"$WORK/list.json" 2>"$WORK/err" ||
  { cat "$WORK/err" >&2; fail "list from the bucket"; }
[[ $(grep -c '"id"' "$WORK/list.json") -eq 2 ]] || { cat "$WORK/list.json" >&2; fail "expected 2 points listed"; }
pass "list from the bucket: 2 points"

recover verify --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" >"$WORK/verify.out" 2>"$WORK/err" ||
  { cat "$WORK/verify.out" "$WORK/err" >&2; fail "verify --key from the bucket"; }
grep -q "authenticated and decompressed with the key.*: ok" "$WORK/verify.out" || { cat "$WORK/verify.out" >&2; fail "verify not clean"; }
pass "verify --key from the bucket: $(head -n 1 "$WORK/verify.out")"

for p in 1 latest; do
  rm -rf "$WORK/out"
  recover restore --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" --point "$p" \
    --output "$WORK/out" >"$WORK/restore.out" 2>"$WORK/err" || { cat "$WORK/err" >&2; fail "restore point $p from the bucket"; }
  want="$WORK/web.img"
  [[ $p == 1 ]] && want="$WORK/web-1.img"
  cmp "$WORK/out/vol-0.img" "$want" || fail "point $p restored from the bucket differs"
  pass "restore point $p from the bucket: identical ($(head -n 1 "$WORK/restore.out"))"
done

# expect_refusal NAME PATTERN CMD...: exit non-zero with one stderr line matching PATTERN.
expect_refusal() {
  local name=$1 pattern=$2 rc=0
  shift 2
  "$@" >/dev/null 2>"$WORK/err" || rc=$?
  [[ $rc -ne 0 && $(wc -l <"$WORK/err") -eq 1 ]] && grep -q -- "$pattern" "$WORK/err" ||
    { cat "$WORK/err" >&2; fail "$name: exit $rc"; }
  pass "$name -> $(cat "$WORK/err")"
}
umask 077
printf 'access_key_id = %s\nsecret_access_key = wrong%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK/bad-cred"
expect_refusal "wrong secret" "refused the credentials" \
  recover list --store "$URL" --s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" \
  --s3-credentials "$WORK/bad-cred" --s3-region default --server-id web1
expect_refusal "untrusted certificate" "give its CA with --s3-ca" \
  recover list --store "$URL" --s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-credentials "$BLOCKREP_S3_CREDENTIALS" \
  --s3-region default --server-id web1
expect_refusal "wrong prefix" "no blockrep store at s3://$BUCKET/nothing-here" \
  recover list --store "s3://$BUCKET/nothing-here" "${S3[@]}" --server-id web1
expect_refusal "no endpoint" "needs --s3-endpoint" recover list --store "$URL" --server-id web1
recover servers --store "$URL" "${S3[@]}" >"$WORK/servers.out" 2>"$WORK/err" || { cat "$WORK/err" >&2; fail "servers from the bucket"; }
grep -Eq "^web1 +2 " "$WORK/servers.out" || { cat "$WORK/servers.out" >&2; fail "servers from the bucket: no web1 row with 2 points"; }
pass "servers from the bucket: $(grep '^web1' "$WORK/servers.out" | tr -s ' ')"

# mount: every point's image, read through FUSE from the bucket, equals its source.
MP="$WORK/mnt"
mkdir -p "$MP"
recover mount --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" "$MP" >"$WORK/mount.out" 2>"$WORK/mount.err" &
MOUNT_PID=$!
PIDS+=("$MOUNT_PID")
for _ in $(seq 1 400); do
  grep -q '^mounted' "$WORK/mount.out" && break
  kill -0 "$MOUNT_PID" 2>/dev/null || fail "mount from the bucket exited: $(cat "$WORK/mount.err")"
  sleep 0.05
done
grep -q '^mounted' "$WORK/mount.out" || fail "mount from the bucket did not come up"
cmp "$MP/1/vol-0.img" "$WORK/web-1.img" || fail "point 1 read through the mount differs"
cmp "$MP/2/vol-0.img" "$WORK/web.img" || fail "point 2 read through the mount differs"
fusermount3 -u "$MP"
timeout 20 tail --pid="$MOUNT_PID" -f /dev/null || fail "mount did not exit after fusermount3 -u"
wait "$MOUNT_PID" || fail "mount exited non-zero: $(cat "$WORK/mount.err")"
pass "mount from the bucket: points 1 and 2 read identical through FUSE ($(cat "$WORK/mount.out"))"

# drill: the latest point mounted with an overlay from the bucket, e2fsck clean.
recover drill --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" --json >"$WORK/drill.json" 2>"$WORK/drill.err" ||
  { cat "$WORK/drill.json" "$WORK/drill.err" >&2; fail "drill from the bucket"; }
grep -q '"result": "pass"' "$WORK/drill.json" && grep -q '"fs": "ext4", "check": "clean"' "$WORK/drill.json" ||
  { cat "$WORK/drill.json" >&2; fail "drill from the bucket did not pass with a clean e2fsck"; }
grep -q "not appended to drills.jsonl: recovery never writes to a bucket" "$WORK/drill.err" ||
  { cat "$WORK/drill.err" >&2; fail "the drill did not say its report stays unrecorded"; }
pass "drill from the bucket: $(grep -o '"rto_seconds": [0-9.]*' "$WORK/drill.json"), e2fsck clean, result pass"

# One flipped byte in the ciphertext of the first pack's first record (docs/FORMAT.md: a 16-byte
# pack header, then a 64-byte record header): verify names the damage, restore refuses.
pack=$(find "$STORE/servers/web1/packs" -name '*.pack' | sort | head -n 1)
cp "$pack" "$WORK/tampered.pack"
at=$((16 + 64 + 100))
byte=$(od -An -tu1 -j "$at" -N1 "$WORK/tampered.pack" | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$WORK/tampered.pack" bs=1 seek="$at" conv=notrunc status=none
curl_s3 PUT "$PREFIX/${pack#"$STORE"/}" "$WORK/tampered.pack" || fail "upload of the tampered pack"
rc=0
recover verify --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" >"$WORK/verify.out" 2>"$WORK/err" || rc=$?
[[ $rc -ne 0 ]] && grep -q "damaged: server 'web1' volume 0" "$WORK/verify.out" ||
  { cat "$WORK/verify.out" "$WORK/err" >&2; fail "verify did not find the flipped byte in the bucket (exit $rc)"; }
pass "verify finds the flipped byte: $(grep -m1 'damaged:' "$WORK/verify.out" | sed 's/^ *//')"
rm -rf "$WORK/out"
expect_refusal "restore of the tampered point" "" \
  recover restore --store "$URL" "${S3[@]}" --server-id web1 --key "$KEYS/data-web1.key" --point 1 --output "$WORK/out"

# Leave the bucket as it was: this run's objects go.
while IFS= read -r f; do curl_s3 DELETE "$PREFIX/${f#"$STORE"/}" || true; done < <(find "$STORE" -type f | sort)
echo "ok: s3_recover"
