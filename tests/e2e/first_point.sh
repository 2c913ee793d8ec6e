#!/usr/bin/env bash
# A continuous agent's initial sync is a recovery point as soon as it is read, not at the next
# --point-interval (10 minutes by default): point 1 is listed, consistent, a moment after the
# sweep's last record is acknowledged, and the state leaves INITIAL_SYNC for CONTINUOUS. Prints
# the seconds from the end of the sweep to the acknowledged point.
source "$(dirname "$0")/lib.sh"
need_root "first_point"

tracked_ext4 first 256M
mount_dev
cp -r /usr/include/linux "$WORK/mnt/src"
sync
start_staging
STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$dev" --state-dir "$STATE" 2>"$WORK/agent.log" &
APID=$!
PIDS+=("$APID")

listed=
for _ in $(seq 1 600); do
  if recover list --store "$STORE" --server-id "$ID" --json 2>/dev/null | grep -q '"id": 1'; then
    listed=1
    break
  fi
  kill -0 "$APID" 2>/dev/null || fail "the agent died: $(tail -n 3 "$WORK/agent.log")"
  sleep 0.1
done
[[ -n $listed ]] || fail "no point 1 within 60 s of a 10-minute interval: $(tail -n 5 "$WORK/agent.log")"
recover list --store "$STORE" --server-id "$ID" --json | grep -q '"id": 1, "time": "[^"]*", "consistent": true' ||
  fail "point 1 is not consistent: $(recover list --store "$STORE" --server-id "$ID" --json)"

# Log times (UTC, milliseconds) of the sweep's end and of the acknowledgement.
ms() { grep -m1 "$1" "$WORK/agent.log" | awk '{print $1}' | sed 's/.*T//; s/Z$//' | awk -F: '{printf "%.0f", ($1*3600+$2*60+$3)*1000}'; }
swept=$(ms "point 1: reading -> final take")
acked=$(ms "point 1 acknowledged")
[[ -n $swept && -n $acked ]] || fail "log lines missing: $(cat "$WORK/agent.log")"
gap_ms=$((acked - swept))
echo "point 1 acknowledged ${gap_ms} ms after the sweep's end (final take, freeze, commit)"
((gap_ms <= 5000)) || fail "point 1 came ${gap_ms} ms after the sweep"

state=
for _ in $(seq 1 50); do
  state=$("$BIN/blockrep-agent" status --state-dir "$STATE" --json | grep -o '"state": "[A-Z_]*"' | grep -o '[A-Z_]*"$' | tr -d '"')
  [[ $state == CONTINUOUS ]] && break
  sleep 0.1
done
[[ $state == CONTINUOUS ]] || fail "state after point 1: $state"
kill -TERM "$APID"
wait "$APID" || fail "agent did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent.log")"
PIDS=()
pass "the initial sync is point 1 at once (consistent), and the agent is CONTINUOUS"
