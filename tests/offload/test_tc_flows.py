"""offload.tc_flows: the terse-dump join against a model of the rules its
theory of operation states (whole frames, lastuse from counter growth, the
same DpFlow for a flow with no news, carried counters, missing and foreign
filters, a cookie listed twice, seeding by a full read)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from dpif import actions as A
from dpif.flow import DpFlow, FlowStats, Placement, Ufid
from dpif.match import Match
from offload import tc_nla as N
from offload.tc_flows import ETH_HLEN, TcCounters, TcFlow
from offload.tc_op import TcOp
from offload.tc_terse import TerseFilter
from offload.tc_values import FlowerFilter, Mirred, TcStats
from tests.dpif.test_flow import check_hand_init

ON_HW = Placement("tc", True)
NOT_IN_HW = Placement("tc", False, "kernel: not_in_hw")
NOT_READ = Placement("tc", False, "not read")


def placement(d: TerseFilter | None) -> Placement:
    if d is None:
        return NOT_READ
    return ON_HW if d.in_hw else NOT_IN_HW


def tc_flow(i: int, carried: FlowStats) -> TcFlow:
    ufid = Ufid(0xF0 + i)
    f = FlowerFilter(ifindex=3, prio=0x800, handle=i + 1, protocol=0x0800,
                     keys=(("TCA_FLOWER_KEY_ETH_TYPE", 0x0800),), actions=(Mirred(4),),
                     cookie=ufid.to_bytes())
    return TcFlow(ufid, Match.build(in_port=1, eth_type=0x0800), (A.Output(2),), f, carried)


def terse(t: TcFlow, packets: int, hw: int, nbytes: int, in_hw: bool) -> TerseFilter:
    f = t.filter
    return TerseFilter(f.ifindex, f.chain, f.prio, f.protocol, f.handle,
                       N.TCA_CLS_FLAGS_IN_HW if in_hw else 0, f.cookie, packets, nbytes, hw, 0)


@dataclass
class Seen:
    packets: int
    used: float | None
    flow: DpFlow | None  # what the join gave (None: seeded by a full read)


carried_stats = st.builds(FlowStats, st.integers(0, 50), st.integers(0, 5000),
                          st.none() | st.floats(0, 5), st.integers(0, 0x3F))
# per read and flow: (packet growth, of which in hardware, listed?, in_hw?, listed twice?)
reads = st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.booleans(),
                                    st.booleans(), st.booleans()), min_size=6, max_size=6),
                 min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(carried_stats, min_size=1, max_size=6), reads, st.booleans(),
       st.integers(0, 5), st.booleans())
def test_join_follows_its_rules(carried: list[FlowStats], rounds: list[list[tuple]],
                                fixed: bool, seed_at: int, foreign: bool) -> None:
    flows = [tc_flow(i, c) for i, c in enumerate(carried)]
    counters = TcCounters()
    model: dict[Ufid, Seen] = {}
    packets = {t.ufid: 0 for t in flows}
    hw = {t.ufid: 0 for t in flows}
    for r, row in enumerate(rounds):
        now = 10.0 + r
        if r == seed_at % len(rounds):  # a full read of the first flow seeds its state
            t = flows[0]
            got = counters.seed(t, TcStats(packets[t.ufid], 100 * packets[t.ufid], hw[t.ufid],
                                           0, idle_ms=250), now)
            used = now - 0.25 if packets[t.ufid] else None
            model[t.ufid] = Seen(packets[t.ufid], used, None)
            assert got.used == (max(u for u in (used, t.carried.used) if u is not None)
                                if used is not None or t.carried.used is not None else None)
        dumped = []
        for t, (grow, grow_hw, listed, in_hw, twice) in zip(flows, row):
            packets[t.ufid] += grow
            hw[t.ufid] += min(grow, grow_hw)
            if listed:
                d = terse(t, packets[t.ufid], hw[t.ufid], 100 * packets[t.ufid], in_hw)
                dumped.append(d)
                if twice:  # a second listing with other counters: ignored
                    dumped.append(d._replace(packets=d.packets + 7))
        if foreign:
            dumped.insert(0, TerseFilter(3, 0, 0x800, 0x0800, 99, 0, Ufid(1).to_bytes(),
                                         5, 500, 0, 0))
        fix = ON_HW if fixed else None
        out = counters.join(flows, dumped, now, placement, fix)
        assert sorted(f.ufid for f in out) == sorted(t.ufid for t in flows)  # each once
        by_ufid = {f.ufid: f for f in out}
        first = {}
        for d in dumped:
            first.setdefault(d.cookie, d)
        for t in flows:
            f = by_ufid[t.ufid]
            assert (f.match, f.actions) == (t.match, t.actions)
            d = first.get(t.filter.cookie)
            if d is None:
                assert f.stats == t.carried and f.placement is NOT_READ
                continue
            where = fix or placement(d)
            assert f.placement == where
            prev = model.get(t.ufid)
            if prev is not None and prev.packets == d.packets:
                used = prev.used
                if prev.flow is not None and prev.flow.placement is where:
                    assert f is prev.flow  # no news: the very same value
            else:
                used = now if d.packets else None
            nbytes = d.bytes + ETH_HLEN * (d.packets - d.hw_packets)
            own = FlowStats(d.packets, nbytes, used)
            c = t.carried
            assert f.stats == (c + own if c != FlowStats() else own)
            model[t.ufid] = Seen(d.packets, used, f)


def test_state_of_flows_gone_is_forgotten() -> None:
    flows = [tc_flow(i, FlowStats()) for i in range(3)]
    counters = TcCounters()
    dumped = [terse(t, 4, 0, 400, False) for t in flows]
    first = counters.join(flows, dumped, 1.0, placement, None)
    assert len(counters._last) == 3
    again = counters.join(flows[:1], dumped, 2.0, placement, None)
    assert [f.ufid for f in again] == [flows[0].ufid]
    assert again[0] is first[0]
    assert set(counters._last) == {flows[0].filter.cookie}


def test_hand_written_inits() -> None:
    check_hand_init(TcFlow)
    check_hand_init(TcOp)
