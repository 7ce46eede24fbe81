"""The flows the offload datapath holds on tc, and their counters from terse
dumps.

Theory of operation
-------------------
A ``TcFlow`` is a megaflow placed on tc: its ufid, match and actions, the
filter that carries it (a ``FlowerFilter``, or a ``tc_template.
PatchedFilter`` for one made from a template: the same filter, its value
made only when asked for), and ``carried`` -- what earlier incarnations of
the flow counted (a replace on modify starts fresh counters; so does a move
between tc and software).

``TcCounters`` turns a terse dump (``tc_terse.TerseFilter``: flags,
counters and the ufid cookie; no keys, no actions, no action timestamps)
into DpFlows by joining it by cookie with the flows held.  It is pure: the
caller reads the dump and the clock.

* Whole frames: software tc counts skb->len from the network header, so
  ETH_HLEN per software-counted packet is added; hardware counts frames.
* lastuse: a terse dump has none.  Per flow the join keeps the packet count
  of its last read and the ``used`` it gave then.  A count that changed
  since (or a first read that finds packets) gives ``used`` = the time of
  this read: an upper bound, late by at most the time since the previous
  read (idle aging is never early, at most one dump interval late).  An
  unchanged count keeps the previous ``used``, and the join gives back the
  very DpFlow it gave last time (an idle flow costs no new values).  A full
  read of a filter, which has the kernel's exact lastuse, seeds that state
  (``seed``).
* A filter whose cookie is not one of the held flows' is ignored; a held
  flow missing from the dump shows its carried counters.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from dpif import actions as A
from dpif.flow import DpFlow, FlowStats, Placement, Ufid, slot_setters
from dpif.match import Match
from offload.tc_terse import TerseFilter
from offload.tc_values import FilterRef, FlowerFilter, TcStats

ETH_HLEN = 14
NO_STATS = FlowStats()  # carried by a flow new on tc (the join tells it by identity)


@dataclass(frozen=True, slots=True, init=False)
class TcFlow:
    """A flow placed on tc: what we installed and what it counted before."""

    ufid: Ufid
    match: Match
    actions: A.Actions
    src: FlowerFilter | FilterRef  # the filter (a template's: made on demand)
    carried: FlowStats = NO_STATS

    def __init__(self, ufid: Ufid, match: Match, actions: A.Actions,
                 src: FlowerFilter | FilterRef, carried: FlowStats = NO_STATS) -> None:
        # one per flow of a put burst: dpif.flow.slot_setters says why
        _t_ufid(self, ufid)
        _t_match(self, match)
        _t_actions(self, actions)
        _t_src(self, src)
        _t_carried(self, carried)

    @property
    def filter(self) -> FlowerFilter:
        src = self.src
        return src if isinstance(src, FlowerFilter) else src.value()


_t_ufid, _t_match, _t_actions, _t_src, _t_carried = slot_setters(TcFlow)


def whole_frames(packets: int, nbytes: int, hw_packets: int) -> int:
    """Bytes of ``packets`` counted as whole frames (see the module's
    docstring): software-counted ones get their Ethernet header back."""
    sw = packets - hw_packets
    return nbytes + ETH_HLEN * sw if sw > 0 else nbytes


class TcCounters:
    """The join of terse dumps with the held flows, and its per-flow state
    (the theory of operation says what and why)."""

    def __init__(self) -> None:
        # per tc flow (by cookie), as of its last read: (that TcFlow, packets,
        # used, the DpFlow the join gave or None after a full read)
        self._last: dict[bytes, tuple[TcFlow, int, float | None, DpFlow | None]] = {}

    def seed(self, t: TcFlow, stats: TcStats, now: float) -> FlowStats:
        """The stats of ``t`` from a full read of its filter (the kernel's
        exact lastuse), which becomes the state the next join starts from."""
        used = None
        if stats.packets and stats.idle_ms is not None:
            used = now - stats.idle_ms / 1000
        self._last[t.src.cookie] = (t, stats.packets, used, None)
        return t.carried + FlowStats(stats.packets, whole_frames(
            stats.packets, stats.bytes, stats.hw_packets), used)

    def join(self, flows: Collection[TcFlow], dumped: Iterable[TerseFilter], now: float,
             placement: Callable[[TerseFilter | None], Placement],
             fixed: Placement | None) -> list[DpFlow]:
        """A DpFlow for each of ``flows``, with the counters of its filter in
        ``dumped`` (read before ``now``; the first of a cookie listed twice),
        placed by ``fixed`` if given, else by ``placement`` of its filter
        (None: not in the dump).  Flows in dump order, then the missing."""
        held = {t.src.cookie: t for t in flows}
        out: list[DpFlow] = []
        emit = out.append
        last = self._last
        for d in dumped:
            cookie = d.cookie
            t = held.pop(cookie, None)
            if t is None:
                continue  # not ours, or listed again
            packets = d.packets
            where = fixed or placement(d)
            prev = last.get(cookie)
            if prev is not None and prev[0] is t and prev[1] == packets:
                flow = prev[3]
                if flow is not None and flow.placement is where:
                    emit(flow)  # nothing new since the last read: the same value
                    continue
                used = prev[2]
            else:  # grew (or first read of this filter): used since the last read
                used = now if packets else None
            sw_packets = packets - d.hw_packets  # whole_frames, inlined (per flow)
            stats = FlowStats(packets, d.bytes + ETH_HLEN * sw_packets if sw_packets > 0
                              else d.bytes, used)
            c = t.carried
            if c is not NO_STATS and (c.packets or c.bytes or c.used is not None
                                      or c.tcp_flags):
                stats = c + stats
            flow = DpFlow(t.ufid, t.match, t.actions, stats, where)
            last[cookie] = (t, packets, used, flow)
            emit(flow)
        for t in held.values():  # not in the dump
            emit(DpFlow(t.ufid, t.match, t.actions, t.carried, placement(None)))
        if len(last) > len(flows):  # flows gone since: forget them
            live = {t.src.cookie for t in flows}
            for cookie in [c for c in last if c not in live]:
                del last[cookie]
        return out
