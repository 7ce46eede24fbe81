"""Kernel tier: the offload-first datapath on real tc flower (veth, netdevsim).

* the Datapath contract, with flows really on tc (policy skip_hw on veth);
* netdevsim in switchdev mode: skip_sw is refused by the driver and the flow
  lands in software carrying the kernel's own words;
* real packets: N sent through a tc flow arrive N times, and its counters say N;
* restart: a new datapath adopts the filters with their counters; cleanup
  removes exactly ours and leaves a foreign filter alone.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable

import pytest

from dpif.actions import Output, Recirc
from dpif.datapath import Datapath
from dpif.errors import OffloadError
from dpif.flow import FlowSpec, Ufid
from dpif.match import Match
from offload.datapath import OffloadDatapath, Policy, eswitch_check
from offload.switchdev import discover
from offload.tc_netlink import TcNetlink
from swpath.datapath import SwDatapath
from tests.dpif.datapath_contract import DatapathContract, DatapathFactory
from tests.kernel.netns import Netns, VethPair

pytestmark = pytest.mark.kernel


def make_offload(ns: Netns, ports: dict[int, str], policy: Policy,
                 flow_limit: int = 200_000, check: object = None) -> OffloadDatapath:
    tc = TcNetlink(netns=ns.name)
    dp = OffloadDatapath(tc, SwDatapath(flow_limit=flow_limit), policy=policy,
                         flow_limit=flow_limit,
                         check=eswitch_check(check) if check is not None else None)
    for port_no, ifname in ports.items():
        dp.add_port(port_no, ifname)
    return dp


class TestOffloadContract(DatapathContract):
    placements = ("tc", "sw")
    model_examples = 12  # every step is a netlink round trip in a TCG VM

    @pytest.fixture
    def make_dp(self, netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
                tc_flower: None) -> DatapathFactory:
        ns = netns_factory("fpdp")
        veth_factory(ns, "pa", ns, "pb")

        def make(flow_limit: int) -> Datapath:
            dp = make_offload(ns, {1: "pa", 2: "pb"}, Policy.SKIP_HW, flow_limit)
            return dp
        return make

    def test_flows_really_are_on_tc(self, dp: Datapath) -> None:
        assert isinstance(dp, OffloadDatapath)
        dp.put(FlowSpec(self.match_for(1), self.actions(), Ufid(7)))
        flow = dp.get(Ufid(7))
        assert flow.placement.dp == "tc" and not flow.placement.offloaded
        assert len(dp.tc.dump(dp.ports[1].ifindex)) == 1


UDP_MATCH = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800,
                        ipv4_dst=0x0A090002, ip_proto=17, ip_frag=(0, 3))


def send_udp(ns: Netns, dst: str, count: int) -> None:
    code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for i in range({count}): s.sendto(b'x'*64, ('{dst}', 9999))\n")
    ns.run(sys.executable, "-c", code)


def rx_packets(ns: Netns, dev: str) -> int:
    return int(ns.json("ip", "-s", "-j", "link", "show", dev)[0]["stats64"]["rx"]["packets"])


@pytest.fixture
def rig(netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
        tc_flower: None) -> tuple[Netns, Netns, Netns]:
    """h1 (10.9.0.1) -- [sw: p1 | p2] -- h2 (10.9.0.2); flowpath's ports are p1, p2."""
    h1, sw, h2 = netns_factory("fph1"), netns_factory("fpsw"), netns_factory("fph2")
    veth_factory(h1, "h1e", sw, "p1", addr_a="10.9.0.1/24")
    pair = veth_factory(sw, "p2", h2, "h2e", addr_b="10.9.0.2/24")
    h1.ip("neigh", "add", "10.9.0.2", "lladdr", pair.mac_b, "dev", "h1e")
    return h1, sw, h2


@pytest.mark.parametrize("policy", [Policy.SKIP_HW, Policy.NONE])
def test_packets_through_a_tc_flow_are_counted_once(rig: tuple[Netns, Netns, Netns],
                                                    policy: Policy) -> None:
    h1, sw, h2 = rig
    dp = make_offload(sw, {1: "p1", 2: "p2"}, policy)
    placed = dp.put(FlowSpec(UDP_MATCH, (Output(2),), Ufid(42)))
    assert placed.placement.dp == "tc", placed.placement
    before = rx_packets(h2, "h2e")
    send_udp(h1, "10.9.0.2", 25)
    assert rx_packets(h2, "h2e") - before == 25
    flow = dp.get(Ufid(42))
    assert flow.stats.packets == 25
    assert flow.stats.bytes == 25 * (14 + 20 + 8 + 64)  # whole frames, as swpath counts
    assert flow.stats.used is not None
    [dumped] = list(dp.dump())
    assert dumped.stats.packets == 25 and dumped.placement.dp == "tc"
    assert dp.delete(Ufid(42)).packets == 25
    assert sw.tc_filters("p1") == [] or all(
        f.get("options", {}).get("keys") is None for f in sw.tc_filters("p1"))


