"""Kernel tier: ``OffloadDatapath.put_many`` gives each flow what ``put``
would give it -- on tc, in software with the kernel's refusal, or the
DatapathError ``put`` raises -- from one pipelined tc batch."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from dpif.actions import Output
from dpif.errors import DatapathError, FlowExists, FlowLimit
from dpif.flow import DpFlow, FlowSpec, Ufid
from dpif.match import Match
from offload import tc_nla as N
from offload.datapath import PRIO_MIN, OffloadDatapath, Policy
from offload.tc_values import FlowerFilter, Gact
from tests.kernel.netns import Netns, VethPair
from tests.offload.test_datapath_kernel import make_offload

pytestmark = pytest.mark.kernel


def spec(i: int, out_port: int = 2, ufid: int | None = None) -> FlowSpec:
    m = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ip_proto=17,
                    ipv4_dst=0x0A000000 + i, tp_dst=1000 + i, ip_frag=(0, 3))
    return FlowSpec(m, (Output(out_port),), Ufid(ufid if ufid is not None else 0x100 + i))


def test_put_many_matches_put(netns_factory: Callable[..., Netns],
                              veth_factory: Callable[..., VethPair], tc_flower: None) -> None:
    ns = netns_factory("fppm")
    veth_factory(ns, "pm0", ns, "pm1")
    dp = make_offload(ns, {1: "pm0", 2: "pm1"}, Policy.SKIP_HW, flow_limit=40)
    specs = [spec(i) for i in range(30)]
    specs[5] = spec(5, out_port=9)  # no such port: not offloadable -> software
    specs[7] = spec(3, ufid=0x999)  # overlaps flow 3: FlowExists, like put
    out = dp.put_many(specs + [spec(100 + i) for i in range(15)])  # 10 above the limit
    assert len(out) == 45
    assert isinstance(out[7], FlowExists)
    assert sum(isinstance(o, FlowLimit) for o in out) == 4  # 29 + 11 = 40 placed
    flows = {o.ufid: o for o in out if isinstance(o, DpFlow)}
    assert flows[Ufid(0x105)].placement.dp == "sw"
    on_tc = [u for u, f in flows.items() if f.placement.dp == "tc"]
    assert len(on_tc) == len(flows) - 1
    assert len(dp.tc.dump(dp.ports[1].ifindex)) == len(on_tc)
    assert {f.ufid for f in dp.dump()} == set(flows)
    dp.cleanup()


def _foreign(dp: OffloadDatapath, handle: int) -> FlowerFilter:
    """Another program's filter at our first prio with ``handle``: our add of
    that handle is refused (EEXIST, "Filter already exists")."""
    return FlowerFilter(dp.ports[1].ifindex, prio=PRIO_MIN, handle=handle, protocol=0x0800,
                        flags=N.TCA_CLS_FLAGS_SKIP_HW, actions=(Gact.drop(),),
                        keys={"TCA_FLOWER_KEY_ETH_TYPE": 0x0800, "TCA_FLOWER_KEY_IP_PROTO": 6,
                              "TCA_FLOWER_KEY_TCP_DST": handle})


def test_put_many_is_put_one_by_one(netns_factory: Callable[..., Netns],
                                              veth_factory: Callable[..., VethPair],
                                              tc_flower: None) -> None:
    """70 flows in tc batches of 8, with kernel refusals in the middle (two
    foreign filters hold handles 5 and 37): every flow gets what ``put``
    one by one gives it in another namespace -- the same DpFlow, placement
    and refusal text (the kernel's extack) -- the filters we hold are the
    ones ``put`` makes and exactly what the kernel dumps, and one template
    served the whole table."""
    specs = [spec(i) for i in range(70)]
    specs[20] = spec(20, out_port=9)  # no such port: not offloadable -> software
    got: dict[str, list[DpFlow | DatapathError]] = {}
    held: dict[str, dict[Ufid, FlowerFilter]] = {}
    for way in ("put", "put_many"):
        ns = netns_factory("fppp")
        veth_factory(ns, "pp0", ns, "pp1")
        dp = make_offload(ns, {1: "pp0", 2: "pp1"}, Policy.SKIP_HW)
        dp.tc.batch_size = 8  # (read when the filter socket opens: now)
        for h in (5, 37):
            dp.tc.add(_foreign(dp, h))
        if way == "put":
            got[way] = [dp.put(s) for s in specs]
        else:
            got[way] = dp.put_many(iter(specs))
            assert len(dp._templates) == 1
        held[way] = {u: t.filter for u, t in dp.tc_flows.items()}
        ours = {d.filter for d in dp.tc.dump(dp.ports[1].ifindex)
                if d.filter.cookie}
        assert ours == set(held[way].values())
        dp.cleanup()
    assert got["put_many"] == got["put"]
    refused = [o for o in got["put"] if isinstance(o, DpFlow) and o.placement.dp == "sw"]
    assert len(refused) == 3
    reasons = [o.placement.reason or "" for o in refused]
    assert sum("Filter already exists" in r for r in reasons) == 2, reasons
    strip = {u: (f.keys, f.prio, f.handle, f.chain, f.protocol, f.flags, f.cookie,
                 [a.kind for a in f.actions]) for u, f in held["put"].items()}
    assert {u: (f.keys, f.prio, f.handle, f.chain, f.protocol, f.flags, f.cookie,
                [a.kind for a in f.actions]) for u, f in held["put_many"].items()} == strip


def _cut_rig(netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
             tag: str) -> OffloadDatapath:
    ns = netns_factory(tag)
    veth_factory(ns, f"{tag[-2:]}0", ns, f"{tag[-2:]}1")
    dp = make_offload(ns, {1: f"{tag[-2:]}0", 2: f"{tag[-2:]}1"}, Policy.SKIP_HW)
    for h in range(20, 80):  # our adds of handles 20..79 will be refused (EEXIST)
        dp.tc.add(_foreign(dp, h))
    return dp


def _placed_once(dp: OffloadDatapath, out: list[DpFlow | DatapathError]) -> list[DpFlow]:
    """Every flow is a DpFlow, and the kernel holds a filter with our cookie
    for exactly the flows reported on tc: none in both places, none lost."""
    flows = [o for o in out if isinstance(o, DpFlow)]
    assert len(flows) == len(out)
    cookies = {d.filter.cookie for d in dp.tc.dump(dp.ports[1].ifindex) if d.filter.cookie}
    assert cookies == {f.ufid.to_bytes() for f in flows if f.placement.dp == "tc"}
    assert set(dp.tc_flows) == {f.ufid for f in flows if f.placement.dp == "tc"}
    return flows


def test_answers_lost_to_enobufs_are_read_back(netns_factory: Callable[..., Netns],
                                               veth_factory: Callable[..., VethPair],
                                               tc_flower: None) -> None:
    """The chunk was sized for the socket's receive buffer; shrunk under it,
    the kernel drops the refusals that overflow it and reports ENOBUFS (6.1:
    before the answers still queued).  The requests whose answers were not
    read are read back: the flows the kernel took are on tc, the refused
    ones in software, none lost, none in both places."""
    dp = _cut_rig(netns_factory, veth_factory, "fpcr")
    assert dp.tc._sock is not None  # open (the adds above), its chunk sized
    dp.tc._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
    flows = _placed_once(dp, dp.put_many([spec(i) for i in range(120)]))
    where = ["sw" if 19 <= i <= 78 else "tc" for i in range(120)]  # handle = i + 1
    assert [f.placement.dp for f in flows] == where
    reasons = [f.placement.reason or "" for f in flows if f.placement.dp == "sw"]
    assert any("answer lost" in r for r in reasons), reasons  # the cut happened
    assert all("answer lost" in r or "Filter already exists" in r for r in reasons), reasons
    dp.cleanup()


def test_a_batch_the_socket_cannot_send_goes_to_software(
        netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
        tc_flower: None) -> None:
    """A send refused by the socket (its datagram over a send buffer shrunk
    under the chunk: EMSGSIZE) leaves every flow of the batch in software,
    saying so, and nothing in the kernel."""
    dp = _cut_rig(netns_factory, veth_factory, "fpcs")
    assert dp.tc._sock is not None
    dp.tc._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    flows = _placed_once(dp, dp.put_many([spec(i) for i in range(120)]))
    assert all(f.placement.dp == "sw" and "not sent" in (f.placement.reason or "")
               for f in flows), flows[0].placement
    dp.cleanup()
