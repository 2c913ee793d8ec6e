#!/usr/bin/env bash
# Connections that never authenticate cannot lock agents out: 5,000 idle TCP connections and 200
# "slow handshakes" (a TLS record header, then one byte a second) are opened against the staging
# while 4 agents each send 3 points with --once. The staging keeps its own budget for such
# connections (256, 64 per address, oldest evicted), apart from authenticated sessions, so all 4
# agents finish; its log stays short (rate-limited lines about unauthenticated connections).
source "$(dirname "$0")/lib.sh"

python3 -c 'import resource, sys; s, h = resource.getrlimit(resource.RLIMIT_NOFILE); sys.exit(0 if h >= 6000 else 1)' || {
  echo "SKIP: needs a file descriptor limit of at least 6000 (ulimit -Hn)" >&2
  exit 77
}
make_keys a1 a2 a3 a4
for i in 1 2 3 4; do
  head -c 8M /dev/urandom >"$WORK/a$i.img"
  truncate -s 32M "$WORK/a$i.img"
done
start_staging
cat >"$WORK/flood.py" <<'EOF'
# flood.py PORT SECONDS: 5,000 idle connections and 200 slow handshakes, held for SECONDS.
import resource, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
idle, slow = [], []
for i in range(5200):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    (slow if i % 26 == 0 else idle).append(s)
print(f"opened {len(idle)} idle and {len(slow)} slow connections", flush=True)
header = bytes([0x16, 0x03, 0x01, 0x02, 0x00])  # a TLS handshake record of 512 bytes, never finished
sent = 0
end = time.time() + seconds
while time.time() < end:
    for s in slow:
        try:
            s.send(header[sent:sent + 1] if sent < len(header) else b"\x01")
        except OSError:
            pass
    sent += 1
    time.sleep(1)
EOF
python3 "$WORK/flood.py" "$STAGING_PORT" 25 >"$WORK/flood.out" 2>&1 &
flood_pid=$!
PIDS+=($flood_pid)
sleep 1
cat "$WORK/flood.out"
t0=$(date +%s.%N)
agent_runs() {  # id: 3 points, each a --once
  local id=$1 p
  for p in 1 2 3; do
    agent "$id" --volume "$WORK/$id.img" >>"$WORK/$id.out" 2>>"$WORK/$id.err" || return 1
    dd if=/dev/urandom of="$WORK/$id.img" bs=64k count=4 seek=$((p * 17)) conv=notrunc status=none
  done
}
pids=()
for i in 1 2 3 4; do agent_runs "a$i" & pids+=($!); done
for i in 1 2 3 4; do
  wait "${pids[$((i - 1))]}" || fail "agent a$i did not finish during the flood: $(tail -n 2 "$WORK/a$i.err")"
done
echo "4 agents x 3 points during the flood in $(echo "$(date +%s.%N) - $t0" | bc) s"
for i in 1 2 3 4; do
  [[ $(grep -c "acknowledged" "$WORK/a$i.out") -eq 3 ]] || fail "a$i: $(cat "$WORK/a$i.out")"
done
kill -0 "$flood_pid" 2>/dev/null || fail "the flood ended before the agents did: the test proved nothing"
evictions=$(grep -c "evicted a connection" "$WORK/staging.log" || true)
suppressed=$( (grep -o "[0-9]* more event(s) about unauthenticated" "$WORK/staging.log" || true) | awk '{s += $1} END {print s + 0}')
lines=$(wc -l <"$WORK/staging.log")
echo "staging log: $lines lines ($evictions eviction lines, $suppressed events summed up instead of logged)"
((lines < 200)) || fail "the staging logged $lines lines during the flood"
pass "5,000 idle connections and 200 slow handshakes did not lock out 4 agents"
