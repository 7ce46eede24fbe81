"""Shared tc flower test cases: one entry per key group and per action.

Each case is (name, protocol, keys, actions).  The unit tier round-trips them
through the netlink codec; the kernel tier installs them on a veth and reads
them back (our decoder and ``tc -j``).  ``{ifindex}``-dependent actions take
the device's ifindex at build time, hence the callables.
"""

from __future__ import annotations

from typing import Any, Callable

from offload import tc_nla as N
from offload.tc_values import (
    Csum, Gact, Mirred, Pedit, PeditKey, Sample, SkbEdit, TcAction, TunnelKeySet,
    TunnelKeyUnset, Vlan,
)

IP, IPV6, ARP, MPLS = 0x0800, 0x86DD, 0x0806, 0x8847
K = "TCA_FLOWER_KEY_"


def k(**kw: Any) -> dict[str, Any]:
    return {K + name: value for name, value in kw.items()}


# name -> (protocol, keys)
KEY_CASES: dict[str, tuple[int, dict[str, Any]]] = {
    "eth": (N.ETH_P_ALL, k(ETH_DST="02:00:00:00:00:01", ETH_SRC="02:00:00:00:00:00",
                           ETH_SRC_MASK="ff:ff:ff:00:00:00")),
    "ipv4_tcp": (IP, k(ETH_TYPE=IP, IP_PROTO=6, IPV4_SRC="10.1.0.0", IPV4_SRC_MASK="255.255.0.0",
                       IPV4_DST="10.2.3.4", IP_TOS=0x10, IP_TOS_MASK=0xFC, IP_TTL=64,
                       TCP_SRC=1000, TCP_SRC_MASK=0xFF00, TCP_DST=80, TCP_FLAGS=0x02,
                       TCP_FLAGS_MASK=0x17)),
    "ipv4_frag": (IP, k(ETH_TYPE=IP, FLAGS=N.TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT,
                        FLAGS_MASK=N.TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT)),
    "ipv4_firstfrag": (IP, k(ETH_TYPE=IP, FLAGS=3)),
    "ipv6_udp": (IPV6, k(ETH_TYPE=IPV6, IP_PROTO=17, IPV6_SRC="2001:db8::1",
                         IPV6_DST="2001:db8:1::", IPV6_DST_MASK="ffff:ffff:ffff::",
                         IP_TTL=1, IP_TTL_MASK=0xFF, UDP_SRC=53, UDP_DST=5353,
                         UDP_DST_MASK=0xFFF0)),
    "sctp": (IP, k(ETH_TYPE=IP, IP_PROTO=132, SCTP_SRC=36412, SCTP_DST=2905)),
    "icmpv4": (IP, k(ETH_TYPE=IP, IP_PROTO=1, ICMPV4_TYPE=8, ICMPV4_CODE=0)),
    "icmpv6": (IPV6, k(ETH_TYPE=IPV6, IP_PROTO=58, ICMPV6_TYPE=135, ICMPV6_CODE=0,
                       ICMPV6_TYPE_MASK=0xFE)),
    "arp": (ARP, k(ETH_TYPE=ARP, ARP_SIP="10.0.0.1", ARP_TIP="10.0.0.0",
                   ARP_TIP_MASK="255.255.255.0", ARP_OP=1, ARP_SHA="02:00:00:00:00:05",
                   ARP_THA="00:00:00:00:00:00", ARP_THA_MASK="ff:ff:ff:ff:ff:ff")),
    "vlan": (N.ETH_P_8021Q, k(ETH_TYPE=N.ETH_P_8021Q, VLAN_ID=100, VLAN_PRIO=3,
                              VLAN_ETH_TYPE=IP, IP_PROTO=17)),
    "qinq": (N.ETH_P_8021AD, k(ETH_TYPE=N.ETH_P_8021AD, VLAN_ID=10, VLAN_PRIO=1,
                               VLAN_ETH_TYPE=N.ETH_P_8021Q, CVLAN_ID=20, CVLAN_PRIO=2,
                               CVLAN_ETH_TYPE=IPV6)),
    "mpls": (MPLS, k(ETH_TYPE=MPLS, MPLS_LABEL=1000, MPLS_TC=3, MPLS_BOS=1, MPLS_TTL=64)),
    "enc_v4": (IP, k(ETH_TYPE=IP, ENC_KEY_ID=42, ENC_IPV4_SRC="192.0.2.1",
                     ENC_IPV4_DST="192.0.2.2", ENC_UDP_DST_PORT=4789, ENC_UDP_SRC_PORT=1234,
                     ENC_IP_TOS=0x20, ENC_IP_TTL=32)),
    "enc_v6": (IP, k(ETH_TYPE=IP, ENC_IPV6_SRC="2001:db8::a", ENC_IPV6_DST="2001:db8::b",
                     ENC_UDP_DST_PORT=6081)),
    "ct": (IP, k(ETH_TYPE=IP, CT_STATE=0x0A, CT_STATE_MASK=0x0A, CT_ZONE=5, CT_MARK=0x10,
                 CT_MARK_MASK=0xF0)),
}

