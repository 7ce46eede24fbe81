"""Unit tier: ``RxRing`` against a model of the kernel's TPACKET_V2 receive path.

``KernelRx`` follows ``tpacket_rcv`` in ``net/packet/af_packet.c`` (6.x)
step by step, on the same anonymous memory the reader reads:

* ``claim`` (under ``sk_receive_queue.lock`` in the kernel): the frame at
  ``head`` must read ``TP_STATUS_KERNEL`` and its ``rx_owner_map`` bit must be
  clear, else the packet is dropped and head stays; otherwise the bit is set
  and head moves on (``packet_increment_head``);
* ``copy`` (lock dropped): payload and header fields, status untouched;
* ``publish`` (lock again): ``TP_STATUS_USER`` (``| TP_STATUS_LOSING`` while
  drops are unread), owner bit cleared.

``readable`` is ``packet_poll``'s ring test: POLLIN when the frame *before*
head is not ``TP_STATUS_KERNEL``.  Several writers may hold claimed frames at
once (two CPUs, or a vCPU descheduled between claim and publish).
"""

from __future__ import annotations

import mmap
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from swpath.ring import (
    TP_STATUS_KERNEL,
    TP_STATUS_LOSING,
    TP_STATUS_USER,
    RingGeometry,
    RxRing,
)

GEOM = RingGeometry(frame_size=2048, frame_nr=32, block_size=1 << 16)
MAC = 80  # where the packet starts in a frame (the kernel's macoff)


class KernelRx:
    """The kernel side of one rx ring (see the module docstring)."""

    def __init__(self, mm: mmap.mmap, g: RingGeometry = GEOM) -> None:
        self.mm, self.g = mm, g
        self.head = 0
        self.owner: set[int] = set()
        self.drops = 0

    def _status(self, slot: int) -> int:
        return int(struct.unpack_from("=I", self.mm, slot * self.g.frame_size)[0])

    def claim(self) -> int | None:
        slot = self.head
        if self._status(slot) != TP_STATUS_KERNEL or slot in self.owner:
            self.drops += 1
            return None
        self.owner.add(slot)
        self.head = slot + 1 if slot + 1 < self.g.frame_nr else 0
        return slot

    def copy(self, slot: int, payload: bytes) -> None:
        off = slot * self.g.frame_size
        self.mm[off + MAC:off + MAC + len(payload)] = payload
        struct.pack_into("=IIH", self.mm, off + 4, len(payload), len(payload), MAC)

    def publish(self, slot: int) -> None:
        status = TP_STATUS_USER | (TP_STATUS_LOSING if self.drops else 0)
        struct.pack_into("=I", self.mm, slot * self.g.frame_size, status)
        self.owner.discard(slot)

    def readable(self) -> bool:
        prev = self.head - 1 if self.head else self.g.frame_nr - 1
        return self._status(prev) != TP_STATUS_KERNEL


def pair() -> tuple[KernelRx, RxRing]:
    mm = mmap.mmap(-1, GEOM.size)
    return KernelRx(mm), RxRing.on_memory(mm, GEOM)


def test_a_frame_in_flight_is_waited_for_never_skipped() -> None:
    k, rx = pair()
    a, b = k.claim(), k.claim()  # two writers claim frames 0 and 1
    assert a == 0 and b == 1
    k.copy(b, b"second")
    k.publish(b)  # the second writer finishes first
    assert k.readable()  # poll says POLLIN ...
    assert rx.recv_batch(8) == []  # ... but our frame is still being copied
    assert rx.stalled() and rx.stalls == 1  # so the runner backs off, not polls
    k.copy(a, b"first")
    k.publish(a)
    assert not rx.stalled()
    assert rx.recv_batch(8) == [b"first", b"second"]
    assert not k.readable() and rx.recv_batch(8) == []


