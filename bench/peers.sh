#!/usr/bin/env bash
# P1-P4 and P6 (docs/PERFORMANCE.md) on the usr-4g workload, blockrep side by side with its peers in one run:
#   P1  full sync: blockrep agent -> staging over TLS on this machine, vs. borg 1.2 (lz4, repokey),
#       restic 0.14 (repository v2), `zstd -T2 | openssl enc` of the image, rsync of the files
#   P2  incremental (a 40 MiB random file added, a line appended to 200 headers): blockrep with
#       the eBPF tracker and with the scan tracker, vs. restic's and borg's incremental backup
#   P3  restore of the latest point to a sparse image, vs. restic restore and borg extract
#   P4  bytes stored after the full sync: blockrep lz4 vs. borg lz4, blockrep zstd vs. restic (the
#       peers back up the mounted files; a second row: every tool stores the image file)
#   P6  agent peak RSS (full sync, eBPF incremental, scan) and the staging's peak RSS after the
#       first full sync and after everything
# and the same-input comparison (issue 16): every tool reads the usr-4g image as one file (P1), and
# restores it with a `sync` after (P3, every result durable), next to this machine's own limits
# measured in the same run: an O_DIRECT read of the image, an O_DIRECT + fsync write of as many
# bytes as it has allocated, lz4 and AES-256-GCM on both cores, and the restore's I/O by the disk
# alone (that write while the point's packs are read, as the restore reads them).
# usr-4g: a 4 GiB ext4 image holding copies of /usr/share, /usr/include, /usr/bin and a 400 MiB
# file of random bytes, on a loop device mounted read-only while the peers read its files. The
# page cache is dropped before every timed step; P1 runs BENCH_ROUNDS times (default 2) from
# empty targets and reports the best. Prints one table; with BENCH_ROWS=FILE it also appends its
# rows to FILE (bench/run.sh collects every script's rows into docs/PERFORMANCE.md).
# Needs root. Usage: sudo bench/peers.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "bench/peers.sh: needs root (loop devices, mounts, dropping the page cache)" >&2; exit 1; }
"$root/scripts/setup.sh" --bench
"$root/scripts/build.sh" "$root/build" >/dev/null
BIN=$root/build/bin
source "$root/bench/lib.sh"
W=$(mktemp -d "${BENCH_DIR:-/tmp}/blockrep-peers.XXXXXX")
ROUNDS=${BENCH_ROUNDS:-2}
ZID=usr4gz ZFID=usr4gzf  # zstd on the device / on the image file (P4)
IDS=() FIDS=()
for r in $(seq 1 "$ROUNDS"); do IDS+=("usr4g-$r") FIDS+=("usr4gf-$r"); done
ID=${IDS[-1]}  # the last round's chain: P3 and P4 use it
SPID= DEV=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null || true
  wait 2>/dev/null || true
  mountpoint -q "$W/mnt" && umount "$W/mnt"
  [[ -n $DEV ]] && losetup -d "$DEV" 2>/dev/null || true
  for id in "${IDS[@]}" "${FIDS[@]}" "$ZID" "$ZFID"; do rm -rf "/sys/fs/bpf/blockrep/$id"; done
  [[ -n ${BENCH_KEEP:-} ]] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
