#!/usr/bin/env bash
# A stolen agent certificate can be revoked: blockrep-keygen --revoke ID adds it to ca.crl and moves
# it aside; the staging (--tls-crl) re-reads the CRL on SIGHUP, refuses the revoked certificate in
# one line and closes a live session that used one; a certificate issued again for the same server
# (its data key kept) replicates on the same chain. A CRL from another CA is refused at start.
source "$(dirname "$0")/lib.sh"

make_keys old1 web1 db1
head -c 3M /dev/urandom >"$WORK/web.img"
head -c 3M /dev/urandom >"$WORK/db.img"
"$BIN/blockrep-keygen" --out "$KEYS" --revoke old1 >"$WORK/keygen.out" || fail "revoke old1"
cat "$WORK/keygen.out"
[[ -f $KEYS/ca.crl ]] || fail "no ca.crl"
start_staging --tls-crl "$KEYS/ca.crl"
agent web1 --volume "$WORK/web.img" >/dev/null 2>"$WORK/web.err" || fail "web1 before revocation: $(tail -n 1 "$WORK/web.err")"
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id db1 --key "$KEYS/data-db1.key" \
  --volume "$WORK/db.img" --point-interval 1s 2>"$WORK/db.err" &
DB=$!
PIDS+=($DB)
for _ in $(seq 1 100); do grep -q "acknowledged" "$WORK/db.err" && break; sleep 0.1; done
grep -q "acknowledged" "$WORK/db.err" || fail "db1 did not replicate: $(tail -n 2 "$WORK/db.err")"

"$BIN/blockrep-keygen" --out "$KEYS" --revoke web1 --revoke db1 >"$WORK/keygen.out" || fail "revoke web1 db1"
cat "$WORK/keygen.out"
stolen=$(ls "$KEYS"/agent-web1.crt.revoked-*)
stolen_key=$(ls "$KEYS"/agent-web1.key.revoked-*)
web_with_stolen() {
  "$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id web1 --key "$KEYS/data-web1.key" \
    --tls-cert "$stolen" --tls-key "$stolen_key" --tls-ca "$KEYS/ca.crt" --volume "$WORK/web.img" --once "$@"
}
# Until SIGHUP the staging still holds the old CRL.
web_with_stolen >/dev/null 2>"$WORK/web.err" || fail "the staging used the new CRL before SIGHUP"
kill -HUP "$STAGING_PID"
for _ in $(seq 1 50); do grep -q "SIGHUP: TLS files re-read" "$WORK/staging.log" && break; sleep 0.1; done
grep "SIGHUP" "$WORK/staging.log"
grep -q "SIGHUP: TLS files re-read; the CRL revokes 3 certificate(s)" "$WORK/staging.log" || fail "no reload logged"
rc=0
web_with_stolen >/dev/null 2>"$WORK/web.err" || rc=$?
[[ $rc -ne 0 ]] || fail "a revoked certificate replicated"
[[ $(wc -l <"$WORK/web.err") -eq 1 ]] || fail "expected one line: $(cat "$WORK/web.err")"
grep -q "revoked" "$WORK/web.err" || fail "the refusal does not say revoked: $(cat "$WORK/web.err")"
echo "revoked web1: $(cat "$WORK/web.err")"
# db1's live session used a certificate revoked now: closed, and the agent stops with one line.
for _ in $(seq 1 100); do kill -0 "$DB" 2>/dev/null || break; sleep 0.1; done
kill -0 "$DB" 2>/dev/null && fail "db1's agent still runs on a revoked certificate"
wait "$DB" && fail "db1's agent exited 0 on a revoked certificate"
grep -q "revoked" <(tail -n 1 "$WORK/db.err") || fail "db1's agent did not say why: $(tail -n 2 "$WORK/db.err")"
echo "db1: $(tail -n 1 "$WORK/db.err")"
pass "SIGHUP picked up the new CRL: a revoked certificate is refused, a live session closed"

# A new certificate for web1 (the data key kept) continues its chain.
"$BIN/blockrep-keygen" --out "$KEYS" --server-id web1 >"$WORK/keygen.out" || fail "re-issue web1"
grep -q "kept data-web1.key" "$WORK/keygen.out" || fail "the data key was not kept: $(cat "$WORK/keygen.out")"
dd if=/dev/urandom of="$WORK/web.img" bs=64k count=2 conv=notrunc status=none
agent web1 --volume "$WORK/web.img" >"$WORK/web.out" 2>"$WORK/web.err" || fail "web1 with its new certificate: $(tail -n 1 "$WORK/web.err")"
grep -q "incremental on point" "$WORK/web.out" || fail "web1's new certificate did not continue its chain: $(cat "$WORK/web.out")"
pass "a certificate issued again replicates on the same chain"

# A CRL that another CA signed is refused when the staging starts.
"$BIN/blockrep-keygen" --out "$WORK/other" --server-id x1 >/dev/null
"$BIN/blockrep-keygen" --out "$WORK/other" --revoke x1 >/dev/null
stop_staging
rc=0
"$BIN/blockrep-staging" --listen 127.0.0.1:0 --store "$STORE" --tls-cert "$KEYS/staging.crt" --tls-key "$KEYS/staging.key" \
  --tls-ca "$KEYS/ca.crt" --tls-crl "$WORK/other/ca.crl" >"$WORK/bad.out" 2>&1 || rc=$?
[[ $rc -ne 0 && $(wc -l <"$WORK/bad.out") -eq 1 ]] || fail "a foreign CRL: exit $rc, $(cat "$WORK/bad.out")"
echo "foreign CRL: $(cat "$WORK/bad.out")"
