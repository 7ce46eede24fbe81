"""The OpenFlow field table and ``OfMatch``: what a rule can look at.

Theory of operation
-------------------
An *OF flow* is one Python ``int``.  Its low ``dpif.fields.KEY_BITS`` bits are
exactly a datapath key (same fields, same offsets), so a packet's datapath key
*is* an OF flow with the OF-only fields zero, and the datapath part of an OF
mask is one ``&`` away::

    megaflow_mask = of_mask & DP_MASK

Above the datapath key sit the fields only OpenFlow has, in table order:
``metadata`` (64 bits) and ``reg0`` .. ``reg15`` (32 bits each).  They live
while a packet is translated and never reach a datapath.

``OF_FIELDS`` declares every ``ovs-ofctl`` field name once: its bit range in
the OF flow (``offset``/``bits``), the datapath field it is (part of)
(``dp_field``), how its value is written (``fmt``), whether a rule may mask
it partially (``maskable``, as OVS says), its prerequisites (``prereq``), its
NXM/OXM name for ``load``/``move`` and its aliases.  Several names may view the
same bits: ``tp_src``, ``tcp_src``, ``udp_src`` and ``sctp_src`` are all the
datapath's ``tp_src`` with different prerequisites; ``nw_tos`` and
``ip_dscp`` are both the DSCP bits of ``ip_tos`` and differ only in text
(``scale``: ``nw_tos`` is written in the TOS byte position, DSCP << 2).

Values are always *raw*: ``OfMatch.get("nw_tos")`` returns the 6 DSCP bits,
and ``SetField("nw_tos", v, m)`` carries raw bits too; only text scales.

VLAN (virtual fields)
---------------------
OpenFlow's ``vlan_tci`` is PCP(3) | CFI(1) | VID(12); the datapath has
``vlan_tpid``, ``vlan_vid`` and ``vlan_pcp`` of the outer tag, where a
``vlan_tpid`` of 0 means "no tag".  ``vlan_tci``, ``dl_vlan`` and
``dl_vlan_pcp`` are therefore *virtual*: no contiguous bit range
(``offset == -1``), mapped by ``tci_to_dp``/``tci_from_dp``:

* VID bits -> ``vlan_vid``, PCP bits -> ``vlan_pcp`` (masks likewise);
* the CFI bit (0x1000) is "a tag is present", which is the *top bit* of
  ``vlan_tpid`` (``TPID_PRESENT`` = 0x8000): both TPIDs the parser reads as a
  tag, 802.1Q 0x8100 and 802.1ad 0x88a8, have it, and "no tag" is tpid 0.
  CFI=1 exact -> ``vlan_tpid = 0x8000/0x8000``, CFI=0 exact -> ``vlan_tpid =
  0/0x8000``, CFI wildcarded -> ``vlan_tpid`` wildcarded.  So ``dl_vlan=10``
  matches an outer 802.1Q *or* 802.1ad tag with VID 10, as in OVS (whose
  ``vlans[0]`` is the outermost tag of either kind).  ``vlan_tci=0`` (exact)
  means "no VLAN"; ``dl_vlan=0xffff`` is the same.  ``dl_vlan=N`` is
  ``vlan_tci=N|0x1000/0x1fff``, ``dl_vlan_pcp=P`` is
  ``vlan_tci=(P<<13)|0x1000/0xf000``.
* That one partial mask lives only in OF matches (rules, the classifier,
  the consulted-bits mask of xlate).  The datapath's ``vlan_tpid`` is not
  maskable (it becomes flower's protocol), so a megaflow is exact on the
  TPID whenever xlate looked at tag presence (``exact_unmaskable``), just as
  OVS's datapath key spells the outer TPID as an exact ``eth_type``: one
  ``dl_vlan=10`` rule gives one megaflow per TPID that occurs.

Ports
-----
OpenFlow port numbers are datapath port numbers, 1:1.  The reserved OF 1.0
numbers keep their meaning (``LOCAL`` = 0xfffe, ``IN_PORT`` = 0xfff8, ...);
``in_port=LOCAL`` matches datapath port 0xfffe.  See ``PORT_NAMES``.

Prerequisites
-------------
``prereq`` is a disjunction of conjunctions of exact (field, value) tests:
``tp_src`` needs (dl_type=ip and nw_proto in tcp/udp/sctp) or the same over
IPv6.  ``OfMatch.prereqs_ok(name)`` checks them; the rule parser refuses a
field whose prerequisites are missing instead of silently dropping it (where
OVS logs a warning and normalizes the field away).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

from dpif import fields as dpf
from dpif.errors import ValidationError

KEY_BITS = dpf.KEY_BITS
DP_MASK = dpf.ALL_ONES

PORT_NAMES: tuple[tuple[str, int], ...] = (
    ("IN_PORT", 0xFFF8), ("TABLE", 0xFFF9), ("NORMAL", 0xFFFA), ("FLOOD", 0xFFFB),
    ("ALL", 0xFFFC), ("CONTROLLER", 0xFFFD), ("LOCAL", 0xFFFE), ("NONE", 0xFFFF),
)
PORT_BY_NAME: dict[str, int] = dict(PORT_NAMES)
PORT_NAME_BY_NUM: dict[int, str] = {v: k for k, v in PORT_NAMES}
OFPP_MAX = 0xFF00  # ports >= this are reserved
OFPP_LOCAL = PORT_BY_NAME["LOCAL"]
OFPP_IN_PORT = PORT_BY_NAME["IN_PORT"]
OFPP_CONTROLLER = PORT_BY_NAME["CONTROLLER"]
OFPP_NONE = PORT_BY_NAME["NONE"]


class OfFmt(Enum):
    """How ovs-ofctl writes a field's value."""

    DEC = "dec"  # 80, masked 0x50/0xfff0
    HEX = "hex"  # 0x5, masked 0x5/0xff
    HEX16 = "hex16"  # 0x0800
    MAC = "mac"
    IPV4 = "ipv4"  # 10.0.0.0/24 or /255.0.255.0
    IPV6 = "ipv6"
    FLAGS = "flags"  # syn|ack or +syn-ack
    FRAG = "frag"  # no yes first later not_later
    PORT = "port"  # 2, LOCAL
    TCI = "tci"  # 0x1005, 0x1000/0x1000


