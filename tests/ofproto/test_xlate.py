"""Translation on hand-written pipelines: actions and megaflow masks."""

from __future__ import annotations

from dpif import actions as dpa
from dpif.fields import BY_NAME, ETH_TYPE_IPV4, ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD
from ofproto import ofactions as ofa
from ofproto.normal import MacTable
from ofproto.offields import OfMatch
from ofproto.rule import Rule
from ofproto.xlate import MAX_DEPTH, PacketInMeta, xlate

from tests.ofproto.xlate_helpers import (
    BCAST, MAC_A, MAC_B, access_trunk_ports, env, ip_key,
)

IP = {"dl_type": ETH_TYPE_IPV4}


def R(actions: tuple[ofa.OfAction, ...], table: int = 0, priority: int = 100,
      cookie: int = 0, **match: int | tuple[int, int]) -> Rule:
    return Rule(OfMatch.build(match), actions, table, priority, cookie)


def fmask(res_mask: int, name: str) -> int:
    return BY_NAME[name].get(res_mask)


def test_multi_table_resubmit_and_goto() -> None:
    e = env([
        R((ofa.Resubmit(None, 1), ofa.Output(3)), in_port=1),
        R((ofa.SetField("reg0", 7, 0xFFFFFFFF), ofa.GotoTable(2)), table=1),
        R((ofa.Output(2),), table=2, reg0=7),
        R((ofa.Output(4),), table=2, priority=0),
    ])
    res = xlate(e, ip_key(in_port=1))
    assert res.actions == (dpa.Output(2), dpa.Output(3))
    assert [t for t, _ in res.rules] == [0, 1, 2]
    m = res.megaflow
    # only in_port (+ the always-read fields) matter: reg0 is written, not read
    assert m.is_exact("in_port") and m.is_exact("eth_type") and m.is_exact("ip_frag")
    assert not m.has("ipv4_dst") and not m.has("eth_src") and not m.has("tp_dst")


def test_table_miss_drops_with_staged_mask() -> None:
    e = env([R((ofa.Output(2),), dl_type=ETH_TYPE_IPV4, nw_proto=6, tp_dst=80)])
    res = xlate(e, ip_key(dport=22))
    assert res.actions == ()
    assert res.megaflow.is_exact("tp_dst")
    res = xlate(e, ip_key(proto=17))  # misses at L3: ports stay wild
    assert res.actions == () and not res.megaflow.has("tp_dst")
    assert res.megaflow.is_exact("ip_proto")


def test_prefix_tracking_keeps_slash24() -> None:
    e = env([
        R((ofa.Output(2),), priority=100, dl_type=ETH_TYPE_IPV4,
          nw_dst=(0x0A000100, 0xFFFFFF00)),
        R((ofa.Output(3),), priority=0),
    ])
    res = xlate(e, ip_key(dst=0x0A000105))
    assert res.actions == (dpa.Output(2),)
    assert res.megaflow.field_mask("ipv4_dst") == 0xFFFFFF00
    res = xlate(e, ip_key(dst=0x0B000105))  # a miss reads only the leading bits
    assert res.actions == (dpa.Output(3),)
    assert res.megaflow.field_mask("ipv4_dst") != 0xFFFFFFFF
    # a /32 rule next to it: a packet not that host does not become /32 either
    e = env([
        R((ofa.Output(2),), priority=100, dl_type=ETH_TYPE_IPV4,
          nw_dst=(0x0A000100, 0xFFFFFF00)),
        R((ofa.Output(4),), priority=200, dl_type=ETH_TYPE_IPV4, nw_dst=0x0A000101),
        R((ofa.Output(3),), priority=0),
    ])
    res = xlate(e, ip_key(dst=0x0A000180))
    assert res.actions == (dpa.Output(2),)
    assert res.megaflow.field_mask("ipv4_dst") == 0xFFFFFF80


