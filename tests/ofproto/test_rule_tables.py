"""FlowTables: add/replace, modify and delete (loose, strict, cookie, out_port), stats, expiry."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpif.errors import ValidationError
from ofproto import ofactions as A
from ofproto.offields import OfMatch
from ofproto.rule import Rule, RuleSelector
from ofproto.ruletext import parse_match, parse_rule
from ofproto.tables import FlowTables, TableChange


def tables(*lines: str) -> FlowTables:
    t = FlowTables()
    for line in lines:
        t.add(parse_rule(line))
    return t


def texts(t: FlowTables) -> set[str]:
    from ofproto.ruletext import format_rule
    return {format_rule(r).strip() for _, r in t.rules()}


def test_add_replaces_identical_and_resets_counters() -> None:
    t = FlowTables()
    a = t.add(parse_rule("priority=10,ip,actions=output:1"), now=1.0)
    t.credit(a, 3, 300, used=2.0)
    b = t.add(parse_rule("priority=10,ip,actions=output:2"), now=5.0)
    assert a != b and b > a and a not in t and len(t) == 1
    assert t.get(b).actions == (A.Output(2),)
    assert (t.stats(b).n_packets, t.stats(b).created) == (0, 5.0)
    # another priority or table is another rule
    t.add(parse_rule("priority=11,ip,actions=output:2"))
    t.add(parse_rule("table=1,priority=10,ip,actions=output:2"))
    assert len(t) == 3
    assert [r.priority for _, r in t.rules(0)] == [11, 10]


def test_version_and_listeners() -> None:
    t = FlowTables()
    seen: list[TableChange] = []
    t.subscribe(seen.append)
    v0 = t.version
    rid = t.add(parse_rule("ip,actions=drop"))
    t.add(parse_rule("ip,actions=output:1"))  # replace: remove + add
    assert [(c.kind, c.reason) for c in seen] == [("add", ""), ("remove", "replace"),
                                                  ("add", "")]
    assert seen[1].rule_id == rid
    v1 = t.version
    assert v1 > v0
    t.credit(seen[-1].rule_id, 1, 1, 1.0)
    assert t.version == v1  # counters are not a change
    assert t.delete(parse_match("arp")) == [] and t.version == v1  # nothing removed
    t.modify(parse_match("ip,actions=output:3", modify=True))
    assert t.version == v1 + 1 and seen[-1].kind == "modify"
    assert seen[-1].old is not None and seen[-1].old.actions == (A.Output(1),)


def test_delete_loose_vs_strict() -> None:
    t = tables("priority=5,ip,actions=drop",
               "priority=6,tcp,tp_dst=80,actions=drop",
               "priority=7,ip,nw_src=10.0.0.0/8,actions=drop",
               "priority=8,arp,actions=drop",
               "table=1,ip,actions=drop")
    # strict: same match and priority only
    assert t.delete(parse_match("priority=6,ip"), strict=True) == []
    gone = t.delete(parse_match("priority=5,ip,table=0"), strict=True)
    assert [r.priority for _, r in gone] == [5]
    # loose: every rule at least as specific, in every table when none given
    gone = t.delete(parse_match("ip"))
    assert sorted((r.table, r.priority) for _, r in gone) == [(0, 6), (0, 7), (1, 32768)]
    assert texts(t) == {"priority=8,arp actions=drop"}
    t.delete(parse_match(""))
    assert len(t) == 0


def test_loose_is_subset_not_overlap() -> None:
    t = tables("ip,nw_src=10.0.0.0/8,actions=drop", "ip,nw_src=10.1.0.0/16,actions=drop")
    # /16 selector does not take the /8 rule (less specific), only the /16
    gone = t.delete(parse_match("ip,nw_src=10.1.0.0/16"))
    assert [r.match.get("nw_src")[1] for _, r in gone] == [0xFFFF0000]


def test_cookie_masks() -> None:
    t = tables("priority=1,cookie=0x15,ip,actions=drop", "priority=2,cookie=0x25,ip,actions=drop",
               "priority=3,cookie=0x31,ip,actions=drop")
    gone = t.delete(parse_match("cookie=0x5/0xf"))
    assert sorted(r.cookie for _, r in gone) == [0x15, 0x25]
    assert t.delete(parse_match("cookie=0x30/-1")) == []
    assert [r.cookie for _, r in t.delete(parse_match("cookie=0x31/-1"))] == [0x31]


def test_out_port_filter() -> None:
    t = tables("priority=1,actions=output:1", "priority=2,actions=output:2,LOCAL",
               "priority=3,actions=NORMAL")
    assert [r.priority for _, r in t.delete(parse_match("out_port=2"))] == [2]
    assert [r.priority for _, r in t.delete(parse_match("out_port=NORMAL"))] == [3]


def test_modify_loose_strict_cookie_and_counters() -> None:
    t = FlowTables()
    a = t.add(parse_rule("priority=5,cookie=0x1,idle_timeout=7,tcp,actions=output:1"))
    b = t.add(parse_rule("priority=6,tcp,tp_dst=80,actions=output:1"))
    c = t.add(parse_rule("priority=7,arp,actions=output:1"))
    t.credit(a, 5, 500, 3.0)
    ids = t.modify(parse_match("tcp,actions=output:9", modify=True))
    assert sorted(ids) == [a, b]
    assert t.get(a).actions == (A.Output(9),) and t.get(c).actions == (A.Output(1),)
    assert t.get(a).idle_timeout == 7 and t.get(a).cookie == 1  # kept
    assert t.stats(a).n_packets == 5  # counters kept
    # strict needs the priority; new cookie without mask is written
    assert t.modify(parse_match("tcp,cookie=0x9,actions=drop", modify=True), strict=True) == []
    assert t.modify(parse_match("priority=5,tcp,cookie=0x9,actions=drop", modify=True),
                    strict=True) == [a]
    assert (t.get(a).cookie, t.get(a).actions) == (9, ())
    # reset_counts
    t.modify(parse_match("priority=5,tcp,reset_counts,actions=drop", modify=True),
             strict=True, now=4.0)
    assert (t.stats(a).n_packets, t.stats(a).created) == (0, 4.0)
    # cookie mask selects
    assert t.modify(parse_match("cookie=0x9/0xff,actions=output:3", modify=True)) == [a]
    # nothing matched: no add unless asked
    assert t.modify(parse_match("udp,actions=drop", modify=True)) == []
    added = t.modify(parse_match("udp,actions=drop", modify=True), add_if_missing=True)
    assert len(added) == 1 and t.get(added[0]).match == parse_match("udp").match


def test_check_overlap() -> None:
    t = tables("priority=5,ip,nw_src=10.0.0.0/8,actions=drop")
    with pytest.raises(ValidationError, match="overlaps"):
        t.add(parse_rule("priority=5,ip,nw_dst=1.2.3.4,check_overlap,actions=drop"))
    t.add(parse_rule("priority=6,ip,nw_dst=1.2.3.4,check_overlap,actions=drop"))
    t.add(parse_rule("priority=5,ip,nw_src=11.0.0.0/8,check_overlap,actions=drop"))


def test_timeouts() -> None:
    t = FlowTables()
    idle = t.add(parse_rule("idle_timeout=10,ip,actions=drop"), now=0.0)
    hard = t.add(parse_rule("hard_timeout=30,arp,actions=drop"), now=0.0)
    both = t.add(parse_rule("idle_timeout=5,hard_timeout=8,ipv6,actions=drop"), now=0.0)
    t.add(parse_rule("tcp,actions=drop"), now=0.0)
    assert t.expire(4.9) == []
    t.credit(idle, 1, 60, used=4.0)
    t.credit(both, 1, 60, used=4.0)
    assert t.expire(9.0) != [] and both not in t  # hard 8 s, even though used at 4 s
    assert idle in t  # used at 4 s: idle until 14 s
    v = t.version
    assert [r.idle_timeout for r in t.expire(14.0)] == [10] and t.version == v + 1
    assert hard in t
    assert [r.hard_timeout for r in t.expire(30.0)] == [30]
    assert len(t) == 1  # no timeout: stays


def test_credit_gone_rule() -> None:
    t = FlowTables()
    rid = t.add(parse_rule("ip,actions=drop"))
    t.delete_id(rid)
    assert t.credit(rid, 1, 1, 1.0) is False


def test_table_range() -> None:
    t = FlowTables(n_tables=4)
    with pytest.raises(ValidationError):
        t.add(parse_rule("table=4,actions=drop"))


# --- loose selection against its definition -----------------------------------
# A rule is selected loosely iff every flow it matches also matches the selector.
# Checked by enumerating a small flow space (reg0 and reg1, 3 bits each).

small = st.tuples(st.integers(0, 7), st.integers(0, 7)).map(lambda vm: (vm[0] & vm[1], vm[1]))


def _m(r0: tuple[int, int], r1: tuple[int, int]) -> OfMatch:
    return OfMatch.build(reg0=r0, reg1=r1)


@given(st.lists(st.tuples(small, small), min_size=1, max_size=8), small, small)
def test_loose_selection_oracle(rules: list[tuple[tuple[int, int], tuple[int, int]]],
                                s0: tuple[int, int], s1: tuple[int, int]) -> None:
    t = FlowTables()
    for i, (r0, r1) in enumerate(rules):
        t.add(Rule(_m(r0, r1), priority=i))
    sel = _m(s0, s1)
    flows = [OfMatch.build(reg0=a, reg1=b).key for a, b in itertools.product(range(8), repeat=2)]
    expect = {rid for rid, r in t.rules()
              if all(sel.matches(f) for f in flows if r.match.matches(f))}
    assert set(t.select(RuleSelector(sel))) == expect
