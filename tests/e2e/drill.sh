#!/usr/bin/env bash
# drill: a point of an ext4 volume holding a PostgreSQL cluster under pgbench and an xfs volume
# (both mounted and live on the source) passes a drill whose hook starts PostgreSQL from the
# overlay-mounted volume (it replays its WAL) and checks the xfs files; --copy passes too. A
# failing hook, a damaged record and a filesystem with errors each give result "fail" and exit
# != 0; SIGINT mid-drill stops it. After every drill nothing is left mounted, attached or on disk,
# and each report is appended to drills.jsonl.
source "$(dirname "$0")/lib.sh"
need_root drill
[[ -e /dev/fuse ]] || { echo "SKIP: drill needs /dev/fuse" >&2; exit 77; }
PG=/usr/lib/postgresql/15/bin
[[ -x $PG/postgres ]] || { echo "SKIP: PostgreSQL 15 is not installed (scripts/setup.sh installs it)" >&2; exit 77; }

ID=drill$$
make_keys "$ID" bad
PINS+=("$ID")
chmod 711 "$WORK"  # PostgreSQL runs as postgres from below it

# Volume 0: ext4 with a PostgreSQL cluster, pgbench running while the point is taken.
ext4_loop 256M
dev0=$DEV
mount_dev
mkdir -p "$WORK/mnt/pg" "$WORK/pgsock"
chown postgres: "$WORK/mnt/pg" "$WORK/pgsock"
su postgres -c "$PG/initdb -D $WORK/mnt/pg/data -A trust -U postgres" >"$WORK/initdb.log" 2>&1 || fail "initdb: $(tail -n 3 "$WORK/initdb.log")"
pgctl() { su postgres -c "$PG/pg_ctl -D $WORK/mnt/pg/data $*"; }
pgctl "-o '-p 5491 -k $WORK/pgsock -c listen_addresses=' -l $WORK/pgsock/pg.log -w start" >/dev/null || fail "postgres did not start: $(tail -n 5 "$WORK/pgsock/pg.log")"
PG_RUNNING=1
stop_pg() { [[ -n ${PG_RUNNING:-} ]] && pgctl "-m fast -w stop" >/dev/null 2>&1; PG_RUNNING=; }
trap 'rc=$?; stop_pg || true; cleanup "$rc"' EXIT
"$PG/pgbench" -i -s 3 -h "$WORK/pgsock" -p 5491 -U postgres postgres >"$WORK/pgbench-init.log" 2>&1 || fail "pgbench -i failed"
# Volume 1: xfs with files of known content.
truncate -s 320M "$WORK/xfs.img"
loop_attach "$WORK/xfs.img"
dev1=$LOOP
mkfs.xfs -q -f "$dev1"
mkdir -p "$WORK/mntx"
mount "$dev1" "$WORK/mntx"
MOUNTS+=("$WORK/mntx")
cp -r /usr/include/linux "$WORK/mntx/"
(cd "$WORK/mntx" && find linux -type f -print0 | sort -z | xargs -0 sha256sum >"$WORK/xfs.sums")

start_staging
"$PG/pgbench" -T 6 -c 2 -h "$WORK/pgsock" -p 5491 -U postgres postgres >"$WORK/pgbench.log" 2>&1 &
BENCH=$!
sleep 2
agent "$ID" --volume "$dev0" --volume "$dev1" --tracker ebpf >"$WORK/agent.out" 2>>"$WORK/agent.log" || fail "agent: $(tail -n 3 "$WORK/agent.log")"
wait "$BENCH" || fail "pgbench failed: $(tail -n 3 "$WORK/pgbench.log")"
recover list --store "$STORE" --server-id "$ID" --json | grep -q '"consistent": true' || fail "the point is not consistent"
echo "ok: point taken under pgbench ($(grep -o 'number of transactions actually processed: [0-9]*' "$WORK/pgbench.log"))"

