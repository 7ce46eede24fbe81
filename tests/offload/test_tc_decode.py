"""Unit tier: the hand decoder (tc_decode) against pyroute2's, value for value.

pyroute2's generic parser + ``tc_values.decode_filter`` is the reference:
for every key group and action of tc_cases and for hypothesis-generated
filters -- encoded by tc_wire, with what a dump adds (action statistics,
hardware counters, timestamps, in_hw flags, in_hw_count) and unknown
attributes sprinkled in -- ``tc_decode.decode_message`` must give exactly
the ``FilterDump`` the reference gives.  Malformed input must raise an
OffloadError naming the attribute and its offset.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dpif.errors import OffloadError
from dpif.match import Match
from offload import tc_decode as D
from offload import tc_dumpfast as F
from offload import tc_dumpshape as S
from offload import tc_nla as N
from offload import tc_terse as T
from offload import tc_values as V
from offload import tc_wire as W
from offload.tc_values import FlowerFilter, decode_filter
from tests.dpif.strategies import matches
from tests.offload.tc_cases import ACTION_CASES, KEY_CASES, random_filter
from tests.offload.test_tc_flower import PORTS

RTM_NEWTFILTER = 44
T_ACT_KIND, T_ACT_OPTIONS, T_ACT_INDEX, T_ACT_STATS, T_ACT_COOKIE = 1, 2, 3, 4, 6
T_STATS_BASIC, T_STATS_QUEUE, T_STATS_BASIC_HW, T_STATS_PKT64 = 1, 3, 7, 8
T_FLOWER_IN_HW_COUNT = N.FLOWER_ATTRS.index(("TCA_FLOWER_IN_HW_COUNT", "uint32"))
T_FLOWER_FLAGS = N.FLOWER_ATTRS.index(("TCA_FLOWER_FLAGS", "uint32"))
T_FLOWER_ACT = N.FLOWER_ATTRS.index(("TCA_FLOWER_ACT", "tca_act_prio"))
UNKNOWN_ATTR = W.attr(0x3FF0, b"\x01\x02\x03")


def reference(msg: bytes) -> V.FilterDump | None:
    m = N.tcmsg_flower(msg)
    m.decode()
    return decode_filter(m)


def _tm_num(kind: str) -> int:
    table = N.ACTION_OPTIONS[kind].nla_map
    return [e[0] for e in table].index(N.ACTION_PREFIX[kind] + "_TM")


def dump_message(f: FlowerFilter, stats: list[tuple[int, int, int, int, int]] | None = None,
                 in_hw_count: int | None = None, extra_flags: int = 0,
                 unknown: bool = False) -> bytes:
    """A message as a dump would carry ``f``: its encoding plus per-action
    stats (packets, bytes, hw packets, hw bytes, lastuse ticks) and tcf_t."""
    opts = [W.attr(W._KEYS[k][0], W._KEYS[k][1](v)) for k, v in f.keys]
    if unknown:
        opts.append(UNKNOWN_ATTR)
    if f.flags | extra_flags:
        opts.append(W.attr(T_FLOWER_FLAGS, struct.pack("=I", f.flags | extra_flags)))
    if in_hw_count is not None:
        opts.append(W.attr(T_FLOWER_IN_HW_COUNT, struct.pack("=I", in_hw_count)))
    acts = []
    for i, act in enumerate(f.actions, start=1):
        nest = W.ACTION_NESTS[act.kind]
        aopts = nest.encode(act.options())
        st_ = (stats or [])[i - 1] if stats and i - 1 < len(stats) else None
        if st_ is not None:
            aopts += W.attr(_tm_num(act.kind), struct.pack("=QQQQ", 5, st_[4], 0, 3))
        if unknown:
            aopts += UNKNOWN_ATTR
        body = W.attr(T_ACT_KIND, act.kind.encode() + b"\0") + W.attr(T_ACT_OPTIONS, aopts)
        body += W.attr(T_ACT_INDEX, struct.pack("=I", i))
        if i == 1 and f.cookie:
            body += W.attr(T_ACT_COOKIE, f.cookie)
        if st_ is not None:
            sb = (W.attr(T_STATS_BASIC, struct.pack("=QIxxxx", st_[1], st_[0] & 0xFFFFFFFF))
                  + W.attr(T_STATS_BASIC_HW, struct.pack("=QIxxxx", st_[3], st_[2]))
                  + W.attr(T_STATS_QUEUE, b"\0" * 20)
                  + W.attr(T_STATS_PKT64, struct.pack("=Q", st_[0])))
            if unknown:
                sb += UNKNOWN_ATTR
            body += W.attr(T_ACT_STATS, sb)
        acts.append(W.attr(W._PRIO_NUM[i], body))
    if acts:
        opts.append(W.attr(T_FLOWER_ACT, b"".join(acts)))
    body = (W._KIND_FLOWER + W.attr(W._T_CHAIN, struct.pack("=I", f.chain))
            + W.attr(W._T_OPTIONS, b"".join(opts)))
    if unknown:
        body += UNKNOWN_ATTR
    return W.header(RTM_NEWTFILTER, 2, 7, 99, f.ifindex, f.handle, f.parent, f.prio,
                    f.protocol, len(body)) + body


def same(msg: bytes) -> V.FilterDump | None:
    ours, ref = D.decode_message(msg), reference(msg)
    assert ours == ref, (ours, ref)
    fast = F.decode_message(msg)  # the dump's fast path: the same value, or the same error
    assert fast == ref, (fast, ref)
    for _ in range(2):  # by shape: the first call learns it, the second reads by it
        shaped = S.decode_message(msg)
        assert shaped == ref, (shaped, ref)
        if shaped is not None:
            assert vars(shaped.filter) == vars(ref.filter)  # type: ignore[union-attr]
    if fast is not None:  # and the same fields, not merely equal ones (frozen, no __init__)
        assert vars(fast.filter) == vars(ref.filter) and vars(fast) == vars(ref)  # type: ignore[union-attr]
    return ours


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_key_cases(case: str) -> None:
    protocol, keys = KEY_CASES[case]
    f = FlowerFilter(ifindex=3, prio=10, handle=0x11, chain=4, protocol=protocol, keys=keys,
                     flags=N.TCA_CLS_FLAGS_SKIP_HW, actions=(V.Gact.drop(),),
                     cookie=b"\xab" * 16)
    got = same(dump_message(f, [(1, 60, 0, 0, 12)], in_hw_count=0,
                            extra_flags=N.TCA_CLS_FLAGS_NOT_IN_HW))
    assert got is not None and got.filter == f and got.not_in_hw
    assert same(W.encode_filter_bytes(f, RTM_NEWTFILTER, 2, 1)) is not None


@pytest.mark.parametrize("case", sorted(ACTION_CASES))
def test_action_cases(case: str) -> None:
    f = FlowerFilter(ifindex=3, prio=1, handle=1, actions=ACTION_CASES[case](7), cookie=b"u")
    n = len(f.actions)
    got = same(dump_message(f, [(10 + i, 1000 + i, 1, 60, 250 * i) for i in range(n)],
                            in_hw_count=1, extra_flags=N.TCA_CLS_FLAGS_IN_HW, unknown=True))
    assert got is not None and got.filter == f and got.in_hw and got.in_hw_count == 1
    assert got.stats.packets == 10 and got.stats.hw_bytes == 60
    assert got.unsupported == ("UNKNOWN",)


def test_unknown_action_kind_and_other_classifier() -> None:
    f = FlowerFilter(ifindex=3, prio=1, handle=1, actions=(V.Gact.drop(),))
    msg = bytearray(dump_message(f, [(1, 2, 0, 0, 3)]))
    i = msg.index(b"gact\0")
    msg[i:i + 4] = b"bpf_"  # an action kind we do not model: UnknownAction, stats kept
    got = same(bytes(msg))
    assert got is not None and got.filter.actions == (V.UnknownAction("bpf_"),)
    i = msg.index(b"flower\0")
    msg[i:i + 6] = b"u32\0\0\0"
    assert same(bytes(msg)) is None  # not flower: skipped, like the reference
    header_msg = W.header(RTM_NEWTFILTER, 2, 1, 0, 3, 0, N.TC_H_INGRESS_PARENT, 5, 0x800, 12)
    header_msg += W._KIND_FLOWER + W.attr(W._T_CHAIN, b"\0\0\0\0")
    assert same(header_msg) is None  # the per-priority header message (handle 0)


@given(matches(), st.sampled_from(sorted(PORTS)), st.sampled_from(sorted(ACTION_CASES)),
       st.integers(0, 2**32 - 1), st.integers(1, 0xFFFF), st.integers(1, 2**32 - 1),
       st.binary(max_size=16), st.sampled_from([0, 1, 2, 16, 17]),
       st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 2**63), st.integers(0, 2**32 - 1),
                          st.integers(0, 2**63), st.integers(0, 2**40)), max_size=4),
       st.one_of(st.none(), st.integers(0, 2**32 - 1)), st.sampled_from([0, 4, 8]),
       st.booleans())
@settings(max_examples=200, deadline=None)
def test_random_filters(m: Match, port: int, acts: str, chain: int, prio: int, handle: int,
                        cookie: bytes, flags: int, stats: list[Any], in_hw_count: int | None,
                        hw_flags: int, unknown: bool) -> None:
    f = random_filter(m, port, acts, chain=chain, prio=prio, handle=handle, flags=flags,
                      cookie=cookie)
    assume(f is not None)
    got = same(dump_message(f, stats, in_hw_count, hw_flags, unknown))
    assert got is not None and got.filter == f
    assert same(W.encode_filter_bytes(f, RTM_NEWTFILTER, 2, 1)) is not None


# --- malformed input ----------------------------------------------------------------


def _simple() -> bytes:
    f = FlowerFilter(ifindex=3, prio=1, handle=1, actions=(V.Gact.drop(),), cookie=b"c",
                     protocol=0x800, keys={"TCA_FLOWER_KEY_ETH_TYPE": 0x800})
    return dump_message(f, [(1, 2, 3, 4, 5)])


def test_truncated_attribute_names_it_and_its_offset() -> None:
    msg = bytearray(_simple())
    chain_at = 36 + 12  # nlmsghdr + tcmsg, then TCA_KIND "flower\0" (12 bytes padded)
    assert struct.unpack_from("=HH", msg, chain_at) == (8, W._T_CHAIN)
    struct.pack_into("=H", msg, chain_at, 6)  # TCA_CHAIN with a 2-byte payload
    with pytest.raises(OffloadError) as e:
        D.decode_message(bytes(msg))
    assert e.value.context["attr"] == "TCA_CHAIN" and e.value.context["offset"] == chain_at
    assert "needs 4" in str(e.value)


def test_length_past_the_container() -> None:
    msg = bytearray(_simple())
    struct.pack_into("=H", msg, 36 + 12, 0xFFF0)
    with pytest.raises(OffloadError) as e:
        D.decode_message(bytes(msg))
    assert e.value.context["attr"] == "TCA_CHAIN" and e.value.context["offset"] == 48
    assert "runs past" in str(e.value)


def test_cut_messages() -> None:
    msg = _simple()
    for cut in (10, 36 + 2, 50, len(msg) - 3):
        with pytest.raises(OffloadError) as e:
            D.decode_message(msg[:cut])
        assert "malformed" in str(e.value) and "offset" in e.value.context
    with pytest.raises(OffloadError):
        list(D.messages(msg[:len(msg) - 1]))


def test_short_stats_struct() -> None:
    msg = bytearray(_simple())
    i = msg.index(struct.pack("=HH", 20, T_STATS_BASIC))
    struct.pack_into("=H", msg, i, 8)  # a 4-byte gnet_stats_basic
    with pytest.raises(OffloadError) as e:
        D.decode_message(bytes(msg))
    assert e.value.context["attr"] == "TCA_STATS_BASIC" and e.value.context["offset"] == i


# --- acks, dump requests, the canonical fast paths ---------------------------------------


def test_ack_with_extack() -> None:
    req = W.header(RTM_NEWTFILTER, 5, 42, 7, 3, 1, N.TC_H_INGRESS_PARENT, 1, 0x800, 0)
    tlv = W.attr(D.NLMSGERR_ATTR_MSG, b"Filter already exists\0") + W.attr(4, b"\0" * 4)
    body = struct.pack("=i", -17) + req[:16] + tlv
    flags = D.NLM_F_CAPPED | D.NLM_F_ACK_TLVS
    err = struct.pack("=IHHII", 16 + len(body), D.NLMSG_ERROR, flags, 42, 7) + body
    ok = struct.pack("=IHHII", 36, D.NLMSG_ERROR, D.NLM_F_CAPPED, 43, 7) + b"\0" * 4 + req[:16]
    got = [(t, s, D.ack(err + ok, a, b, f)) for t, f, s, a, b in D.messages(err + ok)]
    assert got == [(D.NLMSG_ERROR, 42, (17, "Filter already exists")),
                   (D.NLMSG_ERROR, 43, (0, None))]
    uncapped = struct.pack("=i", -22) + req + tlv
    err = struct.pack("=IHHII", 16 + len(uncapped), D.NLMSG_ERROR, D.NLM_F_ACK_TLVS, 1, 7)
    assert D.ack(err + uncapped, 0, len(err) + len(uncapped), D.NLM_F_ACK_TLVS) == (
        22, "Filter already exists")


def test_dump_request_bytes_match_pyroute2() -> None:
    for chain in (None, 0, 7):
        msg = N.tcmsg_flower()
        msg["index"] = 5
        msg["parent"] = N.TC_H_INGRESS_PARENT
        msg["attrs"] = [] if chain is None else [["TCA_CHAIN", chain]]
        msg["header"]["type"] = 46
        msg["header"]["flags"] = 0x301
        msg["header"]["sequence_number"] = 9
        msg["header"]["pid"] = 3
        msg.encode()
        # what TcNetlink.dump sends (a full dump: no TCA_DUMP_FLAGS)
        assert T.dump_request(5, chain, 0, 9, 3, terse=False) == bytes(msg.data)


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**32 - 1), st.binary(min_size=6, max_size=6))
@settings(max_examples=300, deadline=None)
def test_fast_canonical_checks_agree_with_ipaddress(v6: int, v4: int, mac: bytes) -> None:
    for name, text in (("TCA_FLOWER_KEY_IPV6_SRC", socket.inet_ntop(
            socket.AF_INET6, v6.to_bytes(16, "big"))),
            ("TCA_FLOWER_KEY_IPV6_SRC", str(ipaddress.IPv6Address(v6))),
            ("TCA_FLOWER_KEY_IPV4_DST", str(ipaddress.IPv4Address(v4))),
            ("TCA_FLOWER_KEY_ETH_DST", mac.hex(":")),
            ("TCA_FLOWER_KEY_ETH_DST", mac.hex(":").upper())):
        assert V._normalise(name, text) == V._normalise_slow(name, text)


def test_fast_canonical_checks_refuse_what_the_slow_path_refuses() -> None:
    for name, bad in (("TCA_FLOWER_KEY_IPV4_DST", "10.0.0.01"),
                      ("TCA_FLOWER_KEY_IPV4_DST", "10.0.0"),
                      ("TCA_FLOWER_KEY_ETH_DST", "02:00:00:00:00"),
                      ("TCA_FLOWER_KEY_ETH_DST", "0x:00:00:00:00:00"),
                      ("TCA_FLOWER_KEY_UDP_DST", 1 << 16), ("TCA_FLOWER_KEY_UDP_DST", -1),
                      ("TCA_FLOWER_KEY_UDP_DST", "80")):
        with pytest.raises(Exception) as fast:
            V._normalise(name, bad)
        with pytest.raises(Exception) as slow:
            V._normalise_slow(name, bad)
        assert type(fast.value) is type(slow.value)
    assert V._normalise("TCA_FLOWER_KEY_ETH_DST", "2:0:0:0:0:1") == "02:00:00:00:00:01"
    assert V._normalise("TCA_FLOWER_KEY_IPV6_SRC", "::ffff:1.2.3.4") == "::ffff:102:304"
    assert V._normalise("TCA_FLOWER_KEY_UDP_DST", True) is True  # bool is an int, as before


# --- the dump's fast path (tc_dumpfast) ---------------------------------------------------


def _no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> None:
        raise AssertionError("tc_dumpfast fell back to the generic decoder")
    monkeypatch.setattr(F.D, "decode_message", boom)


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_fast_path_takes_the_kernel_shape_without_fallback(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    protocol, keys = KEY_CASES[case]
    f = FlowerFilter(ifindex=3, prio=10, handle=0x11, chain=4, protocol=protocol, keys=keys,
                     actions=(V.Mirred(5), V.Gact.drop()), cookie=b"\xab" * 16)
    msg = dump_message(f, [(1, 60, 0, 0, 12), (2, 3, 4, 5, 6)], in_hw_count=1,
                       extra_flags=N.TCA_CLS_FLAGS_IN_HW)
    want = reference(msg)
    _no_fallback(monkeypatch)
    assert F.decode_message(msg) == want


@pytest.mark.parametrize("case", sorted(ACTION_CASES))
def test_fast_path_other_action_kinds_without_fallback(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    f = FlowerFilter(ifindex=3, prio=1, handle=1, actions=ACTION_CASES[case](7), cookie=b"u")
    msg = dump_message(f, [(10 + i, 1000 + i, 1, 60, 250 * i) for i in range(len(f.actions))])
    want = reference(msg)
    _no_fallback(monkeypatch)
    assert F.decode_message(msg) == want


def test_fast_path_irregular_keys_go_through_canonical_keys() -> None:
    """A key without its mask, a zero mask, keys out of order: what a kernel
    does not dump, but the fast path still gives the validated value."""
    f = FlowerFilter(ifindex=3, prio=1, handle=1, protocol=0x800, actions=(V.Gact.drop(),),
                     keys={"TCA_FLOWER_KEY_ETH_TYPE": 0x800, "TCA_FLOWER_KEY_IP_PROTO": 17,
                           "TCA_FLOWER_KEY_UDP_DST": 80})
    num = {n: i for i, (n, _) in enumerate(N.FLOWER_ATTRS)}
    body = (W.attr(num["TCA_FLOWER_KEY_UDP_DST"], struct.pack(">H", 80))  # no mask
            + W.attr(num["TCA_FLOWER_KEY_ETH_TYPE"], struct.pack(">H", 0x800))
            + W.attr(num["TCA_FLOWER_KEY_IP_PROTO"], b"\x11")
            + W.attr(num["TCA_FLOWER_KEY_IPV4_SRC"], b"\x0a\0\0\x01")
            + W.attr(num["TCA_FLOWER_KEY_IPV4_SRC_MASK"], b"\0\0\0\0"))  # zero mask
    bare = FlowerFilter(ifindex=3, prio=1, handle=1, protocol=0x800, actions=(V.Gact.drop(),))
    msg = bytearray(dump_message(bare, [(1, 2, 3, 4, 5)]))
    o = 36 + 12 + 8  # nlmsghdr + tcmsg, TCA_KIND "flower", TCA_CHAIN: TCA_OPTIONS
    assert struct.unpack_from("=H", msg, o + 2)[0] == W._T_OPTIONS
    new_b = msg[:o + 4] + body + msg[o + 4:]
    struct.pack_into("=I", new_b, 0, len(new_b))
    struct.pack_into("=H", new_b, o, struct.unpack_from("=H", new_b, o)[0] + len(body))
    got = same(bytes(new_b))
    assert got is not None and got.filter.keys == f.keys


def test_shapes_are_reused_across_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters of one mask: one shape, learnt once, then every message read by
    it -- other addresses, ports, handles, counters, cookies, flags; a zero
    mask or a VLAN ethertype in a message of that shape goes down the
    checked path."""
    S._SHAPES.clear()
    S._TRIES.clear()
    K = "TCA_FLOWER_KEY_"

    def msg(i: int, mask: str = "255.255.255.0", eth_type: int = 0x800) -> bytes:
        f = FlowerFilter(ifindex=3, prio=2, handle=i + 1, protocol=0x800, chain=i % 3,
                         keys={K + "ETH_TYPE": 0x800, K + "IP_PROTO": 17,
                               K + "IPV4_DST": f"10.{i % 250}.{i // 250}.0",
                               K + "IPV4_DST_MASK": mask, K + "UDP_DST": 1000 + i},
                         flags=N.TCA_CLS_FLAGS_SKIP_HW, actions=(V.Mirred(4 + i % 2),),
                         cookie=i.to_bytes(16, "big"))
        raw = bytearray(dump_message(f, [(i, 60 * i, i // 2, 30 * i, 250 + i)],
                                     in_hw_count=i % 2,
                                     extra_flags=N.TCA_CLS_FLAGS_IN_HW if i % 2 else 0))
        if eth_type != 0x800:
            at = raw.index(struct.pack("=HH", 6, N.FLOWER_ORDER[K + "ETH_TYPE"]))
            struct.pack_into(">H", raw, at + 4, eth_type)
        return bytes(raw)

    assert same(msg(0)) is not None
    assert sum(len(v) for v in S._SHAPES.values()) == 1
    real = F._decode
    monkeypatch.setattr(F, "_decode", lambda *a: pytest.fail("not read by its shape"))
    for i in range(1, 60):
        m = msg(i)
        assert S.decode_message(m) == reference(m)
    monkeypatch.setattr(F, "_decode", real)
    for odd in (msg(7, mask="0.0.0.0"), msg(8, eth_type=0x8100)):
        want = None
        try:
            want = reference(odd)
        except Exception as exc:  # noqa: BLE001 -- then ours raises the same
            with pytest.raises(type(exc)):
                S.decode_message(odd)
        else:
            assert S.decode_message(odd) == want