# One prerequisite alternative: every (field, value) exact.
Conj = tuple[tuple[str, int], ...]
Prereq = tuple[Conj, ...]


@dataclass(frozen=True, slots=True)
class OfField(dpf.BitRange):
    """One ovs-ofctl field name.  ``offset`` is -1 for virtual (VLAN) fields."""

    name: str
    bits: int
    offset: int
    dp_field: str | None
    fmt: OfFmt
    maskable: bool
    prereq: Prereq = ()
    nxm: str | None = None
    aliases: tuple[str, ...] = ()
    scale: int = 0  # text value = raw << scale

    @property
    def virtual(self) -> bool:
        return self.offset < 0

    @property
    def field_mask(self) -> int:
        """This field's bits in an OF flow (0 for virtual fields)."""
        return 0 if self.virtual else self.all_ones << self.offset


# --- prerequisites, derived from a few protocol facts -----------------------

_IP = ((("dl_type", dpf.ETH_TYPE_IPV4),),)
_IPV6 = ((("dl_type", dpf.ETH_TYPE_IPV6),),)
_IP_ANY: Prereq = _IP + _IPV6
_ARP: Prereq = ((("dl_type", dpf.ETH_TYPE_ARP),), (("dl_type", dpf.ETH_TYPE_RARP),))


def _l4(*protos: int, v6: bool = True) -> Prereq:
    types = (dpf.ETH_TYPE_IPV4, dpf.ETH_TYPE_IPV6) if v6 else (dpf.ETH_TYPE_IPV4,)
    return tuple((("dl_type", t), ("nw_proto", p)) for t in types for p in protos)


_TCP = _l4(dpf.IPPROTO_TCP)
_UDP = _l4(dpf.IPPROTO_UDP)
_SCTP = _l4(dpf.IPPROTO_SCTP)
_TP = _l4(dpf.IPPROTO_TCP, dpf.IPPROTO_UDP, dpf.IPPROTO_SCTP)
_ICMP_ANY: Prereq = ((("dl_type", dpf.ETH_TYPE_IPV4), ("nw_proto", dpf.IPPROTO_ICMP)),
                     (("dl_type", dpf.ETH_TYPE_IPV6), ("nw_proto", dpf.IPPROTO_ICMPV6)))

# --- the table ---------------------------------------------------------------

F = OfFmt


