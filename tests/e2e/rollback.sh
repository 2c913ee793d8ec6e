#!/usr/bin/env bash
# A staging whose store was rolled back (replaced by an older copy) or forked is an alarm, never a
# quiet resync: the agent names what it saw acknowledged and what the staging holds, sends a rescan
# under a new point id (an acknowledged id is never reused), shows the alarm in status.json and
# --once exits 3. restore and verify with --expect-point refuse a chain that ends before the point
# the operator knows was acknowledged, or that does not descend from it by the links the agent
# seals into every point (id and seal MAC of the point it follows; --expect-point N:MAC also names
# the MAC, from the agent's state file).
source "$(dirname "$0")/lib.sh"

make_keys web1
head -c 4M /dev/urandom >"$WORK/vol.img"
truncate -s 16M "$WORK/vol.img"
STATE=$WORK/state
once() {  # expected exit status, agent args...; output in agent.out / agent.err
  local want=$1 rc=0
  shift
  agent web1 --volume "$WORK/vol.img" --state-dir "$STATE" "$@" >"$WORK/agent.out" 2>"$WORK/agent.err" || rc=$?
  [[ $rc -eq $want ]] || fail "agent exited $rc, expected $want: $(tail -n 3 "$WORK/agent.err")"
}
change() { dd if=/dev/urandom of="$WORK/vol.img" bs=64k count=8 seek=$((RANDOM % 200)) conv=notrunc status=none; }
listed() { recover list --store "$STORE" --server-id web1 --json | python3 -c "import json,sys; print(' '.join(str(p['id']) for p in json.load(sys.stdin)))"; }

start_staging
once 0
stop_staging
cp -a "$STORE" "$WORK/store.after1"
start_staging
for _ in 2 3; do change; once 0; done
[[ $(listed) == "1 2 3" ]] || fail "expected points 1 2 3, listed: $(listed)"

# The store replaced by its copy from after point 1.
stop_staging
rm -rf "$STORE"
cp -a "$WORK/store.after1" "$STORE"
cp -a "$WORK/store.after1" "$WORK/store.rolled"
start_staging
change
once 3
cat "$WORK/agent.err" | grep -v "^  " | tail -n 4
grep -q "ALARM: server 'web1': the staging's chain ends at point 1 (.*), but it acknowledged point 3 (.*) to this agent: its store was rolled back or replaced; sending a rescan as point 4 (an acknowledged point id is never reused)" \
  "$WORK/agent.err" || fail "no rollback alarm: $(cat "$WORK/agent.err")"
grep -q "^point 4 acknowledged" "$WORK/agent.out" || fail "the rescan was not point 4: $(cat "$WORK/agent.out")"
grep -q "kind        incremental on point 1 (rescan against point 1 (ALARM" "$WORK/agent.out" || fail "not a rescan: $(cat "$WORK/agent.out")"
[[ $(tail -n 1 "$WORK/agent.err") == *"error: ALARM: "*"point 4 now holds the volumes (rescan)"* ]] || fail "--once did not end with the alarm"
grep -q '"alarm": "the staging' "$STATE/status.json" || fail "status.json has no alarm: $(cat "$STATE/status.json")"
[[ $(listed) == "1 4" ]] || fail "expected points 1 4 (ids 2 and 3 never reused), listed: $(listed)"
rm -rf "$WORK/out"
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point 4 --output "$WORK/out" \
  --expect-point 3 >/dev/null || fail "point 4 (the rescan) does not restore with --expect-point 3"
cmp -s "$WORK/out/vol-0.img" "$WORK/vol.img" || fail "point 4 restores other bytes than the volume"
pass "rollback: alarm named both points, rescan stored as point 4, exit 3, status.json alarm"

# The next run, with the chain whole again, is quiet and incremental.
change
once 0
grep -q "ALARM" "$WORK/agent.err" && fail "an alarm on a healthy chain: $(cat "$WORK/agent.err")"
grep -q "^point 5 acknowledged" "$WORK/agent.out" || fail "expected point 5: $(cat "$WORK/agent.out")"

# --expect-point against the rolled-back copy (it ends at point 1).
for cmd in "restore --key $KEYS/data-web1.key --point latest --output $WORK/out2" "verify --key $KEYS/data-web1.key"; do
  rc=0
  # shellcheck disable=SC2086
  recover $cmd --store "$WORK/store.rolled" --server-id web1 --expect-point 3 >"$WORK/x.out" 2>"$WORK/x.err" || rc=$?
  [[ $rc -ne 0 ]] || fail "${cmd%% *} --expect-point 3 accepted a chain ending at point 1"
  [[ $(wc -l <"$WORK/x.err") -eq 1 ]] || fail "${cmd%% *}: expected one line on stderr: $(cat "$WORK/x.err")"
  echo "${cmd%% *} --expect-point 3: $(cat "$WORK/x.err")"
