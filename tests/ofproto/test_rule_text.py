"""Rule text: hand-written ovs-ofctl lines for every field and action, and round trips."""

from __future__ import annotations

import pytest

from dpif.errors import ParseError
from dpif.fields import BY_NAME as _DP_FIELDS
from ofproto import ofactions as A
from ofproto.offields import OfMatch
from ofproto.ruletext import format_match, format_rule, parse_match, parse_rule
from ofproto.rule import Rule, RuleStats

_dp = _DP_FIELDS.__getitem__

# (what a user types, what dump-flows --no-stats prints)
LINES: list[tuple[str, str]] = [
    ("table=0,priority=100,cookie=0x5,idle_timeout=10,tcp,nw_dst=10.0.0.0/24,tp_dst=80,"
     "actions=mod_vlan_vid:10,output:2",
     " cookie=0x5, idle_timeout=10, priority=100,tcp,nw_dst=10.0.0.0/24,tp_dst=80 "
     "actions=mod_vlan_vid:10,output:2"),
    ("in_port=1,actions=drop", " in_port=1 actions=drop"),
    ("in_port=LOCAL,actions=normal", " in_port=LOCAL actions=NORMAL"),
    ("dl_src=00:11:22:33:44:55,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=flood",
     " dl_src=00:11:22:33:44:55,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD"),
    ("eth_src=00:11:22:33:44:55/ff:ff:ff:00:00:00,actions=all",
     " dl_src=00:11:22:00:00:00/ff:ff:ff:00:00:00 actions=ALL"),
    ("dl_type=0x88cc,actions=controller", " dl_type=0x88cc actions=CONTROLLER:65535"),
    ("dl_type=0x0800,actions=local", " ip actions=LOCAL"),
    ("dl_vlan=10,actions=strip_vlan", " dl_vlan=10 actions=strip_vlan"),
    ("dl_vlan_pcp=5,dl_vlan=7,actions=pop_vlan", " dl_vlan=7,dl_vlan_pcp=5 actions=pop_vlan"),
    ("dl_vlan=0xffff,actions=push_vlan:0x8100", " vlan_tci=0x0000 actions=push_vlan:0x8100"),
    ("vlan_tci=0x1000/0x1000,actions=mod_vlan_pcp:3",
     " vlan_tci=0x1000/0x1000 actions=mod_vlan_pcp:3"),
    ("vlan_tci=0x100a,actions=drop", " dl_vlan=10,dl_vlan_pcp=0 actions=drop"),
    ("vlan_tci=0x0005/0x0fff,actions=drop", " vlan_tci=0x0005/0x0fff actions=drop"),
    ("vlan_tci=0x1005/0x1fff,actions=drop", " dl_vlan=5 actions=drop"),
    ("ip,actions=in_port", " ip actions=IN_PORT"),
    ("ipv6,actions=drop", " ipv6 actions=drop"),
    ("arp,actions=drop", " arp actions=drop"),
    ("udp,actions=drop", " udp actions=drop"),
    ("sctp,actions=drop", " sctp actions=drop"),
    ("icmp,actions=drop", " icmp actions=drop"),
    ("icmp6,actions=drop", " icmp6 actions=drop"),
    ("tcp6,actions=drop", " tcp6 actions=drop"),
    ("udp6,actions=drop", " udp6 actions=drop"),
    ("ip,nw_proto=47,actions=drop", " ip,nw_proto=47 actions=drop"),
    ("ip,nw_proto=6,actions=drop", " tcp actions=drop"),
    ("ip,nw_src=10.1.2.3,nw_dst=10.0.0.0/255.0.255.0,actions=drop",
     " ip,nw_src=10.1.2.3,nw_dst=10.0.0.0/255.0.255.0 actions=drop"),
    ("ip,nw_src=10.1.2.3/16,actions=drop", " ip,nw_src=10.1.0.0/16 actions=drop"),
    ("ipv6,ipv6_src=2001:db8::1,ipv6_dst=2001:db8::/32,actions=drop",
     " ipv6,ipv6_src=2001:db8::1,ipv6_dst=2001:db8::/32 actions=drop"),
    ("ip,nw_tos=16,actions=drop", " ip,nw_tos=16 actions=drop"),
    ("ip,ip_dscp=4,actions=drop", " ip,nw_tos=16 actions=drop"),
    ("ip,nw_ecn=3,actions=drop", " ip,nw_ecn=3 actions=drop"),
    ("ip,nw_ttl=64,actions=drop", " ip,nw_ttl=64 actions=drop"),
    ("ip,nw_frag=no,actions=drop", " ip,nw_frag=no actions=drop"),
    ("ip,nw_frag=yes,actions=drop", " ip,nw_frag=yes actions=drop"),
    ("ip,nw_frag=first,actions=drop", " ip,nw_frag=first actions=drop"),
    ("ip,nw_frag=later,actions=drop", " ip,nw_frag=later actions=drop"),
    ("ip,nw_frag=not_later,actions=drop", " ip,nw_frag=not_later actions=drop"),
    ("tcp,tp_src=1024,tp_dst=0x50/0xfff0,actions=drop",
     " tcp,tp_src=1024,tp_dst=0x50/0xfff0 actions=drop"),
    ("udp,udp_dst=53,actions=drop", " udp,tp_dst=53 actions=drop"),
    ("tcp,tcp_flags=+syn-ack,actions=drop", " tcp,tcp_flags=+syn-ack actions=drop"),
    ("tcp,tcp_flags=syn|ack,actions=drop", " tcp,tcp_flags=syn|ack actions=drop"),
    ("icmp,icmp_type=8,icmp_code=0,actions=drop", " icmp,icmp_type=8,icmp_code=0 actions=drop"),
    ("icmp6,icmp_type=135,actions=drop", " icmp6,icmp_type=135 actions=drop"),
    ("arp,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8,arp_sha=00:00:00:00:00:01,"
     "arp_tha=00:00:00:00:00:00,actions=drop",
     " arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8,arp_op=1,arp_sha=00:00:00:00:00:01,"
     "arp_tha=00:00:00:00:00:00 actions=drop"),
    ("arp,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_proto=2,actions=drop",
     " arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.2,arp_op=2 actions=drop"),
    ("tun_id=0x5,tun_src=192.168.0.1,tun_dst=192.168.0.0/24,actions=drop",
     " tun_id=0x5,tun_src=192.168.0.1,tun_dst=192.168.0.0/24 actions=drop"),
    ("tun_id=0x5/0xff,actions=drop", " tun_id=0x5/0xff actions=drop"),
    ("ct_state=+trk+est,actions=drop", " ct_state=+est+trk actions=drop"),
    ("ct_state=-new+trk,ct_zone=5,ct_mark=0x1/0xf,actions=drop",
     " ct_state=-new+trk,ct_zone=5,ct_mark=0x1/0xf actions=drop"),
    ("metadata=0x1234,actions=drop", " metadata=0x1234 actions=drop"),
    ("metadata=0/0xff,actions=drop", " metadata=0/0xff actions=drop"),
    ("reg0=5,reg15=0x10/0xf0,actions=drop", " reg0=0x5,reg15=0x10/0xf0 actions=drop"),
    ("priority=0,actions=drop", " priority=0 actions=drop"),
    ("hard_timeout=30,send_flow_rem,importance=3,actions=drop",
     " hard_timeout=30, send_flow_rem importance=3, actions=drop"),
    ("table=3,actions=drop", " table=3, actions=drop"),
    # actions
    ("actions=output:2,3", " actions=output:2,output:3"),
    ("actions=output:LOCAL,output:IN_PORT", " actions=LOCAL,IN_PORT"),
    ("actions=controller:100", " actions=CONTROLLER:100"),
    ("actions=controller(reason=no_match,max_len=128,userdata=01.02.ff)",
     " actions=controller(reason=no_match,max_len=128,userdata=01.02.ff)"),
    ("actions=mod_dl_src:00:00:00:00:00:01,mod_dl_dst:00:00:00:00:00:02",
     " actions=mod_dl_src:00:00:00:00:00:01,mod_dl_dst:00:00:00:00:00:02"),
    ("ip,actions=mod_nw_src:1.2.3.4,mod_nw_dst:5.6.7.8,mod_nw_tos:16",
     " ip actions=mod_nw_src:1.2.3.4,mod_nw_dst:5.6.7.8,mod_nw_tos:16"),
    ("tcp,actions=mod_tp_src:1,mod_tp_dst:2", " tcp actions=mod_tp_src:1,mod_tp_dst:2"),
    ("actions=set_field:10.0.0.1->ip_dst,set_field:0x5/0xff->reg1,set_field:3->tun_id",
     " actions=set_field:10.0.0.1->ip_dst,set_field:0x5/0xff->reg1,set_field:0x3->tun_id"),
    ("actions=load:0x5->NXM_NX_REG0[0..7],load:1->reg2[3],load:0->OXM_OF_METADATA[]",
     " actions=load:0x5->NXM_NX_REG0[0..7],load:0x1->reg2[3],load:0->OXM_OF_METADATA[]"),
    ("actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],move:reg0[0..15]->reg1[16..31]",
     " actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],move:reg0[0..15]->reg1[16..31]"),
    ("ip,actions=dec_ttl,set_tunnel:0x5,set_tunnel64:0x100000000",
     " ip actions=dec_ttl,set_tunnel:0x5,set_tunnel64:0x100000000"),
    ("actions=resubmit(,2),resubmit(3,4),resubmit:5,resubmit(1)",
     " actions=resubmit(,2),resubmit(3,4),resubmit:5,resubmit:1"),
    ("actions=goto_table:7", " actions=goto_table:7"),
    ("actions=sample(probability=65535,collector_set_id=1,obs_domain_id=2,obs_point_id=3)",
     " actions=sample(probability=65535,collector_set_id=1,obs_domain_id=2,obs_point_id=3)"),
    ("actions=sample(probability=10)",
     " actions=sample(probability=10,collector_set_id=0,obs_domain_id=0,obs_point_id=0)"),
    ("ip,actions=ct(commit,zone=5,table=1)", " ip actions=ct(commit,table=1,zone=5)"),
    ("ip,actions=ct(zone=NXM_NX_REG0[0..15],nat)", " ip actions=ct(zone=NXM_NX_REG0[0..15],nat)"),
    ("ip,actions=ct(commit,nat(src=10.0.0.1-10.0.0.9:1000-2000,random),"
     "exec(set_field:0x1->ct_mark))",
     " ip actions=ct(commit,nat(src=10.0.0.1-10.0.0.9:1000-2000,random),"
     "exec(set_field:0x1->ct_mark))"),
    ("ipv6,actions=ct(commit,nat(dst=[2001:db8::1]:80))",
     " ipv6 actions=ct(commit,nat(dst=[2001:db8::1]:80))"),
    ("actions=drop", " actions=drop"),
    # separators: spaces work like commas, as in ovs-ofctl
    ("priority=5 tcp tp_dst=22 actions=drop", " priority=5,tcp,tp_dst=22 actions=drop"),
]


