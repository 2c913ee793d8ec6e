#!/usr/bin/env bash
# Data keys rotate: blockrep-keygen --rotate-key appends a new key to data-ID.key; the agent's next
# point is a full one sealed under it, later points are incremental again, and every point, older
# or newer, restores byte-identical from the one key file, from the store and over --staging;
# verify --key authenticates them all. A key file without the new key is refused in one line by
# restore and by the staging.
source "$(dirname "$0")/lib.sh"

make_keys web1
head -c 3M /dev/urandom >"$WORK/vol.img"
truncate -s 8M "$WORK/vol.img"
start_staging
declare -A sum
point() {  # expected kind pattern
  agent web1 --volume "$WORK/vol.img" >"$WORK/agent.out" 2>"$WORK/agent.err" || fail "agent: $(tail -n 1 "$WORK/agent.err")"
  local id kind
  id=$(awk '/acknowledged/ {print $2}' "$WORK/agent.out")
  kind=$(grep "^  kind" "$WORK/agent.out")
  [[ $kind =~ $1 ]] || fail "point $id: expected '$1', got: $kind"
  sum[$id]=$(sha "$WORK/vol.img")
  echo "point $id:$kind"
  dd if=/dev/urandom of="$WORK/vol.img" bs=64k count=3 seek=$((id * 7)) conv=notrunc status=none
}
point "full"
point "incremental on point 1"
cp -p "$KEYS/data-web1.key" "$WORK/old.key"
"$BIN/blockrep-keygen" --out "$KEYS" --rotate-key web1 | tee "$WORK/rotate.out"
grep -q "2 key(s) held" "$WORK/rotate.out" || fail "the key file does not hold both keys"
point "full \(the data key was rotated: the chain's last point is sealed under key [0-9a-f]{16}, this point under key [0-9a-f]{16}"
point "incremental on point 3"

restore_all() {  # source args...
  local p
  for p in 1 2 3 4; do
    rm -rf "$WORK/out"
    recover restore "$@" --server-id web1 --key "$KEYS/data-web1.key" --point "$p" --output "$WORK/out" >/dev/null ||
      fail "point $p does not restore ($*)"
    [[ $(sha "$WORK/out/vol-0.img") == "${sum[$p]}" ]] || fail "point $p restores other bytes ($*)"
  done
}
restore_all --store "$STORE"
restore_all --staging "127.0.0.1:$STAGING_PORT"
recover verify --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" >"$WORK/verify.out" || fail "verify: $(cat "$WORK/verify.out")"
cat "$WORK/verify.out"
grep -q "authenticated and decompressed with the key .*4 volume seal(s) add up.*: ok" "$WORK/verify.out" || fail "verify did not authenticate every point"
pass "points under the old and the new key restore from one key file (store and staging); verify is clean"

rc=0
recover restore --store "$STORE" --server-id web1 --key "$WORK/old.key" --point 1 --output "$WORK/out2" >/dev/null 2>"$WORK/err" || rc=$?
[[ $rc -ne 0 && $(wc -l <"$WORK/err") -eq 1 ]] || fail "the old key file alone: exit $rc, $(cat "$WORK/err")"
echo "old key file: $(cat "$WORK/err")"
rc=0
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id web1 --key "$WORK/old.key" \
  --tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" --tls-ca "$KEYS/ca.crt" \
  --volume "$WORK/vol.img" --once >/dev/null 2>"$WORK/err" || rc=$?
[[ $rc -ne 0 ]] || fail "an agent without the new key replicated"
echo "agent with the old key file: $(tail -n 1 "$WORK/err")"
grep -q "not the key server 'web1' has replicated with so far" "$WORK/err" || fail "unclear refusal: $(cat "$WORK/err")"
pass "a key file without the new key is refused"
