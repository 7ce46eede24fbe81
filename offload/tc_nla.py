"""tc flower / tc action netlink declarations (pyroute2 ``nla_map`` style).

Theory of operation
-------------------
pyroute2 0.9.7 knows neither the flower classifier nor the pedit, csum,
tunnel_key and sample actions, TCA_CHAIN, action cookies or hardware stats.
This module declares them once, with the kernel's attribute names verbatim
(include/uapi/linux/pkt_cls.h, rtnetlink.h, gen_stats.h, tc_act/*.h of 6.1),
as pyroute2 ``nla`` classes.  Nothing here does I/O; ``tc_netlink`` sends the
messages and ``tc_values`` turns them into frozen values and back.

* ``FLOWER_ATTRS`` lists TCA_FLOWER_* in kernel enum order with the pyroute2
  atom that carries it.  The flower ``nla_map`` is derived from it, and so are
  ``FLOWER_KEY_ATTRS`` (what a filter may match on), ``MASK_OF`` (key -> mask
  attribute) and the value kinds used for validation.
* ``ACTION_OPTIONS`` maps an action kind ('gact', 'mirred', ...) to the class
  that decodes its TCA_ACT_OPTIONS; ``tca_act`` picks it from TCA_ACT_KIND.
* ``tcmsg_flower`` is a complete ``struct tcmsg`` with every TCA_* attribute
  (pyroute2's own ``tcmsg`` stops at TCA_STAB and would drop TCA_CHAIN
  silently on encode).  ``TCA_OPTIONS`` decodes as flower options when
  TCA_KIND is 'flower'; other classifiers stay raw.

Byte orders follow the kernel, not the header comments: VLAN ids, MPLS
labels and ct_state/zone/mark are host order; ports, ethertypes, TCP flags,
ENC_KEY_ID and KEY_FLAGS are big-endian.  The struct-with-array payloads of
pedit (``tc_pedit_sel`` + ``tc_pedit_key[]``) are packed with ``struct``
below, as pyroute2 has no declarative form for a trailing array.
"""

from __future__ import annotations

import struct
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, nla, nlmsg

# --- constants (pkt_sched.h, pkt_cls.h, if_ether.h) --------------------------

TC_H_INGRESS_QDISC = 0xFFFF0000  # handle of the ingress / clsact qdisc
TC_H_INGRESS_PARENT = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)

# RTM_GETTFILTER dump request: TCA_DUMP_FLAGS (an nla_bitfield32) with
# TCA_DUMP_FLAGS_TERSE asks for the terse dump (since 5.7): per filter only
# the tcmsg, TCA_KIND, TCA_CHAIN and, in TCA_OPTIONS, the flags and each
# action's kind, stats and cookie (offload/tc_terse.py).
TCA_DUMP_FLAGS_TERSE = 1 << 0

TCA_CLS_FLAGS_SKIP_HW = 1 << 0
TCA_CLS_FLAGS_SKIP_SW = 1 << 1
TCA_CLS_FLAGS_IN_HW = 1 << 2
TCA_CLS_FLAGS_NOT_IN_HW = 1 << 3
TCA_CLS_FLAGS_VERBOSE = 1 << 4
POLICY_FLAGS = TCA_CLS_FLAGS_SKIP_HW | TCA_CLS_FLAGS_SKIP_SW | TCA_CLS_FLAGS_VERBOSE

TC_ACT_UNSPEC = -1
TC_ACT_OK = 0
TC_ACT_RECLASSIFY = 1
TC_ACT_SHOT = 2
TC_ACT_PIPE = 3
TC_ACT_STOLEN = 4
TC_ACT_TRAP = 8
TC_ACT_JUMP = 1 << 28
TC_ACT_GOTO_CHAIN = 2 << 28
TC_ACT_EXT_VAL_MASK = (1 << 28) - 1
TCA_ACT_MAX_PRIO = 32
TC_COOKIE_MAX_SIZE = 16

TCA_EGRESS_REDIR = 1
TCA_EGRESS_MIRROR = 2
TCA_INGRESS_REDIR = 3
TCA_INGRESS_MIRROR = 4

