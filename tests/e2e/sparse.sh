#!/usr/bin/env bash
# A 1 GiB volume holding 10 MiB of data reads, ships and stores less than 15 MiB (its holes are
# skipped by SEEK_DATA/SEEK_HOLE, not read).
source "$(dirname "$0")/lib.sh"

make_keys sparse1
truncate -s 1G "$WORK/vol.img"
# 10 MiB of incompressible data in 10 places across the volume.
for i in $(seq 0 9); do
  dd if=/dev/urandom of="$WORK/vol.img" bs=1M count=1 seek=$((i * 100 + 7)) conv=notrunc status=none
done
start_staging
agent sparse1 --volume "$WORK/vol.img" >"$WORK/agent.out"
cat "$WORK/agent.out"
wire_mib=$(awk '/on the wire/ {print $4}' "$WORK/agent.out")
# The full point reads only the image's data (SEEK_DATA/SEEK_HOLE), not 1 GiB of holes.
read_mib=$(awk '/^  read/ {print $2}' "$WORK/agent.out")
awk -v r="$read_mib" 'BEGIN { exit !(r < 15) }' || fail "read $read_mib MiB of a 1 GiB image holding 10 MiB"
awk -v w="$wire_mib" 'BEGIN { exit !(w < 15) }' || fail "shipped $wire_mib MiB, limit 15"
stored=$(du -sb --apparent-size "$STORE" | cut -f1)
echo "store holds $stored bytes"
[[ $stored -lt $((15 * 1024 * 1024)) ]] || fail "store holds $stored bytes, limit 15 MiB"
recover restore --store "$STORE" --server-id sparse1 --key "$KEYS/data-sparse1.key" --point latest \
  --output "$WORK/out" >/dev/null
cmp "$WORK/vol.img" "$WORK/out/vol-0.img" || fail "restored image differs"
stop_staging
pass "1 GiB volume with 10 MiB of data: $read_mib MiB read, $wire_mib MiB shipped, $stored bytes stored, restored identical"
