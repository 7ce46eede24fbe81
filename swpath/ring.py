"""AF_PACKET receive: a PACKET_MMAP TPACKET_V2 rx ring, and a recvmsg fallback.

Theory of operation
-------------------
A packet socket with ``PACKET_RX_RING`` shares a ring of fixed-size frames
with the kernel.  Each frame starts with a ``tpacket2_hdr`` whose
``tp_status`` says who owns it: the kernel writes the packet, then sets
``TP_STATUS_USER``; we copy the bytes out and hand the frame back by writing
``TP_STATUS_KERNEL`` (0).  Draining the ring costs no system call at all;
only when it is empty does the caller ``poll()`` the socket's fd (once per
batch, not once per packet).  We pick ``block_size`` as a multiple of
``frame_size``, so frame *i* sits at ``i * frame_size`` and the ring is one
flat array walked with a single index.  x86's loads are not reordered with
each other, so reading the status before the data is enough; the kernel
orders its writes with ``smp_mb``/``smp_wmb``.

The kernel's side, as ``tpacket_rcv`` in ``net/packet/af_packet.c`` does it
for TPACKET_V2 (6.x; the frame states our reader relies on):

1. *claim*, under ``sk_receive_queue.lock``: the frame at ``rx_ring.head``
   must read ``TP_STATUS_KERNEL`` and its bit in ``rx_owner_map`` must be
   clear, else the packet is dropped (``tp_drops``, ``TP_STATUS_LOSING`` on
   the next frame) and **head does not move** -- a full ring never skips a
   frame.  Otherwise the owner bit is set and ``packet_increment_head``
   moves head on by one;
2. *copy*, with the lock dropped: ``skb_copy_bits``, the header fields, the
   timestamp;
3. *publish*, under the lock again: ``__packet_set_status(TP_STATUS_USER |
   ...)``, clear the owner bit, wake the reader.

Nothing between 1 and 3 can bail out, so **every claimed frame is
published**, but frames are published in claim order only if one context
writes at a time: with two (two CPUs delivering to one socket, say), frame
*i+1* may be published while *i* is still being copied.  (We saw it on this
2-vCPU VM although ``/proc/net/softnet_stat`` put all of the port's receive
processing on one CPU; with tracing blocked here, which context wrote the
later frame is not known.)  A frame being copied
reads exactly like a free one (``TP_STATUS_KERNEL``), and ``poll`` already
says POLLIN because it looks at the frame *before* head.  That is the only
"gap" (our frame not ready, later ones ready) the kernel's code can make,
and it closes by itself.  The forwarding benchmark saw such gaps and the
reader used to *skip* to the next ready frame when it saw the same gap on
two wake-ups.  Skipping is what breaks the ring: the skipped frame is
published a moment later *behind* the reader; when the kernel's head laps
round to it, it still reads ``TP_STATUS_USER``, so the kernel drops every
packet as if the ring were full until the reader has come all the way round
and taken it (a stale packet, one ring late).  A later skip made from an
empty ring finds such a stale frame ahead and jumps the reader past the
kernel's head: the reader then waits at frames it has already released
while the kernel waits for frames behind the reader -- POLLIN (the frame
before head is unread) and nothing at our index, the spinning stall.  The
skip's own check also raced: it read our frame, then scanned on, so a frame
published between the two reads looked like a gap (measured: every such
"gap" of a plain reader re-read as ready at once).  Measured on
this 2-vCPU VM under the benchmark: ``stalled()`` (which re-reads our frame
after seeing the later one) found genuine in-flight frames in some runs --
e.g. 43 episodes in one 4 s run, each the very next frame, published
8-72 ms later -- and the reader, waiting, lost none of them.

So the reader is correct by construction: it takes frames strictly in ring
order and **never skips one that is not ready** -- the kernel will publish
it.  ``recv_batch`` stops at the first frame not ready; ``stalled()`` tells
the caller that a later frame is already published (a frame in flight), so
it should back off briefly instead of polling (poll would return at once).
Frames are released in the order taken, so our index and the kernel's head
never drift apart (``tests/swpath/test_ring_model.py`` checks this against a
model of the three kernel steps above, with interleaved writers).

What the kernel took out of the frame is put back, so the datapath always sees
the frame as it was on the wire:

* VLAN: a NIC or veth may strip the outer tag into skb metadata
  (``TP_STATUS_VLAN_VALID``, ``tp_vlan_tci``, ``tp_vlan_tpid``).  We
  re-insert it after the MAC addresses.
* Checksums: with ``PACKET_VNET_HDR`` the kernel puts a ``virtio_net_hdr``
  in front of the MAC header.  A packet sent by a local stack through a veth
  is ``CHECKSUM_PARTIAL`` (``VIRTIO_NET_HDR_F_NEEDS_CSUM``): its L4 checksum
  holds only the pseudo-header sum.  Forwarding those bytes as they are would
  give the receiver a bad checksum, so we complete it exactly as the kernel's
  ``skb_checksum_help`` does (``csum_start``/``csum_offset``).
* Oversize: a GSO/GRO super-packet (``gso_type`` set) or a frame truncated to
  the ring's snap length cannot be forwarded as one frame; it is dropped and
  counted (``rx_oversize``).  Turn GRO/TSO off on ports that carry TCP, as
  for OVS's AF_PACKET ports.

``RecvmsgReceiver`` is the same contract on a plain socket: after one poll it
calls ``recvmsg`` until ``EAGAIN`` or the batch is full (one syscall per
packet, but one poll per batch).  It exists to measure the ring against.

Sockets are owned by the caller (``swpath/ports.py``, the socket edge); this
module only reads and writes memory and calls ``recvmsg``/``getsockopt``.
The transmit ring is ``swpath/txring.py``.
"""

