#!/usr/bin/env bash
# The staging's Prometheus endpoint (--metrics): after two points and two drills of an image
# volume, /metrics passes `promtool check metrics` and shows what happened — the points retained
# and committed, the bytes ingested, the newest point's time, the pack commits timed, the last
# drill's result (fail, then pass), the agent's own report (AGENT_REPORT) — and answers 404 for
# anything but /metrics. `blockrep-recover servers` shows the same server from the store; the
# agent's own metrics (--metrics-textfile, --metrics) pass promtool and agree with the staging's.
source "$(dirname "$0")/lib.sh"
need_root "metrics"
command -v promtool >/dev/null || { echo "SKIP: promtool is missing (scripts/setup.sh installs prometheus)" >&2; exit 77; }

ID=metrics$$
make_keys "$ID"
head -c 12M /dev/urandom >"$WORK/vol.img"
truncate -s 32M "$WORK/vol.img"
start_staging --metrics 127.0.0.1:0
port=$(metrics_port "$WORK/staging.log")
[[ -n $port ]] || fail "the staging did not say where its metrics are: $(tail -n 3 "$WORK/staging.log")"
URL=http://127.0.0.1:$port/metrics

agent "$ID" --volume "$WORK/vol.img" >"$WORK/a1.out" 2>&1 || fail "first point: $(tail -n 1 "$WORK/a1.out")"
dd if=/dev/urandom of="$WORK/vol.img" bs=64K count=16 seek=50 conv=notrunc status=none
agent "$ID" --volume "$WORK/vol.img" --metrics-textfile "$WORK/agent.prom" >"$WORK/a2.out" 2>&1 ||
  fail "second point: $(tail -n 1 "$WORK/a2.out")"

# metric NAME: the sample of NAME for this server (the first if several).
scrape() { curl -fsS "$URL" >"$WORK/metrics.txt" || fail "GET $URL failed"; }
metric() { grep -E "^$1(\{server=\"$ID\"\})? " "$WORK/metrics.txt" | head -n 1 | awk '{print $2}'; }
# wait_for NAME VALUE: the endpoint republishes about once a second.
wait_for() {
  local i
  for i in $(seq 1 50); do
    scrape
    [[ $(metric "$1") == "$2" ]] && return 0
    sleep 0.1
  done
  fail "$1 is $(metric "$1"), expected $2"
}

wait_for blockrep_points_committed_total 2
promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.out" 2>&1 || fail "promtool: $(cat "$WORK/promtool.out")"
[[ -s $WORK/promtool.out ]] && fail "promtool has remarks: $(cat "$WORK/promtool.out")"
pass "promtool check metrics is clean ($(grep -c '^# TYPE' "$WORK/metrics.txt") families)"

[[ $(metric blockrep_retained_points) == 2 ]] || fail "retained points: $(metric blockrep_retained_points)"
ingested=$(metric blockrep_ingested_bytes_total)
((ingested > 12000000)) || fail "ingested bytes: $ingested (12 MiB of random data were sent)"
last=$(metric blockrep_last_point_timestamp_seconds)
age=$(($(date +%s) - ${last%.*}))
((age >= 0 && age < 120)) || fail "the newest point is $age s old"
[[ $(metric blockrep_agent_connected) == 0 ]] || fail "the agent exited but is shown connected"
commits=$(metric blockrep_pack_commit_seconds_count)
((commits > 0)) || fail "no pack commit was timed"
heard=$(metric blockrep_agent_last_heard_timestamp_seconds)
((${heard%.*} > 0)) || fail "the agent was never heard"
[[ $(metric blockrep_agent_rpo_target_seconds) == 30 ]] ||
  fail "no AGENT_REPORT arrived (rpo target: '$(metric blockrep_agent_rpo_target_seconds)')"
state=$(metric blockrep_agent_state)
[[ $state =~ ^[0-5]$ ]] || fail "agent state: '$state'"
pass "the agent's report arrived: state $state, lag $(metric blockrep_agent_lag_seconds) s, RPO target 30 s"
pass "2 points retained and committed, $ingested bytes ingested, newest point ${age} s old, $commits pack commits timed"

SCRATCH=$WORK/scratch
mkdir -p "$SCRATCH"
printf '#!/bin/sh\nexit 3\n' >"$WORK/fail.sh"
printf '#!/bin/sh\nexit 0\n' >"$WORK/ok.sh"
chmod +x "$WORK/fail.sh" "$WORK/ok.sh"
rc=0
recover drill --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --scratch "$SCRATCH" --copy \
  --hook "$WORK/fail.sh" --json >"$WORK/d1.json" 2>"$WORK/d1.err" || rc=$?
((rc != 0)) || fail "a drill whose hook fails passed"
wait_for blockrep_last_drill_success 0
recover drill --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --scratch "$SCRATCH" --copy \
  --hook "$WORK/ok.sh" --json >"$WORK/d2.json" 2>"$WORK/d2.err" || fail "drill: $(tail -n 2 "$WORK/d2.err")"
wait_for blockrep_last_drill_success 1
drill_time=$(metric blockrep_last_drill_timestamp_seconds)
((${drill_time%.*} > 0)) || fail "last drill time: $drill_time"
pass "the last drill's result follows drills.jsonl: fail, then pass"