def test_set_field_commits_before_output_and_never_reads_original() -> None:
    e = env([
        R((ofa.SetField("nw_dst", 0x0A0000FE, 0xFFFFFFFF), ofa.SetField("tp_dst", 8080, 0xFFFF),
           ofa.Resubmit(None, 1)), dl_type=ETH_TYPE_IPV4, nw_proto=6),
        R((ofa.Output(2),), table=1, dl_type=ETH_TYPE_IPV4, nw_dst=0x0A0000FE),
    ])
    res = xlate(e, ip_key())
    assert res.actions == (dpa.SetField("ipv4", (("ipv4_dst", 0x0A0000FE, 0xFFFFFFFF),)),
                           dpa.SetField("tcp", (("tp_dst", 8080, 0xFFFF),)),
                           dpa.Output(2))
    assert not res.megaflow.has("ipv4_dst") and not res.megaflow.has("tp_dst")


def test_masked_set_and_move() -> None:
    e = env([R((ofa.Move("tp_src", 0, "reg1", 0, 8), ofa.SetField("nw_tos", 4, 0x3F),
                ofa.Resubmit(None, 1)), dl_type=ETH_TYPE_IPV4, nw_proto=6),
             R((ofa.Output(2),), table=1, reg1=0xD2)])  # 1234 & 0xff
    res = xlate(e, ip_key(sport=1234))
    assert res.actions == (dpa.SetField("ipv4", (("ip_tos", 16, 0xFC),)), dpa.Output(2))
    assert res.megaflow.field_mask("tp_src") == 0xFF
    assert xlate(e, ip_key(sport=1235)).actions == ()


def test_vlan_rewrite() -> None:
    e = env([
        R((ofa.SetVlanVid(30), ofa.Output(2)), in_port=1),
        R((ofa.StripVlan(), ofa.Output(3)), in_port=2),
        R((ofa.PushVlan(), ofa.SetVlanVid(5), ofa.SetVlanPcp(3), ofa.Output(1)), in_port=3),
    ])
    res = xlate(e, ip_key(in_port=1))  # untagged: push
    assert res.actions == (dpa.PushVlan(30, 0), dpa.Output(2))
    res = xlate(e, ip_key(in_port=1, vid=10))  # tagged: pop + push (pcp kept)
    assert res.actions == (dpa.PopVlan(), dpa.PushVlan(30, 0), dpa.Output(2))
    assert res.megaflow.is_exact("vlan_pcp") and not res.megaflow.has("vlan_vid")
    res = xlate(e, ip_key(in_port=2, vid=10))
    assert res.actions == (dpa.PopVlan(), dpa.Output(3))
    assert not res.megaflow.has("vlan_vid")
    res = xlate(e, ip_key(in_port=2))  # nothing to strip
    assert res.actions == (dpa.Output(3),)
    res = xlate(e, ip_key(in_port=3, vid=7))  # push on tagged: QinQ, inner kept
    assert res.actions == (dpa.PushVlan(5, 3), dpa.Output(1))


def test_vlan_match_after_rewrite_reads_nothing_from_packet() -> None:
    e = env([
        R((ofa.SetVlanVid(30), ofa.Resubmit(None, 1)), in_port=1),
        R((ofa.Output(2),), table=1, dl_vlan=30),
    ])
    res = xlate(e, ip_key(in_port=1, vid=99))
    assert res.actions == (dpa.PopVlan(), dpa.PushVlan(30, 0), dpa.Output(2))
    assert not res.megaflow.has("vlan_vid")


def test_dl_vlan_matches_outer_8021q_and_8021ad_tags_like_ovs() -> None:
    e = env([
        R((ofa.Output(2),), dl_vlan=10),
        R((ofa.Output(3),), priority=50, vlan_tci=(0, 0x1000)),  # untagged
        R((ofa.Output(4),), priority=0),
    ])
    for tpid in (ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD):
        res = xlate(e, ip_key(vid=10, tpid=tpid))
        assert res.actions == (dpa.Output(2),)
        # the datapath cannot mask the TPID partially: the megaflow is exact on it
        assert res.megaflow.get("vlan_tpid") == (tpid, 0xFFFF)
        assert res.megaflow.get("vlan_vid") == (10, 0xFFF)
        assert xlate(e, ip_key(vid=11, tpid=tpid)).actions == (dpa.Output(4),)
    res = xlate(e, ip_key())
    assert res.actions == (dpa.Output(3),)
    assert res.megaflow.get("vlan_tpid") == (0, 0xFFFF)


