"""Unit tier: the fast encoder (tc_wire) against pyroute2's, byte for byte.

pyroute2's generic encoder is the oracle: for every key group and action of
tc_cases, every translation example of test_tc_flower and random
translations, ``encode_filter_bytes`` must produce exactly the bytes of
``encode_filter(f)`` + ``msg.encode()`` with the same header (type, flags,
sequence number, pid), and pyroute2 must decode them back to the value.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dpif.flowtext import parse_flow
from dpif.match import Match
from offload import tc_nla as N
from offload import tc_wire as W
from offload.tc_flower import to_flower
from offload.tc_op import F_CREATE, F_DELETE, F_REPLACE, TcOp
from offload.tc_values import (
    FlowerFilter, Gact, UnknownAction, decode_filter, delete_msg, encode_filter,
)
from tests.dpif.strategies import matches
from tests.offload.tc_cases import ACTION_CASES, KEY_CASES, random_filter
from tests.offload.test_tc_flower import EXAMPLES, PORTS, UFID

RTM_NEWTFILTER, RTM_DELTFILTER = 44, 45


def oracle(msg: object, msg_type: int, flags: int, seq: int, pid: int = 0) -> bytes:
    m = msg  # a tcmsg_flower
    m["header"]["type"] = msg_type  # type: ignore[index]
    m["header"]["flags"] = flags  # type: ignore[index]
    m["header"]["sequence_number"] = seq  # type: ignore[index]
    m["header"]["pid"] = pid  # type: ignore[index]
    m.encode()  # type: ignore[attr-defined]
    return bytes(m.data)  # type: ignore[attr-defined]


def check(f: FlowerFilter, flags: int = F_CREATE, seq: int = 1, pid: int = 0) -> None:
    fast = W.encode_filter_bytes(f, RTM_NEWTFILTER, flags, seq, pid)
    slow = oracle(encode_filter(f), RTM_NEWTFILTER, flags, seq, pid)
    assert fast == slow, (f, fast.hex(), slow.hex())
    back = N.tcmsg_flower(fast)
    back.decode()
    assert back["header"]["sequence_number"] == seq and back["header"]["flags"] == flags
    dumped = decode_filter(back)
    assert dumped is not None and dumped.filter == f


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_key_cases(case: str) -> None:
    protocol, keys = KEY_CASES[case]
    check(FlowerFilter(ifindex=3, prio=10, handle=0x11, chain=4, protocol=protocol, keys=keys,
                       flags=N.TCA_CLS_FLAGS_SKIP_HW, actions=(Gact.drop(),),
                       cookie=b"\xab" * 16), seq=0xFFFFFFFF, pid=4242)
    check(FlowerFilter(ifindex=0x7FFFFFFF, prio=0xFFFF, handle=0xFFFFFFFF, protocol=protocol,
                       keys=keys, classid=0x10001), flags=F_REPLACE, seq=2)


@pytest.mark.parametrize("case", sorted(ACTION_CASES))
def test_action_cases(case: str) -> None:
    actions = ACTION_CASES[case](7)
    check(FlowerFilter(ifindex=3, prio=1, handle=1, actions=actions, cookie=b"ufid"))
    check(FlowerFilter(ifindex=3, prio=2, handle=9, actions=actions, chain=1,
                       flags=N.TCA_CLS_FLAGS_SKIP_SW | N.TCA_CLS_FLAGS_VERBOSE), seq=12345)


@pytest.mark.parametrize("line", EXAMPLES)
def test_translation_examples(line: str) -> None:
    ft = parse_flow(line)
    f = to_flower(ft.match, ft.actions, UFID, ports=PORTS, prio=3, handle=7,
                  flags=N.TCA_CLS_FLAGS_SKIP_HW)
    assert isinstance(f, FlowerFilter), f
    check(f, seq=7)


def test_many_actions_and_max_prio() -> None:
    acts = tuple(ACTION_CASES["gact_goto_chain"](0) * N.TCA_ACT_MAX_PRIO)
    check(FlowerFilter(ifindex=1, prio=1, handle=1, actions=acts, cookie=b"\x01" * 16))


def test_delete_bytes() -> None:
    fast = W.encode_delete_bytes(5, 3, 9, 0x42, 0x0800, N.TC_H_INGRESS_PARENT,
                                 RTM_DELTFILTER, F_DELETE, 99, 17)
    assert fast == oracle(delete_msg(5, 3, 9, 0x42, 0x0800), RTM_DELTFILTER, F_DELETE, 99, 17)


def test_tcop_wire_matches_message() -> None:
    f = FlowerFilter(ifindex=3, prio=1, handle=1, actions=(Gact.drop(),), cookie=b"x")
    for op in ("add", "replace", "delete"):
        msg, msg_type, flags = TcOp(op, f).message()
        assert TcOp(op, f).wire(5, 6) == oracle(msg, msg_type, flags, 5, 6)


def test_unknown_action_is_not_covered() -> None:
    f = FlowerFilter(ifindex=3, prio=1, handle=1, actions=(UnknownAction("bpf"),))
    with pytest.raises(W.FastEncodeUnsupported):
        W.encode_filter_bytes(f, RTM_NEWTFILTER, F_CREATE, 1)
    with pytest.raises(W.FastEncodeUnsupported):
        TcOp("add", f).wire(1, 0)


def test_set_seq() -> None:
    f = FlowerFilter(ifindex=3, prio=1, handle=1)
    data = W.encode_filter_bytes(f, RTM_NEWTFILTER, F_CREATE, 0)
    assert W.set_seq(data, 77, 88) == W.encode_filter_bytes(f, RTM_NEWTFILTER, F_CREATE, 77, 88)


@given(matches(), st.sampled_from(sorted(PORTS)), st.sampled_from(sorted(ACTION_CASES)),
       st.integers(0, 2**32 - 1), st.integers(1, 0xFFFF), st.integers(1, 2**32 - 1),
       st.binary(max_size=16), st.sampled_from([0, 1, 2, 16, 17]), st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_random_filters(m: Match, port: int, acts: str, chain: int, prio: int, handle: int,
                        cookie: bytes, flags: int, seq: int) -> None:
    f = random_filter(m, port, acts, chain=chain, prio=prio, handle=handle, flags=flags,
                      cookie=cookie)
    assume(f is not None)
    check(f, seq=seq)
