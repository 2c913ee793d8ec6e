#!/usr/bin/env bash
# Retention on the real staging: SIGKILL at seeded random moments while it expires points and
# compacts packs at startup; after each kill every listed point restores byte-identical, the
# points the policy keeps are all there, and a restart finishes the job. Then expiry and
# compaction after each committed point, while an agent keeps sending.
# Reproduce a failure with BLOCKREP_SEED=<seed printed below>; BLOCKREP_RETENTION_EVERY_POINT=1
# kills at every kill point in turn instead of 20 seeded ones.
source "$(dirname "$0")/lib.sh"

SEED=${BLOCKREP_SEED:-$(( $(date +%s%N) % 1000000 ))}
ITERATIONS=${BLOCKREP_RETENTION_ITERATIONS:-20}
POINTS=16
echo "retention test: seed $SEED, $ITERATIONS kill iterations"
RANDOM=$SEED
trap 'echo "retention test failed with seed $SEED" >&2' ERR

make_keys ret1
# 16 MiB of data in a 32 MiB image; every point rewrites 2 MiB of it, so older points' records
# become garbage once the points that used them expire.
head -c 16M /dev/urandom >"$WORK/vol.img"
truncate -s 32M "$WORK/vol.img"
declare -A expected  # point id -> sha256 of the image that point was taken from
sync_point() {
  agent ret1 --volume "$WORK/vol.img" --compress "$([[ $((RANDOM % 2)) -eq 0 ]] && echo lz4 || echo none)" \
    >"$WORK/agent.out" 2>"$WORK/agent.err" || fail "sync failed: $(tail -n1 "$WORK/agent.err")"
  local id
  id=$(awk '/acknowledged/ {print $2}' "$WORK/agent.out")
  [[ -n $id ]] || fail "no acknowledged point in: $(cat "$WORK/agent.out")"
  expected[$id]=$(sha "$WORK/vol.img")
  dd if=/dev/urandom of="$WORK/vol.img" bs=64K count=32 seek=$((RANDOM % 225)) conv=notrunc status=none
}
listed_points() {
  recover list --store "$1" --server-id ret1 --json | grep -o '"id": [0-9]*' | awk '{print $2}'
}
pack_bytes() { du -sb "$1/servers/ret1/packs" | cut -f1; }
check_restores() {  # store, points...
  local store=$1 p
  shift
  for p in "$@"; do
    [[ -n ${expected[$p]:-} ]] || fail "point $p listed but never sent (seed $SEED)"
    rm -rf "$WORK/out"
    recover restore --store "$store" --server-id ret1 --key "$KEYS/data-ret1.key" --point "$p" \
      --output "$WORK/out" >/dev/null || fail "point $p does not restore (seed $SEED)"
    [[ $(sha "$WORK/out/vol-0.img") == "${expected[$p]}" ]] || fail "point $p restores different data (seed $SEED)"
  done
}

start_staging
for _ in $(seq 1 $POINTS); do sync_point; done
stop_staging
cp -a "$STORE" "$WORK/store.base"
base_bytes=$(pack_bytes "$WORK/store.base")
echo "chain of $POINTS points, $((base_bytes / 1024)) KiB of packs"

