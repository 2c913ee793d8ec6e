#!/usr/bin/env bash
# mount: every retained point read through FUSE equals its restored image; a flipped byte in a
# record gives EIO on exactly the reads of its seal region, and one log line naming it; with
# --overlay, writes land in the overlay (readable back, kept across a remount) and no store file
# changes; SIGTERM and fusermount3 -u unmount cleanly.
source "$(dirname "$0")/lib.sh"
need_root mount
[[ -e /dev/fuse ]] || { echo "SKIP: mount needs /dev/fuse" >&2; exit 77; }

make_keys web1
# Two volumes: 24 MiB of ext4-like random data with holes, and 5 MiB + 512 bytes (a short last
# block). Three points, each rewriting scattered MiBs.
truncate -s 24M "$WORK/a.img"
dd if=/dev/urandom of="$WORK/a.img" bs=1M count=6 conv=notrunc status=none
dd if=/dev/urandom of="$WORK/a.img" bs=1M count=3 seek=15 conv=notrunc status=none
head -c $((5 * 1048576 + 512)) /dev/urandom >"$WORK/b.img"
start_staging
for p in 1 2 3; do
  agent web1 --volume "$WORK/a.img" --volume "$WORK/b.img" --compress none --tracker scan >/dev/null 2>>"$WORK/agent.log"
  dd if=/dev/urandom of="$WORK/a.img" bs=4k count=7 seek=$((p * 1000)) conv=notrunc status=none
  dd if=/dev/urandom of="$WORK/b.img" bs=1k count=3 seek=$((p * 7)) conv=notrunc status=none
done
stop_staging
store_before=$(store_fingerprint)

MP=$WORK/mp
mkdir -p "$MP"
MOUNTS+=("$MP")  # a mount killed by the cleanup leaves its FUSE mount: lib.sh unmounts it
# start_mount [args]: mounts in the background and waits for the "mounted" line.
start_mount() {
  : >"$WORK/mount.out"
  "$BIN/blockrep-recover" mount --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" "$@" "$MP" \
    >"$WORK/mount.out" 2>"$WORK/mount.err" &
  MOUNT_PID=$!
  PIDS+=("$MOUNT_PID")
  for _ in $(seq 1 200); do
    grep -q '^mounted' "$WORK/mount.out" && return 0
    kill -0 "$MOUNT_PID" 2>/dev/null || fail "mount exited: $(cat "$WORK/mount.err")"
    sleep 0.05
  done
  fail "mount did not come up"
}
stop_mount() {  # stop_mount SIGNAL|fusermount
  if [[ $1 == fusermount ]]; then fusermount3 -u "$MP"; else kill -"$1" "$MOUNT_PID"; fi
  local rc=0
  timeout 20 tail --pid="$MOUNT_PID" -f /dev/null || fail "mount did not exit after $1"
  wait "$MOUNT_PID" || rc=$?
  [[ $rc -eq 0 ]] || fail "mount exited $rc after $1: $(cat "$WORK/mount.err")"
  grep -q " $MP " /proc/mounts && fail "still mounted after $1"
  pass "unmounted cleanly by $1"
}

t0=$(date +%s.%N)
start_mount
t1=$(date +%s.%N)
echo "ok: mounted in $(echo "$t1 - $t0" | bc) s: $(cat "$WORK/mount.out")"
[[ $(ls "$MP" | tr '\n' ' ') == "1 2 3 latest " ]] || fail "listing: $(ls "$MP")"
[[ $(readlink "$MP/latest") == 3 ]] || fail "latest -> $(readlink "$MP/latest")"
for p in 1 2 3; do
  recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point $p --output "$WORK/r$p" >/dev/null
  for v in 0 1; do
    [[ $(stat -c %s "$MP/$p/vol-$v.img") == $(stat -c %s "$WORK/r$p/vol-$v.img") ]] || fail "point $p vol $v: size"
    cmp "$MP/$p/vol-$v.img" "$WORK/r$p/vol-$v.img" || fail "point $p volume $v differs from its restore"
  done
done
pass "3 points x 2 volumes read through FUSE equal their restored images"
echo x >"$MP/3/vol-0.img" 2>/dev/null && fail "a read-only mount took a write"
pass "read-only: a write is refused"
stop_mount TERM

