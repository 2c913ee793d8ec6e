#!/usr/bin/env bash
# Two staging frontends on one bucket (a real Ceph RGW), 8 agents replicating continuously with
# --staging A,B while their volumes are written. A frontend is killed -9 at seeded moments, 10
# times (the victim chosen by the seed too), and started again. Agents move to the other frontend
# (it takes their servers' leases once the dead one's run out). Then every agent takes a last
# point (`blockrep-agent point`, acknowledged); with both frontends stopped, the bucket alone holds every server's chain: each agent's
# last acknowledged point is there, `verify --key` authenticates every point, and each last point
# restores identical to its volume. Prints its seed; BLOCKREP_SEED=N replays one run.
source "$(dirname "$0")/lib.sh"
[[ -n ${BLOCKREP_S3_ENDPOINT:-} ]] || { echo "SKIP: no Ceph RGW (run through tests/rgw/with_rgw.sh)"; exit 77; }

SEED=${BLOCKREP_SEED:-$(( $(date +%s) % 100000 ))}
echo "seed $SEED (replay: BLOCKREP_SEED=$SEED)"
RANDOM=$SEED
AGENTS=8
KILLS=10
BUCKET=blockrep-e2e
URL="s3://$BUCKET/failover-$$"
S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS"
  --s3-region default)
STORE=$URL
ids=()
for i in $(seq 1 $AGENTS); do ids+=("app$i"); done
make_keys "${ids[@]}"
mkdir -p "$WORK/empty"
bash "$(dirname "$0")/../rgw/put_tree.sh" "$WORK/empty" "$BUCKET" unused >/dev/null || fail "create the bucket"

free_port() {  # a port nothing on 127.0.0.1 accepts on
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  fail "no free TCP port"
}
declare -A PORT PID
PORT[A]=$(free_port)
PORT[B]=$(free_port)
frontend() {  # frontend NAME: starts it on its port and cache
  STAGING_LISTEN_PORT=${PORT[$1]} start_staging "${S3[@]}" --s3-lease-seconds 3 --s3-cache "$WORK/cache-$1" --frontend-name "$1"
  PID[$1]=$STAGING_PID
}
frontend A
frontend B

# Volumes: 8 MiB image files, each with 1 MiB of random bytes to begin with.
apids=()
for id in "${ids[@]}"; do
  truncate -s 8M "$WORK/$id.img"
  head -c 1M /dev/urandom | dd of="$WORK/$id.img" conv=notrunc status=none
  "$BIN/blockrep-agent" --staging "127.0.0.1:${PORT[A]},127.0.0.1:${PORT[B]}" --server-id "$id" --key "$KEYS/data-$id.key" \
    --volume "$WORK/$id.img" --state-dir "$WORK/state-$id" --point-interval 2s 2>"$WORK/agent-$id.log" &
  apids+=($!)
  PIDS+=($!)
done
# Writers: every 0.2 s a 64 KiB block of random bytes lands somewhere in each volume.
(
  RANDOM=$((SEED + 1))
  while true; do
    for id in "${ids[@]}"; do
      head -c 64K /dev/urandom | dd of="$WORK/$id.img" bs=64K seek=$((RANDOM % 128)) conv=notrunc status=none
    done
    sleep 0.2
  done
) &
WRITER=$!
PIDS+=($WRITER)

for k in $(seq 1 $KILLS); do
  sleep "$((RANDOM % 2)).$((5 + RANDOM % 5))"
  victim=$([[ $((RANDOM % 2)) == 0 ]] && echo A || echo B)
  kill -9 "${PID[$victim]}"
  wait "${PID[$victim]}" 2>/dev/null || true
  echo "kill $k: frontend $victim killed -9"
  sleep "0.$((RANDOM % 10))"
  frontend "$victim"
done
kill "$WRITER"
wait "$WRITER" 2>/dev/null || true

