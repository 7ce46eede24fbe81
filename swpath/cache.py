"""The megaflow cache: tuple-space search, a projection index and an
exact-match cache in front.

Theory of operation
-------------------
Vocabulary from OVS's ``dpif-netdev`` / ``dpcls``:

megaflow   a ``Match(key, mask)`` plus actions, under a ufid.
subtable   every megaflow with one same mask lives in one dict of its
           subtable, keyed by ``match.key``.  A probe for a packet key ``k``
           is ``table.get(k & mask)``: one ``&``, one dict lookup.
ranking    subtables are probed in order of recent hits, so that with skewed
           traffic most lookups stop in the first one or two.  Hits are
           counted on the subtable; every ``rerank_every`` lookups the order
           is recomputed and the counts are halved (recent traffic wins).
EMC        the exact-match cache: ``dict[full packet key] -> entry``, probed
           first, filled on a subtable hit, bounded (oldest entry goes).  An
           entry removed from the cache is marked dead, and the EMC ignores
           dead entries (OVS's ``emc_entry_alive``), so delete never has to
           scan the EMC.  Modify changes the entry's actions in place, so
           EMC hits see new actions at once.

Megaflows in the cache never overlap: ``insert`` refuses (``FlowExists``) a
match that some packet could share with an installed one, so a lookup has at
most one answer and the probing order cannot change the verdict.  Two matches
(K1, M1) and (K2, M2) overlap iff ``K1 & M2 == K2 & M1`` on the common bits
``M1 & M2``.  Against a subtable whose mask M is covered by the new mask N
the test is one probe, ``table.get(K & M)``; otherwise each subtable keeps a
*projection* index per common mask ``C = M & N`` (``dict[K' & C] -> count``),
built on first use and kept up to date, so the test is still one probe.
A projection goes when no live mask needs it any more (its subtable went,
or the insert it was built for was refused).

The projection index (what makes tuple-space search cheap without the EMC)
lifts that idea to the whole cache.  ``common`` is a mask covered by every
*indexed* subtable's mask (their AND at the last rebuild), and
``index[K & common]`` says where the megaflows projecting there live:

* the ``CacheEntry`` itself when exactly one megaflow projects there -- a
  lookup then costs one probe of the index plus ``k & M == K`` (no second
  hash), the usual case when ``common`` holds a destination address;
* else a tuple of subtable probes, in rank order as of the last rebuild,
  interned so that equal tuples are one object.

It is exact because a megaflow matching packet ``k`` has ``K == k & M`` and
``common`` is within ``M``, so ``K & common == k & common``: the megaflow is
under the packet's projection.  The index may hold a *superset*: removing a
megaflow that shared its projection leaves its subtable in the tuple (a
wasted probe, never a wrong answer).  A subtable made after the last rebuild
whose mask does not cover ``common`` is *unindexed*: its flows are not in the
index and every lookup that the index did not answer probes it.  The same
argument bounds ``insert``'s overlap test: an overlapping megaflow has the
same projection, so only the index's candidates and the unindexed subtables
are checked.

``rebuild`` recomputes ``common`` over all subtables and the index from
scratch, O(flows).  It runs at once while the cache is small, and otherwise
once the index is *dirty* (unindexed subtables, stale tuples, a subtable
gone) and enough work has passed since the last one (inserts, removes and
probing lookups/16 at least half the flow count), so its cost is amortized
O(1) per operation.  When ``common`` does not split the flows (a projection's
candidates average more than half the subtables, or there is one subtable),
the cache drops the index and probes all subtables in rank order, as plain
tuple-space search, and tries an index again after the same amount of work.
A lookup that the index's one-flow test answers counts a hit on the
subtable but does not count toward ``rerank_every`` (nothing was probed).

The cache is a mechanism with no I/O and no clock: stats live on entries
(``CacheEntry``), which the datapath credits.
"""

from __future__ import annotations

from collections.abc import Iterator

from dpif.actions import Actions
from dpif.errors import FlowExists, FlowLimit, FlowNotFound
from dpif.fields import ALL_ONES
from dpif.flow import FlowStats, Ufid
from dpif.match import Match

__all__ = ["CacheEntry", "MegaflowCache", "Subtable"]

# A dirty index of n flows is rebuilt after (n + REBUILD_SLACK) / 2 units of work.
REBUILD_SLACK = 64



