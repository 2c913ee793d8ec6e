#!/usr/bin/env bash
# Eight agents (eight servers) replicate at once through one staging; each restores identical.
source "$(dirname "$0")/lib.sh"

N=8
ids=()
for i in $(seq 1 $N); do ids+=("srv$i"); done
make_keys "${ids[@]}"
for id in "${ids[@]}"; do
  head -c 6M /dev/urandom >"$WORK/$id.img"
  truncate -s 10M "$WORK/$id.img"
done
start_staging
pids=()
for id in "${ids[@]}"; do
  agent "$id" --volume "$WORK/$id.img" >"$WORK/$id.out" 2>"$WORK/$id.err" &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || fail "agent ${ids[$i]} failed: $(cat "$WORK/${ids[$i]}.err")"
done
for id in "${ids[@]}"; do
  recover restore --store "$STORE" --server-id "$id" --key "$KEYS/data-$id.key" --point latest \
    --output "$WORK/out-$id" >/dev/null
  cmp "$WORK/$id.img" "$WORK/out-$id/vol-0.img" || fail "$id restores different data"
done
sessions=$(grep -c "connected from" "$WORK/staging.log")
[[ $sessions -eq $N ]] || fail "expected $N sessions in the staging log, saw $sessions"
stop_staging
pass "$N concurrent agents, each restored byte-identical"
