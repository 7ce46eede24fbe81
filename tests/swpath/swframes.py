"""Frame builders for the swpath tests, written from the RFCs, independent of
swpath.parse: each returns the frame bytes and the fields a parser must find.
Also a from-scratch checksum oracle (RFC 1071), used by test_execute."""

from __future__ import annotations

import struct

Fields = dict[str, int]


def mac(n: int) -> bytes:
    return n.to_bytes(6, "big")


def csum(data: bytes) -> int:
    """RFC 1071 Internet checksum, computed from scratch."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst: int, src: int, eth_type: int, tags: tuple[tuple[int, int, int], ...] = ()
        ) -> tuple[bytes, Fields]:
    """Ethernet header with VLAN tags (tpid, vid, pcp), outer first."""
    b = mac(dst) + mac(src)
    f: Fields = {"eth_dst": dst, "eth_src": src, "eth_type": eth_type}
    for i, (tpid, vid, pcp) in enumerate(tags):
        b += struct.pack("!HH", tpid, pcp << 13 | vid)
        pre = "vlan_" if i == 0 else "cvlan_"
        f.update({pre + "tpid": tpid, pre + "vid": vid, pre + "pcp": pcp})
    return b + struct.pack("!H", eth_type), f


def ipv4(src: int, dst: int, proto: int, payload: bytes, tos: int = 0, ttl: int = 64,
         options: bytes = b"", frag_off: int = 0, mf: bool = False, df: bool = False
         ) -> bytes:
    ihl = 5 + len(options) // 4
    fo = frag_off | (0x2000 if mf else 0) | (0x4000 if df else 0)
    hdr = struct.pack("!BBHHHBBHII", 0x40 | ihl, tos, ihl * 4 + len(payload), 7, fo, ttl,
                      proto, 0, src, dst) + options
    c = csum(hdr)
    hdr = hdr[:10] + struct.pack("!H", c) + hdr[12:]
    return hdr + payload


def ipv6(src: int, dst: int, nh: int, payload: bytes, tclass: int = 0, label: int = 0,
         hlim: int = 64) -> bytes:
    return struct.pack("!IHBB", 6 << 28 | tclass << 20 | label, len(payload), nh, hlim) + \
        src.to_bytes(16, "big") + dst.to_bytes(16, "big") + payload


def ext(nh: int, body_len8: int = 0) -> bytes:
    """Hop-by-hop / routing / dest-opts header of (body_len8+1)*8 bytes."""
    return bytes([nh, body_len8]) + b"\x01\x04\0\0\0\0" + bytes(8 * body_len8)


def frag6(nh: int, offset8: int, more: bool) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset8 << 3 | (1 if more else 0), 0x1234)


def tcp(sport: int, dport: int, flags: int, payload: bytes = b"", options: bytes = b"",
        ) -> bytes:
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIHHHH", sport, dport, 1, 2, doff << 12 | flags, 1000, 0, 0) + \
        options + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHII", sport, dport, 5, 0)


def icmp(typ: int, code: int, payload: bytes = b"\0\0\0\0") -> bytes:
    return struct.pack("!BBH", typ, code, 0) + payload


def nd(typ: int, target: int, opts: tuple[tuple[int, int], ...] = ()) -> bytes:
    """ICMPv6 NS (135) / NA (136) with (option type, mac) options."""
    b = struct.pack("!BBHI", typ, 0, 0, 0) + target.to_bytes(16, "big")
    for otype, m in opts:
        b += bytes([otype, 1]) + mac(m)
    return b


def arp(op: int, sha: int, spa: int, tha: int, tpa: int) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac(sha) + spa.to_bytes(4, "big") + \
        mac(tha) + tpa.to_bytes(4, "big")


def l4_csum_ok(frame: bytes, l3: int, v6: bool) -> bool:
    """Does the TCP/UDP/ICMPv6 checksum of an IP frame verify, from scratch?"""
    if v6:
        plen = struct.unpack_from("!H", frame, l3 + 4)[0]
        nh = frame[l3 + 6]
        l4 = l3 + 40
        seg = frame[l4:l4 + plen]
        pseudo = frame[l3 + 8:l3 + 40] + struct.pack("!IxxxB", len(seg), nh)
    else:
        ihl = (frame[l3] & 0xF) * 4
        tlen = struct.unpack_from("!H", frame, l3 + 2)[0]
        nh = frame[l3 + 9]
        seg = frame[l3 + ihl:l3 + tlen]
        pseudo = frame[l3 + 12:l3 + 20] + struct.pack("!xBH", nh, len(seg))
    return csum(pseudo + seg) == 0


def with_l4_csum(frame: bytes, l3: int, v6: bool, csum_ofs: int) -> bytes:
    """Fill in the L4 checksum at ``csum_ofs`` within the L4 header."""
    if v6:
        l4 = l3 + 40
        nh = frame[l3 + 6]
        seg = frame[l4:]
        pseudo = frame[l3 + 8:l3 + 40] + struct.pack("!IxxxB", len(seg), nh)
    else:
        l4 = l3 + (frame[l3] & 0xF) * 4
        nh = frame[l3 + 9]
        seg = frame[l4:]
        pseudo = frame[l3 + 12:l3 + 20] + struct.pack("!xBH", nh, len(seg))
    c = csum(pseudo + seg)
    if c == 0 and nh == 17:
        c = 0xFFFF
    at = l4 + csum_ofs
    return frame[:at] + struct.pack("!H", c) + frame[at + 2:]
