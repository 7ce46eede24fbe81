"""The flow field table: every field of the datapath model, declared once.

Theory of operation
-------------------
A flow key is one Python ``int``.  Each field owns a fixed bit range of that
int (``offset`` .. ``offset + bits``), assigned here by ``LAYOUT`` below, so

* masking a key is one ``&``;
* a megaflow cache probe is ``dict[key & mask]``;
* reading a field is ``(key >> f.offset) & f.all_ones``.

Everything else is derived from the two tables below:

``FIELDS``
    name, bit width, how its value is written (``fmt``), whether the datapath
    may wildcard it partially (``maskable``), and the tc flower attribute
    names that carry it (key, mask) -- empty when flower has no such key.

``LAYOUT``
    the order in which fields get bit offsets, lowest first.  It is not the
    order of ``FIELDS`` (which text, flower encoding and ofproto iterate):
    the fields nearly every packet and megaflow uses (metadata, Ethernet,
    VLAN, IPv4, L4) sit in the low ~360 bits and the rare wide ones (tunnel,
    IPv6, ND, ARP, MPLS, conntrack, marks) above them.  CPython ints are
    arrays of 30-bit digits and ``&``, ``|``, shifts and ``hash`` walk every
    digit, so an Ethernet/IPv4/TCP key is a ~12-digit int instead of ~39,
    and a mask without Ethernet addresses makes ~8-digit masked keys.
    Within the hot block the order follows packet order read high to low
    (``eth_dst`` highest, then ``eth_src``, VLAN, ``eth_type``, tos, ttl,
    proto, ipv4 src, dst, tp src, dst, tcp_flags), so the parser can take
    adjacent header fields with one unpack (``ttl|proto``, ``src|dst``,
    ``sport|dport``) and chain them with one shift each.

``GROUPS``
    how OVS's dpctl text groups fields: ``eth(src=..,dst=..)``,
    ``ipv4(src=..,...)``.  A field may appear in several groups (``ip_proto``
    is ``ipv4(proto=)`` and ``ipv6(proto=)``; ``tp_src`` is ``tcp(src=)``,
    ``udp(src=)`` and ``sctp(src=)``), exactly as OVS's flow shares them; a
    group's ``when`` says which packets it describes.

The flow text codec, the packet parser, the tc flower encoder and the rule
parser all read these tables; none of them lists fields again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from enum import Enum

from dpif.errors import ValidationError


class Fmt(Enum):
    """How a field's value is written in text."""

    DEC = "dec"  # 80            masked: 0x50/0xfff0
    HEX = "hex"  # 0x1f          masked: 0x1f/0xff
    HEX16 = "hex16"  # 0x0800 (always 4 digits, like OVS's eth_type)
    MAC = "mac"  # 00:11:22:33:44:55[/ff:ff:ff:00:00:00]
    IPV4 = "ipv4"  # 10.0.0.1[/255.255.255.0]
    IPV6 = "ipv6"  # 2001:db8::1[/ffff:ffff::]
    FLAGS = "flags"  # syn|ack   masked: +syn-ack
    FRAG = "frag"  # no | first | later


class BitRange:
    """A named run of ``bits`` bits at ``offset`` in a packed int: reading and
    writing a value there.  Shared by the datapath's ``Field`` and ofproto's
    ``OfField`` (which stacks OF-only fields above the datapath key), both
    frozen dataclasses with slots.

    ``all_ones`` is computed once, when the dataclass's ``__init__`` calls
    ``__post_init__`` (``replace`` too), into a slot of this class that is no
    dataclass field (so equality, hashing and repr do not see it).  ``copy`` and
    ``pickle`` rebuild through ``__init__`` too (``__reduce__``): the dataclass's
    own ``__setstate__`` would restore the fields only."""

    __slots__ = ("all_ones",)
    name: str
    bits: int
    offset: int
    all_ones: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "all_ones", (1 << self.bits) - 1)

    def __reduce__(self) -> tuple[Callable[..., BitRange], tuple[type, dict[str, object]]]:
        fields = dataclass_fields(self)  # type: ignore[arg-type]
        return _rebuild, (type(self), {f.name: getattr(self, f.name) for f in fields})

    def get(self, packed: int) -> int:
        return (packed >> self.offset) & self.all_ones

    def put(self, value: int) -> int:
        if value < 0 or value > self.all_ones:
            raise ValidationError(f"value {value:#x} does not fit in {self.bits} bits",
                                  field=self.name)
        return value << self.offset