# A flipped byte in one record of point 3 (volume 1, offset 21 KiB: the record written last, so
# only the newest point uses it). Reads of its 1 MiB seal region fail with EIO; the rest read.
pack=$(ls "$STORE/servers/web1/packs/"*.pack | tail -n 1)
u32() { od -An -tu4 -j "$1" -N4 "$pack" | tr -d ' '; }
u64() { od -An -tu8 -j "$1" -N8 "$pack" | tr -d ' '; }
u16() { od -An -tu2 -j "$1" -N2 "$pack" | tr -d ' '; }
rec=16
size=$(stat -c %s "$pack")
found=
while ((rec < size)); do
  if [[ $(u16 $((rec + 8))) == 1 ]]; then found=$rec; break; fi
  rec=$((rec + 64 + $(u32 $((rec + 16))) + 16 + ($(u32 $((rec + 12))) + 4095) / 4096 * 8))
done
[[ -n $found ]] || fail "no record of volume 1 in $pack"
rec_off=$(u64 $((found + 24)))
at=$((found + 64 + 100))
cp "$pack" "$WORK/pack.orig"
flip_byte "$pack" "$at"
region=$((rec_off / 1048576))
start_mount
rc=0
dd if="$MP/3/vol-1.img" of=/dev/null bs=4k skip=$((region * 256 + 3)) count=1 status=none 2>"$WORK/dd.err" || rc=$?
[[ $rc -ne 0 ]] && grep -q "Input/output error" "$WORK/dd.err" || fail "a read of the damaged region did not give EIO"
other=$(((region + 1) % 5))
dd if="$MP/3/vol-1.img" bs=1M skip=$other count=1 status=none | cmp - <(dd if="$WORK/r3/vol-1.img" bs=1M skip=$other count=1 status=none) ||
  fail "region $other (undamaged) did not read"
cmp "$MP/2/vol-1.img" "$WORK/r2/vol-1.img" || fail "point 2 does not use the damaged record but failed"
grep -q "server 'web1' volume 1 point 3 offset $rec_off: .*authentication failed\|server 'web1' volume 1 point 3 offset $rec_off" "$WORK/mount.err" ||
  fail "no log line naming the damaged record: $(cat "$WORK/mount.err")"
pass "flipped byte at volume 1 offset $rec_off: EIO in region $region only; logged: $(head -n 1 "$WORK/mount.err")"
stop_mount INT
cp "$WORK/pack.orig" "$pack"

# Overlay: writes land in OVERLAY, read back, survive a remount; the store does not change.
OV=$WORK/overlay
start_mount --overlay "$OV"
printf 'hello overlay' | dd of="$MP/2/vol-0.img" bs=1 seek=5000 conv=notrunc status=none
dd if=/dev/urandom of="$WORK/blk" bs=64k count=1 status=none
dd if="$WORK/blk" of="$MP/2/vol-0.img" bs=64k seek=100 conv=notrunc,fsync status=none
cp "$WORK/r2/vol-0.img" "$WORK/want.img"
printf 'hello overlay' | dd of="$WORK/want.img" bs=1 seek=5000 conv=notrunc status=none
dd if="$WORK/blk" of="$WORK/want.img" bs=64k seek=100 conv=notrunc status=none
cmp "$MP/2/vol-0.img" "$WORK/want.img" || fail "overlay read-back differs"
cmp "$MP/3/vol-0.img" "$WORK/r3/vol-0.img" || fail "another point changed"
stop_mount fusermount
[[ -f $OV/2/vol-0.img ]] || fail "no overlay file"
echo "ok: overlay holds $(du -k "$OV/2/vol-0.img" | cut -f1) KiB allocated for a $(stat -c %s "$OV/2/vol-0.img")-byte volume"
start_mount --overlay "$OV"
cmp "$MP/2/vol-0.img" "$WORK/want.img" || fail "overlay writes lost across a remount"
stop_mount TERM
[[ $(store_fingerprint) == "$store_before" ]] || fail "the store changed"
pass "overlay writes read back and survive a remount; every store file unchanged (sha256)"