@dataclass(frozen=True, slots=True)
class _Decl:
    name: str
    dp: str | None  # datapath field, None for OF-only or virtual
    fmt: OfFmt
    maskable: bool
    prereq: Prereq = ()
    nxm: str | None = None
    aliases: tuple[str, ...] = ()
    sub: tuple[int, int] | None = None  # (low bit, bits) inside the dp field
    scale: int = 0
    bits: int = 0  # OF-only / virtual fields: width


# Canonical name first.  Several names may share bits (views).
_DECLS: tuple[_Decl, ...] = (
    _Decl("in_port", "in_port", F.PORT, False, nxm="NXM_OF_IN_PORT"),
    _Decl("pkt_mark", "skb_mark", F.HEX, True, nxm="NXM_NX_PKT_MARK"),
    _Decl("dl_src", "eth_src", F.MAC, True, nxm="NXM_OF_ETH_SRC", aliases=("eth_src",)),
    _Decl("dl_dst", "eth_dst", F.MAC, True, nxm="NXM_OF_ETH_DST", aliases=("eth_dst",)),
    _Decl("dl_type", "eth_type", F.HEX16, False, nxm="NXM_OF_ETH_TYPE", aliases=("eth_type",)),
    _Decl("vlan_tci", None, F.TCI, True, nxm="NXM_OF_VLAN_TCI", bits=16),
    _Decl("dl_vlan", None, F.DEC, False, bits=16),
    _Decl("dl_vlan_pcp", None, F.DEC, False, bits=3),
    _Decl("nw_src", "ipv4_src", F.IPV4, True, _IP, "NXM_OF_IP_SRC", ("ip_src",)),
    _Decl("nw_dst", "ipv4_dst", F.IPV4, True, _IP, "NXM_OF_IP_DST", ("ip_dst",)),
    _Decl("ipv6_src", "ipv6_src", F.IPV6, True, _IPV6, "NXM_NX_IPV6_SRC"),
    _Decl("ipv6_dst", "ipv6_dst", F.IPV6, True, _IPV6, "NXM_NX_IPV6_DST"),
    _Decl("ipv6_label", "ipv6_label", F.HEX, True, _IPV6, "NXM_NX_IPV6_LABEL"),
    _Decl("nw_proto", "ip_proto", F.DEC, False, _IP_ANY, "NXM_OF_IP_PROTO", ("ip_proto",)),
    _Decl("nw_tos", "ip_tos", F.DEC, False, _IP_ANY, "NXM_OF_IP_TOS", sub=(2, 6), scale=2),
    _Decl("ip_dscp", "ip_tos", F.DEC, False, _IP_ANY, "OXM_OF_IP_DSCP", sub=(2, 6)),
    _Decl("nw_ecn", "ip_tos", F.DEC, False, _IP_ANY, "NXM_NX_IP_ECN", ("ip_ecn",), sub=(0, 2)),
    _Decl("nw_ttl", "ip_ttl", F.DEC, False, _IP_ANY, "NXM_NX_IP_TTL"),
    _Decl("nw_frag", "ip_frag", F.FRAG, True, _IP_ANY, "NXM_NX_IP_FRAG", ("ip_frag",)),
    _Decl("tp_src", "tp_src", F.DEC, True, _TP),
    _Decl("tp_dst", "tp_dst", F.DEC, True, _TP),
    _Decl("tcp_src", "tp_src", F.DEC, True, _TCP, "NXM_OF_TCP_SRC"),
    _Decl("tcp_dst", "tp_dst", F.DEC, True, _TCP, "NXM_OF_TCP_DST"),
    _Decl("udp_src", "tp_src", F.DEC, True, _UDP, "NXM_OF_UDP_SRC"),
    _Decl("udp_dst", "tp_dst", F.DEC, True, _UDP, "NXM_OF_UDP_DST"),
    _Decl("sctp_src", "tp_src", F.DEC, True, _SCTP, "OXM_OF_SCTP_SRC"),
    _Decl("sctp_dst", "tp_dst", F.DEC, True, _SCTP, "OXM_OF_SCTP_DST"),
    _Decl("tcp_flags", "tcp_flags", F.FLAGS, True, _TCP, "NXM_NX_TCP_FLAGS"),
    _Decl("icmp_type", "icmp_type", F.DEC, False, _ICMP_ANY, "NXM_OF_ICMP_TYPE",
          ("icmpv6_type",)),
    _Decl("icmp_code", "icmp_code", F.DEC, False, _ICMP_ANY, "NXM_OF_ICMP_CODE",
          ("icmpv6_code",)),
    _Decl("arp_op", "arp_op", F.DEC, False, _ARP, "NXM_OF_ARP_OP"),
    _Decl("arp_spa", "arp_spa", F.IPV4, True, _ARP, "NXM_OF_ARP_SPA"),
    _Decl("arp_tpa", "arp_tpa", F.IPV4, True, _ARP, "NXM_OF_ARP_TPA"),
    _Decl("arp_sha", "arp_sha", F.MAC, True, _ARP, "NXM_NX_ARP_SHA"),
    _Decl("arp_tha", "arp_tha", F.MAC, True, _ARP, "NXM_NX_ARP_THA"),
    _Decl("tun_id", "tun_id", F.HEX, True, nxm="NXM_NX_TUN_ID", aliases=("tunnel_id",)),
    _Decl("tun_src", "tun_ipv4_src", F.IPV4, True, nxm="NXM_NX_TUN_IPV4_SRC"),
    _Decl("tun_dst", "tun_ipv4_dst", F.IPV4, True, nxm="NXM_NX_TUN_IPV4_DST"),
    _Decl("tun_ipv6_src", "tun_ipv6_src", F.IPV6, True, nxm="NXM_NX_TUN_IPV6_SRC"),
    _Decl("tun_ipv6_dst", "tun_ipv6_dst", F.IPV6, True, nxm="NXM_NX_TUN_IPV6_DST"),
    _Decl("ct_state", "ct_state", F.FLAGS, True, nxm="NXM_NX_CT_STATE"),
    _Decl("ct_zone", "ct_zone", F.DEC, False, nxm="NXM_NX_CT_ZONE"),
    _Decl("ct_mark", "ct_mark", F.HEX, True, nxm="NXM_NX_CT_MARK"),
    # OF-only fields, laid out above the datapath key in this order
    _Decl("metadata", None, F.HEX, True, nxm="OXM_OF_METADATA", bits=64),
    *(_Decl(f"reg{i}", None, F.HEX, True, nxm=f"NXM_NX_REG{i}", bits=32) for i in range(16)),
)

