#!/usr/bin/env bash
# Installs what blockrep needs to build, test and demo on Debian bookworm (with --bench, also the
# peers the benchmarks compare with). Idempotent: apt-get runs only when a package is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  liburing-dev liblz4-dev libzstd-dev libxxhash-dev libssl-dev openssl
  libboost-program-options-dev libgtest-dev libbenchmark-dev
  libbpf-dev bpftool clang libclang-rt-14-dev
  libfuse3-dev fuse3 libblkid-dev
  libmicrohttpd-dev prometheus curl libcurl4-openssl-dev libxml2-dev
  ceph-mon ceph-mgr ceph-osd radosgw
  e2fsprogs xfsprogs util-linux fio strace postgresql dpkg-dev debootstrap
)
# The peers bench/ measures blockrep against (issue 6): only with --bench.
[[ ${1:-} == --bench ]] && PACKAGES+=(borgbackup restic rsync time)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
