#!/usr/bin/env bash
# Stops the Ceph cluster tests/rgw/start.sh started under DIR and removes DIR.
set -uo pipefail

D=${1:?usage: tests/rgw/stop.sh DIR}
[[ -d $D ]] || exit 0
for name in client.rgw.a osd.0 mgr.x mon.a; do  # the gateway first, the monitor last
  pidfile=$D/run/$name.pid
  [[ -f $pidfile ]] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
done
rm -rf "$D"
