"""SwDatapath: the Datapath contract, the batch path, upcalls, ports, stats."""

from __future__ import annotations

import pytest

from dpif.actions import Ct, DecTtl, Output, Recirc, Userspace
from dpif.errors import DatapathError, FlowExists
from dpif.flow import FlowSpec, Ufid
from dpif.match import Match
from swpath.ports import MemPort
from swpath.datapath import ActionUpcall, SwDatapath, UpcallResult
from swpath.parse import parse_key
from tests.dpif.datapath_contract import DatapathContract, DatapathFactory
from tests.swpath.swframes import eth, ipv4, tcp, udp


class TestSwDatapathContract(DatapathContract):
    @pytest.fixture
    def make_dp(self) -> DatapathFactory:
        return lambda flow_limit: SwDatapath(flow_limit=flow_limit)


def frame(dport: int = 80, flags: int = 0x02, ttl: int = 64) -> bytes:
    h, _ = eth(2, 1, 0x0800)
    return h + ipv4(0x0A000001, 0x0A000002, 6, tcp(1000, dport, flags), ttl=ttl) + bytes(6)


WEB = Match.build(recirc_id=0, in_port=1, eth_type=0x0800, ip_proto=6, tp_dst=80)


def make(**kw: object) -> tuple[SwDatapath, MemPort, MemPort]:
    now = [100.0]
    dp = SwDatapath(clock=lambda: now[0], **kw)  # type: ignore[arg-type]
    p1, p2 = MemPort(1), MemPort(2)
    dp.add_port(p1)
    dp.add_port(p2)
    return dp, p1, p2


def test_hit_forwards_and_credits_stats() -> None:
    dp, _, p2 = make()
    dp.put(FlowSpec(WEB, (Output(2),), Ufid(1)))
    pkts = [frame(flags=0x02), frame(flags=0x10), frame(flags=0x18)]
    dp.process(1, pkts)
    assert p2.sent == pkts
    s = dp.get(Ufid(1)).stats
    assert (s.packets, s.bytes, s.used, s.tcp_flags) == (3, sum(map(len, pkts)), 100.0, 0x1A)
    assert dp.counters["hit"] == 3
    final = dp.delete(Ufid(1))
    assert final.packets == 3


def test_miss_upcalls_installs_then_hits() -> None:
    calls: list[tuple[int, int]] = []

    def upcall(pkt: bytes, key: int, in_port: int) -> UpcallResult:
        calls.append((key, in_port))
        return UpcallResult(Match.from_packet_key(key, WEB.mask), (Output(2),))

    dp, _, p2 = make(upcall=upcall)
    dp.process(1, [frame(), frame(), frame(dport=81)])
    assert len(calls) == 2  # 80 once (then the megaflow), 81 once
    assert calls[0] == (parse_key(frame(), Match.build(in_port=1).key), 1)
    assert len(p2.sent) == 3
    assert len(list(dp.dump())) == 2
    assert dp.get(next(f.ufid for f in dp.dump() if f.match.value("tp_dst") == 80)) \
        .stats.packets == 1  # the upcall's own packet is ofproto's to account


def test_upcall_none_and_no_handler_drop_and_count() -> None:
    dp, _, p2 = make()
    dp.process(1, [frame()])
    assert dp.counters["lost"] == 1
    dp.upcall = lambda pkt, key, port: None
    dp.process(1, [frame()])
    assert dp.counters["upcall_drop"] == 1 and p2.sent == []


def test_failed_install_still_runs_packet_actions() -> None:
    def upcall(pkt: bytes, key: int, in_port: int) -> UpcallResult:
        return UpcallResult(Match.build(in_port=1), (Output(2),))

    dp, _, p2 = make(upcall=upcall)
    dp.put(FlowSpec(Match.build(in_port=1, eth_type=0x86DD), (), Ufid(9)))
    dp.process(1, [frame()])  # overlap: refused, packet still forwarded
    assert dp.counters["put_exists"] == 1 and len(p2.sent) == 1


def test_output_to_vanished_port_is_counted_not_raised() -> None:
    dp, _, p2 = make()
    dp.put(FlowSpec(WEB, (Output(2), Output(7)), Ufid(1)))
    dp.process(1, [frame()])
    assert len(p2.sent) == 1 and dp.counters["tx_no_port"] == 1
    assert dp.del_port(2) is p2
    assert dp.del_port(2) is None
    dp.process(1, [frame()])
    assert dp.counters["tx_no_port"] == 3
    dp.modify(Ufid(1), (Output(2),))
    dp.process(1, [frame()])  # the fast single-output path
    assert dp.counters["tx_no_port"] == 4


def test_recirculation_reenters_lookup_and_is_bounded() -> None:
    dp, _, p2 = make()
    dp.put(FlowSpec(WEB, (Recirc(1),), Ufid(1)))
    dp.put(FlowSpec(WEB.with_field("recirc_id", 1), (Output(2),), Ufid(2)))
    dp.process(1, [frame()])
    assert len(p2.sent) == 1 and dp.get(Ufid(2)).stats.packets == 1
    dp.modify(Ufid(2), (Recirc(1),))  # a loop
    dp.process(1, [frame()])
    assert dp.counters["recirc_too_deep"] == 1
    assert dp.get(Ufid(2)).stats.packets == 1 + dp.max_recirc


def test_action_upcalls_dec_ttl_and_userspace() -> None:
    ups: list[ActionUpcall] = []
    dp, _, p2 = make(action_upcall=ups.append)
    dp.put(FlowSpec(WEB, (DecTtl(), Output(2)), Ufid(1)))
    dp.put(FlowSpec(WEB.with_field("tp_dst", 443), (Userspace(userdata=b"x"),), Ufid(2)))
    dp.process(1, [frame(ttl=1), frame(ttl=5), frame(dport=443)])
    assert [(u.reason, u.in_port) for u in ups] == [("dec_ttl", 1), ("userspace", 1)]
    assert len(p2.sent) == 1


def test_unsupported_actions_refused_at_put_and_execute() -> None:
    dp, _, _ = make()
    with pytest.raises(DatapathError, match="ct"):
        dp.put(FlowSpec(WEB, (Ct(commit=True),), Ufid(1)))
    with pytest.raises(DatapathError, match="ct"):
        dp.execute(frame(), 1, (Ct(),))
    assert list(dp.dump()) == []


def test_execute_sends_and_parse_errors_are_counted() -> None:
    dp, p1, p2 = make()
    h, _ = eth(2, 1, 0x0800)
    udp_frame = h + ipv4(1, 2, 17, udp(1, 2))
    dp.execute(udp_frame, 1, (Output(1), Output(2)))
    assert p1.sent == [udp_frame] and p2.sent == [udp_frame]
    dp.process(1, [b"\x00" * 5, frame()[:30]])
    assert dp.parse_stats.total == 2
    with pytest.raises(FlowExists):
        dp.put(FlowSpec(Match.catchall(), (), Ufid(3)))
        dp.put(FlowSpec(Match.build(in_port=1), (), Ufid(4)))