_VIRTUAL_NAMES = frozenset({"vlan_tci", "dl_vlan", "dl_vlan_pcp"})


def _layout(decls: tuple[_Decl, ...]) -> tuple[OfField, ...]:
    out: list[OfField] = []
    off = KEY_BITS
    for d in decls:
        if d.dp is not None:
            dpfield = dpf.BY_NAME[d.dp]
            low, bits = d.sub if d.sub else (0, dpfield.bits)
            out.append(OfField(d.name, bits, dpfield.offset + low, d.dp, d.fmt, d.maskable,
                               d.prereq, d.nxm, d.aliases, d.scale))
        elif d.name in _VIRTUAL_NAMES:
            out.append(OfField(d.name, d.bits, -1, None, d.fmt, d.maskable, d.prereq, d.nxm,
                               d.aliases, d.scale))
        else:
            out.append(OfField(d.name, d.bits, off, None, d.fmt, d.maskable, d.prereq, d.nxm,
                               d.aliases, d.scale))
            off += d.bits
    return tuple(out)


OF_FIELDS: tuple[OfField, ...] = _layout(_DECLS)
OF_KEY_BITS: int = KEY_BITS + sum(f.bits for f in OF_FIELDS
                                  if f.dp_field is None and not f.virtual)
OF_ALL_ONES: int = (1 << OF_KEY_BITS) - 1
OF_ONLY_MASK: int = OF_ALL_ONES & ~DP_MASK

BY_NAME: dict[str, OfField] = {}
for _f in OF_FIELDS:
    for _n in (_f.name, *_f.aliases):
        assert _n not in BY_NAME, _n
        BY_NAME[_n] = _f
BY_NXM: dict[str, OfField] = {f.nxm: f for f in OF_FIELDS if f.nxm}
BY_DP: dict[str, OfField] = {}  # datapath field -> first (canonical) OF field of it
for _f in OF_FIELDS:
    if _f.dp_field and _f.dp_field not in BY_DP:
        BY_DP[_f.dp_field] = _f

METADATA = BY_NAME["metadata"]
REGS: tuple[OfField, ...] = tuple(BY_NAME[f"reg{i}"] for i in range(16))