# Runs a command with the page cache dropped first; prints its wall seconds. Output goes to
# $W/<name>.out; a failure shows its tail and stops the run.
timed() {
  local name=$1 t0 t1
  shift
  drop_caches
  t0=$(date +%s.%N)
  "$@" >"$W/$name.out" 2>&1 || { echo "bench/peers.sh: $name failed:" >&2; tail -n 5 "$W/$name.out" >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
bytes_of() { du -sb "$1" | cut -f1; }
hwm_mib() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
rss_mib() { awk '{ v = $1 } END { printf "%.0f", v / 1024 }' "$W/rss-$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

echo "building usr-4g in $W ..." >&2
truncate -s 4G "$W/usr-4g.img"
mkfs.ext4 -q -F "$W/usr-4g.img"
mkdir -p "$W/mnt"
mount -o loop "$W/usr-4g.img" "$W/mnt"
cp -a /usr/share /usr/include /usr/bin "$W/mnt/"
head -c 400M /dev/urandom >"$W/mnt/random.bin"
used=$(df -B1 --output=used "$W/mnt" | tail -n 1)
umount "$W/mnt"
DEV=$(losetup --find --show "$W/usr-4g.img")
mount -o ro "$DEV" "$W/mnt"
echo "usr-4g: $(mib "$used") MiB used of 4096 MiB" >&2

keygen_args=()
for id in "${IDS[@]}" "${FIDS[@]}" "$ZID" "$ZFID"; do keygen_args+=(--server-id "$id"); done
"$BIN/blockrep-keygen" --out "$W/keys" "${keygen_args[@]}" >/dev/null
start_staging --retention all
agent() {  # server-id, extra args; the agent's peak RSS (KiB) goes to $W/rss-$RSS_TAG
  local id=$1
  shift
  /usr/bin/time -f %M -o "$W/rss-${RSS_TAG:-last}" "$BIN/blockrep-agent" --staging "127.0.0.1:$PORT" --server-id "$id" --key "$W/keys/data-$id.key" \
    --tls-cert "$W/keys/agent-$id.crt" --tls-key "$W/keys/agent-$id.key" --tls-ca "$W/keys/ca.crt" \
    --volume "${VOLUME:-$DEV}" --state-dir "$W/state-$id" --once "$@"
}
export BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache

# Each round starts every tool from nothing (a new server-id, new repositories, an empty rsync
# target); a figure is the best of the rounds. The first full read after building the image
# and after deleting the previous round's copies ran 10-25 % slower here, whichever tool came
# first, so the disk is left to settle first and one round would charge the rest to one tool.
best() { tr ' ' '\n' | sort -g | head -n 1; }
t_ours=() t_borg=() t_restic=() t_zstd=() t_rsync=()
for r in $(seq 1 "$ROUNDS"); do
  echo "P1 full sync, round $r of $ROUNDS ..." >&2
  export BORG_REPO=$W/borg-$r RESTIC_REPOSITORY=$W/restic-$r
  if ((r > 1)); then
    # Deleting the last round's 4 GB of copies keeps the disk busy for a while after rm
    # returns: let it finish before anything is timed.
    rm -rf "$W"/borg-* "$W"/restic-* "$W/rsync" "$W/usr-4g.zst.enc"
  fi
  sync
  sleep 5
  borg init -e repokey 2>/dev/null
  restic init -q --repository-version 2 >/dev/null
  t_ours+=("$(RSS_TAG=full timed agent-full agent "${IDS[r - 1]}")")
  ((r > 1)) || staging_hwm_first=$(hwm_mib "$SPID")
  t_borg+=("$(cd "$W/mnt" && timed borg-full borg create --compression lz4 ::full .)")
  t_restic+=("$(cd "$W/mnt" && timed restic-full restic backup -q .)")
  t_zstd+=("$(timed zstd-full bash -c "zstd -q -T2 -c <'$DEV' | openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench -out '$W/usr-4g.zst.enc'")")
  t_rsync+=("$(timed rsync-full rsync -a "$W/mnt/" "$W/rsync/")")
done
p1_ours=$(echo "${t_ours[*]}" | best) p1_borg=$(echo "${t_borg[*]}" | best)
p1_restic=$(echo "${t_restic[*]}" | best) p1_zstd=$(echo "${t_zstd[*]}" | best)
p1_rsync=$(echo "${t_rsync[*]}" | best)
rounds="P1 rounds (s): blockrep ${t_ours[*]}; borg ${t_borg[*]}; restic ${t_restic[*]}; zstd-pipe ${t_zstd[*]}; rsync ${t_rsync[*]}"

echo "P1 and P3 on the same input (the image file) ..." >&2
# Every tool reads the same bytes: the image file (blockrep skips its holes, SEEK_DATA; borg
# and restic chunk all of it). Restores end with `sync` for every tool, so each result is durable.
f_ours=() f_borg=() f_restic=() r_ours=() r_borg=() r_restic=()
IMG_ORDER=(ours borg restic)
img_full() {  # tool round: one timed full backup of the image file
  case $1 in
    ours) f_ours+=("$(VOLUME=$W/usr-4g.img timed agent-img agent "${FIDS[$2 - 1]}" --tracker scan)") ;;
    borg) f_borg+=("$(cd "$W" && timed borg-img borg create --compression lz4 ::img usr-4g.img)") ;;
    restic) f_restic+=("$(cd "$W" && timed restic-img restic backup -q usr-4g.img)") ;;
  esac
}
for r in $(seq 1 "$ROUNDS"); do
  export BORG_REPO=$W/borg-img RESTIC_REPOSITORY=$W/restic-img
  rm -rf "$BORG_REPO" "$RESTIC_REPOSITORY" "$W/img-out"
  sync
  sleep 5
  borg init -e repokey 2>/dev/null
  restic init -q --repository-version 2 >/dev/null
  # The tool that reads first after the deletes above runs slower (see the P1 rounds): the order
  # turns each round, so that no tool's best round is always the first one.
  for ((k = 0; k < 3; k++)); do img_full "${IMG_ORDER[(k + r - 1) % 3]}" "$r"; done
  r_ours+=("$(timed restore-img bash -c "'$BIN/blockrep-recover' restore --store '$W/store' --server-id '${FIDS[r - 1]}' \
    --key '$W/keys/data-${FIDS[r - 1]}.key' --point latest --output '$W/img-out' && sync")")
  cmp "$W/img-out/vol-0.img" "$W/usr-4g.img" || { echo "bench/peers.sh: the restored image file differs" >&2; exit 1; }
  rm -rf "$W/img-out"
  sync
  r_restic+=("$(timed restic-img-restore bash -c "restic restore latest --target '$W/img-out' && sync")")
  # (restic keeps the absolute path under the target)
  cmp "$(find "$W/img-out" -name usr-4g.img -type f | head -n 1)" "$W/usr-4g.img" ||
    { echo "bench/peers.sh: restic's restored image file differs" >&2; exit 1; }
  rm -rf "$W/img-out"
  mkdir -p "$W/img-out"
  sync
  r_borg+=("$(cd "$W/img-out" && timed borg-img-extract bash -c "borg extract ::img && sync")")
  rm -rf "$W/img-out"
