"""Property tests: printing then parsing gives back the same rule (and value, and match)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ofproto import ofactions as A
from ofproto.actiontext import MOD_ACTIONS, format_actions, parse_actions
from ofproto.offields import BY_NAME, BY_NXM, OF_FIELDS, OfField, OfFmt, OfMatch
from ofproto.ofvalues import FRAG_SPELLINGS, format_value, parse_value
from ofproto.rule import FLOW_FLAGS, Rule, RuleStats
from ofproto.ruletext import SHORTHANDS, format_match, format_rule, parse_match, parse_rule

REAL = [f for f in OF_FIELDS if not f.virtual]
CONTEXTS: list[tuple[int, int | None] | None] = [None] + [(t, p) for _, t, p in SHORTHANDS]
WRITABLE_NAMES = sorted({n for n, f in {**BY_NAME, **BY_NXM}.items() if not f.virtual})


@st.composite
def raw_value(draw: st.DrawFn, f: OfField) -> tuple[int, int]:
    full = f.all_ones
    if f.fmt is OfFmt.FRAG and draw(st.booleans()):
        _, v, m = draw(st.sampled_from(FRAG_SPELLINGS))
        return v, m
    if not f.maskable:
        m = full
    elif f.fmt in (OfFmt.IPV4, OfFmt.IPV6) and draw(st.booleans()):
        plen = draw(st.integers(1, f.bits))
        m = (full << (f.bits - plen)) & full
    else:
        m = draw(st.one_of(st.just(full), st.integers(1, full)))
    return draw(st.integers(0, full)) & m, m


@st.composite
def of_matches(draw: st.DrawFn) -> OfMatch:
    m = OfMatch.catchall()
    ctx = draw(st.sampled_from(CONTEXTS))
    if ctx is not None:
        t, proto = ctx
        m = m.with_field("dl_type", t)
        if proto is not None:
            m = m.with_field("nw_proto", proto)
        elif t in (0x0800, 0x86DD) and draw(st.booleans()):
            m = m.with_field("nw_proto", draw(st.integers(0, 255)))
    cands = [f for f in REAL if f.name not in ("dl_type", "nw_proto") and m.prereqs_ok(f.name)]
    for f in draw(st.lists(st.sampled_from(cands), max_size=6, unique_by=lambda f: f.name)):
        v, mask = draw(raw_value(f))
        m = m.with_field(f.name, v, mask)
    if draw(st.booleans()):
        tm = draw(st.integers(1, 0xFFFF))
        m = m.with_field("vlan_tci", draw(st.integers(0, 0xFFFF)) & tm, tm)
    return m


@st.composite
def set_fields(draw: st.DrawFn, names: list[str] | None = None) -> A.SetField:
    kind = draw(st.sampled_from(["set_field", "load", "mod"]))
    if kind == "mod" and names is None:
        spelling = draw(st.sampled_from(sorted(MOD_ACTIONS)))
        f = BY_NAME[MOD_ACTIONS[spelling]]
        return A.SetField(f.name, draw(st.integers(0, f.all_ones)), f.all_ones, spelling)
    name = draw(st.sampled_from(names or WRITABLE_NAMES))
    f = BY_NAME.get(name) or BY_NXM[name]
    if kind == "load":
        ofs = draw(st.integers(0, f.bits - 1))
        n = draw(st.integers(1, f.bits - ofs))
        mask = ((1 << n) - 1) << ofs
        return A.SetField(name, draw(st.integers(0, (1 << n) - 1)) << ofs, mask, "load")
    m = f.all_ones if not f.maskable else draw(st.one_of(st.just(f.all_ones),
                                                         st.integers(1, f.all_ones)))
    return A.SetField(name, draw(st.integers(0, f.all_ones)) & m, m)


@st.composite
def field_refs(draw: st.DrawFn, n_bits: int | None = None) -> A.FieldRef:
    names = [n for n in WRITABLE_NAMES
             if (BY_NAME.get(n) or BY_NXM[n]).bits >= (n_bits or 1)]
    name = draw(st.sampled_from(names))
    bits = (BY_NAME.get(name) or BY_NXM[name]).bits
    n = n_bits or draw(st.integers(1, bits))
    return A.FieldRef(name, draw(st.integers(0, bits - n)), n)


@st.composite
def moves(draw: st.DrawFn) -> A.Move:
    src = draw(field_refs())
    dst = draw(field_refs(src.n_bits))
    return A.Move(src.field, src.ofs, dst.field, dst.ofs, src.n_bits)


@st.composite
def nats(draw: st.DrawFn) -> A.Nat:
    kind = draw(st.sampled_from([None, "src", "dst"]))
    if kind is None:
        return A.Nat()
    flags = tuple(draw(st.lists(st.sampled_from(A.NAT_FLAGS), unique=True)))
    if not draw(st.booleans()):
        return A.Nat(kind, flags=flags)
    v6 = draw(st.booleans())
    addr = st.ip_addresses(v=6 if v6 else 4).map(str)
    lo = draw(addr)
    hi = draw(st.one_of(st.none(), addr.filter(lambda a: a != lo)))
    pmin = draw(st.one_of(st.none(), st.integers(1, 65534)))
    pmax = None if pmin is None else draw(st.one_of(st.none(), st.integers(pmin + 1, 65535)))
    return A.Nat(kind, lo, hi, pmin, pmax, flags)


@st.composite
def cts(draw: st.DrawFn) -> A.Ct:
    commit = draw(st.booleans())
    zone = draw(st.one_of(st.integers(0, 0xFFFF), field_refs(16)))
    table = draw(st.one_of(st.none(), st.integers(0, 254)))
    nat = draw(st.one_of(st.none(), nats()))
    execs = tuple(draw(st.lists(set_fields(["ct_mark", "NXM_NX_CT_MARK"]), max_size=2))) \
        if commit else ()
    return A.Ct(commit, zone, table, nat, execs)


ports = st.integers(0, 0xFEFF)
ACTIONS = st.one_of(
    ports.map(A.Output),
    st.sampled_from([A.InPort(), A.Normal(), A.Flood(), A.All(), A.Local(), A.StripVlan(),
                     A.PopVlan(), A.DecTtl()]),
    st.builds(A.Controller, st.integers(0, 0xFFFF), st.sampled_from(A.CONTROLLER_REASONS),
              st.binary(max_size=4)),
    st.integers(0, 0xFFF).map(A.SetVlanVid), st.integers(0, 7).map(A.SetVlanPcp),
    st.sampled_from([0x8100, 0x88A8]).map(A.PushVlan),
    set_fields(), moves(),
    st.integers(0, (1 << 64) - 1).map(A.SetTunnel),
    st.builds(A.Resubmit, st.one_of(st.none(), st.integers(0, 0xFFFF).filter(
        lambda p: p != 0xFFF8)), st.one_of(st.none(), st.integers(0, 254))),
    st.integers(0, 254).map(A.GotoTable),
    st.builds(A.Sample, st.integers(1, 0xFFFF), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    cts(),
)

RULES = st.builds(
    Rule, of_matches(), st.lists(ACTIONS, max_size=5).map(tuple), st.integers(0, 254),
    st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
    st.frozensets(st.sampled_from(FLOW_FLAGS)))


@settings(max_examples=400)
@given(RULES)
def test_rule_round_trip(rule: Rule) -> None:
    text = format_rule(rule)
    assert parse_rule(text) == rule, text


@given(RULES, st.integers(0, 10**6), st.integers(0, 10**6), st.floats(0, 1e5),
       st.floats(0, 1e3), st.floats(0, 1e3))
def test_dump_line_round_trip(rule: Rule, pk: int, by: int, created: float, age: float,
                              idle: float) -> None:
    stats = RuleStats(pk, by, created, created + age)
    assert parse_rule(format_rule(rule, stats, now=created + age + idle)) == rule


@given(st.sampled_from(REAL).flatmap(lambda f: st.tuples(st.just(f), raw_value(f))))
def test_value_round_trip(fv: tuple[OfField, tuple[int, int]]) -> None:
    f, (v, m) = fv
    assert parse_value(f, format_value(f, v, m)) == (v, m)


@given(of_matches(), st.integers(0, 0xFFFF))
def test_match_round_trip(m: OfMatch, priority: int) -> None:
    sel = parse_match(format_match(m, priority))
    assert (sel.match, sel.priority) == (m, priority)


@given(st.lists(ACTIONS, max_size=6).map(tuple))
def test_actions_round_trip(actions: A.OfActions) -> None:
    assert parse_actions(format_actions(actions)) == actions
