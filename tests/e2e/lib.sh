# Shared helpers for the end-to-end tests. Source it; it sets up $WORK, $KEYS and cleans up.
set -euo pipefail

BIN=${BLOCKREP_BIN:?BLOCKREP_BIN must point at build/bin}
WORK=$(mktemp -d /tmp/blockrep-e2e.XXXXXX)
KEYS=$WORK/keys
STORE=$WORK/store
STAGING_PID=
STAGING_PORT=
LOOPS=()
MOUNTS=()
PINS=()   # server-ids whose eBPF tracker pins the test created
PIDS=()   # background programs (agents) to kill if the test ends early
STORE_S3=()  # the S3 flags of every program that opens $STORE (empty for a directory)

# E2E_STORE=s3 runs a store test against a bucket of the Ceph RGW that tests/rgw/with_rgw.sh
# names instead of a directory: $STORE is s3://$S3_BUCKET/<test>-<pid>, start_staging adds $STORE_S3 and
# a cache in $WORK/cache (E2E_S3_CACHE_BYTES: its --s3-cache-bytes), recover() adds $STORE_S3. E2E_S3_BUCKET picks the bucket (a quota test needs
# one of its own); it is created here.
if [[ ${E2E_STORE:-dir} == s3 ]]; then
  if [[ -z ${BLOCKREP_S3_ENDPOINT:-} ]]; then
    echo "SKIP: E2E_STORE=s3 needs a Ceph RGW (run the test through tests/rgw/with_rgw.sh)" >&2
    exit 77
  fi
  S3_BUCKET=${E2E_S3_BUCKET:-blockrep-e2e}
  STORE=s3://$S3_BUCKET/$(basename "$0" .sh)-$$
  STORE_S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS"
    --s3-region default)
  mkdir -p "$WORK/empty"
  bash "$(dirname "${BASH_SOURCE[0]}")/../rgw/put_tree.sh" "$WORK/empty" "$S3_BUCKET" unused >/dev/null
  echo "store: $STORE (E2E_STORE=s3)"
