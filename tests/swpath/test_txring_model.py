"""Unit tier: ``TxRing`` against a model of the kernel's TPACKET_V2 transmit path.

``KernelTx.send`` follows ``tpacket_snd`` in ``net/packet/af_packet.c`` (6.x)
on the same anonymous memory the ring writes:

* the device gone or down: ENXIO/ENETDOWN before any frame is looked at;
* from ``head``, every ``TP_STATUS_SEND_REQUEST`` frame: longer than the
  device allows -> ``TP_STATUS_WRONG_FORMAT``, head stays, EMSGSIZE; no skb
  memory -> the frame stays SEND_REQUEST, head stays, and ``send`` returns
  the bytes sent so far (EAGAIN if none); a transmit error -> the frame back
  to SEND_REQUEST, head stays, the error; else ``TP_STATUS_SENDING``, head
  moves on, the frame is on the wire;
* ``complete`` is the skb destructor: SENDING -> ``TP_STATUS_AVAILABLE``.
"""

from __future__ import annotations

import errno
import mmap
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swpath.ring import RingGeometry
from swpath.txring import (
    TP_STATUS_AVAILABLE,
    TP_STATUS_SEND_REQUEST,
    TP_STATUS_SENDING,
    TP_STATUS_WRONG_FORMAT,
    TX_DATA_OFF,
    TxRing,
)

GEOM = RingGeometry(frame_size=2048, frame_nr=32, block_size=1 << 16)
MTU_MAX = 1518  # what the kernel lets out on a 1500-byte MTU Ethernet (+ a VLAN tag)


class KernelTx:
    """The kernel side of one tx ring (see the module docstring)."""

    def __init__(self, mm: mmap.mmap, g: RingGeometry = GEOM) -> None:
        self.mm, self.g = mm, g
        self.head = 0
        self.wire: list[bytes] = []
        self.down: int | None = None  # errno before any frame (ENXIO, ENETDOWN)
        self.xmit_ok = -1  # frames that may leave before a transmit error (-1: any)
        self.xmit_errno = errno.ENETDOWN
        self.skb_ok = -1  # frames that get skb memory before it runs out (-1: any)

    def status(self, slot: int) -> int:
        return int(struct.unpack_from("=I", self.mm, slot * self.g.frame_size)[0])

    def _set(self, slot: int, status: int) -> None:
        struct.pack_into("=I", self.mm, slot * self.g.frame_size, status)

    def send(self, data: bytes, flags: int = 0, /) -> int:
        if self.down is not None:
            raise OSError(self.down, "device")
        sent = 0
        while self.status(self.head) == TP_STATUS_SEND_REQUEST:
            off = self.head * self.g.frame_size
            n = struct.unpack_from("=I", self.mm, off + 4)[0]
            if n > MTU_MAX:
                self._set(self.head, TP_STATUS_WRONG_FORMAT)
                raise OSError(errno.EMSGSIZE, "packet size is too long")
            if self.skb_ok == 0:
                if sent:
                    return sent
                raise BlockingIOError(errno.EAGAIN, "no skb")
            if self.xmit_ok == 0:
                raise OSError(self.xmit_errno, "xmit")  # the frame stays SEND_REQUEST
            self.skb_ok -= self.skb_ok > 0
            self.xmit_ok -= self.xmit_ok > 0
            self._set(self.head, TP_STATUS_SENDING)
            self.wire.append(bytes(self.mm[off + TX_DATA_OFF:off + TX_DATA_OFF + n]))
            sent += n
            self.head = self.head + 1 if self.head + 1 < self.g.frame_nr else 0
        return sent

    def complete(self) -> None:
        for slot in range(self.g.frame_nr):
            if self.status(slot) == TP_STATUS_SENDING:
                self._set(slot, TP_STATUS_AVAILABLE)


def pair() -> tuple[KernelTx, TxRing]:
    mm = mmap.mmap(-1, GEOM.size)
    k = KernelTx(mm)
    return k, TxRing.on_memory(mm, GEOM, k)


def pkts(n: int, start: int = 0, size: int = 60) -> list[bytes]:
    return [b"%06d" % (start + i) + bytes(size - 6) for i in range(n)]


def test_put_many_in_order_across_the_wrap_and_long_ones_returned() -> None:
    k, ring = pair()
    first = pkts(20)
    assert ring.put_many(first).queued == 20
    ring.kick()
    k.complete()
    batch = pkts(30, 20)  # wraps: 12 to the end, 18 from frame 0
    long = bytes(ring.max_len + 1)
    out = ring.put_many(batch[:5] + [long] + batch[5:])
    assert (out.queued, out.nbytes, out.rest, out.error) == (30, 30 * 60, [long], None)
    ring.kick()
    assert k.wire == first + batch and ring.pending == 0 and ring.dropped == 0


def test_a_full_ring_kicks_from_put_and_drops_what_still_does_not_fit() -> None:
    k, ring = pair()
    out = ring.put_many(pkts(GEOM.frame_nr + 3))  # one kick frees nothing: SENDING
    assert out.queued == GEOM.frame_nr and out.error is None
    assert k.wire == pkts(GEOM.frame_nr) and ring.dropped == 0


