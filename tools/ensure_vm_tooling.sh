#!/usr/bin/env bash
# Make sure everything the kernel-tier VM needs is present; install only what is
# missing.  Prints the guest kernel version on the last line of stdout.
#
#   tools/ensure_vm_tooling.sh [VENV]        (default VENV: .venv)
#
# * Debian packages: qemu-system-x86, busybox-static, iputils-ping, linux-image-amd64,
#   linux-source-6.1, linux-headers-amd64, iproute2, ethtool, kmod, gcc, make, xz
#   (apt-get update + install, only when something is missing).
# * virtme-ng (PyPI, pinned) in the venv.
# * netdevsim.ko for the guest kernel, built and cached (tools/build_netdevsim.sh).
# Guest kernel: $FLOWPATH_GUEST_KERNEL, else the version linux-image-amd64
# depends on, else the newest /boot/vmlinuz-* that has /lib/modules/<ver>/kernel.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$here/.venv}
VIRTME_NG_VERSION=1.42

log() { echo "vm-tooling: $*" >&2; }

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo -n"; fi

guest_kernel() {
    if [[ -n "${FLOWPATH_GUEST_KERNEL:-}" ]]; then echo "$FLOWPATH_GUEST_KERNEL"; return; fi
    local dep
    dep=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null | grep -o 'linux-image-[^ ,]*' | head -1 || true)
    if [[ -n "$dep" && -e /boot/vmlinuz-${dep#linux-image-} ]]; then echo "${dep#linux-image-}"; return; fi
    local v
    for f in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
        v=${f#/boot/vmlinuz-}
        if [[ -d /lib/modules/$v/kernel ]]; then echo "$v"; return; fi
    done
}

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_cmd qemu-system-x86_64 qemu-system-x86
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" || missing+=(busybox-static)
need_cmd tc iproute2
need_cmd devlink iproute2
need_cmd ethtool ethtool
need_cmd ping iputils-ping
need_cmd modprobe kmod
need_cmd gcc gcc
need_cmd make make
need_cmd xz xz-utils
kver=$(guest_kernel)
if [[ -z "$kver" ]]; then
    missing+=(linux-image-amd64)
else
    [[ -d /lib/modules/$kver/build ]] || missing+=("linux-headers-$kver")
fi
dpkg-query -W -f='${Status}' linux-headers-amd64 2>/dev/null | grep -q "install ok installed" || missing+=(linux-headers-amd64)
ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1 || missing+=(linux-source-6.1)

if (( ${#missing[@]} )); then
    # shellcheck disable=SC2207
    pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${pkgs[@]}" >&2
    kver=$(guest_kernel)
    [[ -n "$kver" ]] || { log "no guest kernel after install"; exit 1; }
    if [[ ! -d /lib/modules/$kver/build ]]; then
        $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q "linux-headers-$kver" >&2
    fi
else
    log "apt packages present"
fi

if ! "$venv/bin/vng" --version >/dev/null 2>&1; then
    log "pip install virtme-ng==$VIRTME_NG_VERSION into $venv"
    "$venv/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION" >&2
fi

ko=$("$here/tools/build_netdevsim.sh" "$kver")
log "guest kernel $kver, netdevsim $ko"
echo "$kver"