TCA_VLAN_ACT_POP = 1
TCA_VLAN_ACT_PUSH = 2
TCA_VLAN_ACT_MODIFY = 3

TCA_TUNNEL_KEY_ACT_SET = 1
TCA_TUNNEL_KEY_ACT_RELEASE = 2

TCA_PEDIT_KEY_EX_HDR_TYPE_NETWORK = 0
TCA_PEDIT_KEY_EX_HDR_TYPE_ETH = 1
TCA_PEDIT_KEY_EX_HDR_TYPE_IP4 = 2
TCA_PEDIT_KEY_EX_HDR_TYPE_IP6 = 3
TCA_PEDIT_KEY_EX_HDR_TYPE_TCP = 4
TCA_PEDIT_KEY_EX_HDR_TYPE_UDP = 5
TCA_PEDIT_KEY_EX_CMD_SET = 0
TCA_PEDIT_KEY_EX_CMD_ADD = 1

TCA_CSUM_UPDATE_FLAG_IPV4HDR = 1
TCA_CSUM_UPDATE_FLAG_ICMP = 2
TCA_CSUM_UPDATE_FLAG_IGMP = 4
TCA_CSUM_UPDATE_FLAG_TCP = 8
TCA_CSUM_UPDATE_FLAG_UDP = 16
TCA_CSUM_UPDATE_FLAG_UDPLITE = 32
TCA_CSUM_UPDATE_FLAG_SCTP = 64

TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT = 1 << 0
TCA_FLOWER_KEY_FLAGS_FRAG_IS_FIRST = 1 << 1

# --- flower: one table, kernel enum order -----------------------------------
# (name, pyroute2 atom).  'hex' marks attributes we decode but do not build.

