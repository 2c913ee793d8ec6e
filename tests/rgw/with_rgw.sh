#!/usr/bin/env bash
# Runs COMMAND with the environment of the gateway tests/rgw/start.sh started under DIR (its
# DIR/env); exits 77 (skipped) with the reason when there is none.
#   tests/rgw/with_rgw.sh DIR COMMAND [ARG...]
set -euo pipefail
D=${1:?usage: tests/rgw/with_rgw.sh DIR COMMAND [ARG...]}
shift
if [[ ! -f $D/env ]]; then
  echo "SKIP: no Ceph RGW under $D (tests/rgw/start.sh skipped or failed; it needs root and scripts/setup.sh)" >&2
  exit 77
fi
# shellcheck disable=SC1091
source "$D/env"
exec "$@"
