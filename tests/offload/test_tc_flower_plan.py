"""The per-mask plans of tc_flower.to_flower against the full path.

``canonical_match_keys`` (a cached plan per mask and control values) must
give exactly ``canonical_keys(_match_keys(m))`` -- the same keys, the same
refusal, the same ValidationError -- for the match that made the plan and
for every other match with its mask and control values (the plan's reuse).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dpif.errors import ValidationError
from dpif.fields import ALL_ONES
from dpif.match import Match
from offload import tc_flower as TF
from offload import tc_values as V
from tests.dpif.strategies import matches


def full_path(m: Match) -> Any:
    got = TF._match_keys(m)
    if isinstance(got, TF.NotOffloadable):
        return got
    try:
        return V.canonical_keys(got[0], got[1]), got[1]
    except ValidationError as e:
        return ("ValidationError", e.message, e.context)


def planned(m: Match) -> Any:
    try:
        return TF.canonical_match_keys(m)
    except ValidationError as e:
        return ("ValidationError", e.message, e.context)


@given(matches(), st.lists(st.integers(0, ALL_ONES), min_size=1, max_size=4),
       st.booleans())
@settings(max_examples=400, deadline=None)
def test_plan_equals_the_full_path_and_its_reuse(m: Match, others: list[int],
                                                 fresh: bool) -> None:
    if fresh:
        TF._PLANS.clear()
    assert planned(m) == full_path(m)
    for bits in others:  # same mask and control values, other copied values
        key = (bits & m.mask & ~TF.CONTROL_BITS) | (m.key & TF.CONTROL_BITS)
        other = Match(key, m.mask)
        assert planned(other) == full_path(other)


def test_a_megaflow_table_makes_one_plan_per_mask() -> None:
    TF._PLANS.clear()
    for i in range(50):
        m = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ip_proto=17,
                        ipv4_dst=0x0A000000 + i, tp_dst=1000 + i, ip_frag=(0, 3))
        assert planned(m) == full_path(m)
    assert len(TF._PLANS) == 1