from __future__ import annotations

import array
import mmap
import socket
import struct
from dataclasses import dataclass
from functools import reduce
from operator import add, or_

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
PACKET_MR_PROMISC = 1
ETH_P_ALL = 0x0003

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_COPY = 1 << 1
TP_STATUS_LOSING = 1 << 2
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size  # 10

# tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec, vlan_tci, vlan_tpid
_T2_HEAD = struct.Struct("=IIIH")  # the hot part: status, len, snaplen, mac
_T2_VLAN = struct.Struct("=HH")  # vlan_tci, vlan_tpid at offset 24
_T2_VLAN_OFF = 24
_STATUS = struct.Struct("=I")
_TPACKET_REQ = struct.Struct("=IIII")  # block_size, block_nr, frame_size, frame_nr
_TPACKET_STATS = struct.Struct("=II")  # tp_packets, tp_drops
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_AUXDATA = struct.Struct("=IIIHHHH")

ETH_P_8021Q = 0x8100
_SLOW_STATUS = TP_STATUS_VLAN_VALID | TP_STATUS_CSUMNOTREADY | TP_STATUS_COPY


@dataclass(frozen=True, slots=True)
class RingGeometry:
    """Shape of a ring: ``frame_nr`` frames of ``frame_size`` bytes, frame *i* at
    ``i * frame_size`` (``block_size`` is a multiple of ``frame_size``)."""

    frame_size: int = 2048
    frame_nr: int = 1024
    block_size: int = 1 << 16

    def __post_init__(self) -> None:
        if self.frame_size % 16 or self.block_size % mmap.PAGESIZE or self.block_size % self.frame_size:
            raise ValueError("ring: frame_size must be 16-aligned and divide block_size "
                             "(a multiple of the page size)")
        if self.frame_nr % (self.block_size // self.frame_size):
            raise ValueError("ring: frame_nr must fill whole blocks")

    @property
    def block_nr(self) -> int:
        return self.frame_nr // (self.block_size // self.frame_size)

    @property
    def size(self) -> int:
        return self.block_size * self.block_nr


@dataclass(slots=True)
class RxCounters:
    """Mutable receive counters of one socket (read by ports as a snapshot)."""

    packets: int = 0
    bytes: int = 0
    oversize: int = 0  # GSO super-packets / truncated frames, dropped
    kernel_drops: int = 0  # ring full: PACKET_STATISTICS tp_drops


def ones_complement(data: bytes) -> int:
    """RFC 1071 sum of ``data`` as 16-bit big-endian words (0..0xffff).

    Uses 2**16 == 1 (mod 0xffff): the end-around-carry sum of the words is
    the whole buffer read as one big integer, modulo 0xffff (0 read as 0xffff
    unless every byte is zero).
    """
    if len(data) & 1:
        data += b"\0"
    n = int.from_bytes(data, "big")
    s = n % 0xFFFF
    return 0xFFFF if s == 0 and n else s


def complete_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Finish a CHECKSUM_PARTIAL frame like the kernel's ``skb_checksum_help``."""
    where = csum_start + csum_offset
    if where + 2 > len(frame) or csum_start >= len(frame):
        return frame
    csum = (~ones_complement(frame[csum_start:])) & 0xFFFF
    if csum == 0:
        csum = 0xFFFF  # CSUM_MANGLED_0: an all-zero UDP checksum means "none"
    return frame[:where] + csum.to_bytes(2, "big") + frame[where + 2:]


def insert_vlan(frame: bytes, tci: int, tpid: int) -> bytes:
    """Put a stripped VLAN tag back after the two MAC addresses."""
    return frame[:12] + struct.pack(">HH", tpid or ETH_P_8021Q, tci) + frame[12:]


def _fixup(frame: bytes, vnet: bytes | None, vlan: tuple[int, int] | None,
           counters: RxCounters) -> bytes | None:
    """Slow path of one frame: oversize drop, checksum completion, VLAN re-insertion."""
    if vnet is not None:
        flags, gso_type, _hdr_len, _gso_size, csum_start, csum_offset = VNET_HDR.unpack(vnet)
        if gso_type:
            counters.oversize += 1
            return None
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            frame = complete_checksum(frame, csum_start, csum_offset)
    if vlan is not None:
        frame = insert_vlan(frame, vlan[0], vlan[1])
    return frame


def map_ring(sock: socket.socket, which: int, geometry: RingGeometry) -> mmap.mmap:
    """Give ``sock`` (not bound yet) a TPACKET_V2 ring of ``geometry``, ``which``
    being ``PACKET_RX_RING`` or ``PACKET_TX_RING``, and map it read-write."""
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    sock.setsockopt(SOL_PACKET, which, _TPACKET_REQ.pack(
        geometry.block_size, geometry.block_nr, geometry.frame_size, geometry.frame_nr))
    return mmap.mmap(sock.fileno(), geometry.size, mmap.MAP_SHARED,
                     mmap.PROT_READ | mmap.PROT_WRITE)


def read_stats(sock: socket.socket) -> tuple[int, int]:
    """PACKET_STATISTICS (packets, drops) since the last call (the kernel resets them)."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
    packets, drops = _TPACKET_STATS.unpack(raw)
    return packets, drops


class RxRing:
    """A TPACKET_V2 rx ring on an AF_PACKET socket that is not bound yet.

    Call before ``bind`` (the ring must exist before packets arrive);
    ``vnet_hdr`` must match the socket's PACKET_VNET_HDR setting.
    """

    def __init__(self, sock: socket.socket, geometry: RingGeometry = RingGeometry(), *,
                 vnet_hdr: bool = True) -> None:
        self.geometry = geometry
        self.vnet_hdr = vnet_hdr
        self.counters = RxCounters()
        self._mm: mmap.mmap | None = map_ring(sock, PACKET_RX_RING, geometry)
        self._idx = 0
        #: ``stalled()`` answers that found a frame in flight (see the theory of operation)
        self.stalls = 0
        self._views()

    @classmethod
    def on_memory(cls, memory: mmap.mmap, geometry: RingGeometry, *,
                  vnet_hdr: bool = False) -> RxRing:
        """A reader over ring memory that is not the kernel's, e.g. an anonymous
        mmap that tests fill with a model of ``tpacket_rcv``."""
        if len(memory) < geometry.size:
            raise ValueError("ring: memory smaller than the geometry")
        self = cls.__new__(cls)
        self.geometry, self.vnet_hdr, self.counters = geometry, vnet_hdr, RxCounters()
        self._mm, self._idx, self.stalls = memory, 0, 0
        self._views()
        return self

    def stalled(self, lookahead: int = 16) -> bool:
        """True if the frame at our index is not ready yet while a later one is:
        the kernel claimed it and is still copying (see the theory of operation).
        It will be published; the caller backs off and retries, never skips."""
        mm = self._mm
        if mm is None:
            return False
        fs, nframes, idx = self.geometry.frame_size, self.geometry.frame_nr, self._idx
        status = _STATUS.unpack_from
        for step in range(1, min(lookahead, nframes)):
            if status(mm, ((idx + step) % nframes) * fs)[0] & TP_STATUS_USER:
                # re-read ours *after* the later frame: it may have been published
                # in between (x86 keeps the two loads in order)
                if status(mm, idx * fs)[0] & TP_STATUS_USER:
                    return False
                self.stalls += 1
                return True
        return False

    def recv_batch(self, max_packets: int) -> list[bytes]:
        """Every ready frame, up to ``max_packets``, in ring order; never blocks, no
        syscall.  Plain frames are read a run at a time (see ``_take``); a run with
        a frame that needs fixing up goes frame by frame (``_recv_slow``)."""
        if self._mm is None:
            return []
        out = self._take(max_packets)
        if out is None:
            return self._recv_slow(max_packets)
        if len(out) < max_packets and self._idx == 0 and out:  # ran up to the ring's end
            more = self._take(max_packets - len(out))
            out += self._recv_slow(max_packets - len(out)) if more is None else more
        return out

    def _take(self, max_packets: int) -> list[bytes] | None:
        """The ready frames from our index up to the ring's end (at most
        ``max_packets``) with strided memoryviews: one C call each for statuses,
        lengths and the release, none per frame in Python.  None (nothing taken)
        if one of them needs the slow path: VLAN, checksum, GSO or truncated."""
        mm, v32 = self._mm, self._v32
        assert mm is not None and v32 is not None
        lo, fs = self._idx, self.geometry.frame_size
        w = fs >> 2
        if not v32[lo * w] & TP_STATUS_USER:
            return []
        hi = min(lo + max_packets, self.geometry.frame_nr)
        statuses = v32[lo * w:hi * w:w].tolist()
        k = 0
        for status in statuses:  # stop at the first frame not ready: never skip one
            if not status & TP_STATUS_USER:
                break
            k += 1
        if reduce(or_, statuses[:k]) & _SLOW_STATUS:
            return None
        b, e = lo * w, (lo + k) * w
        snaps = v32[b + 2:e:w].tolist()
        if v32[b + 1:e:w].tolist() != snaps:  # tp_len != tp_snaplen: truncated
            return None
        macs = self._v16[(lo * fs + 12) >> 1:(lo + k) * fs >> 1:fs >> 1].tolist()
        mac = macs[0]
        if macs.count(mac) != k:
            return None
        if self.vnet_hdr and any(self._v8[lo * fs + mac - VNET_HDR_LEN + 1:(lo + k) * fs:fs]):
            return None  # a GSO packet (virtio_net_hdr gso_type)
        starts = range(lo * fs + mac, (lo + k) * fs, fs)
        frames = list(map(mm.__getitem__, map(slice, starts, map(add, starts, snaps))))
        v32[b:e:w] = self._zeros[:k]  # hand the frames back (TP_STATUS_KERNEL), in order
        self._idx = lo + k if lo + k < self.geometry.frame_nr else 0
        self.counters.packets += k
        self.counters.bytes += sum(snaps)
        return frames

    def _recv_slow(self, max_packets: int) -> list[bytes]:
        """``recv_batch`` one frame at a time, with every fix-up."""
        mm = self._mm
        if mm is None:
            return []
        out: list[bytes] = []
        append = out.append
        head = _T2_HEAD.unpack_from
        release = _STATUS.pack_into
        fs = self.geometry.frame_size
        nframes = self.geometry.frame_nr
        idx = self._idx
        nbytes = 0
        slow_mask = TP_STATUS_VLAN_VALID | TP_STATUS_CSUMNOTREADY
        vnet = self.vnet_hdr
        for _ in range(max_packets):
            off = idx * fs
            status, length, snaplen, mac = head(mm, off)
            if not status & TP_STATUS_USER:
                break  # free, or claimed and still being copied: wait for it, never skip
            start = off + mac
            if snaplen != length:
                self.counters.oversize += 1
            elif status & slow_mask or (vnet and mm[start - VNET_HDR_LEN + 1]):
                vlan = None
                if status & TP_STATUS_VLAN_VALID:
                    tci, tpid = _T2_VLAN.unpack_from(mm, off + _T2_VLAN_OFF)
                    vlan = (tci, tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q)
                hdr = mm[start - VNET_HDR_LEN:start] if vnet else None
                frame = _fixup(mm[start:start + snaplen], hdr, vlan, self.counters)
                if frame is not None:
                    append(frame)
                    nbytes += len(frame)
            else:
                append(mm[start:start + snaplen])
                nbytes += snaplen
            release(mm, off, TP_STATUS_KERNEL)
            idx += 1
            if idx == nframes:
                idx = 0
        self._idx = idx
        self.counters.packets += len(out)
        self.counters.bytes += nbytes
        return out

    def _views(self) -> None:
        """Typed views of the ring memory for ``_take`` (released by ``close``)."""
        assert self._mm is not None
        self._v8: memoryview = memoryview(self._mm)
        self._v16: memoryview = self._v8.cast("H")
        self._v32: memoryview | None = self._v8.cast("I")
        self._zeros = memoryview(array.array("I", bytes(4 * self.geometry.frame_nr)))

    def close(self) -> None:
        if self._mm is not None:
            if self._v32 is not None:
                self._v32.release()
            self._v16.release()
            self._v8.release()
            self._v32 = None
            self._mm.close()
            self._mm = None


class RecvmsgReceiver:
    """The ring's contract on a plain non-blocking AF_PACKET socket (for comparison)."""

    def __init__(self, sock: socket.socket, *, vnet_hdr: bool = True, snaplen: int = 65536) -> None:
        self.sock = sock
        self.vnet_hdr = vnet_hdr
        self.snaplen = snaplen
        self.counters = RxCounters()
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setblocking(False)

    def recv_batch(self, max_packets: int) -> list[bytes]:
        out: list[bytes] = []
        recvmsg = self.sock.recvmsg
        cmsg_space = socket.CMSG_SPACE(_AUXDATA.size)
        for _ in range(max_packets):
            try:
                data, ancdata, _flags, _addr = recvmsg(self.snaplen, cmsg_space)
            except BlockingIOError:
                break
            vnet = None
            if self.vnet_hdr:
                vnet, data = data[:VNET_HDR_LEN], data[VNET_HDR_LEN:]
            vlan = None
            for level, kind, cdata in ancdata:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= _AUXDATA.size:
                    st, _l, _s, _m, _n, tci, tpid = _AUXDATA.unpack_from(cdata)
                    if st & TP_STATUS_VLAN_VALID:
                        vlan = (tci, tpid if st & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q)
            frame = _fixup(data, vnet, vlan, self.counters) if (vnet and vnet[:2] != b"\0\0") or vlan else data
            if frame is not None:
                out.append(frame)
                self.counters.bytes += len(frame)
        self.counters.packets += len(out)
        return out

    def close(self) -> None:
        pass
