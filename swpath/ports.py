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

The miss channel: no packet handled twice
-----------------------------------------
An AF_PACKET tap sees a packet *before* tc ingress.  If the port's ingress
holds flower filters that forward some traffic, a raw socket on the port
would also see that traffic and flowpath would forward it a second time.  So
on a port where tc handles traffic, flowpath does not listen on the port:

    peer ──> [port ingress: flower prio 1..N (offloaded/tc megaflows)]
                 │ miss
                 └─ catch-all, prio MISS_PRIO (65535, lowest), chain 0,
                    protocol all: matchall action mirred egress redirect
                          │
                          v
             fpm<ifindex>t ══veth══ fpm<ifindex>r  <── flowpath's rx socket

* A packet that a flower filter forwards (redirect/drop/...) ends in tc and
  never reaches the catch-all: flowpath does not see it.
* A packet no filter takes falls through to the catch-all at the lowest
  priority, which redirects it into the miss veth ``fpm<ifindex>t``; it comes
  out of the peer ``fpm<ifindex>r``, where flowpath's rx socket reads it.
  ``in_port`` is the ``port_no`` of the ``NetdevPort`` owning that miss
  device: a miss veth serves exactly one port.
* Nothing the catch-all redirects continues to the port's own stack, and
  flowpath transmits on the port itself (egress), which no ingress filter
  sees: nothing loops.
* The miss veths carry no addresses, have IPv6 and ARP off and are never
  transmitted on by anyone but the catch-all, so nothing else appears there.
* The catch-all is matchall when the kernel has it (cls_matchall), else u32
  ``match u32 0 0`` (this host's kernel has u32 + mirred but neither matchall
  nor flower).  It sits at a fixed (chain, prio): re-running setup adopts a
  catch-all that already redirects to the port's miss veth, so a restart
  keeps misses flowing without a gap.
  Only flowpath's prio is ever deleted (with kind, prio and handle), and the
  ingress qdisc only if flowpath created it and no filter is left on it.
* A flow in another chain (``goto chain`` for recirculation) needs its own
  catch-all in that chain: ``setup_miss_channel(..., chain=N)``.

Without tc on a port (pure software mode, ``miss=False``) the rx socket
listens on the port itself: it is then the miss channel, since nothing else
handles the port's traffic.

``install_catchall``/``remove_catchall`` are the only tc calls here (tc CLI,
so the offload layer can take them over later as one unit).

Namespaces: pass ``netns=`` (a name under /run/netns or a path) and every
socket and tc call is made inside it (``setns`` on the calling thread for the
duration of the setup only; sockets stay bound to the namespace they were
created in).

Errors: a device that vanishes is a ``PortError`` naming the port.  ``send``
never raises (it runs inside the datapath's batch, where one dead port must
not cost another port its packets): it counts ``tx_dropped`` and records
``error``; ``recv_batch`` raises ``PortError`` so the runner can retire that
port alone.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog

from dpif.errors import DeviceError, PortError
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
    TxRing,
    read_stats,
)

log = structlog.get_logger("swpath.ports")

#: tc priority of the miss catch-all: the lowest there is, so every flower
#: filter of flowpath (and anyone else) is tried first.
MISS_PRIO = 0xFFFF
#: tc handle of the catch-all (fixed, so a delete names exactly this filter).
MISS_HANDLE = 1
CLONE_NEWNET = 0x40000000
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


# --- namespaces and tc (the I/O edge) -------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> str:
    return netns if "/" in netns else f"/run/netns/{netns}"


@contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body (and subprocesses it starts) in ``netns``; this thread only."""
    if netns is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError("network namespace not found", netns=netns) from exc
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise DeviceError(f"setns failed: {os.strerror(err)}", netns=netns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot recover
                raise RuntimeError("cannot return to the original network namespace")
    finally:
        os.close(own)


def _tc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise DeviceError("tc failed: " + (proc.stderr.strip() or proc.stdout.strip()),
                          command="tc " + " ".join(args))
    return proc


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DeviceError("ip failed: " + proc.stderr.strip(), command="ip " + " ".join(args))


def _catchall_now(dev: str, prio: int, chain: int) -> tuple[str | None, set[str]]:
    """(classifier kind at our (chain, prio), devices its actions redirect to)."""
    proc = _tc("-j", "filter", "show", "dev", dev, "ingress", "prio", str(prio), "chain",
               str(chain), check=False)
    try:
        entries = json.loads(proc.stdout or "[]")
    except ValueError:
        entries = []
    kind = next((e.get("kind") for e in entries if e.get("kind")), None)
    targets = {a.get("to_dev") for e in entries
               for a in e.get("options", {}).get("actions", []) if a.get("to_dev")}
    return kind, targets


def install_catchall(dev: str, redirect_to: str, *, prio: int = MISS_PRIO,
                     chain: int = 0) -> tuple[str, bool]:
    """Put the miss catch-all on ``dev``'s ingress, redirecting to ``redirect_to``.

    Returns (classifier kind used, whether we created the ingress qdisc).
    Idempotent: a catch-all already at (chain, prio) that redirects to
    ``redirect_to`` is adopted untouched (traffic keeps flowing through a
    restart); anything else at that prio (ours alone) is replaced.
    cls_matchall refuses ``replace`` of an existing filter (EEXIST), hence
    look first, then delete + add.
    """
    created = _tc("qdisc", "add", "dev", dev, "ingress", check=False).returncode == 0
    kind, targets = _catchall_now(dev, prio, chain)
    if kind in ("matchall", "u32") and targets == {redirect_to}:
        return kind, created
    where = ["dev", dev, "ingress", "protocol", "all", "prio", str(prio), "chain", str(chain)]
    if kind is not None:
        remove_catchall(dev, kind, prio=prio, chain=chain)
    action = ["action", "mirred", "egress", "redirect", "dev", redirect_to]
    mall = _tc("filter", "add", *where, "handle", str(MISS_HANDLE), "matchall", *action,
               check=False)
    if mall.returncode == 0:
        return "matchall", created
    # No cls_matchall in this kernel: u32 "match u32 0 0" matches every packet.
    _tc("filter", "add", *where, "u32", "match", "u32", "0", "0", *action)
    return "u32", created


def remove_catchall(dev: str, kind: str, *, prio: int = MISS_PRIO, chain: int = 0,
                    remove_qdisc: bool = False) -> None:
    """Delete exactly flowpath's catch-all (never a chain flush); the ingress qdisc too
    if ``remove_qdisc`` and no other filter is left on it."""
    where = ["dev", dev, "ingress", "protocol", "all", "prio", str(prio), "chain", str(chain)]
    if kind == "matchall":
        _tc("filter", "del", *where, "handle", str(MISS_HANDLE), "matchall", check=False)
    else:
        _tc("filter", "del", *where, kind, check=False)
    if remove_qdisc:
        left = _tc("filter", "show", "dev", dev, "ingress", check=False).stdout.strip()
        if not left:
            _tc("qdisc", "del", "dev", dev, "ingress", check=False)


@dataclass(frozen=True, slots=True)
class MissChannel:
    """A port's miss channel: tc catch-all on ``port`` -> veth ``tap`` -> ``reader``."""

    port: str
    tap: str
    reader: str
    kind: str
    prio: int = MISS_PRIO
    chain: int = 0
    created_qdisc: bool = False


