"""Kernel tier, item 5: two hosts joined through flowpath's SwDatapath over veths.

A minimal upcall stands in for ofproto: a miss on port P installs the megaflow
``in_port(P) -> output(other port)`` (mask: in_port only) and forwards the
packet.  Traffic is counted at the receiving socket: N sent, exactly N
received; the flow counters account for every packet (the upcalled packet is
not credited to its flow, as in OVS, so flows + upcalls == packets).
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from dpif.actions import Output
from dpif.flow import DpFlow, FlowStats
from dpif.match import Match
from kernel.netns import NetnsFactory, VethFactory
from swpath.datapath import SwDatapath, UpcallResult
from swpath.ports import NetdevPort
from swpath.runner import Runner
from tests.swpath.fabric import (
    B_IP,
    Fabric,
    Receiver,
    build_fabric,
    ping,
    send_paced,
    static_arp,
    udp_sender,
)

pytestmark = pytest.mark.kernel

OTHER = {1: 2, 2: 1}


@dataclass
class Switch:
    """SwDatapath + NetdevPorts s1/s2 + runner, with an upcall log."""

    dp: SwDatapath
    runner: Runner
    ports: dict[int, NetdevPort]
    upcalls: list[tuple[int, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def upcall(self, packet: bytes, key: int, in_port: int) -> UpcallResult:
        with self.lock:
            self.upcalls.append((in_port, packet))
        return UpcallResult(Match.build(in_port=in_port), (Output(OTHER[in_port]),))

    def on_loop(self, fn):  # type: ignore[no-untyped-def]
        """Run ``fn`` on the datapath's thread (SwDatapath is single-threaded)."""
        return self.runner.call_soon(fn).result(timeout=5)

    def flows(self) -> list[DpFlow]:
        return list(self.on_loop(lambda: list(self.dp.dump())))

    def flow_for(self, in_port: int) -> DpFlow:
        want = Match.build(in_port=in_port)
        (flow,) = [f for f in self.flows() if f.match == want]
        return flow

    def upcalls_from(self, in_port: int) -> int:
        with self.lock:
            return sum(1 for p, _ in self.upcalls if p == in_port)


@pytest.fixture
def fab(netns_factory: NetnsFactory, veth_factory: VethFactory) -> Fabric:
    return build_fabric(netns_factory, veth_factory)


def make_switch(fab: Fabric, *, miss: bool) -> Switch:
    dp = SwDatapath()
    ports = {no: NetdevPort(dev, no, netns=fab.s.name, miss=miss)
             for no, dev in ((1, "s1"), (2, "s2"))}
    sw = Switch(dp, Runner(dp, ports.values(), on_port_error=lambda p, e: dp.del_port(p.port_no)),
                ports)
    dp.upcall = sw.upcall
    for p in ports.values():
        dp.add_port(p)
    return sw


@pytest.fixture(params=[False, True], ids=["software", "tc-miss"])
def switch(request: pytest.FixtureRequest, fab: Fabric) -> Iterator[Switch]:
    sw = make_switch(fab, miss=bool(request.param))
    sw.runner.start(timeout=120)
    yield sw
    sw.runner.stop_and_join()
    sw.runner.close()
    for p in sw.ports.values():
        p.close()


def test_ping_goes_through_and_installs_both_megaflows(fab: Fabric, switch: Switch) -> None:
    assert ping(fab.a.name, B_IP, count=3) == 3
    # ARP request/reply and ICMP both ways: exactly one upcall per direction, the
    # rest hit the cache.
    assert switch.upcalls_from(1) == 1 and switch.upcalls_from(2) == 1
    f1, f2 = switch.flow_for(1), switch.flow_for(2)
    assert f1.actions == (Output(2),) and f2.actions == (Output(1),)
    assert f1.stats.packets >= 3 and f2.stats.packets >= 3


def test_udp_stream_n_sent_n_received_and_counters_match(fab: Fabric, switch: Switch) -> None:
    static_arp(fab)
    rx = Receiver(fab.b.name, (9000,), keep=True)
    n, payload_len = 2000, 4
    try:
        send_paced(udp_sender(fab.a.name), (B_IP, 9000), n, rx)
        assert rx.wait_for(n) == n
    finally:
        rx.close()
    assert sorted(struct.unpack(">I", p)[0] for p in rx.payloads) == list(range(n))
    flow = switch.flow_for(1)
    assert switch.upcalls_from(1) == 1
    # Every datagram: one upcall, the rest credited to the megaflow, bytes exact.
    frame_len = 14 + 20 + 8 + payload_len
    assert flow.stats.packets + switch.upcalls_from(1) == n
    assert flow.stats.bytes == flow.stats.packets * frame_len
    assert switch.ports[2].stats().tx_packets == n