def test_full_ring_drops_without_moving_head() -> None:
    k, rx = pair()
    for i in range(GEOM.frame_nr):
        s = k.claim()
        assert s is not None
        k.copy(s, b"%d" % i)
        k.publish(s)
    assert k.claim() is None and k.head == 0  # full: dropped, head stays
    got = rx.recv_batch(4)
    assert got == [b"0", b"1", b"2", b"3"]
    s = k.claim()
    assert s == 0  # the freed frame is the next claimed: reader and head agree
    k.copy(s, b"new")
    k.publish(s)
    rest = rx.recv_batch(GEOM.frame_nr)
    assert rest == [b"%d" % i for i in range(4, GEOM.frame_nr)] + [b"new"]


def test_stalled_is_false_on_an_empty_or_ready_ring() -> None:
    k, rx = pair()
    assert not rx.stalled()
    s = k.claim()
    assert s is not None
    assert not rx.stalled()  # in flight, but nothing later is ready: poll will wait
    k.copy(s, b"x")
    k.publish(s)
    assert not rx.stalled()


# One step of a schedule: ("arrive", writer), ("publish", writer), ("read", n).
step = st.one_of(
    st.tuples(st.just("arrive"), st.integers(0, 2)),
    st.tuples(st.just("publish"), st.integers(0, 2)),
    st.tuples(st.just("read"), st.integers(1, 40)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=300))
def test_interleaved_writers_lose_nothing_claimed_and_keep_claim_order(
        schedule: list[tuple[str, int]]) -> None:
    k, rx = pair()
    in_flight: dict[int, tuple[int, bytes]] = {}  # writer -> (slot, payload)
    claimed: list[bytes] = []  # payloads in claim order
    got: list[bytes] = []
    seq = 0
    for op, arg in schedule:
        if op == "arrive" and arg not in in_flight:  # a writer handles one packet at a time
            seq += 1
            payload = b"pkt%06d" % seq
            slot = k.claim()
            if slot is not None:
                k.copy(slot, payload)
                in_flight[arg] = (slot, payload)
                claimed.append(payload)
        elif op == "publish" and arg in in_flight:
            k.publish(in_flight.pop(arg)[0])
        elif op == "read":
            got += rx.recv_batch(arg)
            if not got[-1:] and rx.stalled():
                assert in_flight, "stalled with no frame in flight"
    for slot, _ in in_flight.values():  # every claimed frame is published
        k.publish(slot)
    got += rx.recv_batch(GEOM.frame_nr)
    assert got == claimed  # nothing lost, nothing twice, claim order
    assert rx.recv_batch(GEOM.frame_nr) == [] and not k.readable()
    assert not rx.stalled()
    # in step: the next packet lands where the reader looks
    slot = k.claim()
    assert slot is not None
    k.copy(slot, b"after")
    k.publish(slot)
    assert rx.recv_batch(1) == [b"after"]


def test_runs_with_a_frame_to_fix_up_and_across_the_wrap() -> None:
    """The strided fast path and the frame-by-frame path agree: a VLAN frame
    (``TP_STATUS_VLAN_VALID``) and a truncated one inside runs that wrap."""
    k, rx = pair()
    eth = bytes(range(12)) + b"\x08\x00" + b"payload"
    for _ in range(GEOM.frame_nr - 3):  # move head and our index near the end
        s = k.claim()
        assert s is not None
        k.copy(s, eth)
        k.publish(s)
    assert len(rx.recv_batch(GEOM.frame_nr)) == GEOM.frame_nr - 3
    want = []
    for i in range(8):
        s = k.claim()
        assert s is not None
        pkt = eth + bytes([i])
        k.copy(s, pkt)
        k.publish(s)
        off = s * GEOM.frame_size
        if i == 2:  # the kernel stripped a tag into the header
            struct.pack_into("=HH", k.mm, off + 24, 0x0064, 0x8100)
            struct.pack_into("=I", k.mm, off, TP_STATUS_USER | 0x10 | 0x40)
            want.append(pkt[:12] + b"\x81\x00\x00\x64" + pkt[12:])
        elif i == 5:  # truncated to the snap length: dropped and counted
            struct.pack_into("=I", k.mm, off + 4, len(pkt) + 100)
        else:
            want.append(pkt)
    got = rx.recv_batch(2) + rx.recv_batch(64)
    assert got == want
    assert rx.counters.oversize == 1
    assert rx.recv_batch(64) == [] and not k.readable()
