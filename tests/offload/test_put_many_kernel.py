"""Kernel tier: ``OffloadDatapath.put_many`` gives each flow what ``put``
would give it -- on tc, in software with the kernel's refusal, or the
DatapathError ``put`` raises -- from one pipelined tc batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dpif.actions import Output
from dpif.errors import FlowExists, FlowLimit
from dpif.flow import DpFlow, FlowSpec, Ufid
from dpif.match import Match
from offload.datapath import Policy
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