def test_dump_counts_by_terse_dump_and_bounds_lastused(rig: tuple[Netns, Netns, Netns]
                                                      ) -> None:
    """dump reads the counters by terse dump (no lastuse in it): exact counts
    after real traffic; used is the time of the first dump that saw them grow
    (an upper bound), unchanged while they do not; get reads the exact
    lastuse, which the next dump keeps."""
    h1, sw, h2 = rig
    dp = make_offload(sw, {1: "p1", 2: "p2"}, Policy.SKIP_HW)
    # the miss channel's kind of catch-all: matchall has no terse dump
    sw.tc("filter", "add", "dev", "p1", "ingress", "prio", "65535", "protocol", "all",
          "matchall", "action", "drop")
    dp.put(FlowSpec(UDP_MATCH, (Output(2),), Ufid(42)))
    [f0] = list(dp.dump())
    assert f0.stats.packets == 0 and f0.stats.used is None
    t0 = time.monotonic()
    send_udp(h1, "10.9.0.2", 10)
    [f1] = list(dp.dump())
    t1 = time.monotonic()
    assert (f1.stats.packets, f1.stats.bytes) == (10, 10 * (14 + 20 + 8 + 64))
    assert f1.stats.used is not None and t0 <= f1.stats.used <= t1
    time.sleep(0.3)
    [f2] = list(dp.dump())
    assert f2.stats == f1.stats  # nothing new: same counters, same used
    t2 = time.monotonic()
    send_udp(h1, "10.9.0.2", 5)
    [f3] = list(dp.dump())
    assert f3.stats.packets == 15 and f3.stats.used is not None
    assert t2 <= f3.stats.used <= time.monotonic()
    exact = dp.get(Ufid(42)).stats.used  # from the action's tcf_t (10 ms ticks)
    assert exact is not None and t2 - 0.05 <= exact <= f3.stats.used + 0.05
    [f4] = list(dp.dump())
    assert f4.stats.used == exact and f4.stats.packets == 15


def test_dump_after_a_u32_catch_all_reads_per_priority(rig: tuple[Netns, Netns, Netns]
                                                       ) -> None:
    """A u32 filter stops a terse dump (EMSGSIZE); dump then reads each of its
    priorities alone, and the counters are still right."""
    h1, sw, h2 = rig
    dp = make_offload(sw, {1: "p1", 2: "p2"}, Policy.SKIP_HW)
    dp.put(FlowSpec(UDP_MATCH, (Output(2),), Ufid(43)))
    sw.tc("filter", "add", "dev", "p1", "ingress", "prio", "65535", "protocol", "all",
          "u32", "match", "u32", "0", "0", "action", "drop")
    send_udp(h1, "10.9.0.2", 7)
    with pytest.raises(OffloadError) as err:
        dp.tc.dump_stats(dp.ports[1].ifindex)
    assert err.value.errno == errno.EMSGSIZE
    [flow] = list(dp.dump())
    assert flow.ufid == Ufid(43) and flow.stats.packets == 7 and flow.placement.dp == "tc"


def test_modify_keeps_counting_upwards(rig: tuple[Netns, Netns, Netns]) -> None:
    h1, sw, h2 = rig
    dp = make_offload(sw, {1: "p1", 2: "p2", 3: "p1"}, Policy.SKIP_HW)
    dp.put(FlowSpec(UDP_MATCH, (Output(2),), Ufid(5)))
    send_udp(h1, "10.9.0.2", 10)
    dp.modify(Ufid(5), ())  # now drop: replace starts fresh tc counters
    before = rx_packets(h2, "h2e")
    send_udp(h1, "10.9.0.2", 7)
    assert rx_packets(h2, "h2e") == before  # dropped by tc
    assert dp.get(Ufid(5)).stats.packets == 17


def test_counts_go_on_when_modify_moves_a_flow_between_tc_and_software(
        rig: tuple[Netns, Netns, Netns]) -> None:
    """tc -> software (the new actions cannot go on tc) and back: the flow's
    totals never go backwards, in get, dump and delete."""
    h1, sw, h2 = rig
    dp = make_offload(sw, {1: "p1", 2: "p2"}, Policy.SKIP_HW)
    dp.put(FlowSpec(UDP_MATCH, (Output(2),), Ufid(6)))
    send_udp(h1, "10.9.0.2", 10)
    moved = dp.modify(Ufid(6), (Recirc(1),))  # recirculation stays in software
    assert moved.placement.dp == "sw" and moved.stats.packets == 10
    assert dp.get(Ufid(6)).stats.packets == 10
    assert [f.stats.packets for f in dp.dump()] == [10]
    back = dp.modify(Ufid(6), (Output(2),))  # software -> tc again
    assert back.placement.dp == "tc" and back.stats.packets == 10
    send_udp(h1, "10.9.0.2", 5)
    assert dp.get(Ufid(6)).stats.packets == 15
    dp.modify(Ufid(6), (Recirc(1),))
    assert dp.delete(Ufid(6)).packets == 15
    zeroed = dp.put(FlowSpec(UDP_MATCH, (Recirc(1),), Ufid(6)))  # a new flow starts at 0
    assert zeroed.placement.dp == "sw" and dp.get(Ufid(6)).stats.packets == 0


