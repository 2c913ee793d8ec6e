#!/usr/bin/env bash
# --config FILE: a staging and an agent started with a config file and no other flag replicate
# (the agent's --once and its volumes come from the file too); a flag given beside the file wins
# (and --json makes the summary one JSON object);
# an unknown key, a value the option's type refuses, a switch given a value, a key without a
# value and a key given twice are each one error line naming the file, the line and the key, with
# exit status 2, and nothing starts. (Values checked after parsing, like a duration's text, are
# refused naming their flag: "--point-interval soon: ...".)
source "$(dirname "$0")/lib.sh"

ID=config$$
make_keys "$ID"
head -c 4M /dev/urandom >"$WORK/a.img"
head -c 2M /dev/urandom >"$WORK/b.img"
cat >"$WORK/staging.conf" <<CONF
# the staging of this test
listen = 127.0.0.1:0
store = $STORE
tls-cert = $KEYS/staging.crt
tls-key = $KEYS/staging.key   # a comment after a value
tls-ca = $KEYS/ca.crt
retention = all
CONF
"$BIN/blockrep-staging" --config "$WORK/staging.conf" >>"$WORK/staging.log" 2>&1 &
STAGING_PID=$!
for _ in $(seq 1 100); do
  grep -q 'listening on' "$WORK/staging.log" && break
  kill -0 "$STAGING_PID" 2>/dev/null || fail "the staging did not start: $(tail -n 2 "$WORK/staging.log")"
  sleep 0.02
done
STAGING_PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/staging.log" | tail -n 1 | grep -o '[0-9]*$')
[[ -n $STAGING_PORT ]] || fail "the staging is not listening"

cat >"$WORK/agent.conf" <<CONF
staging = 127.0.0.1:$STAGING_PORT
server-id = $ID
volume = $WORK/a.img
volume = $WORK/b.img
key = $KEYS/data-$ID.key
tls-cert = $KEYS/agent-$ID.crt
tls-key = $KEYS/agent-$ID.key
tls-ca = $KEYS/ca.crt
compress = zstd
state-dir = $WORK/state1
once = true
CONF
"$BIN/blockrep-agent" --config "$WORK/agent.conf" >"$WORK/a1.out" 2>&1 || fail "agent from its config: $(tail -n 2 "$WORK/a1.out")"
grep -q "point 1 acknowledged" "$WORK/a1.out" || fail "no point: $(cat "$WORK/a1.out")"
recover list --store "$STORE" --server-id "$ID" --json | grep -q '"volumes": 2' || fail "the point does not hold both volumes"
pass "staging and agent ran from their config files alone (2 volumes, one point)"

[[ -f $WORK/state1/status.json ]] || fail "the agent did not use the config's state-dir"

# A flag beside the file wins: --state-dir on the command line is the one the agent uses.
dd if=/dev/urandom of="$WORK/a.img" bs=64K count=4 conv=notrunc status=none
"$BIN/blockrep-agent" --config "$WORK/agent.conf" --state-dir "$WORK/state2" --json >"$WORK/a2.json" 2>"$WORK/a2.err" ||
  fail "second point: $(tail -n 2 "$WORK/a2.err")"
grep -q '^{"point": 2, "label": null, "kind": "incremental", "base_point": 1, ' "$WORK/a2.json" || fail "--once --json: $(cat "$WORK/a2.json")"
[[ $(wc -l <"$WORK/a2.json") == 1 ]] || fail "--once --json printed more than one line: $(cat "$WORK/a2.json")"
if command -v python3 >/dev/null; then
  python3 -m json.tool "$WORK/a2.json" >/dev/null || fail "--once --json is not JSON: $(cat "$WORK/a2.json")"
fi
[[ -f $WORK/state2/status.json ]] || fail "the flag did not win over the file (no $WORK/state2/status.json)"
pass "a flag beside the config file wins"

# On a terminal (a pty from script(1)) --once draws a progress bar on stderr; into a file it does not.
dd if=/dev/urandom of="$WORK/a.img" bs=1M count=4 conv=notrunc status=none
script -qec "$BIN/blockrep-agent --config $WORK/agent.conf --state-dir $WORK/state2" "$WORK/tty.log" >/dev/null 2>&1 ||
  fail "--once on a terminal failed: $(tail -c 300 "$WORK/tty.log")"
grep -aq 'reading \[#*' "$WORK/tty.log" || fail "no progress bar on a terminal: $(tail -c 300 "$WORK/tty.log")"
grep -aq '100%' "$WORK/tty.log" || fail "the progress bar did not reach 100 %"
grep -q 'reading \[' "$WORK/a2.err" && fail "a progress bar went to a file"
pass "--once shows a progress bar on a terminal only"

# bad PROGRAM CONTENT LINE WANT: PROGRAM refuses a config with CONTENT in one line naming the
# file and LINE and matching WANT, exit 2.
bad() {
  local prog=$1
  shift
  printf '%s\n' "$1" >"$WORK/bad.conf"
  local rc=0
  "$BIN/$prog" --config "$WORK/bad.conf" >"$WORK/bad.out" 2>&1 || rc=$?
  [[ $rc == 2 ]] || fail "config '$1': exit $rc, expected 2: $(cat "$WORK/bad.out")"
  [[ $(wc -l <"$WORK/bad.out") == 1 ]] || fail "config '$1': not one line: $(cat "$WORK/bad.out")"
  grep -q "$WORK/bad.conf line $2" "$WORK/bad.out" || fail "config '$1': no file and line: $(cat "$WORK/bad.out")"
  grep -q "$3" "$WORK/bad.out" || fail "config '$1': does not say '$3': $(cat "$WORK/bad.out")"
  echo "  $(cat "$WORK/bad.out")"
}
bad blockrep-agent "server-id = x
stagng = 127.0.0.1:1" 2 "unknown key 'stagng'"
bad blockrep-staging "# comment

keep-last = many" 3 "key 'keep-last'"
bad blockrep-agent "once = maybe" 1 "key 'once' is a switch"
bad blockrep-agent "key" 1 "key 'key' needs a value"
bad blockrep-staging "listen = 127.0.0.1:0
tls-key = a
tls-key = b" 3 "key 'tls-key'"
pass "bad config files: one line each, naming file, line and key"
stop_staging
