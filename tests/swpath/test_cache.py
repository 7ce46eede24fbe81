"""swpath.cache against a linear scan of the same megaflows, plus overlap,
ranking, EMC invalidation and the flow limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif.actions import Output
from dpif.errors import FlowExists, FlowLimit, FlowNotFound
from dpif.fields import BY_NAME
from dpif.flow import Ufid
from dpif.match import Match
from swpath.cache import MegaflowCache

# A few narrow fields keep keys colliding often enough to be interesting.
_FIELDS = ("in_port", "eth_type", "ipv4_dst", "tp_dst")
_NARROW = {"in_port": 3, "eth_type": 2, "ipv4_dst": 3, "tp_dst": 3}  # bits used


def _mask_of(bits: dict[str, int]) -> int:
    return sum(v << BY_NAME[k].offset for k, v in bits.items())


@st.composite
def masks(draw: st.DrawFn) -> int:
    m = {}
    for name in _FIELDS:
        if draw(st.booleans()):
            width = _NARROW[name]
            full = (1 << width) - 1
            if BY_NAME[name].maskable:
                m[name] = draw(st.integers(1, full))
            else:
                m[name] = BY_NAME[name].all_ones
    return _mask_of(m)


@st.composite
def packet_keys(draw: st.DrawFn) -> int:
    return _mask_of({n: draw(st.integers(0, (1 << _NARROW[n]) - 1)) for n in _FIELDS})


class Linear:
    """The oracle: a list of megaflows, scanned in full."""

    def __init__(self) -> None:
        self.flows: dict[Ufid, Match] = {}

    def overlaps(self, m: Match) -> bool:
        return any(o.overlaps(m) for o in self.flows.values())

    def lookup(self, key: int) -> Ufid | None:
        hits = [u for u, m in self.flows.items() if m.matches(key)]
        assert len(hits) <= 1, "non-overlapping megaflows cannot both match"
        return hits[0] if hits else None


ops = st.lists(st.one_of(
    st.tuples(st.just("put"), masks(), packet_keys()),
    st.tuples(st.just("del"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("mod"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("look"), packet_keys(), st.just(0)),
    st.tuples(st.just("rerank"), st.just(0), st.just(0)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops, st.sampled_from([0, 4]), st.lists(packet_keys(), min_size=1, max_size=30))
def test_cache_equals_linear_scan(script: list[tuple[str, int, int]], emc: int,
                                  probes: list[int]) -> None:
    cache = MegaflowCache(emc_size=emc, rerank_every=3)
    lin = Linear()
    ufids: list[Ufid] = []
    for op, a, b in script:
        if op == "put":
            m = Match(b & a, a)
            u = Ufid(len(ufids) + 1)
            ufids.append(u)
            if lin.overlaps(m):
                with pytest.raises(FlowExists):
                    cache.insert(u, m, (Output(1),))
            else:
                cache.insert(u, m, (Output(len(ufids)),))
                lin.flows[u] = m
        elif op in ("del", "mod") and ufids:
            u = ufids[a % len(ufids)]
            if u in lin.flows:
                if op == "del":
                    assert cache.remove(u).dead
                    del lin.flows[u]
                else:
                    cache.modify(u, (Output(999),))
            else:
                with pytest.raises(FlowNotFound):
                    cache.remove(u) if op == "del" else cache.modify(u, ())
        elif op == "look":
            probes.append(a)
        elif op == "rerank":
            cache.rerank()
        for k in probes:  # after every step: EMC can never go stale
            e = cache.lookup(k)
            assert (e.ufid if e else None) == lin.lookup(k)
            e2 = cache.lookup_nocache(k)
            assert (e2.ufid if e2 else None) == lin.lookup(k)
    assert len(cache) == len(lin.flows)
    assert {e.ufid for e in cache} == set(lin.flows)


def _m(**kw: int | tuple[int, int]) -> Match:
    return Match.build(kw)


def test_overlap_rejected_both_directions_and_disjoint_accepted() -> None:
    c = MegaflowCache()
    c.insert(Ufid(1), _m(in_port=1, eth_type=0x800), ())
    with pytest.raises(FlowExists, match="overlaps"):
        c.insert(Ufid(2), _m(in_port=1), ())  # wider
    with pytest.raises(FlowExists):
        c.insert(Ufid(3), _m(in_port=1, eth_type=0x800, tp_dst=80), ())  # narrower
    with pytest.raises(FlowExists):
        c.insert(Ufid(4), _m(eth_type=0x800, ipv4_dst=(0x0A000000, 0xFF000000)), ())  # crosses
    with pytest.raises(FlowExists, match="ufid"):
        c.insert(Ufid(1), _m(in_port=9), ())
    c.insert(Ufid(5), _m(in_port=2), ())
    c.insert(Ufid(6), _m(in_port=1, eth_type=0x86DD), ())
    assert len(c) == 3


def test_ranking_puts_hot_subtable_first() -> None:
    c = MegaflowCache(emc_size=0, rerank_every=1_000_000)
    c.insert(Ufid(1), _m(in_port=1), ())
    c.insert(Ufid(2), _m(in_port=2, eth_type=0x800), ())
    hot = _m(in_port=2, eth_type=0x800).key
    assert c.masks[0] == _m(in_port=1).mask
    for _ in range(10):
        assert c.lookup(hot) is not None
    c.rerank()
    assert c.masks[0] == _m(in_port=2, eth_type=0x800).mask


def test_emc_invalidated_on_delete_and_sees_modify() -> None:
    c = MegaflowCache(emc_size=16)
    c.insert(Ufid(1), _m(in_port=1), (Output(2),))
    key = _m(in_port=1, eth_type=0x800, tp_dst=80).key
    assert c.lookup(key) is not None and c.emc_len == 1
    assert c.lookup(key) is not None and c.emc_hits == 1
    c.modify(Ufid(1), (Output(3),))
    e = c.lookup(key)
    assert e is not None and e.actions == (Output(3),)
    c.remove(Ufid(1))
    assert c.lookup(key) is None
    c.insert(Ufid(2), _m(in_port=1, eth_type=0x800), (Output(4),))
    e = c.lookup(key)
    assert e is not None and e.ufid == Ufid(2)


def test_emc_is_bounded() -> None:
    c = MegaflowCache(emc_size=4)
    c.insert(Ufid(1), _m(eth_type=0x800), ())
    for p in range(10):
        assert c.lookup(_m(eth_type=0x800, in_port=p).key) is not None
    assert c.emc_len == 4


def test_flow_limit() -> None:
    c = MegaflowCache(flow_limit=2)
    c.insert(Ufid(1), _m(in_port=1), ())
    c.insert(Ufid(2), _m(in_port=2), ())
    with pytest.raises(FlowLimit):
        c.insert(Ufid(3), _m(in_port=3), ())
    c.remove(Ufid(1))
    c.insert(Ufid(3), _m(in_port=3), ())


def test_empty_subtable_goes_away() -> None:
    c = MegaflowCache()
    c.insert(Ufid(1), _m(in_port=1), ())
    c.remove(Ufid(1))
    assert c.masks == [] and len(c) == 0
    with pytest.raises(FlowNotFound):
        c.get(Ufid(1))
