"""Kernel tier: the whole path of a packet through real tc flower and veths.

h1 (10.7.0.1) -- p1 [switch netns: flowpath] p2 -- h2 (10.7.0.2)

The first packet of a flow misses tc, reaches flowpath through the miss
channel, is translated by the bridge's rules and goes out once in software;
the megaflow goes to tc, which forwards the rest.  Receivers count: N sent,
exactly N received, under each policy; the flow's tc counters plus what
software handled add up to N.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

import pytest

from dpif.actions import Output
from offload.datapath import Policy
from ofproto.normal import PortConfig
from ofproto.switch import Switch, SwitchPort
from tests.kernel.netns import Netns, VethPair

pytestmark = pytest.mark.kernel

RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); s.settimeout(float(sys.argv[2]))
n, want = 0, int(sys.argv[1])
print("ready", flush=True)
try:
    while n < want:
        s.recv(2048); n += 1
    s.settimeout(0.5)
    while True:
        s.recv(2048); n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""


def udp_burst(h1: Netns, h2: Netns, count: int) -> int:
    """Send ``count`` datagrams h1 -> h2; return how many h2 received."""
    rx = h2.popen(sys.executable, "-c", RECEIVER, str(count), "20")
    assert rx.stdout is not None
    assert rx.stdout.readline().strip() == "ready"
    code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for i in range({count}):\n  s.sendto(b'y'*100, ('10.7.0.2', 9999))\n"
            "  time.sleep(0.002)\n")
    h1.run(sys.executable, "-c", code)
    out, _ = rx.communicate(timeout=60)
    return int(out.strip())


@pytest.fixture
def rig(netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
        tc_flower: None) -> tuple[Netns, Netns, Netns]:
    h1, sw, h2 = netns_factory("fph1"), netns_factory("fpsw"), netns_factory("fph2")
    veth_factory(h1, "h1e", sw, "p1", addr_a="10.7.0.1/24")
    veth_factory(sw, "p2", h2, "h2e", addr_b="10.7.0.2/24")
    return h1, sw, h2


@pytest.fixture
def switch_factory(rig: tuple[Netns, Netns, Netns]) -> Iterator[Callable[..., Switch]]:
    made: list[Switch] = []

    def make(policy: Policy, rules: list[str]) -> Switch:
        s = Switch("br0", [SwitchPort(PortConfig(1, "p1"), "p1"),
                           SwitchPort(PortConfig(2, "p2"), "p2")],
                   netns=rig[1].name, policy=policy)
        made.append(s)
        s.add_rules(rules)
        s.start()
        return s
    yield make
    for s in made:
        s.close(cleanup=True)


@pytest.mark.parametrize("policy", [Policy.SKIP_HW, Policy.NONE])
def test_n_sent_n_received_tc_takes_over_after_first_upcall(
        rig: tuple[Netns, Netns, Netns], switch_factory: Callable[..., Switch],
        policy: Policy) -> None:
    h1, sw, h2 = rig
    s = switch_factory(policy, ["priority=10,in_port=1,actions=output:2",
                                "priority=10,in_port=2,actions=output:1"])
    h1.run("ping", "-c", "2", "-W", "5", "10.7.0.2")  # ARP + ICMP both ways work
    n = 40
    assert udp_burst(h1, h2, n) == n
    flows = list(s.dp.dump())
    on_tc = [f for f in flows if f.placement.dp == "tc"]
    assert on_tc, flows
    assert all(f.actions in ((Output(2),), (Output(1),)) for f in flows)
    # every packet h1 sent went either through tc or through one upcall
    from1 = sum(f.stats.packets for f in flows if f.match.value("in_port") == 1)
    handled_in_sw = s.bridge.counters.get("upcall", 0)
    assert from1 >= n - handled_in_sw
    tc_flow = max(on_tc, key=lambda f: f.stats.packets)
    assert tc_flow.stats.packets >= n - handled_in_sw - 2  # the burst rode on tc
    assert s.sw.counters.get("tx_no_port", 0) == 0


def test_rule_with_normal_learns_and_offloads(rig: tuple[Netns, Netns, Netns],
                                              switch_factory: Callable[..., Switch]) -> None:
    h1, sw, h2 = rig
    s = switch_factory(Policy.SKIP_HW, ["actions=normal"])
    h1.run("ping", "-c", "3", "-i", "0.2", "-W", "5", "10.7.0.2")
    assert udp_burst(h1, h2, 20) == 20
    flows = list(s.dp.dump())
    assert any(f.placement.dp == "tc" and f.stats.packets > 0 for f in flows), flows
    learned = {e.port for e in s.bridge.macs.entries()}
    assert learned == {1, 2}  # both hosts' MACs, on their ports


def test_restart_keeps_tc_flows_forwarding(rig: tuple[Netns, Netns, Netns],
                                           switch_factory: Callable[..., Switch]) -> None:
    h1, sw, h2 = rig
    first = switch_factory(Policy.SKIP_HW, ["priority=10,in_port=1,actions=output:2",
                                            "priority=10,in_port=2,actions=output:1"])
    h1.run("ping", "-c", "2", "-W", "5", "10.7.0.2")
    assert udp_burst(h1, h2, 10) == 10
    before = {f.ufid: f.stats.packets for f in first.dp.dump() if f.placement.dp == "tc"}
    first.close()  # no cleanup: filters stay
    assert udp_burst(h1, h2, 10) == 10  # offloaded flows forward with flowpath down
    second = switch_factory(Policy.SKIP_HW, ["priority=10,in_port=1,actions=output:2",
                                             "priority=10,in_port=2,actions=output:1"])
    assert second.adopted == len(before)
    after = {f.ufid: f.stats.packets for f in second.dp.dump() if f.placement.dp == "tc"}
    assert set(after) == set(before)
    assert sum(after.values()) >= sum(before.values()) + 10
    time.sleep(0.1)
