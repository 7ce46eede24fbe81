"""The bridge: ports, rule tables, MAC table, packet-ins, and the upcall handler.

Theory of operation
-------------------
A ``Bridge`` owns the OpenFlow state of one switch -- the ``FlowTables``
(kept mirrored into a per-table ``Pipeline`` classifier through the tables'
change listener), the port configuration NORMAL reads, the ``MacTable``, the
recirculation registry and a bounded queue of packet-ins -- and the megaflows
it installed ("ukeys", after OVS's ``udpif_key``: megaflow -> ufid, actions,
the rules that produced it).

``handle_upcall(packet, key, in_port)`` is the software datapath's miss
callback:

1. translate the key with side effects (``xlate``);
2. apply the side effects: learn MACs, credit the hit rules with this one
   packet (as OVS does, the upcall's packet is counted here, not on the new
   flow);
3. install the megaflow, unless it is already there (a duplicate upcall of
   the same megaflow -- another packet that missed before the flow went in)
   or the bridge holds ``flow_limit`` megaflows or more (the revalidator,
   ``ofproto.revalidator``, adapts that limit; the packet is still
   handled, as in OVS); with a ``placer`` datapath the bridge
   puts the flow there itself and returns ``match=None`` so the caller does
   not put it again; without one, it returns the match for the caller (e.g.
   ``SwDatapath``) to install, and records the ukey;
4. return the actions for the caller to run on this packet, once.

A ukey records the MAC table's ``version`` from *before* this upcall's own
learning, and whether translation went through NORMAL: the revalidator
rechecks such a flow once the table has changed since (a MAC learned,
moved or aged out).

``process_miss(packet, in_port)`` is the same for a caller that does not run
actions itself: it parses, handles the upcall and executes the actions via
the placer.

Packet-ins reach the queue only through ``handle_action_upcall``: the
datapath runs the megaflow's ``userspace`` action (also for the upcall's own
packet) and hands the packet up; the userdata says which rule, table and
reason (``xlate.PacketInMeta``).  So a packet-in is queued exactly once per
packet whether the packet was translated or hit the installed flow.  The
packet is not forwarded unless other actions say so.  The queue is bounded
(oldest dropped, counted); ``packet_ins_since(seq)`` lets a CLI watch it,
and ``packet_in_listeners`` are told of each one as it is queued.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from dpif.actions import Actions
from dpif.datapath import Datapath
from dpif.errors import DatapathError, FlowExists, FlowLimit, ValidationError
from dpif.fields import BY_NAME
from dpif.flow import FlowSpec, Ufid
from dpif.match import Match
from ofproto.classifier import Pipeline
from ofproto.normal import DEFAULT_AGING, Learn, MacTable, PortConfig
from ofproto.rule import Rule
from ofproto.tables import FlowTables, TableChange
from ofproto.xlate import PacketInMeta, RecircRegistry, XlateEnv, XlateResult, xlate
from swpath.datapath import ActionUpcall, UpcallResult
from swpath.parse import parse_key

_NARROW_TRIES = 4

log = structlog.get_logger("ofproto.bridge")

_IN_PORT = BY_NAME["in_port"]
DEFAULT_FLOW_LIMIT = 200_000
DEFAULT_PACKET_IN_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class PacketIn:
    """One queued packet-in: the packet (cut to max_len) and why it came up."""

    seq: int
    time: float
    in_port: int
    packet: bytes
    total_len: int
    reason: str
    table: int
    cookie: int
    rule_id: int
    userdata: bytes = b""


@dataclass(frozen=True, slots=True)
class Ukey:
    """A megaflow this bridge installed, and where it came from."""

    ufid: Ufid
    match: Match
    actions: Actions
    rules: tuple[tuple[int, int], ...]
    created: float
    uses_normal: bool
    mac_version: int
    learned: tuple[Learn, ...] = ()  # NORMAL's sightings: refreshed while it is used


class Bridge:
    def __init__(self, name: str = "br0", ports: Iterable[PortConfig] = (), *,
                 placer: Datapath | None = None, flow_limit: int = DEFAULT_FLOW_LIMIT,
                 learning: bool = True, mac_aging: float = DEFAULT_AGING,
                 packet_in_limit: int = DEFAULT_PACKET_IN_LIMIT,
                 tables: FlowTables | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.ports: dict[int, PortConfig] = {}
        for p in ports:
            self.add_port(p)
        self.placer = placer
        self.flow_limit = flow_limit
        self.learning = learning
        self.clock = clock
        self.macs = MacTable(aging=mac_aging)
        self.recirc = RecircRegistry()
        self.tables = tables if tables is not None else FlowTables()
        self.pipeline: Pipeline[Rule] = Pipeline()
        for rid, rule in self.tables.rules():
            self._index(rid, rule)
        self.tables.subscribe(self._on_change)
        self.ukeys: dict[Match, Ukey] = {}
        self._packet_ins: deque[PacketIn] = deque(maxlen=packet_in_limit)
        self._pin_seq = 0
        #: called on the datapath thread with each queued packet-in (e.g. to wake a watcher)
        self.packet_in_listeners: list[Callable[[PacketIn], None]] = []
        self.counters: dict[str, int] = {}
        self.log = log.bind(bridge=name)

    # -- configuration -------------------------------------------------------

    def add_port(self, port: PortConfig) -> None:
        if port.number in self.ports:
            raise ValidationError("port number already in use", port=port.number)
        self.ports[port.number] = port

    def del_port(self, number: int) -> PortConfig:
        port = self.ports.pop(number)
        if hasattr(self, "macs"):
            self.macs.flush(number)
        return port

    def _index(self, rid: int, rule: Rule) -> None:
        self.pipeline.insert(rule.table, rid, rule, rule.match.key, rule.match.mask,
                             rule.priority)

    def _on_change(self, ch: TableChange) -> None:
        if ch.kind == "remove":
            if ch.rule_id in self.pipeline:
                self.pipeline.remove(ch.rule_id)
        else:  # add, modify
            self._index(ch.rule_id, ch.rule)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- translation ---------------------------------------------------------

    def env(self, now: float | None = None) -> XlateEnv:
        return XlateEnv(self.pipeline, self.ports, self.macs,
                        self.clock() if now is None else now, self.learning, self.recirc)

    def translate(self, key: int, *, side_effects: bool = False, trace: bool = False,
                  now: float | None = None) -> XlateResult:
        """Translate a datapath key; without side effects unless asked."""
        return xlate(self.env(now), key, side_effects=side_effects, trace=trace)

    # -- upcalls ---------------------------------------------------------------

    def handle_upcall(self, packet: bytes, key: int, in_port: int) -> UpcallResult | None:
        now = self.clock()
        key = (key & ~_IN_PORT.field_mask) | _IN_PORT.put(in_port)
        mac_version = self.macs.version
        res = xlate(self.env(now), key, side_effects=True)
        self._count("upcall")
        for lrn in res.learned:
            outcome = self.macs.learn(lrn.vlan, lrn.mac, lrn.port, now)
            if outcome != "refreshed":
                self.log.debug("mac " + outcome, port=lrn.port, vlan=lrn.vlan,
                               mac=f"{lrn.mac:012x}")
        for rid in dict.fromkeys(rid for _, rid in res.rules):
            self.tables.credit(rid, 1, len(packet), now)
        if res.error:
            self.log.warning("translation error", port=in_port, error=res.error)
        match = self._install(res, now, in_port, key, mac_version)
        return UpcallResult(match, res.actions)

    def _put_narrowing(self, m: Match, actions: Actions, ufid: Ufid, key: int) -> Match:
        """Put ``m``; if it overlaps an installed megaflow (sound megaflows
        may: both then hold the same actions on the overlap, but datapaths
        refuse it), narrow ``m`` to the packet's values on the other flow's
        mask -- still sound, and disjoint from it -- and retry.  Without
        this, every packet of the overlap-free part would upcall forever."""
        assert self.placer is not None
        for _ in range(_NARROW_TRIES):
            try:
                self.placer.put(FlowSpec(m, actions, ufid))
                return m
            except FlowExists as e:
                other = e.context.get("other")
                if other is None or m in self.ukeys:
                    raise
                wider = m.mask | self.placer.get(Ufid.parse(other)).match.mask
                if wider == m.mask:
                    raise
                self._count("megaflow_narrowed")
                m = Match.from_packet_key(key, wider)
        raise FlowExists("megaflow still overlaps after narrowing", ufid=str(ufid))

    def _install(self, res: XlateResult, now: float, in_port: int, key: int,
                 mac_version: int) -> Match | None:
        """Record (and with a placer, put) the megaflow; the match for the caller or None."""
        m = res.megaflow
        if m in self.ukeys:
            self._count("upcall_duplicate")
            return None
        if len(self.ukeys) >= self.flow_limit:
            self._count("flow_limit_hit")
            self.log.debug("flow limit reached, not installing", port=in_port,
                           limit=self.flow_limit)
            return None
        ufid = Ufid.random()
        if self.placer is not None:
            try:
                m = self._put_narrowing(m, res.actions, ufid, key)
            except FlowExists:
                self._count("put_exists")
                return None
            except FlowLimit:
                self._count("put_limit")
                return None
            except DatapathError as err:
                self._count("put_refused")
                self.log.warning("megaflow refused", port=in_port, ufid=str(ufid),
                                 reason=str(err))
                return None
        self.ukeys[m] = Ukey(ufid, m, res.actions, res.rules, now, res.uses_normal,
                             mac_version, res.learned)
        self._count("flow_installed")
        return None if self.placer is not None else m

    def forget_flow(self, match: Match) -> Ukey | None:
        """Drop the bookkeeping of a megaflow the datapath no longer holds."""
        return self.ukeys.pop(match, None)

    def process_miss(self, packet: bytes, in_port: int) -> UpcallResult | None:
        """Parse, handle the upcall and execute its actions on the packet (needs a placer)."""
        if self.placer is None:
            raise ValidationError("process_miss needs a placer datapath", bridge=self.name)
        key = parse_key(packet, _IN_PORT.put(in_port))
        res = self.handle_upcall(packet, key, in_port)
        if res is not None:
            self.placer.execute(packet, in_port, res.actions)
        return res

    # -- packet-ins ------------------------------------------------------------

    def handle_action_upcall(self, au: ActionUpcall) -> PacketIn | None:
        """A packet sent up by a ``userspace`` (or ``dec_ttl``) datapath action."""
        if au.reason == "dec_ttl":
            meta = PacketInMeta("invalid_ttl", 0, 0, 0)
        else:
            decoded = PacketInMeta.decode(au.userdata)
            if decoded is None:
                self._count("userspace_unknown")
                return None
            meta = decoded
        self._pin_seq += 1
        pin = PacketIn(self._pin_seq, self.clock(), au.in_port, au.packet[:meta.max_len],
                       len(au.packet), meta.reason, meta.table, meta.cookie, meta.rule_id,
                       meta.userdata)
        if len(self._packet_ins) == self._packet_ins.maxlen:
            self._count("packet_in_dropped")
        self._packet_ins.append(pin)
        for listener in self.packet_in_listeners:
            listener(pin)
        self.log.debug("packet-in", port=au.in_port, reason=meta.reason, table=meta.table)
        return pin

    def packet_ins_since(self, seq: int = 0) -> list[PacketIn]:
        return [p for p in self._packet_ins if p.seq > seq]

    @property
    def packet_in_seq(self) -> int:
        """The seq of the newest packet-in so far (0: none yet)."""
        return self._pin_seq

    def pop_packet_ins(self) -> list[PacketIn]:
        out = list(self._packet_ins)
        self._packet_ins.clear()
        return out