class CacheEntry:
    """One installed megaflow and its counters (mutable: credited per packet)."""

    __slots__ = ("ufid", "match", "key", "mask", "sub", "actions", "packets", "bytes", "used",
                 "tcp_flags", "dead")

    def __init__(self, ufid: Ufid, match: Match, actions: Actions, sub: Subtable) -> None:
        self.ufid = ufid
        self.key, self.mask = match.key, match.mask  # for the index's one-flow test
        self.sub = sub  # the subtable it lives in
        self.match = match
        self.actions = actions
        self.packets = 0
        self.bytes = 0
        self.used: float | None = None
        self.tcp_flags = 0
        self.dead = False

    @property
    def stats(self) -> FlowStats:
        return FlowStats(self.packets, self.bytes, self.used, self.tcp_flags)

    def zero_stats(self) -> None:
        self.packets = self.bytes = self.tcp_flags = 0
        self.used = None

    def __repr__(self) -> str:
        return f"CacheEntry({self.ufid}, {self.match!r}, {self.actions!r})"


# What a lookup loops over: (mask, table, subtable), one per subtable.
Probe = tuple[int, dict[int, CacheEntry], "Subtable"]


class Subtable:
    """Every megaflow of one mask."""

    __slots__ = ("mask", "table", "hits", "proj", "probe", "indexed")

    def __init__(self, mask: int) -> None:
        self.mask = mask
        self.table: dict[int, CacheEntry] = {}
        self.hits = 0
        # common mask -> {projected key: how many entries project there}
        self.proj: dict[int, dict[int, int]] = {}
        self.probe: Probe = (mask, self.table, self)
        self.indexed = False  # its flows are in the cache's projection index

    def overlaps(self, match: Match) -> bool:
        common = self.mask & match.mask
        if common == self.mask:
            return (match.key & common) in self.table
        idx = self.proj.get(common)
        if idx is None:
            idx = {}
            for k in self.table:
                pk = k & common
                idx[pk] = idx.get(pk, 0) + 1
            self.proj[common] = idx
        return (match.key & common) in idx

    def add(self, entry: CacheEntry) -> None:
        k = entry.match.key
        self.table[k] = entry
        for common, idx in self.proj.items():
            pk = k & common
            idx[pk] = idx.get(pk, 0) + 1

    def remove(self, entry: CacheEntry) -> None:
        k = entry.match.key
        del self.table[k]
        for common, idx in self.proj.items():
            pk = k & common
            left = idx[pk] - 1
            if left:
                idx[pk] = left
            else:
                del idx[pk]


