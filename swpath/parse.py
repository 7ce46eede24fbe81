"""Packet -> packed flow key, as OVS's ``flow_extract`` does it.

Theory of operation
-------------------
A flow key is one int laid out by ``dpif.fields`` (field ``f`` lives at bits
``f.offset .. f.offset + f.bits``).  The parser builds that int straight from
slices of the packet: ``int.from_bytes`` / ``struct.unpack_from`` for the
values, one shift per field to put it at its offset, ``|`` to combine.  No
per-field objects are made per packet.

Two paths produce the *same* key (a test holds them to it):

* ``parse_key`` first tries a fast path for the common frame profiles --
  Ethernet with no VLAN tag or one 802.1Q/802.1ad tag, IPv4 without
  options, not a fragment, TCP or UDP, all headers present.  Each profile
  is one precompiled ``struct.Struct`` (the untagged one is always read
  first; a tagged frame re-reads from its tag) that yields the key's
  fields in layout order, adjacent ones together (``eth_dst|eth_src`` as
  32+64 bits, ``ip_ttl|ip_proto``, ``ipv4_src|ipv4_dst``,
  ``tp_src|tp_dst``).  The key is then one Horner chain from ``eth_dst``
  down: ``x = x << gap | next`` per value, every gap derived from the
  field offsets, and ``md`` ORed last;
* anything else goes to ``parse_layers``, the general walk: Ethernet
  (802.2 SNAP too), up to two VLAN tags (802.1Q / 802.1ad, outer in
  ``vlan_*``, inner in ``cvlan_*``, ``eth_type`` is the innermost ethertype),
  MPLS (top label only, like OVS), ARP/RARP, IPv4 (options, fragments),
  IPv6 (hop-by-hop, routing, destination options, AH and fragment extension
  headers, flow label), TCP, UDP, SCTP, ICMP, ICMPv6 and ND (target, SLL,
  TLL).  ``parse_layers`` also returns the layer offsets that action
  execution needs.

Malformed and truncated packets never raise.  Like OVS, the parser stops at
the first header that is short or fails its sanity check and keeps what it
found before it: a short IPv4 header gives a key with ``eth_type(0x0800)``
and no ``ipv4`` fields; a later fragment has no L4 fields; a bad ND option
zeroes the ``nd_*`` fields.  The reason is returned in ``Parsed.problem``
and ``parse_key`` counts it in the caller's ``ParseStats``.

Metadata (``in_port``, ``recirc_id``, ``dp_hash``, ``skb_mark``, ``ct_*``,
``tun_*``) is not in the packet: the caller passes it as an int ``md`` in
the same layout and it is ORed into the key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from dpif.fields import (
    BY_NAME, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_MPLS, ETH_TYPE_MPLS_MC,
    ETH_TYPE_RARP, ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD, FRAG_ANY, FRAG_LATER, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
)

__all__ = ["Parsed", "ParseStats", "parse_key", "parse_layers", "packet_len",
           "packet_tcp_flags", "ETH_TYPE_NONE", "METADATA_MASK"]

# OVS's FLOW_DL_TYPE_NONE: an 802.3 frame without SNAP.
ETH_TYPE_NONE = 0x05FF

_O = {name: f.offset for name, f in BY_NAME.items()}
O_ETH_SRC = _O["eth_src"]
O_ETH_TYPE = _O["eth_type"]
O_IPV4_SRC = _O["ipv4_src"]
O_IP_PROTO = _O["ip_proto"]
O_TP_SRC = _O["tp_src"]

# Fields that come from the caller, not the packet.
_METADATA_FIELDS = ("recirc_id", "dp_hash", "skb_mark", "in_port", "ct_state", "ct_zone",
                    "ct_mark", "tun_id", "tun_ipv4_src", "tun_ipv4_dst", "tun_ipv6_src",
                    "tun_ipv6_dst", "tun_tos", "tun_ttl", "tun_tp_src", "tun_tp_dst",
                    "tun_flags")
METADATA_MASK = 0
for _n in _METADATA_FIELDS:
    METADATA_MASK |= BY_NAME[_n].field_mask

assert _O["eth_dst"] == O_ETH_SRC + 48  # eth dst|src in packet order == key order
O_IPV4_DST = _O["ipv4_dst"]
O_IP_TOS, O_IP_TTL = _O["ip_tos"], _O["ip_ttl"]
O_TP_DST, O_TCP_FLAGS = _O["tp_dst"], _O["tcp_flags"]

_V4 = struct.Struct("!BBHHHBBHII")  # vihl tos len id frag ttl proto csum src dst
_HH = struct.Struct("!HH")
_H = struct.Struct("!H")
_I = struct.Struct("!I")
_from = int.from_bytes
_ARP_OP_MAX = BY_NAME["arp_op"].all_ones

TCP_FLAGS_MASK = 0x0FFF


class ParseStats:
    """Counters of packets the parser could not read whole, by reason.

    Mutable on purpose: the caller keeps one and passes it to ``parse_key``.
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __repr__(self) -> str:
        return f"ParseStats({self.counts!r})"


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed packet: the key and where each layer starts (-1: absent).

    ``l3_end`` is where the L3 payload ends (IP total length; trailing
    Ethernet padding is not part of it).  ``problem`` names why parsing
    stopped early, or is None for a whole packet.
    """

    key: int
    l2_5: int = -1  # MPLS label stack
    l3: int = -1
    l4: int = -1
    l3_end: int = -1
    eth_type: int = 0
    ip_proto: int = 0
    frag: int = 0
    problem: str | None = field(default=None)


def packet_len(packet: bytes) -> int:
    """Bytes credited to a flow for this packet (the whole frame, as OVS)."""
    return len(packet)


def packet_tcp_flags(packet: bytes) -> int:
    """TCP flags (12 bits) of a packet, 0 when it is not TCP: for flow stats."""
    p = parse_layers(packet)
    if p.ip_proto != IPPROTO_TCP or p.l4 < 0 or p.frag & FRAG_LATER:
        return 0
    return (p.key >> _O["tcp_flags"]) & TCP_FLAGS_MASK


def parse_key(packet: bytes, md: int = 0, stats: ParseStats | None = None) -> int:
    """The flow key of ``packet`` with metadata ``md`` ORed in.  Never raises."""
    n = len(packet)
    if n >= 54:  # fast path (see the theory of operation); n becomes the L3 length
        # dh|dl: eth_dst (32 high bits) | eth_dst (16 low) eth_src (48)
        dh, dl, et, vihl, tos, tlen, frag, ttlp, sd, ports, off = _UNTAGGED.unpack_from(packet)
        if et == 0x0800:
            x = (dh << 64 | dl) << _S_SRC_TYPE | 0x0800
            n -= 14
        elif (et == 0x8100 or et == 0x88A8) and n >= 58:
            tci, inner, vihl, tos, tlen, frag, ttlp, sd, ports, off = _TAGGED.unpack_from(
                packet, 14)
            x = 0 if inner != 0x0800 else (((((dh << 64 | dl) << _S_SRC_TPID | et)
                                             << _S_TPID_PCP | tci >> 13) << _S_PCP_VID
                                            | tci & 0xFFF) << _S_VID_TYPE | 0x0800)
            n -= 18
        else:
            x = 0  # no profile: eth_type(0x0800) is never 0 in one
        # (tlen >= 20 follows from the TCP and UDP length checks)
        if x and vihl == 0x45 and not frag & 0x3FFF and tlen <= n:
            proto = ttlp & 0xFF
            if proto == 6:
                if _TCP_MIN_TLEN[off >> 12] <= tlen:
                    return ((((((x << _S_TYPE_TOS | tos) << _S_TOS_PROTO | ttlp)
                                << _S_PROTO_DST | sd) << _S_DST_TPDST | ports)
                             << _S_TPDST_FLAGS | off & 0xFFF) << O_TCP_FLAGS | md)
            elif proto == 17 and tlen >= 28:
                return ((((x << _S_TYPE_TOS | tos) << _S_TOS_PROTO | ttlp)
                         << _S_PROTO_DST | sd) << _S_DST_TPDST | ports) << O_TP_DST | md
    p = parse_layers(packet, md)
    if p.problem is not None and stats is not None:
        stats.count(p.problem)
    return p.key


# The fast path's profiles.  From the ethertype on, both read the same bytes:
# type, IPv4 version+ihl, tos, total length, (id), flags+fragment offset,
# ttl|proto, (checksum), src|dst, sport|dport, (seq, ack), data offset+flags.
_L3L4 = "HBBH2xHH2xQI8xH"
_UNTAGGED = struct.Struct("!IQ" + _L3L4)  # eth_dst|eth_src as 32 + 64 bits
_TAGGED = struct.Struct("!H" + _L3L4)  # from byte 14: the TCI, then as above
assert _UNTAGGED.size == 48 and _TAGGED.size == 38  # up to the TCP flags
# IPv4 total length a TCP header of data offset d (the index) needs: 20 + 4d
# for d >= 5; a smaller offset is malformed (never fits).
_TCP_MIN_TLEN = tuple(20 + 4 * d if d >= 5 else 1 << 16 for d in range(16))

# The Horner chain's shifts: the distance from each value's lowest field to
# the next one's.  Values read together must be adjacent in the layout, and
# the chain must go down the layout.
O_VLAN_TPID, O_VLAN_PCP, O_VLAN_VID = _O["vlan_tpid"], _O["vlan_pcp"], _O["vlan_vid"]
_S_SRC_TYPE = O_ETH_SRC - O_ETH_TYPE
_S_SRC_TPID = O_ETH_SRC - O_VLAN_TPID
_S_TPID_PCP = O_VLAN_TPID - O_VLAN_PCP
_S_PCP_VID = O_VLAN_PCP - O_VLAN_VID
_S_VID_TYPE = O_VLAN_VID - O_ETH_TYPE
_S_TYPE_TOS = O_ETH_TYPE - O_IP_TOS
_S_TOS_PROTO = O_IP_TOS - O_IP_PROTO  # ip_ttl|ip_proto
_S_PROTO_DST = O_IP_PROTO - O_IPV4_DST  # ipv4_src|ipv4_dst (ip_frag 0 between)
_S_DST_TPDST = O_IPV4_DST - O_TP_DST  # tp_src|tp_dst
_S_TPDST_FLAGS = O_TP_DST - O_TCP_FLAGS
assert O_IP_TTL == O_IP_PROTO + 8 and O_IPV4_SRC == O_IPV4_DST + 32
assert O_TP_SRC == O_TP_DST + 16
assert min(_S_SRC_TYPE - 16, _S_SRC_TPID - 16, _S_TPID_PCP - 3, _S_PCP_VID - 12, _S_VID_TYPE - 16,
           _S_TYPE_TOS - 8, _S_TOS_PROTO - 16, _S_PROTO_DST - 64, _S_DST_TPDST - 32,
           _S_TPDST_FLAGS - 12) >= 0, "the fast path's fields must go down the layout"


def _put(name: str, value: int) -> int:
    return value << _O[name]


def parse_layers(packet: bytes, md: int = 0) -> Parsed:
    """The general parser: key plus layer offsets.  Never raises."""
    try:
        return _parse(packet, md)
    except (IndexError, struct.error):  # pragma: no cover - defensive
        return Parsed(md, problem="internal")


def _parse(p: bytes, md: int) -> Parsed:
    n = len(p)
    if n < 14:
        return Parsed(md, problem="truncated eth")
    key = md | (_from(p[:12], "big") << O_ETH_SRC)
    ofs = 12
    # VLAN tags: outer, then inner.  A tag needs its 4 bytes and the next type.
    tags = 0
    while tags < 2 and n >= ofs + 6:
        tpid = (p[ofs] << 8) | p[ofs + 1]
        if tpid != ETH_TYPE_VLAN and tpid != ETH_TYPE_VLAN_8021AD:
            break
        tci = (p[ofs + 2] << 8) | p[ofs + 3]
        pre = "vlan_" if tags == 0 else "cvlan_"
        key |= (_put(pre + "tpid", tpid) | _put(pre + "vid", tci & 0xFFF)
                | _put(pre + "pcp", tci >> 13))
        tags += 1
        ofs += 4
    if n < ofs + 2:  # (cannot happen for ofs == 12)
        return Parsed(key, problem="truncated vlan")
    et = (p[ofs] << 8) | p[ofs + 1]
    ofs += 2
    problem = None
    if (et == ETH_TYPE_VLAN or et == ETH_TYPE_VLAN_8021AD) and tags < 2:
        problem = "truncated vlan"
    if et < 0x600:
        # 802.3 length: SNAP carries an ethertype, anything else is "none".
        if n >= ofs + 8 and p[ofs:ofs + 6] == b"\xaa\xaa\x03\x00\x00\x00":
            et = (p[ofs + 6] << 8) | p[ofs + 7]
            ofs += 8
            if et < 0x600:
                et = ETH_TYPE_NONE
        else:
            et = ETH_TYPE_NONE
    key |= et << O_ETH_TYPE
    if problem is not None:
        return Parsed(key, eth_type=et, problem=problem)
    if et == ETH_TYPE_IPV4:
        return _ipv4(p, key, ofs)
    if et == ETH_TYPE_IPV6:
        return _ipv6(p, key, ofs)
    if et == ETH_TYPE_ARP or et == ETH_TYPE_RARP:
        return _arp(p, key, ofs, et)
    if et == ETH_TYPE_MPLS or et == ETH_TYPE_MPLS_MC:
        if n < ofs + 4:
            return Parsed(key, l2_5=ofs, eth_type=et, problem="truncated mpls")
        lse = _I.unpack_from(p, ofs)[0]
        key |= (_put("mpls_label", lse >> 12) | _put("mpls_tc", (lse >> 9) & 7)
                | _put("mpls_bos", (lse >> 8) & 1) | _put("mpls_ttl", lse & 0xFF))
        return Parsed(key, l2_5=ofs, eth_type=et)
    return Parsed(key, l3=ofs, eth_type=et)


def _arp(p: bytes, key: int, ofs: int, et: int) -> Parsed:
    if len(p) < ofs + 28:
        return Parsed(key, l3=ofs, eth_type=et, problem="truncated arp")
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", p, ofs)
    if htype != 1 or ptype != ETH_TYPE_IPV4 or hlen != 6 or plen != 4:
        return Parsed(key, l3=ofs, eth_type=et, problem="bad arp")
    if op > _ARP_OP_MAX:
        op = 0  # OVS keeps only ops that fit its 8-bit field; a larger one reads as 0
    key |= (_put("arp_op", op) | _put("arp_sha", _from(p[ofs + 8:ofs + 14], "big"))
            | _put("arp_spa", _from(p[ofs + 14:ofs + 18], "big"))
            | _put("arp_tha", _from(p[ofs + 18:ofs + 24], "big"))
            | _put("arp_tpa", _from(p[ofs + 24:ofs + 28], "big")))
    return Parsed(key, l3=ofs, eth_type=et)


def _ipv4(p: bytes, key: int, ofs: int) -> Parsed:
    et = ETH_TYPE_IPV4
    n = len(p)
    if n < ofs + 20:
        return Parsed(key, l3=ofs, eth_type=et, problem="truncated ipv4")
    vihl, tos, tlen, _, fo, ttl, proto, _, src, dst = _V4.unpack_from(p, ofs)
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < 20 or tlen < ihl or n < ofs + ihl:
        return Parsed(key, l3=ofs, eth_type=et, problem="bad ipv4 header")
    if n < ofs + tlen:
        return Parsed(key, l3=ofs, eth_type=et, problem="truncated ipv4")
    frag = 0
    if fo & 0x3FFF:
        frag = FRAG_ANY | (FRAG_LATER if fo & 0x1FFF else 0)
    key |= (_put("ipv4_src", src) | _put("ipv4_dst", dst) | _put("ip_proto", proto)
            | _put("ip_tos", tos) | _put("ip_ttl", ttl) | _put("ip_frag", frag))
    l4 = ofs + ihl
    end = ofs + tlen
    if frag & FRAG_LATER:
        return Parsed(key, l3=ofs, l3_end=end, eth_type=et, ip_proto=proto, frag=frag)
    return _l4(p, key, ofs, l4, end, et, proto, frag)


# IPv6 extension headers that OVS walks (and their length rule).
_EXT_8 = (0, 43, 60)  # hop-by-hop, routing, destination options: (len+1)*8
_EXT_AH = 51  # (len+2)*4
_EXT_FRAG = 44


def _ipv6(p: bytes, key: int, ofs: int) -> Parsed:
    et = ETH_TYPE_IPV6
    n = len(p)
    if n < ofs + 40:
        return Parsed(key, l3=ofs, eth_type=et, problem="truncated ipv6")
    vcf = _I.unpack_from(p, ofs)[0]
    plen = _H.unpack_from(p, ofs + 4)[0]
    nh, hlim = p[ofs + 6], p[ofs + 7]
    if vcf >> 28 != 6:
        return Parsed(key, l3=ofs, eth_type=et, problem="bad ipv6 header")
    end = ofs + 40 + plen
    if n < end:
        return Parsed(key, l3=ofs, eth_type=et, problem="truncated ipv6")
    key |= (_put("ipv6_src", _from(p[ofs + 8:ofs + 24], "big"))
            | _put("ipv6_dst", _from(p[ofs + 24:ofs + 40], "big"))
            | _put("ipv6_label", vcf & 0xFFFFF))
    tos = (vcf >> 20) & 0xFF
    l4 = ofs + 40
    frag = 0
    while True:
        if nh in _EXT_8 or nh == _EXT_AH:
            if end < l4 + 8:
                return Parsed(key, l3=ofs, l3_end=end, eth_type=et, problem="truncated ipv6 ext")
            hl = (p[l4 + 1] + 1) * 8 if nh != _EXT_AH else (p[l4 + 1] + 2) * 4
            if end < l4 + hl:
                return Parsed(key, l3=ofs, l3_end=end, eth_type=et, problem="truncated ipv6 ext")
            nh = p[l4]
            l4 += hl
        elif nh == _EXT_FRAG:
            if end < l4 + 8:
                return Parsed(key, l3=ofs, l3_end=end, eth_type=et, problem="truncated ipv6 ext")
            fo = _H.unpack_from(p, l4 + 2)[0]
            nh = p[l4]
            l4 += 8
            if fo & 0xFFF9:  # offset or M flag: a fragment
                frag = FRAG_ANY | (FRAG_LATER if fo & 0xFFF8 else 0)
            if frag & FRAG_LATER:
                break
        else:
            break
    key |= (_put("ip_proto", nh) | _put("ip_tos", tos) | _put("ip_ttl", hlim)
            | _put("ip_frag", frag))
    if frag & FRAG_LATER:
        return Parsed(key, l3=ofs, l3_end=end, eth_type=et, ip_proto=nh, frag=frag)
    return _l4(p, key, ofs, l4, end, et, nh, frag)


def _l4(p: bytes, key: int, l3: int, l4: int, end: int, et: int, proto: int,
        frag: int) -> Parsed:
    avail = end - l4
    problem = None
    if proto == IPPROTO_TCP:
        if avail >= 20 and (p[l4 + 12] >> 4) * 4 >= 20 and (p[l4 + 12] >> 4) * 4 <= avail:
            sport, dport = _HH.unpack_from(p, l4)
            flags = _H.unpack_from(p, l4 + 12)[0] & TCP_FLAGS_MASK
            key |= _put("tp_src", sport) | _put("tp_dst", dport) | _put("tcp_flags", flags)
        else:
            problem = "truncated tcp"
    elif proto == IPPROTO_UDP or proto == IPPROTO_SCTP:
        if avail >= (8 if proto == IPPROTO_UDP else 12):
            sport, dport = _HH.unpack_from(p, l4)
            key |= _put("tp_src", sport) | _put("tp_dst", dport)
        else:
            problem = "truncated udp" if proto == IPPROTO_UDP else "truncated sctp"
    elif proto == IPPROTO_ICMP and et == ETH_TYPE_IPV4:
        if avail >= 4:
            key |= _put("icmp_type", p[l4]) | _put("icmp_code", p[l4 + 1])
        else:
            problem = "truncated icmp"
    elif proto == IPPROTO_ICMPV6 and et == ETH_TYPE_IPV6:
        if avail >= 4:
            typ, code = p[l4], p[l4 + 1]
            key |= _put("icmp_type", typ) | _put("icmp_code", code)
            if code == 0 and (typ == 135 or typ == 136):
                nd, problem = _nd(p, l4, end, typ)
                key |= nd
        else:
            problem = "truncated icmpv6"
    return Parsed(key, l3=l3, l4=l4, l3_end=end, eth_type=et, ip_proto=proto, frag=frag,
                  problem=problem)


def _nd(p: bytes, l4: int, end: int, typ: int) -> tuple[int, str | None]:
    """ND target and link-layer options; a malformed message yields no nd_* fields."""
    if end < l4 + 24:
        return 0, "truncated nd"
    out = _put("nd_target", _from(p[l4 + 8:l4 + 24], "big"))
    sll = tll = 0
    ofs = l4 + 24
    while end - ofs >= 8:
        otype, olen = p[ofs], p[ofs + 1] * 8
        if olen == 0 or ofs + olen > end:
            return 0, "bad nd option"
        if olen == 8 and otype == 1 and typ == 135:
            if sll:
                return 0, "bad nd option"  # duplicate, as OVS
            sll = _from(p[ofs + 2:ofs + 8], "big")
        elif olen == 8 and otype == 2 and typ == 136:
            if tll:
                return 0, "bad nd option"
            tll = _from(p[ofs + 2:ofs + 8], "big")
        ofs += olen
    return out | _put("nd_sll", sll) | _put("nd_tll", tll), None
