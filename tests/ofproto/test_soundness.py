"""THE soundness property of translation, and the OF classifier against a linear scan.

For random rule sets and random packets p: translate p -> (actions A,
megaflow M).  Every packet q that matches M -- p's key with only M's
wildcarded bits changed -- must translate (without side effects) to exactly A.
"""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpif.fields import (
    ALL_ONES, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD,
)
from dpif.match import pack
from ofproto import ofactions as ofa
from ofproto.classifier import Pipeline
from ofproto.normal import MacTable, PortConfig, VlanMode
from ofproto.offields import REGS, OfMatch
from ofproto.rule import Rule
from ofproto.xlate import XlateEnv, xlate

MACS = (0x0200_0000_0001, 0x0200_0000_0002, 0x0200_0000_0003, 0xFFFF_FFFF_FFFF)
IPS = (0x0A000001, 0x0A000002, 0x0A0001FE, 0x0B000001, 0xC0A80101)
PORTS_ = (1, 2, 3, 4)
TP = (22, 80, 443)

# -- packets -------------------------------------------------------------------


@st.composite
def packets(draw: st.DrawFn) -> int:
    v: dict[str, int] = {"in_port": draw(st.sampled_from(PORTS_)),
                         "eth_src": draw(st.sampled_from(MACS[:3])),
                         "eth_dst": draw(st.sampled_from(MACS))}
    ntags = draw(st.sampled_from([0, 0, 1, 1, 2]))
    if ntags:
        v |= {"vlan_tpid": draw(st.sampled_from([ETH_TYPE_VLAN, ETH_TYPE_VLAN,
                                                 ETH_TYPE_VLAN_8021AD])),
              "vlan_vid": draw(st.sampled_from([0, 10, 20])),
              "vlan_pcp": draw(st.integers(0, 7))}
    if ntags == 2:
        v |= {"cvlan_tpid": ETH_TYPE_VLAN, "cvlan_vid": draw(st.sampled_from([10, 30])),
              "cvlan_pcp": draw(st.integers(0, 7))}
    et = draw(st.sampled_from([ETH_TYPE_IPV4, ETH_TYPE_IPV4, ETH_TYPE_IPV4, ETH_TYPE_ARP,
                               ETH_TYPE_IPV6]))
    v["eth_type"] = et
    if et == ETH_TYPE_IPV4:
        proto = draw(st.sampled_from([6, 17, 1]))
        v |= {"ipv4_src": draw(st.sampled_from(IPS)), "ipv4_dst": draw(st.sampled_from(IPS)),
              "ip_proto": proto, "ip_ttl": draw(st.sampled_from([1, 64])),
              "ip_tos": draw(st.sampled_from([0, 0x10]))}
        if proto in (6, 17):
            v |= {"tp_src": draw(st.sampled_from(TP)), "tp_dst": draw(st.sampled_from(TP))}
    elif et == ETH_TYPE_ARP:
        v |= {"arp_op": 1, "arp_spa": draw(st.sampled_from(IPS)),
              "arp_tpa": draw(st.sampled_from(IPS))}
    else:
        v |= {"ipv6_dst": draw(st.sampled_from([1, 2])), "ip_proto": 6, "tp_dst": 80}
    return pack({k: x for k, x in v.items() if x})


# -- rules -----------------------------------------------------------------------


@st.composite
def matches(draw: st.DrawFn, table: int) -> OfMatch:
    m = OfMatch.catchall()
    if draw(st.booleans()):
        m = m.with_field("in_port", draw(st.sampled_from(PORTS_)))
    if draw(st.integers(0, 3)) == 0:
        m = m.with_field("dl_dst", draw(st.sampled_from(MACS)))
    vl = draw(st.integers(0, 5))
    if vl == 0:
        m = m.with_field("dl_vlan", draw(st.sampled_from([10, 20, 30, 0xFFFF])))
    elif vl == 1:
        m = m.with_field("vlan_tci", draw(st.sampled_from([0x1000, 0])), 0x1000)
    kind = draw(st.sampled_from(["any", "any", "ip", "ip", "arp"]))
    if kind == "ip":
        m = m.with_field("dl_type", ETH_TYPE_IPV4)
        if draw(st.booleans()):
            plen = draw(st.sampled_from([8, 16, 24, 31, 32]))
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            m = m.with_field(draw(st.sampled_from(["nw_src", "nw_dst"])),
                             draw(st.sampled_from(IPS)), mask)
        if draw(st.booleans()):
            proto = draw(st.sampled_from([6, 17, 1]))
            m = m.with_field("nw_proto", proto)
            if proto != 1 and draw(st.booleans()):
                m = m.with_field("tp_dst", draw(st.sampled_from(TP)),
                                 draw(st.sampled_from([0xFFFF, 0xFFFF, 0xFF00])))
        if draw(st.integers(0, 4)) == 0:
            m = m.with_field("nw_ttl", draw(st.sampled_from([1, 63, 64])))
    elif kind == "arp":
        m = m.with_field("dl_type", ETH_TYPE_ARP)
        if draw(st.booleans()):
            m = m.with_field("arp_tpa", draw(st.sampled_from(IPS)), 0xFFFFFF00)
    if table > 0 and draw(st.booleans()):
        m = m.with_field("reg0", draw(st.integers(0, 3)))
    return m


