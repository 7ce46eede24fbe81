"""Ports of the software datapath: the socket edge of swpath.

Theory of operation
-------------------
A port is what ``SwDatapath.add_port`` takes (``port_no`` and ``send``) plus
what the runner (``swpath/runner.py``) polls: ``fileno()`` and
``recv_batch(n)``.  Two kinds:

``MemPort``
    In memory, for tests: ``inject()`` queues packets to be received,
    ``sent`` collects what the datapath transmitted.  Its ``fileno()`` is an
    eventfd that is readable while packets are queued, so the runner treats
    it like any other port.

``NetdevPort``
    A Linux netdev.  Transmit goes through a PACKET_MMAP tx ring on an
    AF_PACKET socket bound to the netdev with protocol 0 (it never receives):
    ``send`` copies the frame into the ring, ``flush`` hands all queued
    frames to the kernel with one syscall.  A port owned by a runner is
    flushed by it after every round (``autoflush`` off); otherwise ``send``
    flushes at once.  Frames longer than a ring frame go out with a plain
    ``send`` on a second socket.  Receive is a *separate*
    AF_PACKET socket with a TPACKET_V2 rx ring (``swpath/ring.py``; one
    ``poll`` per batch, no syscall per packet), ``PACKET_IGNORE_OUTGOING``
    (our own transmits are never received back) and ``PACKET_VNET_HDR``
    (checksums of locally built packets are completed before forwarding).
    *Where* the rx socket listens is the miss channel, below.

The miss channel (``swpath/miss.py``): with ``miss=True`` the rx socket
listens not on the port but on a per-port miss veth that a lowest-priority tc
catch-all feeds with exactly the packets no tc filter handled, so no packet
is handled twice; with ``miss=False`` (pure software mode) the rx socket
listens on the port itself.

Namespaces: ``NetdevPort(..., netns=name_or_path)`` creates its sockets (and
its miss channel) inside that namespace via ``swpath.miss.in_netns``; the
sockets stay bound to it, so the runner can live in any namespace.

Errors: a device that vanishes is a ``PortError`` naming the port.  ``send``
never raises (it runs inside the datapath's batch, where one dead port must
not cost another port its packets): it counts ``tx_dropped`` and records
``error``; ``recv_batch`` raises ``PortError`` so the runner can retire that
port alone.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog

from dpif.errors import PortError
from swpath.miss import (
    MISS_PRIO,
    MissChannel,
    exists,
    in_netns,
    setup_miss_channel,
    teardown_miss_channel,
)
from swpath.ring import (
    ETH_P_ALL,
    PACKET_ADD_MEMBERSHIP,
    PACKET_IGNORE_OUTGOING,
    PACKET_MR_PROMISC,
    PACKET_VNET_HDR,
    SOL_PACKET,
    RecvmsgReceiver,
    RingGeometry,
    RxCounters,
    RxRing,
    read_stats,
)
from swpath.txring import TxRing

__all__ = ["MISS_PRIO", "MemPort", "MissChannel", "NetdevPort", "PortStats", "RxPort", "in_netns"]

log = structlog.get_logger("swpath.ports")

_NETLINK_ROUTE = 0
_RTMGRP_LINK = 1
_RTM_DELLINK = 17
_VANISHED = {errno.ENXIO, errno.ENODEV, errno.ENETDOWN}


@runtime_checkable
class RxPort(Protocol):
    """What the runner needs from a port."""

    port_no: int
    name: str

    def fileno(self) -> int: ...

    def recv_batch(self, max_packets: int) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class PortStats:
    """A snapshot of one port's counters."""

    rx_packets: int = 0
    rx_bytes: int = 0
    rx_dropped: int = 0  # kernel ring overruns + oversize frames
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0


# --- in memory ----------------------------------------------------------------------------


class MemPort:
    """An in-memory port: ``inject`` packets to receive, read ``sent``."""

    def __init__(self, port_no: int, name: str | None = None) -> None:
        self.port_no = port_no
        self.name = name or f"mem{port_no}"
        self.sent: list[bytes] = []
        self._rx: deque[bytes] = deque()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._tx_bytes = 0
        self._rx_packets = 0
        self._rx_bytes = 0

    def inject(self, packets: Iterable[bytes]) -> None:
        """Queue packets as if they arrived on the port (thread-safe)."""
        with self._lock:
            self._rx.extend(packets)
            if self._rx:
                os.eventfd_write(self._efd, 1)

    def send(self, packet: bytes) -> None:
        self.sent.append(packet)
        self._tx_bytes += len(packet)

    def send_batch(self, packets: list[bytes]) -> None:
        self.sent.extend(packets)
        self._tx_bytes += sum(map(len, packets))

    def fileno(self) -> int:
        return self._efd

    def recv_batch(self, max_packets: int) -> list[bytes]:
        with self._lock:
            n = min(max_packets, len(self._rx))
            out = [self._rx.popleft() for _ in range(n)]
            if not self._rx:
                try:
                    os.eventfd_read(self._efd)
                except BlockingIOError:
                    pass
        self._rx_packets += len(out)
        self._rx_bytes += sum(map(len, out))
        return out

    def stats(self) -> PortStats:
        return PortStats(rx_packets=self._rx_packets, rx_bytes=self._rx_bytes,
                         tx_packets=len(self.sent), tx_bytes=self._tx_bytes)

    def close(self) -> None:
        if self._efd >= 0:
            os.close(self._efd)
            self._efd = -1


