#!/usr/bin/env bash
# Recovery over the network (--staging): list, restore and mount read the same as from the store;
# server A's certificate asking for server B's points is refused in one clear line with nothing
# sent; a wrong data key and bad flags are refused in one line; a flipped byte in a pack reached
# through the staging makes the restore refuse naming the extent; the staging never writes to the
# store for a reader (sha256 of every file before and after).
source "$(dirname "$0")/lib.sh"

make_keys web1 db1
head -c 12M /dev/urandom >"$WORK/web.img"
truncate -s 20M "$WORK/web.img"
head -c 3M /dev/urandom >"$WORK/db.img"
start_staging
for p in 1 2; do
  agent web1 --volume "$WORK/web.img" --compress none >/dev/null 2>>"$WORK/agent.log"
  cp "$WORK/web.img" "$WORK/web-$p.img"
  dd if=/dev/urandom of="$WORK/web.img" bs=64k count=3 seek=$((p * 11)) conv=notrunc status=none
done
agent db1 --volume "$WORK/db.img" >/dev/null 2>>"$WORK/agent.log"
S=127.0.0.1:$STAGING_PORT
before=$(store_fingerprint)

# one_line_error NAME CMD...: CMD must fail with exactly one line on stderr; prints it.
one_line_error() {
  local name=$1 rc=0
  shift
  "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
  [[ $rc -ne 0 ]] || fail "$name: succeeded"
  [[ $(wc -l <"$WORK/err") -eq 1 ]] || { cat "$WORK/err" >&2; fail "$name: expected one line on stderr"; }
  [[ ! -s $WORK/out ]] || fail "$name: printed output: $(head -c 300 "$WORK/out")"
  echo "ok: $name -> exit $rc: $(cat "$WORK/err")"
}

diff <(recover list --store "$STORE" --server-id web1 --json) \
  <(recover list --staging "$S" --server-id web1 --key "$KEYS/data-web1.key" --json) || fail "list differs"
recover list --staging "$S" --server-id web1 --tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" \
  --tls-ca "$KEYS/ca.crt" >/dev/null || fail "list with explicit TLS files and no key failed"
pass "list --staging equals list --store (with --key, and with TLS files and no key)"

for p in 1 2; do
  recover restore --staging "$S" --server-id web1 --key "$KEYS/data-web1.key" --point $p --output "$WORK/r$p" >"$WORK/restore.out"
  cmp "$WORK/r$p/vol-0.img" "$WORK/web-$p.img" || fail "point $p restored over the network differs"
done
grep -q "fetched from the staging" "$WORK/restore.out" || fail "restore did not say where it read from"
pass "restore --staging of points 1 and 2: identical ($(head -n 1 "$WORK/restore.out"))"

# Server A (web1) asking for server B (db1): its certificate names web1.
one_line_error "web1's certificate asking for db1's points" recover list --staging "$S" --server-id db1 \
  --tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" --tls-ca "$KEYS/ca.crt"
grep -q "belongs to server-id 'web1' but it claims server-id 'db1'" "$WORK/err" || fail "refusal does not say why"
one_line_error "web1's certificate restoring db1" recover restore --staging "$S" --server-id db1 \
  --key "$KEYS/data-db1.key" --tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" --tls-ca "$KEYS/ca.crt" \
  --point latest --output "$WORK/stolen"
[[ ! -e $WORK/stolen/vol-0.img ]] || fail "an image was written for another server's restore"
grep -q "reader of server 'db1'" "$WORK/staging.log" && fail "the staging opened a reader session for db1"
one_line_error "wrong data key" recover restore --staging "$S" --server-id web1 --key "$KEYS/data-db1.key" \
  --tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" --tls-ca "$KEYS/ca.crt" --point latest --output "$WORK/x"
one_line_error "--store and --staging together" recover restore --store "$STORE" --staging "$S" --server-id web1 \
  --key "$KEYS/data-web1.key" --point latest --output "$WORK/x"
one_line_error "no such point" recover restore --staging "$S" --server-id web1 --key "$KEYS/data-web1.key" --point 99 --output "$WORK/x"
one_line_error "staging not there" recover list --staging 127.0.0.1:1 --server-id web1 --key "$KEYS/data-web1.key"

# A flipped byte in the newest pack of web1, read through the staging: refused, extent named.
pack=$(ls "$STORE/servers/web1/packs/"*.pack | tail -n 1)
cp "$pack" "$WORK/pack.orig"
at=$((16 + 64 + 5000))
flip_byte "$pack" "$at" 8
one_line_error "damaged record through the staging" recover restore --staging "$S" --server-id web1 \
  --key "$KEYS/data-web1.key" --point latest --output "$WORK/bad"
grep -Eq "server 'web1' volume 0 point 2 offset [0-9]+: record in pack [0-9]+ at offset 16 fails its checksum" "$WORK/err" ||
  fail "the damage is not named"
cp "$WORK/pack.orig" "$pack"

# Mount over the network (when FUSE is there): images equal the restored points.
if [[ $(id -u) -eq 0 && -e /dev/fuse ]]; then
  mkdir -p "$WORK/mp"
  MOUNTS+=("$WORK/mp")
  "$BIN/blockrep-recover" mount --staging "$S" --server-id web1 --key "$KEYS/data-web1.key" "$WORK/mp" \
    >"$WORK/mount.out" 2>"$WORK/mount.err" &
  MPID=$!
  PIDS+=("$MPID")
  for _ in $(seq 1 200); do grep -q '^mounted' "$WORK/mount.out" && break; sleep 0.05; done
  grep -q '^mounted' "$WORK/mount.out" || fail "mount --staging did not come up: $(cat "$WORK/mount.err")"
  cmp "$WORK/mp/1/vol-0.img" "$WORK/web-1.img" && cmp "$WORK/mp/latest/vol-0.img" "$WORK/web-2.img" ||
    fail "mount --staging images differ"
  kill -TERM "$MPID"
  wait "$MPID" || fail "mount --staging did not exit 0 on SIGTERM"
  pass "mount --staging: points 1 and latest equal their images ($(cat "$WORK/mount.out"))"
else
  echo "note: mount --staging not checked (needs root and /dev/fuse)"
fi
stop_staging
[[ $(store_fingerprint) == "$before" ]] || fail "the store changed under readers"
pass "every store file unchanged (sha256) after the readers"
