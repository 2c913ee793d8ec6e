#!/usr/bin/env bash
# verify checks a store with and without the key and names damage by server/volume/point/offset;
# one flipped bit makes restore refuse with one clear line, and --allow-damaged restores the rest
# byte-identical with zeros only in the extent it lists.
source "$(dirname "$0")/lib.sh"

make_keys web1 db1
# 8 MiB of random data (stored raw, so a byte offset in the pack maps to a byte of data), then
# three points: each rewrites 1 MiB, so the first record is shared by every point.
head -c 8M /dev/urandom >"$WORK/web.img"
head -c 2M /dev/urandom >"$WORK/db.img"
start_staging
for p in 1 2 3; do
  agent web1 --volume "$WORK/web.img" --compress none >/dev/null 2>>"$WORK/agent.log"
  cp "$WORK/web.img" "$WORK/web-$p.img"
  dd if=/dev/urandom of="$WORK/web.img" bs=1M count=1 seek=$((p + 2)) conv=notrunc status=none
done
agent db1 --volume "$WORK/db.img" >/dev/null 2>>"$WORK/agent.log"
stop_staging

# expect_verify NAME EXPECTED-EXIT ARGS...: runs verify, keeps stdout in $WORK/verify.out.
expect_verify() {
  local name=$1 want=$2 rc=0
  shift 2
  recover verify --store "$STORE" "$@" >"$WORK/verify.out" 2>"$WORK/verify.err" || rc=$?
  [[ $rc -eq $want ]] || { cat "$WORK/verify.out" "$WORK/verify.err" >&2; fail "$name: exit $rc, expected $want"; }
  if [[ $want -ne 0 ]]; then
    [[ $(wc -l <"$WORK/verify.err") -eq 1 ]] || { cat "$WORK/verify.err" >&2; fail "$name: expected one stderr line"; }
  fi
  echo "ok: $name -> exit $rc"
  sed 's/^/    /' "$WORK/verify.out"
}

expect_verify "clean store, no key" 0
grep -q "server 'web1': 3 point(s), .*checksums and structure (no key): ok" "$WORK/verify.out" || fail "web1 not reported ok"
grep -q "server 'db1': 1 point(s)" "$WORK/verify.out" || fail "db1 not checked"
expect_verify "clean store, web1's key" 0 --server-id web1 --key "$KEYS/data-web1.key"
grep -q "authenticated and decompressed with the key (10.0 MiB of data; 3 volume seal(s) add up): ok" "$WORK/verify.out" || fail "web1 not authenticated, or its seals not checked"
expect_verify "all servers, web1's key" 0 --key "$KEYS/data-web1.key"
grep -q "server 'db1'.*no key" "$WORK/verify.out" && grep -q "note: not its data key" "$WORK/verify.out" ||
  fail "db1 should be checked without the key, and say why"
rc=0
recover verify --store "$STORE" --server-id db1 --key "$KEYS/data-web1.key" 2>"$WORK/err.txt" >/dev/null || rc=$?
[[ $rc -ne 0 ]] && grep -q "data key of none of the servers" "$WORK/err.txt" || fail "a wrong key for db1 was not refused"

# One flipped bit in the ciphertext of a record that every point uses: the first record of the
# first pack below volume offset 2 MiB (docs/FORMAT.md: 16-byte pack header; per record a 64-byte
# header, ciphertext, 16-byte tag, 8 bytes of fingerprint per 4 KiB).
# The pack is copied out, changed and put back (E2E_STORE=s3: the object in the bucket).
pack="$WORK/00000001.pack"
store_get servers/web1/packs/00000001.pack "$pack"
u32() { od -An -tu4 -j "$1" -N4 "$pack" | tr -d ' '; }
u64() { od -An -tu8 -j "$1" -N8 "$pack" | tr -d ' '; }
rec=16
while rec_off=$(u64 $((rec + 24))); ((rec_off >= 2 << 20)); do
  rec=$((rec + 64 + $(u32 $((rec + 16))) + 16 + ($(u32 $((rec + 12))) + 4095) / 4096 * 8))
done
at=$((rec + 64 + 1000))
byte=$(od -An -tu1 -j "$at" -N1 "$pack" | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 4)))" | dd of="$pack" bs=1 seek="$at" conv=notrunc status=none
store_put "$pack" servers/web1/packs/00000001.pack
for args in "" "--key $KEYS/data-web1.key"; do
  # shellcheck disable=SC2086
  expect_verify "flipped bit, ${args:-no key}" 1 --server-id web1 $args
  grep -qE "damaged: server 'web1' volume 0 points 1-3 offset $rec_off length [0-9]+: record in pack 1 at offset $rec fails its checksum" \
    "$WORK/verify.out" || fail "verify did not name server/volume/points/offset of the flipped bit"
  [[ $(grep -c "damaged:" "$WORK/verify.out") -eq 1 ]] || fail "verify reports damage that is not there"
  grep -q "verify found 1 damaged extent" "$WORK/verify.err" || fail "stderr: $(cat "$WORK/verify.err")"
done
damaged_len=$(grep -oE "offset $rec_off length [0-9]+" "$WORK/verify.out" | awk '{print $4}')

# Restore refuses, in one line naming the place, and leaves no image.
rc=0
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point 2 --output "$WORK/out" \
  >/dev/null 2>"$WORK/err.txt" || rc=$?
[[ $rc -ne 0 && $(wc -l <"$WORK/err.txt") -eq 1 ]] || fail "restore of a damaged point: exit $rc, $(cat "$WORK/err.txt")"
grep -q "server 'web1' volume 0 point 2 offset $rec_off: .*fails its checksum.*--allow-damaged" "$WORK/err.txt" ||
  fail "restore error does not name the place: $(cat "$WORK/err.txt")"
[[ ! -e $WORK/out/vol-0.img && ! -e $WORK/out/vol-0.img.partial ]] || fail "a refused restore left an image"
echo "ok: restore refused: $(cat "$WORK/err.txt")"

# --allow-damaged: everything else identical, the listed extent zeros.
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point 2 --output "$WORK/out" \
  --allow-damaged >"$WORK/restore.out"
grep -q "1 damaged extent(s) left as zeros" "$WORK/restore.out" || fail "restore did not list the damage: $(cat "$WORK/restore.out")"
grep -q "server 'web1' volume 0 point 2 offset $rec_off length $damaged_len:" "$WORK/restore.out" || fail "wrong extent listed"
cp "$WORK/web-2.img" "$WORK/expected.img"
dd if=/dev/zero of="$WORK/expected.img" bs=4096 seek=$((rec_off / 4096)) count=$((damaged_len / 4096)) conv=notrunc status=none
[[ $(sha "$WORK/out/vol-0.img") == $(sha "$WORK/expected.img") ]] || fail "--allow-damaged restore differs outside the damaged extent"
echo "ok: --allow-damaged: $(grep "server .web1. volume" "$WORK/restore.out" | sed "s/^ *//"), the rest identical"

# The other server is untouched by web1's damage.
expect_verify "db1 after web1's damage" 0 --server-id db1 --key "$KEYS/data-db1.key"
pass "verify names damage; restore refuses it; --allow-damaged restores around it"
