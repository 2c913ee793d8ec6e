#!/usr/bin/env bash
# clean_root_deb.sh DEB: installs the package into a clean Debian bookworm root (debootstrap
# --variant=minbase from deb.debian.org, in a temporary directory) with `apt-get install ./DEB`,
# which fetches its dependencies there, then runs each installed program's --help inside it.
# Needs root and the Debian mirror; takes a few minutes, so it is run by hand (README, Packages),
# not by CI: tests/e2e/package.sh installs the same package on the CI machine itself.
set -euo pipefail
deb=$(realpath "${1:?usage: clean_root_deb.sh blockrep_VERSION_ARCH.deb}")
[[ $(id -u) -eq 0 ]] || { echo "clean_root_deb.sh: needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
root=$(mktemp -d /tmp/blockrep-cleanroot.XXXXXX)
cleanup() {
  for m in proc sys dev; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
start=$SECONDS
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 ||
  { echo "debootstrap failed: $(tail -n 5 "$root.log")" >&2; exit 1; }
rm -f "$root.log"
echo "clean bookworm root (minbase) in $((SECONDS - start)) s: $(chroot "$root" dpkg-query -W | wc -l) packages"
mount -t proc proc "$root/proc"
mount --bind /sys "$root/sys"
mount --bind /dev "$root/dev"
cp "$deb" "$root/tmp/"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" apt-get update -qq
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "/tmp/$(basename "$deb")" >/dev/null
echo "installed $(basename "$deb") with $(chroot "$root" dpkg-query -W | wc -l) packages in the root now"
for p in blockrep-agent blockrep-staging blockrep-recover blockrep-keygen; do
  chroot "$root" "/usr/bin/$p" --help >/dev/null || { echo "$p --help failed in the clean root" >&2; exit 1; }
  echo "  /usr/bin/$p --help: ok"
done
chroot "$root" blockrep-keygen --out /tmp/keys --server-id demo >/dev/null
echo "  blockrep-keygen made $(ls "$root/tmp/keys" | wc -l) files in the clean root"
echo "ok: the .deb installs on a clean bookworm root and its programs run"
