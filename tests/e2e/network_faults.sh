#!/usr/bin/env bash
# Replication through a proxy that damages the connection (tests/tools/faultproxy.cc): resets,
# truncation, bit flips in each direction, delay, a stall and a half-open connection. For each, a
# continuous agent converges (its point is acknowledged and restores byte-identical), also under
# a seeded mix of faults in both directions; damaged
# bytes are rejected with a clear error and the data resent, and nothing damaged is stored
# (verify with the key finds every record intact).
# Reproduce with BLOCKREP_SEED=<seed printed below>.
source "$(dirname "$0")/lib.sh"

SEED=${BLOCKREP_SEED:-$(( $(date +%s%N) % 1000000 ))}
echo "network faults test: seed $SEED"
RANDOM=$SEED
make_keys net1
head -c 24M /dev/urandom >"$WORK/vol.img"
truncate -s 32M "$WORK/vol.img"
start_staging

PROXY_PID=
start_proxy() {  # fault args...: sets PROXY_PORT
  # Logs are emptied here, before the background job starts, so the polls below never read the
  # previous run's lines (a job's own ">" redirection may happen after the first poll).
  : >"$WORK/proxy.out"
  : >"$WORK/proxy.log"
  "$BIN/blockrep_faultproxy" --upstream "127.0.0.1:$STAGING_PORT" --seed "$RANDOM" "$@" \
    >>"$WORK/proxy.out" 2>>"$WORK/proxy.log" &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  for _ in $(seq 1 100); do
    PROXY_PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/proxy.out" 2>/dev/null | sed 's/.*://' || true)
    [[ -n $PROXY_PORT ]] && return 0
    sleep 0.02
  done
  fail "the fault proxy did not start: $(cat "$WORK/proxy.log")"
}

# run_through_proxy NAME EXPECT [proxy args...]: changes 8 MiB of the volume, runs a continuous
# agent through the proxy until a point is acknowledged, stops it with SIGTERM (one more point),
# and checks the newest point against the volume. EXPECT: a pattern that must show in the agent's
# or the staging's log (the evidence that the fault hit and was handled), or "-".
run_through_proxy() {
  local name=$1 expect=$2
  shift 2
  dd if=/dev/urandom of="$WORK/vol.img" bs=1M count=8 seek=$((RANDOM % 24)) conv=notrunc status=none
  local want
  want=$(sha "$WORK/vol.img")
  local staging_lines
  staging_lines=$(wc -l <"$WORK/staging.log")
  start_proxy "$@"
  local start=$SECONDS
  : >"$WORK/agent.log"
  "$BIN/blockrep-agent" --staging "127.0.0.1:$PROXY_PORT" --server-id net1 --key "$KEYS/data-net1.key" \
    --tls-cert "$KEYS/agent-net1.crt" --tls-key "$KEYS/agent-net1.key" --tls-ca "$KEYS/ca.crt" \
    --volume "$WORK/vol.img" --point-interval 2s >/dev/null 2>>"$WORK/agent.log" &
  local agent_pid=$!
  PIDS+=("$agent_pid")
  for _ in $(seq 1 1200); do  # at most 120 s
    grep -q "acknowledged (durable" "$WORK/agent.log" && break
    kill -0 "$agent_pid" 2>/dev/null || fail "$name: the agent exited: $(tail -n 2 "$WORK/agent.log")"
    sleep 0.1
  done
  grep -q "acknowledged (durable" "$WORK/agent.log" || fail "$name: no point acknowledged within 120 s: $(tail -n 3 "$WORK/agent.log")"
  kill -TERM "$agent_pid"
  wait "$agent_pid" || fail "$name: the agent exited non-zero on SIGTERM: $(tail -n 2 "$WORK/agent.log")"
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  rm -rf "$WORK/out"
  recover restore --store "$STORE" --server-id net1 --key "$KEYS/data-net1.key" --point latest \
    --output "$WORK/out" >/dev/null
  [[ $(sha "$WORK/out/vol-0.img") == "$want" ]] || fail "$name: the newest point differs from the volume (seed $SEED)"
  local faults reconnects evidence="-"
  faults=$(grep -cE "flipped|reset|truncated|stalled|half-open" "$WORK/proxy.log" || true)
  reconnects=$(grep -c "reconnecting in" "$WORK/agent.log" || true)
  if [[ $expect != "-" ]]; then
    tail -n +"$((staging_lines + 1))" "$WORK/staging.log" >"$WORK/staging.new"
    evidence=$(cat "$WORK/agent.log" "$WORK/staging.new" | grep -m1 -E "$expect" | sed 's/^[^ ]* //' || true)
    [[ -n $evidence ]] || fail "$name: no log line matching /$expect/ (agent: $(tail -n 2 "$WORK/agent.log"))"
  fi
  echo "ok: $name: $faults fault(s) injected, $reconnects reconnect(s), $((SECONDS - start)) s, restored identical"
  [[ $evidence == "-" ]] || echo "    $evidence"
}

# Faults hit the first 3 connections (a fault every connection forever could starve progress);
# "after" is a random byte count per connection, around 4 MiB.
run_through_proxy "reset" "reconnecting in" --fault drop --after 4000000 --faulty 3
run_through_proxy "truncated stream" "reconnecting in" --fault truncate --after 4000000 --faulty 3
run_through_proxy "bit flips agent->staging" "bad record mac|decrypt|TLS" --fault flip --after 4000000 --faulty 3 --direction up
run_through_proxy "bit flips staging->agent" "bad record mac|decrypt|TLS" --fault flip --after 200 --faulty 3 --direction down
run_through_proxy "delay 50 ms" "-" --fault delay --delay-ms 50
run_through_proxy "stall 3 s" "-" --fault stall --stall-ms 3000 --after 4000000 --faulty 1
# A seeded mix: 8 connections, each with a fault drawn at random, in both directions.
run_through_proxy "mixed faults, both directions" "-" --fault mixed --after 1000000 --faulty 8 --direction both --stall-ms 2000
echo "    $(grep -c "opened (" "$WORK/proxy.log") connection(s): $(grep -o "opened ([a-z]*)" "$WORK/proxy.log" | sed 's/opened (\(.*\))/\1/' | tr '\n' ' ')"
run_through_proxy "half-open connection" "no word from the staging" --fault halfopen --after 4000000 --faulty 1 --direction up
line=$(grep -m1 "nothing from the agent for" "$WORK/staging.log" | sed 's/^[^ ]* //') ||
  fail "the staging never closed the half-open session"
echo "    $line"

stop_staging
recover verify --store "$STORE" --server-id net1 --key "$KEYS/data-net1.key" >"$WORK/verify.out" ||
  fail "verify finds damage after the network faults: $(cat "$WORK/verify.out")"
echo "verify: $(head -n1 "$WORK/verify.out")"
pass "network faults: every point converged, restored identical; nothing damaged stored"
