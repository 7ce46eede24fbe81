"""Megaflow <-> flower translation, without a kernel.

The oracle: whatever ``to_flower`` makes, encoded to netlink and decoded back,
``from_flower`` must read as a match that takes no packet the megaflow
would not (a subset), and exactly the megaflow for canonical ones.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dpif import actions as A
from dpif.fields import ALL_ONES
from dpif.flow import Ufid
from dpif.flowtext import parse_flow
from dpif.match import Match
from offload import tc_nla as N
from offload import tc_values as V
from offload.tc_flower import NotOffloadable, PortInfo, from_flower, to_flower, ufid_of
from tests.dpif.strategies import matches

PORTS = {1: PortInfo(1, 11, "rep1"), 2: PortInfo(2, 12, "rep2"), 3: PortInfo(3, 13, "rep3")}
BY_IFINDEX = {p.ifindex: p for p in PORTS.values()}
UFID = Ufid(0x1F4E3C6A0D434B3E9A7C2F1D9B6C3E21)


def translate(line: str, check=None) -> V.FlowerFilter | NotOffloadable:  # type: ignore[no-untyped-def]
    ft = parse_flow(line)
    return to_flower(ft.match, ft.actions, UFID, ports=PORTS, prio=3, handle=7,
                     flags=N.TCA_CLS_FLAGS_SKIP_HW, check=check)


def wire(f: V.FlowerFilter) -> V.FlowerFilter:
    """Through the netlink codec and back, as a dump would see it."""
    msg = V.encode_filter(f)
    msg.encode()
    back = type(msg)(msg.data)
    back.decode()
    dumped = V.decode_filter(back)
    assert dumped is not None
    return dumped.filter


def is_subset(inner: Match, outer: Match) -> bool:
    return inner.mask & outer.mask == outer.mask and inner.key & outer.mask == outer.key


EXAMPLES = [
    "recirc_id(0),in_port(2),eth(src=00:00:00:00:00:01,dst=00:00:00:00:00:02),eth_type(0x0800),"
    "ipv4(src=10.1.1.1,dst=10.1.1.2,proto=1,tos=0,ttl=64,frag=no),icmp(type=8,code=0), actions:3",
    "recirc_id(0x1),in_port(1),eth_type(0x86dd),ipv6(dst=2001:db8::/ffff:ffff:ffff:ffff::,"
    "proto=17,frag=no),udp(dst=4789), actions:push_vlan(vid=100,pcp=0),2",
    "recirc_id(0),in_port(1),eth_type(0x8100),vlan(vid=10,pcp=0),encap(eth_type(0x0800),"
    "ipv4(dst=10.0.0.0/255.255.255.0,proto=6,frag=no),tcp(dst=80)), actions:pop_vlan,2",
    "recirc_id(0),in_port(1),eth_type(0x88a8),vlan(vid=100,pcp=3),encap(eth_type(0x8100),"
    "vlan(vid=200,pcp=0),encap(eth_type(0x0800),ipv4(proto=17,frag=later),udp(src=0x400/0xfc00)))"
    ", actions:drop",
    "recirc_id(0),in_port(3),eth(dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),arp(tip=10.0.0.1,op=1),"
    " actions:1,2",
    "recirc_id(0),in_port(1),eth_type(0x0800),ipv4(src=10.0.0.1,proto=6,ttl=64,frag=no),"
    "tcp(src=1000),tcp_flags(+syn-ack), actions:set(ipv4(src=192.168.0.1)),set(tcp(src=2000)),"
    "dec_ttl,2",
    "recirc_id(0),in_port(1),eth_type(0x86dd),ipv6(proto=6,hlimit=5,frag=no), "
    "actions:set(ipv6(dst=2001:db8::9,tclass=4)),dec_ttl,set(eth(src=00:00:00:00:00:09)),3",
    "recirc_id(0),ct_state(+est+trk),ct_zone(0x5),ct_mark(0x1/0xff),in_port(1),"
    "eth_type(0x0800),ipv4(frag=no), actions:recirc(0x7)",
    "recirc_id(0x7),tunnel(tun_id=0x5,src=172.16.0.1,dst=172.16.0.2,tos=0,ttl=64,tp_dst=4789),"
    "in_port(1),eth_type(0x0800),ipv4(frag=first), actions:set(tunnel(tun_id=0x9,"
    "src=10.0.0.1,dst=10.0.0.2,ttl=64,tp_dst=4789)),2",
    "recirc_id(0),in_port(2),eth_type(0x8847),mpls(label=100,tc=0,ttl=64,bos=1), "
    "actions:sample(sample=10.0%,actions(userspace(pid=3))),1",
    "recirc_id(0),in_port(2),eth_type(0x0800),ipv4(frag=no), "
    "actions:sample(sample=0.1%,actions(userspace(pid=9))),1,3",
]


@pytest.mark.parametrize("line", EXAMPLES)
def test_examples_round_trip_through_the_wire(line: str) -> None:
    ft = parse_flow(line)
    f = translate(line)
    assert isinstance(f, V.FlowerFilter), f
    back = wire(f)
    assert ufid_of(back) == UFID
    m, acts = from_flower(back, BY_IFINDEX)
    want = ft.match
    if want.has("eth_type") and not want.has("vlan_tpid"):
        want = want.with_field("vlan_tpid", 0)  # protocol X excludes tagged packets
    assert m == want
    assert acts == ft.actions


def test_first_example_keys() -> None:
    f = translate(EXAMPLES[0])
    assert isinstance(f, V.FlowerFilter)
    k = dict(f.keys)
    assert f.ifindex == 12 and f.chain == 0 and f.protocol == 0x0800
    assert k["TCA_FLOWER_KEY_ETH_SRC"] == "00:00:00:00:00:01"
    assert k["TCA_FLOWER_KEY_IPV4_DST"] == "10.1.1.2"
    assert k["TCA_FLOWER_KEY_IP_PROTO"] == 1
    assert k["TCA_FLOWER_KEY_ICMPV4_TYPE"] == 8
    assert (k["TCA_FLOWER_KEY_FLAGS"], k["TCA_FLOWER_KEY_FLAGS_MASK"]) == (0, 1)
    assert f.actions == (V.Mirred(13, N.TCA_EGRESS_REDIR),)
    assert f.flags == N.TCA_CLS_FLAGS_SKIP_HW and f.prio == 3 and f.handle == 7


def test_multiple_outputs_mirror_then_redirect() -> None:
    f = translate(EXAMPLES[4])
    assert isinstance(f, V.FlowerFilter)
    assert f.actions == (V.Mirred(11, N.TCA_EGRESS_MIRROR), V.Mirred(12, N.TCA_EGRESS_REDIR))


def test_dec_ttl_is_pedit_add_and_csum() -> None:
    f = translate(EXAMPLES[5])
    assert isinstance(f, V.FlowerFilter)
    add = [k for a in f.actions if isinstance(a, V.Pedit) for k in a.keys
           if k.cmd == N.TCA_PEDIT_KEY_EX_CMD_ADD]
    assert add == [V.PeditKey(2, 8, 0x00FFFFFF, 0xFF000000, N.TCA_PEDIT_KEY_EX_CMD_ADD)]
    assert any(isinstance(a, V.Csum) and a.update_flags & 1 for a in f.actions)


@pytest.mark.parametrize("line, what", [
    ("in_port(1),eth_type(0x86dd),ipv6(label=0x5,frag=no), actions:2", "ipv6_label"),
    ("in_port(1),eth_type(0x86dd),ipv6(proto=58,frag=no),icmpv6(type=135),nd(target=::1), "
     "actions:2", "nd_target"),
    ("in_port(1),eth_type(0x8100),vlan(vid=0x10/0xff0),encap(), actions:2", "vlan_vid"),
    ("in_port(1),skb_mark(0x1), actions:2", "skb_mark"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no), actions:userspace(pid=1)", "userspace"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no), actions:ct(commit),2", "ct"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no), actions:hash(l4(0)),recirc(0x1)", "hash"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no), actions:dec_ttl,2", "dec_ttl"),
    ("in_port(1),eth_type(0x0800),ipv4(ttl=1,frag=no), actions:dec_ttl,2", "dec_ttl"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no), actions:9", "output:9"),
    ("in_port(9),eth_type(0x0800),ipv4(frag=no), actions:1", "in_port"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no), actions:2,push_vlan(vid=1,pcp=0)", "output"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no), "
     "actions:sample(sample=30.0%,actions(userspace(pid=1))),2", "sample"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=no),tcp(dst=80), actions:2", "tp_dst"),
    ("tunnel(tun_id=0x100000000),in_port(1), actions:2", "tun_id"),
    ("in_port(1),eth_type(0x0800),ipv4(frag=0/0x2), actions:2", "ip_frag"),
])
def test_not_offloadable_names_what(line: str, what: str | None) -> None:
    r = translate(line)
    assert isinstance(r, NotOffloadable), r
    if what is not None:
        assert what in str(r)


def test_output_check_refusal_is_kept() -> None:
    seen = []

    def check(ingress: PortInfo, outs: list[PortInfo]) -> str | None:
        seen.append((ingress.ifname, [o.ifname for o in outs]))
        return "rep3 is on another eswitch"
    r = translate(EXAMPLES[0], check=check)
    assert isinstance(r, NotOffloadable) and "another eswitch" in str(r)
    assert seen == [("rep2", ["rep3"])]


@given(matches(), st.sampled_from(sorted(PORTS)))
@settings(max_examples=250, deadline=None)
def test_filter_never_takes_a_packet_the_megaflow_would_not(m: Match, port: int) -> None:
    m = m.with_field("in_port", port).without("recirc_id")
    r = to_flower(m, (A.Output(1),), UFID, ports=PORTS, prio=1, handle=1, flags=0)
    assume(isinstance(r, V.FlowerFilter))
    assert isinstance(r, V.FlowerFilter)
    back, acts = from_flower(wire(r), BY_IFINDEX)
    assert acts == (A.Output(1),)
    assert is_subset(back, m.with_field("recirc_id", 0)), (m, back)
    # and nothing is lost beyond the documented canonical forms
    extra = back.mask & ~m.mask & ALL_ONES
    from dpif.fields import BY_NAME
    allowed = BY_NAME["vlan_tpid"].field_mask | BY_NAME["ip_frag"].field_mask | \
        BY_NAME["recirc_id"].field_mask
    assert extra & ~allowed == 0