def test_output_to_in_port_needs_in_port_action() -> None:
    e = env([R((ofa.Output(1), ofa.InPort()), in_port=1)])
    assert xlate(e, ip_key(in_port=1)).actions == (dpa.Output(1),)


def test_flood_and_all_skip_input_port() -> None:
    e = env([R((ofa.Flood(),))])
    assert xlate(e, ip_key(in_port=2)).actions == (dpa.Output(1), dpa.Output(3), dpa.Output(4))


def test_controller_userdata_identifies_packet_in() -> None:
    e = env([R((ofa.Controller(max_len=128),), cookie=0xABC, in_port=1)])
    res = xlate(e, ip_key())
    (ua,) = res.actions
    assert isinstance(ua, dpa.Userspace)
    meta = PacketInMeta.decode(ua.userdata)
    assert meta == res.packet_ins[0]
    assert meta is not None and meta.cookie == 0xABC and meta.max_len == 128
    assert meta.reason == "action" and meta.table == 0
    assert xlate(e, ip_key(), side_effects=False).packet_ins == ()


def test_dec_ttl_does_not_read_ttl() -> None:
    e = env([R((ofa.DecTtl(), ofa.Output(2)),)])
    res = xlate(e, ip_key(ttl=1))
    assert res.actions == (dpa.DecTtl(), dpa.Output(2))
    assert not res.megaflow.has("ip_ttl")


def test_resubmit_loop_hits_depth_limit_and_drops() -> None:
    e = env([R((ofa.Output(2), ofa.Resubmit(None, 0)),)])
    res = xlate(e, ip_key())
    assert res.actions == () and res.error is not None and str(MAX_DEPTH) in res.error


def test_resubmit_with_port_restores_in_port() -> None:
    e = env([
        R((ofa.Resubmit(3, 1), ofa.Resubmit(None, 1)), in_port=1),
        R((ofa.Output(2),), table=1, in_port=3),
        R((ofa.Output(4),), table=1, in_port=1),
    ])
    assert xlate(e, ip_key(in_port=1)).actions == (dpa.Output(2), dpa.Output(4))


def test_normal_learning_and_vlans() -> None:
    macs = MacTable()
    e = env([R((ofa.Normal(),))], access_trunk_ports(), macs)
    res = xlate(e, ip_key(in_port=1, eth_dst=MAC_B))  # unknown: flood vlan 10
    assert res.actions == (dpa.Output(2), dpa.PushVlan(10, 0), dpa.Output(4))
    assert res.uses_normal and len(res.learned) == 1
    m = res.megaflow
    assert m.is_exact("eth_src") and m.is_exact("eth_dst") and m.is_exact("in_port")
    assert not m.has("ipv4_dst")
    learn = res.learned[0]
    macs.learn(learn.vlan, learn.mac, learn.port, 0.0)
    # reply from the trunk, tagged 10: unicast to port 1, tag stripped
    res = xlate(e, ip_key(in_port=4, vid=10, eth_src=MAC_B, eth_dst=MAC_A))
    assert res.actions == (dpa.PopVlan(), dpa.Output(1))
    # the same MAC moves to port 2
    macs.learn(10, MAC_A, 2, 1.0)
    res = xlate(e, ip_key(in_port=4, vid=10, eth_src=MAC_B, eth_dst=MAC_A))
    assert res.actions == (dpa.PopVlan(), dpa.Output(2))
    # broadcast from the trunk in vlan 20
    res = xlate(e, ip_key(in_port=4, vid=20, eth_src=MAC_B, eth_dst=BCAST))
    assert res.actions == (dpa.PopVlan(), dpa.Output(3))
    # aged out: flood again
    e.now = 1000.0
    res = xlate(e, ip_key(in_port=4, vid=10, eth_src=MAC_B, eth_dst=MAC_A))
    assert res.actions == (dpa.PopVlan(), dpa.Output(1), dpa.Output(2))
