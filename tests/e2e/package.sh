#!/usr/bin/env bash
# The Debian package: `cpack -G DEB` from this build makes one .deb holding the four programs,
# the systemd units (ExecStart on /usr/bin), the example configs, alerts.yml, docs and man pages;
# `apt-get install ./blockrep_*.deb` installs it on this bookworm machine with its library
# dependencies resolved (dpkg-shlibdeps), every installed program answers --help, the units pass
# systemd-analyze verify, and the demo runs end to end on the installed programs. The package is
# removed afterwards. Then it installs into a clean bookworm root made by debootstrap
# (tests/tools/clean_root_deb.sh), where apt-get fetches the dependencies from deb.debian.org, and
# runs each program's --help there.
source "$(dirname "$0")/lib.sh"
need_root "package"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$BIN/.." && pwd)
[[ -f $BUILD/CPackConfig.cmake ]] || fail "no CPackConfig.cmake in $BUILD (configure the build with cmake first)"
for tool in cpack dpkg-deb apt-get dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/setup.sh installs it)" >&2; exit 77; }
done
if dpkg-query -W -f='${Status}' blockrep 2>/dev/null | grep -q "install ok installed"; then
  echo "SKIP: a blockrep package is installed on this machine; this test would replace and remove it" >&2
  exit 77
fi
INSTALLED=
finish() {
  local rc=$?
  [[ -n $INSTALLED ]] && apt-get remove -y -q blockrep >"$WORK/remove.log" 2>&1
  cleanup "$rc"
}
trap finish EXIT

(cd "$BUILD" && cpack -G DEB -B "$WORK/pkg" >"$WORK/cpack.log" 2>&1) || fail "cpack: $(tail -n 5 "$WORK/cpack.log")"
deb=$(ls "$WORK"/pkg/blockrep_*.deb 2>/dev/null | head -n 1)
[[ -n $deb ]] || fail "cpack made no blockrep_*.deb: $(tail -n 5 "$WORK/cpack.log")"
echo "$(basename "$deb"): $(du -k "$deb" | cut -f1) KiB"
dpkg-deb -c "$deb" | awk '{print $6}' >"$WORK/contents"
for f in ./usr/bin/blockrep-agent ./usr/bin/blockrep-staging ./usr/bin/blockrep-recover ./usr/bin/blockrep-keygen \
  ./usr/lib/systemd/system/blockrep-agent.service ./usr/lib/systemd/system/blockrep-staging.service \
  ./usr/share/doc/blockrep/examples/agent.conf.example ./usr/share/doc/blockrep/examples/staging.conf.example \
  ./usr/share/doc/blockrep/examples/alerts.yml ./usr/share/man/man8/blockrep-agent.8 ./usr/share/man/man8/blockrep-recover.8; do
  grep -qE "^${f}(\.gz)?$" "$WORK/contents" || fail "the package lacks $f: $(cat "$WORK/contents")"
done
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
# (libcurl4, libxml2 and libmicrohttpd12 are opened with dlopen: named by CMakeLists.txt, not found by dpkg-shlibdeps)
for lib in liburing libfuse3 libssl libcurl4 libxml2 libmicrohttpd12; do
  [[ $depends == *"$lib"* ]] || fail "Depends does not name $lib: $depends"
done

apt-get install -y -q "$deb" >"$WORK/install.log" 2>&1 || fail "apt-get install: $(tail -n 5 "$WORK/install.log")"
INSTALLED=1
for p in blockrep-agent blockrep-staging blockrep-recover blockrep-keygen; do
  [[ $(command -v "$p") == /usr/bin/$p ]] || fail "$p is not on PATH at /usr/bin after the install"
  "/usr/bin/$p" --help >"$WORK/help.txt" 2>&1 || fail "/usr/bin/$p --help exited $?: $(head -n 3 "$WORK/help.txt")"
done
grep -q "^ExecStart=/usr/bin/blockrep-agent " /usr/lib/systemd/system/blockrep-agent.service ||
  fail "the installed agent unit does not start /usr/bin/blockrep-agent"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /usr/lib/systemd/system/blockrep-agent.service /usr/lib/systemd/system/blockrep-staging.service \
    2>"$WORK/verify.err" || fail "systemd-analyze verify: $(cat "$WORK/verify.err")"
fi
man_page=$(ls /usr/share/man/man8/blockrep-agent.8* | head -n 1)
zcat -f "$man_page" | grep -q '^\.SH "blockrep-agent point"' || fail "the agent's man page lacks its point subcommand"
echo "installed: 4 programs answer --help, units verified, man pages in /usr/share/man/man8"

BLOCKREP_BIN=/usr/bin BLOCKREP_DEMO_DIR="$WORK/demo" bash "$REPO/scripts/demo.sh" >"$WORK/demo.log" 2>&1 ||
  fail "the demo on the installed programs failed: $(tail -n 8 "$WORK/demo.log")"
tail -n 4 "$WORK/demo.log"
apt-get remove -y -q blockrep >"$WORK/remove.log" 2>&1 || fail "apt-get remove: $(tail -n 3 "$WORK/remove.log")"
INSTALLED=
[[ ! -e /usr/bin/blockrep-agent ]] || fail "/usr/bin/blockrep-agent is still there after apt-get remove"
pass "the .deb installs with its dependencies, its programs run (demo passed on /usr/bin), and it removes cleanly"

# A clean bookworm root (debootstrap minbase): apt-get fetches the dependencies there.
if [[ -n ${BLOCKREP_SANITIZED:-} ]]; then
  echo "clean-root install: checked by the normal build's run of this test (this is the sanitizer build)"
  exit 0
fi
if ! curl -fsI --max-time 10 http://deb.debian.org/debian/dists/bookworm/Release >/dev/null 2>&1; then
  echo "SKIP (clean root only): deb.debian.org is unreachable, so no clean bookworm root can be made here" >&2
  exit 0
fi
bash "$REPO/tests/tools/clean_root_deb.sh" "$deb" >"$WORK/cleanroot.log" 2>&1 ||
  fail "the clean-root install failed: $(grep -v '^W:' "$WORK/cleanroot.log" | tail -n 6)"
grep -v '^W:\|^E: Can not write log\|^debconf\|certificates' "$WORK/cleanroot.log"