SCRATCH=$WORK/scratch
mkdir -p "$SCRATCH"
# check_clean NAME: nothing of any drill is mounted, attached, running or on disk.
check_clean() {
  grep -q "$SCRATCH" /proc/mounts && fail "$1: left mounted: $(grep "$SCRATCH" /proc/mounts)"
  [[ $(losetup -a) == *"$SCRATCH"* ]] && fail "$1: left a loop device: $(losetup -a | grep "$SCRATCH")"
  [[ -z $(ls -A "$SCRATCH") ]] || fail "$1: left files: $(ls -A "$SCRATCH")"
  pgrep -f "blockrep-recover mount --store $STORE" >/dev/null && fail "$1: left a mount process"
  pass "$1: nothing left mounted, attached, running or on disk"
}
# drill NAME WANT-EXIT ARGS...: runs a drill --json, keeps the report in $WORK/report.json.
drill() {
  local name=$1 want=$2 rc=0
  shift 2
  "$BIN/blockrep-recover" drill --store "$STORE" --key "$KEYS/data-$SERVER.key" --server-id "$SERVER" \
    --scratch "$SCRATCH" --json "$@" >"$WORK/report.json" 2>"$WORK/drill.err" || rc=$?
  if [[ $want == 0 && $rc -ne 0 ]] || [[ $want != 0 && $rc -eq 0 ]]; then
    cat "$WORK/report.json" "$WORK/drill.err" >&2
    fail "$name: exit $rc"
  fi
  echo "ok: $name -> exit $rc: $(cut -c1-400 "$WORK/report.json")"
  check_clean "$name"
}
SERVER=$ID

cat >"$WORK/hook.sh" <<EOF
#!/bin/bash
# Starts PostgreSQL from the drill's copy of the data directory (the source's cluster is still
# running from the same files on the source, so its pid file is stale here), counts the rows,
# checks the xfs files.
set -euo pipefail
d=\$BLOCKREP_VOLUME_0/pg/data
rm -f "\$d/postmaster.pid"
sock=\$(mktemp -d)
chown postgres: "\$sock"
su postgres -c "$PG/pg_ctl -D \$d -o '-p 5492 -k \$sock -c listen_addresses=' -l \$sock/pg.log -w -t 120 start" >/dev/null
rows=\$(psql -h "\$sock" -p 5492 -U postgres -Atc 'select count(*) from pgbench_accounts' postgres)
su postgres -c "$PG/pg_ctl -D \$d -m fast -w stop" >/dev/null
grep -E 'redo (starts|done)|not properly shut down|automatic recovery' "\$sock/pg.log" || { cat "\$sock/pg.log"; echo "no WAL replay"; exit 5; }
echo "rows: \$rows"
[[ \$rows == 300000 ]]
cd "\$BLOCKREP_VOLUME_1" && sha256sum --quiet -c "$WORK/xfs.sums"
echo "xfs: \$(wc -l <"$WORK/xfs.sums") files match"
rm -rf "\$sock"
EOF
chmod +x "$WORK/hook.sh"
drill "pass: PostgreSQL replays its WAL from the overlay, xfs files match" 0 --hook "$WORK/hook.sh"
grep -q '"result": "pass"' "$WORK/report.json" || fail "no pass"
grep -q '"fs": "ext4", "check": "clean"' "$WORK/report.json" && grep -q '"fs": "xfs", "check": "clean"' "$WORK/report.json" ||
  fail "ext4 and xfs not both checked clean"
grep -q 'rows: 300000' "$WORK/report.json" && grep -q 'files match' "$WORK/report.json" || fail "hook output missing"
grep -q '"consistent": true' "$WORK/report.json" || fail "point not reported consistent"
grep -o '"rpo_seconds": [0-9.]*, "rto_seconds": [0-9.]*' "$WORK/report.json"

drill "pass with --copy" 0 --hook "$WORK/hook.sh" --copy
grep -q '"mode": "copy"' "$WORK/report.json" || fail "not a copy drill"

