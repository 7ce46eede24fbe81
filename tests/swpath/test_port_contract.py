"""The port contract (tests/swpath/port_contract.py) for the fake and the real ports.

``TestMemPortContract`` is unit tier.  ``TestNetdevPortContract`` is kernel tier:
the port sits on one end of a veth pair between two fresh namespaces
(``miss=False``, pure software mode); the outside world is the peer end, where
an AF_PACKET socket sends the frames that arrive and another one, opened
before the port exists, captures what the port transmits.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from swpath.ports import MemPort, NetdevPort
from swpath.ring import ETH_P_ALL, PACKET_IGNORE_OUTGOING, SOL_PACKET
from tests.kernel.netns import NetnsFactory, VethFactory
from tests.swpath.port_contract import PortContract, PortEnv, mac

# --- the fake --------------------------------------------------------------------------


@dataclass
class MemPortEnv:
    port: MemPort
    port_no: int
    name: str
    mac_port: bytes = mac("02:00:00:00:00:01")
    mac_peer: bytes = mac("02:00:00:00:00:02")
    settle: float = 0.0

    def arrive(self, frames: Sequence[bytes]) -> None:
        self.port.inject(frames)

    def transmitted(self) -> list[bytes]:
        return list(self.port.sent)


class TestMemPortContract(PortContract):
    timeout = 1.0

    @pytest.fixture
    def port_env(self) -> Iterator[PortEnv]:
        port = MemPort(7, "mem7")
        yield MemPortEnv(port, 7, "mem7")
        port.close()


# --- the real thing --------------------------------------------------------------------


@dataclass
class VethPeerEnv:
    """A NetdevPort on ``pt0``; the outside is ``pr0``, its veth peer in another netns."""

    port: NetdevPort
    port_no: int
    name: str
    mac_port: bytes
    mac_peer: bytes
    tx: socket.socket  # on the peer: what it sends arrives at the port
    capture: socket.socket  # on the peer: what the port transmitted
    settle: float = 0.3
    seen: list[bytes] = field(default_factory=list)

    def arrive(self, frames: Sequence[bytes]) -> None:
        for f in frames:
            assert self.tx.send(f) == len(f)

    def transmitted(self) -> list[bytes]:
        while True:
            try:
                self.seen.append(self.capture.recv(65536))
            except BlockingIOError:
                return list(self.seen)


@pytest.mark.kernel
class TestNetdevPortContract(PortContract):
    ring = True

    @pytest.fixture
    def port_env(self, netns_factory: NetnsFactory,
                 veth_factory: VethFactory) -> Iterator[PortEnv]:
        ns_port, ns_peer = netns_factory("fpPc"), netns_factory("fpPp")
        pair = veth_factory(ns_port, "pt0", ns_peer, "pr0")
        tx = ns_peer.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        capture = ns_peer.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        port = None
        try:
            tx.bind(("pr0", 0))
            capture.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # not the peer's sends
            capture.bind(("pr0", ETH_P_ALL))
            capture.setblocking(False)
            port = NetdevPort("pt0", 3, netns=ns_port.name, miss=False, ring=self.ring)
            yield VethPeerEnv(port, 3, "pt0", mac(pair.mac_a), mac(pair.mac_b), tx, capture)
        finally:
            if port is not None:
                port.close()
            tx.close()
            capture.close()


    def test_a_kick_failing_mid_batch_counts_exactly_what_left(self, port_env: PortEnv) -> None:
        """600 frames in one ``send_batch``, the 101st longer than the veth's MTU
        lets out: the first 512 fill the tx ring; the 513th needs a frame, so the
        ring kicks, and the kernel sends 100 and refuses the 101st.  Exactly those
        100 are counted sent; the rest is dropped, and the ring goes on."""
        port = port_env.port
        port.autoflush = False
        frames = [self.frame(port_env, i, outbound=True) for i in range(600)]
        frames[100] = self.frame(port_env, 100, outbound=True, size=1600)
        port.send_batch(frames)
        assert self.sent_frames(port_env, 100) == frames[:100]
        s = port.stats()
        assert (s.tx_packets, s.tx_bytes, s.tx_dropped) == (100, sum(map(len, frames[:100])), 500)
        more = [self.frame(port_env, 1000 + i, outbound=True) for i in range(50)]
        port.send_batch(more)
        port.flush()
        assert self.sent_frames(port_env, 150) == frames[:100] + more
        s = port.stats()
        assert (s.tx_packets, s.tx_dropped) == (150, 500)
        port.close()  # the ring's drop count outlives the ring
        c = port.stats()
        assert (c.tx_packets, c.tx_bytes, c.tx_dropped) == (s.tx_packets, s.tx_bytes, 500)


@pytest.mark.kernel
class TestNetdevPortRecvmsgContract(TestNetdevPortContract):
    """The same port with recvmsg batching instead of the rx ring (``ring=False``)."""

    ring = False