done
# P2, P3 and P4 go on with the last P1 round's repositories.
export BORG_REPO=$W/borg-$ROUNDS RESTIC_REPOSITORY=$W/restic-$ROUNDS
pf_ours=$(echo "${f_ours[*]}" | best) pf_borg=$(echo "${f_borg[*]}" | best) pf_restic=$(echo "${f_restic[*]}" | best)
pr_ours=$(echo "${r_ours[*]}" | best) pr_borg=$(echo "${r_borg[*]}" | best) pr_restic=$(echo "${r_restic[*]}" | best)
rounds_img="same-input rounds (s): full blockrep ${f_ours[*]}, borg ${f_borg[*]}, restic ${f_restic[*]}; restore+sync blockrep ${r_ours[*]}, borg ${r_borg[*]}, restic ${r_restic[*]}"

echo "machine limits ..." >&2
lim_read=$(timed odirect-read dd if="$W/usr-4g.img" of=/dev/null bs=4M iflag=direct)
alloc_bytes=$(( $(stat -c %b "$W/usr-4g.img") * $(stat -c %B "$W/usr-4g.img") ))
lim_write=$(timed alloc-write dd if=/dev/zero of="$W/alloc.img" bs=4M count=$((alloc_bytes >> 22)) oflag=direct conv=fsync)
rm -f "$W/alloc.img"
# The same-input restore's I/O done by the disk alone: what it must read (the point's packs,
# through the page cache as it reads them) while it writes the image's allocated bytes with
# O_DIRECT, then fsync. Best of 2, as the restore's own figure: this disk's time for it varies.
packs=$W/store/servers/${FIDS[-1]}/packs
packs_bytes=$(bytes_of "$packs")
t_disk=()
for r in 1 2; do
  t_disk+=("$(timed restore-io bash -c "cat '$packs'/*.pack >/dev/null & dd if=/dev/zero of='$W/alloc.img' \
    bs=4M count=$((alloc_bytes >> 22)) oflag=direct conv=fsync status=none && wait \$!")")
  rm -f "$W/alloc.img"
done
lim_restore=$(echo "${t_disk[*]}" | best)
cat "$W/usr-4g.img" >/dev/null  # cached: the codec figures are CPU only
t0=$(date +%s.%N)
half=$((2 << 30))
lz4 -1 -c <(head -c "$half" "$W/usr-4g.img") >/dev/null &
lz1=$!
lz4 -1 -c <(tail -c "$half" "$W/usr-4g.img") >/dev/null &
lz2=$!
wait "$lz1" "$lz2"  # (not a bare wait: the staging runs in the background too)
t1=$(date +%s.%N)
lim_lz4=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 4294.967296 / (b - a) }')
lim_lz4_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
# openssl speed's last column: 16 KiB blocks, in thousands of bytes per second.
lim_gcm=$(openssl speed -elapsed -seconds 2 -multi 2 -evp aes-256-gcm 2>/dev/null | awk 'tolower($1) == "aes-256-gcm" { v = $NF } END { sub(/k$/, "", v); printf "%.0f", v / 1000 }')

echo "P4 bytes stored ..." >&2
store_lz4=$(bytes_of "$W/store/servers/$ID")
agent "$ZID" --compress zstd >"$W/agent-zstd.out" 2>&1 || { tail -n 3 "$W/agent-zstd.out" >&2; exit 1; }
store_zstd=$(bytes_of "$W/store/servers/$ZID")
store_borg=$(bytes_of "$BORG_REPO")
store_restic=$(bytes_of "$RESTIC_REPOSITORY")
store_zstdpipe=$(stat -c %s "$W/usr-4g.zst.enc")
# Same input: the image file, as the same-input rounds above stored it (their last round's chain
# and repositories), and blockrep with zstd on it too.
VOLUME=$W/usr-4g.img agent "$ZFID" --compress zstd --tracker scan >"$W/agent-zstd-img.out" 2>&1 ||
  { tail -n 3 "$W/agent-zstd-img.out" >&2; exit 1; }
store_img_lz4=$(bytes_of "$W/store/servers/${FIDS[-1]}") store_img_zstd=$(bytes_of "$W/store/servers/$ZFID")
store_img_borg=$(bytes_of "$W/borg-img") store_img_restic=$(bytes_of "$W/restic-img")

echo "P2 incremental ..." >&2
# The usr-4g incremental step (a 40 MiB random file, a line appended to 200 headers), written
# through the mounted filesystem while the eBPF tracker pinned by the full syncs watches the device; unmounting flushes it all.
umount "$W/mnt"
mount "$DEV" "$W/mnt"
head -c 40M /dev/urandom >"$W/mnt/incremental.bin"
# (awk, not head: head leaving early would fail the pipeline under pipefail)
find "$W/mnt/include" -name '*.h' -type f | sort | awk 'NR <= 200' >"$W/headers"
[[ $(wc -l <"$W/headers") -eq 200 ]] || { echo "bench/peers.sh: fewer than 200 headers in usr-4g" >&2; exit 1; }
while read -r h; do echo "/* blockrep bench: incremental step */" >>"$h"; done <"$W/headers"
umount "$W/mnt"
mount -o ro "$DEV" "$W/mnt"
p2_ebpf=$(RSS_TAG=ebpf timed agent-incr agent "$ID")
grep -Eq '^  kind +incremental' "$W/agent-incr.out" && grep -Eq '^  tracker +ebpf' "$W/agent-incr.out" || { echo "bench/peers.sh: the incremental did not use the eBPF tracker:" >&2; cat "$W/agent-incr.out" >&2; exit 1; }
p2_ebpf_read=$(awk '/^  read/ {print $2}' "$W/agent-incr.out")
p2_scan=$(RSS_TAG=scan timed agent-scan agent "$ZID" --compress zstd --tracker scan)
p2_scan_read=$(awk '/^  read/ {print $2}' "$W/agent-scan.out")
p2_restic=$(cd "$W/mnt" && timed restic-incr restic backup -q .)
p2_borg=$(cd "$W/mnt" && timed borg-incr borg create --compression lz4 ::incr .)

echo "P3 restore ..." >&2
p3_ours=$(timed restore "$BIN/blockrep-recover" restore --store "$W/store" --server-id "$ID" \
  --key "$W/keys/data-$ID.key" --point latest --output "$W/out")
cmp "$W/out/vol-0.img" "$DEV" || { echo "bench/peers.sh: the restored image differs from the device" >&2; exit 1; }
rm -rf "$W/out"
p3_restic=$(timed restic-restore restic restore latest --target "$W/restic-out")
rm -rf "$W/restic-out"
mkdir -p "$W/borg-out"
p3_borg=$(cd "$W/borg-out" && timed borg-extract borg extract ::full)
rm -rf "$W/borg-out"

staging_hwm_end=$(hwm_mib "$SPID")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
met() { awk -v r="$1" -v t="$2" -v dir="$3" 'BEGIN { print ((dir == "ge" ? r >= t : r <= t) ? "yes" : "NO") }'; }
r1=$(ratio "$p1_borg" "$p1_ours")
rf1=$(ratio "$pf_borg" "$pf_ours") rfl=$(ratio "$pf_ours" "$lim_read") rf3=$(ratio "$pr_restic" "$pr_ours")
rfz=$(ratio "$pf_ours" "$lim_lz4_s") rrl=$(ratio "$pr_ours" "$lim_restore")
met_both() { [[ $(met "$1" "$2" "$3") == yes && $(met "$4" "$5" "$6") == yes ]] && echo yes || echo NO; }
r3=$(ratio "$p3_restic" "$p3_ours")
r2=$(ratio "$p2_restic" "$p2_ebpf")
r2s=$(ratio "$p2_restic" "$p2_scan")
# P6: 64 MiB + 40 MiB per TiB protected (the 4 GiB volume: 64.16 MiB)
agent_rss_max=$(awk -v t=64.16 'BEGIN { printf "%.2f", t }')
r6() { ratio "$1" "$agent_rss_max"; }
rss_full=$(rss_mib full) rss_ebpf=$(rss_mib ebpf) rss_scan=$(rss_mib scan)
r6s=$(ratio "$staging_hwm_end" "$staging_hwm_first")
r4a=$(ratio "$store_lz4" "$store_borg")
r4b=$(ratio "$store_zstd" "$store_restic")
r4c=$(ratio "$store_img_lz4" "$store_img_borg") r4d=$(ratio "$store_img_zstd" "$store_img_restic")
table=$(
  printf '| figure | blockrep | borg | restic | zstd-pipe | rsync | ratio | target | met |\n'
  printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
  printf '| P1 full sync (s) | %s | %s | %s | %s | %s | borg/ours %s | >= 3 | %s |\n' \
    "$p1_ours" "$p1_borg" "$p1_restic" "$p1_zstd" "$p1_rsync" "$r1" "$(met "$r1" 3 ge)"
  printf '| P1 same input: full sync of the image file (s) | %s | %s | %s | | | borg/ours %s; ours/O_DIRECT read %s (ours/lz4 on 2 cores %s) | >= 3; <= 1.5 | %s |\n' \
    "$pf_ours" "$pf_borg" "$pf_restic" "$rf1" "$rfl" "$rfz" "$(met_both "$rf1" 3 ge "$rfl" 1.5 le)"
  printf '| P1 machine: O_DIRECT read of the image / O_DIRECT+fsync write of its %s allocated MiB (s) | %s / %s | | | | | lz4 -1 of the image on 2 cores %s s (%s MB/s); AES-256-GCM on 2 cores %s MB/s | - | - |\n' \
    "$(mib "$alloc_bytes")" "$lim_read" "$lim_write" "$lim_lz4_s" "$lim_lz4" "$lim_gcm"
  printf '| P2 incremental, eBPF tracker (s) | %s | %s | %s | | | restic/ours %s | >= 25 | %s |\n' \
    "$p2_ebpf" "$p2_borg" "$p2_restic" "$r2" "$(met "$r2" 25 ge)"
  printf '| P2 incremental, scan tracker (s) | %s | %s | %s | | | restic/ours %s | - | - |\n' \
    "$p2_scan" "$p2_borg" "$p2_restic" "$r2s"
  printf '| P3 restore latest (s) | %s | %s | %s | | | restic/ours %s | >= 3 | %s |\n' \
    "$p3_ours" "$p3_borg" "$p3_restic" "$r3" "$(met "$r3" 3 ge)"
  printf '| P3 same input: restore of the image file, then sync (s) | %s | %s | %s | | | restic/ours %s (ours/disk alone %s) | >= 3 | %s |\n' \
    "$pr_ours" "$pr_borg" "$pr_restic" "$rf3" "$rrl" "$(met "$rf3" 3 ge)"
  printf '| P3 machine: that restore'"'"'s I/O by the disk alone, reading its %s MiB of packs while writing %s MiB with O_DIRECT, then fsync (s) | %s | | | | | rounds %s | - | - |\n' \
    "$(mib "$packs_bytes")" "$(mib "$alloc_bytes")" "$lim_restore" "${t_disk[*]}"
  printf '| P4 stored, lz4 (MiB) | %s | %s | | %s | | ours/borg %s | <= 0.95 | %s |\n' \
    "$(mib "$store_lz4")" "$(mib "$store_borg")" "$(mib "$store_zstdpipe")" "$r4a" "$(met "$r4a" 0.95 le)"
  printf '| P4 stored, zstd (MiB) | %s | | %s | | | ours/restic %s | <= 0.95 | %s |\n' \
    "$(mib "$store_zstd")" "$(mib "$store_restic")" "$r4b" "$(met "$r4b" 0.95 le)"
  printf '| P4 same input: stored after a full sync of the image file, lz4 / zstd (MiB) | %s / %s | %s | %s | | | ours/borg %s; ours/restic %s | - | - |\n' \
    "$(mib "$store_img_lz4")" "$(mib "$store_img_zstd")" "$(mib "$store_img_borg")" "$(mib "$store_img_restic")" "$r4c" "$r4d"
  for f in "full sync:$rss_full" "eBPF incremental:$rss_ebpf" "scan:$rss_scan"; do
    printf '| P6 agent peak RSS, %s (MiB) | %s | | | | | ours/limit %s | <= 64.16 | %s |\n' \
      "${f%%:*}" "${f##*:}" "$(r6 "${f##*:}")" "$(met "$(r6 "${f##*:}")" 1 le)"
  done
  printf '| P6 staging peak RSS after 1 full sync / after all (MiB) | %s / %s | | | | | all/first %s | not growing (<= 1.1) | %s |\n' \
    "$staging_hwm_first" "$staging_hwm_end" "$r6s" "$(met "$r6s" 1.1 le)"
)
echo
echo "$table"
machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
echo "$rounds"
echo "$rounds_img"
echo "P2 read by blockrep: eBPF ${p2_ebpf_read} MiB, scan ${p2_scan_read} MiB"
[[ -n ${BENCH_ROWS:-} ]] && echo "$table" | tail -n +3 >>"$BENCH_ROWS"
echo "machine: $machine; usr-4g: $(mib "$used") MiB used; $(borg --version), $(restic version | cut -d' ' -f1-2)"