def test_a_kick_failing_mid_batch_counts_exactly_what_left() -> None:
    """The defect: a kick failing inside a batch counted the whole batch as dropped."""
    k, ring = pair()
    assert ring.put_many(pkts(10)).queued == 10
    ring.kick()
    k.complete()
    k.xmit_ok = 25  # the device goes down after 25 more frames
    batch = pkts(40, 10)  # 22 to the ring's end, 10 more from frame 0, then full
    out = ring.put_many(batch)
    # the 33rd needs a free frame: put kicks, 25 leave, the 7 queued after them
    # are taken back and counted, and the batch stops there
    assert out.queued == 32 and out.error is not None and out.error.errno == errno.ENETDOWN
    assert k.wire == pkts(10) + batch[:25]
    assert (ring.dropped, ring.dropped_bytes, ring.pending) == (7, 7 * 60, 0)
    # taken back means free again, and our index is the kernel's head again
    k.xmit_ok = -1
    k.complete()
    assert ring.put_many(pkts(3, 100)).queued == 3
    ring.kick()
    assert k.wire == pkts(10) + batch[:25] + pkts(3, 100)


def test_a_refused_frame_is_counted_once_and_does_not_stall_the_ring() -> None:
    k, ring = pair()
    batch = pkts(4) + [bytes(1600)] + pkts(4, 4)  # 1600 > what the device lets out
    assert ring.put_many(batch).queued == 9
    with pytest.raises(OSError) as failed:  # the kick must fail
        ring.kick()
    assert failed.value.errno == errno.EMSGSIZE
    assert k.wire == pkts(4)
    assert (ring.dropped, ring.dropped_bytes) == (5, 1600 + 4 * 60)  # the refused one and after
    assert k.status(4) == TP_STATUS_AVAILABLE  # WRONG_FORMAT taken back
    assert ring.put_many(pkts(2, 50)).queued == 2
    ring.kick()
    assert k.wire == pkts(4) + pkts(2, 50)  # the ring goes on at the kernel's head


def test_no_skb_memory_keeps_frames_queued_for_the_next_kick() -> None:
    k, ring = pair()
    k.skb_ok = 3
    ring.put_many(pkts(8))
    ring.kick()  # send returns the 3 frames' bytes: no error
    assert k.wire == pkts(3) and ring.pending == 5
    k.skb_ok = 0
    ring.kick()  # EAGAIN: still queued, nothing counted
    assert ring.pending == 5 and ring.dropped == 0
    k.skb_ok = -1
    ring.kick()
    assert k.wire == pkts(8) and ring.pending == 0 and ring.dropped == 0


def test_frames_still_queued_at_close_count_as_dropped() -> None:
    k, ring = pair()
    k.skb_ok = 2
    ring.put_many(pkts(5))
    ring.kick()
    assert ring.pending == 3
    ring.close()
    assert k.wire == pkts(2) and (ring.dropped, ring.dropped_bytes, ring.pending) == (3, 180, 0)


def test_a_vanished_device_takes_every_pending_frame_back() -> None:
    k, ring = pair()
    ring.put_many(pkts(6))
    k.down = errno.ENXIO
    with pytest.raises(OSError) as failed:  # the kick must fail
        ring.kick()
    assert failed.value.errno == errno.ENXIO
    assert k.wire == [] and (ring.dropped, ring.pending) == (6, 0)
    assert all(k.status(s) == TP_STATUS_AVAILABLE for s in range(GEOM.frame_nr))


# one step: ("batch", n, long_at, oversize_at), ("kick",), ("complete",),
# ("fail", xmit_ok) -- the next transmit error after that many frames -- ("nomem", skb_ok)
step = st.one_of(
    st.tuples(st.just("batch"), st.integers(1, 50), st.integers(-1, 50), st.integers(-1, 50)),
    st.tuples(st.just("kick")),
    st.tuples(st.just("complete")),
    st.tuples(st.just("fail"), st.integers(0, 40)),
    st.tuples(st.just("nomem"), st.integers(0, 40)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_every_queued_frame_leaves_once_or_is_counted_dropped(schedule: list[tuple]) -> None:
    """The oracle: what the ring queued, minus what it counted dropped, is what
    reached the wire, in order, and the bytes agree."""
    k, ring = pair()
    seq = queued = nbytes = 0
    for op, *args in schedule:
        if op == "batch":
            n, long_at, oversize_at = args
            batch = []
            for i in range(n):
                seq += 1
                size = ring.max_len + 1 if i == long_at else 1600 if i == oversize_at else 60
                batch.append(b"%06d" % seq + bytes(size - 6))
            out = ring.put_many(batch)
            assert all(len(p) > ring.max_len for p in out.rest)
            queued += out.queued
            nbytes += out.nbytes
        elif op == "kick":
            try:
                ring.kick()
            except OSError:
                pass
        elif op == "complete":
            k.complete()
        elif op == "fail":
            k.xmit_ok = args[0]
        else:
            k.skb_ok = args[0]
    k.xmit_ok = k.skb_ok = -1
    try:
        ring.kick()
    except OSError:
        pass
    assert ring.pending == 0
    assert len(k.wire) == queued - ring.dropped
    assert sum(map(len, k.wire)) == nbytes - ring.dropped_bytes
    assert all(len(p) <= 1518 for p in k.wire)
    seqs = [int(p[:6]) for p in k.wire]
    assert seqs == sorted(set(seqs))  # in order, none twice
