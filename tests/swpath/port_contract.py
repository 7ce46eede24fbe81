"""The port contract, reusable by every swpath port (the real ones and the fakes).

Project rule: a fake is allowed only in the unit tier, and every fake passes
the same contract tests as the real thing.  ``MemPort`` (the fake) and
``NetdevPort`` (the real thing) both subclass ``PortContract`` in
tests/swpath/test_port_contract.py.

Subclass ``PortContract`` in a ``Test...`` class and provide a ``port_env``
fixture returning a ``PortEnv``: the port under test plus the two ends of the
outside world —

* ``arrive(frames)``: make frames arrive at the port from outside (MemPort:
  ``inject``; NetdevPort: sent by the veth peer);
* ``transmitted()``: every frame the port put on the wire so far, in order
  (MemPort: ``sent``; NetdevPort: captured on the veth peer by a socket opened
  before the port sent anything).

Example::

    class TestMemPortContract(PortContract):
        @pytest.fixture
        def port_env(self) -> Iterator[PortEnv]:
            port = MemPort(7, "mem7")
            yield MemPortEnv(port)
            port.close()

Everything that waits is bounded (``timeout``); ``settle`` is how long a test
waits before it concludes that *nothing else* arrives.  Frames are ones the
kernel passes through unchanged: unicast (``env.frame(i)`` is addressed from
``env.mac_peer`` to ``env.mac_port``, ``env.frame(i, outbound=True)`` the
other way), ethertype 0x88b5 (local experimental), >= 60 bytes.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pytest

from swpath.ports import PortStats, RxPort

ETH_EXPERIMENTAL = 0x88B5


class PortEnv(Protocol):
    """What a ``port_env`` fixture returns."""

    #: the port under test (``port_no``/``name`` as given by the fixture)
    port: Any
    port_no: int
    name: str
    #: MAC addresses (6 bytes) of the port's netdev and of its peer outside
    mac_port: bytes
    mac_peer: bytes
    #: seconds to wait before concluding nothing (else) arrives
    settle: float

    def arrive(self, frames: Sequence[bytes]) -> None:
        """Make ``frames`` arrive at the port from outside, in this order."""

    def transmitted(self) -> list[bytes]:
        """Every frame the port transmitted so far (as seen outside), in order."""


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def readable(fd: int, timeout: float) -> bool:
    """``fd`` polls readable within ``timeout`` seconds."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLIN for _, ev in p.poll(int(timeout * 1000)))


