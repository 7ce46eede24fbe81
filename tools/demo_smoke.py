#!/usr/bin/env python3
"""`make demo`: the kernel smoke scenario, narrated.

Runs as root on a kernel with cls_flower, act_* and netdevsim (inside the
virtme-ng VM started by tools/kernel_tier.py --mode demo).  Shows:

1. a netdevsim eswitch in switchdev mode and its VF representors;
2. a skip_hw flower filter forwarding real UDP packets between namespaces,
   with its counter moving;
3. the kernel's refusal of a skip_sw flower filter on a representor.

Everything happens in fresh namespaces that are removed at the end.  A later
issue grows this into the flowpath daemon demo.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.kernel.netns import (  # noqa: E402
    Netns,
    NetdevsimDevice,
    create_netdevsim,
    create_netns,
    create_veth,
    delete_netdevsim,
    delete_netns,
)


def say(text: str = "") -> None:
    print(text, flush=True)


def show(ns: Netns, *argv: str) -> str:
    say(f"  $ {' '.join(argv)}        # in netns {ns.name}")
    proc = ns.run(*argv, check=False)
    out = (proc.stdout + proc.stderr).rstrip()
    say(textwrap.indent(out, "    ") if out else "    (no output)")
    return out


def packets(ns: Netns, dev: str) -> int:
    return sum(int(a["stats"]["packets"])
               for f in ns.tc_filters(dev) for a in f["options"].get("actions", []))


def main() -> int:
    namespaces: list[Netns] = []
    devices: list[NetdevsimDevice] = []

    def netns(prefix: str) -> Netns:
        ns = create_netns(prefix)
        namespaces.append(ns)
        return ns

    try:
        say("== 1. netdevsim eswitch in switchdev mode ==")
        dev = create_netdevsim(netns("demo-nsim"), num_vfs=2)
        devices.append(dev)
        show(dev.ns, "devlink", "dev", "eswitch", "show", dev.devlink_handle)
        show(dev.ns, "devlink", "port", "show")
        for port_name, ifname in sorted(dev.representors.items()):
            link = dev.ns.link(ifname)
            say(f"  representor {ifname}: phys_port_name={link['phys_port_name']} "
                f"phys_switch_id={link['phys_switch_id']}")

        say("\n== 2. flower skip_hw forwarding between namespaces ==")
        ns_a, ns_m, ns_b = netns("demo-a"), netns("demo-m"), netns("demo-b")
        create_veth(ns_a, "va0", ns_m, "ma0", addr_a="10.77.0.1/24")
        right = create_veth(ns_m, "mb0", ns_b, "vb0", addr_b="10.77.0.2/24")
        ns_a.ip("neigh", "replace", "10.77.0.2", "lladdr", right.mac_b, "dev", "va0", "nud", "permanent")
        ns_m.tc("qdisc", "add", "dev", "ma0", "ingress")
        ns_m.tc("filter", "add", "dev", "ma0", "ingress", "protocol", "ip", "prio", "10", "flower",
                "skip_hw", "dst_ip", "10.77.0.2", "ip_proto", "udp", "dst_port", "5555",
                "action", "mirred", "egress", "redirect", "dev", "mb0")
        show(ns_m, "tc", "filter", "show", "dev", "ma0", "ingress")
        before = packets(ns_m, "ma0")
        count = 10
        with ns_b.socket() as rx, ns_a.socket() as tx:
            rx.bind(("10.77.0.2", 5555))
            rx.settimeout(5)
            for _ in range(count):
                tx.sendto(b"demo", ("10.77.0.2", 5555))
            got = 0
            try:
                while got < count:
                    rx.recv(2048)
                    got += 1
            except TimeoutError:
                pass
        out = str(got)
        after = packets(ns_m, "ma0")
        say(f"  sent {count} UDP packets from {ns_a.name}, received {out.strip()} in {ns_b.name}; "
            f"filter counter {before} -> {after}")
        stats = ns_m.tc_filters("ma0")[0]["options"]
        say("  " + json.dumps({k: stats[k] for k in ("keys", "skip_hw", "not_in_hw") if k in stats}))

        say("\n== 3. skip_sw flower on a netdevsim representor ==")
        rep = dev.representors["pf0vf0"]
        dev.ns.tc("qdisc", "add", "dev", rep, "ingress")
        refusal = show(dev.ns, "tc", "filter", "add", "dev", rep, "ingress", "protocol", "ip",
                       "prio", "1", "flower", "skip_sw", "ip_proto", "udp", "action", "drop")
        dev.ns.tc("filter", "add", "dev", rep, "ingress", "protocol", "ip", "prio", "2",
                  "flower", "ip_proto", "udp", "action", "drop")
        show(dev.ns, "tc", "filter", "show", "dev", rep, "ingress")
        ok = after - before == count and out.strip() == str(count) and "only offload of BPF" in refusal
        say(f"\ndemo: {'all as expected' if ok else 'UNEXPECTED RESULT'}")
        return 0 if ok else 1
    finally:
        for dev in devices:
            delete_netdevsim(dev)
        for ns in namespaces:
            delete_netns(ns)


if __name__ == "__main__":
    sys.exit(main())
