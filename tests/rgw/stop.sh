#!/usr/bin/env bash
# Stops the Ceph cluster tests/rgw/start.sh started under DIR and removes DIR.
set -uo pipefail

D=${1:?usage: tests/rgw/stop.sh DIR}
[[ -d $D ]] || exit 0
# A throwaway cluster: nothing in it needs a clean shutdown, so every daemon is killed at once.
for name in client.rgw.a osd.0 mgr.x mon.a; do
  pidfile=$D/run/$name.pid
  [[ -f $pidfile ]] || continue
  pid=$(cat "$pidfile")
  kill -9 "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
rm -rf "$D"