def _rebuild(cls: type[BitRange], kw: dict[str, object]) -> BitRange:
    return cls(**kw)


@dataclass(frozen=True, slots=True)
class Field(BitRange):
    """One flow field.  ``offset`` is its bit position in the packed key."""

    name: str
    bits: int
    fmt: Fmt
    maskable: bool
    flower: tuple[str, ...]  # (key attr, mask attr) or (key attr,) or ()
    offset: int = 0

    @property
    def field_mask(self) -> int:
        """This field's bits in a packed key."""
        return self.all_ones << self.offset


def _f(name: str, bits: int, fmt: Fmt, maskable: bool = True, *flower: str) -> Field:
    return Field(name, bits, fmt, maskable, tuple(flower))


_T = "TCA_FLOWER_KEY_"

# The field table, in declaration order (text and flower iterate it); bit
# offsets come from LAYOUT below.
_FIELD_DECLS: tuple[Field, ...] = (
    # metadata
    _f("recirc_id", 32, Fmt.HEX, False),  # -> tc chain, not a flower key
    _f("dp_hash", 32, Fmt.HEX),
    _f("skb_mark", 32, Fmt.HEX),
    _f("in_port", 32, Fmt.DEC, False),  # -> the device the filter sits on
    _f("ct_state", 8, Fmt.FLAGS, True, _T + "CT_STATE", _T + "CT_STATE_MASK"),
    _f("ct_zone", 16, Fmt.HEX, True, _T + "CT_ZONE", _T + "CT_ZONE_MASK"),
    _f("ct_mark", 32, Fmt.HEX, True, _T + "CT_MARK", _T + "CT_MARK_MASK"),
    # tunnel metadata
    _f("tun_id", 64, Fmt.HEX, True, _T + "ENC_KEY_ID"),
    _f("tun_ipv4_src", 32, Fmt.IPV4, True, _T + "ENC_IPV4_SRC", _T + "ENC_IPV4_SRC_MASK"),
    _f("tun_ipv4_dst", 32, Fmt.IPV4, True, _T + "ENC_IPV4_DST", _T + "ENC_IPV4_DST_MASK"),
    _f("tun_ipv6_src", 128, Fmt.IPV6, True, _T + "ENC_IPV6_SRC", _T + "ENC_IPV6_SRC_MASK"),
    _f("tun_ipv6_dst", 128, Fmt.IPV6, True, _T + "ENC_IPV6_DST", _T + "ENC_IPV6_DST_MASK"),
    _f("tun_tos", 8, Fmt.DEC, True, _T + "ENC_IP_TOS", _T + "ENC_IP_TOS_MASK"),
    _f("tun_ttl", 8, Fmt.DEC, True, _T + "ENC_IP_TTL", _T + "ENC_IP_TTL_MASK"),
    _f("tun_tp_src", 16, Fmt.DEC, True, _T + "ENC_UDP_SRC_PORT", _T + "ENC_UDP_SRC_PORT_MASK"),
    _f("tun_tp_dst", 16, Fmt.DEC, True, _T + "ENC_UDP_DST_PORT", _T + "ENC_UDP_DST_PORT_MASK"),
    _f("tun_flags", 8, Fmt.FLAGS),
    # L2
    _f("eth_src", 48, Fmt.MAC, True, _T + "ETH_SRC", _T + "ETH_SRC_MASK"),
    _f("eth_dst", 48, Fmt.MAC, True, _T + "ETH_DST", _T + "ETH_DST_MASK"),
    _f("vlan_tpid", 16, Fmt.HEX16, False),  # outer TPID: 0x8100 / 0x88a8 -> flower protocol
    _f("vlan_vid", 12, Fmt.DEC, True, _T + "VLAN_ID"),
    _f("vlan_pcp", 3, Fmt.DEC, True, _T + "VLAN_PRIO"),
    _f("cvlan_tpid", 16, Fmt.HEX16, False),  # inner TPID; flower: VLAN_ETH_TYPE
    _f("cvlan_vid", 12, Fmt.DEC, True, _T + "CVLAN_ID"),
    _f("cvlan_pcp", 3, Fmt.DEC, True, _T + "CVLAN_PRIO"),
    _f("eth_type", 16, Fmt.HEX16, False, _T + "ETH_TYPE"),  # innermost ethertype
    _f("mpls_label", 20, Fmt.DEC, True, _T + "MPLS_LABEL"),
    _f("mpls_tc", 3, Fmt.DEC, True, _T + "MPLS_TC"),
    _f("mpls_ttl", 8, Fmt.DEC, True, _T + "MPLS_TTL"),
    _f("mpls_bos", 1, Fmt.DEC, True, _T + "MPLS_BOS"),
    # ARP
    # 8 bits, as in OVS (flow.nw_proto) and flower: only ops <= 255 are
    # parsed into the key; a larger op reads as 0.
    _f("arp_op", 8, Fmt.DEC, True, _T + "ARP_OP", _T + "ARP_OP_MASK"),
    _f("arp_spa", 32, Fmt.IPV4, True, _T + "ARP_SIP", _T + "ARP_SIP_MASK"),
    _f("arp_tpa", 32, Fmt.IPV4, True, _T + "ARP_TIP", _T + "ARP_TIP_MASK"),
    _f("arp_sha", 48, Fmt.MAC, True, _T + "ARP_SHA", _T + "ARP_SHA_MASK"),
    _f("arp_tha", 48, Fmt.MAC, True, _T + "ARP_THA", _T + "ARP_THA_MASK"),
    # L3 (ip_* are shared by IPv4 and IPv6, as in OVS's struct flow)
    _f("ipv4_src", 32, Fmt.IPV4, True, _T + "IPV4_SRC", _T + "IPV4_SRC_MASK"),
    _f("ipv4_dst", 32, Fmt.IPV4, True, _T + "IPV4_DST", _T + "IPV4_DST_MASK"),
    _f("ipv6_src", 128, Fmt.IPV6, True, _T + "IPV6_SRC", _T + "IPV6_SRC_MASK"),
    _f("ipv6_dst", 128, Fmt.IPV6, True, _T + "IPV6_DST", _T + "IPV6_DST_MASK"),
    _f("ipv6_label", 20, Fmt.HEX),  # flower has no flow-label key
    _f("ip_proto", 8, Fmt.DEC, True, _T + "IP_PROTO"),
    _f("ip_tos", 8, Fmt.DEC, True, _T + "IP_TOS", _T + "IP_TOS_MASK"),
    _f("ip_ttl", 8, Fmt.DEC, True, _T + "IP_TTL", _T + "IP_TTL_MASK"),
    _f("ip_frag", 2, Fmt.FRAG, True, _T + "FLAGS", _T + "FLAGS_MASK"),
    # L4 (tp_* shared by TCP, UDP and SCTP)
    _f("tp_src", 16, Fmt.DEC, True, "TCP/UDP/SCTP_SRC", "TCP/UDP/SCTP_SRC_MASK"),
    _f("tp_dst", 16, Fmt.DEC, True, "TCP/UDP/SCTP_DST", "TCP/UDP/SCTP_DST_MASK"),
    _f("tcp_flags", 12, Fmt.FLAGS, True, _T + "TCP_FLAGS", _T + "TCP_FLAGS_MASK"),
    _f("icmp_type", 8, Fmt.DEC, True, "ICMPV4/V6_TYPE", "ICMPV4/V6_TYPE_MASK"),
    _f("icmp_code", 8, Fmt.DEC, True, "ICMPV4/V6_CODE", "ICMPV4/V6_CODE_MASK"),
    _f("nd_target", 128, Fmt.IPV6),  # flower has no ND keys
    _f("nd_sll", 48, Fmt.MAC),
    _f("nd_tll", 48, Fmt.MAC),
)