# Kill points: every write, fsync, rename and unlink the staging makes while it expires and
# compacts at startup. An uninterrupted run under strace lists them in order; each iteration then
# re-runs the same startup on a fresh copy of the chain with strace delivering SIGKILL at the
# entry of one of them (seeded pick; odd iterations from the expiry, even from the compaction).
SYSCALLS=write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat
run_staging() {  # store keep-last [strace args...]; in the background, log to $WORK/kill.log
  local store=$1 keep=$2
  shift 2
  # Emptied here, not by the background job's redirection: otherwise wait_killed/wait_log can read
  # the previous run's "listening" before the new job has truncated the log.
  : >"$WORK/kill.log"
  # LeakSanitizer cannot run under ptrace (the ASan build aborts at exit): leaks are checked by
  # every other test.
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq "$@" "$BIN/blockrep-staging" --listen 127.0.0.1:0 --store "$store" \
    --tls-cert "$KEYS/staging.crt" --tls-key "$KEYS/staging.key" --tls-ca "$KEYS/ca.crt" \
    --retention none --keep-last "$keep" >>"$WORK/kill.log" 2>&1 &
  KILL_PID=$!
  PIDS+=("$KILL_PID")
}
stop_traced() {  # SIGTERM to the staging itself (strace's child), then waits (at most 60 s) for both
  local deadline=$((SECONDS + 60))
  pkill -TERM -P "$KILL_PID" blockrep-stagin || true
  while kill -0 "$KILL_PID" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      pkill -KILL -P "$KILL_PID" blockrep-stagin || true
      fail "staging did not exit within 60 s of SIGTERM: $(tail -n 2 "$WORK/kill.log")"
    fi
    sleep 0.01
  done
  wait "$KILL_PID" || fail "staging exited non-zero on SIGTERM: $(tail -n 2 "$WORK/kill.log")"
}
wait_log() {  # pattern: waits (at most 60 s) until the staging logged it; fails if it died first
  local deadline=$((SECONDS + 60))
  until grep -q "$1" "$WORK/kill.log"; do
    kill -0 "$KILL_PID" 2>/dev/null || return 1
    ((SECONDS < deadline)) || fail "staging logged no '$1' within 60 s: $(tail -n 3 "$WORK/kill.log")"
    sleep 0.005
  done
}
wait_killed() {  # waits (at most 60 s) for the staging to die at its kill point; fails if it got past it
  local deadline=$((SECONDS + 60))
  while kill -0 "$KILL_PID" 2>/dev/null; do
    if grep -q listening "$WORK/kill.log" || ((SECONDS >= deadline)); then
      pkill -KILL -P "$KILL_PID" blockrep-stagin || true
      wait "$KILL_PID" 2>/dev/null || true
      fail "the kill at $1 did not happen (seed $SEED): $(tail -n 3 "$WORK/kill.log")"
    fi
    sleep 0.005
  done
  wait "$KILL_PID" 2>/dev/null || true
}
# timeout for each recover command, so a hang is named instead of eating CI's time
recover() { timeout 120 "$BIN/blockrep-recover" "$@" || fail "blockrep-recover $1 failed or hung (exit $?), seed $SEED"; }
KEEP=3
cp -a "$WORK/store.base" "$WORK/store.try"
run_staging "$WORK/store.try" "$KEEP" -o "$WORK/trace" -s 120 -e trace=$SYSCALLS
wait_log listening || fail "staging died: $(tail -n 3 "$WORK/kill.log")"
stop_traced
grep -E "expired|compacted" "$WORK/kill.log" | sed 's/^[^ ]* /  /'
# "<syscall> <n-th call of it> <phase>" for each kill point: from the first manifest write on;
# expiry ends with the directory fsync after its index unlinks; log writes (fd 2) are skipped, and
# the list ends where the staging logs that it listens (what follows is the SIGTERM shutdown).
awk '{ name = $2; sub(/\(.*/, "", name); n = ++count[name] }
     /write\(2,.*listening on/ { exit }
     /BBRMAN02/ { started = 1 }
     !started { next }
     name ~ /unlink/ && /\.idx"/ && phase == "" { unlinked = 1 }
     { p = (phase == "" ? "expiry" : phase) }
     name == "fsync" && unlinked && phase == "" { phase = "compaction" }
     /write\(2,/ { next }
     { print name, n, p }' "$WORK/trace" >"$WORK/killpoints"
mapfile -t expiry_points < <(awk '$3 == "expiry" {print $1 ":" $2}' "$WORK/killpoints")
mapfile -t compaction_points < <(awk '$3 == "compaction" {print $1 ":" $2}' "$WORK/killpoints")
echo "kill points with keep-last $KEEP: ${#expiry_points[@]} in expiry, ${#compaction_points[@]} in compaction"
[[ ${#expiry_points[@]} -ge 3 && ${#compaction_points[@]} -ge 10 ]] || fail "too few kill points: $(cat "$WORK/killpoints")"

kill_and_check() {  # iteration syscall nth phase
  local i=$1 call=$2 nth=$3 phase=$4 p
  rm -rf "$WORK/store.try"
  cp -a "$WORK/store.base" "$WORK/store.try"
  run_staging "$WORK/store.try" "$KEEP" -o /dev/null -e trace="$call" -e inject="$call:signal=KILL:when=$nth"
  wait_killed "$call #$nth"
  # The store opens, the newest $KEEP points are listed, and every listed point (kept or about
  # to expire) restores identical.
  mapfile -t listed < <(listed_points "$WORK/store.try")
  # Membership in bash itself: `printf ... | grep -q` under pipefail fails at random when grep
  # exits on its match before printf's later writes (SIGPIPE), which once read as a lost point.
  local -A is_listed=()
  for p in "${listed[@]}"; do is_listed[$p]=1; done
  for p in $(seq $((POINTS - KEEP + 1)) $POINTS); do
    [[ -n ${is_listed[$p]:-} ]] || fail "kept point $p lost after a kill at $call #$nth (seed $SEED); listed: ${listed[*]}"
  done
  check_restores "$WORK/store.try" "${listed[@]}"
  # A restart finishes the job: exactly the kept points remain, and they restore identical.
  run_staging "$WORK/store.try" "$KEEP" -o /dev/null -e trace=none
  wait_log listening || fail "staging did not restart after a kill at $call #$nth: $(tail -n 3 "$WORK/kill.log")"
  stop_traced
  mapfile -t after < <(listed_points "$WORK/store.try")
  [[ "${after[*]}" == "$(seq -s ' ' $((POINTS - KEEP + 1)) $POINTS)" ]] ||
    fail "after the restart points ${after[*]} are listed, expected the newest $KEEP (seed $SEED)"
  check_restores "$WORK/store.try" "${after[@]}"
  echo "iteration $i: SIGKILL at $phase $call #$nth: ${#listed[@]} points listed, all restored identical; after restart ${#after[@]}, $(( $(pack_bytes "$WORK/store.try") / 1024 )) KiB of packs"
}

if [[ -n ${BLOCKREP_RETENTION_EVERY_POINT:-} ]]; then  # exhaustive: every kill point in turn
  i=0
  while read -r call nth phase; do
    kill_and_check $((++i)) "$call" "$nth" "$phase"
  done <"$WORK/killpoints"
else
  for i in $(seq 1 "$ITERATIONS"); do
    if (( i % 2 )); then kp=${expiry_points[RANDOM % ${#expiry_points[@]}]}; phase=expiry
    else kp=${compaction_points[RANDOM % ${#compaction_points[@]}]}; phase=compaction
    fi
    kill_and_check "$i" "${kp%%:*}" "${kp##*:}" "$phase"
  done
fi

# Online: expiry and compaction after each committed point while the agent keeps sending.
STAGING_RETENTION=none start_staging --keep-last 3
for _ in 1 2 3 4; do sync_point; done
stop_staging
mapfile -t listed < <(listed_points "$STORE")
last=$(( POINTS + 4 ))
[[ "${listed[*]}" == "$((last - 2)) $((last - 1)) $last" ]] || fail "online retention kept ${listed[*]}, expected the newest 3"
check_restores "$STORE" "${listed[@]}"
grep -q "compacted" "$WORK/staging.log" || fail "no compaction after the online expiries"
now_bytes=$(pack_bytes "$STORE")
echo "online: kept ${listed[*]}; packs $((base_bytes / 1024)) KiB -> $((now_bytes / 1024)) KiB"
[[ $now_bytes -lt $base_bytes ]] || fail "compaction did not shrink the store"
pass "retention: $ITERATIONS kills during expiry/compaction lost nothing kept; online expiry and compaction"