def test_flow_deleted_mid_stream_loses_no_packet(fab: Fabric, switch: Switch) -> None:
    """The megaflow is deleted while datagrams keep coming: the next packet upcalls,
    a new flow is installed, and every datagram still arrives exactly once."""
    static_arp(fab)
    rx = Receiver(fab.b.name, (9000,))
    tx = udp_sender(fab.a.name)
    n1, n2 = 1000, 1000
    deleted: list[FlowStats] = []
    try:
        send_paced(tx, (B_IP, 9000), n1, rx, window=64)
        old = switch.flow_for(1)
        # Delete on the datapath's thread while the stream continues.
        stopper = threading.Thread(
            target=lambda: deleted.append(switch.on_loop(lambda: switch.dp.delete(old.ufid))))
        stopper.start()
        send_paced(tx, (B_IP, 9000), n2, rx, already=n1, window=64)
        stopper.join(5)
        assert rx.wait_for(n1 + n2) == n1 + n2
    finally:
        rx.close()
    new = switch.flow_for(1)
    assert new.ufid != old.ufid
    assert switch.upcalls_from(1) == 2  # the first packet and the first after the delete
    assert deleted[0].packets + new.stats.packets + switch.upcalls_from(1) == n1 + n2


def test_vanished_flow_target_port_counts_and_the_rest_goes_on(fab: Fabric,
                                                                switch: Switch) -> None:
    """Deleting B's side of the fabric: packets to it are counted as drops, no error
    escapes into the loop, the runner keeps serving."""
    static_arp(fab)
    rx = Receiver(fab.b.name, (9000,))
    try:
        send_paced(udp_sender(fab.a.name), (B_IP, 9000), 100, rx)
        assert rx.wait_for(100) == 100
    finally:
        rx.close()
    fab.s.ip("link", "del", "s2")
    # Noticed without any traffic (POLLERR on the port's socket), retired alone.
    deadline = time.monotonic() + 5
    while 2 in switch.runner.ports and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 2 not in switch.runner.ports and 1 in switch.runner.ports
    assert any("s2" in str(e) for e in switch.runner.errors)
    # Packets for the dead port are counted drops, nothing raises into the loop.
    tx = udp_sender(fab.a.name)
    for i in range(50):
        tx.sendto(struct.pack(">I", i), (B_IP, 9000))
    deadline = time.monotonic() + 5
    while switch.on_loop(lambda: switch.dp.counters.get("tx_no_port", 0)) < 50:
        assert time.monotonic() < deadline, switch.dp.counters
        time.sleep(0.02)
    assert switch.on_loop(lambda: 1) == 1  # the loop is alive

@pytest.fixture(params=["u32", "flower"])
def tc_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "flower":
        request.getfixturevalue("tc_flower")
    return str(request.param)


def test_tc_and_swpath_share_a_port_each_packet_handled_once(fab: Fabric, tc_kind: str) -> None:
    """Port s1 in tc-miss mode; a tc filter (as an offloaded megaflow would) forwards
    UDP/7001 itself, SwDatapath gets the misses.  N of each sent, exactly N of each
    received; tc's counter says N, the megaflow's counter + upcalls say N."""
    sw = make_switch(fab, miss=True)
    static_arp(fab)
    where = ["filter", "add", "dev", "s1", "ingress", "protocol", "ip", "prio", "10"]
    action = ["action", "mirred", "egress", "redirect", "dev", "s2"]
    if tc_kind == "flower":
        fab.s.tc(*where, "flower", "skip_hw", "ip_proto", "udp", "dst_port", "7001", *action)
    else:
        fab.s.tc(*where, "u32", "match", "ip", "protocol", "17", "0xff",
                 "match", "ip", "dport", "7001", "0xffff", *action)
    rx = Receiver(fab.b.name, (7001, 7002))
    sw.runner.start(timeout=120)
    n = 1000
    try:
        tx = udp_sender(fab.a.name)
        send_paced(tx, (B_IP, 7001), n, rx)
        send_paced(tx, (B_IP, 7002), n, rx, already=n)
        rx.wait_for(2 * n)
        flow = sw.flow_for(1)
    finally:
        sw.runner.stop_and_join()
        sw.runner.close()
        rx.close()
        for p in sw.ports.values():
            p.close(keep_miss_channel=True)  # keep tc state for the counters below
    assert rx.counts == {7001: n, 7002: n}
    assert flow.stats.packets + sw.upcalls_from(1) == n
    assert all(struct.unpack_from(">H", p, 36)[0] == 7002 for _, p in sw.upcalls)
    by_prio = {f["pref"]: f for f in fab.s.tc_filters("s1") if "actions" in f.get("options", {})}
    tc_packets = by_prio[10]["options"]["actions"][0]["stats"]["packets"]
    miss_packets = by_prio[65535]["options"]["actions"][0]["stats"]["packets"]
    assert tc_packets == n and miss_packets == n