def test_restart_adopts_with_counters_and_cleanup_spares_foreign(
        rig: tuple[Netns, Netns, Netns]) -> None:
    h1, sw, h2 = rig
    first = make_offload(sw, {1: "p1", 2: "p2"}, Policy.SKIP_HW)
    first.put(FlowSpec(UDP_MATCH, (Output(2),), Ufid(99)))
    send_udp(h1, "10.9.0.2", 12)
    # a filter of somebody else's on the same port
    sw.tc("filter", "add", "dev", "p1", "ingress", "prio", "100", "protocol", "ip",
          "flower", "ip_proto", "tcp", "action", "drop")
    first.tc.close()  # "crash": nothing cleaned up

    before = rx_packets(h2, "h2e")
    send_udp(h1, "10.9.0.2", 3)  # traffic keeps flowing with no flowpath running
    assert rx_packets(h2, "h2e") - before == 3

    second = make_offload(sw, {1: "p1", 2: "p2"}, Policy.SKIP_HW)
    assert second.adopt() == 1
    flow = second.get(Ufid(99))
    assert flow.match == UDP_MATCH and flow.actions == (Output(2),)
    assert flow.stats.packets == 15
    assert second.cleanup() == 1
    left = [f for f in sw.tc_filters("p1") if "options" in f]
    assert len(left) == 1 and left[0]["pref"] == 100  # the foreign filter stays


def test_skip_sw_on_netdevsim_is_refused_and_lands_in_software(
        netdevsim_factory: Callable[..., object], tc_flower: None) -> None:
    nsim = netdevsim_factory(2)
    ns = nsim.ns  # type: ignore[attr-defined]
    reps = nsim.representors  # type: ignore[attr-defined]
    for dev in reps.values():
        ns.ip("link", "set", dev, "up")
    topo = discover(netns=ns.name)
    dp = make_offload(ns, {1: reps["pf0vf0"], 2: reps["pf0vf1"]}, Policy.SKIP_SW, check=topo)
    m = Match.build(in_port=1, eth_type=0x0800, ipv4_dst=0x0A000001)
    flow = dp.put(FlowSpec(m, (Output(2),), Ufid(3)))
    assert flow.placement.dp == "sw"
    assert "netdevsim: only offload of BPF classifiers supported" in (flow.placement.reason or "")
    assert dp.get(Ufid(3)).placement.reason == flow.placement.reason
    assert [f.ufid for f in dp.dump()] == [Ufid(3)]
    assert dp.tc.dump(dp.ports[1].ifindex) == []


def test_output_off_the_eswitch_stays_in_software(
        netdevsim_factory: Callable[..., object], veth_factory: Callable[..., VethPair],
        tc_flower: None) -> None:
    nsim = netdevsim_factory(2)
    ns = nsim.ns  # type: ignore[attr-defined]
    veth_factory(ns, "vx0", ns, "vx1")
    reps = nsim.representors  # type: ignore[attr-defined]
    topo = discover(netns=ns.name)
    dp = make_offload(ns, {1: reps["pf0vf0"], 5: "vx0"}, Policy.SKIP_SW, check=topo)
    flow = dp.put(FlowSpec(Match.build(in_port=1, eth_type=0x0800), (Output(5),), Ufid(4)))
    assert flow.placement.dp == "sw"
    assert "vx0" in (flow.placement.reason or "") and "eswitch" in (flow.placement.reason or "")


def test_every_example_megaflow_round_trips_through_the_kernel(
        netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
        tc_flower: None) -> None:
    """Translate, install, dump from the kernel, decode: the megaflow we put."""
    from dpif.flowtext import parse_flow
    from offload.tc_flower import from_flower, ufid_of
    from tests.offload.test_tc_flower import EXAMPLES
    ns = netns_factory("fprt")
    veth_factory(ns, "ra", ns, "rb")
    veth_factory(ns, "rc", ns, "rd")
    dp = make_offload(ns, {1: "ra", 2: "rb", 3: "rc"}, Policy.SKIP_HW)
    by_ifindex = {p.ifindex: p for p in dp.ports.values()}
    placed = 0
    for i, line in enumerate(EXAMPLES):
        ft = parse_flow(line)
        m = ft.match if ft.match.has("vlan_tpid") or not ft.match.has("eth_type") \
            else ft.match.with_field("vlan_tpid", 0)
        m = m.with_field("recirc_id", 0)  # recirculation stays in software
        acts = tuple(a for a in ft.actions if type(a).__name__ != "Recirc")
        flow = dp.put(FlowSpec(m, acts, Ufid(1000 + i)))
        if flow.placement.dp != "tc":
            dp.delete(Ufid(1000 + i))
            continue
        placed += 1
        dumped = [d for ifx in by_ifindex for d in dp.tc.dump(ifx)
                  if ufid_of(d.filter) == Ufid(1000 + i)]
        assert len(dumped) == 1, line
        back, back_acts = from_flower(dumped[0].filter, by_ifindex)
        assert back == m, line
        assert back_acts == acts, line
        dp.delete(Ufid(1000 + i))  # examples may overlap each other
    assert placed >= len(EXAMPLES) - 2  # all but what recirc/tunnel devices forbid
