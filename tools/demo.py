#!/usr/bin/env python3
"""`make demo`: flowpath on a real kernel, narrated.

Runs as root on a kernel with cls_flower, act_* and netdevsim (inside the
virtme-ng VM started by ``tools/kernel_tier.py --mode demo``).  In fresh
namespaces, removed at the end:

1. h1 -- [flowpath switch: p1, p2] -- h2 with ovs-ofctl rules: ping and a UDP
   burst go through; the first packet of each flow is an upcall, tc flower
   forwards the rest; ``dump-flows`` shows where each flow lives.
2. flowpath restarts without cleanup: offloaded traffic keeps flowing, the
   new instance adopts the filters with their counters; cleanup removes
   exactly flowpath's filters.
3. a netdevsim eswitch in switchdev mode: its representors, and a flow with
   policy skip_sw that the driver refuses -- it lands in software with the
   kernel's own reason.
4. "why is my flow not offloaded?" for a flow flower cannot express.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpif.actions import Output  # noqa: E402
from dpif.flow import FlowSpec, Ufid  # noqa: E402
from dpif.flowtext import format_dpflow, parse_flow  # noqa: E402
from dpif.match import Match  # noqa: E402
from offload.datapath import OffloadDatapath, Policy, eswitch_check  # noqa: E402
from offload.switchdev import discover  # noqa: E402
from offload.tc_flower import PortInfo, to_flower  # noqa: E402
from offload.tc_netlink import TcNetlink  # noqa: E402
from ofproto.normal import PortConfig  # noqa: E402
from ofproto.switch import Switch, SwitchPort  # noqa: E402
from swpath.datapath import SwDatapath  # noqa: E402
from tests.kernel.netns import (  # noqa: E402
    create_netdevsim, create_netns, create_veth, delete_netdevsim, delete_netns,
)

RULES = ["priority=10,in_port=1,actions=output:2", "priority=10,in_port=2,actions=output:1"]
RECEIVER = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0',9999)); s.settimeout(3); n=0\nprint('ready',flush=True)\n"
            "try:\n  while True: s.recv(2048); n+=1\nexcept socket.timeout: pass\nprint(n)\n")


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def burst(h1, h2, n: int) -> int:  # type: ignore[no-untyped-def]
    rx = h2.popen(sys.executable, "-c", RECEIVER)
    rx.stdout.readline()
    h1.run(sys.executable, "-c", "import socket,time\ns=socket.socket(socket.AF_INET,"
           f"socket.SOCK_DGRAM)\nfor i in range({n}):\n s.sendto(b'y'*100,('10.7.0.2',9999))\n"
           " time.sleep(0.002)\n")
    out, _ = rx.communicate(timeout=30)
    return int(out.strip())


def dump(sw: Switch) -> None:
    now = time.monotonic()
    for f in sorted(sw.dp.dump(), key=lambda f: (f.placement.dp, f.match.value("in_port"))):
        print("  " + format_dpflow(f, now))


def main() -> int:
    made = []
    ok = True
    try:
        h1, swns, h2 = (create_netns(p) for p in ("dh1", "dsw", "dh2"))
        made += [h1, swns, h2]
        create_veth(h1, "h1e", swns, "p1", addr_a="10.7.0.1/24")
        create_veth(swns, "p2", h2, "h2e", addr_b="10.7.0.2/24")
        ports = [SwitchPort(PortConfig(1, "p1"), "p1"), SwitchPort(PortConfig(2, "p2"), "p2")]

        say("1. flowpath switch p1 <-> p2, policy skip_hw (veth has no NIC), rules:")
        sw = Switch("br0", ports, netns=swns.name, policy=Policy.SKIP_HW)
        sw.add_rules(RULES)
        for r in RULES:
            print("  " + r)
        sw.start()
        print(h1.run("ping", "-c", "3", "-i", "0.2", "10.7.0.2").stdout.strip().splitlines()[-2])
        got = burst(h1, h2, 100)
        print(f"  UDP: 100 sent, {got} received; upcalls: {sw.bridge.counters.get('upcall', 0)}")
        ok &= got == 100
        print("  flowpath dump-flows:")
        dump(sw)

        say("2. restart without cleanup: tc keeps forwarding, the next start adopts")
        sw.close()
        got = burst(h1, h2, 50)
        print(f"  flowpath down: UDP 50 sent, {got} received")
        ok &= got == 50
        sw = Switch("br0", ports, netns=swns.name, policy=Policy.SKIP_HW)
        sw.add_rules(RULES)
        print(f"  adopted {sw.adopted} tc flows, counters intact:")
        dump(sw)
        foreign = ["filter", "add", "dev", "p1", "ingress", "prio", "100", "protocol", "ip",
                   "flower", "ip_proto", "sctp", "action", "drop"]
        swns.tc(*foreign)
        removed = sw.dp.cleanup()
        sw.close()
        left = [f for f in swns.tc_filters("p1") if "options" in f]
        print(f"  cleanup removed {removed} flowpath filters; left on p1: "
              f"{[(f['pref'], f['kind']) for f in left]} (somebody else's)")
        ok &= len(left) == 1

        say("3. netdevsim eswitch in switchdev mode, policy skip_sw")
        nsim = create_netdevsim(create_netns("dnsim"), num_vfs=2)
        made.append(nsim)
        topo = discover(netns=nsim.ns.name)
        for es in topo.eswitches:
            print(f"  eswitch {es.name} mode={es.mode.value if es.mode else '?'} "
                  f"switch_id={es.switch_id}")
            for p in es.ports:
                print(f"    {p.netdev:12} {p.flavour.value:8} pf={p.pf} vf={p.vf}")
        reps = nsim.representors
        dp = OffloadDatapath(TcNetlink(netns=nsim.ns.name), SwDatapath(), policy=Policy.SKIP_SW,
                             check=eswitch_check(topo))
        dp.add_port(1, reps["pf0vf0"])
        dp.add_port(2, reps["pf0vf1"])
        flow = dp.put(FlowSpec(Match.build(in_port=1, eth_type=0x0800, ipv4_dst=0x0A000001,
                                           vlan_tpid=0), (Output(2),), Ufid.random()))
        print("  " + format_dpflow(flow, time.monotonic()))
        print(f"  why: {flow.placement.reason}")
        ok &= flow.placement.dp == "sw" and "netdevsim" in (flow.placement.reason or "")

        say("4. why is my flow not offloaded?")
        line = ("in_port(1),eth_type(0x86dd),ipv6(dst=2001:db8::1,label=0x12345,frag=no), "
                "actions:2")
        ft = parse_flow(line)
        r = to_flower(ft.match, ft.actions, Ufid(1), prio=1, handle=1, flags=0,
                      ports={1: PortInfo(1, 11, "rep0"), 2: PortInfo(2, 12, "rep1")})
        print(f"  {line}\n  -> {r}")
    finally:
        for m in reversed(made):
            if hasattr(m, "devlink_handle"):
                delete_netdevsim(m)
            else:
                delete_netns(m)
    print(f"\ndemo: {'all checks held' if ok else 'A CHECK FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