# Bit layout, lowest offsets first: every field exactly once (checked).
LAYOUT: tuple[str, ...] = (
    # hot: metadata every megaflow matches, then L4 .. L2 (packet order read
    # from the top down, see the theory of operation)
    "recirc_id", "in_port",
    "icmp_code", "icmp_type", "tcp_flags", "tp_dst", "tp_src",
    "ipv4_dst", "ipv4_src", "ip_frag", "ip_proto", "ip_ttl", "ip_tos",
    "eth_type", "vlan_vid", "vlan_pcp", "vlan_tpid", "eth_src", "eth_dst",
    # rare, narrow first
    "cvlan_vid", "cvlan_pcp", "cvlan_tpid",
    "ct_state", "ct_zone", "ct_mark", "skb_mark", "dp_hash",
    "mpls_label", "mpls_tc", "mpls_ttl", "mpls_bos",
    "arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha",
    "ipv6_label", "ipv6_src", "ipv6_dst", "nd_target", "nd_sll", "nd_tll",
    "tun_id", "tun_ipv4_src", "tun_ipv4_dst", "tun_tos", "tun_ttl", "tun_tp_src",
    "tun_tp_dst", "tun_flags", "tun_ipv6_src", "tun_ipv6_dst",
)


def _layout(decls: tuple[Field, ...], order: tuple[str, ...]) -> tuple[Field, ...]:
    """``decls`` in their own order, with offsets assigned in ``order``."""
    names = [f.name for f in decls]
    assert sorted(order) == sorted(names) and len(set(order)) == len(order), \
        "LAYOUT must name every field exactly once"
    bits = {f.name: f.bits for f in decls}
    offsets, off = {}, 0
    for name in order:
        offsets[name] = off
        off += bits[name]
    return tuple(Field(f.name, f.bits, f.fmt, f.maskable, f.flower, offsets[f.name])
                 for f in decls)


