"""Datapath action execution on packet bytes.

Theory of operation
-------------------
``execute_actions(packet, key, actions)`` runs an action list on one packet
and *returns what should happen* as a list of effects -- it sends nothing:

``Emit(port, packet)``          transmit a copy on a port (``output``);
``Upcall(packet, key, reason)`` hand a copy to userspace (``userspace``
                                action, or ``dec_ttl`` at ttl <= 1);
``Recirculate(packet, md)``     look the packet up again with metadata ``md``
                                (``recirc_id`` set, ``dp_hash`` from ``hash``).

The datapath turns effects into I/O and bounds recirculation depth.  An
empty result means the packet was dropped.

The packet is a ``bytearray`` while actions run.  Header rewrites (``set``,
masked or not) find layers with ``swpath.parse.parse_layers`` and keep every
checksum right *incrementally* (RFC 1624), as the kernel and OVS do, so a
packet that arrived with a wrong checksum keeps it wrong:

* IPv4 header checksum for tos/ttl/src/dst;
* TCP, UDP and ICMPv6 pseudo-header checksums when IPv4/IPv6 addresses
  change (a UDP zero checksum over IPv4 means "none" and stays zero; a
  computed zero is sent as 0xffff);
* TCP/UDP checksums for port changes; SCTP's CRC32c by OVS's trick
  ``stored ^ crc(old) ^ crc(new)``.

Not supported here, refused with ``UnsupportedAction`` naming the action:
``ct`` (no conntrack in swpath), ``set(tunnel(...))`` (no tunnel encap/decap
yet), and ``set`` of groups other than eth/ipv4/ipv6/tcp/udp/sctp, as well as
``set`` of ``ip_proto``/``ip_frag``.  ``check_actions`` finds them up front,
so a flow that cannot run is refused at ``put``, not dropped at run time.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from dpif.actions import (
    UINT32_MAX, Actions, Ct, CtClear, DecTtl, Hash, Output, PopVlan, PushVlan, Recirc, Sample,
    SetField, Userspace,
)
from dpif.errors import DatapathError
from dpif.fields import (
    BY_NAME, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD, FRAG_LATER,
    IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
)
from swpath.parse import METADATA_MASK, Parsed, parse_layers

__all__ = ["Emit", "Upcall", "Recirculate", "Effect", "UnsupportedAction",
           "execute_actions", "check_actions", "dp_hash_5tuple"]


class UnsupportedAction(DatapathError):
    """The software datapath cannot run this action."""


@dataclass(frozen=True, slots=True)
class Emit:
    port: int
    packet: bytes


@dataclass(frozen=True, slots=True)
class Upcall:
    """A packet for userspace: ``reason`` is "userspace" or "dec_ttl"."""

    packet: bytes
    key: int
    reason: str
    userdata: bytes = b""
    pid: int = 0


@dataclass(frozen=True, slots=True)
class Recirculate:
    """Re-run the lookup on ``packet`` with metadata ``md`` (recirc_id set)."""

    packet: bytes
    md: int


Effect = Emit | Upcall | Recirculate

_SETTABLE = {
    "eth": {"eth_src", "eth_dst"},
    "ipv4": {"ipv4_src", "ipv4_dst", "ip_tos", "ip_ttl"},
    "ipv6": {"ipv6_src", "ipv6_dst", "ipv6_label", "ip_tos", "ip_ttl"},
    "tcp": {"tp_src", "tp_dst"},
    "udp": {"tp_src", "tp_dst"},
    "sctp": {"tp_src", "tp_dst"},
}

_F_RECIRC = BY_NAME["recirc_id"]
_F_DP_HASH = BY_NAME["dp_hash"]
_CT_CLEAR = ~(BY_NAME["ct_state"].field_mask | BY_NAME["ct_zone"].field_mask
              | BY_NAME["ct_mark"].field_mask)


def check_actions(actions: Actions) -> None:
    """Raise UnsupportedAction for the first action swpath cannot run."""
    for a in actions:
        if isinstance(a, Ct):
            raise UnsupportedAction("ct is not supported by the software datapath "
                                    "(no conntrack in swpath)", action="ct")
        if isinstance(a, SetField):
            ok = _SETTABLE.get(a.group)
            if ok is None:
                raise UnsupportedAction("set of this header group is not supported by the "
                                        "software datapath", action=f"set({a.group})")
            for name, _, _ in a.fields:
                if name not in ok:
                    raise UnsupportedAction("set of this field is not supported",
                                            action=f"set({a.group})", field=name)
        elif isinstance(a, Sample):
            check_actions(a.actions)


# -- checksums -----------------------------------------------------------------


def _csum_update(csum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 eqn. 3 over 16-bit words: HC' = ~(~HC + ~m + m')."""
    s = ~csum & 0xFFFF
    for i in range(0, len(old), 2):
        s += (~(old[i] << 8 | old[i + 1]) & 0xFFFF) + (new[i] << 8 | new[i + 1])
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _crc32c_table() -> list[int]:
    tab = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        tab.append(c)
    return tab


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    tab = _CRC32C
    for b in data:
        c = tab[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def sctp_crc(packet: bytes | bytearray, l4: int, end: int) -> bytes:
    """The CRC32c of an SCTP packet (checksum field as zero), as stored on the wire."""
    seg = bytes(packet[l4:l4 + 8]) + b"\0\0\0\0" + bytes(packet[l4 + 12:end])
    return crc32c(seg).to_bytes(4, "little")


# -- set -----------------------------------------------------------------------


def _l4_csum_at(p: Parsed, buf: bytearray) -> int:
    """Offset of the L4 checksum that covers the pseudo header, or -1."""
    if p.l4 < 0 or p.frag & FRAG_LATER:
        return -1
    avail = p.l3_end - p.l4
    if p.ip_proto == IPPROTO_TCP and avail >= 18:
        return p.l4 + 16
    if p.ip_proto == IPPROTO_UDP and avail >= 8:
        if p.eth_type == ETH_TYPE_IPV4 and buf[p.l4 + 6] == 0 and buf[p.l4 + 7] == 0:
            return -1  # IPv4 UDP without checksum stays without one
        return p.l4 + 6
    if p.ip_proto == IPPROTO_ICMPV6 and p.eth_type == ETH_TYPE_IPV6 and avail >= 4:
        return p.l4 + 2
    return -1


def _patch_csum(buf: bytearray, at: int, old: bytes, new: bytes, udp: bool = False) -> None:
    c = _csum_update(buf[at] << 8 | buf[at + 1], old, new)
    if udp and c == 0:
        c = 0xFFFF
    buf[at:at + 2] = c.to_bytes(2, "big")


def _rewrite(buf: bytearray, base: int, start: int, nbytes: int, shift: int, bits: int,
             value: int, mask: int) -> tuple[bytes, bytes, int]:
    """Rewrite ``bits`` bits at ``shift`` of the big-endian word at base+start.

    Returns (old, new, rel) for the smallest even-aligned (relative to
    ``base``) span holding the change, ``rel`` its offset from base.
    """
    s = start & ~1
    e = (start + nbytes + 1) & ~1
    old = bytes(buf[base + s:base + e])
    word = int.from_bytes(buf[base + start:base + start + nbytes], "big")
    fm = (mask & ((1 << bits) - 1)) << shift
    word = (word & ~fm) | ((value << shift) & fm)
    buf[base + start:base + start + nbytes] = word.to_bytes(nbytes, "big")
    return old, bytes(buf[base + s:base + e]), s


# field -> (byte offset in its header, byte width, bit shift)
_V4_POS = {"ipv4_src": (12, 4, 0), "ipv4_dst": (16, 4, 0), "ip_tos": (1, 1, 0),
           "ip_ttl": (8, 1, 0)}
_V6_POS = {"ipv6_src": (8, 16, 0), "ipv6_dst": (24, 16, 0), "ipv6_label": (0, 4, 0),
           "ip_tos": (0, 4, 20), "ip_ttl": (7, 1, 0)}
_TP_POS = {"tp_src": (0, 2, 0), "tp_dst": (2, 2, 0)}


def _set(buf: bytearray, a: SetField) -> None:
    g = a.group
    if g == "eth":
        for name, value, mask in a.fields:
            at = 0 if name == "eth_dst" else 6
            if len(buf) >= at + 6:
                _rewrite(buf, 0, at, 6, 0, 48, value, mask)
        return
    p = parse_layers(bytes(buf))
    if g == "ipv4" or g == "ipv6":
        v4 = g == "ipv4"
        if p.eth_type != (ETH_TYPE_IPV4 if v4 else ETH_TYPE_IPV6) or p.l3_end < 0:
            return  # not this kind of packet (or not a whole header): nothing to set
        l4c = _l4_csum_at(p, buf)
        for name, value, mask in a.fields:
            start, nbytes, shift = (_V4_POS if v4 else _V6_POS)[name]
            bits = BY_NAME[name].bits
            old, new, _ = _rewrite(buf, p.l3, start, nbytes, shift, bits, value, mask)
            if v4:
                _patch_csum(buf, p.l3 + 10, old, new)
            if name in ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst") and l4c >= 0:
                _patch_csum(buf, l4c, old, new, udp=p.ip_proto == IPPROTO_UDP)
        return
    want = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "sctp": IPPROTO_SCTP}[g]
    hdr = {IPPROTO_TCP: 20, IPPROTO_UDP: 8, IPPROTO_SCTP: 12}[want]
    if p.ip_proto != want or p.l4 < 0 or p.frag & FRAG_LATER or p.l3_end - p.l4 < hdr:
        return
    if want == IPPROTO_SCTP:
        before = sctp_crc(buf, p.l4, p.l3_end)
    for name, value, mask in a.fields:
        start, nbytes, shift = _TP_POS[name]
        old, new, _ = _rewrite(buf, p.l4, start, nbytes, shift, 16, value, mask)
        if want == IPPROTO_TCP:
            _patch_csum(buf, p.l4 + 16, old, new)
        elif want == IPPROTO_UDP and (buf[p.l4 + 6] or buf[p.l4 + 7]):
            _patch_csum(buf, p.l4 + 6, old, new, udp=True)
    if want == IPPROTO_SCTP:
        after = sctp_crc(buf, p.l4, p.l3_end)
        at = p.l4 + 8
        stored = bytes(x ^ y ^ z for x, y, z in zip(buf[at:at + 4], before, after))
        buf[at:at + 4] = stored


