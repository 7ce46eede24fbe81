"""AF_PACKET transmit: a PACKET_MMAP TPACKET_V2 tx ring.

Theory of operation
-------------------
A packet socket with ``PACKET_TX_RING`` shares a ring of frames with the
kernel, like the rx ring (``swpath/ring.py``) in the other direction: we copy
a frame in at ``TX_DATA_OFF``, write ``tp_len``/``tp_snaplen`` and set
``TP_STATUS_SEND_REQUEST``; one ``send()`` (``kick``) makes the kernel's
``tpacket_snd`` walk the ring from its head, turning every SEND_REQUEST frame
into an skb (SENDING) until it meets one that is not.  When the skb is freed
the frame comes back ``TP_STATUS_AVAILABLE`` (or ``TP_STATUS_WRONG_FORMAT``
if the kernel refused it).  The kernel reads SEND_REQUEST frames only inside
our own ``send()``, so between kicks the ring is ours to fill in any order of
stores; ``put_many`` fills a run of free frames with C loops (strided
memoryview stores for lengths and statuses, ``map`` for the copies).
"""

from __future__ import annotations

import array
import mmap
import socket
import struct
from collections import deque
from operator import add

from swpath.ring import _STATUS, _TPACKET_REQ, PACKET_VERSION, SOL_PACKET, TPACKET_V2, RingGeometry

__all__ = ["TxRing", "PACKET_TX_RING", "TX_DATA_OFF"]

PACKET_TX_RING = 13
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4
TX_DATA_OFF = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where tx data starts
_TX_LEN = struct.Struct("=II")  # tp_len, tp_snaplen at offset 4
_TX_HDR = struct.Struct("=III")  # tp_status, tp_len, tp_snaplen


class TxRing:
    """A TPACKET_V2 tx ring: ``put`` copies a frame into the ring (no syscall),
    ``kick`` hands every queued frame to the kernel with one ``send``.

    The kernel returns a frame to us (AVAILABLE) when its skb is freed; a frame
    it could not send comes back WRONG_FORMAT and is counted in ``dropped``
    (it had been counted as sent).  When no frame is free, ``put`` kicks once
    (bounded by the socket's SO_SNDTIMEO) and returns False if the ring is
    still full: that drop is the caller's to count.  One thread only.
    """

    def __init__(self, sock: socket.socket, geometry: RingGeometry = RingGeometry(frame_nr=512)) -> None:
        self.sock = sock
        self.geometry = geometry
        self.max_len = geometry.frame_size - TX_DATA_OFF
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        req = _TPACKET_REQ.pack(geometry.block_size, geometry.block_nr, geometry.frame_size,
                                geometry.frame_nr)
        sock.setsockopt(SOL_PACKET, PACKET_TX_RING, req)
        self._mm: mmap.mmap | None = mmap.mmap(sock.fileno(), geometry.size, mmap.MAP_SHARED,
                                               mmap.PROT_READ | mmap.PROT_WRITE)
        self._idx = 0
        self.pending = 0
        self.dropped = 0
        self._v32: memoryview | None = memoryview(self._mm).cast("I")
        self._send_request = memoryview(array.array("I", [TP_STATUS_SEND_REQUEST])
                                        * geometry.frame_nr)

    def put(self, packet: bytes) -> bool:
        """Queue one frame (``len(packet) <= max_len``); False if dropped."""
        mm = self._mm
        if mm is None:
            return False
        off = self._idx * self.geometry.frame_size
        status = _STATUS.unpack_from(mm, off)[0]
        if status != TP_STATUS_AVAILABLE:
            if status == TP_STATUS_WRONG_FORMAT:
                self.dropped += 1
            else:
                self.kick(wait=True)
                status = _STATUS.unpack_from(mm, off)[0]
                if status == TP_STATUS_WRONG_FORMAT:
                    self.dropped += 1
                elif status != TP_STATUS_AVAILABLE:
                    return False
        n = len(packet)
        start = off + TX_DATA_OFF
        mm[start:start + n] = packet
        _TX_LEN.pack_into(mm, off + 4, n, n)
        _STATUS.pack_into(mm, off, TP_STATUS_SEND_REQUEST)
        self._idx = self._idx + 1 if self._idx + 1 < self.geometry.frame_nr else 0
        self.pending += 1
        return True

    def put_many(self, packets: list[bytes]) -> tuple[int, int, list[bytes]]:
        """``put`` each packet in order: (frames queued, their bytes, the packets
        longer than ``max_len``, not queued, for the caller to send otherwise).
        The packets neither queued nor returned were dropped (ring full)."""
        mm = self._mm
        if mm is None:
            return 0, 0, []
        fs, nframes, max_len = self.geometry.frame_size, self.geometry.frame_nr, self.max_len
        k, lo = len(packets), self._idx
        if lo + k <= nframes and self._v32 is not None:
            # a run of free frames: statuses, lengths and copies with C loops only
            w, v32 = fs >> 2, self._v32
            lens = array.array("I", map(len, packets))
            if (not any(v32[lo * w:(lo + k) * w:w])) and max(lens) <= max_len:
                starts = range(lo * fs + TX_DATA_OFF, (lo + k) * fs, fs)
                deque(map(mm.__setitem__, map(slice, starts, map(add, starts, lens)), packets), 0)
                v32[lo * w + 1:(lo + k) * w:w] = memoryview(lens)
                v32[lo * w + 2:(lo + k) * w:w] = memoryview(lens)
                # last, the statuses (the kernel reads them only inside our send())
                v32[lo * w:(lo + k) * w:w] = self._send_request[:k]
                self._idx = lo + k if lo + k < nframes else 0
                self.pending += k
                return k, sum(lens), []
        status_of, hdr = _STATUS.unpack_from, _TX_HDR.pack_into
        idx = self._idx
        total = nbytes = fresh = 0  # fresh: queued since self.pending was last updated
        rest: list[bytes] = []
        for packet in packets:
            n = len(packet)
            if n > max_len:
                rest.append(packet)
                continue
            off = idx * fs
            if status_of(mm, off)[0] != TP_STATUS_AVAILABLE:  # the slow path: put()
                self._idx, self.pending, fresh = idx, self.pending + fresh, 0
                if self.put(packet):
                    total += 1
                    nbytes += n
                idx = self._idx
                continue
            start = off + TX_DATA_OFF
            mm[start:start + n] = packet
            # status and lengths in one store: the kernel reads SEND_REQUEST frames
            # only inside our own send() (tpacket_snd), never concurrently
            hdr(mm, off, TP_STATUS_SEND_REQUEST, n, n)
            idx = idx + 1 if idx + 1 < nframes else 0
            fresh += 1
            total += 1
            nbytes += n
        self._idx = idx
        self.pending += fresh
        return total, nbytes, rest

    def kick(self, *, wait: bool = False) -> None:
        """Send every queued frame (one syscall); OSError goes to the caller."""
        self.pending = 0
        self.sock.send(b"", 0 if wait else socket.MSG_DONTWAIT)

    def close(self) -> None:
        if self._mm is not None:
            if self._v32 is not None:
                self._v32.release()
                self._v32 = None
            self._mm.close()
            self._mm = None
