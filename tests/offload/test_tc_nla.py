"""Unit tier: tc flower values <-> netlink messages, no kernel.

Every key group and every action of tc_cases is encoded into a
``tcmsg_flower``, serialised to bytes, parsed back and decoded; the value
must come back equal, and every attribute we meant to send must be present
in the bytes (pyroute2 drops unknown attribute names silently on encode).
"""

from __future__ import annotations

from typing import Any

import pytest

from dpif.errors import ValidationError
from offload import tc_nla as N
from offload.tc_values import (
    FlowerFilter, Gact, Mirred, Vlan, decode_filter, delete_msg, encode_filter,
)

from tests.offload.tc_cases import ACTION_CASES, KEY_CASES, K


def wire(msg: Any) -> Any:
    msg["header"]["type"] = 44  # RTM_NEWTFILTER
    msg["header"]["flags"] = 1
    msg.encode()
    back = N.tcmsg_flower(msg.data)
    back.decode()
    return back


def names(nest: Any) -> set[str]:
    return {a[0] for a in nest["attrs"]}


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_key_roundtrip(case: str) -> None:
    protocol, keys = KEY_CASES[case]
    f = FlowerFilter(ifindex=3, prio=10, handle=0x11, chain=4, protocol=protocol, keys=keys,
                     flags=N.TCA_CLS_FLAGS_SKIP_HW, actions=(Gact.drop(),), cookie=b"\xab" * 16)
    back = wire(encode_filter(f))
    opts = back.get_attr("TCA_OPTIONS")
    assert {name for name, _ in f.keys} <= names(opts)  # nothing dropped on encode
    dumped = decode_filter(back)
    assert dumped is not None and dumped.filter == f and not dumped.unsupported
    assert back.get_attr("TCA_CHAIN") == 4


@pytest.mark.parametrize("case", sorted(ACTION_CASES))
def test_action_roundtrip(case: str) -> None:
    actions = ACTION_CASES[case](7)
    f = FlowerFilter(ifindex=3, prio=1, handle=1, actions=actions, cookie=b"ufid")
    back = wire(encode_filter(f))
    acts = back.get_attr("TCA_OPTIONS").get_attr("TCA_FLOWER_ACT")
    for i, (act, sent) in enumerate(zip(sorted(acts["attrs"], key=lambda a: a[0]),
                                        f.actions), start=1):
        raw = act[1]
        assert raw.get_attr("TCA_ACT_KIND") == sent.kind
        assert names(raw.get_attr("TCA_ACT_OPTIONS")) >= {o[0] for o in sent.options()}
        assert (raw.get_attr("TCA_ACT_COOKIE") is not None) == (i == 1)
    dumped = decode_filter(back)
    assert dumped is not None and dumped.filter == f


def test_masks_are_canonical() -> None:
    f = FlowerFilter(1, 1, 1, keys={K + "TCP_DST": 80, K + "IPV4_SRC": "10.0.0.0",
                                    K + "IPV4_SRC_MASK": "0.0.0.0", K + "ETH_TYPE": 0x0800},
                     protocol=0x0800)
    assert f.keys == ((K + "ETH_TYPE", 0x0800), (K + "TCP_DST", 80), (K + "TCP_DST_MASK", 0xFFFF))
    assert FlowerFilter(1, 1, 1, keys={K + "FLAGS": 1}).key(K + "FLAGS_MASK") == 3


@pytest.mark.parametrize("kwargs", [dict(prio=0, handle=1), dict(prio=1, handle=0)])
def test_no_flush_shapes(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        FlowerFilter(ifindex=1, **kwargs)
    with pytest.raises(ValidationError):
        delete_msg(1, 0, kwargs["prio"], kwargs["handle"], N.ETH_P_ALL)


def test_delete_names_one_filter() -> None:
    back = wire(delete_msg(5, 3, 9, 0x42, 0x0800))
    assert (back["index"], back["handle"], back["info"] >> 16) == (5, 0x42, 9)
    assert back.get_attr("TCA_KIND") == "flower" and back.get_attr("TCA_CHAIN") == 3


@pytest.mark.parametrize("bad", [
    dict(keys={"TCA_FLOWER_KEY_NOPE": 1}),
    dict(keys={K + "TCP_DST": 70000}),
    dict(keys={K + "ETH_DST": "zz"}),
    dict(keys={K + "TCP_DST_MASK": 1}),
    dict(keys={K + "VLAN_ID": 1, K + "ETH_TYPE": 0x8100}),  # protocol must be the TPID
    dict(protocol=0x8100, keys={K + "ETH_TYPE": 0x0800}),
    dict(cookie=b"x" * 17, actions=(Gact.drop(),)),
    dict(cookie=b"x"),
    dict(flags=N.TCA_CLS_FLAGS_IN_HW),
])
def test_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FlowerFilter(ifindex=1, prio=1, handle=1, **bad)


def test_action_normalisation() -> None:
    assert Mirred(3, N.TCA_EGRESS_MIRROR).control == N.TC_ACT_PIPE
    assert Mirred(3).control == N.TC_ACT_STOLEN
    assert Vlan(N.TCA_VLAN_ACT_PUSH, vid=5) == Vlan(N.TCA_VLAN_ACT_PUSH, 5, 0, N.ETH_P_8021Q)
    assert Gact.goto_chain(9).control == N.TC_ACT_GOTO_CHAIN | 9
    with pytest.raises(ValidationError):
        Vlan(N.TCA_VLAN_ACT_POP, vid=3)


def test_non_flower_and_header_messages_are_skipped() -> None:
    msg = N.tcmsg_flower()
    msg["index"], msg["handle"], msg["info"] = 1, 0, (1 << 16) | 0x0008
    msg["attrs"] = [["TCA_KIND", "flower"], ["TCA_CHAIN", 0]]
    assert decode_filter(wire(msg)) is None
