"""Unit tier: the terse dump decoder (tc_terse) against pyroute2's generic
parser, value for value.

Messages are built the way the kernel builds a terse dump (6.1's
``fl_terse_dump`` / ``tcf_action_dump_terse``: TCA_KIND, TCA_CHAIN,
TCA_OPTIONS with TCA_FLOWER_FLAGS and per action its kind, stats and
cookie; PKT64 after a BASIC whose packets do not fit 32 bits), with
hypothesis choosing the values, the actions, their order and unknown
attributes.  pyroute2's parse of ``tc_nla.tcmsg_flower``, read with the
conventions of ``FilterDump`` (first action's counters, first cookie), is the
reference.  Each message is decoded twice (the walk that learns its shape,
then by shape) and a second message of the same layout with other values by
shape.  Malformed input raises an OffloadError naming the attribute and its
offset.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif.errors import OffloadError
from offload import tc_nla as N
from offload import tc_terse as T
from offload import tc_wire as W

RTM_NEWTFILTER = 44
T_KIND, T_CHAIN, T_OPTIONS = 1, 11, 2
T_FLOWER_FLAGS = N.FLOWER_ATTRS.index(("TCA_FLOWER_FLAGS", "uint32"))
T_FLOWER_ACT = N.FLOWER_ATTRS.index(("TCA_FLOWER_ACT", "tca_act_prio"))
T_ACT_KIND, T_ACT_STATS, T_ACT_COOKIE = 1, 4, 6
T_STATS_BASIC, T_STATS_RATE_EST, T_STATS_QUEUE, T_STATS_BASIC_HW, T_STATS_PKT64 = 1, 2, 3, 7, 8
UNKNOWN_ATTR = W.attr(0x3FF0, b"\x01\x02\x03")
U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class Act:
    """One action of a terse message: kind, counters (packets, bytes, hw
    packets, hw bytes) or None for no TCA_ACT_STATS, cookie, rate estimator."""

    kind: str = "gact"
    stats: tuple[int, int, int, int] | None = (0, 0, 0, 0)
    cookie: bytes = b""
    rate_est: bool = False


def _basic(num: int, nbytes: int, packets: int) -> bytes:
    out = W.attr(num, struct.pack("=QIxxxx", nbytes, packets & U32_MAX))
    if packets > U32_MAX:  # the kernel adds the 64-bit count right after
        out += W.attr(T_STATS_PKT64, struct.pack("=Q", packets))
    return out


def terse_message(ifindex: int = 3, chain: int = 0, prio: int = 0x800, protocol: int = 0x800,
                  handle: int = 1, flags: int = N.TCA_CLS_FLAGS_SKIP_HW
                  | N.TCA_CLS_FLAGS_NOT_IN_HW, actions: tuple[Act, ...] = (Act(),),
                  order: tuple[int, ...] | None = None, unknown: bool = False,
                  kind: str = "flower") -> bytes:
    """A terse dump message as the kernel builds it (see the module docstring);
    ``order`` permutes the actions' places in TCA_FLOWER_ACT."""
    acts = []
    for pos, a in enumerate(actions, start=1):
        body = W.attr(T_ACT_KIND, a.kind.encode() + b"\0")
        if a.stats is not None:
            packets, nbytes, hw_packets, hw_bytes = a.stats
            sb = _basic(T_STATS_BASIC, nbytes, packets) + _basic(T_STATS_BASIC_HW, hw_bytes,
                                                                 hw_packets)
            if a.rate_est:
                sb += W.attr(T_STATS_RATE_EST, struct.pack("=II", 1000, 10))
            sb += W.attr(T_STATS_QUEUE, b"\0" * 20)
            if unknown:
                sb += UNKNOWN_ATTR
            body += W.attr(T_ACT_STATS, sb)
        if a.cookie:
            body += W.attr(T_ACT_COOKIE, a.cookie)
        if unknown:
            body += UNKNOWN_ATTR
        acts.append(W.attr(W._PRIO_NUM[pos], body))
    if order is not None:
        acts = [acts[i] for i in order]
    opts = W.attr(T_FLOWER_FLAGS, struct.pack("=I", flags)) if flags else b""
    if unknown:
        opts += UNKNOWN_ATTR
    if acts:
        opts += W.attr(T_FLOWER_ACT, b"".join(acts))
    body = W.attr(T_KIND, kind.encode() + b"\0") + W.attr(T_CHAIN, struct.pack("=I", chain))
    if handle:
        body += W.attr(T_OPTIONS, opts)
    if unknown:
        body += UNKNOWN_ATTR
    return W.header(RTM_NEWTFILTER, 2, 7, 99, ifindex, handle, N.TC_H_INGRESS_PARENT, prio,
                    protocol, len(body)) + body