# The fleet view reads the same store: points, the newest point's age, stored bytes, the last drill.
recover servers --store "$STORE" --json >"$WORK/servers.json" || fail "servers --json failed"
grep -q "\"server\": \"$ID\", \"points\": 2" "$WORK/servers.json" || fail "servers --json: $(cat "$WORK/servers.json")"
grep -q '"result": "pass"' "$WORK/servers.json" || fail "servers --json lacks the passed drill: $(cat "$WORK/servers.json")"
stored=$(grep -o '"stored_bytes": [0-9]*' "$WORK/servers.json" | grep -o '[0-9]*$')
[[ $stored == $(metric blockrep_stored_bytes) ]] || fail "servers says $stored stored bytes, /metrics $(metric blockrep_stored_bytes)"
recover servers --store "$STORE" >"$WORK/servers.txt" || fail "servers failed"
pass "servers: $(tail -n 1 "$WORK/servers.txt")"

# Over --staging, as an operator (blockrep-keygen --operator): the same figures, plus what only the
# staging knows (connection, the agent's last reported state and lag, when it was last heard).
"$BIN/blockrep-keygen" --out "$KEYS" --operator ops >/dev/null || fail "keygen --operator failed"
OPS=(--staging "127.0.0.1:$STAGING_PORT" --tls-cert "$KEYS/operator-ops.crt" --tls-key "$KEYS/operator-ops.key" --tls-ca "$KEYS/ca.crt")
recover servers "${OPS[@]}" --json >"$WORK/fleet.json" || fail "servers --staging failed"
grep -q "\"server\": \"$ID\", \"connected\": false, \"state\": \"[A-Z_]*\", \"lag_seconds\": [0-9.]*, " "$WORK/fleet.json" ||
  fail "servers --staging --json: $(cat "$WORK/fleet.json")"
grep -q "\"points\": 2, " "$WORK/fleet.json" || fail "servers --staging: points: $(cat "$WORK/fleet.json")"
[[ $(grep -o '"stored_bytes": [0-9]*' "$WORK/fleet.json" | grep -o '[0-9]*$') == "$stored" ]] ||
  fail "servers --staging stored bytes differ from the store's $stored: $(cat "$WORK/fleet.json")"
grep -q '"result": "pass"' "$WORK/fleet.json" || fail "servers --staging lacks the passed drill"
recover servers "${OPS[@]}" >"$WORK/fleet.txt" || fail "servers --staging (table) failed"
cat "$WORK/fleet.txt"
# An agent's certificate is not an operator's, and an operator's reads no server's chain.
set +e
err=$(recover servers --staging "127.0.0.1:$STAGING_PORT" --tls-cert "$KEYS/agent-$ID.crt" --tls-key "$KEYS/agent-$ID.key" \
  --tls-ca "$KEYS/ca.crt" 2>&1)
rc=$?
set -e
[[ $rc -ne 0 && $err == *"is not an operator's"* ]] || fail "an agent certificate got the fleet: rc=$rc $err"
set +e
err=$(recover list "${OPS[@]}" --server-id "$ID" 2>&1)
rc=$?
set -e
[[ $rc -ne 0 && $err == *"operator:ops"* ]] || fail "an operator certificate read a chain: rc=$rc $err"
pass "servers --staging (operator certificate): the store's figures plus connection and reported state; agent certificates refused"

# The agent's own metrics: the textfile its --once run left, and a continuous agent's endpoint.
promtool check metrics <"$WORK/agent.prom" >"$WORK/promtool-agent.out" 2>&1 || fail "promtool (agent): $(cat "$WORK/promtool-agent.out")"
[[ -s $WORK/promtool-agent.out ]] && fail "promtool has remarks on the agent's file: $(cat "$WORK/promtool-agent.out")"
agent_point=$(grep -E "^blockrep_last_point_timestamp_seconds\{server=\"$ID\"\} " "$WORK/agent.prom" | awk '{print $2}')
[[ $agent_point == "$(metric blockrep_last_point_timestamp_seconds)" ]] ||
  fail "the agent's last point time $agent_point is not the staging's $(metric blockrep_last_point_timestamp_seconds)"
grep -qE "^blockrep_shipped_bytes_total\{server=\"$ID\",volume=\"0\"\} [1-9]" "$WORK/agent.prom" || fail "no shipped bytes in $(cat "$WORK/agent.prom")"
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$WORK/vol.img" --state-dir "$WORK/agent-state" --metrics 127.0.0.1:0 2>"$WORK/agent.log" &
APID=$!
PIDS+=("$APID")
aport=$(metrics_port "$WORK/agent.log")
[[ -n $aport ]] || fail "the continuous agent did not say where its metrics are: $(tail -n 3 "$WORK/agent.log")"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$aport/metrics" >"$WORK/agent-http.txt" || fail "GET the agent's /metrics failed"
  grep -qE "^blockrep_agent_connected\{server=\"$ID\"\} 1$" "$WORK/agent-http.txt" && break
  sleep 0.1
done
grep -qE "^blockrep_agent_connected\{server=\"$ID\"\} 1$" "$WORK/agent-http.txt" || fail "the agent never showed itself connected"
promtool check metrics <"$WORK/agent-http.txt" >"$WORK/promtool-agent2.out" 2>&1 || fail "promtool (agent HTTP): $(cat "$WORK/promtool-agent2.out")"
[[ -s $WORK/promtool-agent2.out ]] && fail "promtool has remarks on the agent's endpoint: $(cat "$WORK/promtool-agent2.out")"
kill -TERM "$APID"
wait "$APID" || fail "the continuous agent did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent.log")"
PIDS=()
pass "the agent's metrics (textfile after --once, HTTP while continuous) pass promtool; last point time agrees with the staging's"

code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other")
[[ $code == 404 ]] || fail "GET /other answered $code"
pass "GET /other answers 404"
stop_staging