def _dec_ttl(buf: bytearray) -> bool:
    """Decrement TTL / hop limit; False when it is <= 1 (the packet must go up)."""
    p = parse_layers(bytes(buf))
    if p.eth_type == ETH_TYPE_IPV4 and p.l3_end >= 0:
        at = p.l3 + 8
        if buf[at] <= 1:
            return False
        old = bytes(buf[at:at + 2])
        buf[at] -= 1
        _patch_csum(buf, p.l3 + 10, old, bytes(buf[at:at + 2]))
    elif p.eth_type == ETH_TYPE_IPV6 and p.l3_end >= 0:
        at = p.l3 + 7
        if buf[at] <= 1:
            return False
        buf[at] -= 1
    return True


def dp_hash_5tuple(key: int, basis: int = 0) -> int:
    """OVS-style L4 hash of a key's 5-tuple; never 0 (0 means "no hash")."""
    parts = b"".join(BY_NAME[n].get(key).to_bytes((BY_NAME[n].bits + 7) // 8, "big")
                     for n in ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "ip_proto",
                               "tp_src", "tp_dst"))
    h = zlib.crc32(parts, basis & 0xFFFFFFFF)
    return h or 1


# -- the interpreter -------------------------------------------------------------


def execute_actions(packet: bytes, key: int, actions: Actions,
                    rng: Callable[[], float] = random.random) -> list[Effect]:
    """Run ``actions`` on ``packet`` (whose flow key is ``key``); return effects."""
    out: list[Effect] = []
    _run(bytearray(packet), key, actions, rng, out)
    return out


