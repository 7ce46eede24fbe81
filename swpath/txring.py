"""AF_PACKET transmit: a PACKET_MMAP TPACKET_V2 tx ring.

Theory of operation
-------------------
A packet socket with ``PACKET_TX_RING`` shares a ring of frames with the
kernel, like the rx ring (``swpath/ring.py``) in the other direction: we copy
a frame in at ``TX_DATA_OFF``, write ``tp_len``/``tp_snaplen`` and set
``TP_STATUS_SEND_REQUEST``; one ``send()`` (``kick``) makes the kernel's
``tpacket_snd`` walk the ring from its head, turning every SEND_REQUEST frame
into an skb (SENDING) until it meets one that is not.  When the skb is freed
the frame comes back ``TP_STATUS_AVAILABLE``.  The kernel reads SEND_REQUEST
frames only inside our own ``send()``, so between kicks the ring is ours to
fill in any order of stores; ``put_many`` fills a run of free frames with C
loops (strided memoryview stores for lengths and statuses, ``map`` for the
copies) and hands everything else to ``put``.

The frames queued since the last kick (``pending``) are the last ones before
our index, and the kernel's head is at the first of them.  A kick can stop
early, and then, as ``tpacket_snd`` (6.x) does it, the head stays at the
frame it stopped at and **that frame and every later one still read
SEND_REQUEST**; the ones before it left.  The stop frame reads
``TP_STATUS_WRONG_FORMAT`` instead when the kernel refused it (longer than
the device's MTU, say).  So after every kick ``_settle`` reads the pending
frames to find out exactly which left:

* no skb memory yet (``send`` succeeds, or fails with EAGAIN/ENOBUFS/
  ETIMEDOUT): the unsent frames stay queued (``pending``) for the next kick;
* any other failure (the device vanished or went down, a refused frame): the
  unsent frames are taken back (AVAILABLE again, our index rewound to the
  kernel's head), counted in ``dropped``/``dropped_bytes``, and the OSError
  goes to the caller.  A frame queued after a refused one is lost with it
  (counted): the kernel's head would stay at the refused frame for a lap.

So a frame is either on the wire or counted in ``dropped``, never both.
"""

from __future__ import annotations

import array
import errno
import mmap
import socket
import struct
from collections import deque
from dataclasses import dataclass
from operator import add
from typing import Protocol

from swpath.ring import _STATUS, RingGeometry, map_ring

__all__ = ["TxRing", "TxBatch", "PACKET_TX_RING", "TX_DATA_OFF"]

PACKET_TX_RING = 13
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4
TX_DATA_OFF = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where tx data starts
_TX_LEN = struct.Struct("=II")  # tp_len, tp_snaplen at offset 4
_UNSENT = TP_STATUS_SEND_REQUEST | TP_STATUS_WRONG_FORMAT
#: kick failures that leave the unsent frames queued for the next kick
_TRANSIENT = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ETIMEDOUT})


class TxSocket(Protocol):
    """What the ring needs of its socket: ``send(b"", flags)`` is the kick."""

    def send(self, data: bytes, flags: int = ..., /) -> int: ...


@dataclass(frozen=True, slots=True)
class TxBatch:
    """What ``put_many`` did: ``queued`` frames of ``nbytes`` bytes went into the
    ring; ``rest`` are the packets longer than ``max_len`` (not queued, for the
    caller to send otherwise).  ``error``: a kick failed (see the module
    docstring) and the packets after the one that met it were not tried.  The
    packets neither queued nor in ``rest`` were dropped."""

    queued: int
    nbytes: int
    rest: list[bytes]
    error: OSError | None = None