@pytest.mark.parametrize(("text", "printed"), LINES, ids=[t for t, _ in LINES])
def test_ovs_lines(text: str, printed: str) -> None:
    rule = parse_rule(text)
    assert format_rule(rule) == printed
    assert parse_rule(printed) == rule


def test_dump_flows_line_with_stats() -> None:
    rule = parse_rule("table=0,priority=100,cookie=0x5,idle_timeout=10,tcp,"
                      "nw_dst=10.0.0.0/24,tp_dst=80,actions=mod_vlan_vid:10,output:2")
    line = format_rule(rule, RuleStats(9, 756, created=100.0, used=102.5), now=103.012)
    assert line == (" cookie=0x5, duration=3.012s, table=0, n_packets=9, n_bytes=756, "
                    "idle_timeout=10, idle_age=0, priority=100,tcp,nw_dst=10.0.0.0/24,"
                    "tp_dst=80 actions=mod_vlan_vid:10,output:2")
    assert parse_rule(line) == rule  # dump-flows output feeds back, as in ovs-ofctl


def test_values() -> None:
    r = parse_rule("ip,nw_tos=16,actions=mod_nw_tos:32")
    assert r.match.get("nw_tos") == (4, 0x3F)
    assert (_dp("ip_tos").get(r.match.key), _dp("ip_tos").get(r.match.mask)) == (16, 0xFC)
    assert r.actions == (A.SetField("nw_tos", 8, 0x3F, "mod_nw_tos"),)
    r = parse_rule("dl_vlan=10,actions=drop")
    # "a tag is present" is the TPID's top bit: 0x8100 and 0x88a8 both match
    assert (_dp("vlan_tpid").get(r.match.key), _dp("vlan_tpid").get(r.match.mask)) \
        == (0x8000, 0x8000)
    assert (_dp("vlan_vid").get(r.match.key), _dp("vlan_vid").get(r.match.mask)) == (10, 0xFFF)
    assert not _dp("vlan_pcp").get(r.match.mask)
    assert r.match.get("dl_vlan") == (10, 0xFFF)
    r = parse_rule("vlan_tci=0,actions=drop")
    assert (_dp("vlan_tpid").get(r.match.key), _dp("vlan_tpid").get(r.match.mask)) == (0, 0x8000)
    assert r.match.get("vlan_tci") == (0, 0xFFFF)
    r = parse_rule("actions=load:0x5->NXM_NX_REG0[8..15]")
    assert r.actions == (A.SetField("NXM_NX_REG0", 0x500, 0xFF00, "load"),)


