"""swpath.execute: every action, checksums checked from scratch (not by the
incremental code under test), dec_ttl at 1, recirc/hash metadata, sample."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif.actions import (
    UINT32_MAX, Ct, CtClear, DecTtl, Hash, Output, PopVlan, PushVlan, Recirc, Sample, SetField,
    Userspace,
)
from dpif.fields import BY_NAME
from dpif.match import pack, unpack
from swpath.execute import (
    Emit, Recirculate, Upcall, UnsupportedAction, check_actions, crc32c, execute_actions,
)
from swpath.parse import parse_key, parse_layers
from tests.swpath.swframes import (
    csum, eth, icmp, ipv4, ipv6, l4_csum_ok, sctp, tcp, udp, with_l4_csum,
)

A4, B4 = 0x0A000001, 0xC0A80102
A6, B6 = 0x20010DB8 << 96 | 1, 0xFE80 << 112 | 0x2


def v4_frame(proto: int = 6, ttl: int = 64, udp_csum: bool = True) -> bytes:
    h, _ = eth(2, 1, 0x0800)
    l4 = {6: tcp(1000, 80, 0x18, b"hello"), 17: udp(53, 9999, b"payload!"),
          132: sctp(7, 9) + b"data"}[proto]
    f = h + ipv4(A4, B4, proto, l4, ttl=ttl)
    if proto == 6:
        f = with_l4_csum(f, 14, False, 16)
    elif proto == 17 and udp_csum:
        f = with_l4_csum(f, 14, False, 6)
    elif proto == 132:
        f = f[:14 + 20 + 8] + _crc_scratch(f[34:]) + f[34 + 12:]
    return f


def v6_frame(proto: int = 6) -> bytes:
    h, _ = eth(2, 1, 0x86DD)
    l4 = {6: tcp(1000, 80, 0x18, b"hello"), 17: udp(53, 9999, b"payload!"),
          58: icmp(128, 0, b"\0\1\0\1ping")}[proto]
    f = h + ipv6(A6, B6, proto, l4)
    return with_l4_csum(f, 14, True, {6: 16, 17: 6, 58: 2}[proto])


def _crc_scratch(sctp_pkt: bytes) -> bytes:
    """Bitwise CRC32c (no table), checksum field zeroed: the SCTP oracle."""
    data = sctp_pkt[:8] + b"\0\0\0\0" + sctp_pkt[12:]
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return (c ^ 0xFFFFFFFF).to_bytes(4, "little")


def ipv4_ok(frame: bytes, l3: int = 14) -> bool:
    ihl = (frame[l3] & 0xF) * 4
    return csum(frame[l3:l3 + ihl]) == 0


def only_emit(effects: Sequence[object]) -> bytes:
    assert len(effects) == 1 and isinstance(effects[0], Emit)
    return effects[0].packet


def fields(frame: bytes) -> dict[str, int]:
    return unpack(parse_key(frame))


def test_crc32c_known_vector() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_output_one_many_and_drop() -> None:
    f = v4_frame()
    eff = execute_actions(f, parse_key(f), (Output(1), Output(2), Output(3)))
    assert [e.port for e in eff if isinstance(e, Emit)] == [1, 2, 3]
    assert all(isinstance(e, Emit) and e.packet == f for e in eff)
    assert execute_actions(f, parse_key(f), ()) == []


def test_push_pop_vlan() -> None:
    f = v4_frame()
    out = only_emit(execute_actions(f, 0, (PushVlan(100, 5), Output(1))))
    k = fields(out)
    assert (k["vlan_tpid"], k["vlan_vid"], k["vlan_pcp"]) == (0x8100, 100, 5)
    out2 = only_emit(execute_actions(out, 0, (PushVlan(7, 0, 0x88A8), Output(1))))
    k = fields(out2)
    assert (k["vlan_tpid"], k["vlan_vid"], k["cvlan_tpid"], k["cvlan_vid"]) == \
        (0x88A8, 7, 0x8100, 100)
    assert only_emit(execute_actions(out2, 0, (PopVlan(), PopVlan(), Output(1)))) == f
    assert only_emit(execute_actions(f, 0, (PopVlan(), Output(1)))) == f  # untagged: no-op


def test_set_eth_masked() -> None:
    f = v4_frame()
    a = SetField("eth", (("eth_src", 0xAA0000000000, 0xFF0000000000),
                         ("eth_dst", 0x0A0B0C0D0E0F, 0xFFFFFFFFFFFF)))
    k = fields(only_emit(execute_actions(f, 0, (a, Output(1)))))
    assert k["eth_src"] == 0xAA0000000001 and k["eth_dst"] == 0x0A0B0C0D0E0F


@pytest.mark.parametrize("proto", [6, 17])
def test_set_ipv4_fixes_ip_and_l4_checksums(proto: int) -> None:
    f = v4_frame(proto)
    assert ipv4_ok(f) and l4_csum_ok(f, 14, False)
    a = SetField("ipv4", (("ipv4_src", 0x01020304, 0xFFFFFFFF), ("ipv4_dst", 0x0, 0xFF000000),
                          ("ip_tos", 0xB8, 0xFC), ("ip_ttl", 9, 0xFF)))
    out = only_emit(execute_actions(f, 0, (a, Output(1))))
    k = fields(out)
    assert k["ipv4_src"] == 0x01020304 and k["ipv4_dst"] == B4 & 0x00FFFFFF
    assert k["ip_tos"] == 0xB8 and k["ip_ttl"] == 9
    assert ipv4_ok(out) and l4_csum_ok(out, 14, False)


def test_udp_zero_checksum_stays_zero_over_ipv4() -> None:
    f = v4_frame(17, udp_csum=False)
    a = SetField("ipv4", (("ipv4_src", 0x01020304, 0xFFFFFFFF),))
    b = SetField("udp", (("tp_dst", 1, 0xFFFF),))
    out = only_emit(execute_actions(f, 0, (a, b, Output(1))))
    assert out[14 + 20 + 6:14 + 20 + 8] == b"\0\0" and ipv4_ok(out)


@pytest.mark.parametrize("proto", [6, 17, 58])
def test_set_ipv6_fixes_pseudo_header_checksums(proto: int) -> None:
    f = v6_frame(proto)
    assert l4_csum_ok(f, 14, True)
    a = SetField("ipv6", (("ipv6_src", 0x99 << 100, (1 << 128) - 1),
                          ("ipv6_dst", 0x1234, 0xFFFF), ("ipv6_label", 0x12345, 0xFFFFF),
                          ("ip_tos", 0x20, 0xFF), ("ip_ttl", 3, 0xFF)))
    out = only_emit(execute_actions(f, 0, (a, Output(1))))
    k = fields(out)
    assert k["ipv6_src"] == 0x99 << 100 and k["ipv6_dst"] == (B6 & ~0xFFFF) | 0x1234
    assert (k["ipv6_label"], k["ip_tos"], k["ip_ttl"]) == (0x12345, 0x20, 3)
    assert l4_csum_ok(out, 14, True)


@pytest.mark.parametrize("proto,group", [(6, "tcp"), (17, "udp")])
def test_set_ports_fix_checksum(proto: int, group: str) -> None:
    f = v4_frame(proto)
    a = SetField(group, (("tp_src", 4242, 0xFFFF), ("tp_dst", 0x0100, 0xFF00)))
    out = only_emit(execute_actions(f, 0, (a, Output(1))))
    k = fields(out)
    assert k["tp_src"] == 4242 and k["tp_dst"] == (k["tp_dst"] & 0xFF) | 0x0100
    assert l4_csum_ok(out, 14, False)


def test_set_sctp_ports_fix_crc32c() -> None:
    f = v4_frame(132)
    out = only_emit(execute_actions(f, 0, (SetField("sctp", (("tp_dst", 5000, 0xFFFF),)),
                                           Output(1))))
    assert fields(out)["tp_dst"] == 5000
    l4 = out[34:]
    assert l4[8:12] == _crc_scratch(l4)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([("v4", 6), ("v4", 17), ("v6", 6), ("v6", 17), ("v6", 58)]),
       st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 128) - 1),
       st.integers(0, 0xFFFF), st.integers(1, 0xFFFF))
def test_random_sets_keep_checksums_valid(kind: tuple[str, int], v: int, m: int,
                                          port: int, pmask: int) -> None:
    fam, proto = kind
    f = v4_frame(proto) if fam == "v4" else v6_frame(proto)
    acts: list[SetField] = []
    if fam == "v4":
        acts.append(SetField("ipv4", (("ipv4_dst", v & m & 0xFFFFFFFF, m & 0xFFFFFFFF or 1),
                                      ("ip_ttl", v & 0xFF, 0xFF))))
    else:
        acts.append(SetField("ipv6", (("ipv6_src", v & (m | 1), m | 1),)))
    if proto in (6, 17):
        acts.append(SetField("tcp" if proto == 6 else "udp",
                             (("tp_src", port & pmask, pmask),)))
    out = only_emit(execute_actions(f, 0, (*acts, Output(1))))
    assert l4_csum_ok(out, 14, fam == "v6")
    if fam == "v4":
        assert ipv4_ok(out)


def test_dec_ttl() -> None:
    f = v4_frame(ttl=64)
    out = only_emit(execute_actions(f, 0, (DecTtl(), Output(1))))
    assert fields(out)["ip_ttl"] == 63 and ipv4_ok(out)
    one = v4_frame(ttl=1)
    eff = execute_actions(one, parse_key(one), (DecTtl(), Output(1)))
    assert len(eff) == 1 and isinstance(eff[0], Upcall) and eff[0].reason == "dec_ttl"
    v6 = v6_frame()
    out = only_emit(execute_actions(v6, 0, (DecTtl(), Output(1))))
    assert fields(out)["ip_ttl"] == 63 and l4_csum_ok(out, 14, True)


def test_recirc_and_hash_set_metadata() -> None:
    f = v4_frame()
    md = pack({"in_port": 3, "skb_mark": 4})
    eff = execute_actions(f, parse_key(f, md), (Hash(5), Recirc(7)))
    assert len(eff) == 1 and isinstance(eff[0], Recirculate)
    m = unpack(eff[0].md)
    assert m["recirc_id"] == 7 and m["in_port"] == 3 and m["skb_mark"] == 4
    assert m["dp_hash"] != 0
    assert set(m) == {"recirc_id", "in_port", "skb_mark", "dp_hash"}  # metadata only
    again = execute_actions(f, parse_key(f, md), (Hash(5), Recirc(7)))
    assert again == eff  # deterministic
    other = execute_actions(f, parse_key(f, md), (Hash(6), Recirc(7)))
    assert isinstance(other[0], Recirculate) and other[0].md != eff[0].md
    # a set before hash is seen by the hash
    s = SetField("tcp", (("tp_src", 1, 0xFFFF),))
    moved = execute_actions(f, parse_key(f, md), (s, Hash(5), Recirc(7)))
    assert isinstance(moved[0], Recirculate)
    assert BY_NAME["dp_hash"].get(moved[0].md) != m["dp_hash"]


def test_sample_with_injected_rng() -> None:
    f = v4_frame()
    half = UINT32_MAX // 2
    inner = (SetField("ipv4", (("ip_ttl", 1, 0xFF),)), Output(9))
    taken = execute_actions(f, 0, (Sample(half, inner), Output(1)), rng=lambda: 0.1)
    assert [e.port for e in taken if isinstance(e, Emit)] == [9, 1]
    assert isinstance(taken[1], Emit) and taken[1].packet == f  # nested set did not leak
    skipped = execute_actions(f, 0, (Sample(half, inner), Output(1)), rng=lambda: 0.9)
    assert [e.port for e in skipped if isinstance(e, Emit)] == [1]
    assert len(execute_actions(f, 0, (Sample(0, inner),), rng=lambda: 0.0)) == 0
    assert len(execute_actions(f, 0, (Sample(UINT32_MAX, inner),), rng=lambda: 0.999)) == 1


def test_userspace_and_ct_clear() -> None:
    f = v4_frame()
    key = parse_key(f, pack({"ct_state": 0x21, "in_port": 1}))
    eff = execute_actions(f, key, (CtClear(), Userspace(pid=3, userdata=b"\x01\x02")))
    assert len(eff) == 1 and isinstance(eff[0], Upcall)
    assert (eff[0].reason, eff[0].pid, eff[0].userdata) == ("userspace", 3, b"\x01\x02")
    assert BY_NAME["ct_state"].get(eff[0].key) == 0


def test_unsupported_actions_are_refused_by_name() -> None:
    f = v4_frame()
    with pytest.raises(UnsupportedAction, match="ct"):
        execute_actions(f, 0, (Ct(commit=True),))
    with pytest.raises(UnsupportedAction, match="tunnel"):
        check_actions((SetField("tunnel", (("tun_id", 5, (1 << 64) - 1),)),))
    with pytest.raises(UnsupportedAction, match="ip_proto"):
        check_actions((SetField("ipv4", (("ip_proto", 5, 0xFF),)),))
    with pytest.raises(UnsupportedAction, match="ct"):
        check_actions((Sample(UINT32_MAX, (Ct(),)),))


def test_set_on_wrong_packet_kind_is_a_noop() -> None:
    h, _ = eth(2, 1, 0x0806)
    arp_frame = h + bytes(28)
    a = SetField("ipv4", (("ipv4_src", 1, 0xFFFFFFFF),))
    assert only_emit(execute_actions(arp_frame, 0, (a, SetField("tcp", (("tp_src", 1, 0xFFFF),)),
                                                    DecTtl(), Output(1)))) == arp_frame
    short = v4_frame()[:20]
    assert only_emit(execute_actions(short, 0, (a, Output(1)))) == short
    assert parse_layers(short).problem is not None
    assert struct.calcsize("!H") == 2
