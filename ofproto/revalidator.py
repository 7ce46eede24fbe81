"""The revalidator: what happens to a megaflow after it is installed.

Theory of operation
-------------------
OVS's revalidator (``ofproto/ofproto-dpif-upcall.c``) is the baseline; its
rules and numbers are kept, the threads are not.  A ``Revalidator`` belongs
to one bridge and its placer datapath and, like every control command, runs
on the datapath thread only (``ofproto.control``), so it shares the bridge's
state without a lock.  It does four things:

Credit.  ``credit(flow)`` adds the growth of a flow's counters since the
last read to the rules that produced it (the bridge's ukey of the flow).
Per ufid it remembers the counters already credited and when they last grew
(``_Seen``).  Growth of a NORMAL flow also refreshes the MAC entries its
translation learned (``MacTable.refresh``), as OVS's xlate cache does: a
station whose packets all stay in tc is not aged out of the MAC table.  A flow's *last activity* is the latest of its ``used`` stamp,
the time its counters were last seen growing (a terse tc dump has no
``used``) and its creation (the ukey's ``created``): a flow that never saw
a packet is as old as it is.  A flow in the dump without a ukey (a tc
filter adopted after a restart) is checked once like a rule change (below)
and gets a ukey if it still holds; the counters it had when first seen
belong to the previous run and are not credited.

Sweep.  ``sweep()`` runs every ``interval`` (the daemon's timer):

1. dump every flow (tc and software) and credit each one;
2. expire rules past their idle/hard timeouts (their flows are rechecked
   below) and MAC entries past their aging;
3. per flow, with ``n`` flows dumped and ``limit`` the current flow limit:

   * while more than ``2 * limit`` flows are left: delete (OVS's emergency
     "kill them all", reassessed flow by flow, so the flows come back to
     twice the limit, not to zero);
   * idle longer than ``max_idle`` -- 100 ms when ``n > limit`` -- delete.
     A flow in hardware (``Placement.offloaded``) is idle only past
     ``max(that, hw_stats_delay)``: hardware counters reach tc up to ~2 s
     late, so a young offloaded flow, or one whose counters moved within
     that delay, is never aged out early;
   * the rules changed since the flow was last checked, or its translation
     went through NORMAL and the MAC table changed since (a MAC learned,
     moved or aged out): recheck it;

   a deletion credits the flow's final counters first, so a rule's counters
   never lose a packet (``ofctl dump-flows`` totals are monotonic);
4. adapt the flow limit to how long the sweep took (``next_flow_limit``).

Recheck (``recheck``; also ``revalidate`` after every rule change).  The
flow's own key is translated again without side effects.  Same actions
and a megaflow that still covers the flow: kept (the ukey takes the new
rule ids, so later packets are credited to the rules that now produce
them).  Still covered but other actions: modified in place (tc replace;
the counters continue, packets keep flowing without an upcall).  Not
covered: deleted; the next packet makes a fresh upcall.

Flow limit.  ``Bridge._install`` refuses to install a megaflow while the
bridge holds ``flow_limit`` or more (the upcall's packet is still
executed); the revalidator owns that number.  It starts at
``min(ceiling, 10000)`` as OVS does -- raised to the number of flows found
by the first sweep, so flows adopted after a restart are not killed as an
emergency -- and after each sweep of ``d`` ms over ``n`` flows:

    d > 2000           limit / (d // 1000)
    1300 < d <= 2000   limit * 3/4
    d < 1000           limit + 1000, if the dump ran faster than limit flows/s
                       (limit < n * 1000 / d)

bounded to ``[min(ceiling, 1000), ceiling]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import structlog

from dpif.datapath import Datapath
from dpif.errors import DatapathError, FlowNotFound
from dpif.flow import DpFlow, Ufid
from dpif.match import Match
from ofproto.bridge import DEFAULT_FLOW_LIMIT, Bridge, Ukey

log = structlog.get_logger("ofproto.revalidator")

DEFAULT_MAX_IDLE_MS = 10_000   # OVS other_config:max-idle
DEFAULT_INTERVAL_MS = 500      # OVS other_config:max-revalidator
HW_STATS_DELAY = 2.0           # s; OVS other_config:offloaded-stats-delay
LIMIT_IDLE = 0.1               # s: the idle time while above the flow limit
INITIAL_FLOW_LIMIT = 10_000
MIN_FLOW_LIMIT = 1_000


@dataclass(frozen=True, slots=True)
class RevalidatorConfig:
    """Times in seconds; ``flow_limit`` is the ceiling of the adaptive limit."""

    max_idle: float = DEFAULT_MAX_IDLE_MS / 1000
    interval: float = DEFAULT_INTERVAL_MS / 1000
    flow_limit: int = DEFAULT_FLOW_LIMIT
    hw_stats_delay: float = HW_STATS_DELAY

    @property
    def period(self) -> float:
        """Time between sweep starts (OVS: min(max_idle, max_revalidator))."""
        return min(self.max_idle, self.interval)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a recheck of some flows did."""

    kept: int = 0
    modified: int = 0
    deleted: int = 0

    def __add__(self, o: Outcome) -> Outcome:
        return Outcome(self.kept + o.kept, self.modified + o.modified, self.deleted + o.deleted)