# --- errors: field, offending text, position ----------------------------------

ERRORS: list[tuple[str, str, str | None]] = [
    # (text, text at the error position, field named)
    ("tcp,nw_dst=10.0.0.300,actions=drop", "10.0.0.300", "nw_dst"),
    ("tp_dst=80,actions=drop", "tp_dst", "tp_dst"),
    ("ip,tcp_flags=+syn,actions=drop", "tcp_flags", "tcp_flags"),
    ("bogus=1,actions=drop", "bogus", "bogus"),
    ("tcp,tcp_flags=+sin,actions=drop", "+sin", "tcp_flags"),
    ("ip,nw_ttl=64/0xf0,actions=drop", "64/0xf0", "nw_ttl"),
    ("ip,nw_tos=17,actions=drop", "17", "nw_tos"),
    ("dl_vlan=5000,actions=drop", "5000", "dl_vlan"),
    ("priority=70000,actions=drop", "70000", "priority"),
    ("cookie=0x5/-1,actions=drop", "/-1", "cookie"),
    ("ip,actions=output:2,frobnicate:3", "frobnicate", None),
    ("ip,actions=load:0x100->reg0[0..7]", "load", "reg0"),
    ("ip,actions=set_field:1.2.3.4->nosuch", "set_field", "nosuch"),
    ("ip,actions=ct(commit,bogus)", "ct(", None),
    ("in_port=eth0,actions=drop", "eth0", "in_port"),
    ("ipv6,nw_src=10.0.0.1,actions=drop", "nw_src", "nw_src"),
]


