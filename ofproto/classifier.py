"""The OpenFlow classifier: highest-priority rule lookup that reports what it read.

Theory of operation
-------------------
Vocabulary first (after OVS's ``lib/classifier.h``):

key
    a packet's flow, one packed int (``ofproto.offields``: the dpif key in
    the low bits, then ``metadata`` and the registers).
rule
    (key, mask, priority): matches a flow ``f`` when ``f & mask == key``.
wildcards (wc)
    a mask of the bits a lookup *consulted*.  A lookup of flow ``p`` returns
    a rule ``r`` and ``wc``; the contract is that every flow ``q`` with
    ``q & wc == p & wc`` gets the same answer ``r``.  The caller ORs ``wc``
    into the megaflow mask.  An extra bit in ``wc`` is safe (the megaflow
    gets narrower); a missing bit is a bug (a packet would get another
    packet's actions).

Tuple space search.  Rules are grouped into *subtables*, one per distinct
mask.  Looking a flow up in a subtable is one dict probe of ``flow & mask``;
a table lookup probes the subtables in order of their highest rule priority
and stops as soon as the best rule found so far outranks every rule of the
remaining subtables.  A hit in a subtable consults the subtable's whole mask.

Staged lookup.  A miss would consult the whole mask too, which makes
megaflows needlessly exact: a packet that misses ``tcp,tp_dst=80`` because
it is not TCP should not get a megaflow exact on its ports.  So each
subtable also keeps, for each *stage* boundary, the set of its rules' keys
cut down to the fields of the stages up to there.  Stages are (after OVS)
metadata, L2, L3, L4; the cumulative stage masks of a subtable are
``mask & (stage_0 | .. | stage_i)``.  The probe goes stage by stage and, on
the first stage whose cut key is absent, stops: the subtable cannot match
any flow that agrees with this one on the stages seen so far, so only those
bits are consulted.

Prefix tracking.  For address fields (ipv4/ipv6 src/dst) the classifier
keeps a binary trie of every rule's prefix (rules whose mask on that field
is a CIDR prefix, length > 0).  Walking the packet's address down the trie
yields the set of prefix lengths that match it and the number of leading
bits the walk had to read (the depth where it fell off, plus the bit that
made it fall off).  When a subtable's prefix length on that field is not in
the set, no rule of the subtable can match, and the only bits this decision
depends on are the leading bits the walk read -- so a packet that misses a
``/32`` rule next to a ``/24`` one gets a megaflow of e.g. ``/30`` on that
field instead of ``/32``.  The trie is consulted at the stage holding the
field, before that stage's probe, as OVS does.

Ties.  Two overlapping rules of equal priority are unordered in OpenFlow; we
make the answer deterministic (the smaller ``rule_id`` wins, i.e. the older
rule), and visit every subtable whose top priority equals the best found so
far, so the tie-break is covered by ``wc`` as well.

The classifier is a pure index: it stores whatever rule object it is given,
never looks inside it, and has no side effects on lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TrieField:
    """An address field tracked with a prefix trie: bit range of the key."""

    name: str
    offset: int
    bits: int

    @property
    def field_mask(self) -> int:
        return ((1 << self.bits) - 1) << self.offset

    def prefix_len(self, mask: int) -> int | None:
        """The CIDR length of ``mask`` on this field, or None if not a prefix."""
        m = (mask >> self.offset) & ((1 << self.bits) - 1)
        inv = ~m & ((1 << self.bits) - 1)
        if inv & (inv + 1):  # the wildcarded bits must be the low ones
            return None
        return self.bits - inv.bit_length()

    def prefix_mask(self, plen: int) -> int:
        """The key-layout mask of the first ``plen`` bits of this field."""
        if plen <= 0:
            return 0
        plen = min(plen, self.bits)
        return (((1 << plen) - 1) << (self.bits - plen)) << self.offset


@dataclass(frozen=True, slots=True)
class Layout:
    """How keys are cut for staged lookup and which fields get prefix tries.

    ``stages`` are disjoint masks in lookup order; bits in no stage belong to
    the last stage.
    """

    stages: tuple[int, ...]
    tries: tuple[TrieField, ...] = ()


class PrefixTrie:
    """Binary trie of (value, length) prefixes of one field, with counts."""

    __slots__ = ("bits", "_nodes", "_ends")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._nodes: dict[tuple[int, int], int] = {}  # (depth, top bits) -> prefixes below
        self._ends: dict[tuple[int, int], int] = {}  # (len, top bits) -> prefixes ending here

    def __len__(self) -> int:
        return sum(self._ends.values())

    def insert(self, value: int, plen: int) -> None:
        for d in range(1, plen + 1):
            k = (d, value >> (self.bits - d))
            self._nodes[k] = self._nodes.get(k, 0) + 1
        k = (plen, value >> (self.bits - plen))
        self._ends[k] = self._ends.get(k, 0) + 1

    def remove(self, value: int, plen: int) -> None:
        for d in range(1, plen + 1):
            k = (d, value >> (self.bits - d))
            n = self._nodes[k] - 1
            if n:
                self._nodes[k] = n
            else:
                del self._nodes[k]
        k = (plen, value >> (self.bits - plen))
        n = self._ends[k] - 1
        if n:
            self._ends[k] = n
        else:
            del self._ends[k]

    def lookup(self, value: int) -> tuple[frozenset[int], int]:
        """(prefix lengths matching ``value``, leading bits read to know that)."""
        matched: list[int] = []
        nodes, ends, bits = self._nodes, self._ends, self.bits
        for d in range(1, bits + 1):
            k = (d, value >> (bits - d))
            if k not in nodes:
                return frozenset(matched), d
            if k in ends:
                matched.append(d)
        return frozenset(matched), bits


@dataclass(slots=True)
class _Entry(Generic[R]):
    rule_id: int
    rule: R
    key: int
    mask: int
    priority: int

    @property
    def rank(self) -> tuple[int, int]:
        """Sort key: higher priority first, then older rule first."""
        return (-self.priority, self.rule_id)


class _Subtable(Generic[R]):
    """All rules with one mask: a bucket dict plus staged-lookup key sets."""

    def __init__(self, mask: int, layout: Layout) -> None:
        self.mask = mask
        cum, stages = 0, list[int]()
        for s in layout.stages:
            cum |= s
            m = mask & cum
            if m and m != mask and (not stages or stages[-1] != m):
                stages.append(m)
        self.stage_masks: tuple[int, ...] = tuple(stages)
        self.stage_sets: tuple[dict[int, int], ...] = tuple({} for _ in stages)
        # Trie checks: for each stage index (len(stage_masks) is the final
        # probe), the (trie index, prefix length) pairs first visible there.
        checks: list[list[tuple[int, int]]] = [[] for _ in range(len(stages) + 1)]
        for ti, tf in enumerate(layout.tries):
            if not mask & tf.field_mask:
                continue
            plen = tf.prefix_len(mask)
            if plen is None or plen == 0:
                continue
            at = next((i for i, m in enumerate(stages) if m & tf.field_mask), len(stages))
            checks[at].append((ti, plen))
        self.trie_checks: tuple[tuple[tuple[int, int], ...], ...] = tuple(
            tuple(c) for c in checks)
        self.buckets: dict[int, list[_Entry[R]]] = {}
        self.count = 0
        self.max_priority = -1

    def insert(self, e: _Entry[R]) -> None:
        for m, s in zip(self.stage_masks, self.stage_sets):
            k = e.key & m
            s[k] = s.get(k, 0) + 1
        bucket = self.buckets.setdefault(e.key, [])
        bucket.append(e)
        bucket.sort(key=lambda x: x.rank)
        self.count += 1
        self.max_priority = max(self.max_priority, e.priority)

    def remove(self, e: _Entry[R]) -> None:
        for m, s in zip(self.stage_masks, self.stage_sets):
            k = e.key & m
            n = s[k] - 1
            if n:
                s[k] = n
            else:
                del s[k]
        bucket = self.buckets[e.key]
        bucket.remove(e)
        if not bucket:
            del self.buckets[e.key]
        self.count -= 1
        if e.priority == self.max_priority:
            self.max_priority = max((b[0].priority for b in self.buckets.values()), default=-1)


class Classifier(Generic[R]):
    """One flow table's rules, looked up by priority with consulted wildcards."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._subtables: dict[int, _Subtable[R]] = {}
        self._order: list[_Subtable[R]] | None = []
        self._entries: dict[int, _Entry[R]] = {}
        self._tries = tuple(PrefixTrie(tf.bits) for tf in layout.tries)

    # -- maintenance -------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rule_id: int) -> bool:
        return rule_id in self._entries

    def rules(self) -> Iterator[tuple[int, R]]:
        for rid, e in self._entries.items():
            yield rid, e.rule

    def insert(self, rule_id: int, rule: R, key: int, mask: int, priority: int) -> None:
        """Add a rule (replacing one with the same ``rule_id``)."""
        if key & ~mask:
            raise ValueError("rule key has bits outside its mask")
        if rule_id in self._entries:
            self.remove(rule_id)
        e = _Entry(rule_id, rule, key, mask, priority)
        st = self._subtables.get(mask)
        if st is None:
            st = self._subtables[mask] = _Subtable(mask, self.layout)
        st.insert(e)
        self._entries[rule_id] = e
        for tf, trie in zip(self.layout.tries, self._tries):
            plen = tf.prefix_len(mask)
            if plen:
                trie.insert((key >> tf.offset) & ((1 << tf.bits) - 1), plen)
        self._order = None

    def remove(self, rule_id: int) -> R:
        e = self._entries.pop(rule_id)
        st = self._subtables[e.mask]
        st.remove(e)
        if not st.count:
            del self._subtables[e.mask]
        for tf, trie in zip(self.layout.tries, self._tries):
            plen = tf.prefix_len(e.mask)
            if plen:
                trie.remove((e.key >> tf.offset) & ((1 << tf.bits) - 1), plen)
        self._order = None
        return e.rule

    def clear(self) -> None:
        for rid in list(self._entries):
            self.remove(rid)

    def _sorted(self) -> list[_Subtable[R]]:
        if self._order is None:
            self._order = sorted(self._subtables.values(), key=lambda s: -s.max_priority)
        return self._order

    @property
    def n_subtables(self) -> int:
        return len(self._subtables)

    # -- lookup ------------------------------------------------------------

    def lookup(self, flow: int) -> tuple[tuple[int, R] | None, int]:
        """Best rule for ``flow`` as (rule_id, rule), or None; and the wildcards read."""
        wc = 0
        best: _Entry[R] | None = None
        trie_results: dict[int, tuple[frozenset[int], int]] = {}
        for st in self._sorted():
            if best is not None and st.max_priority < best.priority:
                break
            found, read = self._probe(st, flow, trie_results)
            wc |= read
            if found is not None and (best is None or found.rank < best.rank):
                best = found
        if best is None:
            return None, wc
        return (best.rule_id, best.rule), wc

    def _probe(self, st: _Subtable[R], flow: int,
               trie_results: dict[int, tuple[frozenset[int], int]]
               ) -> tuple[_Entry[R] | None, int]:
        n = len(st.stage_masks)
        for i in range(n + 1):
            for ti, plen in st.trie_checks[i]:
                res = trie_results.get(ti)
                if res is None:
                    tf = self.layout.tries[ti]
                    res = self._tries[ti].lookup((flow >> tf.offset) & ((1 << tf.bits) - 1))
                    trie_results[ti] = res
                plens, nbits = res
                if plen not in plens:
                    return None, self.layout.tries[ti].prefix_mask(nbits)
            if i < n:
                m = st.stage_masks[i]
                if (flow & m) not in st.stage_sets[i]:
                    return None, m
        bucket = st.buckets.get(flow & st.mask)
        return (bucket[0] if bucket else None), st.mask

    def lookup_linear(self, flow: int) -> tuple[int, R] | None:
        """The oracle: a linear scan for the best matching rule."""
        best: _Entry[R] | None = None
        for e in self._entries.values():
            if flow & e.mask == e.key and (best is None or e.rank < best.rank):
                best = e
        return None if best is None else (best.rule_id, best.rule)