class TxRing:
    """A TPACKET_V2 tx ring: ``put`` copies a frame into the ring (no syscall),
    ``kick`` hands every queued frame to the kernel with one ``send``.

    ``dropped``/``dropped_bytes`` count the queued frames that never left (see
    the module docstring).  When no frame is free, ``put`` kicks once (bounded
    by the socket's SO_SNDTIMEO) and returns False if the ring is still full:
    that drop is the caller's to count.  One thread only.
    """

    def __init__(self, sock: socket.socket, geometry: RingGeometry = RingGeometry(frame_nr=512)) -> None:
        self._setup(sock, map_ring(sock, PACKET_TX_RING, geometry), geometry)

    @classmethod
    def on_memory(cls, memory: mmap.mmap, geometry: RingGeometry, sock: TxSocket) -> TxRing:
        """A ring over memory that is not the kernel's, kicked through ``sock``:
        tests pass a model of ``tpacket_snd`` that walks the same memory."""
        if len(memory) < geometry.size:
            raise ValueError("ring: memory smaller than the geometry")
        self = cls.__new__(cls)
        self._setup(sock, memory, geometry)
        return self

    def _setup(self, sock: TxSocket, memory: mmap.mmap, geometry: RingGeometry) -> None:
        self.sock = sock
        self.geometry = geometry
        self.max_len = geometry.frame_size - TX_DATA_OFF
        self._mm: mmap.mmap | None = memory
        self._idx = 0
        self.pending = 0
        self.dropped = 0
        self.dropped_bytes = 0
        self._v32: memoryview | None = memoryview(memory).cast("I")
        self._send_request = memoryview(array.array("I", [TP_STATUS_SEND_REQUEST])
                                        * geometry.frame_nr)

    def put(self, packet: bytes) -> bool:
        """Queue one frame (``len(packet) <= max_len``); False if dropped (ring
        full).  OSError: the kick that was to free a frame failed for good."""
        mm = self._mm
        if mm is None:
            return False
        off = self._idx * self.geometry.frame_size
        if _STATUS.unpack_from(mm, off)[0] != TP_STATUS_AVAILABLE:
            self.kick(wait=True)
            if _STATUS.unpack_from(mm, off)[0] != TP_STATUS_AVAILABLE:
                return False
        n = len(packet)
        start = off + TX_DATA_OFF
        mm[start:start + n] = packet
        _TX_LEN.pack_into(mm, off + 4, n, n)
        _STATUS.pack_into(mm, off, TP_STATUS_SEND_REQUEST)
        self._idx = self._idx + 1 if self._idx + 1 < self.geometry.frame_nr else 0
        self.pending += 1
        return True

    def put_many(self, packets: list[bytes]) -> TxBatch:
        """``put`` each packet in order (see ``TxBatch``): runs of free frames with
        ``_put_run``, anything else one by one with ``put``."""
        max_len, put, put_run = self.max_len, self.put, self._put_run
        queued = nbytes = 0
        rest: list[bytes] = []
        i, n = 0, len(packets)
        while i < n:
            k, kbytes = put_run(packets, i)
            if k:
                i += k
                queued += k
                nbytes += kbytes
                continue
            packet = packets[i]
            i += 1
            if len(packet) > max_len:
                rest.append(packet)
                continue
            try:
                if put(packet):
                    queued += 1
                    nbytes += len(packet)
            except OSError as exc:
                return TxBatch(queued, nbytes, rest, exc)
        return TxBatch(queued, nbytes, rest)

    def _put_run(self, packets: list[bytes], i: int) -> tuple[int, int]:
        """Queue ``packets[i:]`` from our index on, as far as the frames are free,
        the packets fit and the ring does not wrap, with C loops only: (frames
        queued, their bytes); (0, 0) if the first one cannot go this way."""
        mm, v32 = self._mm, self._v32
        if mm is None or v32 is None:
            return 0, 0
        fs, nframes = self.geometry.frame_size, self.geometry.frame_nr
        lo, w = self._idx, fs >> 2
        if v32[lo * w] != TP_STATUS_AVAILABLE or len(packets[i]) > self.max_len:
            return 0, 0
        k = min(len(packets) - i, nframes - lo)
        statuses = v32[lo * w:(lo + k) * w:w].tobytes()
        k = (len(statuses) - len(statuses.lstrip(b"\0"))) >> 2  # the free frames in a row
        run = packets[i:i + k]
        lens = array.array("I", map(len, run))
        if max(lens) > self.max_len:
            k = next(j for j, n in enumerate(lens) if n > self.max_len)
            del run[k:], lens[k:]
        starts = range(lo * fs + TX_DATA_OFF, (lo + k) * fs, fs)
        deque(map(mm.__setitem__, map(slice, starts, map(add, starts, lens)), run), 0)
        v32[lo * w + 1:(lo + k) * w:w] = memoryview(lens)
        v32[lo * w + 2:(lo + k) * w:w] = memoryview(lens)
        # last, the statuses (the kernel reads them only inside our send())
        v32[lo * w:(lo + k) * w:w] = self._send_request[:k]
        self._idx = lo + k if lo + k < nframes else 0
        self.pending += k
        return k, sum(lens)

    def kick(self, *, wait: bool = False) -> None:
        """Send every queued frame (one syscall).  Frames the kernel could not take
        yet stay queued; on any other failure the ones that did not leave are
        taken back and counted in ``dropped``, and the OSError goes to the caller."""
        try:
            self.sock.send(b"", 0 if wait else socket.MSG_DONTWAIT)
        except OSError as exc:
            if not self._settle(exc.errno in _TRANSIENT):
                raise
        else:
            self._settle(True)

    def _settle(self, keep: bool) -> bool:
        """After a kick: find the first pending frame the kernel did not send (it
        walks them in order).  Keep the unsent frames queued if ``keep`` and none
        was refused, and say True; else take them back, count them, say False."""
        mm = self._mm
        n = self.pending
        if mm is None or not n:
            return True
        fs, nframes = self.geometry.frame_size, self.geometry.frame_nr
        first = self._idx - n  # may be negative: the run wraps
        status = _STATUS.unpack_from
        if keep and not status(mm, ((first + n - 1) % nframes) * fs)[0] & _UNSENT:
            self.pending = 0  # the last one left, so all did
            return True
        stop = next((j for j in range(n)
                     if status(mm, ((first + j) % nframes) * fs)[0] & _UNSENT), n)
        if keep and not status(mm, ((first + stop) % nframes) * fs)[0] & TP_STATUS_WRONG_FORMAT:
            self.pending = n - stop
            return True
        for j in range(stop, n):
            off = ((first + j) % nframes) * fs
            self.dropped_bytes += _TX_LEN.unpack_from(mm, off + 4)[0]
            _STATUS.pack_into(mm, off, TP_STATUS_AVAILABLE)
        self.dropped += n - stop
        self._idx = (first + stop) % nframes
        self.pending = 0
        return False

    def close(self) -> None:
        """Unmap the ring; frames still queued (a kick left them) count as dropped."""
        if self._mm is not None:
            self._settle(False)
            if self._v32 is not None:
                self._v32.release()
                self._v32 = None
            self._mm.close()
            self._mm = None
