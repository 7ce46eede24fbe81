#!/usr/bin/env bash
# Packets/s forwarded veth -> switch -> veth, warm cache, one run, same traffic:
#   flowpath (SwDatapath; rx ring + tx ring), the same with plain send() for tx,
#   the same with recvmsg rx + send() tx (the no-mmap baseline),
#   flowpath ports only (rings + runner, cross-connect: the I/O ceiling),
#   Open vSwitch userspace datapath (datapath_type=netdev), Linux bridge,
#   and the generator straight into the receiver (its ceiling).
#
#   bench/swpath_forward.sh [SECONDS] [ROUNDS]   (root; default 5 s per row, 3 rounds)
#
# All rows run once per round, interleaved, so a load change on the machine
# hits every row alike; the table shows the median over rounds (min..max),
# and the load average before and after.
#
# Topology (fresh namespaces, removed on exit):
#   ns G: vg ==veth== s1 [ns S: the switch under test] s2 ==veth== vk: ns K
# The generator (bench/swpath_fwd.py gen, PACKET_TX_RING, pinned to CPU 0)
# blasts 60-byte UDP frames at vk's MAC for SECONDS; the rate is K's
# rx_packets delta (link counter, after a 0.5 s settle) / generator seconds.
# The switch under test is pinned to CPU 1 (flowpath's runner, ovs-vswitchd).
# OVS: installed with apt if absent; ovsdb-server and ovs-vswitchd started by
# hand in a private run dir (no systemd, no kernel module), killed on exit.
set -euo pipefail

SECS=${1:-5}
ROUNDS=${2:-3}
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-/tmp/venv-po/bin/python}
[ -x "$PY" ] || PY=python3
TAG=fpb$$
G=$TAG-g; S=$TAG-s; K=$TAG-k
RUN=$(mktemp -d /tmp/fp-ovs.XXXXXX)
export OVS_RUNDIR=$RUN OVS_DBDIR=$RUN OVS_LOGDIR=$RUN OVS_SYSCONFDIR=$RUN
VSCTL="ovs-vsctl --db=unix:$RUN/db.sock --timeout=10"

[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }

cleanup() {
    for pf in "$RUN/ovs-vswitchd.pid" "$RUN/ovsdb-server.pid"; do
        [ -f "$pf" ] && kill "$(cat "$pf")" 2>/dev/null || true
    done
    sleep 0.3
    for ns in "$G" "$S" "$K"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT

if ! command -v ovs-vswitchd >/dev/null; then
    echo "# installing openvswitch-switch (daemons are not started by the package here)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openvswitch-switch >/dev/null
fi

for ns in "$G" "$S" "$K"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$G" link add vg type veth peer name s1 netns "$S"
ip -n "$K" link add vk type veth peer name s2 netns "$S"
for pair in "$G vg" "$S s1" "$S s2" "$K vk"; do
    set -- $pair
    ip netns exec "$1" sh -c "echo 1 > /proc/sys/net/ipv6/conf/$2/disable_ipv6"
    ip -n "$1" link set "$2" up
done
ip -n "$K" addr add 10.88.0.2/24 dev vk   # the stream goes to 10.88.0.99: counted, dropped
KMAC=$(ip -n "$K" -j link show vk | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')

rx_packets() {
    ip -n "$K" -s -j link show vk | "$PY" -c \
        'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'
}

gen() {  # gen SECONDS -> prints "sent=N seconds=T"
    taskset -c 0 "$PY" "$HERE/swpath_fwd.py" gen --netns "$G" --dev vg --dst-mac "$KMAC" \
        --seconds "$1"
}

# measure NAME: one warm-up second, then SECS seconds counted at the receiver
declare -A RATES
measure() {
    gen 1 >/dev/null
    sleep 0.5
    local r0 r1 out sent secs rate
    r0=$(rx_packets)
    out=$(gen "$SECS")
    sleep 0.5
    r1=$(rx_packets)
    sent=${out#sent=}; sent=${sent%% *}
    secs=${out##*seconds=}
    rate=$("$PY" -c "print(round(($r1 - $r0) / $secs))")
    RATES[$1]="${RATES[$1]:-} $rate"
    echo "# round $ROUND $1: received $((r1 - r0)) of $sent in ${secs}s = $rate pps" >&2
}

flowpath() {  # flowpath NAME MODE RX TX
    local secs log pid
    secs=$("$PY" -c "print($SECS + 4)")
    log=$RUN/fwd-$1.log
    taskset -c 1 "$PY" "$HERE/swpath_fwd.py" fwd --netns "$S" --mode "$2" --rx "$3" --tx "$4" \
        --seconds "$secs" >"$log" 2>&1 &
    pid=$!
    sleep 1.5   # import + port setup
    measure "$1"
    wait "$pid" || { cat "$log" >&2; }
    grep -h forwarded "$log" | sed "s/^/# round $ROUND $1: /" >&2 || true
}

direct() {  # the generator straight into K: its ceiling
    ip -n "$G" link add vd type veth peer name kd netns "$K"
    ip netns exec "$K" sh -c "echo 1 > /proc/sys/net/ipv6/conf/kd/disable_ipv6"
    ip -n "$G" link set vd up; ip -n "$K" link set kd up
    local kd r0 r1 out
    kd=$(ip -n "$K" -j link show kd | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
    r0=$(ip -n "$K" -s -j link show kd | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')
    out=$(taskset -c 0 "$PY" "$HERE/swpath_fwd.py" gen --netns "$G" --dev vd --dst-mac "$kd" --seconds "$SECS")
    sleep 0.5
    r1=$(ip -n "$K" -s -j link show kd | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')
    RATES[direct]="${RATES[direct]:-} $("$PY" -c "print(round(($r1 - $r0) / ${out##*seconds=}))")"
    ip -n "$G" link del vd
}

ovs_row() {
    $VSCTL add-br br0 -- set bridge br0 datapath_type=netdev \
        -- add-port br0 s1 -- set interface s1 ofport_request=1 \
        -- add-port br0 s2 -- set interface s2 ofport_request=2
    ovs-ofctl del-flows br0
    ovs-ofctl add-flow br0 in_port=1,actions=output:2
    ovs-ofctl add-flow br0 in_port=2,actions=output:1
    measure ovs
    ovs-appctl --target="$RUN/ovs-vswitchd.ctl" dpctl/dump-flows 2>/dev/null \
        | sed "s/^/# round $ROUND ovs flow: /" >&2 || true
    $VSCTL del-br br0
}

bridge_row() {
    ip -n "$S" link add br0 type bridge
    ip -n "$S" link set s1 master br0; ip -n "$S" link set s2 master br0
    ip -n "$S" link set br0 up
    measure bridge
    ip -n "$S" link del br0
}

# --- Open vSwitch: private run dir, no systemd, no kernel module -----------------------------
ovsdb-tool create "$RUN/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-server "$RUN/conf.db" --remote="punix:$RUN/db.sock" --pidfile="$RUN/ovsdb-server.pid" \
    --unixctl="$RUN/ovsdb-server.ctl" --log-file="$RUN/ovsdb-server.log" --detach
$VSCTL --no-wait init
ip netns exec "$S" taskset -c 1 ovs-vswitchd "unix:$RUN/db.sock" \
    --pidfile="$RUN/ovs-vswitchd.pid" --unixctl="$RUN/ovs-vswitchd.ctl" \
    --log-file="$RUN/ovs-vswitchd.log" --detach
OVSVER=$(ovs-vswitchd --version | head -1 | awk '{print $NF}')

HAVE_SWDP=0
"$PY" -c "import sys; sys.path.insert(0, '$REPO'); import swpath.datapath" 2>/dev/null && HAVE_SWDP=1
ROWS="flowpath flowpath-txsend flowpath-recvmsg-send ports-only ovs bridge"
for ROUND in $(seq 1 "$ROUNDS"); do
    if [ "$HAVE_SWDP" = 1 ]; then
        flowpath flowpath swdp ring ring
        flowpath flowpath-txsend swdp ring send
        flowpath flowpath-recvmsg-send swdp recvmsg send
    fi
    flowpath ports-only ports ring ring
    ovs_row
    bridge_row
    direct
done

# --- table: median (min..max) over rounds ---------------------------------------------------------
echo
echo "kernel $(uname -r), $(nproc) CPUs, $("$PY" --version), OVS $OVSVER, ${SECS}s x $ROUNDS rounds, 60-byte UDP"
echo "load average before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
OVSMED=$("$PY" -c "import statistics, sys; print(statistics.median(map(int, sys.argv[1].split())))" "${RATES[ovs]}")
printf "%-24s %12s %22s %8s\n" "path" "median pps" "min..max" "vs OVS"
for k in $ROWS direct; do
    [ -n "${RATES[$k]:-}" ] || continue
    "$PY" - "$k" "${RATES[$k]}" "$OVSMED" <<'PYEOF'
import statistics, sys
name, vals, ovs = sys.argv[1], [int(x) for x in sys.argv[2].split()], float(sys.argv[3])
label = "generator direct" if name == "direct" else name
ratio = "" if name == "direct" else f"{statistics.median(vals) / max(ovs, 1):.2f}x"
print(f"{label:<24} {round(statistics.median(vals)):>12} {f'{min(vals)}..{max(vals)}':>22} {ratio:>8}")
PYEOF
done
