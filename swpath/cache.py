"""The megaflow cache: tuple-space search with an exact-match cache in front.

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

The cache is a mechanism with no I/O and no clock: stats live on entries
(``CacheEntry``), which the datapath credits.
"""

from __future__ import annotations

from collections.abc import Iterator

from dpif.actions import Actions
from dpif.errors import FlowExists, FlowLimit, FlowNotFound
from dpif.flow import FlowStats, Ufid
from dpif.match import Match

__all__ = ["CacheEntry", "MegaflowCache", "Subtable"]


class CacheEntry:
    """One installed megaflow and its counters (mutable: credited per packet)."""

    __slots__ = ("ufid", "match", "actions", "packets", "bytes", "used", "tcp_flags", "dead")

    def __init__(self, ufid: Ufid, match: Match, actions: Actions) -> None:
        self.ufid = ufid
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


class Subtable:
    """Every megaflow of one mask."""

    __slots__ = ("mask", "table", "hits", "proj")

    def __init__(self, mask: int) -> None:
        self.mask = mask
        self.table: dict[int, CacheEntry] = {}
        self.hits = 0
        # common mask -> {projected key: how many entries project there}
        self.proj: dict[int, dict[int, int]] = {}

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
    """Megaflows by mask (tuple space), ranked by hits, EMC in front.

    ``emc_size=0`` turns the EMC off.  ``flow_limit`` bounds the megaflows.
    """

    def __init__(self, *, flow_limit: int = 200_000, emc_size: int = 8192,
                 rerank_every: int = 4096) -> None:
        self.flow_limit = flow_limit
        self.emc_size = emc_size
        self.rerank_every = rerank_every
        self._subtables: dict[int, Subtable] = {}
        # Probe order: (mask, table, subtable) tuples, best first.
        self._ranked: list[tuple[int, dict[int, CacheEntry], Subtable]] = []
        self._by_ufid: dict[Ufid, CacheEntry] = {}
        self._emc: dict[int, CacheEntry] = {}
        self._countdown = rerank_every
        self.emc_hits = 0
        self.subtable_hits = 0
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
        self._countdown -= 1
        if self._countdown <= 0:
            self.rerank()
        for mask, table, st in self._ranked:
            e = table.get(key & mask)
            if e is not None:
                st.hits += 1
                self.subtable_hits += 1
                if self.emc_size:
                    emc = self._emc
                    if len(emc) >= self.emc_size:
                        del emc[next(iter(emc))]
                    emc[key] = e
                return e
        self.misses += 1
        return None

    def lookup_nocache(self, key: int) -> CacheEntry | None:
        """Tuple-space search only (no EMC, no stats): for oracles and benchmarks."""
        for mask, table, _ in self._ranked:
            e = table.get(key & mask)
            if e is not None:
                return e
        return None

    def rerank(self) -> None:
        """Probe the subtables with most recent hits first; age the counts."""
        self._countdown = self.rerank_every
        self._ranked.sort(key=lambda t: t[2].hits, reverse=True)
        for _, _, st in self._ranked:
            st.hits >>= 1

    # -- changes -------------------------------------------------------------

    def insert(self, ufid: Ufid, match: Match, actions: Actions) -> CacheEntry:
        """Install a megaflow.  FlowExists if the ufid is there or ``match``
        overlaps an installed megaflow; FlowLimit when full."""
        if ufid in self._by_ufid:
            raise FlowExists("a flow with this ufid is installed", ufid=str(ufid))
        for st in self._subtables.values():
            if st.overlaps(match):
                other = self._find_overlap(st, match)
                raise FlowExists("megaflow overlaps an installed flow", ufid=str(ufid),
                                 other=str(other.ufid) if other else None)
        if len(self._by_ufid) >= self.flow_limit:
            raise FlowLimit("software datapath flow limit reached", limit=self.flow_limit)
        sub = self._subtables.get(match.mask)
        if sub is None:
            sub = self._subtables[match.mask] = Subtable(match.mask)
            self._ranked.append((sub.mask, sub.table, sub))
        e = CacheEntry(ufid, match, actions)
        sub.add(e)
        self._by_ufid[ufid] = e
        return e

    @staticmethod
    def _find_overlap(st: Subtable, match: Match) -> CacheEntry | None:
        """The entry ``match`` overlaps (slow; for the error message only)."""
        for e in st.table.values():
            if e.match.overlaps(match):
                return e
        return None

    def remove(self, ufid: Ufid) -> CacheEntry:
        """Remove a megaflow; FlowNotFound if there is none.  Returns it, dead."""
        e = self._by_ufid.pop(ufid, None)
        if e is None:
            raise FlowNotFound("no flow with this ufid", ufid=str(ufid))
        e.dead = True
        st = self._subtables[e.match.mask]
        st.remove(e)
        if not st.table:
            del self._subtables[st.mask]
            self._ranked = [t for t in self._ranked if t[2] is not st]
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
    def masks(self) -> list[int]:
        """Subtable masks in the current probe order."""
        return [m for m, _, _ in self._ranked]

    @property
    def emc_len(self) -> int:
        return len(self._emc)