FLOWER_ATTRS: tuple[tuple[str, str], ...] = (
    ("TCA_FLOWER_UNSPEC", "none"),
    ("TCA_FLOWER_CLASSID", "uint32"),
    ("TCA_FLOWER_INDEV", "asciiz"),
    ("TCA_FLOWER_ACT", "tca_act_prio"),
    ("TCA_FLOWER_KEY_ETH_DST", "l2addr"),
    ("TCA_FLOWER_KEY_ETH_DST_MASK", "l2addr"),
    ("TCA_FLOWER_KEY_ETH_SRC", "l2addr"),
    ("TCA_FLOWER_KEY_ETH_SRC_MASK", "l2addr"),
    ("TCA_FLOWER_KEY_ETH_TYPE", "be16"),
    ("TCA_FLOWER_KEY_IP_PROTO", "uint8"),
    ("TCA_FLOWER_KEY_IPV4_SRC", "ip4addr"),
    ("TCA_FLOWER_KEY_IPV4_SRC_MASK", "ip4addr"),
    ("TCA_FLOWER_KEY_IPV4_DST", "ip4addr"),
    ("TCA_FLOWER_KEY_IPV4_DST_MASK", "ip4addr"),
    ("TCA_FLOWER_KEY_IPV6_SRC", "ip6addr"),
    ("TCA_FLOWER_KEY_IPV6_SRC_MASK", "ip6addr"),
    ("TCA_FLOWER_KEY_IPV6_DST", "ip6addr"),
    ("TCA_FLOWER_KEY_IPV6_DST_MASK", "ip6addr"),
    ("TCA_FLOWER_KEY_TCP_SRC", "be16"),
    ("TCA_FLOWER_KEY_TCP_DST", "be16"),
    ("TCA_FLOWER_KEY_UDP_SRC", "be16"),
    ("TCA_FLOWER_KEY_UDP_DST", "be16"),
    ("TCA_FLOWER_FLAGS", "uint32"),
    ("TCA_FLOWER_KEY_VLAN_ID", "uint16"),
    ("TCA_FLOWER_KEY_VLAN_PRIO", "uint8"),
    ("TCA_FLOWER_KEY_VLAN_ETH_TYPE", "be16"),
    ("TCA_FLOWER_KEY_ENC_KEY_ID", "be32"),
    ("TCA_FLOWER_KEY_ENC_IPV4_SRC", "ip4addr"),
    ("TCA_FLOWER_KEY_ENC_IPV4_SRC_MASK", "ip4addr"),
    ("TCA_FLOWER_KEY_ENC_IPV4_DST", "ip4addr"),
    ("TCA_FLOWER_KEY_ENC_IPV4_DST_MASK", "ip4addr"),
    ("TCA_FLOWER_KEY_ENC_IPV6_SRC", "ip6addr"),
    ("TCA_FLOWER_KEY_ENC_IPV6_SRC_MASK", "ip6addr"),
    ("TCA_FLOWER_KEY_ENC_IPV6_DST", "ip6addr"),
    ("TCA_FLOWER_KEY_ENC_IPV6_DST_MASK", "ip6addr"),
    ("TCA_FLOWER_KEY_TCP_SRC_MASK", "be16"),
    ("TCA_FLOWER_KEY_TCP_DST_MASK", "be16"),
    ("TCA_FLOWER_KEY_UDP_SRC_MASK", "be16"),
    ("TCA_FLOWER_KEY_UDP_DST_MASK", "be16"),
    ("TCA_FLOWER_KEY_SCTP_SRC_MASK", "be16"),
    ("TCA_FLOWER_KEY_SCTP_DST_MASK", "be16"),
    ("TCA_FLOWER_KEY_SCTP_SRC", "be16"),
    ("TCA_FLOWER_KEY_SCTP_DST", "be16"),
    ("TCA_FLOWER_KEY_ENC_UDP_SRC_PORT", "be16"),
    ("TCA_FLOWER_KEY_ENC_UDP_SRC_PORT_MASK", "be16"),
    ("TCA_FLOWER_KEY_ENC_UDP_DST_PORT", "be16"),
    ("TCA_FLOWER_KEY_ENC_UDP_DST_PORT_MASK", "be16"),
    ("TCA_FLOWER_KEY_FLAGS", "be32"),
    ("TCA_FLOWER_KEY_FLAGS_MASK", "be32"),
    ("TCA_FLOWER_KEY_ICMPV4_CODE", "uint8"),
    ("TCA_FLOWER_KEY_ICMPV4_CODE_MASK", "uint8"),
    ("TCA_FLOWER_KEY_ICMPV4_TYPE", "uint8"),
    ("TCA_FLOWER_KEY_ICMPV4_TYPE_MASK", "uint8"),
    ("TCA_FLOWER_KEY_ICMPV6_CODE", "uint8"),
    ("TCA_FLOWER_KEY_ICMPV6_CODE_MASK", "uint8"),
    ("TCA_FLOWER_KEY_ICMPV6_TYPE", "uint8"),
    ("TCA_FLOWER_KEY_ICMPV6_TYPE_MASK", "uint8"),
    ("TCA_FLOWER_KEY_ARP_SIP", "ip4addr"),
    ("TCA_FLOWER_KEY_ARP_SIP_MASK", "ip4addr"),
    ("TCA_FLOWER_KEY_ARP_TIP", "ip4addr"),
    ("TCA_FLOWER_KEY_ARP_TIP_MASK", "ip4addr"),
    ("TCA_FLOWER_KEY_ARP_OP", "uint8"),
    ("TCA_FLOWER_KEY_ARP_OP_MASK", "uint8"),
    ("TCA_FLOWER_KEY_ARP_SHA", "l2addr"),
    ("TCA_FLOWER_KEY_ARP_SHA_MASK", "l2addr"),
    ("TCA_FLOWER_KEY_ARP_THA", "l2addr"),
    ("TCA_FLOWER_KEY_ARP_THA_MASK", "l2addr"),
    ("TCA_FLOWER_KEY_MPLS_TTL", "uint8"),
    ("TCA_FLOWER_KEY_MPLS_BOS", "uint8"),
    ("TCA_FLOWER_KEY_MPLS_TC", "uint8"),
    ("TCA_FLOWER_KEY_MPLS_LABEL", "uint32"),
    ("TCA_FLOWER_KEY_TCP_FLAGS", "be16"),
    ("TCA_FLOWER_KEY_TCP_FLAGS_MASK", "be16"),
    ("TCA_FLOWER_KEY_IP_TOS", "uint8"),
    ("TCA_FLOWER_KEY_IP_TOS_MASK", "uint8"),
    ("TCA_FLOWER_KEY_IP_TTL", "uint8"),
    ("TCA_FLOWER_KEY_IP_TTL_MASK", "uint8"),
    ("TCA_FLOWER_KEY_CVLAN_ID", "uint16"),
    ("TCA_FLOWER_KEY_CVLAN_PRIO", "uint8"),
    ("TCA_FLOWER_KEY_CVLAN_ETH_TYPE", "be16"),
    ("TCA_FLOWER_KEY_ENC_IP_TOS", "uint8"),
    ("TCA_FLOWER_KEY_ENC_IP_TOS_MASK", "uint8"),
    ("TCA_FLOWER_KEY_ENC_IP_TTL", "uint8"),
    ("TCA_FLOWER_KEY_ENC_IP_TTL_MASK", "uint8"),
    ("TCA_FLOWER_KEY_ENC_OPTS", "hex"),
    ("TCA_FLOWER_KEY_ENC_OPTS_MASK", "hex"),
    ("TCA_FLOWER_IN_HW_COUNT", "uint32"),
    ("TCA_FLOWER_KEY_PORT_SRC_MIN", "be16"),
    ("TCA_FLOWER_KEY_PORT_SRC_MAX", "be16"),
    ("TCA_FLOWER_KEY_PORT_DST_MIN", "be16"),
    ("TCA_FLOWER_KEY_PORT_DST_MAX", "be16"),
    ("TCA_FLOWER_KEY_CT_STATE", "uint16"),
    ("TCA_FLOWER_KEY_CT_STATE_MASK", "uint16"),
    ("TCA_FLOWER_KEY_CT_ZONE", "uint16"),
    ("TCA_FLOWER_KEY_CT_ZONE_MASK", "uint16"),
    ("TCA_FLOWER_KEY_CT_MARK", "uint32"),
    ("TCA_FLOWER_KEY_CT_MARK_MASK", "uint32"),
    ("TCA_FLOWER_KEY_CT_LABELS", "hex"),
    ("TCA_FLOWER_KEY_CT_LABELS_MASK", "hex"),
    ("TCA_FLOWER_KEY_MPLS_OPTS", "hex"),
    ("TCA_FLOWER_KEY_HASH", "uint32"),
    ("TCA_FLOWER_KEY_HASH_MASK", "uint32"),
    ("TCA_FLOWER_KEY_NUM_OF_VLANS", "uint8"),
    ("TCA_FLOWER_KEY_PPPOE_SID", "be16"),
    ("TCA_FLOWER_KEY_PPP_PROTO", "be16"),
    ("TCA_FLOWER_KEY_L2TPV3_SID", "be32"),
)

