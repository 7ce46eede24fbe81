"""Hypothesis strategies for the dpif model: consistent matches and action lists.

A generated match respects OVS's prerequisites (L3 fields only under their
eth_type, L4 only under their ip_proto), so every match it makes is printable.
"""

from __future__ import annotations

from hypothesis import strategies as st

from dpif import actions as A
from dpif.fields import (
    BY_NAME, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_MPLS, ETH_TYPE_VLAN,
    ETH_TYPE_VLAN_8021AD, GROUP_BY_NAME, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP,
)
from dpif.match import Match


def field_value(name: str) -> st.SearchStrategy[tuple[int, int]]:
    """(value, mask) for one field; mask exact, or any mask if maskable."""
    f = BY_NAME[name]
    exact = st.integers(0, f.all_ones).map(lambda v: (v, f.all_ones))
    if not f.maskable:
        return exact
    masked = st.tuples(st.integers(0, f.all_ones), st.integers(1, f.all_ones)).map(
        lambda vm: (vm[0] & vm[1], vm[1]))
    return st.one_of(exact, masked)


def _some(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, tuple[int, int]]]:
    if not names:
        return st.just({})
    return st.lists(st.sampled_from(names), unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({n: field_value(n) for n in chosen}))


META = ("recirc_id", "dp_hash", "skb_mark", "in_port", "ct_state", "ct_zone", "ct_mark",
        "tun_id", "tun_ipv4_src", "tun_ipv4_dst", "tun_ipv6_src", "tun_ipv6_dst", "tun_tos",
        "tun_ttl", "tun_tp_src", "tun_tp_dst", "tun_flags", "eth_src", "eth_dst")
L4_BY_PROTO = {IPPROTO_TCP: ("tp_src", "tp_dst", "tcp_flags"), IPPROTO_UDP: ("tp_src", "tp_dst"),
               IPPROTO_SCTP: ("tp_src", "tp_dst"), IPPROTO_ICMP: ("icmp_type", "icmp_code"),
               IPPROTO_ICMPV6: ("icmp_type", "icmp_code", "nd_target", "nd_sll", "nd_tll")}
L3_BY_TYPE = {
    ETH_TYPE_IPV4: ("ipv4_src", "ipv4_dst", "ip_tos", "ip_ttl", "ip_frag"),
    ETH_TYPE_IPV6: ("ipv6_src", "ipv6_dst", "ipv6_label", "ip_tos", "ip_ttl", "ip_frag"),
    ETH_TYPE_ARP: ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha"),
    ETH_TYPE_MPLS: ("mpls_label", "mpls_tc", "mpls_ttl", "mpls_bos"),
}


@st.composite
def matches(draw: st.DrawFn) -> Match:
    values = draw(_some(META))
    et = draw(st.sampled_from([None, 0x1234, *L3_BY_TYPE]))
    if draw(st.booleans()):
        values["vlan_tpid"] = (draw(st.sampled_from([ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD])), 0xFFFF)
        values.update(draw(_some(("vlan_vid", "vlan_pcp"))))
        if draw(st.booleans()):
            values["cvlan_tpid"] = (ETH_TYPE_VLAN, 0xFFFF)
            values.update(draw(_some(("cvlan_vid", "cvlan_pcp"))))
    if et is not None:
        values["eth_type"] = (et, 0xFFFF)
        values.update(draw(_some(L3_BY_TYPE.get(et, ()))))
        if et in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
            protos = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP,
                      IPPROTO_ICMP if et == ETH_TYPE_IPV4 else IPPROTO_ICMPV6, 47]
            proto = draw(st.sampled_from([None, *protos]))
            if proto is not None:
                values["ip_proto"] = (proto, 0xFF)
                values.update(draw(_some(L4_BY_PROTO.get(proto, ()))))
    return Match.build(values)


def set_actions() -> st.SearchStrategy[A.SetField]:
    groups = ["eth", "ipv4", "ipv6", "tcp", "udp", "tunnel"]

    def one(g: str) -> st.SearchStrategy[A.SetField]:
        names = GROUP_BY_NAME[g].field_names()
        return st.lists(st.sampled_from(names), min_size=1, unique=True).flatmap(
            lambda chosen: st.tuples(*[field_value(n).filter(lambda vm: vm[1] != 0)
                                       for n in chosen]).map(
                lambda vms: A.SetField(g, tuple((n, v, m) for n, (v, m) in zip(chosen, vms)))))
    return st.sampled_from(groups).flatmap(one)


def _leaf_actions() -> st.SearchStrategy[A.Action]:
    return st.one_of(
        st.integers(0, 2**32 - 1).map(A.Output),
        st.builds(A.PushVlan, st.integers(0, 4095), st.integers(0, 7),
                  st.sampled_from([ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD])),
        st.just(A.PopVlan()), st.just(A.DecTtl()), st.just(A.CtClear()),
        st.integers(0, 2**32 - 1).map(A.Recirc),
        st.integers(0, 2**32 - 1).map(A.Hash),
        st.builds(A.Userspace, st.integers(0, 2**32 - 1), st.binary(max_size=8)),
        st.builds(A.Ct, st.booleans(), st.integers(0, 65535),
                  st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1),
                                                 st.just(0xFFFFFFFF)))),
        set_actions(),
    )


def action_lists() -> st.SearchStrategy[tuple[A.Action, ...]]:
    # Sample probabilities that survive the text's one decimal: whole per-mille.
    sample = st.builds(
        lambda pm, inner: A.Sample(round(pm / 1000 * A.UINT32_MAX), tuple(inner)),
        st.integers(0, 1000), st.lists(_leaf_actions(), min_size=1, max_size=3))
    return st.lists(st.one_of(_leaf_actions(), sample), max_size=6).map(tuple)
