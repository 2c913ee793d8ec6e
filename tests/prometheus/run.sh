#!/usr/bin/env bash
# The alerting rules (docs/alerts.yml): promtool's syntax check, then its unit tests of when each
# alert fires (alerts_test.yml beside this script).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v promtool >/dev/null; then
  echo "SKIP: promtool is missing (scripts/setup.sh installs the prometheus package)" >&2
  exit 77
fi
promtool check rules "$here/../../docs/alerts.yml"
cd "$here" && promtool test rules alerts_test.yml