done
grep -q "the chain ends at point 1 (.*), older than point 3 (--expect-point): the store was rolled back or replaced" \
  "$WORK/x.out" || fail "verify did not name the rollback: $(cat "$WORK/x.out")"
[[ ! -e $WORK/out2 ]] || fail "restore wrote something for a rolled-back chain"

# A fork: our agent sees point 6 acknowledged; the store is put back to its copy from after point
# 5, and another agent of web1 (no state directory) stores a point 6 of its own. Our agent finds
# point 6 under another time than the one it saw acknowledged.
stop_staging
cp -a "$STORE" "$WORK/store.after5"
start_staging
change
once 0  # point 6
stop_staging
rm -rf "$STORE"
cp -a "$WORK/store.after5" "$STORE"
start_staging
agent web1 --volume "$WORK/vol.img" >/dev/null 2>"$WORK/other.err" || fail "another agent: $(tail -n1 "$WORK/other.err")"
change
once 3
grep -q "ALARM: server 'web1': the staging's point 6 is dated .*, but the point 6 (.*) it acknowledged to this agent is another: its chain forked" \
  "$WORK/agent.err" || fail "no fork alarm: $(cat "$WORK/agent.err")"
grep -q "^point 7 acknowledged" "$WORK/agent.out" || fail "expected point 7 after the fork: $(cat "$WORK/agent.out")"
pass "fork: the same id under another time is an alarm too; point 7 follows"

# The links. Our point 7 follows our point 6, not the other agent's point 6 the store holds now:
# --expect-point 6 is refused as a fork (the head check alone would pass it). Point 7, named with
# the MAC from our state file, is our history: accepted.
mac=$(awk '/^last-acked-seal-mac / {print $2}' "$STATE/last-point")
[[ ${#mac} -eq 64 ]] || fail "no seal MAC in the state file: $(cat "$STATE/last-point")"
rc=0
recover verify --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --expect-point 6 >"$WORK/x.out" 2>"$WORK/x.err" || rc=$?
[[ $rc -ne 0 ]] || fail "verify --expect-point 6 accepted a chain whose point 6 is not the one point 7 follows"
grep -q "the chain forked: a later point follows a point 6 other than the one stored under that id" "$WORK/x.out" ||
  fail "verify did not name the fork: $(cat "$WORK/x.out")"
echo "verify --expect-point 6: $(grep ROLLED "$WORK/x.out")"
recover verify --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --expect-point "7:$mac" >/dev/null ||
  fail "verify --expect-point 7:MAC refused our own head"
rm -rf "$WORK/out3"
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point latest --output "$WORK/out3" \
  --expect-point "7:$mac" >/dev/null || fail "restore --expect-point 7:MAC refused our own head"
# The same id under another point: the store put back to its copy from after point 5 once more and
# the other agent writes its point 6 and 7; by id alone that chain passes, by the MAC it does not.
stop_staging
rm -rf "$STORE"
cp -a "$WORK/store.after5" "$STORE"
start_staging
for _ in 6 7; do change; agent web1 --volume "$WORK/vol.img" >/dev/null 2>"$WORK/other.err" || fail "another agent: $(tail -n1 "$WORK/other.err")"; done
[[ $(listed) == *" 6 7" ]] || fail "expected the other agent's points 6 7: $(listed)"
recover verify --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --expect-point 7 >/dev/null ||
  fail "by id alone the other agent's chain should pass"
rc=0
recover restore --store "$STORE" --server-id web1 --key "$KEYS/data-web1.key" --point latest --output "$WORK/out4" \
  --expect-point "7:$mac" >/dev/null 2>"$WORK/x.err" || rc=$?
[[ $rc -ne 0 && ! -e $WORK/out4/vol-0.img ]] || fail "restore --expect-point 7:MAC accepted another agent's point 7"
grep -q "the chain forked: its point 7 is another than the one the agent saw acknowledged" "$WORK/x.err" ||
  fail "restore did not name the fork: $(cat "$WORK/x.err")"
echo "restore --expect-point 7:MAC: $(cat "$WORK/x.err")"
pass "seal links: a fork under the same ids is refused by --expect-point (by link, and by N:MAC)"
