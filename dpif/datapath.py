"""The ``Datapath`` interface that the software and the offload datapath implement.

Vocabulary follows OVS's ``lib/dpif.h``:

put      install a megaflow under a ufid (``create``), or replace the actions
         of the flow with that ufid (``modify``); counters survive a modify
         unless ``zero_stats``.  Overlapping megaflows are refused (FlowExists).
delete   remove a flow, returning its final stats.
get      one flow by ufid.
dump     every flow, with stats and placement.
execute  run an action list on one packet (the upcall's packet, a packet-out).

Errors are the ``DatapathError`` family of ``dpif.errors``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

from dpif.actions import Actions
from dpif.flow import DpFlow, FlowSpec, FlowStats, Ufid


class Datapath(abc.ABC):
    """A datapath holding megaflows.  Implementations: swpath, offload."""

    name: str = "?"

    @abc.abstractmethod
    def put(self, spec: FlowSpec) -> DpFlow:
        """Install a new megaflow.  FlowExists if the ufid or an overlapping
        megaflow with another ufid is there; FlowLimit above the flow limit."""

    @abc.abstractmethod
    def modify(self, ufid: Ufid, actions: Actions, *, zero_stats: bool = False) -> DpFlow:
        """Replace the actions of a flow; FlowNotFound if there is none."""

    @abc.abstractmethod
    def delete(self, ufid: Ufid) -> FlowStats:
        """Remove a flow and return its final stats; FlowNotFound if none."""

    @abc.abstractmethod
    def get(self, ufid: Ufid) -> DpFlow:
        """One flow; FlowNotFound if there is none."""

    @abc.abstractmethod
    def dump(self) -> Iterator[DpFlow]:
        """Every flow with its current stats."""

    @abc.abstractmethod
    def execute(self, packet: bytes, in_port: int, actions: Actions) -> None:
        """Run ``actions`` on ``packet`` as if it arrived on ``in_port``."""

    def flush(self) -> int:
        """Delete every flow; return how many went."""
        n = 0
        for f in list(self.dump()):
            self.delete(f.ufid)
            n += 1
        return n
