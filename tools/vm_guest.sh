#!/usr/bin/env bash
# Runs INSIDE the virtme-ng guest (as root), started by tools/kernel_tier.py.
#
#   tools/vm_guest.sh RESULTS_DIR NETDEVSIM_KO MODE [pytest args...]
#
# MODE test: load the tc/flower modules and netdevsim.ko, then run every test
#            marked `kernel` with FLOWPATH_KERNEL_TIER=required, junit xml into
#            RESULTS_DIR/kernel.xml and the exit status into RESULTS_DIR/kernel.rc.
# MODE demo: same modules, then `.venv/bin/python SCRIPT [args]` (first arg: the
#            demo script, tools/demo.py or tools/demo_smoke.py).
# RESULTS_DIR is inside the repo, which the guest mounts read-write.
set -uo pipefail
exec 2>&1

results=$1 ko=$2 mode=$3
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$results"
echo "guest: Linux $(uname -r), booted in $(cut -d' ' -f1 /proc/uptime) s (guest uptime)"
echo "$(uname -r)" > "$results/guest-kernel"
cut -d' ' -f1 /proc/uptime > "$results/guest-boot-seconds"

modules="cls_flower act_gact act_mirred act_vlan act_pedit act_csum act_tunnel_key act_skbedit act_sample sch_ingress veth"
for m in $modules; do
    modprobe "$m" || { echo "guest: modprobe $m failed"; echo 97 > "$results/$mode.rc"; exit 97; }
done
for dep in $(modinfo -F depends "$ko" | tr ',' ' '); do
    modprobe "$dep" || { echo "guest: modprobe $dep (netdevsim dependency) failed"; echo 97 > "$results/$mode.rc"; exit 97; }
done
insmod "$ko" || { echo "guest: insmod $ko failed"; echo 97 > "$results/$mode.rc"; exit 97; }
echo "guest: modules loaded: $modules netdevsim"

export FLOWPATH_KERNEL_TIER=required
case "$mode" in
test)
    .venv/bin/python -m pytest -m kernel -p no:cacheprovider \
        --junitxml="$results/kernel.xml" "$@"
    rc=$?
    ;;
demo)
    .venv/bin/python "$@"
    rc=$?
    ;;
*)
    echo "guest: unknown mode $mode"; rc=2 ;;
esac
echo "$rc" > "$results/$mode.rc"
sync
exit "$rc"
