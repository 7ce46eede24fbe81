"""dpctl flow text: real OVS lines, hypothesis round trips, errors that locate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif import actions as A
from dpif.errors import ParseError
from dpif.flow import FlowStats, Ufid
from dpif.flowtext import FlowText, format_flow, parse_flow
from dpif.keytext import format_key, parse_key
from dpif.match import Match
from dpif.scan import Scanner
from tests.dpif.strategies import action_lists, matches

NOW = 1000.0

OVS_LINES = [
    "recirc_id(0),in_port(2),eth(src=00:00:00:00:00:01,dst=00:00:00:00:00:02),"
    "eth_type(0x0800),ipv4(src=10.1.1.1,dst=10.1.1.2,proto=1,tos=0,ttl=64,frag=no),"
    "icmp(type=8,code=0), packets:9, bytes:756, used:0.001s, actions:3",
    "ufid:1f4e3c6a-0d43-4b3e-9a7c-2f1d9b6c3e21, recirc_id(0x1),in_port(1),eth_type(0x86dd),"
    "ipv6(dst=2001:db8::/ffff:ffff:ffff:ffff::,proto=17,frag=no),udp(dst=4789), packets:0, "
    "bytes:0, used:never, offloaded:yes, dp:tc, actions:push_vlan(vid=100,pcp=0),2",
    "recirc_id(0),in_port(3),eth(src=52:54:00:12:34:56,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),"
    "arp(sip=192.168.1.1,tip=192.168.1.2,op=1,sha=52:54:00:12:34:56,tha=00:00:00:00:00:00), "
    "packets:1, bytes:42, used:2.500s, actions:1,2,4",
    "recirc_id(0),in_port(1),eth_type(0x8100),vlan(vid=10,pcp=0),encap(eth_type(0x0800),"
    "ipv4(dst=10.0.0.0/255.255.255.0,proto=6,frag=no),tcp(dst=80)), packets:5, bytes:370, "
    "used:0.010s, flags:S., actions:pop_vlan,set(eth(dst=00:00:00:00:00:09)),5",
    "recirc_id(0),in_port(1),eth_type(0x88a8),vlan(vid=100,pcp=3),encap(eth_type(0x8100),"
    "vlan(vid=200,pcp=0),encap(eth_type(0x0800),ipv4(proto=17,frag=no),udp(src=0x400/0xfc00))), "
    "actions:drop",
    "recirc_id(0),tunnel(tun_id=0x5,src=172.16.0.1,dst=172.16.0.2,ttl=64,tp_dst=4789,"
    "flags(+key)),in_port(4),eth_type(0x0800),ipv4(frag=no), packets:1, bytes:98, used:0.500s, "
    "actions:ct(commit,zone=5,nat(src=10.0.0.1-10.0.0.9:1000-2000)),recirc(0x2)",
    "recirc_id(0x2),ct_state(+est+trk),in_port(4),eth_type(0x0800),ipv4(frag=no), "
    "actions:set(tunnel(tun_id=0x9,dst=172.16.0.9,ttl=64)),sample(sample=10.0%,"
    "actions(userspace(pid=3,userdata(0102)))),dec_ttl,hash(l4(0)),recirc(0x3)",
    "in_port(1),eth_type(0x86dd),ipv6(src=fe80::1,proto=58,hlimit=255,frag=no),"
    "icmpv6(type=135,code=0),nd(target=fe80::2,sll=00:00:00:00:00:01), actions:userspace(pid=0)",
    "recirc_id(0),in_port(2),eth_type(0x8847),mpls(label=100,tc=0,ttl=64,bos=1), actions:1",
    "in_port(1),eth_type(0x0800),ipv4(proto=6,frag=later),tcp_flags(syn|ack), actions:1",
]


@pytest.mark.parametrize("line", OVS_LINES)
def test_ovs_lines_round_trip(line: str) -> None:
    ft = parse_flow(line, NOW)
    assert format_flow(ft, NOW) == line
    assert parse_flow(format_flow(ft, NOW), NOW) == ft


def test_first_ovs_line_fields() -> None:
    ft = parse_flow(OVS_LINES[0], NOW)
    m = ft.match
    assert m.get("in_port") == (2, 0xFFFFFFFF)
    assert m.value("eth_type") == 0x0800
    assert m.value("ipv4_src") == 0x0A010101
    assert m.value("ip_proto") == 1 and m.value("ip_ttl") == 64
    assert m.get("ip_frag") == (0, 3)
    assert m.get("icmp_type") == (8, 0xFF)
    assert ft.actions == (A.Output(3),)
    assert ft.stats == FlowStats(9, 756, NOW - 0.001, 0)
    assert ft.ufid is None and ft.offloaded is None


def test_second_ovs_line_fields() -> None:
    ft = parse_flow(OVS_LINES[1], NOW)
    assert ft.ufid == Ufid(0x1F4E3C6A0D434B3E9A7C2F1D9B6C3E21)
    assert ft.match.get("ipv6_dst") == (0x20010DB8 << 96, ((1 << 64) - 1) << 64)
    assert ft.match.value("recirc_id") == 1
    assert ft.stats is not None and ft.stats.used is None
    assert ft.offloaded is True and ft.dp == "tc"
    assert ft.actions == (A.PushVlan(100, 0), A.Output(2))


def test_prefix_length_accepted_and_value_masked() -> None:
    a = parse_flow("eth_type(0x0800),ipv4(dst=10.1.2.3/24), actions:1").match
    b = parse_flow("eth_type(0x0800),ipv4(dst=10.1.2.0/255.255.255.0), actions:1").match
    assert a == b


@given(matches(), action_lists(), st.booleans(), st.integers(0, 2**128 - 1))
@settings(max_examples=300, deadline=None)
def test_hypothesis_round_trip(m: Match, acts: tuple[A.Action, ...], with_stats: bool,
                               ufid: int) -> None:
    stats = FlowStats(7, 700, NOW - 1.25, 0x12) if with_stats else None
    ft = FlowText(m, acts, Ufid(ufid), stats, True if with_stats else None,
                  "sw" if with_stats else None)
    text = format_flow(ft, NOW)
    back = parse_flow(text, NOW)
    assert back.match == m
    assert back.actions == acts
    assert back.ufid == ft.ufid
    assert format_flow(back, NOW) == text


@given(matches())
@settings(max_examples=300, deadline=None)
def test_key_round_trip(m: Match) -> None:
    text = format_key(m)
    assert parse_key(Scanner(text)) == m


@pytest.mark.parametrize("line, pos, expected", [
    ("in_port(2),eth(src=zz:00:00:00:00:00), actions:1", 19, "mac"),
    ("in_port(2),ipv4(foo=1), actions:1", 16, "src or dst"),
    ("in_port(2), actions:frob", 20, "an action"),
    ("in_port(x), actions:1", 8, "dec"),
    ("in_port(2),eth_type(0x0800), packets:x, actions:1", 37, "a number"),
    ("in_port(2) actions:1", 11, None),
    ("in_port(2),in_port(3), actions:1", 11, None),
    ("in_port(2/0xff), actions:1", 0, "an exact value"),
    ("in_port(2),vlan(vid=1), actions:1", 11, "eth_type"),
    ("ufid:nope, in_port(2), actions:1", 5, "a UUID"),
    ("in_port(2), actions:push_vlan(vid=1,tos=3)", 20, "tpid, vid or pcp"),
    ("in_port(2), actions:push_vlan(vid=5000)", 20, None),
    ("in_port(2), packets:3", None, "actions:"),
])
def test_malformed_lines_name_position_and_expectation(line: str, pos: int | None,
                                                       expected: str | None) -> None:
    with pytest.raises(ParseError) as ei:
        parse_flow(line)
    err = ei.value
    if pos is not None:
        assert err.pos == pos, str(err)
    if expected is not None:
        assert err.expected is not None and expected in err.expected, str(err)
    assert "flow:" in str(err)


@given(st.text(alphabet="()=,:/.0123456789abcdefinportehtyvlaxsu_ ", max_size=60))
@settings(max_examples=300, deadline=None)
def test_garbage_raises_only_parse_error(text: str) -> None:
    try:
        parse_flow(text)
    except ParseError:
        pass


def test_untagged_prints_as_no_vlan_like_ovs() -> None:
    m = parse_flow("in_port(1),eth_type(0x0800),ipv4(frag=no), actions:2").match
    assert not m.has("vlan_tpid")
    assert format_key(m.with_field("vlan_tpid", 0)) == format_key(m)  # absent vlan() = untagged
    tagged = m.with_field("vlan_tpid", 0x8100).with_field("vlan_vid", 5)
    assert format_key(tagged).startswith("in_port(1),eth_type(0x8100),vlan(vid=5),encap(")
