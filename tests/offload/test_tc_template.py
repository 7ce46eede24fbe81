"""Filter templates (tc_template) against the full path, without a kernel.

The oracle: for every megaflow with the template key of the one a template
was compiled from (same mask, control values, in_port, recirc_id, actions;
any other copied values), ``FilterTemplate.build`` (and a ``PatchedFilter``,
the filter not made yet) must give exactly the
filter ``to_flower`` makes (every field, same types) and exactly the bytes
``tc_wire`` encodes for it -- which test_tc_wire checks against pyroute2.
"""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from dpif import actions as A
from dpif.fields import ALL_ONES
from dpif.flow import Ufid
from dpif.match import Match
from offload import tc_nla as N
from offload import tc_wire as W
from offload.tc_flower import to_flower
from offload.tc_op import F_CREATE, TcOp
from offload.tc_template import SELECT_BITS, PatchedFilter, compile_template, template_key
from offload.tc_values import FlowerFilter
from tests.dpif.strategies import action_lists, matches
from tests.offload.test_tc_flower import PORTS

RTM_NEWTFILTER = 44
SKIP_HW = N.TCA_CLS_FLAGS_SKIP_HW


def full(m: Match, actions: A.Actions, ufid: Ufid, handle: int) -> FlowerFilter | None:
    f = to_flower(m, actions, ufid, ports=PORTS, prio=0x801, handle=handle, flags=SKIP_HW)
    return f if isinstance(f, FlowerFilter) else None


def same_template(m: Match, bits: int) -> Match:
    """A match of m's template key with other copied values (from ``bits``)."""
    return Match((bits & m.mask & ~SELECT_BITS) | (m.key & SELECT_BITS), m.mask)


@given(matches(), st.sampled_from(sorted(PORTS)), st.booleans(),
       st.one_of(action_lists(), st.sampled_from([(A.Output(2),), (A.Output(1), A.Output(3)),
                                                   (A.PopVlan(), A.Output(2)), ()])),
       st.lists(st.tuples(st.integers(0, ALL_ONES), st.integers(1, 2**32 - 1),
                          st.integers(0, 2**128 - 1)), min_size=1, max_size=4))
@settings(max_examples=400, deadline=None)
def test_build_is_the_full_path(m: Match, port: int, chain: bool, actions: A.Actions,
                                others: list[tuple[int, int, int]]) -> None:
    m = m.with_field("in_port", port).without("recirc_id")
    if chain:  # _translate keeps chain 0 for recirculation; to_flower takes any
        m = m.with_field("recirc_id", 5)
    first = full(m, actions, Ufid(1), 1)
    t = compile_template(first, m, actions) if first is not None else None
    event(f"template: {t is not None}")
    if t is None:
        return
    for bits, handle, ufid in others:
        other = same_template(m, bits)
        assert template_key(other, actions) == template_key(m, actions)
        want = full(other, actions, Ufid(ufid), handle)
        assert want is not None, "a template key decided the translation but not its refusal"
        got, body = t.build(other.key, handle, Ufid(ufid).to_bytes())
        assert got == want and got.__dict__ == want.__dict__
        assert [type(v) for _, v in got.keys] == [type(v) for _, v in want.keys]
        assert bytes(body) == W.encode_filter_body(want)
        assert (TcOp("add", got, body).wire(7, 9) ==
                W.encode_filter_bytes(want, RTM_NEWTFILTER, F_CREATE, 7, 9))
        # what the datapath keeps instead: the filter's name at once, its value on demand
        ref = PatchedFilter(t, other.key, handle, Ufid(ufid).to_bytes())
        assert ((ref.ifindex, ref.parent, ref.chain, ref.prio, ref.protocol, ref.handle,
                 ref.cookie) == (want.ifindex, want.parent, want.chain, want.prio,
                                 want.protocol, want.handle, want.cookie))
        assert ref.value() == want
        assert TcOp("add", ref).wire(7, 9) == TcOp("add", want).wire(7, 9)
        assert TcOp("add", ref).message()[0] == TcOp("add", want).message()[0]


def test_a_megaflow_table_shares_one_template() -> None:
    def m(i: int) -> Match:
        return Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ip_proto=17,
                           ipv4_dst=0x0A000000 + i, tp_dst=1000 + i, ip_frag=(0, 3))
    acts = (A.Output(2),)
    assert len({template_key(m(i), acts) for i in range(50)}) == 1
    t = compile_template(full(m(0), acts, Ufid(1), 1), m(0), acts)  # type: ignore[arg-type]
    assert t is not None and len(t.copied) == 2  # ipv4_dst and tp_dst: the rest is constant
    got, _ = t.build(m(7).key, 8, Ufid(8).to_bytes())
    assert got == full(m(7), acts, Ufid(8), 8)


def test_no_template_where_values_decide() -> None:
    m = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ip_proto=17,
                    ip_ttl=(0x40, 0xFE), ip_frag=(0, 3))
    acts: A.Actions = (A.DecTtl(), A.Output(2))  # dec_ttl reads ip_ttl's value
    f = full(m, acts, Ufid(1), 1)
    assert f is not None and compile_template(f, m, acts) is None
    plain = full(m, (A.Output(2),), Ufid(1), 1)
    assert plain is not None and compile_template(plain, m, (A.Output(2),)) is not None
    nocookie = FlowerFilter(ifindex=11, prio=1, handle=1, keys=plain.keys,
                            protocol=plain.protocol, actions=plain.actions)
    assert compile_template(nocookie, m, (A.Output(2),)) is None
