#!/usr/bin/env bash
# Operator mistakes each give one clear error line and a non-zero exit, and change nothing stored.
source "$(dirname "$0")/lib.sh"

make_keys web1 other
head -c 4M /dev/urandom >"$WORK/vol.img"
start_staging
agent web1 --volume "$WORK/vol.img" >/dev/null   # a first point, so there is something to protect
before=$(store_fingerprint)

# expect_error NAME PATTERN CMD...: non-zero exit, exactly one stderr line, matching PATTERN.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  local rc=0
  "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || rc=$?
  [[ $rc -ne 0 ]] || fail "$name: exit status 0"
  local lines
  lines=$(wc -l <"$WORK/err.txt")
  [[ $lines -eq 1 ]] || { cat "$WORK/err.txt" >&2; fail "$name: $lines stderr lines, expected 1"; }
  grep -qiE "$pattern" "$WORK/err.txt" || { cat "$WORK/err.txt" >&2; fail "$name: message does not match /$pattern/"; }
  [[ $(store_fingerprint) == "$before" ]] || fail "$name: the store changed"
  echo "ok: $name -> exit $rc: $(cat "$WORK/err.txt")"
}

A=("$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --once --volume "$WORK/vol.img")
T=(--tls-cert "$KEYS/agent-web1.crt" --tls-key "$KEYS/agent-web1.key" --tls-ca "$KEYS/ca.crt")

# A port another program listens on (here the running staging's) is waited for, then refused.
expect_error "listen port taken" "bind 127.0.0.1:$STAGING_PORT: Address already in use \(waited 5 s\): another program listens there" \
  "$BIN/blockrep-staging" --listen "127.0.0.1:$STAGING_PORT" --store "$WORK/store2" --tls-cert "$KEYS/staging.crt" \
  --tls-key "$KEYS/staging.key" --tls-ca "$KEYS/ca.crt"

expect_error "wrong data key" "data key is not the key" \
  "${A[@]}" --server-id web1 --key "$KEYS/data-other.key" "${T[@]}"

expect_error "missing key file" "key file .*No such file" \
  "${A[@]}" --server-id web1 --key "$WORK/nope.key" "${T[@]}"

cp "$KEYS/data-web1.key" "$WORK/loose.key"
chmod 644 "$WORK/loose.key"
expect_error "key file mode 0644" "mode 0644.*chmod 600" \
  "${A[@]}" --server-id web1 --key "$WORK/loose.key" "${T[@]}"

expect_error "server-id not matching the certificate" "certificate belongs to server-id 'web1'.*claims server-id 'ghost'" \
  "${A[@]}" --server-id ghost --key "$KEYS/data-web1.key" "${T[@]}"

expect_error "recover: unknown server-id" "server 'ghost' has no recovery points" \
  "$BIN/blockrep-recover" list --store "$STORE" --server-id ghost

"$BIN/blockrep-keygen" --out "$WORK/rogue" --server-id web1 >/dev/null
expect_error "client certificate from another CA" "rejected our TLS certificate" \
  "${A[@]}" --server-id web1 --key "$KEYS/data-web1.key" --tls-cert "$WORK/rogue/agent-web1.crt" \
  --tls-key "$WORK/rogue/agent-web1.key" --tls-ca "$KEYS/ca.crt"

expect_error "staging certificate from another CA" "TLS handshake .*failed.*certificate verify failed" \
  "${A[@]}" --server-id web1 --key "$KEYS/data-web1.key" "${T[@]/$KEYS\/ca.crt/$WORK/rogue/ca.crt}"

port=$(( (STAGING_PORT % 20000) + 30000 ))
expect_error "staging unreachable" "cannot connect to staging.*refused" \
  "$BIN/blockrep-agent" --staging "127.0.0.1:$port" --once --volume "$WORK/vol.img" --server-id web1 \
  --key "$KEYS/data-web1.key" "${T[@]}"

expect_error "volume path missing" "volume .*/missing.img.*No such file" \
  "${A[@]/$WORK\/vol.img/$WORK/missing.img}" --server-id web1 --key "$KEYS/data-web1.key" "${T[@]}"

expect_error "restore with the wrong data key" "does not hold the data key of server 'web1'" \
  "$BIN/blockrep-recover" restore --store "$STORE" --server-id web1 --key "$KEYS/data-other.key" \
  --point latest --output "$WORK/restore"

expect_error "restore of a missing point" "no recovery point 42" \
  "$BIN/blockrep-recover" restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" \
  --point 42 --output "$WORK/restore"

expect_error "bad --compress" "zstd level" \
  "${A[@]}" --server-id web1 --key "$KEYS/data-web1.key" "${T[@]}" --compress zstd:99

# A flipped byte in a stored record: restore names the place and leaves no image behind.
stop_staging
pack=$(ls "$STORE/servers/web1/packs/"*.pack | head -n1)
flip_byte "$pack" 200000 255
before=$(store_fingerprint)
expect_error "restore of a damaged record" "server 'web1' volume 0 point [0-9]+ offset [0-9]+: record in pack" \
  "$BIN/blockrep-recover" restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" \
  --point 1 --output "$WORK/restore"
[[ ! -e $WORK/restore/vol-0.img && ! -e $WORK/restore/vol-0.img.partial ]] || fail "a damaged restore left an image"
start_staging

# The staging survived every refusal and still accepts its real agent.
agent web1 --volume "$WORK/vol.img" >/dev/null || fail "agent refused after the error cases"
stop_staging
pass "errors"
