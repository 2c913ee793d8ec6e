#!/usr/bin/env bash
# An agent killed right after END_POINT has sent a whole point: the staging commits it. app1
# (blockrep_hostile_peer with app1's real certificate and key) sends 20,000 records, the SEAL and
# END_POINT in one burst and, once the staging's kernel has them, closes its socket with replies
# unread (a reset, as when an agent is killed); most records are not yet
# durable when the close arrives. The staging finishes them, commits point 1, and a new session
# finds the chain at point 1.
source "$(dirname "$0")/lib.sh"

make_keys app1
start_staging
out=$("$BIN/blockrep_hostile_peer" hangup --staging "127.0.0.1:$STAGING_PORT" --server-id app1 \
  --key "$KEYS/data-app1.key" --tls-cert "$KEYS/agent-app1.crt" --tls-key "$KEYS/agent-app1.key" \
  --tls-ca "$KEYS/ca.crt" --records 20000 2>&1) || fail "hostile peer: $out"
echo "$out"
[[ $out == "hung up after END_POINT of point 1; the chain ends at point 1" ]] ||
  fail "the staging did not commit the point whose END_POINT arrived before the hang-up"
grep -q "point 1 committed (20000 records" "$WORK/staging.log" || fail "the staging log does not show point 1's 20000 records committed"
n=$(recover list --store "$STORE" --server-id app1 --json | grep -c '"id"')
[[ $n == 1 ]] || fail "list shows $n points, expected 1"
pass "the point sent whole before the hang-up was committed"
