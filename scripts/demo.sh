#!/usr/bin/env bash
# The main job, end to end: build blockrep, make a 256 MiB ext4 demo volume (real files, random
# data, free space), replicate it through a TLS staging on 127.0.0.1, restore the latest recovery
# point, verify it byte for byte and with e2fsck, drill it over the network, and print a summary.
# With BLOCKREP_BIN=DIR it uses the programs in DIR instead of building them.
#   scripts/demo.sh          # the store is a directory
#   scripts/demo.sh --rgw    # the store is a bucket on a single-node Ceph RGW started here (root;
#                            # tests/rgw/start.sh), or on the one whose environment is set
#                            # (BLOCKREP_S3_ENDPOINT ..., tests/rgw/with_rgw.sh); recovery then
#                            # reads the bucket with no staging running
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RGW=0
case "${1:-}" in
  --rgw) RGW=1 ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--rgw]" >&2; exit 2 ;;
esac
if [[ -n ${BLOCKREP_BIN:-} ]]; then
  BIN=$BLOCKREP_BIN  # programs already installed (e.g. /usr/bin from the .deb: tests/e2e/package.sh)
else
  "$root/scripts/setup.sh"
  "$root/scripts/build.sh" "$root/build" >/dev/null
  BIN=$root/build/bin
fi

WORK=${BLOCKREP_DEMO_DIR:-$(mktemp -d /tmp/blockrep-demo.XXXXXX)}
mkdir -p "$WORK"
STAGING_PID=
OWN_RGW=
cleanup() {
  [[ -n $STAGING_PID ]] && kill "$STAGING_PID" 2>/dev/null && wait "$STAGING_PID" 2>/dev/null || true
  [[ -z $OWN_RGW ]] || bash "$root/tests/rgw/stop.sh" "$OWN_RGW" || true
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

STORE_ARGS=(--store "$WORK/store")
STAGING_ARGS=(--store "$WORK/store")
if ((RGW)); then
  if [[ -z ${BLOCKREP_S3_ENDPOINT:-} ]]; then
    say "a single-node Ceph cluster with an S3 gateway (tests/rgw/start.sh: mon, mgr, one OSD on a file, radosgw)"
    OWN_RGW=$WORK/rgw
    rc=0
    bash "$root/tests/rgw/start.sh" "$OWN_RGW" || rc=$?
    ((rc == 0)) || { echo "demo --rgw: the Ceph RGW did not start (see above; it needs root and scripts/setup.sh)" >&2; exit 1; }
    # shellcheck disable=SC1091
    source "$OWN_RGW/env"
    echo "gateway $BLOCKREP_S3_ENDPOINT"
  fi
  BUCKET=blockrep-demo
  URL=s3://$BUCKET/demo-$$
  S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS"
    --s3-region default)
  mkdir -p "$WORK/empty"
  bash "$root/tests/rgw/put_tree.sh" "$WORK/empty" "$BUCKET" unused >/dev/null  # creates the bucket
  STORE_ARGS=(--store "$URL" "${S3[@]}")
  STAGING_ARGS=(--store "$URL" "${S3[@]}" --s3-cache "$WORK/cache")
fi
# s3_list: "KEY SIZE" of every object of the demo's store in the bucket (ListObjectsV2, one page).
s3_list() {
  curl -sS --fail --aws-sigv4 "aws:amz:default:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    --cacert "$BLOCKREP_S3_CA" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
    "$BLOCKREP_S3_ENDPOINT/$BUCKET?list-type=2&max-keys=1000&prefix=${URL#s3://"$BUCKET"/}%2F" |
    grep -o '<Key>[^<]*</Key>\(<[^S][^>]*>[^<]*</[^>]*>\)*<Size>[0-9]*' | sed -E 's|<Key>([^<]*)</Key>.*<Size>([0-9]*)|\1 \2|'
}
s3_get() {
  curl -sS --fail --aws-sigv4 "aws:amz:default:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    --cacert "$BLOCKREP_S3_CA" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" "$BLOCKREP_S3_ENDPOINT/$BUCKET/$1"
}

say "demo volume: 256 MiB ext4 with real files, 48 MiB of random data and free space"
src=$WORK/src
rm -rf "$src" "$WORK/volume.img" "$WORK/keys" "$WORK/store" "$WORK/cache" "$WORK/restore" "$WORK/agent-state"
mkdir -p "$src"
# Real files (headers, docs, binaries), capped at 110 MiB so the filesystem keeps free space.
{ find /usr/include /usr/share/doc /usr/bin -type f -printf '%s %p\n' 2>/dev/null || true; } |
  awk '{ total += $1; if (total > 110 * 1048576) exit; sub(/^[0-9]+ /, ""); print }' |
  tar -cf - -T - 2>/dev/null | tar -xf - -C "$src"
head -c 48M /dev/urandom >"$src/random.bin"
mkfs.ext4 -q -F -L blockrep-demo -d "$src" "$WORK/volume.img" 256M
used=$(du -sm "$src" | cut -f1)
echo "volume $WORK/volume.img: 256 MiB, about $used MiB of files"

say "keys and certificates (blockrep-keygen)"
"$BIN/blockrep-keygen" --out "$WORK/keys" --server-id demo1

say "staging on 127.0.0.1 (TLS 1.3, mutual certificates), store ${STAGING_ARGS[1]}"
"$BIN/blockrep-staging" --listen 127.0.0.1:0 "${STAGING_ARGS[@]}" --tls-cert "$WORK/keys/staging.crt" \
  --tls-key "$WORK/keys/staging.key" --tls-ca "$WORK/keys/ca.crt" 2>"$WORK/staging.log" &
STAGING_PID=$!
for _ in $(seq 1 100); do
  port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/staging.log" | cut -d: -f2 || true)
  [[ -n $port ]] && break
  sleep 0.05
