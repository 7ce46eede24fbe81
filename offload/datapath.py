"""The offload-first datapath: each megaflow on tc flower, else in software.

Theory of operation
-------------------
``OffloadDatapath`` implements ``dpif.datapath.Datapath`` over two places:

* tc flower on the ingress port's netdev (an eswitch representor on a
  SmartNIC, a veth in tests), through ``TcNetlink`` -- the one place where
  tc netlink I/O happens;
* the software datapath (``swpath.SwDatapath``) for everything else.

``put`` translates the megaflow (``tc_flower.to_flower``, pure; the
megaflows after the first of one mask, control values, in_port, recirc_id
and actions through that first one's ``tc_template`` -- the same filter and
bytes, patched).  ``put_many`` does the same for a burst, with one
pipelined tc batch and the garbage collector paused.  A
``NotOffloadable`` answer, or a kernel refusal (its extack text is kept),
puts the flow in software instead, and the flow's ``Placement`` says where
it lives and why.  A flow is in exactly one place.  A shadow megaflow index
(``swpath.cache.MegaflowCache``) of *all* flows enforces unique ufids,
no overlaps and the flow limit across both places.

Policies (as OVS's ``tc-policy``): ``skip_sw`` -- hardware only, a filter
the NIC refuses falls back to software; ``none`` -- the kernel decides
(``in_hw`` or not, read back on dump); ``skip_hw`` -- software tc only.

Ownership: our filters live in chain = recirc_id, priority from
``PRIO_MIN`` upward (one per (mask, protocol), as tc binds a priority to a
protocol and drivers like one mask per priority), and carry the ufid as the
action cookie.  ``adopt`` reads them back after a restart (traffic keeps
flowing meanwhile) and ``cleanup`` deletes exactly those: never another
program's filters, never a qdisc we did not create.

Counters: a tc flow's stats are its filter's counters (software + hardware,
TCA_STATS_BASIC; the software part counted from the network header, so
ETH_HLEN per packet is added to count whole frames like swpath) plus
``carried`` -- what earlier incarnations of the same flow had counted (a
replace on modify starts fresh counters; a move between tc and software
starts a new flow in the other place).  A flow that moved from tc to
software keeps its tc counts the same way (``_sw_carried``), so totals never
go backwards, whichever way a flow moves.

Dump: ``dump`` reads each port's filters with a terse dump
(``TcNetlink.dump_stats``: flags, counters and the ufid cookie; no keys, no
actions, no lastuse) and joins them by cookie with the flows it holds, whose
match and actions it has already (``tc_flows.TcCounters``: lastuse from
counter growth, at most one dump interval late; an idle flow gives back its
last DpFlow).  Full reads give the exact lastuse and seed that state:
``get``, ``modify`` and ``delete`` read their one filter fully, ``adopt``
reads full dumps.  ``adopt`` and ``cleanup``, which need keys, use full
dumps.  On a kernel that stops a terse dump at a classifier without one
(u32), each (chain, prio) of ours is dumped alone.

Recirculation is kept in software: a miss inside tc chain N would leave the
packet to the kernel stack, and flowpath's miss channel (a catch-all in
chain 0) could not learn its recirc_id.  Such flows say so in their reason.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from enum import Enum

import structlog

from dpif import actions as A
from dpif.datapath import Datapath
from dpif.errors import DatapathError, FlowNotFound, OffloadError, OffloadUnsure
from dpif.flow import DpFlow, FlowSpec, FlowStats, Placement, Ufid
from dpif.match import Match
from offload import tc_nla as N
from offload import tc_values as V
from offload.tc_flower import NotOffloadable, OutputCheck, PortInfo, from_flower, to_flower, ufid_of
from offload.tc_flows import NO_STATS, TcCounters, TcFlow
from offload.tc_netlink import TcNetlink, gc_paused
from offload.tc_op import TcOp
from offload.tc_template import FilterTemplate, PatchedFilter, compile_template, template_key
from offload.tc_terse import TerseFilter
from swpath.cache import MegaflowCache

log = structlog.get_logger("offload.datapath")

PRIO_MIN = 0x0800  # flowpath's tc priorities: PRIO_MIN .. PRIO_MAX
PRIO_MAX = 0xFEFF  # (0xFFFF is the miss channel's catch-all, swpath.ports.MISS_PRIO)
TEMPLATES_MAX = 4096  # filter templates kept (tc_template), forgotten all at once beyond
_ON_HW = Placement("tc", True)
_SKIP_HW = Placement("tc", False, "policy skip_hw")
_NOT_READ = Placement("tc", False, "in_hw not read yet")
_NOT_IN_HW = Placement("tc", False, "kernel: not_in_hw")


class Policy(Enum):
    SKIP_SW = "skip_sw"
    NONE = "none"
    SKIP_HW = "skip_hw"

    @property
    def flags(self) -> int:
        return {"skip_sw": N.TCA_CLS_FLAGS_SKIP_SW, "none": 0,
                "skip_hw": N.TCA_CLS_FLAGS_SKIP_HW}[self.value]


def _recirc_reason(match: Match, actions: A.Actions) -> str | None:
    if match.value("recirc_id") or any(isinstance(a, A.Recirc) for a in actions):
        return "recirculation stays in software (a tc chain miss cannot carry recirc_id)"
    return None


class OffloadDatapath(Datapath):
    """Offload-first datapath with software fallback."""

    name = "offload"

    def __init__(self, tc: TcNetlink, sw: Datapath, *, policy: Policy = Policy.SKIP_SW,
                 check: OutputCheck | None = None, flow_limit: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tc = tc
        self.sw = sw
        self.policy = policy
        self.check = check
        self.clock = clock
        self.ports: dict[int, PortInfo] = {}
        self._by_ifindex: dict[int, PortInfo] = {}
        self._index = MegaflowCache(flow_limit=flow_limit, emc_size=0)
        self._tc: dict[Ufid, TcFlow] = {}
        self._sw_reason: dict[Ufid, str] = {}
        self._sw_carried: dict[Ufid, FlowStats] = {}  # counts from tc of flows now in software
        self._prios: dict[tuple[int, int], int] = {}  # (mask, protocol) -> prio
        self._handles: dict[tuple[int, int, int], int] = {}  # (ifindex, chain, prio) -> last
        # tc_template.template_key -> its template, or None (none can be made)
        self._templates: dict[tuple[int, int, A.Actions], FilterTemplate | None] = {}
        self._counters = TcCounters()  # the dump's join, and its state per flow
        self._log = log.bind(policy=policy.value)

    # -- ports -------------------------------------------------------------------

    def add_port(self, port_no: int, ifname: str) -> PortInfo:
        """Make a netdev datapath port ``port_no`` (its ingress qdisc is
        created if missing, and remembered as ours only then)."""
        ifindex = self.tc.ifindex(ifname)
        info = PortInfo(port_no, ifindex, ifname)
        self.ports[port_no] = info
        self._by_ifindex[ifindex] = info
        self._templates.clear()  # a translation may change with the ports
        self.tc.ensure_ingress(ifindex)
        return info

    # -- placement -----------------------------------------------------------------

    def _prio(self, match: Match, protocol: int) -> int:
        key = (match.mask, protocol)
        prio = self._prios.get(key)
        if prio is None:
            prio = PRIO_MIN + len(self._prios)
            if prio > PRIO_MAX:
                raise OffloadError("out of tc priorities (one per megaflow mask)",
                                   masks=len(self._prios))
            self._prios[key] = prio
        return prio

    def _handle(self, ifindex: int, chain: int, prio: int) -> int:
        k = (ifindex, chain, prio)
        self._handles[k] = self._handles.get(k, 0) + 1
        return self._handles[k]

    def _translate(self, match: Match, actions: A.Actions, ufid: Ufid,
                   old: V.FlowerFilter | V.FilterRef | None = None) -> V.FlowerFilter | NotOffloadable:
        reason = _recirc_reason(match, actions)
        if reason:
            return NotOffloadable(reason)
        probe = to_flower(match, actions, ufid, ports=self.ports, prio=1, handle=1,
                          flags=self.policy.flags, check=self.check)
        if isinstance(probe, NotOffloadable):
            return probe
        if old is not None and (old.protocol, old.chain, old.ifindex) == (
                probe.protocol, probe.chain, probe.ifindex):
            return probe.placed(old.prio, old.handle)
        prio = self._prio(match, probe.protocol)
        return probe.placed(prio, self._handle(probe.ifindex, probe.chain, prio))

    def _to_sw(self, spec: FlowSpec, reason: str, carried: FlowStats = FlowStats()) -> DpFlow:
        flow = self.sw.put(spec)
        self._sw_reason[spec.ufid] = reason
        if carried != FlowStats():  # a tc flow moved here: its counts go on
            self._sw_carried[spec.ufid] = carried
        self._log.debug("flow in software", ufid=spec.ufid, reason=reason)
        return self._as_sw(flow)

    def _as_sw(self, flow: DpFlow) -> DpFlow:
        """A software datapath's flow as ours: its placement and reason, and
        what it counted on tc before it moved to software."""
        carried = self._sw_carried.get(flow.ufid)
        return replace(flow, stats=flow.stats if carried is None else carried + flow.stats,
                       placement=Placement("sw", False, self._sw_reason[flow.ufid]))

    def put(self, spec: FlowSpec) -> DpFlow:
        self._index.insert(spec.ufid, spec.match, spec.actions)  # FlowExists / FlowLimit
        try:
            return self._place(spec, FlowStats())
        except BaseException:
            self._index.remove(spec.ufid)
            raise

    def _place(self, spec: FlowSpec, carried: FlowStats) -> DpFlow:
        op = self._translate_op(spec)
        if isinstance(op, NotOffloadable):
            return self._to_sw(spec, str(op))
        (err,) = self.tc.apply([op])  # (a socket error too is an outcome)
        if err is not None and not self._landed(err, op, spec.ufid):
            return self._to_sw(spec, f"tc refused: {err.extack or err.message}")
        return self._on_tc(spec, op.filter, carried)

    def _landed(self, err: OffloadError, op: TcOp, ufid: Ufid) -> bool:
        """Whether an add that failed with ``err`` is in the kernel all the
        same: for ``OffloadUnsure`` (a socket error lost its answer), its
        filter read back, with our cookie.  When even that read fails: no,
        and the flow goes to software -- a filter that did land stays
        untracked until ``cleanup``, or the next ``adopt``, finds it (logged)."""
        if not isinstance(err, OffloadUnsure):
            return False
        f = op.filter if isinstance(op.filter, V.FlowerFilter) else op.filter.value()
        try:
            got = self.tc.get(f)
        except OffloadError as e:
            self._log.warning("tc add lost its answer and cannot be read back: in software",
                              ufid=str(ufid), error=str(e))
            return False
        return got is not None and got.filter.cookie == ufid.to_bytes()

    def _on_tc(self, spec: FlowSpec, f: V.FlowerFilter | V.FilterRef,
               carried: FlowStats) -> DpFlow:
        self._tc[spec.ufid] = TcFlow(spec.ufid, spec.match, spec.actions, f, carried)
        # per flow, so debug (and lazily rendered): the flow's Placement says it
        self._log.debug("flow on tc", ufid=spec.ufid, ifindex=f.ifindex, chain=f.chain,
                        prio=f.prio)
        return DpFlow(spec.ufid, spec.match, spec.actions, carried, self._tc_placement(None))

    def put_many(self, specs: Iterable[FlowSpec]) -> list[DpFlow | DatapathError]:
        """``put`` of many flows with one pipelined tc batch (an upcall burst,
        a revalidator sweep).  Each flow gets exactly what ``put`` would give
        it, in order: its DpFlow, or the DatapathError ``put`` would raise
        (FlowExists, FlowLimit...), without stopping the others.  Not part of
        the ``Datapath`` interface (``put`` one by one is the contract).
        The garbage collector is paused meanwhile (``tc_netlink.gc_paused``)."""
        with gc_paused():
            return self._put_many(specs)

    def _put_many(self, specs: Iterable[FlowSpec]) -> list[DpFlow | DatapathError]:
        out: list[DpFlow | DatapathError | None] = []
        pending: list[tuple[int, FlowSpec, TcOp]] = []
        index = self._index
        for spec in specs:
            try:
                index.insert(spec.ufid, spec.match, spec.actions)
            except DatapathError as e:
                out.append(e)
                continue
            try:
                op = self._translate_op(spec)
                if isinstance(op, NotOffloadable):
                    out.append(self._to_sw(spec, str(op)))
                else:
                    pending.append((len(out), spec, op))
                    out.append(None)
            except DatapathError as e:
                index.remove(spec.ufid)
                out.append(e)
            except BaseException:  # as put: nothing of the unsent batch stays
                for _, p, _ in pending:
                    index.remove(p.ufid)
                index.remove(spec.ufid)
                raise
        try:
            results = self.tc.apply([op for _, _, op in pending])
        except BaseException:  # no outcome for any of them: none is placed
            for _, spec, _ in pending:
                index.remove(spec.ufid)
            raise
        placement = self._tc_placement(None)
        flows, zero, placed = self._tc, NO_STATS, 0
        for (i, spec, op), err in zip(pending, results):
            if err is None or self._landed(err, op, spec.ufid):  # _on_tc, no log line per flow
                ufid, match, actions = spec.ufid, spec.match, spec.actions
                flows[ufid] = TcFlow(ufid, match, actions, op.filter, zero)
                out[i] = DpFlow(ufid, match, actions, zero, placement)
                placed += 1
                continue
            try:
                out[i] = self._to_sw(spec, f"tc refused: {err.extack or err.message}")
            except DatapathError as e:
                index.remove(spec.ufid)
                out[i] = e
        self._log.debug("flows on tc", count=placed)
        return [o for o in out if o is not None]

    def _translate_op(self, spec: FlowSpec) -> TcOp | NotOffloadable:
        """The tc add of a new megaflow: through the template of its mask,
        control values and actions when there is one (``tc_template``: the
        very filter and bytes of ``_translate`` + ``tc_wire``), else
        ``_translate`` (which makes the template for the next ones)."""
        match, actions = spec.match, spec.actions
        tkey = template_key(match, actions)
        t = self._templates.get(tkey)
        if t is not None:
            # No check here: a template is made only after ``self.check``
            # passed the same ingress and outputs, and an OutputCheck answers
            # by those alone (the topology it reads is fixed).
            base = t.filter
            handle = self._handle(base.ifindex, base.chain, base.prio)
            if handle < 1 << 32:
                key, cookie = match.key, spec.ufid.to_bytes()
                return TcOp("add", PatchedFilter(t, key, handle, cookie),
                            t.body_for(key, handle, cookie))
            # (out of handles: the full path says so)
        full = self._translate(match, actions, spec.ufid)
        if isinstance(full, NotOffloadable):
            return full
        if tkey not in self._templates:
            if len(self._templates) >= TEMPLATES_MAX:
                self._templates.clear()
            self._templates[tkey] = compile_template(full, match, actions)
        return TcOp("add", full)

    def _tc_placement(self, dump: V.FilterDump | TerseFilter | None) -> Placement:
        if self.policy is Policy.SKIP_SW:
            return _ON_HW
        if self.policy is Policy.SKIP_HW:
            return _SKIP_HW
        if dump is None:
            return _NOT_READ
        return _ON_HW if dump.in_hw else _NOT_IN_HW

    def _tc_stats(self, t: TcFlow, dump: V.FilterDump | None) -> FlowStats:
        """The stats of ``t`` from a full read of its filter (exact lastuse,
        which also seeds ``dump``'s state for the flow)."""
        if dump is None:
            return t.carried
        return self._counters.seed(t, dump.stats, self.clock())

    def _read(self, t: TcFlow) -> DpFlow:
        dump = self.tc.get(t.filter)
        return DpFlow(t.ufid, t.match, t.actions, self._tc_stats(t, dump), self._tc_placement(dump))

    # -- the Datapath interface ------------------------------------------------------

    def modify(self, ufid: Ufid, actions: A.Actions, *, zero_stats: bool = False) -> DpFlow:
        t = self._tc.get(ufid)
        if t is None:
            if ufid not in self._sw_reason:
                raise FlowNotFound("no flow with this ufid", ufid=str(ufid))
            old_sw = self.sw.get(ufid)
            new = self._translate(old_sw.match, actions, ufid)
            if isinstance(new, NotOffloadable):
                self._index.modify(ufid, actions)
                self._sw_reason[ufid] = str(new)
                if zero_stats:
                    self._sw_carried.pop(ufid, None)
                return self._as_sw(self.sw.modify(ufid, actions, zero_stats=zero_stats))
            final = self._sw_carried.pop(ufid, FlowStats()) + self.sw.delete(ufid)
            del self._sw_reason[ufid]  # software -> tc: carry the counters
            self._index.modify(ufid, actions)
            return self._place(FlowSpec(old_sw.match, actions, ufid),
                               FlowStats() if zero_stats else final)
        before = self._read(t)
        carried = FlowStats() if zero_stats else before.stats
        new = self._translate(t.match, actions, ufid, old=t.src)
        self._index.modify(ufid, actions)
        if isinstance(new, NotOffloadable):  # tc -> software: carry the counters
            self._delete_tc(t)
            return self._to_sw(FlowSpec(t.match, actions, ufid), str(new), carried)
        try:
            self.tc.replace(new)
        except OffloadError as e:
            self._delete_tc(t)
            return self._to_sw(FlowSpec(t.match, actions, ufid),
                               f"tc refused: {e.extack or e.message}", carried)
        self._tc[ufid] = TcFlow(ufid, t.match, actions, new, carried)
        return DpFlow(ufid, t.match, actions, carried, before.placement)

    def _delete_tc(self, t: TcFlow) -> None:
        self.tc.delete(t.filter)
        del self._tc[t.ufid]

    def delete(self, ufid: Ufid) -> FlowStats:
        t = self._tc.get(ufid)
        if t is not None:
            final = self._read(t).stats
            self._delete_tc(t)
        elif ufid in self._sw_reason:
            final = self._sw_carried.pop(ufid, FlowStats()) + self.sw.delete(ufid)
            del self._sw_reason[ufid]
        else:
            raise FlowNotFound("no flow with this ufid", ufid=str(ufid))
        self._index.remove(ufid)
        return final

    def get(self, ufid: Ufid) -> DpFlow:
        t = self._tc.get(ufid)
        if t is not None:
            return self._read(t)
        if ufid in self._sw_reason:
            return self._as_sw(self.sw.get(ufid))
        raise FlowNotFound("no flow with this ufid", ufid=str(ufid))

    def dump(self) -> Iterator[DpFlow]:
        """Every flow: tc flows with their filters' counters (a terse dump per
        port, joined by cookie; lastuse as the theory of operation says),
        then the software ones.  The tc part is read and joined with the
        collector paused (``gc_paused``: the values it makes would otherwise
        trigger full collections, half of the join's time at 50k flows)."""
        with gc_paused():
            tc_flows = self._dump_tc()
        yield from tc_flows
        for f in self.sw.dump():
            if f.ufid in self._sw_reason:
                yield self._as_sw(f)

    def _dump_tc(self) -> list[DpFlow]:
        tcs = list(self._tc.values())
        dumped: list[TerseFilter] = []
        for ifindex in {t.src.ifindex for t in tcs}:
            dumped += self._dump_stats(ifindex)
        now = self.clock()  # after the reads: no counted packet is later than this
        fixed = None if self.policy is Policy.NONE else self._tc_placement(None)
        return self._counters.join(tcs, dumped, now, self._tc_placement, fixed)

    def _dump_stats(self, ifindex: int) -> list[TerseFilter]:
        """The terse dump of ``ifindex``; per (chain, prio) of ours when the
        kernel stops it at a classifier without a terse dump (u32)."""
        try:
            return self.tc.dump_stats(ifindex)
        except OffloadError as e:
            if e.errno != errno.EMSGSIZE:
                raise
        places = sorted({(t.src.chain, t.src.prio) for t in self._tc.values()
                         if t.src.ifindex == ifindex})
        self._log.debug("terse dump stopped by another classifier: one per priority",
                        ifindex=ifindex, priorities=len(places))
        return [tf for chain, prio in places for tf in self.tc.dump_stats(ifindex, chain, prio)]

    def execute(self, packet: bytes, in_port: int, actions: A.Actions) -> None:
        self.sw.execute(packet, in_port, actions)

    # -- ownership: adopt after a restart, clean up on the way out ---------------------

    def _ours(self, ifindex: int) -> Iterator[V.FilterDump]:
        for d in self.tc.dump(ifindex):
            if PRIO_MIN <= d.filter.prio <= PRIO_MAX and ufid_of(d.filter) is not None:
                yield d

    def adopt(self) -> int:
        """Take over the filters a previous flowpath left on our ports, with
        their counters; return how many.  Call after ``add_port``s."""
        n = 0
        for ifindex in self._by_ifindex:
            for d in self._ours(ifindex):
                ufid = ufid_of(d.filter)
                assert ufid is not None
                if ufid in self._tc:
                    continue
                try:
                    match, actions = from_flower(d.filter, self._by_ifindex)
                    self._index.insert(ufid, match, actions)
                except Exception as e:  # a filter we cannot read back stays, untouched
                    self._log.warning("filter not adopted", ifindex=ifindex, prio=d.filter.prio,
                                      handle=d.filter.handle, reason=str(e))
                    continue
                f = d.filter
                self._prios.setdefault((match.mask, f.protocol), f.prio)
                k = (f.ifindex, f.chain, f.prio)
                self._handles[k] = max(self._handles.get(k, 0), f.handle)
                self._tc[ufid] = t = TcFlow(ufid, match, actions, f)
                self._tc_stats(t, d)  # seeds the flow's lastuse, exact
                n += 1
        self._log.info("adopted tc flows", count=n)
        return n

    def cleanup(self) -> int:
        """Delete every filter of ours on our ports (adopted or not) and the
        ingress qdiscs this instance created; return how many filters."""
        n = 0
        for ifindex in self._by_ifindex:
            for d in list(self._ours(ifindex)):
                self.tc.delete(d.filter)
                n += 1
        for ufid in list(self._tc):
            self._index.remove(ufid)
        self._tc.clear()
        for ifindex in self._by_ifindex:
            self.tc.release_ingress(ifindex)
        return n

    @property
    def tc_flows(self) -> Mapping[Ufid, TcFlow]:
        return self._tc


def eswitch_check(topology: object) -> OutputCheck:
    """An ``OutputCheck`` from ``offload.switchdev.Topology.offload_refusal``:
    every output must be on the ingress representor's eswitch."""
    refusal = getattr(topology, "offload_refusal")

    def check(ingress: PortInfo, outputs: list[PortInfo]) -> str | None:
        reason: str | None = refusal(ingress.ifname, [o.ifname for o in outputs])
        return reason
    return check