def _quiet_link(dev: str) -> None:
    """No addresses, no IPv6, no ARP: the kernel never transmits on it."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1\n")
    except OSError:
        pass  # no IPv6 in this kernel
    _ip("link", "set", "dev", dev, "arp", "off", "up")


def _exists(dev: str) -> bool:
    """Whether ``dev`` exists in this thread's netns (/sys/class/net shows the mount's)."""
    try:
        socket.if_nametoindex(dev)
    except OSError:
        return False
    return True


def setup_miss_channel(port: str, *, chain: int = 0, prio: int = MISS_PRIO) -> MissChannel:
    """Create (or adopt) the miss veth pair of ``port`` and install its catch-all.

    Call inside the port's namespace (see ``in_netns``)."""
    try:
        ifindex = socket.if_nametoindex(port)
    except OSError as exc:
        raise DeviceError("port netdev not found", port=port) from exc
    tap, reader = f"fpm{ifindex}t", f"fpm{ifindex}r"
    if not _exists(tap):
        _ip("link", "add", tap, "type", "veth", "peer", "name", reader)
    for dev in (tap, reader):
        _quiet_link(dev)
    kind, created = install_catchall(port, tap, prio=prio, chain=chain)
    log.info("miss channel up", port=port, tap=tap, reader=reader, classifier=kind,
             prio=prio, chain=chain)
    return MissChannel(port, tap, reader, kind, prio, chain, created)


def teardown_miss_channel(mc: MissChannel) -> None:
    """Remove the catch-all (first, so traffic goes back to the stack) and the veths."""
    remove_catchall(mc.port, mc.kind, prio=mc.prio, chain=mc.chain,
                    remove_qdisc=mc.created_qdisc)
    subprocess.run(["ip", "link", "del", mc.tap], capture_output=True, timeout=30)


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
            except OSError as exc:  # the kick inside put (ring full) failed
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

    def flush(self) -> None:
        """Hand every queued frame to the kernel (one syscall); never raises."""
        txr = self._txr
        if txr is None or not txr.pending:
            return
        n = txr.pending
        try:
            txr.kick()
        except BlockingIOError:
            pass  # the kernel keeps the frames queued; the next kick sends them
        except OSError as exc:
            self._tx_failed(exc, n)

    def _tx_failed(self, exc: OSError, n: int) -> None:
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
                return not _exists(self.name)
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
        ring_drops = self._txr.dropped if self._txr is not None else 0
        return PortStats(rx_packets=rx.packets, rx_bytes=rx.bytes,
                         rx_dropped=rx.kernel_drops + rx.oversize,
                         tx_packets=self._tx_packets - ring_drops, tx_bytes=self._tx_bytes,
                         tx_dropped=self._tx_dropped + ring_drops)

    def close(self, *, keep_miss_channel: bool = False) -> None:
        """Close the sockets; tear the miss channel down unless ``keep_miss_channel``
        (a restart keeps tc sending misses to the veth, which then drops them)."""
        self.flush()
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        if self._txr is not None:
            self._txr.close()
            self._txr.sock.close()
            self._txr = None
        for s in (self._rx, self._tx, self._nl):
            if s is not None:
                s.close()
        self._rx = self._tx = self._nl = None
        if self.miss_channel is not None and not keep_miss_channel:
            mc, self.miss_channel = self.miss_channel, None
            with in_netns(self.netns):
                teardown_miss_channel(mc)

    def __repr__(self) -> str:
        return f"NetdevPort({self.name!r}, {self.port_no}, rx_dev={getattr(self, 'rx_dev', '?')!r})"
