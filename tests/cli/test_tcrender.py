"""FlowerFilter -> ``tc filter add ... flower ...`` text (pure)."""

from __future__ import annotations

from cli.tcrender import render_action, render_delete, render_filter, render_keys
from offload import tc_nla as N
from offload import tc_values as V

NAMES = {5: "rep5", 6: "rep6"}


def name(ifindex: int) -> str:
    return NAMES.get(ifindex, f"ifindex:{ifindex}")


def flt(keys: dict[str, V.Value], actions: tuple[V.TcAction, ...] = (V.Gact.drop(),),
        **kw: object) -> V.FlowerFilter:
    args: dict[str, object] = {"ifindex": 5, "prio": 0x800, "handle": 3, "keys": keys,
                               "actions": actions}
    args.update(kw)
    return V.FlowerFilter(**args)  # type: ignore[arg-type]


def test_full_command_line() -> None:
    f = flt({"TCA_FLOWER_KEY_ETH_TYPE": 0x0800, "TCA_FLOWER_KEY_IP_PROTO": 6,
             "TCA_FLOWER_KEY_IPV4_DST": "10.0.0.0", "TCA_FLOWER_KEY_IPV4_DST_MASK": "255.255.255.0",
             "TCA_FLOWER_KEY_TCP_DST": 80},
            (V.Mirred(6),), protocol=0x0800, flags=N.TCA_CLS_FLAGS_SKIP_SW, chain=0,
            cookie=bytes(range(16)))
    assert render_filter(f, name) == (
        "tc filter add dev rep5 ingress protocol ip prio 2048 handle 0x3 flower skip_sw "
        "ip_proto tcp dst_ip 10.0.0.0/24 dst_port 80 "
        "action mirred egress redirect dev rep6 cookie 000102030405060708090a0b0c0d0e0f")


def test_netns_chain_and_delete() -> None:
    f = flt({}, chain=4, flags=N.TCA_CLS_FLAGS_SKIP_HW)
    assert render_filter(f, name, netns="ns1").startswith(
        "tc -n ns1 filter add dev rep5 ingress protocol all prio 2048 handle 0x3 chain 4 "
        "flower skip_hw action drop")
    assert render_delete(f, name) == ("tc filter del dev rep5 ingress protocol all prio 2048 "
                                      "handle 0x3 chain 4 flower")


def test_masks_mac_prefix_and_non_contiguous() -> None:
    f = flt({"TCA_FLOWER_KEY_ETH_SRC": "02:00:00:00:00:00",
             "TCA_FLOWER_KEY_ETH_SRC_MASK": "ff:ff:ff:00:00:00",
             "TCA_FLOWER_KEY_ETH_DST": "00:00:00:00:00:01",
             "TCA_FLOWER_KEY_ETH_DST_MASK": "00:00:00:00:00:ff"})
    words = render_keys(f)
    assert "src_mac 02:00:00:00:00:00/24" in words
    assert "dst_mac 00:00:00:00:00:01/00:00:00:00:00:ff" in words


def test_vlan_keys_come_before_ip_keys() -> None:
    f = flt({"TCA_FLOWER_KEY_ETH_TYPE": 0x8100, "TCA_FLOWER_KEY_VLAN_ID": 10,
             "TCA_FLOWER_KEY_VLAN_ETH_TYPE": 0x0800, "TCA_FLOWER_KEY_IP_PROTO": 1,
             "TCA_FLOWER_KEY_ICMPV4_TYPE": 8, "TCA_FLOWER_KEY_ICMPV4_CODE": 0,
             "TCA_FLOWER_KEY_IPV4_SRC": "10.1.1.1"}, protocol=0x8100)
    words = render_keys(f)
    assert words.index("vlan_id 10") < words.index("vlan_ethtype ip") \
        < words.index("ip_proto icmp") < words.index("src_ip 10.1.1.1")
    assert words.index("type 8") + 1 == words.index("code 0")
    assert " protocol 802.1Q " in render_filter(f, name)


