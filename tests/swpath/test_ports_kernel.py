"""Kernel tier: NetdevPort on veths, the miss channel, the runner — with real packets.

The datapath here is a stand-in cross-connect (port 1 <-> port 2) so these
tests check the ports alone; tests/swpath/test_forward_kernel.py runs the
real SwDatapath.  u32 tests run on a host kernel without flower/matchall;
the flower case needs the VM (``tc_flower`` fixture).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from kernel.netns import NetnsFactory, VethFactory
from swpath.ports import MISS_PRIO, NetdevPort, in_netns
from swpath.ring import PACKET_RX_RING, RingGeometry, map_ring, ones_complement
from swpath.runner import Runner
from swpath.txring import PACKET_TX_RING
from tests.swpath.fabric import (
    A_IP,
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


class CrossConnect:
    def __init__(self) -> None:
        self.ports: dict[int, NetdevPort] = {}
        self.seen: list[tuple[int, bytes]] = []

    def process(self, in_port: int, packets: list[bytes]) -> None:
        out = self.ports.get(3 - in_port)
        for p in packets:
            self.seen.append((in_port, p))
            if out is not None:
                out.send(p)


@pytest.fixture
def fab(netns_factory: NetnsFactory, veth_factory: VethFactory) -> Fabric:
    return build_fabric(netns_factory, veth_factory)


@pytest.fixture
def xc() -> Iterator[CrossConnect]:
    sink = CrossConnect()
    yield sink
    for p in sink.ports.values():
        p.close()


def open_ports(fab: Fabric, sink: CrossConnect, *, miss: bool, ring: bool = True) -> Runner:
    for no, dev in ((1, "s1"), (2, "s2")):
        sink.ports[no] = NetdevPort(dev, no, netns=fab.s.name, miss=miss, ring=ring)
    return Runner(sink, sink.ports.values())


@pytest.mark.parametrize("which", [PACKET_RX_RING, PACKET_TX_RING], ids=["rx", "tx"])
def test_map_ring_maps_the_geometry_the_kernel_took(which: int) -> None:
    """The one ring setup of rx and tx: the kernel takes the geometry (a ring of
    another shape would fail the setsockopt), maps all of it, every frame free."""
    g = RingGeometry(frame_size=4096, frame_nr=48, block_size=1 << 16)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        mm = map_ring(sock, which, g)
        try:
            assert len(mm) == g.size == 48 * 4096
            assert not any(mm[i * g.frame_size] for i in range(g.frame_nr))
            with pytest.raises(OSError):  # one ring of a kind per socket
                map_ring(sock, which, g)
        finally:
            mm.close()


def udp_ok(frame: bytes) -> bool:
    """The UDP checksum of an IPv4/UDP frame verifies."""
    ihl = (frame[14] & 0xF) * 4
    ip = frame[14:14 + ihl]
    seg = frame[14 + ihl:14 + struct.unpack(">H", ip[2:4])[0]]
    pseudo = ip[12:20] + b"\0\x11" + struct.pack(">H", len(seg))
    return ones_complement(pseudo + seg) == 0xFFFF


@pytest.mark.parametrize("miss", [False, True], ids=["software", "tc-miss"])
@pytest.mark.parametrize("ring", [True, False], ids=["ring", "recvmsg"])
def test_ping_and_udp_stream_n_sent_n_received(fab: Fabric, xc: CrossConnect, miss: bool,
                                               ring: bool) -> None:
    runner = open_ports(fab, xc, miss=miss, ring=ring)
    runner.start(timeout=60)
    rx = Receiver(fab.b.name, (9000,))
    try:
        assert ping(fab.a.name, B_IP, count=3) == 3  # ARP + ICMP both ways
        static_arp(fab)
        before = len(xc.seen)
        n = 1500
        send_paced(udp_sender(fab.a.name), (B_IP, 9000), n, rx)
        assert rx.wait_for(n) == n
    finally:
        runner.stop_and_join()
        rx.close()
    stream = [p for port, p in xc.seen[before:] if port == 1]
    assert len(stream) == n
    # Locally built UDP is CHECKSUM_PARTIAL on a veth: the port completed it.
    assert all(udp_ok(p) for p in stream)
    s1, s2 = xc.ports[1].stats(), xc.ports[2].stats()
    assert s1.rx_packets >= n and s2.tx_packets >= n
    assert s1.rx_dropped == 0 and s2.tx_dropped == 0


def test_own_transmits_are_not_received(fab: Fabric, xc: CrossConnect) -> None:
    """PACKET_IGNORE_OUTGOING: what the port sends never comes back on its rx."""
    open_ports(fab, xc, miss=False)
    p1 = xc.ports[1]
    frame = bytes.fromhex("ffffffffffff" "020000000009" "88b5") + b"flowpath" * 8
    for _ in range(50):
        p1.send(frame)
    time.sleep(0.2)
    assert p1.recv_batch(64) == []
    assert p1.stats().tx_packets == 50


def test_vlan_tag_stripped_by_the_kernel_is_put_back(fab: Fabric, xc: CrossConnect) -> None:
    runner = open_ports(fab, xc, miss=True)
    frame = (bytes.fromhex(fab.mac_b.replace(":", "")) + bytes.fromhex(fab.mac_a.replace(":", ""))
             + bytes.fromhex("8100" "a064" "88b5") + b"tagged-frame" * 4)
    with in_netns(fab.a.name):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        raw.bind(("va", 0))
    try:
        for _ in range(5):
            raw.send(frame)
        runner.run(max_packets=5, timeout=5)
    finally:
        raw.close()
    assert [p for _, p in xc.seen] == [frame] * 5


def tc_filters(fab: Fabric, dev: str) -> list[dict[str, object]]:
    return fab.s.tc_filters(dev)


def handle_in_tc(fab: Fabric, kind: str, dport: int) -> None:
    """A filter above the catch-all that forwards UDP to ``dport`` by itself (as an
    offloaded/tc megaflow would): straight out of s2, flowpath never involved."""
    fab.s.tc("qdisc", "add", "dev", "s1", "ingress", check=False)  # software mode: none yet
    where = ["filter", "add", "dev", "s1", "ingress", "protocol", "ip", "prio", "10"]
    action = ["action", "mirred", "egress", "redirect", "dev", "s2"]
    if kind == "flower":
        fab.s.tc(*where, "flower", "skip_hw", "ip_proto", "udp", "dst_port", str(dport), *action)
    else:
        fab.s.tc(*where, "u32", "match", "ip", "protocol", "17", "0xff",
                 "match", "ip", "dport", str(dport), "0xffff", *action)


@pytest.fixture(params=["u32", "flower"])
def tc_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "flower":
        request.getfixturevalue("tc_flower")
    return str(request.param)


def test_miss_channel_no_packet_handled_twice(fab: Fabric, xc: CrossConnect, tc_kind: str) -> None:
    """tc forwards UDP/7001 itself; everything else misses to flowpath.  Exactly N of
    each arrive, and flowpath never saw a 7001 packet."""
    runner = open_ports(fab, xc, miss=True)
    static_arp(fab)
    handle_in_tc(fab, tc_kind, 7001)
    rx = Receiver(fab.b.name, (7001, 7002))
    runner.start(timeout=60)
    n = 1000
    try:
        tx = udp_sender(fab.a.name)
        send_paced(tx, (B_IP, 7001), n, rx)
        send_paced(tx, (B_IP, 7002), n, rx, already=n)
        rx.wait_for(2 * n)
    finally:
        runner.stop_and_join()
        rx.close()
    assert rx.counts == {7001: n, 7002: n}
    dports = [struct.unpack_from(">H", p, 36)[0] for _, p in xc.seen if p[12:14] == b"\x08\x00"]
    assert dports.count(7001) == 0 and dports.count(7002) == n
    kinds = {f.get("kind") for f in tc_filters(fab, "s1")}
    assert tc_kind in kinds


def test_control_a_plain_tap_would_double(fab: Fabric, xc: CrossConnect) -> None:
    """The failure the miss channel prevents, shown on purpose: a raw socket on a port
    whose tc forwards traffic sees (and here re-forwards) that traffic too."""
    runner = open_ports(fab, xc, miss=False)
    static_arp(fab)
    handle_in_tc(fab, "u32", 7001)
    rx = Receiver(fab.b.name, (7001,))
    runner.start(timeout=30)
    n = 200
    try:
        send_paced(udp_sender(fab.a.name), (B_IP, 7001), n, rx, window=400)
        rx.wait_for(2 * n, timeout=3)
    finally:
        runner.stop_and_join()
        rx.close()
    assert rx.counts[7001] == 2 * n


def ingress_qdiscs(fab: Fabric, dev: str) -> list[dict[str, object]]:
    qdiscs = fab.s.json("tc", "-j", "qdisc", "show", "dev", dev)
    return [q for q in qdiscs if q.get("kind") in ("ingress", "clsact")]


def test_miss_channel_setup_is_idempotent_and_cleans_up(fab: Fabric) -> None:
    p = NetdevPort("s1", 1, netns=fab.s.name, miss=True)
    mc = p.miss_channel
    assert mc is not None and mc.prio == MISS_PRIO and mc.created_qdisc
    p.close()  # created the qdisc, so removes it with its filter and the veths
    assert tc_filters(fab, "s1") == [] and ingress_qdiscs(fab, "s1") == []
    assert not {mc.tap, mc.reader} & {link["ifname"] for link in fab.s.links()}

    p = NetdevPort("s1", 1, netns=fab.s.name, miss=True)
    p.close(keep_miss_channel=True)  # a restart keeps the catch-all and the veths
    p = NetdevPort("s1", 1, netns=fab.s.name, miss=True)  # ...and adopts them
    assert p.miss_channel is not None and not p.miss_channel.created_qdisc
    with_actions = [f for f in tc_filters(fab, "s1") if "actions" in f.get("options", {})]
    assert [f.get("pref") for f in with_actions] == [MISS_PRIO]  # one catch-all, not two
    assert {mc.tap, mc.reader} <= {link["ifname"] for link in fab.s.links()}
    p.close()
    assert tc_filters(fab, "s1") == []
    assert not {mc.tap, mc.reader} & {link["ifname"] for link in fab.s.links()}
    # The adopted qdisc was not created by this instance: left in place (like TcNetlink).
    assert len(ingress_qdiscs(fab, "s1")) == 1


def test_catchall_leaves_foreign_qdisc_and_filters(fab: Fabric) -> None:
    fab.s.tc("qdisc", "add", "dev", "s1", "ingress")
    fab.s.tc("filter", "add", "dev", "s1", "ingress", "protocol", "ip", "prio", "5",
             "u32", "match", "ip", "protocol", "6", "0xff", "action", "mirred", "egress",
             "redirect", "dev", "s2")
    p = NetdevPort("s1", 1, netns=fab.s.name, miss=True)
    p.close()
    prefs = {f.get("pref") for f in tc_filters(fab, "s1")}
    assert prefs == {5}


def test_vanished_device_is_retired_alone(fab: Fabric, xc: CrossConnect) -> None:
    """Deleting one port's netdev mid-run: a PortError naming it, the others go on."""
    fab.s.ip("link", "add", "s3", "type", "veth", "peer", "name", "x3")
    fab.s.ip("link", "set", "s3", "up")
    fab.s.ip("link", "set", "x3", "up")
    runner = open_ports(fab, xc, miss=False)
    p3 = NetdevPort("s3", 3, netns=fab.s.name)
    runner.add_port(p3)
    static_arp(fab)
    retired: list[int] = []
    runner.on_port_error = lambda port, err: retired.append(port.port_no)
    rx = Receiver(fab.b.name, (9000,))
    runner.start(timeout=60)
    try:
        tx = udp_sender(fab.a.name)
        send_paced(tx, (B_IP, 9000), 100, rx)
        fab.s.ip("link", "del", "x3")  # takes s3 with it
        deadline = time.monotonic() + 5
        while not retired and time.monotonic() < deadline:
            time.sleep(0.02)
        p3.send(b"\xff" * 60)  # never raises
        send_paced(tx, (B_IP, 9000), 100, rx, already=100)
        assert rx.wait_for(200) == 200
    finally:
        runner.stop_and_join()
        rx.close()
        p3.close()
    assert retired == [3]
    assert any("s3" in str(e) for e in runner.errors)
    assert p3.stats().tx_dropped >= 1