def of_field(name: str) -> OfField:
    """The field of an ovs-ofctl name or alias (NXM/OXM names too)."""
    f = BY_NAME.get(name) or BY_NXM.get(name)
    if f is None:
        raise ValidationError("unknown OpenFlow field", field=name)
    return f


# --- VLAN TCI <-> datapath fields -------------------------------------------

VLAN_CFI = 0x1000
VLAN_VID_MASK = 0x0FFF
VLAN_PCP_MASK = 0xE000
_VID, _PCP, _TPID = dpf.BY_NAME["vlan_vid"], dpf.BY_NAME["vlan_pcp"], dpf.BY_NAME["vlan_tpid"]
_VLAN_BITS = _VID.field_mask | _PCP.field_mask | _TPID.field_mask
TPID_PRESENT = 0x8000  # the bit every tag TPID has (0x8100, 0x88a8) and "no tag" (0) lacks
assert all(t & TPID_PRESENT for t in (dpf.ETH_TYPE_VLAN, dpf.ETH_TYPE_VLAN_8021AD))


def tci_to_dp(value: int, mask: int) -> tuple[int, int]:
    """A ``vlan_tci`` value/mask as (key bits, mask bits) of the OF flow."""
    key = _VID.put(value & mask & VLAN_VID_MASK) | _PCP.put((value & mask) >> 13)
    m = _VID.put(mask & VLAN_VID_MASK) | _PCP.put(mask >> 13)
    if mask & VLAN_CFI:
        m |= _TPID.put(TPID_PRESENT)
        if value & VLAN_CFI:
            key |= _TPID.put(TPID_PRESENT)
    return key, m


def tci_from_dp(key: int, mask: int) -> tuple[int, int]:
    """The ``vlan_tci`` value/mask an OF flow's VLAN bits spell."""
    value = _VID.get(key) | (_PCP.get(key) << 13)
    m = _VID.get(mask) | (_PCP.get(mask) << 13)
    if _TPID.get(mask):
        m |= VLAN_CFI
        if _TPID.get(key):
            value |= VLAN_CFI
    return value, m


def _virtual_to_tci(name: str, value: int) -> tuple[int, int]:
    if name == "dl_vlan":
        if value == 0xFFFF:
            return 0, 0xFFFF
        if value > VLAN_VID_MASK:
            raise ValidationError("dl_vlan must be 0..4095 or 0xffff", field=name,
                                  value=value)
        return value | VLAN_CFI, VLAN_VID_MASK | VLAN_CFI
    if value > 7:
        raise ValidationError("dl_vlan_pcp must be 0..7", field=name, value=value)
    return (value << 13) | VLAN_CFI, VLAN_PCP_MASK | VLAN_CFI


# --- OfMatch -----------------------------------------------------------------

_DP_UNMASKABLE = tuple(f for f in dpf.FIELDS if not f.maskable)

FieldValue = int | tuple[int, int]