# A last point from every agent, after the last write, acknowledged (`blockrep-agent point`
# waits for that); then SIGTERM (exit 0).
sync
for id in "${ids[@]}"; do
  timeout 120 "$BIN/blockrep-agent" point --state-dir "$WORK/state-$id" >"$WORK/point-$id.out" 2>&1 &
done
for id in "${ids[@]}"; do
  for _ in $(seq 1 1200); do grep -q "acknowledged" "$WORK/point-$id.out" && break; sleep 0.1; done
  grep -q "acknowledged" "$WORK/point-$id.out" || fail "$id: no point acknowledged after the writes: $(cat "$WORK/point-$id.out")"
done
for i in "${!ids[@]}"; do kill -TERM "${apids[$i]}"; done
for i in "${!ids[@]}"; do
  wait "${apids[$i]}" || fail "agent ${ids[$i]} did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent-${ids[$i]}.log")"
done
moved=$(grep -l "next staging" "$WORK"/agent-*.log | wc -l)
# How long an agent went without an acknowledged point while frontends were killed (points every
# 2 s; a kill costs a reconnect, to the other frontend, and a lease takeover after 3 s at most).
longest=0
for id in "${ids[@]}"; do
  prev=
  while read -r ts; do
    t=$(date -d "$ts" +%s%N)
    if [[ -n $prev ]] && (((t - prev) / 1000000 > longest)); then longest=$(((t - prev) / 1000000)); fi
    prev=$t
  done < <(grep "acknowledged (durable on staging)" "$WORK/agent-$id.log" | cut -d' ' -f1)
done
echo "longest time any agent went without an acknowledged point: $((longest / 1000)).$(printf '%03d' $((longest % 1000))) s"
# A loose bound (this machine runs the gateway, two frontends and eight agents on two cores): an
# agent that never found the other frontend would go without one for the rest of the run.
((longest < 30000)) || fail "an agent went $((longest / 1000)) s without an acknowledged point"
takeovers=$(grep -c "holds its lease now" "$WORK/staging.log")
kill -TERM "${PID[A]}" "${PID[B]}"
wait "${PID[A]}" "${PID[B]}" || fail "a frontend exited non-zero on SIGTERM"
STAGING_PID=
pass "$KILLS kills; $moved of $AGENTS agents moved to the other frontend at least once; $takeovers lease takeovers"

for id in "${ids[@]}"; do
  acked=$("$BIN/blockrep-agent" status --state-dir "$WORK/state-$id" --json | grep -o '"last_point": [0-9]*' | grep -o '[0-9]*$')
  [[ -n $acked && $acked -gt 0 ]] || fail "$id: no acknowledged point"
  recover list --store "$URL" "${S3[@]}" --server-id "$id" --json >"$WORK/list.json" || fail "$id: list from the bucket"
  grep -q "\"id\": $acked," "$WORK/list.json" || { cat "$WORK/list.json" >&2; fail "$id: acknowledged point $acked is not in the bucket"; }
  recover verify --store "$URL" "${S3[@]}" --server-id "$id" --key "$KEYS/data-$id.key" >"$WORK/verify.out" ||
    { cat "$WORK/verify.out" >&2; fail "$id: verify --key of the bucket"; }
  rm -rf "$WORK/out"
  recover restore --store "$URL" "${S3[@]}" --server-id "$id" --key "$KEYS/data-$id.key" --point "$acked" \
    --output "$WORK/out" >/dev/null || fail "$id: restore point $acked from the bucket"
  cmp "$WORK/out/vol-0.img" "$WORK/$id.img" || fail "$id: point $acked restored from the bucket differs from the volume"
  echo "$id: last acknowledged point $acked in the bucket, $(grep -c '"id"' "$WORK/list.json") points, verify: $(grep -o 'ok$' "$WORK/verify.out" | head -n 1)"
done
pass "every agent's last acknowledged point restores identical from the bucket, no staging running; verify --key clean"
