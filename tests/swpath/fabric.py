"""Kernel-tier helpers for swpath: two hosts joined through a switch namespace.

    ns A: va (10.77.0.1) ==veth== s1 ─┐  ns S (flowpath's NetdevPorts,
                                       │  port 1 = s1, port 2 = s2)
    ns B: vb (10.77.0.2) ==veth== s2 ─┘

Traffic is made in-process: sockets are created inside A and B with
``swpath.ports.in_netns`` (no ping/iperf binaries needed).  Every helper is
bounded by a count and a timeout.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from kernel.netns import Netns, NetnsFactory, VethFactory
from swpath.ports import in_netns

A_IP, B_IP = "10.77.0.1", "10.77.0.2"


@dataclass
class Fabric:
    a: Netns
    s: Netns
    b: Netns
    mac_a: str
    mac_b: str


def build_fabric(netns_factory: NetnsFactory, veth_factory: VethFactory) -> Fabric:
    a, s, b = netns_factory("fpA"), netns_factory("fpS"), netns_factory("fpB")
    pa = veth_factory(a, "va", s, "s1", addr_a=f"{A_IP}/24")
    pb = veth_factory(b, "vb", s, "s2", addr_a=f"{B_IP}/24")
    # Static neighbours: no ARP in the counted stream (ARP itself is tested by ping).
    return Fabric(a, s, b, pa.mac_a, pb.mac_a)


def static_arp(fab: Fabric) -> None:
    fab.a.ip("neigh", "replace", B_IP, "lladdr", fab.mac_b, "dev", "va")
    fab.b.ip("neigh", "replace", A_IP, "lladdr", fab.mac_a, "dev", "vb")


@dataclass
class Receiver:
    """Counts UDP datagrams per destination port arriving in a namespace."""

    ns: str
    ports: tuple[int, ...]
    counts: Counter[int] = field(default_factory=Counter)
    payloads: list[bytes] = field(default_factory=list)
    keep: bool = False

    def __post_init__(self) -> None:
        self._socks: list[socket.socket] = []
        with in_netns(self.ns):
            for p in self.ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                s.bind(("0.0.0.0", p))
                s.setblocking(False)
                self._socks.append(s)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        import select
        poller = select.poll()
        by_fd = {s.fileno(): (s, p) for s, p in zip(self._socks, self.ports)}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ev in poller.poll(50):
                s, p = by_fd[fd]
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    self.counts[p] += 1
                    if self.keep:
                        self.payloads.append(data)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def wait_for(self, n: int, timeout: float = 10.0, settle: float = 0.3) -> int:
        """Wait until ``n`` arrived (or timeout), then ``settle`` more to catch extras."""
        deadline = time.monotonic() + timeout
        while self.total < n and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(settle)
        return self.total

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        for s in self._socks:
            s.close()


def udp_sender(ns: str) -> socket.socket:
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((A_IP, 0))
    return s


def send_paced(sock: socket.socket, dst: tuple[str, int], n: int, rx: Receiver,
               *, window: int = 128, already: int = 0, timeout: float = 20.0,
               tag: bytes = b"") -> None:
    """Send ``n`` datagrams keeping at most ``window`` in flight (counted at ``rx``):
    correctness tests must not depend on the forwarder's speed."""
    deadline = time.monotonic() + timeout
    for i in range(n):
        while already + i - rx.total >= window:
            if time.monotonic() > deadline:
                raise AssertionError(f"stream stalled: sent {i}/{n}, received {rx.total - already}")
            time.sleep(0.0005)
        sock.sendto(tag + struct.pack(">I", i), dst)


def icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping(ns: str, dst: str, count: int = 3, timeout: float = 2.0) -> int:
    """ICMP echo from inside ``ns``; returns the number of replies (bounded)."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    replies = 0
    try:
        s.settimeout(timeout)
        for seq in range(count):
            body = struct.pack(">BBHHH", 8, 0, 0, ident, seq) + b"flowpath-ping"
            body = body[:2] + struct.pack(">H", icmp_checksum(body)) + body[4:]
            s.sendto(body, (dst, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    pkt = s.recv(2048)
                except socket.timeout:
                    break
                ihl = (pkt[0] & 0xF) * 4
                typ, _code, _ck, rid, rseq = struct.unpack_from(">BBHHH", pkt, ihl)
                if typ == 0 and rid == ident and rseq == seq:
                    replies += 1
                    break
    finally:
        s.close()
    return replies
