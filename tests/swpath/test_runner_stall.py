"""Unit tier: the runner waits for an rx frame in flight, never skips it.

``InFlightPort`` stands for an rx ring whose next frame the kernel has
claimed but not yet published while a later one is (``RxRing.stalled``): its
fd stays readable (``packet_poll`` looks at the frame before head), so poll
returns at once, yet ``recv_batch`` has nothing until the frame is published.
"""

from __future__ import annotations

import os

from swpath.runner import Runner


class InFlightPort:
    port_no = 1
    name = "inflight1"

    def __init__(self, published_after: int) -> None:
        self.calls = 0
        self.published_after = published_after  # recv_batch calls until the frame is out
        self.efd = os.eventfd(1, os.EFD_NONBLOCK)  # always readable, like POLLIN
        self.delivered = False

    def fileno(self) -> int:
        return self.efd

    def recv_batch(self, max_packets: int) -> list[bytes]:
        self.calls += 1
        if self.calls > self.published_after and not self.delivered:
            self.delivered = True
            return [b"first", b"second"]  # in ring order: nothing was skipped
        return []

    def stalled(self) -> bool:
        return not self.delivered and self.calls <= self.published_after


class Sink:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def process(self, in_port: int, packets: list[bytes]) -> None:
        self.got += packets


def test_runner_backs_off_for_a_frame_in_flight_then_takes_it_in_order() -> None:
    port, sink = InFlightPort(published_after=4), Sink()
    r = Runner(sink, [port])
    try:
        st = r.run(max_packets=2, timeout=30)
    finally:
        r.close()
        os.close(port.efd)
    assert sink.got == [b"first", b"second"]
    assert st.stalls >= 1  # it waited for the frame ...
    assert st.polls <= 2  # ... by backing off, not by spinning on poll