FIELDS: tuple[Field, ...] = _layout(_FIELD_DECLS, LAYOUT)
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
KEY_BITS: int = sum(f.bits for f in FIELDS)
ALL_ONES: int = (1 << KEY_BITS) - 1


def field(name: str) -> Field:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValidationError("unknown flow field", field=name) from None


# Named bits of the FLAGS fields, in OVS's spelling.
FLAG_NAMES: dict[str, tuple[tuple[str, int], ...]] = {
    "tcp_flags": (("fin", 0x001), ("syn", 0x002), ("rst", 0x004), ("psh", 0x008),
                  ("ack", 0x010), ("urg", 0x020), ("ece", 0x040), ("cwr", 0x080),
                  ("ns", 0x100)),
    # OVS_CS_F_*: the datapath's ct_state bits
    "ct_state": (("new", 0x01), ("est", 0x02), ("rel", 0x04), ("rpl", 0x08),
                 ("inv", 0x10), ("trk", 0x20), ("snat", 0x40), ("dnat", 0x80)),
    # FLOW_TNL_F_*
    "tun_flags": (("df", 0x1), ("csum", 0x2), ("key", 0x4), ("oam", 0x8)),
}

# ip_frag bits, as OVS's FLOW_NW_FRAG_ANY / FLOW_NW_FRAG_LATER.
FRAG_ANY = 0x1
FRAG_LATER = 0x2
FRAG_NAMES: tuple[tuple[str, int], ...] = (("no", 0), ("first", FRAG_ANY),
                                           ("later", FRAG_ANY | FRAG_LATER))

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_ARP = 0x0806
ETH_TYPE_RARP = 0x8035
ETH_TYPE_MPLS = 0x8847
ETH_TYPE_MPLS_MC = 0x8848
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_VLAN_8021AD = 0x88A8
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132


@dataclass(frozen=True, slots=True)
class Group:
    """A dpctl text group: ``name(attr=..,attr=..)`` or a scalar ``name(v)``.

    ``when`` names the (field, values) whose value in the key selects this
    group among those that share fields; None means always applicable.
    ``scalar`` groups hold one field printed bare: ``in_port(2)``.
    """

    name: str
    attrs: tuple[tuple[str, str], ...]  # (attr name in text, field name)
    when: tuple[str, tuple[int, ...]] | None = None
    scalar: bool = False

    def field_names(self) -> tuple[str, ...]:
        return tuple(f for _, f in self.attrs)