@pytest.mark.parametrize(("text", "at", "field"), ERRORS, ids=[t for t, _, _ in ERRORS])
def test_errors_name_field_and_position(text: str, at: str, field: str | None) -> None:
    with pytest.raises(ParseError) as ei:
        parse_rule(text)
    e = ei.value
    assert e.text == text
    assert e.pos is not None and text[e.pos:].startswith(at), (e.pos, str(e))
    if field is not None:
        assert e.context.get("field") == field, str(e)
    assert at in str(e) or text[e.pos:e.pos + 20] in str(e)


def test_missing_actions() -> None:
    with pytest.raises(ParseError, match="must specify actions"):
        parse_rule("tcp,tp_dst=80")


def test_selectors() -> None:
    s = parse_match("cookie=0x5/-1,table=2,tcp")
    assert (s.cookie, s.cookie_mask, s.table, s.actions) == (5, (1 << 64) - 1, 2, None)
    assert s.match == OfMatch.build(dl_type=0x800, nw_proto=6)
    assert parse_match("").table is None
    s = parse_match("out_port=LOCAL,priority=7,ip")
    assert (s.out_port, s.priority) == (0xFFFE, 7)
    with pytest.raises(ParseError, match="cannot set cookie"):
        parse_match("cookie=5")
    with pytest.raises(ParseError, match="takes no actions"):
        parse_match("ip,actions=drop")
    m = parse_match("cookie=7,ip,actions=output:1", modify=True)
    assert (m.new_cookie, m.cookie_mask, m.actions) == (7, 0, (A.Output(1),))
    with pytest.raises(ParseError, match="must specify actions"):
        parse_match("ip", modify=True)


def test_format_match_catchall() -> None:
    assert format_match(OfMatch.catchall()) == ""
    assert format_rule(Rule(OfMatch.catchall())) == " actions=drop"