printf '#!/bin/sh\necho about to fail\nexit 3\n' >"$WORK/fail.sh"
chmod +x "$WORK/fail.sh"
drill "failing hook" 3 --hook "$WORK/fail.sh"
grep -q '"hook": {"exit": 3' "$WORK/report.json" && grep -q '"result": "fail"' "$WORK/report.json" || fail "hook failure not reported"

# SIGINT while the hook runs.
cat >"$WORK/slow.sh" <<EOF
#!/bin/sh
touch "$WORK/hook-started"
sleep 60
EOF
chmod +x "$WORK/slow.sh"
"$BIN/blockrep-recover" drill --store "$STORE" --key "$KEYS/data-$ID.key" --server-id "$ID" --scratch "$SCRATCH" \
  --json --hook "$WORK/slow.sh" >"$WORK/report.json" 2>"$WORK/drill.err" &
DPID=$!
for _ in $(seq 1 300); do [[ -e $WORK/hook-started ]] && break; sleep 0.1; done
[[ -e $WORK/hook-started ]] || fail "the slow hook did not start"
kill -INT "$DPID"
rc=0
timeout 30 tail --pid="$DPID" -f /dev/null || fail "drill did not stop on SIGINT"
wait "$DPID" || rc=$?
[[ $rc -ne 0 ]] && grep -q '"result": "fail"' "$WORK/report.json" && grep -q 'interrupted' "$WORK/report.json" ||
  fail "SIGINT: exit $rc, $(cat "$WORK/report.json")"
echo "ok: SIGINT mid-hook -> exit $rc"
check_clean "SIGINT mid-drill"
stop_pg

# A damaged record: one flipped byte in the record of volume 0 that holds the superblock.
pack=$(ls "$STORE/servers/$ID/packs/"*.pack | head -n 1)
u32() { od -An -tu4 -j "$1" -N4 "$pack" | tr -d ' '; }
u64() { od -An -tu8 -j "$1" -N8 "$pack" | tr -d ' '; }
u16() { od -An -tu2 -j "$1" -N2 "$pack" | tr -d ' '; }
rec=16
while ! [[ $(u16 $((rec + 8))) == 0 && $(u64 $((rec + 24))) == 0 ]]; do
  rec=$((rec + 64 + $(u32 $((rec + 16))) + 16 + ($(u32 $((rec + 12))) + 4095) / 4096 * 8))
done
at=$((rec + 64 + 10))
cp "$pack" "$WORK/pack.orig"
flip_byte "$pack" "$at"
drill "damaged record" 1
grep -Eq "server '$ID' volume 0 point 1 offset [0-9]+: " "$WORK/report.json" || fail "the damage is not named: $(cat "$WORK/report.json")"
cp "$WORK/pack.orig" "$pack"

# A filesystem with errors: an ext4 image whose inode has a wrong link count, replicated as is.
SERVER=bad
truncate -s 32M "$WORK/bad.img"
mkfs.ext4 -q -F "$WORK/bad.img"
echo data >"$WORK/f"
debugfs -w -R "write $WORK/f f" "$WORK/bad.img" >/dev/null 2>&1
debugfs -w -R "set_inode_field f links_count 7" "$WORK/bad.img" >/dev/null 2>&1
agent bad --volume "$WORK/bad.img" >/dev/null 2>>"$WORK/agent.log"
drill "filesystem with errors" 1
grep -q '"check": "errors"' "$WORK/report.json" || fail "e2fsck errors not reported"

lines=$(wc -l <"$STORE/servers/$ID/drills.jsonl")
[[ $lines -eq 5 ]] || fail "drills.jsonl of $ID has $lines lines, expected 5"
[[ $(grep -c '"result": "pass"' "$STORE/servers/$ID/drills.jsonl") -eq 2 ]] || fail "drills.jsonl: expected 2 passes"
pass "drills.jsonl: $lines reports ($(grep -c pass "$STORE/servers/$ID/drills.jsonl") pass)"