ATOM_KIND: dict[str, str | int] = {
    # atom -> value kind: 'mac' | 'ip4' | 'ip6' | 'str' | bit width
    "l2addr": "mac", "ip4addr": "ip4", "ip6addr": "ip6", "asciiz": "str",
    "uint8": 8, "uint16": 16, "uint32": 32, "be16": 16, "be32": 32,
}
FLOWER_ATOM: dict[str, str] = dict(FLOWER_ATTRS)
FLOWER_ORDER: dict[str, int] = {name: i for i, (name, _) in enumerate(FLOWER_ATTRS)}
# What a FlowerFilter may carry in ``keys``: matches we can build.
FLOWER_KEY_ATTRS: frozenset[str] = frozenset(
    name for name, atom in FLOWER_ATTRS
    if (name.startswith("TCA_FLOWER_KEY_") or name == "TCA_FLOWER_INDEV")
    and atom in ATOM_KIND
)
MASK_OF: dict[str, str] = {
    name: name + "_MASK" for name in FLOWER_KEY_ATTRS
    if name + "_MASK" in FLOWER_ATOM
}
MASK_ATTRS: frozenset[str] = frozenset(MASK_OF.values())
# The kernel keeps only the bits it knows in these masks (NLA_POLICY_MASK or
# a flag translation), so "exact" means these values, not all-ones.
FULL_MASK_OVERRIDE: dict[str, int] = {
    "TCA_FLOWER_KEY_FLAGS_MASK": TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT
    | TCA_FLOWER_KEY_FLAGS_FRAG_IS_FIRST,
    "TCA_FLOWER_KEY_CT_STATE_MASK": 0x3F,
}