ActionBuilder = Callable[[int], tuple[TcAction, ...]]

# name -> builder(ifindex of an existing device) -> actions
ACTION_CASES: dict[str, ActionBuilder] = {
    "gact_drop": lambda i: (Gact.drop(),),
    "gact_pass": lambda i: (Gact.pass_(),),
    "gact_goto_chain": lambda i: (Gact.goto_chain(7),),
    "mirred_egress_redirect": lambda i: (Mirred(i, N.TCA_EGRESS_REDIR),),
    "mirred_egress_mirror": lambda i: (Mirred(i, N.TCA_EGRESS_MIRROR), Gact.drop()),
    "mirred_ingress_redirect": lambda i: (Mirred(i, N.TCA_INGRESS_REDIR),),
    "mirred_ingress_mirror": lambda i: (Mirred(i, N.TCA_INGRESS_MIRROR), Gact.pass_()),
    "vlan_push": lambda i: (Vlan(N.TCA_VLAN_ACT_PUSH, vid=100, prio=5,
                                 protocol=N.ETH_P_8021AD), Gact.pass_()),
    "vlan_pop": lambda i: (Vlan(N.TCA_VLAN_ACT_POP), Gact.pass_()),
    "vlan_modify": lambda i: (Vlan(N.TCA_VLAN_ACT_MODIFY, vid=7), Gact.pass_()),
    "pedit_csum": lambda i: (
        Pedit((PeditKey(N.TCA_PEDIT_KEY_EX_HDR_TYPE_ETH, 0, 0, 0x02000000),
               PeditKey(N.TCA_PEDIT_KEY_EX_HDR_TYPE_ETH, 4, 0x0000FFFF, 0x00010000),
               PeditKey(N.TCA_PEDIT_KEY_EX_HDR_TYPE_IP4, 16, 0, 0x0A000001),
               PeditKey(N.TCA_PEDIT_KEY_EX_HDR_TYPE_IP4, 8, 0x00FFFFFF, 0xFF000000,
                        N.TCA_PEDIT_KEY_EX_CMD_ADD),
               PeditKey(N.TCA_PEDIT_KEY_EX_HDR_TYPE_TCP, 0, 0xFFFF0000, 0x00000050),
               PeditKey(N.TCA_PEDIT_KEY_EX_HDR_TYPE_IP6, 24, 0, 0x20010DB8))),
        Csum(N.TCA_CSUM_UPDATE_FLAG_IPV4HDR | N.TCA_CSUM_UPDATE_FLAG_TCP
             | N.TCA_CSUM_UPDATE_FLAG_UDP | N.TCA_CSUM_UPDATE_FLAG_ICMP
             | N.TCA_CSUM_UPDATE_FLAG_SCTP),
        Gact.pass_()),
    "tunnel_key_set_v4": lambda i: (
        TunnelKeySet("192.0.2.1", "192.0.2.2", key_id=42, dst_port=4789, tos=0x10, ttl=64,
                     no_csum=True), Mirred(i)),
    "tunnel_key_set_v6": lambda i: (
        TunnelKeySet("2001:db8::1", "2001:db8::2", key_id=7, dst_port=6081), Mirred(i)),
    "tunnel_key_unset": lambda i: (TunnelKeyUnset(), Gact.pass_()),
    "skbedit": lambda i: (SkbEdit(mark=0x42, mask=0xFF, priority=0x10001, ptype=0),
                          Gact.pass_()),
    "sample": lambda i: (Sample(rate=100, group=5, trunc=128), Gact.pass_()),
}


def random_filter(m: Any, port: int, acts: str, *, chain: int, prio: int, handle: int,
                  flags: int, cookie: bytes) -> Any:
    """A filter for hypothesis codec tests: ``m`` on ``port`` translated by
    ``to_flower`` (keys and protocol), then the action case ``acts`` and the
    given header values; None when the match does not translate."""
    from dpif import actions as A
    from offload.tc_flower import to_flower
    from offload.tc_values import FlowerFilter
    from tests.offload.test_tc_flower import PORTS, UFID

    m = m.with_field("in_port", port).without("recirc_id")
    r = to_flower(m, (A.Output(1),), UFID, ports=PORTS, prio=prio, handle=handle, flags=0)
    if not isinstance(r, FlowerFilter):
        return None
    return FlowerFilter(ifindex=r.ifindex, prio=prio, handle=handle, keys=r.keys,
                        actions=ACTION_CASES[acts](9), chain=chain, protocol=r.protocol,
                        flags=flags, cookie=cookie if r.actions else b"")
