"""The software netdev datapath: ``SwDatapath``, the ``Datapath`` of swpath.

Theory of operation
-------------------
``process(in_port, packets)`` is the batch receive entry point (the ports'
poll loop calls it).  It works in two passes, like OVS's dpif-netdev
(``packet_batch_per_flow``):

1. classify each packet: ``parse_key(packet, md)`` with ``md`` = the port's
   metadata (``in_port``; ``recirc_id`` 0), then
   ``MegaflowCache.lookup(key)`` (EMC, then subtables by rank); a hit joins
   its megaflow's group (packets in arrival order; a run of packets of one
   megaflow costs one identity check each), a miss is handled at once (below);
2. for each megaflow hit: credit it once (packets, bytes, used, and
   tcp_flags as the OR of the keys, shifted once) and run its actions on the
   group -- a lone ``output`` hands the whole group to the port
   (``send_batch`` when the port has one), anything else goes packet by
   packet through ``swpath.execute`` whose effects are turned into I/O here.

So packets of one megaflow keep their order; packets of different megaflows
in one batch may leave in a different order (a miss's packet, handled during
classification, leaves before the batch's hits), as in OVS.

A miss: the ``upcall`` callback ``(packet, key, in_port)`` returns an
``UpcallResult`` -- the megaflow to install (or None) and the actions for
this packet -- or None to drop it.  The new megaflow goes into the cache (a
refusal -- overlap, flow limit, unsupported action -- is counted, and the
packet's actions still run: no packet is lost to a failed install).  As in
OVS, the upcall's own packet is accounted by the caller (ofproto), not
credited to the new flow.

``recirc`` re-parses the packet with ``recirc_id`` (and ``dp_hash``) in the
metadata and looks it up again, at most ``max_recirc`` deep (OVS: 6).
``userspace`` actions and ``dec_ttl`` at ttl <= 1 go to ``action_upcall``
as an ``ActionUpcall`` value.  Output to a port that is not (or no longer)
in the port table is counted (``tx_no_port``) and dropped, never raised.

Counters: ``counters`` (a plain dict of event -> count) and ``parse_stats``
(malformed packets by reason).  The datapath does no I/O itself: ports do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from functools import reduce
from operator import or_
from dataclasses import dataclass
from typing import Protocol

import structlog

from dpif.actions import Actions, Output
from dpif.datapath import Datapath
from dpif.errors import DatapathError, FlowExists, FlowLimit
from dpif.fields import BY_NAME
from dpif.flow import DpFlow, FlowSpec, FlowStats, Placement, Ufid
from dpif.match import Match
from swpath.cache import CacheEntry, MegaflowCache
from swpath.execute import Emit, Recirculate, Upcall, check_actions, execute_actions
from swpath.parse import ParseStats, parse_key

__all__ = ["SwDatapath", "UpcallResult", "ActionUpcall", "PortIO", "UpcallFn",
           "ActionUpcallFn"]

log = structlog.get_logger("swpath.datapath")

_IN_PORT = BY_NAME["in_port"]
_TCP_FLAGS_OFS = BY_NAME["tcp_flags"].offset
_PLACEMENT = Placement("sw", offloaded=False)


class PortIO(Protocol):
    """What the datapath needs of a port to transmit."""

    port_no: int

    def send(self, packet: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class UpcallResult:
    """The answer to a miss: a megaflow to install and this packet's actions.

    ``match`` None installs nothing (e.g. a flow that must stay in
    userspace).  ``packet_actions`` None means "the same as ``actions``".
    """

    match: Match | None
    actions: Actions
    packet_actions: Actions | None = None
    ufid: Ufid | None = None


@dataclass(frozen=True, slots=True)
class ActionUpcall:
    """A packet sent up by an action: ``reason`` "userspace" or "dec_ttl"."""

    packet: bytes
    key: int
    in_port: int
    reason: str
    userdata: bytes = b""
    pid: int = 0


UpcallFn = Callable[[bytes, int, int], "UpcallResult | None"]
ActionUpcallFn = Callable[[ActionUpcall], object]  # the return value is ignored


class SwDatapath(Datapath):
    """Megaflows in a Python cache, actions run on packet bytes."""

    name = "sw"

    def __init__(self, *, upcall: UpcallFn | None = None,
                 action_upcall: ActionUpcallFn | None = None,
                 flow_limit: int = 200_000, emc_size: int = 8192, max_recirc: int = 6,
                 rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.upcall = upcall
        self.action_upcall = action_upcall
        self.cache = MegaflowCache(flow_limit=flow_limit, emc_size=emc_size)
        self.max_recirc = max_recirc
        self.rng = rng
        self.clock = clock
        self.counters: dict[str, int] = {}
        self.parse_stats = ParseStats()
        self._ports: dict[int, PortIO] = {}
        self._md: dict[int, int] = {}

    # -- ports -------------------------------------------------------------------

    def add_port(self, port: PortIO) -> None:
        self._ports[port.port_no] = port
        log.info("port added", port=port.port_no)

    def del_port(self, port_no: int) -> PortIO | None:
        """Forget a port; packets to it are counted (``tx_no_port``) from now on."""
        port = self._ports.pop(port_no, None)
        if port is not None:
            log.info("port removed", port=port_no)
        return port

    @property
    def ports(self) -> dict[int, PortIO]:
        return dict(self._ports)

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    # -- the packet path ------------------------------------------------------

    def process(self, in_port: int, packets: list[bytes]) -> None:
        """Receive a batch on ``in_port``: look up, run actions or upcall."""
        md = self._md.get(in_port)
        if md is None:
            md = self._md[in_port] = _IN_PORT.put(in_port)
        lookup = self.cache.lookup
        stats = self.parse_stats
        # classify: the packets (and keys) of each megaflow hit, in arrival order
        groups: dict[CacheEntry, tuple[list[bytes], list[int]]] = {}
        last: CacheEntry | None = None
        lpkts: list[bytes] = []
        lkeys: list[int] = []
        hits = 0
        for pkt in packets:
            key = parse_key(pkt, md, stats)
            e = lookup(key)
            if e is None:
                self._miss(pkt, key, in_port, 0)
                continue
            if e is last:
                lpkts.append(pkt)
                lkeys.append(key)
                continue
            g = groups.get(e)
            if g is None:
                g = groups[e] = ([], [])
            last, (lpkts, lkeys) = e, g
            lpkts.append(pkt)
            lkeys.append(key)
        # execute and credit each megaflow once per batch
        if groups:
            ports = self._ports
            now = self.clock()
            for e, (pkts, keys) in groups.items():
                n = len(pkts)
                hits += n
                e.packets += n
                e.bytes += sum(map(len, pkts))
                e.used = now
                flags = (reduce(or_, keys) >> _TCP_FLAGS_OFS) & 0xFFF
                if flags:
                    e.tcp_flags |= flags
                acts = e.actions
                if len(acts) == 1 and type(acts[0]) is Output:
                    port = ports.get(acts[0].port)
                    if port is None:
                        self._count("tx_no_port", n)
                    elif n == 1:
                        port.send(pkts[0])
                    else:
                        send_batch = getattr(port, "send_batch", None)
                        if send_batch is not None:
                            send_batch(pkts)
                        else:
                            for pkt in pkts:
                                port.send(pkt)
                else:
                    for pkt, key in zip(pkts, keys):
                        self._run(pkt, key, acts, in_port, 0)
        counters = self.counters
        counters["rx"] = counters.get("rx", 0) + len(packets)
        counters["hit"] = counters.get("hit", 0) + hits

    def _credit(self, e: CacheEntry, pkt: bytes, key: int) -> None:
        e.packets += 1
        e.bytes += len(pkt)
        e.used = self.clock()
        e.tcp_flags |= (key >> _TCP_FLAGS_OFS) & 0xFFF

    def _miss(self, pkt: bytes, key: int, in_port: int, depth: int) -> None:
        self._count("miss")
        if self.upcall is None:
            self._count("lost")
            return
        res = self.upcall(pkt, key, in_port)
        if res is None:
            self._count("upcall_drop")
            return
        if res.match is not None:
            try:
                self.put(FlowSpec(res.match, res.actions, res.ufid or Ufid.random()))
            except FlowExists:
                self._count("put_exists")
            except FlowLimit:
                self._count("put_limit")
            except DatapathError as err:
                self._count("put_refused")
                log.warning("upcall flow refused", port=in_port, reason=str(err))
        acts = res.actions if res.packet_actions is None else res.packet_actions
        try:
            self._run(pkt, key, acts, in_port, depth)
        except DatapathError as err:
            self._count("exec_refused")
            log.warning("upcall actions refused", port=in_port, reason=str(err))

    def _run(self, pkt: bytes, key: int, actions: Actions, in_port: int, depth: int) -> None:
        if not actions:
            self._count("drop")
            return
        for eff in execute_actions(pkt, key, actions, self.rng):
            if type(eff) is Emit:
                port = self._ports.get(eff.port)
                if port is None:
                    self._count("tx_no_port")
                else:
                    port.send(eff.packet)
            elif type(eff) is Recirculate:
                self._recirc(eff, in_port, depth + 1)
            elif type(eff) is Upcall:
                self._count("action_upcall_" + eff.reason)
                if self.action_upcall is not None:
                    self.action_upcall(ActionUpcall(eff.packet, eff.key, in_port, eff.reason,
                                                    eff.userdata, eff.pid))

    def _recirc(self, eff: Recirculate, in_port: int, depth: int) -> None:
        if depth > self.max_recirc:
            self._count("recirc_too_deep")
            log.warning("recirculation too deep, packet dropped", port=in_port, depth=depth)
            return
        self._count("recirc")
        key = parse_key(eff.packet, eff.md, self.parse_stats)
        e = self.cache.lookup(key)
        if e is None:
            self._miss(eff.packet, key, in_port, depth)
            return
        self._credit(e, eff.packet, key)
        self._run(eff.packet, key, e.actions, in_port, depth)

    # -- the Datapath interface -------------------------------------------------------

    @staticmethod
    def _flow(e: CacheEntry) -> DpFlow:
        return DpFlow(e.ufid, e.match, e.actions, e.stats, _PLACEMENT)

    def put(self, spec: FlowSpec) -> DpFlow:
        check_actions(spec.actions)
        e = self.cache.insert(spec.ufid, spec.match, spec.actions)
        return self._flow(e)

    def modify(self, ufid: Ufid, actions: Actions, *, zero_stats: bool = False) -> DpFlow:
        self.cache.get(ufid)  # FlowNotFound first, then the actions' check
        check_actions(actions)
        e = self.cache.modify(ufid, actions)
        if zero_stats:
            e.zero_stats()
        return self._flow(e)

    def delete(self, ufid: Ufid) -> FlowStats:
        return self.cache.remove(ufid).stats

    def get(self, ufid: Ufid) -> DpFlow:
        return self._flow(self.cache.get(ufid))

    def dump(self) -> Iterator[DpFlow]:
        for e in self.cache:
            yield self._flow(e)

    def execute(self, packet: bytes, in_port: int, actions: Actions) -> None:
        check_actions(actions)
        key = parse_key(packet, _IN_PORT.put(in_port), self.parse_stats)
        self._run(packet, key, actions, in_port, 0)