def _scalar(name: str, fname: str | None = None) -> Group:
    return Group(name, (("", fname or name),), None, True)


# The text groups, in printing order.  vlan/cvlan are printed by the codec
# around an ``encap(...)``, as OVS does; they are here so the table is whole.
GROUPS: tuple[Group, ...] = (
    _scalar("recirc_id"),
    _scalar("dp_hash"),
    _scalar("skb_mark"),
    _scalar("ct_state"),
    _scalar("ct_zone"),
    _scalar("ct_mark"),
    Group("tunnel", (("tun_id", "tun_id"), ("src", "tun_ipv4_src"), ("dst", "tun_ipv4_dst"),
                     ("ipv6_src", "tun_ipv6_src"), ("ipv6_dst", "tun_ipv6_dst"),
                     ("tos", "tun_tos"), ("ttl", "tun_ttl"), ("tp_src", "tun_tp_src"),
                     ("tp_dst", "tun_tp_dst"), ("flags", "tun_flags"))),
    _scalar("in_port"),
    Group("eth", (("src", "eth_src"), ("dst", "eth_dst"))),
    Group("vlan", (("tpid", "vlan_tpid"), ("vid", "vlan_vid"), ("pcp", "vlan_pcp"))),
    Group("cvlan", (("tpid", "cvlan_tpid"), ("vid", "cvlan_vid"), ("pcp", "cvlan_pcp"))),
    _scalar("eth_type"),
    Group("mpls", (("label", "mpls_label"), ("tc", "mpls_tc"), ("ttl", "mpls_ttl"),
                   ("bos", "mpls_bos")),
          ("eth_type", (ETH_TYPE_MPLS, ETH_TYPE_MPLS_MC))),
    Group("ipv4", (("src", "ipv4_src"), ("dst", "ipv4_dst"), ("proto", "ip_proto"),
                   ("tos", "ip_tos"), ("ttl", "ip_ttl"), ("frag", "ip_frag")),
          ("eth_type", (ETH_TYPE_IPV4,))),
    Group("ipv6", (("src", "ipv6_src"), ("dst", "ipv6_dst"), ("label", "ipv6_label"),
                   ("proto", "ip_proto"), ("tclass", "ip_tos"), ("hlimit", "ip_ttl"),
                   ("frag", "ip_frag")),
          ("eth_type", (ETH_TYPE_IPV6,))),
    Group("arp", (("sip", "arp_spa"), ("tip", "arp_tpa"), ("op", "arp_op"),
                  ("sha", "arp_sha"), ("tha", "arp_tha")),
          ("eth_type", (ETH_TYPE_ARP, ETH_TYPE_RARP))),
    Group("tcp", (("src", "tp_src"), ("dst", "tp_dst")), ("ip_proto", (IPPROTO_TCP,))),
    Group("udp", (("src", "tp_src"), ("dst", "tp_dst")), ("ip_proto", (IPPROTO_UDP,))),
    Group("sctp", (("src", "tp_src"), ("dst", "tp_dst")), ("ip_proto", (IPPROTO_SCTP,))),
    Group("icmp", (("type", "icmp_type"), ("code", "icmp_code")), ("ip_proto", (IPPROTO_ICMP,))),
    Group("icmpv6", (("type", "icmp_type"), ("code", "icmp_code")),
          ("ip_proto", (IPPROTO_ICMPV6,))),
    _scalar("tcp_flags"),
    Group("nd", (("target", "nd_target"), ("sll", "nd_sll"), ("tll", "nd_tll")),
          ("ip_proto", (IPPROTO_ICMPV6,))),
)
GROUP_BY_NAME: dict[str, Group] = {g.name: g for g in GROUPS}

# Each field belongs to at least one group: checked at import.
_grouped = {f for g in GROUPS for f in g.field_names()}
_missing = set(BY_NAME) - _grouped
assert not _missing, f"fields without a text group: {_missing}"
