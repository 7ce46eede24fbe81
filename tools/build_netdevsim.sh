#!/usr/bin/env bash
# Build netdevsim.ko out of tree for a Debian guest kernel and cache it.
#
#   tools/build_netdevsim.sh [KVER]      (default: newest /boot/vmlinuz-*)
#
# Debian's linux-image-amd64 ships cls_flower and act_* as modules but not
# netdevsim.  We build drivers/net/netdevsim/ from the linux-source-6.1
# tarball against linux-headers-$KVER and cache the result in
#   .cache/netdevsim/$KVER/netdevsim.ko
# (.cache is gitignored; nothing built here is ever committed).
# Prints the path of the module on stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
kver=${1:-$(ls /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | sort -V | tail -1)}
out="$here/.cache/netdevsim/$kver"
ko="$out/netdevsim.ko"
if [[ -s "$ko" ]]; then
    echo "$ko"
    exit 0
fi

kbuild=/lib/modules/$kver/build
[[ -d "$kbuild" ]] || { echo "build_netdevsim: no headers at $kbuild (apt-get install linux-headers-$kver)" >&2; exit 1; }
series=$(echo "$kver" | cut -d. -f1-2)
tarball=/usr/src/linux-source-$series.tar.xz
[[ -f "$tarball" ]] || { echo "build_netdevsim: no $tarball (apt-get install linux-source-$series)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/netdevsim-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build_netdevsim: extracting drivers/net/netdevsim from $tarball" >&2
tar -C "$work" -xJf "$tarball" --wildcards "linux-source-$series/drivers/net/netdevsim/*"
src="$work/linux-source-$series/drivers/net/netdevsim"
# The in-tree Makefile uses CONFIG_NETDEVSIM and optional CONFIG_* knobs; in
# the distro config netdevsim is off, so force it to a module here.
echo "build_netdevsim: building against $kbuild" >&2
make -s -C "$kbuild" M="$src" CONFIG_NETDEVSIM=m modules >&2
mkdir -p "$out"
cp "$src/netdevsim.ko" "$ko.tmp"
mv "$ko.tmp" "$ko"
echo "$ko"