def _run(buf: bytearray, key: int, actions: Actions, rng: Callable[[], float],
         out: list[Effect]) -> None:
    dirty = False  # the packet changed since ``key`` was parsed
    for a in actions:
        if isinstance(a, Output):
            out.append(Emit(a.port, bytes(buf)))
        elif isinstance(a, SetField):
            check_actions((a,))
            _set(buf, a)
            dirty = True
        elif isinstance(a, PushVlan):
            if len(buf) >= 12:
                buf[12:12] = struct.pack("!HH", a.tpid, a.pcp << 13 | a.vid)
                dirty = True
        elif isinstance(a, PopVlan):
            if len(buf) >= 18 and (buf[12] << 8 | buf[13]) in (ETH_TYPE_VLAN,
                                                               ETH_TYPE_VLAN_8021AD):
                del buf[12:16]
                dirty = True
        elif isinstance(a, DecTtl):
            if not _dec_ttl(buf):
                out.append(Upcall(bytes(buf), key, "dec_ttl"))
                return  # OVS: the packet goes to userspace instead, nothing else runs
            dirty = True
        elif isinstance(a, Hash):
            if dirty:
                key = parse_layers(bytes(buf), key & METADATA_MASK).key
                dirty = False
            h = dp_hash_5tuple(key, a.basis)
            key = (key & ~_F_DP_HASH.field_mask) | (h << _F_DP_HASH.offset)
        elif isinstance(a, Recirc):
            md = (key & METADATA_MASK & ~_F_RECIRC.field_mask) | _F_RECIRC.put(a.recirc_id)
            out.append(Recirculate(bytes(buf), md))
        elif isinstance(a, Sample):
            if a.probability == UINT32_MAX or (a.probability and
                                               rng() < a.probability / UINT32_MAX):
                _run(bytearray(buf), key, a.actions, rng, out)
        elif isinstance(a, Userspace):
            if dirty:
                key = parse_layers(bytes(buf), key & METADATA_MASK).key
                dirty = False
            out.append(Upcall(bytes(buf), key, "userspace", a.userdata, a.pid))
        elif isinstance(a, CtClear):
            key &= _CT_CLEAR
        else:
            check_actions((a,))
            raise UnsupportedAction("action not supported by the software datapath",
                                    action=type(a).__name__)  # pragma: no cover