fi
# curl_s3 METHOD KEY [FILE] [-o OUT]: one request on $S3_BUCKET signed by curl's own SigV4; the
# body's SHA-256 goes in x-amz-content-sha256; the answer goes to OUT (else /dev/null).
curl_s3() {
  local method=$1 key=$2 file=${3:-/dev/null} out=/dev/null hash
  [[ ${4:-} == -o ]] && out=$5
  hash=$(sha256sum "$file" | cut -d' ' -f1)
  curl -sS --fail --aws-sigv4 "aws:amz:default:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    --cacert "$BLOCKREP_S3_CA" -H "x-amz-content-sha256: $hash" -X "$method" \
    ${3:+--upload-file "$file"} -o "$out" "$BLOCKREP_S3_ENDPOINT/$S3_BUCKET${key:+/$key}"
}
# store_get PATH FILE / store_put FILE PATH: a file of the store (PATH below $STORE) copied out
# and back, from a directory or from the bucket.
store_key() { local p=${STORE#s3://"$S3_BUCKET"/}; echo "$p/$1"; }
store_get() {
  if [[ ${#STORE_S3[@]} -eq 0 ]]; then cp "$STORE/$1" "$2"; else curl_s3 GET "$(store_key "$1")" "" -o "$2"; fi
}
store_put() {
  if [[ ${#STORE_S3[@]} -eq 0 ]]; then cp "$1" "$STORE/$2"; else curl_s3 PUT "$(store_key "$2")" "$1"; fi
}

# cleanup [RC]: RC defaults to the status the script is exiting with (a test whose own EXIT trap
# runs something first passes the status it saved).
cleanup() {
  local rc=${1:-$?}
  [[ -n $STAGING_PID ]] && kill -9 "$STAGING_PID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do pkill -9 -P "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || true; done
  for id in "${PINS[@]}"; do rm -rf "/sys/fs/bpf/blockrep/$id"; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  if [[ $rc -ne 0 && $rc -ne 77 ]]; then
    echo "--- staging log (tail) ---" >&2
    tail -n 20 "$WORK/staging.log" >&2 2>/dev/null || true  # stdout to stderr first, then silence tail's own errors
  fi
  [[ -n ${KEEP_WORK:-} ]] || rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
# A command that fails outside a condition ends the test (set -e): say which, not just the status.
trap 'echo "FAIL: ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: $1 needs root (loop devices); CI runs it as root" >&2
    exit 77
  fi
}

# status_field NAME: a number from the agent's $STATE/status.json.
status_field() { grep -o "\"$1\": [0-9]*" "$STATE/status.json" | grep -o '[0-9]*$'; }

# stop_agent: SIGTERM to the continuous agent $APID; it must finish its point and exit 0.
stop_agent() {
  kill -TERM "$APID"
  wait "$APID" || fail "agent did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent.log")"
}

need_fio() {
  command -v fio >/dev/null || { echo "SKIP: fio is not installed (scripts/setup.sh installs it)" >&2; exit 77; }
}

# tracked_ext4 PREFIX SIZE: a server PREFIX$$ (keys made, its eBPF pin removed by cleanup, ID set)
# whose one volume is a fresh ext4 of SIZE on a loop device (dev set).
tracked_ext4() {
  ID=$1$$
  make_keys "$ID"
  PINS+=("$ID")
  ext4_loop "$2"
  dev=$DEV
}

# tracked_raw PREFIX SIZE: a server PREFIX$$ (keys made, its eBPF pin removed by cleanup, ID set)
# whose one volume is a raw loop device over a sparse $WORK/disk.img of SIZE (dev set).
tracked_raw() {
  ID=$1$$
  make_keys "$ID"
  PINS+=("$ID")
  truncate -s "$2" "$WORK/disk.img"
  loop_attach "$WORK/disk.img"
  dev=$LOOP
}

make_keys() { "$BIN/blockrep-keygen" --out "$KEYS" "${@/#/--server-id=}" >/dev/null; }

# start_staging [extra args]: starts on an ephemeral port (or on $STAGING_LISTEN_PORT: a restart
# that agents already running must find again) and waits for it to listen.
start_staging() {
  local s3=()
  [[ ${#STORE_S3[@]} -eq 0 ]] || s3=("${STORE_S3[@]}" --s3-cache "$WORK/cache" ${E2E_S3_CACHE_BYTES:+--s3-cache-bytes "$E2E_S3_CACHE_BYTES"})
  "$BIN/blockrep-staging" --listen "127.0.0.1:${STAGING_LISTEN_PORT:-0}" --store "$STORE" --tls-cert "$KEYS/staging.crt" \
    --tls-key "$KEYS/staging.key" --tls-ca "$KEYS/ca.crt" --retention "${STAGING_RETENTION:-all}" \
    "${s3[@]}" "$@" >>"$WORK/staging.log" 2>&1 &
  STAGING_PID=$!
  local i
  for i in $(seq 1 500); do  # 10 s: a staging on a bucket first brings its cache up to it
    # One snapshot of the log, so the count and the port come from the same lines.
    local lines
    mapfile -t lines < <(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/staging.log" || true)
    if [[ ${#lines[@]} -gt ${STAGING_STARTS:-0} ]]; then
      STAGING_STARTS=${#lines[@]}
      STAGING_PORT=${lines[-1]##*:}
      return 0
    fi
    kill -0 "$STAGING_PID" 2>/dev/null || fail "staging did not start: $(tail -n 3 "$WORK/staging.log")"
    sleep 0.02
  done
  fail "staging did not start listening"
}

stop_staging() {
  [[ -n $STAGING_PID ]] || return 0
  kill -TERM "$STAGING_PID"
  wait "$STAGING_PID" || fail "staging exited non-zero on SIGTERM"
  STAGING_PID=
}

kill9_staging() {
  kill -9 "$STAGING_PID" 2>/dev/null || true
  wait "$STAGING_PID" 2>/dev/null || true
  STAGING_PID=
}

# agent ID [agent args...]
agent() {
  local id=$1
  shift
  "$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$id" --key "$KEYS/data-$id.key" --once "$@"
}

# recover COMMAND ARGS...: blockrep-recover, with $STORE_S3 when the store is a bucket.
recover() { "$BIN/blockrep-recover" "$@" "${STORE_S3[@]}"; }

# metrics_port LOG: the port a program started with --metrics 127.0.0.1:0 logged to LOG ("metrics
# at http://127.0.0.1:PORT"), waiting up to 5 s for the line; empty if it never came.
metrics_port() {
  local port= i
  for i in $(seq 1 100); do
    port=$(grep -o 'metrics at http://127.0.0.1:[0-9]*' "$1" 2>/dev/null | tail -n 1 | grep -o '[0-9]*$' || true)
    [[ -n $port ]] && break
    sleep 0.05
  done
  echo "$port"
}

# tcp_queues PORT: "TX RX": bytes waiting in the send queues of established IPv4 connections to
# PORT (the clients' side) and in the receive queues of those accepted on it (the server's side),
# from /proc/net/tcp.
tcp_queues() {
  local want tx=0 rx=0 _sl local remote st queues _rest
  want=$(printf '%04X' "$1")
  while read -r _sl local remote st queues _rest; do
    [[ $st == 01 ]] || continue
    [[ ${remote##*:} == "$want" ]] && tx=$((tx + 16#${queues%%:*}))
    [[ ${local##*:} == "$want" ]] && rx=$((rx + 16#${queues##*:}))
  done < <(tail -n +2 /proc/net/tcp)
  echo "$tx $rx"
}
# socket_settled PORT: waits (10 s at most) until what clients sent to PORT sits whole in the
# receive queue of its (paused) server: their send queues empty, its receive queue not empty and
# unchanged three times 100 ms apart. Sets SOCKET_TX and SOCKET_RX (bytes); false if it never did.
socket_settled() {
  local settled=0 last=-1
  for _ in $(seq 1 100); do
    read -r SOCKET_TX SOCKET_RX < <(tcp_queues "$1")
    if [[ $SOCKET_TX == 0 && $SOCKET_RX -gt 0 && $SOCKET_RX == "$last" ]]; then settled=$((settled + 1)); else settled=0; fi
    last=$SOCKET_RX
    ((settled >= 3)) && return 0
    sleep 0.1
  done
  return 1
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
# flip_byte FILE OFFSET [MASK]: XORs one byte with MASK (default 1), so the byte always changes
# (writing a fixed value leaves the file intact when the byte already held it: 1 run in 256).
flip_byte() {
  local byte
  byte=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  [[ -n $byte ]] || fail "flip_byte: $1 has no byte at offset $2"
  printf "$(printf '\\%03o' $((byte ^ ${3:-1})))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# loop_attach FILE: attaches a loop device, sets LOOP to it and records it for cleanup. (Not
# echoed: a $(...) subshell would lose the record, and the device would outlive the test.)
loop_attach() {
  LOOP=$(losetup --find --show "$1")
  LOOPS+=("$LOOP")
}

# ext4_loop SIZE: ext4 on a loop device over $WORK/disk.img, inode tables and journal written now
# (so the kernel's lazy init does not write behind the test's back); sets DEV.
ext4_loop() {
  truncate -s "$1" "$WORK/disk.img"
  loop_attach "$WORK/disk.img"
  DEV=$LOOP
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$DEV"
}

# mount_dev: mounts $DEV on $WORK/mnt (unmounted by cleanup if the test fails).
mount_dev() {
  mkdir -p "$WORK/mnt"
  mount "$DEV" "$WORK/mnt"
  MOUNTS=("$WORK/mnt")
}

# churn_files SECONDS [PAUSE]: in $WORK/mnt, for SECONDS, creates, overwrites, appends to,
# deletes and fsyncs files, pausing PAUSE seconds (0.1) between rounds. Run it in the background.
churn_files() {
  local seconds=$1 pause=${2:-0.1} end round=0
  cd "$WORK/mnt"
  end=$((SECONDS + seconds))
  while ((SECONDS < end)); do
    round=$((round + 1))
    head -c $((RANDOM * 8)) /dev/urandom >"file-$((round % 7))"   # create / overwrite
    echo "round $round" >>log.txt                                  # append
    rm -f "file-$(((round + 3) % 7))"                               # delete
    sync -f log.txt                                                 # fsync
    sleep "$pause"
  done
}

# fio_randwrite SECONDS: fio 4 KiB random writes at 4 MB/s with crc32c verify on a 32 MiB file
# in $WORK/mnt, output in $WORK/fio.out. Run it in the background.
fio_randwrite() {
  fio --name=rand --filename="$WORK/mnt/fio.dat" --size=32M --rw=randwrite --bs=4k --direct=1 \
    --ioengine=psync --runtime="$1" --time_based --rate=4m --verify=crc32c --verify_state_save=0 \
    --do_verify=1 --output="$WORK/fio.out" >/dev/null 2>&1
}

# Content fingerprint of everything stored (to prove a refused request changed nothing).
store_fingerprint() {
  if [[ -d $STORE ]]; then
    (cd "$STORE" && find . -type f ! -name LOCK -print0 | sort -z | xargs -0r sha256sum | sha256sum | cut -d' ' -f1)
  else
    echo none
  fi
}
