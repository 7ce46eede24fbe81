"""The poll loop that feeds received batches to the software datapath.

Theory of operation
-------------------
One thread, one ``select.poll`` over the rx fds of every port.  Each round:

1. drain every port once without waiting (up to ``batch`` packets each) and
   hand each non-empty batch to ``sink.process(port_no, packets)``;
2. ``flush()`` every port that has one: transmits queued in tx rings during
   the round leave with one syscall per port (the runner owns the flushing
   of its ports, so it turns their ``autoflush`` off while it holds them);
3. only if no port had anything, ``poll()`` with the remaining timeout.

A wake-up that finds nothing is either a stray event or an rx ring whose next
frame the kernel has claimed but not yet published while a later one is
(``RxRing.stalled``; see the theory of operation of ``swpath/ring.py``).
Then poll would return at once (POLLIN is already true), so the loop backs
off instead -- a short sleep, doubling from 20 us up to 1 ms -- and reads
again.  It never skips the frame: the kernel publishes every frame it
claims.  ``RunStats.stalls`` counts those back-offs.

So under load the loop costs no syscall per packet (the rx ring is read from
memory) and none per round except when idle.  Draining every port in turn
keeps one busy port from starving the others.

Bounds, for tests and benchmarks: ``run`` stops at ``timeout`` seconds,
after ``max_packets`` packets or ``max_rounds`` rounds, or when ``stop()``
returns true, whichever comes first.  ``start()`` runs it in a daemon
thread; ``stop_and_join()`` ends it.

Control calls from other threads (a revalidator deleting a flow, a
packet-out) must not race the datapath, which is single-threaded:
``call_soon(fn)`` queues ``fn`` to run on the loop's thread between two
rounds and returns a ``Future`` with its result; an eventfd in the poll set
wakes an idle loop at once.

A port whose device vanishes (``PortError`` from ``recv_batch``, poll
reporting POLLERR/POLLNVAL on its rx fd, any event on one of its
``watch_fds()`` (NetdevPort: link notifications) followed by a failing
``check()``, or
an ``error`` the port recorded on transmit) is retired alone: it leaves the poll set, the
error is logged with the port's name and kept in ``errors``, and
``on_port_error`` (e.g. ``SwDatapath.del_port``) is called.  The other ports
keep forwarding.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import structlog

from dpif.errors import PortError
from swpath.ports import RxPort

log = structlog.get_logger("swpath.runner")

_ERRMASK = select.POLLERR | select.POLLNVAL | select.POLLHUP
_BACKOFF_MIN = 20e-6
_BACKOFF_MAX = 1e-3


def _flush(port: object) -> None:
    flush = getattr(port, "flush", None)
    if flush is not None:
        flush()


class BatchSink(Protocol):
    """What the runner feeds: ``SwDatapath.process``."""

    def process(self, in_port: int, packets: list[bytes]) -> object: ...


@dataclass(frozen=True, slots=True)
class RunStats:
    """What one ``run`` did."""

    packets: int
    batches: int
    rounds: int
    polls: int
    seconds: float
    #: polls that returned an event yet the next round found no packet (a
    #: persistently high count means the loop spins; see docs/performance.md)
    empty_wakeups: int = 0
    #: back-offs for a frame in flight on an rx ring (see the module docstring)
    stalls: int = 0


class Runner:
    """Poll loop over ports, delivering batches to ``sink.process``."""

    def __init__(self, sink: BatchSink, ports: Iterable[RxPort] = (), *, batch: int = 64,
                 on_port_error: Callable[[RxPort, PortError], None] | None = None) -> None:
        self.sink = sink
        self.batch = batch
        self.on_port_error = on_port_error
        self.errors: list[PortError] = []
        self.ports: dict[int, RxPort] = {}
        self._by_fd: dict[int, RxPort] = {}
        self._poll = select.poll()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: RunStats | None = None
        self._calls: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._version = 0  # bumped when the port set changes
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poll.register(self._wake, select.POLLIN)
        for p in ports:
            self.add_port(p)

    def add_port(self, port: RxPort) -> None:
        with self._lock:
            if port.port_no in self.ports:
                raise PortError("port number already in use", port=port.name,
                                port_no=port.port_no)
            fd = port.fileno()
            if hasattr(port, "autoflush"):
                setattr(port, "autoflush", False)
            self.ports[port.port_no] = port
            self._version += 1
            self._by_fd[fd] = port
            self._poll.register(fd, select.POLLIN)
            for wfd in getattr(port, "watch_fds", lambda: [])():
                self._by_fd[wfd] = port
                self._poll.register(wfd, select.POLLIN)

    def del_port(self, port_no: int) -> RxPort:
        with self._lock:
            port = self.ports.pop(port_no, None)
            if port is None:
                raise PortError("no such port", port_no=port_no)
            self._version += 1
            if hasattr(port, "autoflush"):
                _flush(port)
                setattr(port, "autoflush", True)
            for fd, p in list(self._by_fd.items()):
                if p is port:
                    del self._by_fd[fd]
                    try:
                        self._poll.unregister(fd)
                    except (KeyError, ValueError):
                        pass
            return port

    def call_soon(self, fn: Callable[[], object]) -> Future[object]:
        """Run ``fn`` on the loop's thread between rounds (thread-safe)."""
        fut: Future[object] = Future()
        self._calls.append((fn, fut))
        os.eventfd_write(self._wake, 1)
        return fut

    def _run_calls(self) -> None:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass
        while self._calls:
            fn, fut = self._calls.popleft()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # handed to the caller
                    fut.set_exception(exc)

    def close(self) -> None:
        """Release the wake-up eventfd (ports are the caller's)."""
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1

    def _retire(self, port: RxPort, err: PortError) -> None:
        log.error("port retired", port=port.name, port_no=port.port_no, error=str(err))
        self.errors.append(err)
        try:
            self.del_port(port.port_no)
        except PortError:
            pass
        if self.on_port_error is not None:
            self.on_port_error(port, err)

    def _drain(self, ports: list[RxPort]) -> tuple[int, int]:
        n = batches = 0
        process = self.sink.process
        size = self.batch
        for port in ports:
            try:
                pkts = port.recv_batch(size)
            except PortError as err:
                self._retire(port, err)
                continue
            if pkts:
                process(port.port_no, pkts)
                n += len(pkts)
                batches += 1
        if n:
            for port in ports:
                _flush(port)
                tx_err = getattr(port, "error", None)
                if tx_err is not None and port.port_no in self.ports:
                    self._retire(port, tx_err)  # vanished on transmit
        return n, batches

    @staticmethod
    def _stalled(ports: list[RxPort], fds: set[int]) -> bool:
        """Did a port that poll reported readable find its next frame in flight?"""
        for port in ports:
            stalled = getattr(port, "stalled", None)
            if stalled is not None and port.fileno() in fds and stalled():
                return True
        return False

    def run(self, *, timeout: float | None = None, max_packets: int | None = None,
            max_rounds: int | None = None, stop: Callable[[], bool] | None = None,
            poll_interval: float = 0.05) -> RunStats:
        """Forward until a bound is hit (see the module docstring)."""
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        packets = batches = rounds = polls = empty = stalls = 0
        woke = fresh = False
        woke_fds: set[int] = set()
        backoff = _BACKOFF_MIN
        ports: list[RxPort] = []
        version = -1
        while True:
            if stop is not None and stop():
                break
            if self._stop.is_set():
                break
            if max_rounds is not None and rounds >= max_rounds:
                break
            if max_packets is not None and packets >= max_packets:
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            rounds += 1
            if self._calls:
                self._run_calls()
            if version != self._version:
                version, ports = self._version, list(self.ports.values())
            n, b = self._drain(ports)
            packets += n
            batches += b
            if n:
                backoff = _BACKOFF_MIN
                woke = False
                continue
            if woke:
                if fresh:  # count a wake-up once, not once per back-off retry
                    empty += 1
                    fresh = False
                if self._stalled(ports, woke_fds):  # a frame in flight: poll won't wait
                    stalls += 1
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
            wait = poll_interval if deadline is None else min(poll_interval, deadline - now)
            polls += 1
            events = self._poll.poll(max(0, math.ceil(wait * 1000)))  # ceil: no spin
            woke_fds = {fd for fd, ev in events if ev & select.POLLIN and fd != self._wake}
            woke = fresh = bool(woke_fds)  # a control call's eventfd is not a port waking
            for fd, ev in events:
                if fd == self._wake:
                    self._run_calls()
                    continue
                port = self._by_fd.get(fd)
                if port is not None and (ev & _ERRMASK or fd != port.fileno()):
                    self._check(port, ev)
        self.last = RunStats(packets, batches, rounds, polls, time.monotonic() - t0, empty,
                             stalls)
        return self.last

    def _check(self, port: RxPort, ev: int) -> None:
        check = getattr(port, "check", None)
        try:
            if check is not None:
                check()
            if ev & select.POLLNVAL:
                raise PortError("port fd is no longer valid", port=port.name,
                                port_no=port.port_no)
        except PortError as err:
            self._retire(port, err)

    # --- background thread ------------------------------------------------------------

    def start(self, **bounds: float | int | None) -> None:
        """Run in a daemon thread (bounds as for ``run``) until ``stop_and_join``."""
        if self._thread is not None:
            raise RuntimeError("runner already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, kwargs=bounds, name="swpath-runner",
                                        daemon=True)
        self._thread.start()

    def stop_and_join(self, timeout: float = 5.0) -> RunStats | None:
        self._stop.set()
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)  # an idle loop notices at once
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("runner thread did not stop")
            self._thread = None
        return self.last