# -- the OpenFlow layout and a multi-table pipeline ---------------------------------

_STAGE_FIELDS: tuple[tuple[str, ...], ...] = (
    # metadata (plus every OF-only field: metadata, registers)
    ("recirc_id", "dp_hash", "skb_mark", "in_port", "ct_state", "ct_zone", "ct_mark",
     "tun_id", "tun_ipv4_src", "tun_ipv4_dst", "tun_ipv6_src", "tun_ipv6_dst", "tun_tos",
     "tun_ttl", "tun_tp_src", "tun_tp_dst", "tun_flags"),
    ("eth_src", "eth_dst", "vlan_tpid", "vlan_vid", "vlan_pcp", "cvlan_tpid", "cvlan_vid",
     "cvlan_pcp", "eth_type", "mpls_label", "mpls_tc", "mpls_ttl", "mpls_bos"),
    ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha", "ipv4_src", "ipv4_dst",
     "ipv6_src", "ipv6_dst", "ipv6_label", "ip_proto", "ip_tos", "ip_ttl", "ip_frag"),
    ("tp_src", "tp_dst", "tcp_flags", "icmp_type", "icmp_code", "nd_target", "nd_sll",
     "nd_tll"),
)
TRIE_FIELDS = ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst")


def of_layout() -> Layout:
    """Stages metadata, L2, L3, L4 over the OF flow; tries on the IP addresses."""
    from dpif.fields import BY_NAME, FIELDS
    from ofproto.offields import OF_ONLY_MASK

    stages = []
    for names in _STAGE_FIELDS:
        m = 0
        for n in names:
            m |= BY_NAME[n].field_mask
        stages.append(m)
    stages[0] |= OF_ONLY_MASK
    staged = 0
    for m in stages:
        staged |= m
    missing = [f.name for f in FIELDS if not f.field_mask & staged]
    assert not missing, f"fields in no lookup stage: {missing}"
    tries = tuple(TrieField(n, BY_NAME[n].offset, BY_NAME[n].bits) for n in TRIE_FIELDS)
    return Layout(tuple(stages), tries)


class Pipeline(Generic[R]):
    """One ``Classifier`` per table; ``lookup(table, flow)`` as translation wants it."""

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout or of_layout()
        self.tables: dict[int, Classifier[R]] = {}
        self._where: dict[int, int] = {}  # rule id -> table

    def insert(self, table: int, rule_id: int, rule: R, key: int, mask: int,
               priority: int) -> None:
        if rule_id in self._where:
            self.remove(rule_id)
        cls = self.tables.get(table)
        if cls is None:
            cls = self.tables[table] = Classifier(self.layout)
        cls.insert(rule_id, rule, key, mask, priority)
        self._where[rule_id] = table

    def remove(self, rule_id: int) -> R:
        return self.tables[self._where.pop(rule_id)].remove(rule_id)

    def __contains__(self, rule_id: int) -> bool:
        return rule_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def rule_ids(self) -> set[int]:
        return set(self._where)

    def lookup(self, table: int, flow: int) -> tuple[tuple[int, R] | None, int]:
        cls = self.tables.get(table)
        if cls is None:
            return None, 0
        return cls.lookup(flow)
