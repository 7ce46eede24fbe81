#!/usr/bin/env bash
# Run any command as root inside the kernel tier's VM (Debian kernel under TCG,
# virtme-ng), booted exactly as tools/kernel_tier.py does it, with the tc
# modules (and netdevsim.ko) loaded first.  The repo is mounted read-write and
# is the working directory.  Output streams to the host; the exit status is the
# command's (124 on timeout).
#
#   bench/run_in_vm.sh [--timeout S] -- COMMAND [ARGS...]
#   bench/run_in_vm.sh -- .venv/bin/python bench/tc_install.py --sizes 1000,10000
#
# tools/kernel_tier.py runs only pytest (mode test) or tools/demo_smoke.py
# (mode demo), hence this script for benchmarks.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [[ "${1:-}" == "--guest" ]]; then            # inside the VM: --guest RCFILE CMD...
    rcfile=$2
    shift 2
    modules="cls_flower act_gact act_mirred act_vlan act_pedit act_csum act_tunnel_key act_skbedit act_sample sch_ingress veth"
    for m in $modules; do modprobe "$m" || { echo "guest: modprobe $m failed"; exit 97; }; done
    echo "guest: Linux $(uname -r), $(nproc) CPUs, up $(cut -d' ' -f1 /proc/uptime) s; running: $*"
    "$@"
    rc=$?
    echo "$rc" > "$rcfile"
    sync
    exit "$rc"
fi

timeout=${FLOWPATH_VM_TIMEOUT:-1800}
if [[ "${1:-}" == "--timeout" ]]; then timeout=$2; shift 2; fi
[[ "${1:-}" == "--" ]] && shift
[[ $# -gt 0 ]] || { echo "usage: $0 [--timeout S] -- COMMAND [ARGS...]" >&2; exit 2; }

venv=$here/.venv
kver=$(tools/ensure_vm_tooling.sh "$venv" | tail -1) || { echo "ensure_vm_tooling failed" >&2; exit 1; }
mkdir -p .cache
rcfile=.cache/run_in_vm.$$.rc
rm -f "$rcfile"
quoted=$(printf '%q ' "$@")
echo "run_in_vm: booting Linux $kver under TCG (virtme-ng), timeout $timeout s"
PATH=$venv/bin:$PATH timeout --kill-after=30 "$timeout" "$venv/bin/vng" \
    --run "/boot/vmlinuz-$kver" --disable-kvm \
    --memory "${FLOWPATH_VM_MEMORY:-2G}" --cpus "${FLOWPATH_VM_CPUS:-2}" --user root \
    --rwdir "$here" --cwd "$here" \
    --exec "bench/run_in_vm.sh --guest $rcfile $quoted" </dev/null
vm_rc=$?
if [[ -f "$rcfile" ]]; then rc=$(cat "$rcfile"); rm -f "$rcfile"; exit "$rc"; fi
echo "run_in_vm: VM exited $vm_rc before the command finished" >&2
exit $(( vm_rc ? vm_rc : 1 ))
