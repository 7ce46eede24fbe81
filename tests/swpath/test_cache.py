"""swpath.cache against a linear scan of the same megaflows, plus overlap,
ranking, EMC invalidation and the flow limit."""

from __future__ import annotations

from collections import Counter

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


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """Steps over megaflows whose masks mostly share a ``base`` (so the
    projection index has a common mask to split on), with some that lack it
    (they narrow the common mask: unindexed subtables, then a rebuild)."""
    port = BY_NAME["in_port"].all_ones  # not maskable
    base = draw(st.sampled_from([0, _mask_of({"in_port": port}),
                                 _mask_of({"in_port": port, "ipv4_dst": 7})]))
    m = st.builds(lambda m, b: m | (base if b else 0), masks(), st.integers(0, 4).map(bool))
    return draw(st.lists(st.one_of(
        st.tuples(st.just("put"), m, packet_keys()),
        st.tuples(st.just("del"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("mod"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("look"), packet_keys(), st.just(0)),
        st.tuples(st.just("rerank"), st.just(0), st.just(0)),
        st.tuples(st.just("rebuild"), st.just(0), st.just(0)),
    ), max_size=80))


@settings(max_examples=400, deadline=None)
@given(scripts(), st.sampled_from([0, 4]), st.sampled_from([0, 10_000]), st.booleans(),
       st.lists(packet_keys(), min_size=1, max_size=30))
def test_cache_equals_linear_scan(script: list[tuple[str, int, int]], emc: int,
                                  rebuild_at: int, use_index: bool, probes: list[int]) -> None:
    # rebuild_at=0: the index is rebuilt only by the amortized rule (or the
    # "rebuild" step), so lookups meet unindexed subtables and stale candidates;
    # 10_000: rebuilt at every change that dirties it; use_index=False: plain TSS.
    cache = MegaflowCache(emc_size=emc, rerank_every=3, rebuild_at=rebuild_at,
                          use_index=use_index)
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
        elif op == "rebuild":
            cache.rebuild()
        common = cache.index_common
        if common is not None:  # the index's mask is within every indexed one
            assert all(m.mask & common == common for m in lin.flows.values()) \
                or cache.unindexed
        live = cache.masks
        for sub in cache.subtables:  # overlap projections: exact, and only for live masks
            assert set(sub.proj) <= {sub.mask & m for m in live}
            for c, idx in sub.proj.items():
                assert idx == dict(Counter(k & c for k in sub.table))
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


def test_overlap_projections_go_with_the_masks_that_needed_them() -> None:
    """Masks come and go around a long-lived subtable: its overlap projections
    (one per common mask) must not pile up, and nothing is left at the end."""
    c = MegaflowCache()
    for port in range(1, 5):  # the long-lived subtable: exact in_port and ipv4_dst
        c.insert(Ufid(port), _m(in_port=port, eth_type=0x800, ipv4_dst=port), ())
    base = c.subtables[0]
    u = 100
    for round_ in range(20):  # each round a new mask, not covering base's: projections
        mask = 0xFF << 8 * (round_ % 4)
        m = _m(in_port=9, eth_type=0x800, tp_dst=(round_, 0xFFFF),
               ipv4_src=(0x01020304 & mask, mask))
        u += 1
        c.insert(Ufid(u), m, ())
        assert len(base.proj) == 1
        c.remove(Ufid(u))
        assert base.proj == {}  # the projection went with its mask
    # a refused insert (it overlaps flow 1) leaves no projection behind either
    with pytest.raises(FlowExists):
        c.insert(Ufid(999), _m(in_port=1, ipv4_src=(0x01000000, 0xFF000000)), ())
    assert base.proj == {}
    for port in range(1, 5):
        c.remove(Ufid(port))
    assert c.subtables == [] and c.masks == [] and c.unindexed == 0 and base.proj == {}


def _ipv4(port: int, dst: int, **kw: int) -> Match:
    return _m(in_port=port, eth_type=0x800, ipv4_dst=dst, **kw)


def test_index_answers_with_the_one_flow_under_a_projection() -> None:
    c = MegaflowCache(emc_size=0)
    for i in range(40):  # 4 masks over a common in_port+eth_type+ipv4_dst
        extra = ({}, {"tp_dst": 80}, {"ip_proto": 6}, {"ip_ttl": 64})[i % 4]
        c.insert(Ufid(i + 1), _ipv4(1, i, **extra), ())
    assert c.index_common == _ipv4(0, 0).mask | 0 and c.unindexed == 0
    k = _m(in_port=1, eth_type=0x800, ipv4_dst=6, tp_dst=80, ip_proto=6, ip_ttl=64).key
    e = c.lookup(k)
    assert e is not None and e.ufid == Ufid(7)
    assert c.lookup(k & ~_m(ip_proto=6).mask) is None  # the one flow is checked, not trusted
    assert c.lookup(_m(in_port=1, eth_type=0x800, ipv4_dst=99).key) is None


def test_unindexed_subtable_until_rebuild() -> None:
    c = MegaflowCache(emc_size=0, rebuild_at=0, rerank_every=8)
    for i in range(20):
        c.insert(Ufid(i + 1), _ipv4(1, i, **({} if i % 2 else {"tp_dst": 80})), ())
    c.rebuild()
    common = c.index_common
    assert common == _ipv4(0, 0).mask
    c.insert(Ufid(100), _m(in_port=2, eth_type=0x86DD), ())  # no ipv4_dst: narrows common
    assert c.unindexed == 1 and c.index_common == common
    v6 = _m(in_port=2, eth_type=0x86DD, ipv4_dst=3).key
    for _ in range(40):  # the unindexed subtable is probed
        e = c.lookup(v6)
        assert e is not None and e.ufid == Ufid(100)
    # enough lookups and changes pay for a rebuild: common narrows, all indexed
    changes = 0
    while c.unindexed:
        c.remove(Ufid(changes + 1))
        c.insert(Ufid(200 + changes), _ipv4(1, changes + 1000), ())
        changes += 1
        assert changes <= 20  # (21 flows + REBUILD_SLACK) / 2 units of work at most
    assert changes > 2  # not at once: the cache is past rebuild_at
    assert c.unindexed == 0 and c.index_common == _m(in_port=0, eth_type=0).mask
    assert c.lookup(v6) is not None and c.lookup(_ipv4(1, 1005).key) is not None


def test_plain_search_when_the_projection_does_not_split() -> None:
    c = MegaflowCache(emc_size=0)
    c.insert(Ufid(1), _m(in_port=1, ip_proto=6, tp_dst=81), ())
    c.insert(Ufid(2), _m(in_port=1, tp_dst=80, ip_ttl=1), ())
    c.insert(Ufid(3), _m(in_port=1, ip_proto=17, ip_ttl=2), ())
    assert c.index_common is None  # all project to in_port=1: nothing to gain
    for p in range(2, 80):  # tried again after amortized work: now it splits
        c.insert(Ufid(p + 2), _m(in_port=p, ip_proto=6, tp_dst=81), ())
    assert c.index_common == _m(in_port=0).mask
    e = c.lookup(_m(in_port=1, tp_dst=80, ip_ttl=1).key)
    assert e is not None and e.ufid == Ufid(2)
