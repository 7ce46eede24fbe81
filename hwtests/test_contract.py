"""Offload contract on real hardware (placeholder; grows with offload/).

Today: the device is a switchdev port, and a skip_sw flower filter is either
placed in hardware (``in_hw``) or refused with the driver's extack text, as
FLOWPATH_HW_EXPECT says.  Checked with the tc/ip CLIs.
"""

from __future__ import annotations

import json
import subprocess

from conftest import HwTarget

PRIO = "49152"  # private prio for this test; deleted by kind+prio+handle


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_device_is_a_switchdev_port(hw_target: HwTarget) -> None:
    proc = _run(hw_target.argv("ip", "-d", "-j", "link", "show", "dev", hw_target.dev))
    assert proc.returncode == 0, proc.stderr
    [link] = json.loads(proc.stdout)
    assert link.get("phys_switch_id"), f"{hw_target.dev} has no phys_switch_id: not on a switchdev eswitch"
    assert link.get("phys_port_name"), f"{hw_target.dev} has no phys_port_name"


def test_skip_sw_flower_offloaded_or_refused_as_expected(hw_target: HwTarget) -> None:
    dev = hw_target.dev
    qdiscs = json.loads(_run(hw_target.argv("tc", "-j", "qdisc", "show", "dev", dev)).stdout or "[]")
    had_ingress = any(q.get("kind") in ("ingress", "clsact") for q in qdiscs)
    if not had_ingress:
        assert _run(hw_target.argv("tc", "qdisc", "add", "dev", dev, "ingress")).returncode == 0
    try:
        add = _run(hw_target.argv("tc", "filter", "add", "dev", dev, "ingress", "protocol", "ip",
                                  "prio", PRIO, "handle", "1", "flower", "skip_sw",
                                  "dst_ip", "192.0.2.1", "ip_proto", "udp", "dst_port", "9",
                                  "action", "drop"))
        if hw_target.expect == "refused":
            assert add.returncode != 0, "skip_sw flower was accepted, expected a refusal"
            assert add.stderr.strip().startswith("Error:"), add.stderr
        else:
            assert add.returncode == 0, add.stderr
            shown = json.loads(_run(hw_target.argv("tc", "-j", "filter", "show", "dev", dev, "ingress",
                                                   "prio", PRIO)).stdout or "[]")
            opts = [f["options"] for f in shown if "options" in f]
            assert opts and opts[0].get("in_hw") is True, shown
    finally:
        _run(hw_target.argv("tc", "filter", "del", "dev", dev, "ingress", "protocol", "ip",
                            "prio", PRIO, "handle", "1", "flower"))
        if not had_ingress:
            _run(hw_target.argv("tc", "qdisc", "del", "dev", dev, "ingress"))


def test_flowpath_places_a_megaflow_on_the_eswitch_or_says_why(hw_target: HwTarget) -> None:
    """OffloadDatapath with policy skip_sw: on a NIC the flow is on tc and in
    hardware; on netdevsim it lands in software carrying the driver's words."""
    import os

    from dpif.actions import Output
    from dpif.flow import FlowSpec, Ufid
    from dpif.match import Match
    from offload.datapath import OffloadDatapath, Policy, eswitch_check
    from offload.switchdev import discover
    from offload.tc_netlink import TcNetlink
    from swpath.datapath import SwDatapath

    out_dev = os.environ.get("FLOWPATH_HW_OUT", hw_target.dev)
    topo = discover(netns=hw_target.netns)
    dp = OffloadDatapath(TcNetlink(netns=hw_target.netns), SwDatapath(), policy=Policy.SKIP_SW,
                         check=eswitch_check(topo))
    dp.add_port(1, hw_target.dev)
    if out_dev != hw_target.dev:
        dp.add_port(2, out_dev)
    out = 2 if out_dev != hw_target.dev else 1
    m = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800,
                    ipv4_dst=0xC0000201, ip_proto=17, ip_frag=(0, 3), tp_dst=9)
    try:
        flow = dp.put(FlowSpec(m, (Output(out),), Ufid.random()))
        if hw_target.expect == "refused":
            assert flow.placement.dp == "sw", flow.placement
            assert flow.placement.reason and "tc refused" in flow.placement.reason
        else:
            assert flow.placement.dp == "tc" and flow.placement.offloaded, flow.placement
            dumped = dp.get(flow.ufid)
            assert dumped.placement.offloaded
    finally:
        dp.cleanup()
        dp.tc.close()