class MegaflowCache:
    """Megaflows by mask (tuple space), a projection index, EMC in front.

    ``emc_size=0`` turns the EMC off.  ``flow_limit`` bounds the megaflows.
    A cache of up to ``rebuild_at`` flows rebuilds its index as soon as it
    gets dirty; a larger one waits for the amortized rule.  ``use_index=False``
    keeps it plain tuple-space search (for comparison).
    """

    def __init__(self, *, flow_limit: int = 200_000, emc_size: int = 8192,
                 rerank_every: int = 4096, rebuild_at: int = 256,
                 use_index: bool = True) -> None:
        self.flow_limit = flow_limit
        self.use_index = use_index
        self.rebuild_at = rebuild_at
        self.emc_size = emc_size
        self.rerank_every = rerank_every
        self._subtables: dict[int, Subtable] = {}
        # Probe order for plain tuple-space search, best first.
        self._ranked: list[Probe] = []
        self._by_ufid: dict[Ufid, CacheEntry] = {}
        self._emc: dict[int, CacheEntry] = {}
        # The projection index (None: plain tuple-space search).
        self._index: dict[int, CacheEntry | tuple[Probe, ...]] | None = None
        self._common = ALL_ONES
        self._unindexed: list[Probe] = []  # made since the last rebuild, rank order
        self._interned: dict[tuple[int, ...], tuple[Probe, ...]] = {}
        self._dirty = False  # the index is worse than a rebuild would make it
        self._reconsider = False  # plain by choice: try an index again later
        self._work = 0  # operations since the last rebuild
        self.rebuilds = 0
        self._countdown = rerank_every
        self.emc_hits = 0
        self.misses = 0

    # -- lookup (the hot path) ---------------------------------------------

    def lookup(self, key: int) -> CacheEntry | None:
        """The megaflow matching packet ``key``, or None."""
        e = self._emc.get(key)
        if e is not None and not e.dead:
            self.emc_hits += 1
            return e
        return self._lookup_subtables(key)

    def _lookup_subtables(self, key: int) -> CacheEntry | None:
        index = self._index
        if index is not None:
            v = index.get(key & self._common)
            if v.__class__ is CacheEntry:  # the one megaflow under this projection
                if key & v.mask == v.key:
                    v.sub.hits += 1
                    if self.emc_size:  # fill the EMC (inline: this runs per EMC miss)
                        emc = self._emc
                        if len(emc) >= self.emc_size:
                            del emc[next(iter(emc))]
                        emc[key] = v
                    return v
                return self._probe(key, (), self._unindexed)
            return self._probe(key, v or (), self._unindexed)  # type: ignore[arg-type]
        # plain tuple-space search, inline (no index: this is the whole lookup)
        self._countdown -= 1
        if self._countdown <= 0:
            self.rerank()
        for mask, table, st in self._ranked:
            e = table.get(key & mask)
            if e is not None:
                st.hits += 1
                if self.emc_size:
                    emc = self._emc
                    if len(emc) >= self.emc_size:
                        del emc[next(iter(emc))]
                    emc[key] = e
                return e
        self.misses += 1
        return None

    def _probe(self, key: int, first: tuple[Probe, ...], then: list[Probe]) -> CacheEntry | None:
        """Probe subtables ``first`` then ``then``; counts toward reranking.  (A
        lookup the index answers alone probes nothing and is not counted.)"""
        self._countdown -= 1
        if self._countdown <= 0:
            self.rerank()
        for probes in (first, then):
            for mask, table, st in probes:
                e = table.get(key & mask)
                if e is not None:
                    st.hits += 1
                    if self.emc_size:
                        emc = self._emc
                        if len(emc) >= self.emc_size:
                            del emc[next(iter(emc))]
                        emc[key] = e
                    return e
        self.misses += 1
        return None

    def lookup_nocache(self, key: int) -> CacheEntry | None:
        """The search without EMC or stats: for oracles and benchmarks."""
        if self._index is not None:
            v = self._index.get(key & self._common)
            if isinstance(v, CacheEntry):
                if v.match.matches(key):
                    return v
            elif v is not None:
                for mask, table, _ in v:
                    e = table.get(key & mask)
                    if e is not None:
                        return e
            probes = self._unindexed
        else:
            probes = self._ranked
        for mask, table, _ in probes:
            e = table.get(key & mask)
            if e is not None:
                return e
        return None

    def rerank(self) -> None:
        """Probe the subtables with most recent hits first; age the counts."""
        self._countdown = self.rerank_every
        self._ranked.sort(key=lambda t: t[2].hits, reverse=True)
        self._unindexed.sort(key=lambda t: t[2].hits, reverse=True)
        for _, _, st in self._ranked:
            st.hits >>= 1
        self._work += self.rerank_every // 16 + 1
        self._maybe_rebuild()

    # -- the projection index ----------------------------------------------------

    def rebuild(self) -> None:
        """Recompute ``common`` and the index from every subtable, O(flows)."""
        self._work = 0
        self._dirty = self._reconsider = False
        self.rebuilds += 1
        self._unindexed = []
        self._interned = {}
        common = ALL_ONES
        for st in self._subtables.values():
            common &= st.mask
            st.indexed = False
        self._common = common
        self._index = None
        if len(self._subtables) < 2 or not self.use_index:
            return  # (one subtable: one probe either way)
        self._index = {}
        for _, table, st in self._ranked:
            st.indexed = True
            for e in table.values():
                self._index_add(st, e)
        self._dirty = False  # (_index_add flags long tuples; judged just below)
        cands = sum(1 if isinstance(v, CacheEntry) else len(v) for v in self._index.values())
        if cands * 2 > len(self._index) * len(self._subtables):
            self._index = None  # the projection does not split the flows
            for st in self._subtables.values():
                st.indexed = False
            self._reconsider = True

    def _index_add(self, st: Subtable, e: CacheEntry) -> None:
        assert self._index is not None
        pk = e.match.key & self._common
        v = self._index.get(pk)
        if v is None:
            self._index[pk] = e
            return
        if isinstance(v, CacheEntry):
            other = v.sub.probe
            probes: tuple[Probe, ...] = (other,) if other is st.probe else (other, st.probe)
        elif any(p is st.probe for p in v):
            return
        else:
            probes = (*v, st.probe)
        ids = tuple(id(p) for p in probes)
        self._index[pk] = self._interned.setdefault(ids, probes)
        if len(probes) * 2 > len(self._subtables):
            self._dirty = True  # getting unselective: reconsider at the next rebuild

    def _maybe_rebuild(self) -> None:
        n = len(self._by_ufid)
        if (self._dirty and n <= self.rebuild_at
                or (self._dirty or self._reconsider) and self._work * 2 >= n + REBUILD_SLACK):
            self.rebuild()

    # -- changes -------------------------------------------------------------

    def _overlapping(self, match: Match) -> CacheEntry | None:
        """An installed megaflow that overlaps ``match``, or None."""
        index, common = self._index, self._common
        if index is None or match.mask & common != common:
            suspects: list[Subtable] = list(self._subtables.values())
        else:  # only flows under the same projection can overlap (see above)
            v = index.get(match.key & common)
            if isinstance(v, CacheEntry):
                if v.match.overlaps(match):
                    return v
                v = None
            suspects = [st for _, _, st in (*(v or ()), *self._unindexed)
                        if st.table]  # (a stale candidate may name a subtable gone)
        for st in suspects:
            if st.overlaps(match):
                return self._find_overlap(st, match)
        return None

    def insert(self, ufid: Ufid, match: Match, actions: Actions) -> CacheEntry:
        """Install a megaflow.  FlowExists if the ufid is there or ``match``
        overlaps an installed megaflow; FlowLimit when full."""
        if ufid in self._by_ufid:
            raise FlowExists("a flow with this ufid is installed", ufid=str(ufid))
        other = self._overlapping(match)
        if other is not None or len(self._by_ufid) >= self.flow_limit:
            if match.mask not in self._subtables:
                self._unproject(match.mask)  # the overlap test's projections for it
            if other is not None:
                raise FlowExists("megaflow overlaps an installed flow", ufid=str(ufid),
                                 other=str(other.ufid))
            raise FlowLimit("software datapath flow limit reached", limit=self.flow_limit)
        sub = self._subtables.get(match.mask)
        if sub is None:
            sub = self._subtables[match.mask] = Subtable(match.mask)
            self._ranked.append(sub.probe)
            if self._index is None:
                self._dirty = True  # an index may pay off now
            elif sub.mask & self._common == self._common:
                sub.indexed = True
            else:
                self._unindexed.append(sub.probe)
                self._dirty = True
        e = CacheEntry(ufid, match, actions, sub)
        sub.add(e)
        if sub.indexed:
            self._index_add(sub, e)
        self._by_ufid[ufid] = e
        self._work += 1
        self._maybe_rebuild()
        return e

    def _unproject(self, gone: int) -> None:
        """No subtable has mask ``gone`` (any more): drop the overlap projections
        (``Subtable.proj``) that only it needed, so they do not pile up as masks
        come and go.  A projection another live mask shares stays."""
        live = self._subtables
        for st in live.values():
            c = st.mask & gone
            if c in st.proj and not any(st.mask & m == c for m in live):
                del st.proj[c]

    @staticmethod
    def _find_overlap(st: Subtable, match: Match) -> CacheEntry:
        """The entry of ``st`` that ``match`` overlaps (a scan: once per refusal)."""
        return next(e for e in st.table.values() if e.match.overlaps(match))

    def remove(self, ufid: Ufid) -> CacheEntry:
        """Remove a megaflow; FlowNotFound if there is none.  Returns it, dead."""
        e = self._by_ufid.pop(ufid, None)
        if e is None:
            raise FlowNotFound("no flow with this ufid", ufid=str(ufid))
        e.dead = True
        st = e.sub
        st.remove(e)
        if st.indexed and self._index is not None:
            pk = e.match.key & self._common
            if self._index.get(pk) is e:
                del self._index[pk]
            else:
                self._dirty = True  # its subtable may now be a stale candidate
        if not st.table:
            del self._subtables[st.mask]
            st.proj.clear()
            self._unproject(st.mask)
            self._ranked = [p for p in self._ranked if p[2] is not st]
            self._unindexed = [p for p in self._unindexed if p[2] is not st]
            self._dirty = True  # common may widen
        self._work += 1
        self._maybe_rebuild()
        return e

    def modify(self, ufid: Ufid, actions: Actions) -> CacheEntry:
        """Replace a megaflow's actions in place; FlowNotFound if none."""
        e = self.get(ufid)
        e.actions = actions
        return e

    def clear_emc(self) -> None:
        self._emc.clear()

    # -- reading ---------------------------------------------------------------

    def get(self, ufid: Ufid) -> CacheEntry:
        e = self._by_ufid.get(ufid)
        if e is None:
            raise FlowNotFound("no flow with this ufid", ufid=str(ufid))
        return e

    def __len__(self) -> int:
        return len(self._by_ufid)

    def __iter__(self) -> Iterator[CacheEntry]:
        return iter(list(self._by_ufid.values()))

    def __contains__(self, ufid: object) -> bool:
        return ufid in self._by_ufid

    @property
    def subtables(self) -> list[Subtable]:
        """The subtables in the current probe order (read them, do not change them)."""
        return [st for _, _, st in self._ranked]

    @property
    def masks(self) -> list[int]:
        """Subtable masks in the current probe order."""
        return [m for m, _, _ in self._ranked]

    @property
    def emc_len(self) -> int:
        return len(self._emc)

    @property
    def index_common(self) -> int | None:
        """The index's projection mask, None when the cache is plain TSS."""
        return self._common if self._index is not None else None

    @property
    def unindexed(self) -> int:
        """Subtables the index does not cover (probed on every index miss)."""
        return len(self._unindexed) if self._index is not None else 0
