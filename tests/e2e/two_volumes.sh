#!/usr/bin/env bash
# Two volumes of one server (ext4 on a loop device + an image file) restore byte-identical with
# lz4, zstd and none; volume 0 also restores onto a block device.
source "$(dirname "$0")/lib.sh"
need_root "two_volumes"

make_keys web1
truncate -s 128M "$WORK/disk0.img"
loop_attach "$WORK/disk0.img"
dev0=$LOOP
mkfs.ext4 -q -F "$dev0"
mkdir "$WORK/mnt"
mount "$dev0" "$WORK/mnt"
MOUNTS+=("$WORK/mnt")
cp -r /usr/include/linux "$WORK/mnt/include"
head -c 20M /dev/urandom >"$WORK/mnt/random.bin"
umount "$WORK/mnt"
MOUNTS=()

# Image file: random head, a zero gap, text tail, size not a multiple of 64 KiB.
head -c 6M /dev/urandom >"$WORK/disk1.img"
truncate -s 40M "$WORK/disk1.img"
find /usr/include -name "*.h" -exec cat {} + >"$WORK/text" 2>/dev/null || true
truncate -s 3M "$WORK/text"
cat "$WORK/text" >>"$WORK/disk1.img"
head -c 12345 /dev/urandom >>"$WORK/disk1.img"

sum0=$(sha "$dev0")
sum1=$(sha "$WORK/disk1.img")
start_staging
for codec in lz4 zstd none; do
  agent web1 --volume "$dev0" --volume "$WORK/disk1.img" --compress "$codec" >"$WORK/agent.out"
  grep -q acknowledged "$WORK/agent.out" || fail "agent did not report an acknowledged point"
  rm -rf "$WORK/out"
  recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point latest \
    --output "$WORK/out" >/dev/null
  [[ $(sha "$WORK/out/vol-0.img") == "$sum0" ]] || fail "$codec: volume 0 differs after restore"
  [[ $(sha "$WORK/out/vol-1.img") == "$sum1" ]] || fail "$codec: volume 1 differs after restore"
  e2fsck -fn "$WORK/out/vol-0.img" >/dev/null 2>&1 || fail "$codec: e2fsck finds the restored ext4 damaged"
  pass "$codec: both volumes byte-identical, e2fsck clean"
done

# Restore straight onto a block device holding junk.
head -c 128M /dev/urandom >"$WORK/target.img"
loop_attach "$WORK/target.img"
devt=$LOOP
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point 1 \
  --target "0=$devt" >/dev/null
[[ $(sha "$devt") == "$sum0" ]] || fail "restore onto block device differs"
pass "restore onto a block device is byte-identical"

points=$(recover list --store "$STORE" --server-id web1 --json | grep -c '"id"')
[[ $points -eq 3 ]] || fail "expected 3 points, list shows $points"
stop_staging
pass "two_volumes"