_KEPT, _MODIFIED, _DELETED, _NONE = Outcome(1), Outcome(0, 1), Outcome(0, 0, 1), Outcome()


@dataclass(frozen=True, slots=True)
class Sweep:
    """One sweep: flows dumped, what went and why, how long it took."""

    time: float
    flows: int
    duration: float
    flow_limit: int  # after adaptation
    max_idle: float  # the idle time applied
    aged_out: int = 0
    limit_deleted: int = 0
    rechecked: Outcome = Outcome()
    rules_expired: int = 0


@dataclass(frozen=True, slots=True)
class _Seen:
    packets: int
    bytes: int
    active: float  # when the counters last grew (first: the flow's creation)


def next_flow_limit(limit: int, duration_ms: float, n_flows: int, ceiling: int) -> int:
    """The flow limit after a sweep of ``duration_ms`` over ``n_flows`` (OVS's rules)."""
    d = max(int(duration_ms), 1)
    if d > 2000:
        limit //= d // 1000
    elif d > 1300:
        limit = limit * 3 // 4
    elif d < 1000 and limit < n_flows * 1000 // d:
        limit += 1000
    return min(ceiling, max(limit, MIN_FLOW_LIMIT))


def covers(mega: Match, flow: Match) -> bool:
    """Every packet of ``flow`` is in ``mega``."""
    return (mega.mask & ~flow.mask) == 0 and (flow.key & mega.mask) == (mega.key & mega.mask)


