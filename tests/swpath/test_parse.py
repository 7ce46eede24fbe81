"""swpath.parse: hand-built frames for every protocol, a field-by-field oracle
over generated frames, fast path == general path, and a fuzz test."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif.fields import FRAG_ANY, FRAG_LATER
from dpif.match import pack, unpack
from tests.swpath.swframes import (
    arp, eth, ext, frag6, icmp, ipv4, ipv6, nd, sctp, tcp, udp,
)
import swpath.parse as parse_mod
from swpath.parse import (
    ETH_TYPE_NONE, METADATA_MASK, Parsed, ParseStats, packet_len, packet_tcp_flags, parse_key,
    parse_layers,
)

A4, B4 = 0x0A000001, 0xC0A80102
A6, B6 = 0x20010DB8 << 96 | 1, 0xFE80 << 112 | 0x2


def check(frame: bytes, expected: dict[str, int], md: int = 0) -> None:
    stats = ParseStats()
    got = parse_key(frame, md, stats)
    assert unpack(got & ~METADATA_MASK) == {k: v for k, v in expected.items() if v}
    assert got & METADATA_MASK == md
    assert parse_layers(frame, md).key == got


# -- hand-built frames, one per protocol --------------------------------------

def test_ipv4_tcp() -> None:
    h, f = eth(2, 1, 0x0800)
    frame = h + ipv4(A4, B4, 6, tcp(1234, 80, 0x012), tos=0xB8, ttl=33)
    check(frame, f | dict(ipv4_src=A4, ipv4_dst=B4, ip_proto=6, ip_tos=0xB8, ip_ttl=33,
                          tp_src=1234, tp_dst=80, tcp_flags=0x012))


def test_ipv4_udp_padded_short_frame() -> None:
    h, f = eth(2, 1, 0x0800)
    frame = h + ipv4(A4, B4, 17, udp(53, 5353)) + bytes(18)  # Ethernet padding
    check(frame, f | dict(ipv4_src=A4, ipv4_dst=B4, ip_proto=17, ip_ttl=64,
                          tp_src=53, tp_dst=5353))


def test_ipv4_options_sctp_icmp() -> None:
    h, f = eth(2, 1, 0x0800)
    opts = b"\x94\x04\0\0" + b"\x01\x01\x01\x00"  # router alert, nops, eol
    frame = h + ipv4(A4, B4, 132, sctp(7, 9), options=opts)
    check(frame, f | dict(ipv4_src=A4, ipv4_dst=B4, ip_proto=132, ip_ttl=64, tp_src=7,
                          tp_dst=9))
    frame = h + ipv4(A4, B4, 1, icmp(8, 0))
    check(frame, f | dict(ipv4_src=A4, ipv4_dst=B4, ip_proto=1, ip_ttl=64, icmp_type=8))


def test_ipv4_fragments() -> None:
    h, f = eth(2, 1, 0x0800)
    base = f | dict(ipv4_src=A4, ipv4_dst=B4, ip_proto=17, ip_ttl=64)
    first = h + ipv4(A4, B4, 17, udp(1, 2, b"x" * 8), mf=True)
    check(first, base | dict(ip_frag=FRAG_ANY, tp_src=1, tp_dst=2))
    later = h + ipv4(A4, B4, 17, udp(1, 2), frag_off=3)
    check(later, base | dict(ip_frag=FRAG_ANY | FRAG_LATER))  # no L4 on later frags
    df = h + ipv4(A4, B4, 17, udp(1, 2), df=True)
    check(df, base | dict(tp_src=1, tp_dst=2))  # DF alone is not a fragment


def test_vlan_and_qinq() -> None:
    h, f = eth(2, 1, 0x0800, ((0x8100, 10, 5),))
    check(h + ipv4(A4, B4, 17, udp(1, 2)),
          f | dict(ipv4_src=A4, ipv4_dst=B4, ip_proto=17, ip_ttl=64, tp_src=1, tp_dst=2))
    h, f = eth(2, 1, 0x86DD, ((0x88A8, 100, 1), (0x8100, 4095, 7)))
    assert f["cvlan_vid"] == 4095 and f["vlan_tpid"] == 0x88A8
    check(h + ipv6(A6, B6, 17, udp(3, 4)),
          f | dict(ipv6_src=A6, ipv6_dst=B6, ip_proto=17, ip_ttl=64, tp_src=3, tp_dst=4))


def test_mpls_top_label() -> None:
    h, f = eth(2, 1, 0x8847)
    lse1 = 1000 << 12 | 3 << 9 | 0 << 8 | 17
    lse2 = 2000 << 12 | 1 << 8 | 5
    check(h + struct.pack("!II", lse1, lse2) + bytes(20),
          f | dict(mpls_label=1000, mpls_tc=3, mpls_bos=0, mpls_ttl=17))


def test_arp() -> None:
    h, f = eth(0xFFFFFFFFFFFF, 1, 0x0806)
    check(h + arp(1, 0x0A0B0C0D0E0F, A4, 0, B4),
          f | dict(arp_op=1, arp_sha=0x0A0B0C0D0E0F, arp_spa=A4, arp_tpa=B4))


def test_ipv6_ext_headers_and_label() -> None:
    h, f = eth(2, 1, 0x86DD)
    payload = ext(43, 1) + ext(60) + ext(6) + tcp(9, 10, 0x002)  # hbh, rt, dst
    frame = h + ipv6(A6, B6, 0, payload, tclass=0x28, label=0xABCDE, hlim=7)
    check(frame, f | dict(ipv6_src=A6, ipv6_dst=B6, ipv6_label=0xABCDE, ip_tos=0x28,
                          ip_ttl=7, ip_proto=6, tp_src=9, tp_dst=10, tcp_flags=2))


def test_ipv6_fragments() -> None:
    h, f = eth(2, 1, 0x86DD)
    base = f | dict(ipv6_src=A6, ipv6_dst=B6, ip_ttl=64, ip_proto=17)
    first = h + ipv6(A6, B6, 44, frag6(17, 0, True) + udp(5, 6))
    check(first, base | dict(ip_frag=FRAG_ANY, tp_src=5, tp_dst=6))
    later = h + ipv6(A6, B6, 0, ext(44) + frag6(17, 100, False) + bytes(16))
    check(later, base | dict(ip_frag=FRAG_ANY | FRAG_LATER))


def test_icmpv6_nd() -> None:
    h, f = eth(2, 1, 0x86DD)
    t = 0xFE80 << 112 | 0x99
    ns = h + ipv6(A6, B6, 58, nd(135, t, ((1, 0x112233445566),)), hlim=255)
    base = f | dict(ipv6_src=A6, ipv6_dst=B6, ip_ttl=255, ip_proto=58)
    check(ns, base | dict(icmp_type=135, nd_target=t, nd_sll=0x112233445566))
    na = h + ipv6(A6, B6, 58, nd(136, t, ((2, 0xAABBCCDDEEFF),)), hlim=255)
    check(na, base | dict(icmp_type=136, nd_target=t, nd_tll=0xAABBCCDDEEFF))
    dup = h + ipv6(A6, B6, 58, nd(135, t, ((1, 1), (1, 2))), hlim=255)
    check(dup, base | dict(icmp_type=135))  # malformed ND: no nd_* at all
    echo = h + ipv6(A6, B6, 58, icmp(128, 0))
    check(echo, f | dict(ipv6_src=A6, ipv6_dst=B6, ip_ttl=64, ip_proto=58, icmp_type=128))


def test_llc_snap_and_8023() -> None:
    h = (2).to_bytes(6, "big") + (1).to_bytes(6, "big")
    snap = h + struct.pack("!H", 50) + b"\xaa\xaa\x03\x00\x00\x00\x08\x06" + \
        arp(2, 5, A4, 6, B4)
    check(snap, dict(eth_dst=2, eth_src=1, eth_type=0x0806, arp_op=2, arp_sha=5, arp_spa=A4,
                     arp_tha=6, arp_tpa=B4))
    llc = h + struct.pack("!H", 50) + b"\x42\x42\x03" + bytes(40)
    check(llc, dict(eth_dst=2, eth_src=1, eth_type=ETH_TYPE_NONE))


def test_truncated_counted_and_partial() -> None:
    h, f = eth(2, 1, 0x0800)
    whole = h + ipv4(A4, B4, 6, tcp(1, 2, 2))
    stats = ParseStats()
    k = parse_key(whole[:30], 0, stats)
    assert unpack(k) == f  # L3 too short: eth fields only, like OVS
    assert stats.counts == {"truncated ipv4": 1}
    assert parse_key(whole[:5], 0, stats) == 0
    assert stats.total == 2
    # IPv4 header whole but TCP cut inside the IP total length -> rejected as truncated
    k = parse_key(whole[:40], 0, stats)
    assert unpack(k) == f


def test_metadata_ored_and_helpers() -> None:
    h, _ = eth(2, 1, 0x0800)
    frame = h + ipv4(A4, B4, 6, tcp(1, 2, 0x018))
    md = pack({"in_port": 7, "recirc_id": 3, "skb_mark": 9})
    assert parse_key(frame, md) & METADATA_MASK == md
    assert packet_tcp_flags(frame) == 0x018
    assert packet_tcp_flags(h + ipv4(A4, B4, 17, udp(1, 2))) == 0
    assert packet_len(frame) == len(frame)


# -- oracle: generated frames, every field checked -------------------------------

u8, u16, u32 = st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
u48, u128 = st.integers(0, (1 << 48) - 1), st.integers(0, (1 << 128) - 1)
tag = st.tuples(st.sampled_from([0x8100, 0x88A8]), st.integers(0, 4095), st.integers(0, 7))


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, dict[str, int]]:
    tags = tuple(draw(st.lists(tag, max_size=2)))
    l3 = draw(st.sampled_from(["ipv4", "ipv6", "arp", "mpls", "other"]))
    exp: dict[str, int] = {}
    proto = draw(st.sampled_from([6, 17, 132, 1, 58, 47]))
    sport, dport, flags = draw(u16), draw(u16), draw(st.integers(0, 0xFFF))
    l4 = {6: tcp(sport, dport, flags), 17: udp(sport, dport), 132: sctp(sport, dport)}
    if proto in l4:
        payload = l4[proto]
        exp.update(tp_src=sport, tp_dst=dport)
        if proto == 6:
            exp["tcp_flags"] = flags
    else:
        t, c = draw(u8), draw(u8)
        payload = icmp(t, c)
    if l3 == "ipv4":
        et = 0x0800
        src, dst, tos, ttl = draw(u32), draw(u32), draw(u8), draw(st.integers(1, 255))
        if proto == 1:
            exp.update(icmp_type=t, icmp_code=c)
        elif proto == 58:
            pass
        opts = bytes(4 * draw(st.integers(0, 2)))
        body = ipv4(src, dst, proto, payload, tos=tos, ttl=ttl, options=opts)
        exp.update(ipv4_src=src, ipv4_dst=dst, ip_proto=proto, ip_tos=tos, ip_ttl=ttl)
    elif l3 == "ipv6":
        et = 0x86DD
        src, dst, tc, lab, hl = draw(u128), draw(u128), draw(u8), draw(st.integers(0, 0xFFFFF)), \
            draw(u8)
        if proto == 58 and not (payload[1] == 0 and payload[0] in (135, 136)):
            exp.update(icmp_type=t, icmp_code=c)
        elif proto == 58:
            payload = icmp(128, 0)
            exp.update(icmp_type=128)
        body = ipv6(src, dst, proto, payload, tclass=tc, label=lab, hlim=hl)
        exp.update(ipv6_src=src, ipv6_dst=dst, ipv6_label=lab, ip_tos=tc, ip_ttl=hl,
                   ip_proto=proto)
    else:
        for k in ("tp_src", "tp_dst", "tcp_flags"):
            exp.pop(k, None)
        if l3 == "arp":
            et, op, sha, spa, tha, tpa = 0x0806, draw(u16), draw(u48), draw(u32), draw(u48), \
                draw(u32)
            body = arp(op, sha, spa, tha, tpa)
            exp.update(arp_op=op if op <= 0xFF else 0,  # OVS: a larger op reads as 0
                       arp_sha=sha, arp_spa=spa, arp_tha=tha, arp_tpa=tpa)
        elif l3 == "mpls":
            et, lab, tc, bos, ttl = 0x8847, draw(st.integers(0, 0xFFFFF)), \
                draw(st.integers(0, 7)), draw(st.integers(0, 1)), draw(u8)
            body = struct.pack("!I", lab << 12 | tc << 9 | bos << 8 | ttl) + bytes(20)
            exp.update(mpls_label=lab, mpls_tc=tc, mpls_bos=bos, mpls_ttl=ttl)
        else:
            et, body = 0x88CC, bytes(30)
    if l3 in ("ipv4", "ipv6") and proto not in (6, 17, 132, 1, 58):
        pass
    if l3 == "ipv4" and proto == 58 or l3 == "ipv6" and proto == 1:
        pass  # ICMP over the wrong IP version: no L4 fields
    if l3 in ("ipv4", "ipv6") and proto == 47:
        pass
    h, f = eth(draw(u48), draw(u48), et, tags)
    exp.update(f)
    pad = bytes(draw(st.integers(0, 20)))
    return h + body + pad, exp


@settings(max_examples=400, deadline=None)
@given(frames(), st.integers(0, (1 << 32) - 1))
def test_parse_oracle_every_field(fe: tuple[bytes, dict[str, int]], port: int) -> None:
    frame, exp = fe
    md = pack({"in_port": port})
    assert parse_key(frame, md) == pack({k: v for k, v in exp.items() if v}) | md


@settings(max_examples=300, deadline=None)
@given(frames())
def test_fast_path_equals_general_path(fe: tuple[bytes, dict[str, int]]) -> None:
    frame, _ = fe
    assert parse_key(frame, 5) == parse_layers(frame, 5).key


# -- fuzz: random and mutated frames never raise -----------------------------------

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    stats = ParseStats()
    k = parse_key(data, 0, stats)
    assert k >= 0
    assert parse_layers(data).key == k


@settings(max_examples=500, deadline=None)
@given(frames(), st.lists(st.tuples(st.integers(0, 300), u8), max_size=6),
       st.integers(0, 300))
def test_fuzz_mutated_frames_never_raise(fe: tuple[bytes, dict[str, int]],
                                         flips: list[tuple[int, int]], cut: int) -> None:
    frame = bytearray(fe[0])
    for pos, val in flips:
        if pos < len(frame):
            frame[pos] = val
    data = bytes(frame[:cut])
    stats = ParseStats()
    k = parse_key(data, 0, stats)
    assert parse_layers(data).key == k
    assert packet_tcp_flags(data) >= 0


# -- the fast path's profiles: each one taken, and equal to the general path -----

PROFILES = [(tags, proto) for tags in (0, 1) for proto in (6, 17)]


@st.composite
def profile_frames(draw: st.DrawFn, tags: int, proto: int) -> tuple[bytes, dict[str, int]]:
    """A frame of one fast-path profile (Ethernet, ``tags`` VLAN tags, IPv4
    without options, not a fragment, TCP or UDP) and its fields."""
    vlan = tuple(draw(st.lists(tag, min_size=tags, max_size=tags)))
    h, exp = eth(draw(u48), draw(u48), 0x0800, vlan)
    src, dst, tos, ttl = draw(u32), draw(u32), draw(u8), draw(u8)
    sport, dport = draw(u16), draw(u16)
    payload = bytes(draw(st.integers(0, 30)))
    if proto == 6:
        flags = draw(st.integers(0, 0xFFF))
        opts = bytes(4 * draw(st.integers(0, 10)))  # data offset 5..15
        l4 = tcp(sport, dport, flags, payload, opts)
        exp["tcp_flags"] = flags
    else:
        l4 = udp(sport, dport, payload)
    frame = h + ipv4(src, dst, proto, l4, tos=tos, ttl=ttl, df=draw(st.booleans()))
    exp.update(ipv4_src=src, ipv4_dst=dst, ip_proto=proto, ip_tos=tos, ip_ttl=ttl,
               tp_src=sport, tp_dst=dport)
    return frame + bytes(max(0, 60 - len(frame))), exp  # padded to the Ethernet minimum


@pytest.mark.parametrize(("tags", "proto"), PROFILES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fast_path_profile_taken_and_exact(tags: int, proto: int, data: st.DataObject) -> None:
    frame, exp = data.draw(profile_frames(tags, proto))
    md = pack({"in_port": data.draw(u32), "recirc_id": data.draw(u32)})
    general = parse_layers(frame, md).key
    assert general == pack({k: v for k, v in exp.items() if v}) | md
    with pytest.MonkeyPatch.context() as m:  # the fast path answers alone
        m.setattr(parse_mod, "parse_layers", _no_general)
        assert parse_key(frame, md) == general


def _no_general(packet: bytes, md: int = 0) -> Parsed:
    raise AssertionError("the fast path handed a profile frame to the general path")


@pytest.mark.parametrize(("tags", "proto"), PROFILES)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fast_path_profile_near_misses_equal_general(tags: int, proto: int,
                                                     data: st.DataObject) -> None:
    """Profile frames with the bytes the fast path checks changed (ethertypes,
    version/ihl, total length, fragment bits, protocol, data offset) or cut."""
    frame = bytearray(data.draw(profile_frames(tags, proto))[0])
    l3 = 14 + 4 * tags
    spots = [12, 13, l3 - 2, l3 - 1, l3, l3 + 2, l3 + 3, l3 + 6, l3 + 7, l3 + 9, l3 + 32]
    for pos in data.draw(st.lists(st.sampled_from(spots), max_size=3)):
        frame[pos] = data.draw(st.sampled_from([0, 0x08, 0x45, 0x46, 0x81, 0x88, 0xA8, 0x20,
                                                0x3F, 0x50, 0xFF, 6, 17, data.draw(u8)]))
    if proto == 6 and data.draw(st.booleans()):  # TCP data offset one word past the end?
        frame[l3 + 32] = (frame[l3 + 32] + 0x10) & 0xFF
    cut = data.draw(st.integers(40, len(frame)))
    for f in (bytes(frame), bytes(frame[:cut])):
        assert parse_key(f, 7) == parse_layers(f, 7).key
