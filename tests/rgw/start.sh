#!/usr/bin/env bash
# Starts a single-node Ceph cluster with an S3 gateway under DIR, for the tests of the object-store
# backend (issue 17): one monitor, one manager, one OSD whose BlueStore lives in a sparse file, and
# radosgw serving HTTPS on 127.0.0.1 with a certificate from a CA made here. cephx is on.
#
#   tests/rgw/start.sh DIR     # prints nothing on success; DIR/env holds what a test needs
#   tests/rgw/stop.sh DIR      # stops the daemons and removes DIR
#
# DIR/env (shell syntax) sets BLOCKREP_S3_ENDPOINT (https://127.0.0.1:PORT), BLOCKREP_S3_CA (the
# CA's certificate), BLOCKREP_S3_CREDENTIALS, BLOCKREP_RGW_CONF, BLOCKREP_RGW_PID_FILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION, and writes
# the same credentials to DIR/s3-credentials (0600), the file form `--s3-credentials` reads.
# Exit status 77 (with one line saying why) where it cannot run: not root, or Ceph not installed
# (scripts/setup.sh installs it).
set -euo pipefail

D=${1:?usage: tests/rgw/start.sh DIR}
OSD_BYTES=${RGW_OSD_BYTES:-$((8 << 30))}  # sparse; grows only with what is written

skip() { echo "SKIP: $*" >&2; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "tests/rgw/start.sh needs root (it runs Ceph daemons)"
for b in ceph-mon ceph-mgr ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool openssl; do
  command -v "$b" >/dev/null || skip "$b is not installed; run scripts/setup.sh"
done

mkdir -p "$D"
D=$(cd "$D" && pwd)
mkdir -p "$D"/{mon,mgr,osd,rgw,run,log}

free_port() {  # a TCP port nothing listens on (the daemons bind it a moment later)
  local p
  for _ in $(seq 200); do
    p=$(shuf -i 20000-59999 -n 1)
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  echo "tests/rgw/start.sh: no free TCP port found" >&2
  exit 1
}
MON_PORT=$(free_port)
RGW_PORT=$(free_port)
FSID=$(cat /proc/sys/kernel/random/uuid)

cat >"$D/ceph.conf" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/\$name.keyring
run dir = $D/run
pid file = $D/run/\$name.pid
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
osd crush chooseleaf type = 0
[mon.a]
mon data = $D/mon
[mgr.x]
mgr data = $D/mgr
[osd.0]
osd data = $D/osd
osd objectstore = bluestore
bluestore block path = $D/osd.block
bluestore block create = true
bluestore block size = $OSD_BYTES
bluestore block db create = false
bluestore block wal create = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
[client.rgw.a]
rgw frontends = beast ssl_endpoint=127.0.0.1:$RGW_PORT ssl_certificate=$D/rgw/server.crt ssl_private_key=$D/rgw/server.key
rgw data = $D/rgw
rgw dns name = localhost
EOF
C=(--conf "$D/ceph.conf")
log() { echo "tests/rgw/start.sh: $*" >&2; }
fail() { log "$*; the daemons' logs are in $D/log"; exit 1; }

# The TLS certificate radosgw presents, from a CA of its own that the clients are told to trust.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=blockrep test RGW CA" \
  -keyout "$D/rgw/ca.key" -out "$D/rgw/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$D/rgw/server.key" -out "$D/rgw/server.csr" 2>/dev/null
openssl x509 -req -in "$D/rgw/server.csr" -CA "$D/rgw/ca.crt" -CAkey "$D/rgw/ca.key" -CAcreateserial -days 2 \
  -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n') -out "$D/rgw/server.crt" 2>/dev/null

# Keys: the monitor's own, the admin's, and one per daemon.
ceph-authtool --create-keyring "$D/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$D/client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$D/mon.keyring" --import-keyring "$D/client.admin.keyring" >/dev/null

monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/mon.keyring" 2>>"$D/log/setup.log"
ceph-mon "${C[@]}" -i a >>"$D/log/setup.log" 2>&1 || fail "ceph-mon did not start"

timeout 60 ceph "${C[@]}" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
  -o "$D/mgr.x.keyring" 2>>"$D/log/setup.log" || fail "the monitor did not answer within 60 s"
ceph-mgr "${C[@]}" -i x >>"$D/log/setup.log" 2>&1 || fail "ceph-mgr did not start"

OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
ceph "${C[@]}" osd new "$OSD_UUID" >/dev/null
ceph "${C[@]}" auth get-or-create osd.0 mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' \
  -o "$D/osd.0.keyring" 2>>"$D/log/setup.log"
ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$D/log/setup.log" 2>&1 || fail "ceph-osd --mkfs failed"
ceph-osd "${C[@]}" -i 0 >>"$D/log/setup.log" 2>&1 || fail "ceph-osd did not start"

ceph "${C[@]}" auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
  -o "$D/client.rgw.a.keyring" 2>>"$D/log/setup.log"
up=0
for _ in $(seq 120); do
  ceph "${C[@]}" osd stat 2>/dev/null | grep -q "1 up" && { up=1; break; }
  sleep 0.5
done
((up)) || fail "the OSD did not come up within 60 s"
radosgw "${C[@]}" -n client.rgw.a >>"$D/log/setup.log" 2>&1 || fail "radosgw did not start"

ready=0
for _ in $(seq 240); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$D/rgw/ca.crt" "https://127.0.0.1:$RGW_PORT/" || true)
  [[ $code == 200 ]] && { ready=1; break; }
  sleep 0.5
done
((ready)) || fail "radosgw did not answer on https://127.0.0.1:$RGW_PORT within 120 s"

ACCESS=BR$(openssl rand -hex 9 | tr a-f A-F)
SECRET=$(openssl rand -hex 20)
radosgw-admin "${C[@]}" -n client.admin user create --uid=blockrep --display-name=blockrep \
  --access-key="$ACCESS" --secret-key="$SECRET" >/dev/null 2>>"$D/log/setup.log" ||
  fail "radosgw-admin could not create the test user"

umask 077
cat >"$D/s3-credentials" <<EOF
access_key_id = $ACCESS
secret_access_key = $SECRET
EOF
cat >"$D/env" <<EOF
export BLOCKREP_S3_ENDPOINT=https://127.0.0.1:$RGW_PORT
export BLOCKREP_S3_CA=$D/rgw/ca.crt
export BLOCKREP_S3_CREDENTIALS=$D/s3-credentials
export BLOCKREP_RGW_CONF=$D/ceph.conf
export BLOCKREP_RGW_PID_FILE=$D/run/client.rgw.a.pid
export AWS_ACCESS_KEY_ID=$ACCESS
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_DEFAULT_REGION=default
EOF
