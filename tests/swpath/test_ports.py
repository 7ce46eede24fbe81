"""Unit tier: MemPort, the runner's loop and bounds, the ring's frame fix-ups."""

from __future__ import annotations

import struct
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpif.errors import PortError
from swpath.ports import MemPort, PortStats, RxPort
from swpath.ring import (
    RingGeometry,
    VNET_HDR,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    RxCounters,
    _fixup,
    complete_checksum,
    insert_vlan,
    ones_complement,
)
from swpath.runner import Runner


def ref_sum(data: bytes) -> int:
    """RFC 1071 the slow way: 16-bit words with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack(">H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.binary(max_size=300))
def test_ones_complement_matches_rfc1071(data: bytes) -> None:
    assert ones_complement(data) == ref_sum(data)


def udp_frame(payload: bytes, csum: int) -> bytes:
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    udp = struct.pack(">HHHH", 1000, 2000, 8 + len(payload), csum)
    return eth + ip + udp + payload


@given(st.binary(max_size=200))
def test_complete_checksum_verifies(payload: bytes) -> None:
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not inverted.
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 17]) + struct.pack(">H", 8 + len(payload))
    partial = udp_frame(payload, ref_sum(pseudo))
    done = complete_checksum(partial, 34, 6)
    assert done[:40] == partial[:40] and done[42:] == partial[42:]
    # A receiver's check: pseudo header + UDP segment sums to 0xffff.
    assert ref_sum(pseudo + done[34:]) == 0xFFFF
    assert done[40:42] != b"\0\0"


def test_insert_vlan_and_fixup_paths() -> None:
    frame = udp_frame(b"hi", 0)
    tagged = insert_vlan(frame, 0x2064, 0x8100)
    assert tagged[12:16] == bytes.fromhex("81002064") and tagged[16:] == frame[12:]
    c = RxCounters()
    gso = VNET_HDR.pack(0, 1, 0, 1448, 0, 0)
    assert _fixup(frame, gso, None, c) is None and c.oversize == 1
    plain = VNET_HDR.pack(0, 0, 0, 0, 0, 0)
    assert _fixup(frame, plain, (5, 0x88A8), c) == insert_vlan(frame, 5, 0x88A8)
    needs = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6)
    fixed = _fixup(frame, needs, None, c)
    assert fixed is not None and fixed[40:42] != b"\0\0"


def test_ring_geometry_is_checked() -> None:
    g = RingGeometry()
    assert g.block_nr * (g.block_size // g.frame_size) == g.frame_nr
    with pytest.raises(ValueError):
        RingGeometry(frame_size=1000)
    with pytest.raises(ValueError):
        RingGeometry(frame_nr=33)


def test_memport_inject_recv_send_stats() -> None:
    p = MemPort(3)
    assert isinstance(p, RxPort)
    p.inject([b"a", b"bb", b"ccc"])
    assert p.recv_batch(2) == [b"a", b"bb"]
    assert p.recv_batch(10) == [b"ccc"]
    assert p.recv_batch(10) == []
    p.send(b"xyz")
    assert p.sent == [b"xyz"]
    assert p.stats() == PortStats(rx_packets=3, rx_bytes=6, tx_packets=1, tx_bytes=3)
    p.close()


class CrossConnect:
    """A stand-in datapath: everything from one port goes out of the other."""

    def __init__(self, ports: dict[int, MemPort]) -> None:
        self.ports = ports
        self.batches: list[tuple[int, int]] = []

    def process(self, in_port: int, packets: list[bytes]) -> None:
        self.batches.append((in_port, len(packets)))
        out = self.ports[3 - in_port]
        for p in packets:
            out.send(p)


def test_runner_batches_and_bounds() -> None:
    a, b = MemPort(1), MemPort(2)
    sink = CrossConnect({1: a, 2: b})
    r = Runner(sink, [a, b], batch=16)
    a.inject(bytes([i]) for i in range(40))
    b.inject([b"back"])
    stats = r.run(max_packets=41, timeout=5)
    assert stats.packets == 41
    assert len(b.sent) == 40 and a.sent == [b"back"]
    assert max(n for _, n in sink.batches) == 16  # batches, not single packets
    # Idle: returns at its bound, having polled (slept in poll) instead of spinning.
    idle = r.run(timeout=0.2)
    assert idle.packets == 0 and 1 <= idle.polls <= 10


def test_runner_background_thread_wakes_on_inject() -> None:
    a, b = MemPort(1), MemPort(2)
    r = Runner(CrossConnect({1: a, 2: b}), [a, b])
    r.start(poll_interval=5.0)  # only the port's eventfd can wake it early
    try:
        a.inject([b"x"] * 5)
        deadline = time.monotonic() + 2
        while len(b.sent) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(b.sent) == 5
    finally:
        r._stop.set()
        a.inject([b"wake"])
        r.stop_and_join()


class Vanishing(MemPort):
    def recv_batch(self, max_packets: int) -> list[bytes]:
        raise PortError("netdev vanished", port=self.name, port_no=self.port_no)


def test_runner_retires_a_vanished_port_and_keeps_the_others() -> None:
    a, b, dead = MemPort(1), MemPort(2), Vanishing(5, "gone0")
    retired: list[int] = []
    r = Runner(CrossConnect({1: a, 2: b}), [a, b, dead],
               on_port_error=lambda p, e: retired.append(p.port_no))
    a.inject([b"p"] * 10)
    r.run(max_packets=10, timeout=5)
    assert len(b.sent) == 10
    assert retired == [5] and 5 not in r.ports
    assert len(r.errors) == 1 and "gone0" in str(r.errors[0])


def test_runner_refuses_duplicate_port_numbers() -> None:
    r = Runner(CrossConnect({}), [MemPort(1)])
    with pytest.raises(PortError):
        r.add_port(MemPort(1))
    with pytest.raises(PortError):
        r.del_port(9)


def test_memport_is_threadsafe_under_concurrent_inject() -> None:
    p = MemPort(1)
    ts = [threading.Thread(target=p.inject, args=([b"z"] * 500,)) for _ in range(4)]
    for t in ts:
        t.start()
    got = 0
    while any(t.is_alive() for t in ts) or got < 2000:
        got += len(p.recv_batch(64))
        if got >= 2000:
            break
    for t in ts:
        t.join()
    assert got == 2000


def test_call_soon_runs_on_the_loop_thread_and_wakes_it() -> None:
    a = MemPort(1)
    r = Runner(CrossConnect({1: a, 2: MemPort(2)}), [a])
    r.start(poll_interval=600.0)  # only a wake-up can run the call before the bound
    try:
        fut = r.call_soon(threading.get_ident)
        loop_thread = fut.result(timeout=60)
        assert loop_thread != threading.get_ident()
        bad = r.call_soon(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            bad.result(timeout=60)
        assert r.call_soon(lambda: 42).result(timeout=60) == 42
    finally:
        r.stop_and_join(timeout=7)
        r.close()
