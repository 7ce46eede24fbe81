"""A software datapath dressed as hardware, for the revalidator's unit tests.

``HwLagDatapath`` wraps a real ``SwDatapath``: its flows say ``dp:tc,
offloaded:yes`` (``Placement("tc", True)``) and their counters reach
``dump``/``get`` only every ``refresh`` seconds of its clock, as a NIC
driver polls its hardware counters (mlx5: about once a second), so a busy
offloaded flow can look idle for a while.  ``delete`` returns the true final
counters.  It passes the ``Datapath`` contract (``test_revalidator.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from dpif.actions import Actions
from dpif.datapath import Datapath
from dpif.flow import DpFlow, FlowSpec, FlowStats, Placement, Ufid
from swpath.datapath import SwDatapath

HW = Placement("tc", True)


class HwLagDatapath(Datapath):
    name = "hwlag"

    def __init__(self, sw: SwDatapath, clock: Callable[[], float], refresh: float = 1.0
                 ) -> None:
        self.sw = sw
        self.clock = clock
        self.refresh = refresh
        self._shown: dict[Ufid, FlowStats] = {}
        self._at = -math.inf

    def _poll(self) -> None:
        now = self.clock()
        if now - self._at >= self.refresh:
            self._shown = {f.ufid: f.stats for f in self.sw.dump()}
            self._at = now

    def _hw(self, f: DpFlow) -> DpFlow:
        return DpFlow(f.ufid, f.match, f.actions, self._shown.get(f.ufid, FlowStats()), HW)

    def put(self, spec: FlowSpec) -> DpFlow:
        f = self.sw.put(spec)
        self._shown[spec.ufid] = FlowStats()
        return self._hw(f)

    def modify(self, ufid: Ufid, actions: Actions, *, zero_stats: bool = False) -> DpFlow:
        f = self.sw.modify(ufid, actions, zero_stats=zero_stats)
        if zero_stats:
            self._shown[ufid] = FlowStats()
        return self._hw(f)

    def delete(self, ufid: Ufid) -> FlowStats:
        final = self.sw.delete(ufid)
        self._shown.pop(ufid, None)
        return final

    def get(self, ufid: Ufid) -> DpFlow:
        f = self.sw.get(ufid)
        self._poll()
        return self._hw(f)

    def dump(self) -> Iterator[DpFlow]:
        self._poll()
        for f in self.sw.dump():
            yield self._hw(f)

    def execute(self, packet: bytes, in_port: int, actions: Actions) -> None:
        self.sw.execute(packet, in_port, actions)