# --- a real netdev -----------------------------------------------------------------------


class NetdevPort:
    """A port on a Linux netdev: tx on the netdev, rx from its miss channel.

    ``miss=True``: a tc catch-all hands misses to a per-port veth (see the module
    docstring); ``miss=False``: pure software mode, rx on the netdev itself.
    ``ring=False`` uses recvmsg batching instead of the PACKET_MMAP ring.
    """

    def __init__(self, ifname: str, port_no: int, *, netns: str | None = None,
                 miss: bool = False, ring: bool = True, tx_ring: bool = True,
                 geometry: RingGeometry = RingGeometry()) -> None:
        self.name = ifname
        self.port_no = port_no
        self.netns = netns
        self.error: PortError | None = None
        self.miss_channel: MissChannel | None = None
        self._log = log.bind(port=ifname, port_no=port_no)
        self._tx_packets = self._tx_bytes = self._tx_dropped = 0
        self._tx: socket.socket | None = None
        self._txr: TxRing | None = None
        self._txs: socket.socket | None = None  # the tx ring's socket
        #: flush after every ``send``; a runner that flushes per round turns it off.
        self.autoflush = True
        self._rx: socket.socket | None = None
        self._nl: socket.socket | None = None
        self._receiver: RxRing | RecvmsgReceiver | None = None
        with in_netns(netns):
            try:
                self._open(miss, ring, tx_ring, geometry)
            except BaseException:
                self.close()
                raise
        self._log.info("port up", rx_dev=self.rx_dev, mode="tc-miss" if miss else "software",
                       rx="ring" if ring else "recvmsg")

    def _open(self, miss: bool, ring: bool, tx_ring: bool, geometry: RingGeometry) -> None:
        try:
            self.ifindex = socket.if_nametoindex(self.name)
        except OSError as exc:
            raise PortError("netdev not found", port=self.name, port_no=self.port_no) from exc
        self.rx_dev = self.name
        nl = self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                      _NETLINK_ROUTE)
        nl.bind((0, _RTMGRP_LINK))
        if miss:
            self.miss_channel = setup_miss_channel(self.name)
            self.rx_dev = self.miss_channel.reader
        try:
            self._tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self._tx.bind((self.name, 0))
            if tx_ring:
                txs = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                txs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                               (10_000).to_bytes(16, "little"))  # timeval{0 s, 10 ms}
                try:
                    self._txr = TxRing(txs)
                    txs.bind((self.name, 0))
                except BaseException:
                    txs.close()
                    raise
                self._txs = txs
            rx = self._rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            rx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            self._receiver = RxRing(rx, geometry) if ring else RecvmsgReceiver(rx)
            rx.bind((self.rx_dev, ETH_P_ALL))
            rx_ifindex = socket.if_nametoindex(self.rx_dev)
            mreq = rx_ifindex.to_bytes(4, "little") + PACKET_MR_PROMISC.to_bytes(2, "little") \
                + bytes(10)
            rx.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            rx.setblocking(False)
        except OSError as exc:
            raise PortError(f"cannot open AF_PACKET socket: {exc.strerror}", port=self.name,
                            port_no=self.port_no, device=self.rx_dev) from exc

    def fileno(self) -> int:
        return self._rx.fileno() if self._rx is not None else -1

    def watch_fds(self) -> list[int]:
        """Fds on which any event means "call ``check()``": an rtnetlink socket
        subscribed to link events (with a miss channel the rx socket is on the miss
        veth, which outlives the port, so rx alone would not notice)."""
        return [self._nl.fileno()] if self._nl is not None else []

    def send(self, packet: bytes) -> None:
        """Transmit one frame (queued in the tx ring; see ``autoflush``).  Never
        raises: failures count ``tx_dropped`` and a vanished device sets ``error``."""
        txr = self._txr
        if txr is not None and len(packet) <= txr.max_len:
            try:
                queued = txr.put(packet)
            except OSError as exc:  # the kick inside put (ring full) failed for good
                self._tx_failed(exc, 1)
                return
            if not queued:
                self._tx_dropped += 1
                return
            self._tx_packets += 1
            self._tx_bytes += len(packet)
            if self.autoflush:
                self.flush()
            return
        tx = self._tx
        if tx is None:
            self._tx_dropped += 1
            return
        try:
            tx.send(packet)
        except OSError as exc:
            self._tx_failed(exc, 1)
            return
        self._tx_packets += 1
        self._tx_bytes += len(packet)

    def send_batch(self, packets: list[bytes]) -> None:
        """``send`` each packet, in order, with the tx ring filled in runs."""
        txr = self._txr
        if txr is None or self.autoflush:
            for p in packets:
                self.send(p)
            return
        out = txr.put_many(packets)
        self._tx_packets += out.queued
        self._tx_bytes += out.nbytes
        self._tx_dropped += len(packets) - out.queued - len(out.rest)
        if out.error is not None:  # a kick failed: the ring counted its frames that did not leave
            self._tx_failed(out.error, 0)
        for p in out.rest:  # too long for a ring frame
            self.send(p)

    def flush(self) -> None:
        """Hand every queued frame to the kernel (one syscall); never raises.  The
        frames a failed kick did not send are counted by the ring (``TxRing.dropped``)."""
        txr = self._txr
        if txr is None or not txr.pending:
            return
        try:
            txr.kick()
        except OSError as exc:
            self._tx_failed(exc, 0)

    def _tx_failed(self, exc: OSError, n: int) -> None:
        """Count ``n`` packets dropped for ``exc``; a vanished device sets ``error``."""
        self._tx_dropped += n
        if exc.errno in (errno.ENXIO, errno.ENODEV) and self.error is None:
            self.error = PortError("netdev vanished", port=self.name, port_no=self.port_no)
            self._log.error("netdev vanished on transmit", errno=exc.errno)

    def recv_batch(self, max_packets: int) -> list[bytes]:
        """Up to ``max_packets`` received frames (maybe none); PortError if the device
        is gone."""
        receiver = self._receiver
        if receiver is None:
            raise PortError("port is closed", port=self.name, port_no=self.port_no)
        try:
            return receiver.recv_batch(max_packets)
        except OSError as exc:
            raise self._vanished(exc) from exc

    def stalled(self) -> bool:
        """Is the next rx frame still being copied by the kernel while a later one is
        ready?  The runner then backs off instead of polling (see ``RxRing.stalled``)."""
        return isinstance(self._receiver, RxRing) and self._receiver.stalled()

    def check(self) -> None:
        """Raise PortError if the socket reports an error (the device vanished or
        went down).  The runner calls this when poll says POLLERR."""
        if self.error is not None:
            raise self.error
        if self._rx is None:
            raise PortError("port is closed", port=self.name, port_no=self.port_no)
        if self._nl is not None and self._link_deleted():
            self.error = PortError("netdev vanished", port=self.name, port_no=self.port_no)
            self._log.error("netdev vanished (RTM_DELLINK)")
            raise self.error
        for sock in (self._rx, self._tx):
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock else 0
            if err:
                raise self._vanished(OSError(err, os.strerror(err)))

    def _link_deleted(self) -> bool:
        """Drain pending link notifications; True if one deleted our ifindex."""
        assert self._nl is not None
        gone = False
        while True:
            try:
                data = self._nl.recv(65536)
            except BlockingIOError:
                return gone
            except OSError:  # ENOBUFS: notifications lost; ask the kernel directly
                return not exists(self.name)
            off = 0
            while off + 16 + 8 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                ifindex = struct.unpack_from("=i", data, off + 16 + 4)[0]
                if kind == _RTM_DELLINK and ifindex == self.ifindex:
                    gone = True
                if length < 16:
                    break
                off += (length + 3) & ~3

    def _vanished(self, exc: OSError) -> PortError:
        gone = not os.path.exists(f"/proc/self/fd/{self.fileno()}") or exc.errno in _VANISHED
        what = "netdev vanished" if gone else f"receive failed: {exc.strerror}"
        self.error = PortError(what, port=self.name, port_no=self.port_no, device=self.rx_dev)
        self._log.error(what, errno=exc.errno, device=self.rx_dev)
        return self.error

    def stats(self) -> PortStats:
        rx = self._receiver.counters if self._receiver is not None else RxCounters()
        if self._rx is not None:
            try:
                _packets, drops = read_stats(self._rx)
                rx.kernel_drops += drops
            except OSError:
                pass
        txr = self._txr
        ring_drops, ring_drop_bytes = (0, 0) if txr is None else (txr.dropped, txr.dropped_bytes)
        return PortStats(rx_packets=rx.packets, rx_bytes=rx.bytes,
                         rx_dropped=rx.kernel_drops + rx.oversize,
                         tx_packets=self._tx_packets - ring_drops,
                         tx_bytes=self._tx_bytes - ring_drop_bytes,
                         tx_dropped=self._tx_dropped + ring_drops)

    def close(self, *, keep_miss_channel: bool = False) -> None:
        """Close the sockets; tear the miss channel down unless ``keep_miss_channel``
        (a restart keeps tc sending misses to the veth, which then drops them)."""
        self.flush()
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        if self._txr is not None:
            txr, self._txr = self._txr, None
            txr.close()
            # the ring's count of queued frames that never left outlives it
            self._tx_packets -= txr.dropped
            self._tx_bytes -= txr.dropped_bytes
            self._tx_dropped += txr.dropped
        for s in (self._rx, self._tx, self._txs, self._nl):
            if s is not None:
                s.close()
        self._rx = self._tx = self._txs = self._nl = None
        if self.miss_channel is not None and not keep_miss_channel:
            mc, self.miss_channel = self.miss_channel, None
            with in_netns(self.netns):
                teardown_miss_channel(mc)

    def __repr__(self) -> str:
        return f"NetdevPort({self.name!r}, {self.port_no}, rx_dev={getattr(self, 'rx_dev', '?')!r})"