# --- generic action pieces ------------------------------------------------------

TC_GEN = (
    ("index", "I"), ("capab", "I"), ("action", "i"), ("refcnt", "i"), ("bindcnt", "i"),
)


class tcf_t(nla):
    """struct tcf_t: ages in USER_HZ ticks (jiffies_to_clock_t of now - t)."""

    fields = (("install", "Q"), ("lastuse", "Q"), ("expires", "Q"), ("firstuse", "Q"))


class tc_gen_parms(nla):
    fields = TC_GEN


class stats2(nla):
    """TCA_ACT_STATS: gen_stats.h, with the hardware part and 64-bit packets."""

    nla_map = (
        ("TCA_STATS_UNSPEC", "none"),
        ("TCA_STATS_BASIC", "basic"),
        ("TCA_STATS_RATE_EST", "hex"),
        ("TCA_STATS_QUEUE", "hex"),
        ("TCA_STATS_APP", "hex"),
        ("TCA_STATS_RATE_EST64", "hex"),
        ("TCA_STATS_PAD", "hex"),
        ("TCA_STATS_BASIC_HW", "basic"),
        ("TCA_STATS_PKT64", "uint64"),
    )

    class basic(nla):
        fields = (("bytes", "Q"), ("packets", "I"))


class bitfield32(nla):
    fields = (("value", "I"), ("selector", "I"))


# --- per-kind action options ----------------------------------------------------


class act_gact(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_GACT_UNSPEC", "none"),
        ("TCA_GACT_TM", "tcf_t"),
        ("TCA_GACT_PARMS", "tc_gen_parms"),
        ("TCA_GACT_PROB", "hex"),
        ("TCA_GACT_PAD", "hex"),
    )
    tcf_t = tcf_t
    tc_gen_parms = tc_gen_parms


class act_mirred(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_MIRRED_UNSPEC", "none"),
        ("TCA_MIRRED_TM", "tcf_t"),
        ("TCA_MIRRED_PARMS", "tc_mirred"),
        ("TCA_MIRRED_PAD", "hex"),
    )
    tcf_t = tcf_t

    class tc_mirred(nla):
        fields = TC_GEN + (("eaction", "i"), ("ifindex", "I"))


class act_vlan(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_VLAN_UNSPEC", "none"),
        ("TCA_VLAN_TM", "tcf_t"),
        ("TCA_VLAN_PARMS", "tc_vlan"),
        ("TCA_VLAN_PUSH_VLAN_ID", "uint16"),
        ("TCA_VLAN_PUSH_VLAN_PROTOCOL", "be16"),
        ("TCA_VLAN_PAD", "hex"),
        ("TCA_VLAN_PUSH_VLAN_PRIORITY", "uint8"),
        ("TCA_VLAN_PUSH_ETH_DST", "l2addr"),
        ("TCA_VLAN_PUSH_ETH_SRC", "l2addr"),
    )
    tcf_t = tcf_t

    class tc_vlan(nla):
        fields = TC_GEN + (("v_action", "i"),)


# struct tc_pedit_sel { tc_gen; u8 nkeys; u8 flags; <pad 2>; tc_pedit_key keys[]; }
PEDIT_SEL = struct.Struct("=IIiiiBBxx")
# struct tc_pedit_key { u32 mask, val, off, at, offmask, shift; } -- mask and
# val are applied to the packet word as it lies in memory, so they travel as
# raw bytes here and the value model reads them as big-endian ints ("the 32
# bits in network order").
PEDIT_KEY = struct.Struct("=4s4sIIII")