class Revalidator:
    """Counters, aging, the flow limit and rechecks of one bridge's megaflows."""

    def __init__(self, bridge: Bridge, dp: Datapath, cfg: RevalidatorConfig) -> None:
        self.bridge = bridge
        self.dp = dp
        self.cfg = cfg
        bridge.flow_limit = min(cfg.flow_limit, INITIAL_FLOW_LIMIT)
        self.last: Sweep | None = None
        self.totals: dict[str, int] = {"sweeps": 0, "aged_out": 0, "limit_deleted": 0,
                                       "modified": 0, "deleted": 0}
        self._seen: dict[Ufid, _Seen] = {}
        self._limit_hits = bridge.counters.get("flow_limit_hit", 0)
        self._rules_version = bridge.tables.version
        self.log = log.bind(bridge=bridge.name)

    # -- counters ---------------------------------------------------------------------

    def _ukey(self, f: DpFlow) -> Ukey | None:
        u = self.bridge.ukeys.get(f.match)
        return u if u is not None and u.ufid == f.ufid else None

    def credit(self, f: DpFlow, now: float) -> None:
        """Credit the growth of ``f``'s counters to its rules."""
        ukey = self._ukey(f)
        seen = self._seen.get(f.ufid)
        if seen is None:
            if ukey is None:  # adopted: its counts so far are the previous run's
                self._seen[f.ufid] = _Seen(f.stats.packets, f.stats.bytes, now)
                return
            seen = _Seen(0, 0, ukey.created)
        dp_ = f.stats.packets - seen.packets
        if dp_ < 0:  # counters restarted from zero: all they count is new
            seen = _Seen(0, 0, seen.active)
            dp_ = f.stats.packets
        if dp_ == 0:
            self._seen[f.ufid] = seen
            return
        used = now if f.stats.used is None else f.stats.used
        self._seen[f.ufid] = _Seen(f.stats.packets, f.stats.bytes, max(seen.active, used))
        if ukey is not None:
            for rid in dict.fromkeys(rid for _, rid in ukey.rules):
                self.bridge.tables.credit(rid, dp_, max(0, f.stats.bytes - seen.bytes), used)
            for lrn in ukey.learned:
                self.bridge.macs.refresh(lrn.vlan, lrn.mac, lrn.port, used)

    def credit_all(self) -> list[DpFlow]:
        """Dump every flow and credit it; forget flows that are gone."""
        now = self.bridge.clock()
        flows = list(self.dp.dump())
        for f in flows:
            self.credit(f, now)
        if len(self._seen) > len(flows):
            live = {f.ufid for f in flows}
            for u in [u for u in self._seen if u not in live]:
                del self._seen[u]
        return flows

    def delete(self, f: DpFlow) -> bool:
        """Delete a flow, crediting its final counters first; False if it was gone."""
        try:
            final = self.dp.delete(f.ufid)
        except FlowNotFound:
            self.bridge.forget_flow(f.match)
            return False
        self.credit(f.with_stats(final), self.bridge.clock())
        self._seen.pop(f.ufid, None)
        self.bridge.forget_flow(f.match)
        return True

    # -- rechecks -----------------------------------------------------------------------

    def recheck(self, f: DpFlow, now: float | None = None) -> Outcome:
        """Translate ``f`` again (no side effects): keep, modify or delete it."""
        br = self.bridge
        now = br.clock() if now is None else now
        version = br.macs.version
        # side_effects=True only to read the MACs NORMAL would learn; nothing is applied
        res = br.translate(f.match.key, side_effects=True, now=now)
        if covers(res.megaflow, f.match):
            out: Outcome | None = _KEPT
            if res.actions != f.actions:
                try:
                    self.dp.modify(f.ufid, res.actions)
                    out = _MODIFIED
                except FlowNotFound:
                    br.forget_flow(f.match)
                    return _NONE
                except DatapathError as e:
                    self.log.info("flow not modifiable, deleted", ufid=str(f.ufid),
                                  reason=str(e))
                    out = None
            if out is not None:
                old = self._ukey(f)
                br.ukeys[f.match] = Ukey(f.ufid, f.match, res.actions, res.rules,
                                         now if old is None else old.created,
                                         res.uses_normal, version, res.learned)
                if out is _MODIFIED:
                    self.log.debug("flow modified", ufid=str(f.ufid), dp=f.placement.dp)
                return out
        if not self.delete(f):
            return _NONE
        self.log.debug("flow revalidated away", ufid=str(f.ufid), dp=f.placement.dp)
        return _DELETED

    def revalidate(self, flows: list[DpFlow] | None = None) -> Outcome:
        """Recheck every installed flow (after a rule change).

        ``flows``: a dump the caller just credited (the datapath has not
        changed since, only the rules); without it, dump and credit here."""
        now = self.bridge.clock()
        self._rules_version = self.bridge.tables.version
        out = Outcome()
        for f in self.credit_all() if flows is None else flows:
            out += self.recheck(f, now)
        self._total(out)
        return out

    def _total(self, o: Outcome) -> None:
        self.totals["modified"] += o.modified
        self.totals["deleted"] += o.deleted

    # -- the sweep ------------------------------------------------------------------------

    def _idle(self, f: DpFlow, ukey: Ukey | None, now: float) -> float:
        seen = self._seen.get(f.ufid)
        last = max(f.stats.used if f.stats.used is not None else -math.inf,
                   seen.active if seen is not None else -math.inf,
                   ukey.created if ukey is not None else -math.inf)
        return now - last if last > -math.inf else 0.0

    def sweep(self) -> Sweep:
        """Dump, credit, age out, recheck what changed, adapt the limit."""
        br, cfg = self.bridge, self.cfg
        start = br.clock()
        flows = self.credit_all()
        now = br.clock()
        n = len(flows)
        if self.last is None and n > br.flow_limit:  # adopted flows are not an emergency
            br.flow_limit = min(cfg.flow_limit, n)
        limit = br.flow_limit
        expired = br.tables.expire(now) if br.tables.has_timeouts else []
        br.macs.expire(now)
        rules_changed = br.tables.version != self._rules_version
        self._rules_version = br.tables.version
        mac_version = br.macs.version
        left = n
        max_idle = LIMIT_IDLE if n > limit else cfg.max_idle
        hw_idle = max(max_idle, cfg.hw_stats_delay)
        aged = killed = 0
        out = Outcome()
        for f in flows:
            ukey = self._ukey(f)
            if left > 2 * limit:
                killed += self.delete(f)
                left -= 1
                continue
            idle = self._idle(f, ukey, now)
            if idle > (hw_idle if f.placement.offloaded else max_idle):
                aged += self.delete(f)
                left -= 1
            elif (rules_changed or ukey is None
                  or (ukey.uses_normal and ukey.mac_version != mac_version)):
                out += self.recheck(f, now)
        self._total(out)
        end = br.clock()
        br.flow_limit = next_flow_limit(limit, (end - start) * 1000, n, cfg.flow_limit)
        self.last = Sweep(start, n, end - start, br.flow_limit, max_idle, aged, killed, out,
                          len(expired))
        t = self.totals
        t["sweeps"] += 1
        t["aged_out"] += aged
        t["limit_deleted"] += killed
        if aged or killed or out.modified or out.deleted or expired:
            self.log.info("sweep", flows=n, aged_out=aged, limit_deleted=killed,
                          modified=out.modified, deleted=out.deleted, rules_expired=len(expired),
                          ms=round((end - start) * 1000, 1), flow_limit=br.flow_limit)
        if killed:
            self.log.warning("flows over twice the flow limit: deleted", flows=n, limit=limit)
        hits = br.counters.get("flow_limit_hit", 0)
        if hits > self._limit_hits:  # once per sweep, not once per upcall
            self.log.warning("upcalls at the flow limit: executed, not installed",
                             upcalls=hits - self._limit_hits, limit=limit)
            self._limit_hits = hits
        return self.last

    def status(self) -> dict[str, object]:
        """The revalidator's state for ``daemon status``."""
        last = self.last
        return {
            "flows": len(self.bridge.ukeys), "flow_limit": self.bridge.flow_limit,
            "flow_limit_max": self.cfg.flow_limit,
            "max_idle_ms": round(self.cfg.max_idle * 1000),
            "interval_ms": round(self.cfg.period * 1000),
            "last_dump_ms": None if last is None else round(last.duration * 1000, 1),
            "last_flows": None if last is None else last.flows,
            **self.totals,
        }