def reference(msg: bytes) -> T.TerseFilter | None:
    """pyroute2's parse of ``msg``, read as ``FilterDump`` reads a full dump."""
    m = N.tcmsg_flower(msg)
    m.decode()
    if m.get_attr("TCA_KIND") != "flower" or not m["handle"]:
        return None
    opts = m.get_attr("TCA_OPTIONS")
    flags = (opts.get_attr("TCA_FLOWER_FLAGS") if opts else None) or 0
    acts = opts.get_attr("TCA_FLOWER_ACT") if opts else None
    ordered = sorted(((int(name.rsplit("_", 1)[1]), a) for name, a in acts["attrs"]),
                     key=lambda x: x[0]) if acts else []
    cookie = next((a.get_attr("TCA_ACT_COOKIE") for _, a in ordered
                   if a.get_attr("TCA_ACT_COOKIE")), b"")
    stats = ordered[0][1].get_attr("TCA_ACT_STATS") if ordered else None
    basic = stats.get_attr("TCA_STATS_BASIC") if stats else None
    hw = stats.get_attr("TCA_STATS_BASIC_HW") if stats else None
    pkt64 = stats.get_attr("TCA_STATS_PKT64") if stats else None
    info = m["info"]
    return T.TerseFilter(
        ifindex=m["index"], chain=m.get_attr("TCA_CHAIN") or 0, prio=info >> 16,
        protocol=socket.ntohs(info & 0xFFFF), handle=m["handle"], flags=flags,
        cookie=bytes(cookie), packets=pkt64 if pkt64 is not None else (
            basic["packets"] if basic else 0), bytes=basic["bytes"] if basic else 0,
        hw_packets=hw["packets"] if hw else 0, hw_bytes=hw["bytes"] if hw else 0)


def same(msg: bytes) -> T.TerseFilter | None:
    ref = reference(msg)
    for _ in range(2):  # the walk (learning the shape), then by shape
        got = T.decode_message(msg)
        assert got == ref, (got, ref)
    return ref


# --- against pyroute2 -----------------------------------------------------------------------

counters = st.tuples(st.integers(0, 2**40), st.integers(0, 2**63), st.integers(0, 2**40),
                     st.integers(0, 2**63))
actions = st.lists(st.builds(Act, st.sampled_from(["gact", "mirred", "pedit", "vlan"]),
                             st.one_of(st.none(), counters), st.binary(max_size=16),
                             st.booleans()), max_size=4)


@given(st.integers(1, 2**31 - 1), st.integers(0, U32_MAX), st.integers(1, 0xFFFF),
       st.sampled_from([0x0003, 0x0800, 0x86DD, 0x8100]), st.integers(0, U32_MAX),
       st.integers(0, 31), actions, st.randoms(use_true_random=False), st.booleans(),
       st.lists(counters, min_size=4, max_size=4))
@settings(max_examples=300, deadline=None)
def test_random_terse_messages(ifindex: int, chain: int, prio: int, protocol: int, handle: int,
                               flags: int, acts: list[Act], rnd: Any, unknown: bool,
                               other: list[tuple[int, int, int, int]]) -> None:
    order = list(range(len(acts)))
    rnd.shuffle(order)
    got = same(terse_message(ifindex, chain, prio, protocol, handle, flags, tuple(acts),
                             tuple(order), unknown))
    if handle:
        assert got is not None and got.ident == (ifindex, chain, prio, handle)
        assert got.protocol == protocol and got.flags == flags
    else:
        assert got is None  # a priority's header message
    # the same layout with other values (same byte lengths): read by the shape just learnt
    moved = tuple(Act(a.kind, None if a.stats is None else tuple(  # type: ignore[arg-type]
        v if (v > U32_MAX) == (s > U32_MAX) else s for v, s in zip(o, a.stats)),
        bytes(len(a.cookie)) if a.cookie else b"", a.rate_est) for a, o in zip(acts, other))
    same(terse_message(ifindex ^ 1, chain ^ 5, prio, protocol, handle, flags, moved,
                       tuple(order), unknown))


def test_the_first_action_counts_and_the_first_cookie() -> None:
    msg = terse_message(actions=(Act("pedit", None), Act("csum", (5, 500, 1, 100), b"ck"),
                                 Act("mirred", (7, 700, 0, 0), b"later")), order=(2, 0, 1))
    got = same(msg)
    assert got is not None and (got.packets, got.bytes, got.cookie) == (0, 0, b"ck")
    got = same(terse_message(actions=(Act("gact", (2**33, 9, 2**32 + 1, 8), b"u" * 16),)))
    assert got is not None and (got.packets, got.hw_packets) == (2**33, 1)  # (FilterDump's PKT64)