class act_pedit(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_PEDIT_UNSPEC", "none"),
        ("TCA_PEDIT_TM", "tcf_t"),
        ("TCA_PEDIT_PARMS", "cdata"),
        ("TCA_PEDIT_PAD", "hex"),
        ("TCA_PEDIT_PARMS_EX", "cdata"),
        ("TCA_PEDIT_KEYS_EX", "keys_ex"),
        ("TCA_PEDIT_KEY_EX", "key_ex"),
    )
    tcf_t = tcf_t

    class key_ex(nla):
        nla_flags = NLA_F_NESTED
        nla_map = (
            ("TCA_PEDIT_KEY_EX_UNSPEC", "none"),
            ("TCA_PEDIT_KEY_EX_HTYPE", "uint16"),
            ("TCA_PEDIT_KEY_EX_CMD", "uint16"),
        )

    class keys_ex(nla):
        # a list of TCA_PEDIT_KEY_EX (6, the *outer* enum's number)
        nla_flags = NLA_F_NESTED
        nla_map = ((6, "TCA_PEDIT_KEY_EX", "key_ex"),)


act_pedit.keys_ex.key_ex = act_pedit.key_ex


class act_csum(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_CSUM_UNSPEC", "none"),
        ("TCA_CSUM_PARMS", "tc_csum"),
        ("TCA_CSUM_TM", "tcf_t"),
        ("TCA_CSUM_PAD", "hex"),
    )
    tcf_t = tcf_t

    class tc_csum(nla):
        fields = TC_GEN + (("update_flags", "I"),)


class act_tunnel_key(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_TUNNEL_KEY_UNSPEC", "none"),
        ("TCA_TUNNEL_KEY_TM", "tcf_t"),
        ("TCA_TUNNEL_KEY_PARMS", "tc_tunnel_key"),
        ("TCA_TUNNEL_KEY_ENC_IPV4_SRC", "ip4addr"),
        ("TCA_TUNNEL_KEY_ENC_IPV4_DST", "ip4addr"),
        ("TCA_TUNNEL_KEY_ENC_IPV6_SRC", "ip6addr"),
        ("TCA_TUNNEL_KEY_ENC_IPV6_DST", "ip6addr"),
        ("TCA_TUNNEL_KEY_ENC_KEY_ID", "be32"),  # header says be64; kernel reads be32
        ("TCA_TUNNEL_KEY_PAD", "hex"),
        ("TCA_TUNNEL_KEY_ENC_DST_PORT", "be16"),
        ("TCA_TUNNEL_KEY_NO_CSUM", "uint8"),
        ("TCA_TUNNEL_KEY_ENC_OPTS", "hex"),
        ("TCA_TUNNEL_KEY_ENC_TOS", "uint8"),
        ("TCA_TUNNEL_KEY_ENC_TTL", "uint8"),
    )
    tcf_t = tcf_t

    class tc_tunnel_key(nla):
        fields = TC_GEN + (("t_action", "i"),)


class act_skbedit(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_SKBEDIT_UNSPEC", "none"),
        ("TCA_SKBEDIT_TM", "tcf_t"),
        ("TCA_SKBEDIT_PARMS", "tc_gen_parms"),
        ("TCA_SKBEDIT_PRIORITY", "uint32"),
        ("TCA_SKBEDIT_QUEUE_MAPPING", "uint16"),
        ("TCA_SKBEDIT_MARK", "uint32"),
        ("TCA_SKBEDIT_PAD", "hex"),
        ("TCA_SKBEDIT_PTYPE", "uint16"),
        ("TCA_SKBEDIT_MASK", "uint32"),
        ("TCA_SKBEDIT_FLAGS", "uint64"),
        ("TCA_SKBEDIT_QUEUE_MAPPING_MAX", "uint16"),
    )
    tcf_t = tcf_t
    tc_gen_parms = tc_gen_parms


class act_sample(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_SAMPLE_UNSPEC", "none"),
        ("TCA_SAMPLE_TM", "tcf_t"),
        ("TCA_SAMPLE_PARMS", "tc_gen_parms"),
        ("TCA_SAMPLE_RATE", "uint32"),
        ("TCA_SAMPLE_TRUNC_SIZE", "uint32"),
        ("TCA_SAMPLE_PSAMPLE_GROUP", "uint32"),
        ("TCA_SAMPLE_PAD", "hex"),
    )
    tcf_t = tcf_t
    tc_gen_parms = tc_gen_parms


