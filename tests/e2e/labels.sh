#!/usr/bin/env bash
# Points on demand with a label: `blockrep-agent point --label` asks a running agent for a point
# and returns once the staging holds it; `list` shows the label; `restore --point LABEL` restores
# that point; `--once --label` labels a one-shot point. Bad labels and unknown labels are one
# clear line each. (Retention of labelled points over simulated days: chain_test.cc.)
source "$(dirname "$0")/lib.sh"

ID=labels$$
make_keys "$ID"
IMG=$WORK/vol.img
head -c $((32 << 20)) /dev/urandom >"$IMG"
truncate -s 64M "$IMG"
STAGING_RETENTION="10m:1h,1h:24h,1d:7d" start_staging
STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$IMG" --state-dir "$STATE" --tracker scan --point-interval 1h 2>"$WORK/agent.log" &
APID=$!
PIDS+=("$APID")
for _ in $(seq 1 300); do
  recover list --store "$STORE" --server-id "$ID" --json 2>/dev/null | grep -q '"id": 1,' && break
  kill -0 "$APID" 2>/dev/null || fail "the agent died: $(tail -n 3 "$WORK/agent.log")"
  sleep 0.1
done
recover list --store "$STORE" --server-id "$ID" --json | grep -q '"id": 1,' || fail "no point 1"

# A change, then a labelled point: the command returns once the point is durable.
dd if=/dev/urandom of="$IMG" bs=64K count=16 seek=100 conv=notrunc status=none
want=$(sha "$IMG")
out=$("$BIN/blockrep-agent" point --state-dir "$STATE" --label before-upgrade --timeout 60s) ||
  fail "point --label failed: $out $(tail -n 3 "$WORK/agent.log")"
echo "$out"
[[ $out =~ ^point\ ([0-9]+)\ \'before-upgrade\'\ acknowledged ]] || fail "unexpected output: $out"
labelled=${BASH_REMATCH[1]}

# Another change and an unlabelled point on demand.
dd if=/dev/urandom of="$IMG" bs=64K count=16 seek=300 conv=notrunc status=none
out=$("$BIN/blockrep-agent" point --state-dir "$STATE" --json --timeout 60s) || fail "point failed: $out"
echo "$out" | grep -q '"label": null' || fail "an unlabelled point has a label: $out"

json=$(recover list --store "$STORE" --server-id "$ID" --json)
echo "$json" | grep -q "\"id\": $labelled, .*\"label\": \"before-upgrade\"" || fail "list --json lacks the label: $json"
[[ $(echo "$json" | grep -c '"label": null') -ge 1 ]] || fail "other points should have \"label\": null: $json"
recover list --store "$STORE" --server-id "$ID" | grep -q "before-upgrade" || fail "the table lacks the label"

out=$(recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point before-upgrade \
  --output "$WORK/out")
echo "$out" | head -1
echo "$out" | grep -q "restored point $labelled 'before-upgrade'" || fail "restore by label: $out"
[[ $(sha "$WORK/out/vol-0.img") == "$want" ]] || fail "the labelled point does not restore to what the volume held"

# Mistakes: one line each, exit 2 for bad input.
set +e
err=$("$BIN/blockrep-agent" point --state-dir "$STATE" --label 1bad 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc -eq 2 && $(echo "$err" | wc -l) -eq 1 && $err == *"starting with a letter"* ]] || fail "bad label: rc=$rc $err"
echo "bad label: $err"
set +e
err=$(recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point no-such-label \
  --output "$WORK/out2" 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc -ne 0 && $(echo "$err" | wc -l) -eq 1 && $err == *"no retained point labelled 'no-such-label'"* ]] ||
  fail "unknown label: rc=$rc $err"
echo "unknown label: $err"

stop_agent
PIDS=()
set +e
err=$("$BIN/blockrep-agent" point --state-dir "$STATE" --label x 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc -ne 0 && $err == *"not running"* ]] || fail "point with no agent running: rc=$rc $err"

# --once --label labels the one-shot point.
dd if=/dev/urandom of="$IMG" bs=64K count=4 seek=500 conv=notrunc status=none
agent "$ID" --volume "$IMG" --state-dir "$STATE" --tracker scan --label after-change --json >"$WORK/once.json" \
  2>"$WORK/once.log" || fail "--once --label: $(tail -n 3 "$WORK/once.log")"
grep -q '"label": "after-change"' "$WORK/once.json" || fail "--once --json lacks the label: $(cat "$WORK/once.json")"
recover list --store "$STORE" --server-id "$ID" --json | grep -q '"label": "after-change"' || fail "the --once label is not listed"
pass "labelled points: taken on demand and durable on return, listed, restored by label, bad labels refused"