@functools.lru_cache(maxsize=None)
def actions_for(table: int, n_tables: int) -> st.SearchStrategy[ofa.OfAction]:
    later = list(range(table + 1, n_tables))
    base: list[st.SearchStrategy[ofa.OfAction]] = [
        st.builds(ofa.Output, st.sampled_from(PORTS_)),
        st.builds(ofa.Output, st.sampled_from(PORTS_)),
        st.builds(ofa.Output, st.sampled_from(PORTS_)),
        st.just(ofa.InPort()), st.just(ofa.Flood()), st.just(ofa.All()),
        st.just(ofa.Normal()), st.just(ofa.Controller()),
        st.builds(ofa.SetVlanVid, st.sampled_from([10, 20, 30])),
        st.builds(ofa.SetVlanPcp, st.integers(0, 7)),
        st.just(ofa.StripVlan()), st.just(ofa.PushVlan()),
        st.just(ofa.DecTtl()),
        st.builds(lambda v: ofa.SetField("reg0", v, 0xFFFFFFFF), st.integers(0, 3)),
        st.builds(lambda v: ofa.SetField("nw_dst", v, 0xFFFFFFFF), st.sampled_from(IPS)),
        st.builds(lambda v: ofa.SetField("tp_dst", v, 0xFFFF), st.sampled_from(TP)),
        st.builds(lambda v: ofa.SetField("dl_src", v, (1 << 48) - 1), st.sampled_from(MACS)),
        st.builds(lambda v: ofa.SetField("nw_tos", v, 0x3F), st.integers(0, 3)),
        st.just(ofa.Move("tp_dst", 0, "reg0", 0, 2)),
        st.just(ofa.Move("in_port", 0, "reg0", 0, 2)),
        st.just(ofa.Move("nw_src", 30, "reg0", 0, 2)),
    ]
    if later:
        base.append(st.builds(ofa.Resubmit, st.sampled_from([None, *PORTS_]),
                              st.sampled_from(later)))
    base.append(st.builds(ofa.Resubmit, st.just(None), st.sampled_from(list(range(n_tables)))))
    return st.one_of(base)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    n_tables = draw(st.integers(1, 3))
    rules = []
    for table in range(n_tables):
        for _ in range(draw(st.integers(0, 7))):
            acts = tuple(draw(st.lists(actions_for(table, n_tables), max_size=4)))
            if table + 1 < n_tables and draw(st.integers(0, 3)) == 0:
                acts = acts + (ofa.GotoTable(draw(st.integers(table + 1, n_tables - 1))),)
            rules.append(Rule(draw(matches(table)), acts, table,
                              draw(st.integers(0, 3)), 0))
        if draw(st.integers(0, 3)) != 0:  # usually a table-miss rule too
            acts = tuple(draw(st.lists(actions_for(table, n_tables), min_size=1, max_size=4)))
            rules.append(Rule(OfMatch.catchall(), acts, table, 0, 0))
    return rules


PORT_CFG = {
    1: PortConfig(1, "a10", VlanMode.ACCESS, tag=10),
    2: PortConfig(2, "t", VlanMode.TRUNK),
    3: PortConfig(3, "t20", VlanMode.TRUNK, trunks=frozenset({0, 20})),
    4: PortConfig(4, "a20", VlanMode.ACCESS, tag=20, flood=False),
}


def make_env(rules: list[Rule]) -> XlateEnv:
    p: Pipeline[Rule] = Pipeline()
    for i, r in enumerate(rules):
        p.insert(r.table, i + 1, r, r.match.key, r.match.mask, r.priority)
    macs = MacTable()
    macs.learn(10, MACS[0], 1, 0.0)
    macs.learn(20, MACS[1], 3, 0.0)
    macs.learn(0, MACS[2], 2, 0.0)
    return XlateEnv(p, PORT_CFG, macs, now=1.0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), packets(), st.lists(packets(), min_size=1, max_size=8),
       st.lists(st.integers(0, ALL_ONES), max_size=4))
def test_translation_is_sound(rules: list[Rule], p: int, others: list[int],
                              noise: list[int]) -> None:
    env = make_env(rules)
    res = xlate(env, p, side_effects=False)
    mask = res.megaflow.mask
    assert res.megaflow.matches(p)
    # q: p's key with the wildcarded bits taken from another realistic packet,
    # or from raw random bits
    for other in others + noise:
        q = (p & mask) | (other & ~mask & ALL_ONES)
        rq = xlate(env, q, side_effects=False)
        assert rq.actions == res.actions, (
            f"\nrules={rules}\np={p:#x}\nq={q:#x}\nmegaflow={res.megaflow}\n"
            f"A(p)={res.actions}\nA(q)={rq.actions}")


@settings(max_examples=100, deadline=None)
@given(rule_sets(), st.lists(packets(), min_size=1, max_size=10))
def test_of_classifier_matches_linear_scan(rules: list[Rule], pkts: list[int]) -> None:
    env = make_env(rules)
    pipe = env.rules
    assert isinstance(pipe, Pipeline)
    for table, cls in pipe.tables.items():
        for p in pkts:
            for reg0 in range(3):
                flow = p | REGS[0].put(reg0)
                got, wc = cls.lookup(flow)
                assert got == cls.lookup_linear(flow)
                # and the consulted bits decide it
                for o in pkts:
                    q = (flow & wc) | (o & ~wc)
                    assert cls.lookup_linear(q) == got