def test_ip_flags_ct_state_tos_ttl() -> None:
    f = flt({"TCA_FLOWER_KEY_ETH_TYPE": 0x0800, "TCA_FLOWER_KEY_FLAGS": 1,
             "TCA_FLOWER_KEY_FLAGS_MASK": 3, "TCA_FLOWER_KEY_CT_STATE": 0b1010,
             "TCA_FLOWER_KEY_CT_STATE_MASK": 0b1011, "TCA_FLOWER_KEY_IP_TOS": 0x10,
             "TCA_FLOWER_KEY_IP_TOS_MASK": 0xFC, "TCA_FLOWER_KEY_IP_TTL": 64},
            protocol=0x0800)
    words = render_keys(f)
    assert "ip_flags frag/nofirstfrag" in words
    assert "ct_state -new+est+trk" in words
    assert "ip_tos 0x10/0xfc" in words and "ip_ttl 64" in words


def test_ipv6_and_arp() -> None:
    f6 = flt({"TCA_FLOWER_KEY_ETH_TYPE": 0x86DD, "TCA_FLOWER_KEY_IPV6_DST": "2001:db8::",
              "TCA_FLOWER_KEY_IPV6_DST_MASK": "ffff:ffff::"}, protocol=0x86DD)
    assert render_keys(f6) == ["dst_ip 2001:db8::/32"]
    fa = flt({"TCA_FLOWER_KEY_ETH_TYPE": 0x0806, "TCA_FLOWER_KEY_ARP_OP": 1,
              "TCA_FLOWER_KEY_ARP_TIP": "10.0.0.1"}, protocol=0x0806)
    assert render_keys(fa) == ["arp_tip 10.0.0.1", "arp_op request"]


def test_actions() -> None:
    assert render_action(V.Gact.drop(), name) == "drop"
    assert render_action(V.Gact.pass_(), name) == "pass"
    assert render_action(V.Gact.goto_chain(7), name) == "goto chain 7"
    assert render_action(V.Mirred(6, N.TCA_EGRESS_MIRROR), name) == \
        "mirred egress mirror dev rep6"
    assert render_action(V.Mirred(9), name) == "mirred egress redirect dev ifindex:9"
    assert render_action(V.Vlan(N.TCA_VLAN_ACT_POP), name) == "vlan pop pipe"
    assert render_action(V.Vlan(N.TCA_VLAN_ACT_PUSH, 5, 1, 0x88A8), name) == \
        "vlan push id 5 priority 1 protocol 802.1ad pipe"
    assert render_action(V.Csum(1 | 8 | 16), name) == "csum ip4h and tcp and udp pipe"
    assert render_action(V.TunnelKeySet("1.1.1.1", "2.2.2.2", key_id=42, dst_port=4789),
                         name) == ("tunnel_key set src_ip 1.1.1.1 dst_ip 2.2.2.2 id 42 "
                                   "dst_port 4789 csum pipe")
    assert render_action(V.TunnelKeyUnset(), name) == "tunnel_key unset pipe"
    assert render_action(V.Sample(100, 3), name) == "sample rate 100 group 3 pipe"
    assert render_action(V.SkbEdit(mark=0x10), name) == "skbedit mark 0x10 pipe"
    assert render_action(V.UnknownAction("police"), name).startswith("police")


def test_pedit_named_fields_and_dec_ttl() -> None:
    from offload.tc_flower import _pedit_words
    words = _pedit_words("eth", (("eth_dst", 0x0000000000AA, (1 << 48) - 1),))
    assert not hasattr(words, "reason")
    p = V.Pedit(tuple(words))
    assert render_action(p, name) == "pedit ex munge eth dst set 00:00:00:00:00:aa pipe"
    tcp = V.Pedit(tuple(_pedit_words("tcp", (("tp_dst", 8080, 0xFFFF),))))  # type: ignore[arg-type]
    assert render_action(tcp, name) == "pedit ex munge tcp dport set 8080 pipe"
    ttl = V.Pedit((V.PeditKey(2, 8, 0x00FFFFFF, 0xFF000000, N.TCA_PEDIT_KEY_EX_CMD_ADD),))
    assert render_action(ttl, name) == "pedit ex munge ip ttl add 0xff pipe"
    tos = V.Pedit(tuple(_pedit_words("ipv4", (("ip_tos", 0x20, 0xFC),))))  # type: ignore[arg-type]
    assert render_action(tos, name) == "pedit ex munge ip tos set 0x20 retain 0xfc pipe"