@dataclass(frozen=True, slots=True)
class OfMatch:
    """A rule's match over the OF flow: packed key and mask, wildcarded key bits zero.

    ``flow & mask == key`` is the whole test.  Equal matches match the same
    flows.
    """

    key: int
    mask: int

    def __post_init__(self) -> None:
        if self.mask < 0 or self.mask & ~OF_ALL_ONES:
            raise ValidationError("mask has bits outside the OF field layout")
        if self.key & ~self.mask:
            raise ValidationError("key has bits set where the mask wildcards them",
                                  fields=", ".join(f.name for f in OF_FIELDS
                                                   if self.key & ~self.mask & f.field_mask))
        for f in _DP_UNMASKABLE:
            m = f.get(self.mask)
            if m and m != f.all_ones and not (f is _TPID and m == TPID_PRESENT):
                raise ValidationError("field cannot be partially masked",
                                      field=BY_DP[f.name].name if f.name in BY_DP else f.name)

    @classmethod
    def catchall(cls) -> OfMatch:
        return cls(0, 0)

    @classmethod
    def build(cls, values: Mapping[str, FieldValue] | None = None,
              **kw: FieldValue) -> OfMatch:
        """``OfMatch.build(dl_type=0x800, nw_dst=(0x0a000000, 0xffffff00))``.

        Names are ovs-ofctl names (aliases, virtual VLAN fields included); an
        int is exact, a (value, mask) pair is masked.  No prerequisite check:
        that is the rule parser's job (``missing_prereqs``).
        """
        m = cls(0, 0)
        items = dict(values or {})
        items.update(kw)
        for name, spec in items.items():
            if isinstance(spec, tuple):
                m = m.with_field(name, spec[0], spec[1])
            else:
                m = m.with_field(name, spec)
        return m

    def matches(self, flow: int) -> bool:
        return flow & self.mask == self.key

    def get(self, name: str) -> tuple[int, int]:
        """(value, mask) of a field, raw bits (``vlan_tci`` composed)."""
        f = of_field(name)
        if f.virtual:
            v, m = tci_from_dp(self.key, self.mask)
            if f.name == "vlan_tci":
                return v, m
            if f.name == "dl_vlan":
                return v & VLAN_VID_MASK, m & VLAN_VID_MASK
            return (v & VLAN_PCP_MASK) >> 13, (m & VLAN_PCP_MASK) >> 13
        return f.get(self.key), f.get(self.mask)

    def value(self, name: str) -> int:
        return self.get(name)[0]

    def is_exact(self, name: str) -> bool:
        f = of_field(name)
        return self.get(name)[1] == f.all_ones

    def has(self, name: str) -> bool:
        return bool(self.get(name)[1])

    def with_field(self, name: str, value: int, mask: int | None = None) -> OfMatch:
        """Set a field (replacing its bits).  Virtual VLAN fields merge into the TCI."""
        f = of_field(name)
        if f.virtual:
            if f.name == "vlan_tci":
                m = 0xFFFF if mask is None else mask
                tv, tm = value & m, m
                if tv > 0xFFFF or tm > 0xFFFF:
                    raise ValidationError("vlan_tci is 16 bits", field=name)
            else:
                if mask is not None and mask != f.all_ones:
                    raise ValidationError("field cannot be masked", field=name)
                tv, tm = _virtual_to_tci(f.name, value)
                ov, om = tci_from_dp(self.key, self.mask)
                tv, tm = (ov & ~tm) | tv, om | tm
            k, mk = tci_to_dp(tv, tm)
            return OfMatch((self.key & ~_VLAN_BITS) | k, (self.mask & ~_VLAN_BITS) | mk)
        m = f.all_ones if mask is None else mask
        clear = ~f.field_mask
        return OfMatch((self.key & clear) | f.put(value & m), (self.mask & clear) | f.put(m))

    def without(self, *names: str) -> OfMatch:
        clear = OF_ALL_ONES
        for n in names:
            f = of_field(n)
            clear &= ~(_VLAN_BITS if f.virtual else f.field_mask)
        return OfMatch(self.key & clear, self.mask & clear)

    def overlaps(self, other: OfMatch) -> bool:
        common = self.mask & other.mask
        return (self.key & common) == (other.key & common)

    def covers(self, other: OfMatch) -> bool:
        """Does every flow ``other`` matches also match ``self`` (loose subset)?"""
        return self.mask & other.mask == self.mask and other.key & self.mask == self.key

    def prereqs_ok(self, name: str) -> bool:
        f = of_field(name)
        if not f.prereq:
            return True
        return any(all(self.is_exact(n) and self.value(n) == v for n, v in conj)
                   for conj in f.prereq)

    def missing_prereqs(self) -> list[OfField]:
        """Fields the match uses whose prerequisites it lacks (no view of their bits has)."""
        return [f for f, _, _ in self.fields() if f.prereq and not self._any_view_ok(f)]

    def _any_view_ok(self, f: OfField) -> bool:
        """Some name viewing these bits (tp_src, tcp_src, ...) has its prereqs."""
        return any(self.prereqs_ok(g.name) for g in OF_FIELDS
                   if g.offset == f.offset and g.bits == f.bits)

    def fields(self) -> Iterator[tuple[OfField, int, int]]:
        """(canonical field, value, mask) for every non-virtual bit range used."""
        seen = 0
        for f in OF_FIELDS:
            if f.virtual or f.field_mask & seen:
                continue
            m = f.get(self.mask)
            if m:
                seen |= f.field_mask
                yield f, f.get(self.key), m

    def __repr__(self) -> str:
        parts = [f"{f.name}={v:#x}" + ("" if m == f.all_ones else f"/{m:#x}")
                 for f, v, m in self.fields()]
        tv, tm = tci_from_dp(self.key, self.mask)
        if tm:
            parts.insert(0, f"vlan_tci={tv:#06x}/{tm:#06x}")
        return "OfMatch(" + ", ".join(parts) + ")"