def test_headers_other_kinds_and_filters_without_actions() -> None:
    assert same(terse_message(handle=0)) is None
    assert same(terse_message(kind="matchall")) is None
    assert same(terse_message(kind="u32", handle=0)) is None
    got = same(terse_message(actions=(), flags=0))
    assert got is not None and got.stats == T.TerseFilter(
        3, 0, 0x800, 0x800, 1, 0, b"", 0, 0, 0, 0).stats and got.cookie == b""
    got = same(terse_message(flags=N.TCA_CLS_FLAGS_IN_HW))
    assert got is not None and got.in_hw and not got.not_in_hw


def test_a_shape_is_learnt_once_and_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    first = terse_message(handle=5, actions=(Act("mirred", (1, 2, 3, 4), b"\x01" * 16),))
    assert same(first) is not None
    monkeypatch.setattr(T, "_walk", lambda *a: pytest.fail("walked a known shape"))
    for i in range(1, 50):
        msg = terse_message(ifindex=i, handle=i, chain=i, prio=i,
                            actions=(Act("mirred", (i, 60 * i, i // 2, 30 * i),
                                         i.to_bytes(16, "big")),))
        assert T.decode_message(msg) == reference(msg)


def test_messages_inside_a_datagram() -> None:
    msgs = [terse_message(handle=h, actions=(Act(stats=(h, h, 0, 0)),)) for h in (0, 1, 2)]
    data = b"".join(msgs)
    off = 0
    for msg in msgs:
        assert T.decode_message(data, off, off + len(msg)) == reference(msg)
        off += len(msg)


# --- malformed input ---------------------------------------------------------------------------


def _find(msg: bytes | bytearray, length: int, num: int) -> int:
    return bytes(msg).index(struct.pack("=HH", length, num))


@pytest.mark.parametrize("length,num,bad,attr,what", [
    (8, T_CHAIN, W.attr(T_CHAIN, b"\0\0"), "TCA_CHAIN", "needs 4"),
    (20, T_STATS_BASIC, W.attr(T_STATS_BASIC, bytes(4)) + W.attr(0x3FF0, bytes(8)),
     "TCA_STATS_BASIC", "needs 12"),
    (20, T_STATS_BASIC_HW, struct.pack("=HH", 0x400, T_STATS_BASIC_HW), "TCA_STATS_BASIC_HW",
     "runs past"),
    (8, T_FLOWER_FLAGS, W.attr(T_FLOWER_FLAGS, b"\1"), "TCA_FLOWER_FLAGS", "needs 4"),
    (20, T_ACT_COOKIE, struct.pack("=HH", 2, T_ACT_COOKIE), "TCA_ACT_COOKIE", "length 2"),
])
def test_malformed_names_the_attribute_and_its_offset(length: int, num: int, bad: bytes,
                                                      attr: str, what: str) -> None:
    good = terse_message(handle=9, chain=3, actions=(Act("gact", (1, 2, 3, 4), b"c" * 16),))
    msg = bytearray(good)
    at = _find(msg, length, num)
    msg[at:at + len(bad)] = bad
    with pytest.raises(OffloadError) as e:
        T.decode_message(bytes(msg))
    assert e.value.context["attr"] == attr and e.value.context["offset"] == at, e.value
    assert what in str(e.value)
    assert T.decode_message(good) == reference(good)  # nothing learnt from the bad one


def test_cut_messages_raise() -> None:
    msg = terse_message(actions=(Act("gact", (1, 2, 3, 4), b"c" * 16),))
    T.decode_message(msg)  # a known shape of the full length: cut ones are other lengths
    for cut in (10, 36 + 2, 50, len(msg) - 3, len(msg) - 16):
        with pytest.raises(OffloadError) as e:
            T.decode_message(msg[:cut])
        assert "malformed" in str(e.value) and "offset" in e.value.context


# --- the request ------------------------------------------------------------------------------


@pytest.mark.parametrize("chain,prio", [(None, 0), (0, 0), (7, 0x800), (None, 0xFFFF)])
def test_dump_request_bytes_match_pyroute2(chain: int | None, prio: int) -> None:
    msg = N.tcmsg_flower()
    msg["index"] = 5
    msg["parent"] = N.TC_H_INGRESS_PARENT
    msg["info"] = prio << 16
    msg["attrs"] = ([] if chain is None else [["TCA_CHAIN", chain]]) + [
        ["TCA_DUMP_FLAGS", {"value": N.TCA_DUMP_FLAGS_TERSE,
                            "selector": N.TCA_DUMP_FLAGS_TERSE}]]
    msg["header"]["type"] = 46  # RTM_GETTFILTER
    msg["header"]["flags"] = 0x301  # NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = 9
    msg["header"]["pid"] = 3
    msg.encode()
    assert T.dump_request(5, chain, prio, 9, 3) == bytes(msg.data)