done
[[ -n $port ]] || { cat "$WORK/staging.log"; echo "demo: staging did not start" >&2; exit 1; }
echo "listening on port $port"

say "replicate (blockrep-agent --once)"
"$BIN/blockrep-agent" --staging "127.0.0.1:$port" --server-id demo1 --volume "$WORK/volume.img" \
  --key "$WORK/keys/data-demo1.key" --state-dir "$WORK/agent-state" --once | tee "$WORK/agent.out"

if ((RGW)); then
  kill "$STAGING_PID" && wait "$STAGING_PID"
  STAGING_PID=
  echo "staging stopped: recovery below reads $URL alone"
fi

say "recovery points (blockrep-recover list)"
"$BIN/blockrep-recover" list "${STORE_ARGS[@]}" --server-id demo1

say "restore the latest point (blockrep-recover restore)"
"$BIN/blockrep-recover" restore "${STORE_ARGS[@]}" --server-id demo1 --key "$WORK/keys/data-demo1.key" \
  --point latest --output "$WORK/restore" | tee "$WORK/restore.out"

say "verify"
src_sum=$(sha256sum "$WORK/volume.img" | cut -d' ' -f1)
dst_sum=$(sha256sum "$WORK/restore/vol-0.img" | cut -d' ' -f1)
echo "source   sha256 $src_sum"
echo "restored sha256 $dst_sum"
[[ $src_sum == "$dst_sum" ]] || { echo "demo: FAILED: restored image differs" >&2; exit 1; }
e2fsck -fn "$WORK/restore/vol-0.img" >/dev/null 2>&1 || { echo "demo: FAILED: e2fsck finds the restored filesystem damaged" >&2; exit 1; }
echo "byte-identical; e2fsck -fn clean"
"$BIN/blockrep-recover" verify "${STORE_ARGS[@]}" --server-id demo1 --key "$WORK/keys/data-demo1.key" |
  tee "$WORK/verify.out"
# The volume's label is in its superblock: no stored byte may show it.
if ((RGW)); then
  s3_list >"$WORK/objects.txt"
  [[ -s $WORK/objects.txt ]] || { echo "demo: FAILED: no objects listed under $URL" >&2; exit 1; }
  while read -r key _; do
    # To a file first: `s3_get | grep -q` under pipefail turns a match (grep exits, curl gets
    # SIGPIPE) into a failed pipeline, which would hide exactly the leak looked for.
    s3_get "$key" >"$WORK/object.bin"
    if grep -qa "blockrep-demo" "$WORK/object.bin"; then echo "demo: FAILED: plaintext found in s3 object $key" >&2; exit 1; fi
  done <"$WORK/objects.txt"
  echo "no plaintext in the $(wc -l <"$WORK/objects.txt") objects of $URL"
elif grep -rqa "blockrep-demo" "$WORK/store"; then echo "demo: FAILED: plaintext found in the store" >&2; exit 1; fi

if ((RGW)); then
  say "drill the latest point from the bucket (blockrep-recover drill --store s3://...: FUSE mount, overlay, e2fsck)"
  DRILL_FROM=("${STORE_ARGS[@]}")
else
  say "drill the latest point over the network (blockrep-recover drill --staging: FUSE mount, overlay, e2fsck)"
  DRILL_FROM=(--staging "127.0.0.1:$port")
fi
if [[ $(id -u) -eq 0 && -e /dev/fuse ]]; then
  "$BIN/blockrep-recover" drill "${DRILL_FROM[@]}" --server-id demo1 --key "$WORK/keys/data-demo1.key" |
    tee "$WORK/drill.out"
else
  echo "skipped: a drill mounts filesystems (root and /dev/fuse)" | tee "$WORK/drill.out"
fi

if [[ -n $STAGING_PID ]]; then
  kill "$STAGING_PID" && wait "$STAGING_PID"
  STAGING_PID=
fi
if ((RGW)); then
  store_bytes=$(awk '{ s += $2 } END { print s + 0 }' "$WORK/objects.txt")
  where="in $URL"
else
  store_bytes=$(du -s --block-size=1 --apparent-size "$WORK/store" | cut -f1)
  where="on disk"
fi
restored_apparent=$(du -s --block-size=1 --apparent-size "$WORK/restore/vol-0.img" | cut -f1)
restored_alloc=$(du -s --block-size=1 "$WORK/restore/vol-0.img" | cut -f1)

say "summary"
awk '/^  time/ {t=$2} /^  read/ {r=$2} /^  shipped/ {s=$2} /^  stored/ {st=$2} /^  on the wire/ {w=$4}
     END {printf "replicated   %s MiB read, %s MiB shipped, %s MiB stored, %s MiB on the wire in %s s\n", r, s, st, w, t}' "$WORK/agent.out"
awk '/restored point/ {for (i=1;i<=NF;i++) if ($i=="in") print "restored     point in " $(i+1) " s"}' "$WORK/restore.out"
awk -v b="$store_bytes" -v u="$used" -v w="$where" 'BEGIN {printf "store        %.1f MiB %s for a 256 MiB volume (%d MiB of files)\n", b / 1048576, w, u}'
awk -v a="$restored_apparent" -v l="$restored_alloc" 'BEGIN {printf "image        %d MiB apparent, %.1f MiB allocated (sparse)\n", a / 1048576, l / 1048576}'
echo "verified     sha256 equal, e2fsck clean, no plaintext marker in the store"
grep -m1 -o 'RPO.*' "$WORK/drill.out" | sed 's/^/drill        /' || echo "drill        $(cat "$WORK/drill.out")"
grep -o '[0-9]* region(s) add up.*' "$WORK/restore.out" | sed 's/^/seal         /' 
echo "work dir     $WORK"
