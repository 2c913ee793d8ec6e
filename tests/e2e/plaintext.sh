#!/usr/bin/env bash
# The staging never sees plaintext: a marker string filling the volume appears nowhere in the store
# or the staging's log, whatever the codec (with none, records are still encrypted).
source "$(dirname "$0")/lib.sh"

make_keys secret1
marker="BLOCKREP-PLAINTEXT-MARKER-7f3a9c"
# A volume of 8 MiB repeating the marker, with random bytes in between so some records are raw.
: >"$WORK/vol.img"
for i in $(seq 1 8); do
  { yes "$marker" || true; } | head -c 1000000 >>"$WORK/vol.img"
  head -c 48576 /dev/urandom >>"$WORK/vol.img"
done
grep -qa "$marker" "$WORK/vol.img" || fail "the marker is not in the volume"
start_staging
for codec in none lz4 zstd; do
  agent secret1 --volume "$WORK/vol.img" --compress "$codec" >/dev/null
done
stop_staging
if grep -rqa "$marker" "$STORE" "$WORK/staging.log"; then
  fail "the marker string was found on the staging side"
fi
# Weaker fragments too: half of the marker.
if grep -rqa "${marker:0:16}" "$STORE"; then
  fail "a fragment of the marker was found in the store"
fi
recover restore --store "$STORE" --server-id secret1 --key "$KEYS/data-secret1.key" --point 1 \
  --output "$WORK/out" >/dev/null
cmp "$WORK/vol.img" "$WORK/out/vol-0.img" || fail "restore differs"
pass "marker absent from $(du -sh "$STORE" | cut -f1) of store after none/lz4/zstd; restore identical"