ACTION_OPTIONS: dict[str, type[nla]] = {
    "gact": act_gact,
    "mirred": act_mirred,
    "vlan": act_vlan,
    "pedit": act_pedit,
    "csum": act_csum,
    "tunnel_key": act_tunnel_key,
    "skbedit": act_skbedit,
    "sample": act_sample,
}
# Each kind's timestamps and parameters attribute, for the generic decoder.
ACTION_PREFIX: dict[str, str] = {
    "gact": "TCA_GACT", "mirred": "TCA_MIRRED", "vlan": "TCA_VLAN",
    "pedit": "TCA_PEDIT", "csum": "TCA_CSUM", "tunnel_key": "TCA_TUNNEL_KEY",
    "skbedit": "TCA_SKBEDIT", "sample": "TCA_SAMPLE",
}


class tca_act(nla):
    """One action: TCA_ACT_* (pkt_cls.h), options chosen by TCA_ACT_KIND."""

    nla_flags = NLA_F_NESTED
    nla_map = (
        ("TCA_ACT_UNSPEC", "none"),
        ("TCA_ACT_KIND", "asciiz"),
        ("TCA_ACT_OPTIONS", "get_act_options"),
        ("TCA_ACT_INDEX", "uint32"),
        ("TCA_ACT_STATS", "stats2"),
        ("TCA_ACT_PAD", "hex"),
        ("TCA_ACT_COOKIE", "cdata"),
        ("TCA_ACT_FLAGS", "bitfield32"),
        ("TCA_ACT_HW_STATS", "bitfield32"),
        ("TCA_ACT_USED_HW_STATS", "bitfield32"),
        ("TCA_ACT_IN_HW_COUNT", "uint32"),
    )
    stats2 = stats2
    bitfield32 = bitfield32

    @staticmethod
    def get_act_options(self: nla, *argv: Any, **kwarg: Any) -> type[nla]:
        return ACTION_OPTIONS.get(self.get_attr("TCA_ACT_KIND"), self.hex)


class tca_act_prio(nla):
    """TCA_FLOWER_ACT: actions nested by position, TCA_ACT_PRIO_1 first."""

    nla_flags = NLA_F_NESTED
    nla_map = tuple(
        (f"TCA_ACT_PRIO_{i}", "tca_act") for i in range(TCA_ACT_MAX_PRIO + 1)
    )
    tca_act = tca_act


class flower_options(nla):
    nla_flags = NLA_F_NESTED
    nla_map = FLOWER_ATTRS
    tca_act_prio = tca_act_prio


class tcmsg_flower(nlmsg):
    """struct tcmsg with every TCA_* attribute of rtnetlink.h (6.1)."""

    prefix = "TCA_"
    fields = (
        ("family", "B"), ("pad1", "B"), ("pad2", "H"), ("index", "i"),
        ("handle", "I"), ("parent", "I"), ("info", "I"),
    )
    nla_map = (
        ("TCA_UNSPEC", "none"),
        ("TCA_KIND", "asciiz"),
        ("TCA_OPTIONS", "get_options"),
        ("TCA_STATS", "hex"),
        ("TCA_XSTATS", "hex"),
        ("TCA_RATE", "hex"),
        ("TCA_FCNT", "hex"),
        ("TCA_STATS2", "stats2"),
        ("TCA_STAB", "hex"),
        ("TCA_PAD", "hex"),
        ("TCA_DUMP_INVISIBLE", "flag"),
        ("TCA_CHAIN", "uint32"),
        ("TCA_HW_OFFLOAD", "uint8"),
        ("TCA_INGRESS_BLOCK", "uint32"),
        ("TCA_EGRESS_BLOCK", "uint32"),
        ("TCA_DUMP_FLAGS", "bitfield32"),
        ("TCA_EXT_WARN_MSG", "asciiz"),
    )
    stats2 = stats2
    bitfield32 = bitfield32

    @staticmethod
    def get_options(self: nlmsg, *argv: Any, **kwarg: Any) -> type[nla]:
        if self.get_attr("TCA_KIND") == "flower":
            return flower_options
        return self.hex
