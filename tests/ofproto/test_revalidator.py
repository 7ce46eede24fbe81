"""The revalidator on real software datapaths with a fake clock: idle aging
(against a linear oracle), the hardware-lag grace, the flow limit (shrunk
idle time, emergency deletion, adaptation, upcalls over it), counters
credited before deletion, rechecks after MAC moves and MAC aging, adopted
flows."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dpif import actions as dpa
from dpif.datapath import Datapath
from dpif.flow import FlowSpec, FlowStats, Ufid
from ofproto.bridge import Bridge
from ofproto.normal import PortConfig
from ofproto.revalidator import Outcome, Revalidator, RevalidatorConfig, next_flow_limit
from ofproto.ruletext import parse_rule
from swpath.datapath import SwDatapath
from swpath.ports import MemPort
from tests.dpif.datapath_contract import DatapathContract, DatapathFactory
from tests.ofproto.control_rig import attach, udp
from tests.ofproto.hwlag_dp import HwLagDatapath

T0 = 100.0
MACS = [bytes.fromhex(f"0200000000{i:02x}") for i in range(8)]


class TestHwLagDatapathContract(DatapathContract):
    placements = ("tc",)

    @pytest.fixture
    def make_dp(self) -> DatapathFactory:
        return lambda flow_limit: HwLagDatapath(SwDatapath(flow_limit=flow_limit),
                                                lambda: 0.0, refresh=0.0)


@dataclass
class Env:
    clock: list[float]
    sw: SwDatapath
    dp: Datapath
    br: Bridge
    rv: Revalidator
    mem: dict[int, MemPort]

    def at(self, t: float) -> None:
        self.clock[0] = t

    def send(self, port: int, *pkts: bytes) -> None:
        self.sw.process(port, list(pkts))

    def n_packets(self) -> dict[int, int]:
        """Rule priority -> n_packets, after crediting what the flows counted."""
        self.rv.credit_all()
        return {r.priority: self.br.tables.stats(rid).n_packets
                for rid, r in self.br.tables.rules()}

    def flows(self) -> dict[int, Ufid]:
        """tp_dst -> ufid of the installed flows."""
        return {f.match.value("tp_dst"): f.ufid for f in self.dp.dump()}


class SlowDumpSw(SwDatapath):
    """A software datapath whose dump takes ``dump_time`` seconds of the fake clock."""

    def __init__(self, clock: list[float], **kw: object) -> None:
        super().__init__(clock=lambda: clock[0], **kw)  # type: ignore[arg-type]
        self.fake, self.dump_time = clock, 0.0

    def dump(self) -> Iterator:  # type: ignore[type-arg]
        self.fake[0] += self.dump_time
        yield from super().dump()


class LateSw(SwDatapath):
    """A software datapath where a packet hits a flow between the sweep's dump
    and its delete (as hardware keeps forwarding meanwhile)."""

    late: list[tuple[int, bytes]]

    def delete(self, ufid: Ufid) -> FlowStats:
        while self.late:
            port, pkt = self.late.pop()
            self.process(port, [pkt])
        return super().delete(ufid)


def make(rules: list[str], *, hw: bool = False, cfg: RevalidatorConfig = RevalidatorConfig(),
         nports: int = 3, mac_aging: float = 300.0, sw: type[SwDatapath] | None = None,
         install_limit: int | None = None) -> Env:
    """``install_limit``: the bridge's flow limit until the first sweep adapts
    it (to fill it above a small ``cfg.flow_limit``, as adopted flows would)."""
    clock = [T0]
    if sw is SlowDumpSw:
        swdp: SwDatapath = SlowDumpSw(clock)
    else:
        swdp = (sw or SwDatapath)(clock=lambda: clock[0])
        if isinstance(swdp, LateSw):
            swdp.late = []
    dp: Datapath = HwLagDatapath(swdp, lambda: clock[0]) if hw else swdp
    ports = [PortConfig(n, f"p{n}") for n in range(1, nports + 1)]
    br = Bridge("br0", ports, placer=dp, clock=lambda: clock[0], mac_aging=mac_aging)
    mem = attach(br, swdp, ports, rules, T0)
    rv = Revalidator(br, dp, cfg)
    if install_limit is not None:
        br.flow_limit = install_limit
    return Env(clock, swdp, dp, br, rv, mem)


def per_port_rules(n: int) -> list[str]:
    return [f"priority={d},udp,tp_dst={d},actions=output:2" for d in range(1, n + 1)]


# -- idle aging ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_idle_flows_go_after_max_idle_as_a_linear_scan_says(seed: int) -> None:
    rng = random.Random(seed)
    e = make(per_port_rules(6), cfg=RevalidatorConfig(max_idle=3.0))
    last: dict[int, float] = {}
    sent = {d: 0 for d in range(1, 7)}
    for step in range(80):
        t = T0 + step * 0.5
        e.at(t)
        for d in sent:
            if rng.random() < 0.12:
                k = rng.randint(1, 3)
                e.send(1, *[udp(dport=d)] * k)
                sent[d] += k
                last[d] = t
        e.at(t + rng.choice([0.0, 0.25]))
        sw = e.rv.sweep()
        now = e.clock[0]
        want = {d for d, u in last.items() if now - u <= 3.0}  # the oracle
        assert set(e.flows()) == want, (step, now, last)
        assert set(e.br.ukeys) == {f.match for f in e.dp.dump()}
        assert sw.max_idle == 3.0 and sw.limit_deleted == 0
        assert e.n_packets() == sent  # rule counters: every packet, monotonic
    assert e.rv.totals["aged_out"] > 0


def test_flow_idle_exactly_max_idle_stays_and_goes_just_after() -> None:
    e = make(["priority=10,udp,actions=output:2"])
    e.send(1, udp())
    e.at(T0 + 1)
    e.send(1, udp(), udp())
    e.at(T0 + 11)
    assert e.rv.sweep().aged_out == 0 and len(e.flows()) == 1  # idle 10 s: not past it
    e.at(T0 + 11.01)
    assert e.rv.sweep().aged_out == 1 and e.flows() == {} and e.br.ukeys == {}
    assert e.n_packets() == {10: 3}
    e.send(1, udp())  # a fresh upcall installs it again
    assert e.br.counters["upcall"] == 2 and len(e.flows()) == 1


def test_counters_are_credited_before_the_flow_is_deleted() -> None:
    e = make(["priority=10,udp,actions=output:2", "priority=5,tcp,actions=drop"], sw=LateSw)
    assert isinstance(e.sw, LateSw)
    e.send(1, udp(), udp())
    e.at(T0 + 20)
    e.sw.late.append((1, udp()))  # arrives after the dump, before the delete
    assert e.rv.sweep().aged_out == 1
    assert e.mem[2].sent and len(e.mem[2].sent) == 3
    assert e.n_packets() == {10: 3, 5: 0}
    # the same through a rule change that deletes the flow
    e.send(1, udp())
    e.sw.late.append((1, udp()))
    e.br.tables.add(parse_rule("priority=20,udp,tp_dst=9999,actions=drop"), e.clock[0])
    out = e.rv.revalidate()
    assert out.deleted == 1 and e.n_packets() == {20: 0, 10: 5, 5: 0}


# -- hardware counters lag --------------------------------------------------------------


@pytest.mark.parametrize("hw", [False, True])
def test_young_offloaded_flow_is_not_aged_out_before_its_counters_arrive(hw: bool) -> None:
    # 2 flows over a limit of 1: the idle time is 100 ms
    e = make(per_port_rules(2), hw=hw, cfg=RevalidatorConfig(flow_limit=1), install_limit=10)
    e.send(1, udp(dport=1), udp(dport=2))
    assert e.rv.sweep().flow_limit == 1 and len(e.flows()) == 2
    e.at(T0 + 0.3)
    e.send(1, *[udp(dport=1)] * 3, *[udp(dport=2)] * 3)  # hits; in "hardware"
    e.at(T0 + 0.5)
    sw = e.rv.sweep()
    assert sw.max_idle == 0.1
    if not hw:  # software counters are exact: idle 0.2 s > 0.1 s
        assert sw.aged_out == 2 and e.flows() == {}
        assert e.n_packets() == {1: 4, 2: 4}
        return
    # in hardware the counters still say nothing; the flows are 0.5 s old: kept
    assert sw.aged_out == 0 and len(e.flows()) == 2
    e.at(T0 + 1.0)  # the counters arrive (used = T0 + 0.3)
    assert e.rv.sweep().aged_out == 0 and e.n_packets() == {1: 4, 2: 4}
    e.at(T0 + 2.29)
    assert e.rv.sweep().aged_out == 0  # idle 1.99 s: within the 2 s lag
    e.at(T0 + 2.31)
    assert e.rv.sweep().aged_out == 2 and e.flows() == {}
    assert e.n_packets() == {1: 4, 2: 4}


# -- the flow limit ---------------------------------------------------------------------


def test_above_the_limit_idle_time_shrinks_and_far_above_flows_are_killed() -> None:
    e = make(per_port_rules(7), cfg=RevalidatorConfig(flow_limit=3), install_limit=100)
    e.send(1, *[udp(dport=d) for d in range(1, 8)])
    assert e.rv.sweep().flow_limit == 3 and len(e.flows()) == 7
    e.at(T0 + 0.05)
    e.send(1, *[udp(dport=d) for d in range(1, 8)])
    e.at(T0 + 0.08)
    sw = e.rv.sweep()  # 7 > 2 * 3: delete down to 6; the rest is fresh (idle < 0.1)
    assert (sw.limit_deleted, sw.aged_out, len(e.flows())) == (1, 0, 6)
    e.at(T0 + 0.2)
    sw = e.rv.sweep()  # 6 > 3: idle 100 ms, and all are idle 0.15 s
    assert (sw.max_idle, sw.aged_out, e.flows()) == (0.1, 6, {})
    assert e.n_packets() == {d: 2 for d in range(1, 8)}
    assert e.rv.totals["limit_deleted"] == 1 and e.rv.totals["aged_out"] == 6


@pytest.mark.parametrize("limit, ms, n, ceiling, want", [
    (10000, 2500, 0, 200000, 5000),      # > 2 s: divided by whole seconds
    (10000, 5200, 50000, 200000, 2000),
    (10000, 1500, 50000, 200000, 7500),  # 1.3-2 s: three quarters
    (10000, 1000, 10**6, 200000, 10000),  # 1-1.3 s: unchanged
    (10000, 500, 6000, 200000, 11000),   # fast, 12000 flows/s > limit: +1000
    (10000, 500, 4000, 200000, 10000),   # fast, 8000 flows/s < limit: unchanged
    (199500, 0, 10**6, 200000, 200000),  # never above the ceiling (0 ms counts as 1)
    (1200, 3000, 0, 200000, 1000),       # never below 1000
    (5, 1, 100, 5, 5),                   # ... unless the ceiling is lower
])
def test_flow_limit_adapts_by_ovs_rules(limit: int, ms: float, n: int, ceiling: int,
                                        want: int) -> None:
    assert next_flow_limit(limit, ms, n, ceiling) == want


def test_a_slow_sweep_lowers_the_limit_and_a_fast_one_raises_it() -> None:
    e = make(per_port_rules(12), sw=SlowDumpSw)
    assert isinstance(e.sw, SlowDumpSw)
    assert e.br.flow_limit == 10000  # OVS starts at min(ceiling, 10000)
    e.send(1, *[udp(dport=d) for d in range(1, 13)])
    e.sw.dump_time = 2.5
    sw = e.rv.sweep()
    assert sw.duration == 2.5 and e.br.flow_limit == 5000
    assert e.rv.status()["last_dump_ms"] == 2500.0
    e.sw.dump_time = 1.5
    e.rv.sweep()
    assert e.br.flow_limit == 3750
    e.sw.dump_time = 0.0  # 12 flows in "1 ms": 12000 flows/s > 3750
    e.rv.sweep()
    assert e.br.flow_limit == 4750


def test_upcalls_at_the_limit_are_executed_but_not_installed() -> None:
    e = make(per_port_rules(3), cfg=RevalidatorConfig(flow_limit=2, max_idle=1.0))
    assert e.br.flow_limit == 2
    e.send(1, udp(dport=1), udp(dport=2), udp(dport=3), udp(dport=3))
    assert set(e.flows()) == {1, 2}
    assert len(e.mem[2].sent) == 4  # every packet forwarded, installed or not
    assert e.br.counters["flow_limit_hit"] == 2 and e.br.counters["upcall"] == 4
    assert e.n_packets() == {1: 1, 2: 1, 3: 2}  # upcall packets are counted too
    e.at(T0 + 2)
    e.rv.sweep()  # the two idle flows go: room again
    e.send(1, udp(dport=3))
    assert set(e.flows()) == {3} and len(e.mem[2].sent) == 5


# -- rechecks after MAC changes ------------------------------------------------------------


def translation_agrees(e: Env) -> None:
    """Oracle: every installed flow holds what a fresh translation of it says."""
    for f in e.dp.dump():
        assert e.br.translate(f.match.key).actions == f.actions, f


def test_mac_move_revalidates_the_flows_that_used_it() -> None:
    a, b, c = MACS[1], MACS[2], MACS[3]
    e = make(["actions=normal"], cfg=RevalidatorConfig(max_idle=60))
    e.send(1, udp(src=a, dst=b))  # a learned on 1
    e.send(2, udp(src=b, dst=a))  # b on 2; to a: output:1
    e.send(3, udp(src=c, dst=b))  # c on 3: a flow that does not involve a
    (to_a,) = [f for f in e.dp.dump() if f.match.value("in_port") == 2]
    assert to_a.actions == (dpa.Output(1),)
    e.rv.sweep()
    e.at(T0 + 1)
    e.send(3, udp(src=a, dst=c))  # a moves to port 3
    assert e.br.macs.lookup(0, int.from_bytes(a, "big"), e.clock[0]) == 3
    e.send(2, udp(src=b, dst=a))  # before the recheck the stale flow still says 1
    assert len(e.mem[1].sent) == 2 and len(e.mem[3].sent) == 1  # 1: a's first flood
    sw = e.rv.sweep()
    assert sw.rechecked.modified == 1 and sw.rechecked.deleted == 0
    (now_a,) = [f for f in e.dp.dump() if f.match.value("in_port") == 2]
    assert now_a.ufid == to_a.ufid and now_a.actions == (dpa.Output(3),)
    upcalls = e.br.counters["upcall"]
    sent1, sent3 = len(e.mem[1].sent), len(e.mem[3].sent)
    e.send(2, udp(src=b, dst=a))
    assert (len(e.mem[1].sent), len(e.mem[3].sent)) == (sent1, sent3 + 1)
    assert e.br.counters["upcall"] == upcalls  # no upcall: the flow itself moved
    translation_agrees(e)
    assert e.rv.sweep().rechecked == Outcome()  # nothing changed since: no recheck


def test_mac_aging_revalidates_flows_to_that_mac() -> None:
    a, b = MACS[1], MACS[2]
    e = make(["actions=normal"], mac_aging=5.0)
    e.send(1, udp(src=a, dst=b))
    e.send(2, udp(src=b, dst=a))
    e.rv.sweep()
    e.at(T0 + 4)
    e.send(2, udp(src=b, dst=a))  # keeps b's flow busy; a is not heard from again
    e.at(T0 + 6)  # a ages out: b's flow to a must flood again
    sw = e.rv.sweep()
    (to_a,) = [f for f in e.dp.dump() if f.match.value("in_port") == 2]
    assert sw.rechecked.modified >= 1 and set(to_a.actions) == {dpa.Output(1),
                                                                 dpa.Output(3)}
    translation_agrees(e)


def test_a_station_heard_only_through_datapath_hits_is_not_forgotten() -> None:
    a, b = MACS[1], MACS[2]
    e = make(["actions=normal"], mac_aging=5.0)
    e.send(1, udp(src=a, dst=b))
    e.send(2, udp(src=b, dst=a))
    e.send(1, udp(src=a, dst=b))
    for t in range(1, 13):  # both keep talking, all in the datapath: no upcall
        e.at(T0 + t)
        e.send(1, udp(src=a, dst=b))
        e.send(2, udp(src=b, dst=a))
        e.rv.sweep()
    assert e.br.counters["upcall"] == 2
    assert {f.match.value("in_port"): f.actions for f in e.dp.dump()} == {
        1: (dpa.Output(2),), 2: (dpa.Output(1),)}  # still unicast, 12 s > aging 5 s
    assert len(e.br.macs) == 2
    translation_agrees(e)


def test_rule_change_modifies_or_deletes_and_credits_the_new_rules() -> None:
    e = make(["priority=10,udp,actions=output:2"])
    e.send(1, udp(), udp())
    (before,) = e.dp.dump()
    e.br.tables.add(parse_rule("priority=20,udp,actions=output:3"), T0)
    out = e.rv.revalidate()
    assert (out.modified, out.deleted) == (1, 0)
    (after,) = e.dp.dump()
    assert after.ufid == before.ufid and after.actions == (dpa.Output(3),)
    e.send(1, udp())
    assert e.n_packets() == {20: 1, 10: 2} and len(e.mem[3].sent) == 1
    # a rule that needs a narrower megaflow: the flow cannot stay, it goes
    e.br.tables.add(parse_rule("priority=30,udp,tp_dst=9999,actions=drop"), T0)
    assert e.rv.revalidate().deleted == 1 and list(e.dp.dump()) == []
    assert e.n_packets() == {30: 0, 20: 1, 10: 2}


# -- adopted flows ----------------------------------------------------------------------


def test_adopted_flows_get_a_ukey_or_go_and_old_counts_are_not_credited() -> None:
    e = make(per_port_rules(2))
    e.send(1, udp(dport=1))  # learn the megaflow the rules make, then pretend a restart
    (f,) = e.dp.dump()
    e.dp.delete(f.ufid)
    e.br.ukeys.clear()
    good = e.dp.put(FlowSpec(f.match, f.actions, Ufid(7)))
    bad = e.dp.put(FlowSpec(f.match.with_field("tp_dst", 2), (dpa.Output(3),), Ufid(8)))
    e.send(1, udp(dport=1), udp(dport=1))  # counted before the first sweep sees them
    assert good.ufid == Ufid(7) and bad.ufid == Ufid(8)
    out = e.rv.sweep().rechecked
    assert (out.kept, out.modified) == (1, 1)  # the wrong actions are corrected
    assert {u.ufid for u in e.br.ukeys.values()} == {Ufid(7), Ufid(8)}
    assert e.n_packets() == {1: 1, 2: 0}  # the previous run's packets are not credited
    e.send(1, udp(dport=1), udp(dport=2))
    assert e.n_packets() == {1: 2, 2: 1}
    assert len(e.mem[2].sent) == 5 and len(e.mem[3].sent) == 0


def test_counters_that_restart_are_credited_from_their_new_value() -> None:
    # e.g. a flow re-placed by its datapath with fresh counters
    e = make(["priority=10,udp,actions=output:2"])
    e.send(1, udp(), udp(), udp())
    assert e.n_packets() == {10: 3}
    (f,) = e.dp.dump()
    e.dp.modify(f.ufid, f.actions, zero_stats=True)
    e.send(1, udp())
    assert e.n_packets() == {10: 4}  # 1 < 2 read before: counted from zero again
    e.send(1, udp(), udp())
    assert e.n_packets() == {10: 6}
