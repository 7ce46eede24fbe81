"""The classifier against a linear scan, and the wildcard contract, on a toy layout.

Toy key layout (low bits first): a:8 | b:8 (stage 0: "metadata"),
c:8 (stage 1), addr:16 (stage 2, prefix-tracked), d:8 (stage 3).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ofproto.classifier import Classifier, Layout, PrefixTrie, TrieField

A, B, C, ADDR, D = (0, 8), (8, 8), (16, 8), (24, 16), (40, 8)
KEY_BITS = 48


def fm(f: tuple[int, int]) -> int:
    return ((1 << f[1]) - 1) << f[0]


TRIE = TrieField("addr", ADDR[0], ADDR[1])
LAYOUT = Layout(stages=(fm(A) | fm(B), fm(C), fm(ADDR), fm(D)), tries=(TRIE,))


def prefix(plen: int) -> int:
    return TRIE.prefix_mask(plen)


# A rule: per field either wildcarded or exact from a small value space (so
# that rules and packets collide often); addr gets a prefix length.
small = st.integers(0, 3)


@st.composite
def rules(draw: st.DrawFn) -> tuple[int, int, int]:
    key = mask = 0
    for f in (A, B, C, D):
        if draw(st.booleans()):
            mask |= fm(f)
            key |= draw(small) << f[0]
    plen = draw(st.sampled_from([0, 0, 4, 8, 12, 14, 16]))
    if plen:
        mask |= prefix(plen)
        key |= (draw(st.integers(0, 0xFFFF)) << ADDR[0]) & prefix(plen)
    if draw(st.integers(0, 9)) == 0:  # an occasional non-prefix mask
        m = draw(st.integers(1, 0xFFFF)) << ADDR[0]
        mask = (mask & ~fm(ADDR)) | m
        key = (key & ~fm(ADDR)) | ((draw(st.integers(0, 0xFFFF)) << ADDR[0]) & m)
    return key, mask, draw(st.integers(0, 5))


@st.composite
def packets(draw: st.DrawFn) -> int:
    k = 0
    for f in (A, B, C, D):
        k |= draw(small) << f[0]
    return k | (draw(st.integers(0, 0xFFFF)) << ADDR[0])


def build(rs: list[tuple[int, int, int]]) -> Classifier[int]:
    cls: Classifier[int] = Classifier(LAYOUT)
    for i, (k, m, p) in enumerate(rs):
        cls.insert(i, i, k, m, p)
    return cls


@settings(max_examples=300, deadline=None)
@given(st.lists(rules(), max_size=25), st.lists(packets(), min_size=1, max_size=10))
def test_lookup_equals_linear_scan(rs: list[tuple[int, int, int]], ps: list[int]) -> None:
    cls = build(rs)
    for p in ps:
        got, _ = cls.lookup(p)
        assert got == cls.lookup_linear(p)


@settings(max_examples=300, deadline=None)
@given(st.lists(rules(), max_size=25), packets(),
       st.lists(st.integers(0, (1 << KEY_BITS) - 1), min_size=1, max_size=20))
def test_wildcards_are_sound(rs: list[tuple[int, int, int]], p: int, noise: list[int]) -> None:
    """Every flow agreeing with p on the consulted bits gets p's answer."""
    cls = build(rs)
    got, wc = cls.lookup(p)
    for n in noise:
        q = (p & wc) | (n & ~wc)
        assert cls.lookup_linear(q) == got


@settings(max_examples=100, deadline=None)
@given(st.lists(rules(), min_size=1, max_size=25), st.data())
def test_remove_keeps_index_consistent(rs: list[tuple[int, int, int]], data: st.DataObject) -> None:
    cls = build(rs)
    gone = data.draw(st.sets(st.integers(0, len(rs) - 1)))
    for i in gone:
        assert cls.remove(i) == i
    assert len(cls) == len(rs) - len(gone)
    for _ in range(5):
        p = data.draw(packets())
        got, wc = cls.lookup(p)
        assert got == cls.lookup_linear(p)
        assert got is None or got[0] not in gone


def test_tie_break_is_oldest_rule() -> None:
    cls: Classifier[str] = Classifier(LAYOUT)
    cls.insert(5, "new", 1 << C[0], fm(C), 10)
    cls.insert(2, "old", 1, fm(A), 10)
    got, wc = cls.lookup(1 | (1 << C[0]))
    assert got == (2, "old")
    assert wc & fm(C)  # both consulted: the tie-break depends on both


def test_staged_lookup_stops_at_first_missing_stage() -> None:
    cls: Classifier[str] = Classifier(LAYOUT)
    # a=1, c=2, d=3
    cls.insert(1, "r", 1 | (2 << C[0]) | (3 << D[0]), fm(A) | fm(C) | fm(D), 5)
    got, wc = cls.lookup(0)  # a differs: only stage 0 consulted
    assert got is None and wc == fm(A)
    got, wc = cls.lookup(1)  # a ok, c differs: stages 0..1
    assert got is None and wc == fm(A) | fm(C)
    got, wc = cls.lookup(1 | (2 << C[0]))  # final probe misses on d: whole mask
    assert got is None and wc == fm(A) | fm(C) | fm(D)


def test_prefix_tracking_avoids_exact_address() -> None:
    cls: Classifier[str] = Classifier(LAYOUT)
    net = 0x0A00 << ADDR[0]  # "10.0" /8 in the 16-bit toy address
    cls.insert(1, "/8", net, prefix(8), 10)
    cls.insert(2, "any", 0, 0, 0)
    got, wc = cls.lookup(net | (0x05 << ADDR[0]))
    assert got == (1, "/8")
    assert wc & fm(ADDR) == prefix(8)
    # add a /16 host route: a packet that is not that host reads 1 bit past
    # the point where it leaves the host's path, not all 16 bits.
    cls.insert(3, "/16", net | (0x01 << ADDR[0]), prefix(16), 20)
    got, wc = cls.lookup(net | (0x80 << ADDR[0]))
    assert got == (1, "/8")
    assert wc & fm(ADDR) == prefix(9)
    got, wc = cls.lookup(net | (0x01 << ADDR[0]))
    assert got == (3, "/16") and wc & fm(ADDR) == prefix(16)


def test_trie_lookup_reports_bits_read() -> None:
    t = PrefixTrie(8)
    t.insert(0b1010_0000, 4)
    assert t.lookup(0b1010_1111) == (frozenset({4}), 5)
    assert t.lookup(0b0000_0000) == (frozenset(), 1)
    t.insert(0b1010_0000, 4)
    t.remove(0b1010_0000, 4)
    assert t.lookup(0b1010_0001) == (frozenset({4}), 5)
    t.remove(0b1010_0000, 4)
    assert len(t) == 0 and t.lookup(0b1010_0001) == (frozenset(), 1)


def test_prefix_len() -> None:
    assert TRIE.prefix_len(prefix(12)) == 12
    assert TRIE.prefix_len(0) == 0
    assert TRIE.prefix_len(0x00F0 << ADDR[0]) is None
