"""dpif.flow: the hand-written ``__init__`` of FlowStats and DpFlow
(``slot_setters`` called directly) against what the dataclass machinery
promises.  ``check_hand_init`` serves offload's TcFlow and TcOp too."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpif import actions as A
from dpif.flow import DpFlow, FlowStats, Placement, Ufid
from dpif.match import Match


def check_hand_init(cls: type) -> None:
    """``cls.__init__`` takes the dataclass fields, in order, with their
    defaults, sets each from its own argument, and the value stays frozen."""
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == default, f.name
    values = [object() for _ in fields]  # every field set from its own argument
    made = cls(*values)
    assert [getattr(made, f.name) for f in fields] == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, fields[0].name, None)


@pytest.mark.parametrize("cls", [FlowStats, DpFlow])
def test_init_takes_the_fields_in_order_with_their_defaults(cls: type) -> None:
    check_hand_init(cls)


stats = st.builds(FlowStats, st.integers(0, 2**64), st.integers(0, 2**64),
                  st.none() | st.floats(0, 1e9), st.integers(0, 0xFFF))


@given(stats, stats)
def test_flowstats_fields_equality_and_frozenness(a: FlowStats, b: FlowStats) -> None:
    assert dataclasses.astuple(a) == (a.packets, a.bytes, a.used, a.tcp_flags)
    assert (a == b) == (dataclasses.astuple(a) == dataclasses.astuple(b))
    assert dataclasses.replace(a, packets=b.packets).packets == b.packets
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.packets = 1  # type: ignore[misc]
    assert hash(a) == hash(FlowStats(*dataclasses.astuple(a)))


@given(st.integers(0, 2**128 - 1), stats, st.booleans())
def test_dpflow_positional_keyword_and_defaults(u: int, s: FlowStats, tc: bool) -> None:
    m, acts = Match.build(in_port=1), (A.Output(2),)
    where = Placement("tc", True) if tc else Placement("sw")
    f = DpFlow(Ufid(u), m, acts, s, where)
    assert f == DpFlow(ufid=Ufid(u), match=m, actions=acts, stats=s, placement=where)
    assert (f.ufid, f.match, f.actions, f.stats, f.placement) == (Ufid(u), m, acts, s, where)
    bare = DpFlow(Ufid(u), m, acts)
    assert (bare.stats, bare.placement) == (FlowStats(), Placement("sw"))
    assert f.with_stats(FlowStats()) == dataclasses.replace(f, stats=FlowStats())
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.stats = s  # type: ignore[misc]