class PortContract:
    """Every swpath port must pass these.  Not collected itself (no Test prefix)."""

    #: bound of every wait for something that should happen (seconds)
    timeout = 5.0

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def frame(env: PortEnv, i: int, *, outbound: bool = False, size: int = 96) -> bytes:
        """The i-th test frame: unicast, ethertype 0x88b5, ``size`` >= 60 bytes, distinct
        per ``i`` and direction."""
        assert size >= 60
        dst, src = (env.mac_peer, env.mac_port) if outbound else (env.mac_port, env.mac_peer)
        tag = f"{'out' if outbound else 'in'}-{i:06d}-".encode()
        body = (tag * (size // len(tag) + 1))[:size - 14]
        return dst + src + ETH_EXPERIMENTAL.to_bytes(2, "big") + body

    @staticmethod
    def flush(port: Any) -> None:
        """Hand queued transmits to the wire with the port's own API (if it queues)."""
        flush = getattr(port, "flush", None)
        if flush is not None:
            flush()

    def collect(self, env: PortEnv, count: int, batch: int) -> list[list[bytes]]:
        """recv_batch(batch) until ``count`` frames came (or the timeout): the batches."""
        batches: list[list[bytes]] = []
        got = 0
        deadline = time.monotonic() + self.timeout
        while got < count and time.monotonic() < deadline:
            if not readable(env.port.fileno(), 0.05):
                continue
            b = env.port.recv_batch(batch)
            if b:
                batches.append([bytes(f) for f in b])
                got += len(b)
        return batches

    def sent_frames(self, env: PortEnv, count: int) -> list[bytes]:
        """Wait until ``count`` frames were transmitted, then ``settle`` for extras."""
        wait_for(lambda: len(env.transmitted()) >= count, self.timeout)
        time.sleep(env.settle)
        return env.transmitted()

    # -- identity ----------------------------------------------------------------------

    def test_port_no_and_name_as_given(self, port_env: PortEnv) -> None:
        port = port_env.port
        assert port.port_no == port_env.port_no
        assert port.name == port_env.name
        assert isinstance(port, RxPort)
        assert isinstance(port.fileno(), int) and port.fileno() >= 0

    # -- receive -----------------------------------------------------------------------

    def test_idle_port_recv_batch_is_empty_and_does_not_block(self, port_env: PortEnv) -> None:
        port = port_env.port
        time.sleep(port_env.settle)
        assert not readable(port.fileno(), 0.0)
        for _ in range(3):  # a blocking receive would hang here until the test's bound
            assert port.recv_batch(64) == []

    def test_arrival_makes_fileno_readable(self, port_env: PortEnv) -> None:
        port = port_env.port
        assert not readable(port.fileno(), 0.0)
        f = self.frame(port_env, 1)
        port_env.arrive([f])
        assert readable(port.fileno(), self.timeout), "fileno not readable with a frame pending"
        assert [bytes(x) for x in port.recv_batch(8)] == [f]
        # drained: not readable any more (a level-triggered poll loop must not spin)
        time.sleep(port_env.settle)
        assert not readable(port.fileno(), 0.0)
        assert port.recv_batch(8) == []

    @pytest.mark.parametrize("batch", [1, 3, 64])
    def test_arrivals_in_order_byte_identical_at_most_n_per_call(self, port_env: PortEnv,
                                                                 batch: int) -> None:
        frames = [self.frame(port_env, i, size=60 + 37 * i) for i in range(10)]
        port_env.arrive(frames)
        batches = self.collect(port_env, len(frames), batch)
        assert all(1 <= len(b) <= batch for b in batches), [len(b) for b in batches]
        assert [f for b in batches for f in b] == frames
        time.sleep(port_env.settle)
        assert port_env.port.recv_batch(64) == []  # nothing else

    def test_pending_frames_are_returned_n_at_a_time(self, port_env: PortEnv) -> None:
        """Frames already pending: recv_batch(n) returns exactly n, the rest stay queued."""
        port = port_env.port
        frames = [self.frame(port_env, i) for i in range(5)]
        port_env.arrive(frames)
        # wait until all five are pending (the last one is the marker), without taking any
        assert readable(port.fileno(), self.timeout)
        time.sleep(port_env.settle)
        first = [bytes(x) for x in port.recv_batch(2)]
        assert first == frames[:2]
        assert readable(port.fileno(), 0.0), "frames left pending but fileno not readable"
        rest = [bytes(x) for x in port.recv_batch(64)]
        assert rest == frames[2:]

    # -- transmit ----------------------------------------------------------------------

    def test_send_transmits_exactly_that_frame_once(self, port_env: PortEnv) -> None:
        f = self.frame(port_env, 1, outbound=True)
        port_env.port.send(f)
        self.flush(port_env.port)
        assert self.sent_frames(port_env, 1) == [f]

    def test_send_many_in_order(self, port_env: PortEnv) -> None:
        frames = [self.frame(port_env, i, outbound=True, size=60 + 53 * i) for i in range(20)]
        for f in frames:
            port_env.port.send(f)
        self.flush(port_env.port)
        assert self.sent_frames(port_env, len(frames)) == frames

    def test_send_without_autoflush_goes_out_on_flush(self, port_env: PortEnv) -> None:
        """A runner turns ``autoflush`` off and flushes per round (ports that queue)."""
        port = port_env.port
        if hasattr(port, "autoflush"):
            port.autoflush = False
        frames = [self.frame(port_env, i, outbound=True) for i in range(3)]
        for f in frames:
            port.send(f)
        self.flush(port)
        assert self.sent_frames(port_env, len(frames)) == frames
        self.flush(port)  # nothing queued: no duplicates
        time.sleep(port_env.settle)
        assert port_env.transmitted() == frames

    def test_send_batch_in_order_across_the_tx_ring_and_counted(self,
                                                                 port_env: PortEnv) -> None:
        """``send_batch`` (what ``SwDatapath`` hands a megaflow's packets to) is
        ``send`` of each packet in order; 3 x 200 frames wrap a 512-frame tx ring."""
        port = port_env.port
        if hasattr(port, "autoflush"):
            port.autoflush = False
        frames = [self.frame(port_env, i, outbound=True, size=60 + i % 50) for i in range(600)]
        for k in range(0, 600, 200):
            port.send_batch(frames[k:k + 200])
            self.flush(port)
            assert self.sent_frames(port_env, k + 200) == frames[:k + 200]
        s = port.stats()
        assert (s.tx_packets, s.tx_bytes, s.tx_dropped) == (600, sum(map(len, frames)), 0)

    def test_own_transmits_are_never_received(self, port_env: PortEnv) -> None:
        port = port_env.port
        frames = [self.frame(port_env, i, outbound=True) for i in range(10)]
        for f in frames:
            port.send(f)
        self.flush(port)
        assert self.sent_frames(port_env, len(frames)) == frames  # they did go out
        assert not readable(port.fileno(), 0.0)
        assert port.recv_batch(64) == []

    # -- stats -------------------------------------------------------------------------

    def test_stats_count_rx_and_tx(self, port_env: PortEnv) -> None:
        port = port_env.port
        s0 = port.stats()
        assert isinstance(s0, PortStats)
        assert s0 == PortStats()  # a fresh port counted nothing
        rx = [self.frame(port_env, i, size=60 + 10 * i) for i in range(4)]
        port_env.arrive(rx)
        got = [f for b in self.collect(port_env, len(rx), 64) for f in b]
        assert got == rx
        tx = [self.frame(port_env, i, outbound=True, size=70 + 10 * i) for i in range(3)]
        for f in tx:
            port.send(f)
        self.flush(port)
        assert self.sent_frames(port_env, len(tx)) == tx
        s = port.stats()
        assert (s.rx_packets, s.rx_bytes, s.rx_dropped) == (len(rx), sum(map(len, rx)), 0)
        assert (s.tx_packets, s.tx_bytes, s.tx_dropped) == (len(tx), sum(map(len, tx)), 0)
