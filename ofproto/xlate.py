"""Translation ("xlate"): a packet's OF flow through the tables -> datapath actions + megaflow.

Theory of operation
-------------------
``xlate(env, flow)`` is a pure function of the flow, the rule tables, the
bridge's ports, its MAC table and the time.  It returns an ``XlateResult``
value: the datapath actions, the megaflow ``Match`` (the packet's key under
the mask of every bit the translation read), the rules it hit, and the side
effects it *wants* (MACs to learn, packet-ins to queue).  It never sends,
never learns, never counts: the bridge applies the side effects, and the
revalidator calls it with ``side_effects=False`` to get the same actions and
mask with the effect lists left empty.

Soundness is the rule (after ``ofproto/ofproto-dpif-xlate.c``): every flow
that agrees with the translated one on the megaflow mask must translate to
exactly the same actions.  Every decision therefore goes through
``Ctx.consult`` (see ``xlate_ctx``): classifier lookups report the bits they
read, NORMAL reports the bits it read, ``output`` reads ``in_port``, a
``set_field`` reads its prerequisites.  Some bits are always read, as OVS
does: ``recirc_id``, ``in_port``, ``eth_type`` and, for IP, ``ip_frag``.

Tables and the pipeline.  Lookup starts in table 0 (or, after a
recirculation, where the frozen state says).  A rule's actions run in order;
``resubmit(port,table)`` looks the flow up again (with ``in_port``
temporarily replaced) and runs that rule's actions nested, then returns;
``goto_table`` continues in a later table once the rule's actions are done.
Nesting deeper than ``MAX_DEPTH`` or more than ``MAX_RESUBMITS`` lookups is
an error: the packet is dropped (the mask still says what was read, so the
drop is itself a sound megaflow).  A table miss drops.

Outputs.  ``output:N`` to the input port is dropped (OpenFlow: only
``in_port`` sends back out of the input port); ``flood``/``all`` skip the
input port.  ``controller`` becomes a datapath ``userspace`` action whose
userdata encodes a ``PacketInMeta`` (reason, table, cookie, rule id,
max_len), so a packet reaching it later from the datapath is delivered as
the same packet-in.  ``dec_ttl`` becomes the datapath's ``dec_ttl``, which
itself sends packets with ttl <= 1 to userspace -- so translation does not
branch on the TTL and the megaflow does not need the TTL exact (OVS
un-wildcards it).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dpif import actions as dpa
from dpif import fields as dpf
from dpif.match import Match, exact_unmaskable
from ofproto import ofactions as ofa
from ofproto.normal import Learn, MacTable, PortConfig, decide_normal
from ofproto.offields import DP_MASK, OF_ONLY_MASK, OFPP_LOCAL, OfField, of_field
from ofproto.rule import Rule
from ofproto.xlate_ctx import Ctx, Tag

MAX_DEPTH = 64
MAX_RESUBMITS = 4096

_B = dpf.BY_NAME
F_IN_PORT = _B["in_port"]
ALWAYS = _B["recirc_id"].field_mask | F_IN_PORT.field_mask | _B["eth_type"].field_mask
M_FRAG = _B["ip_frag"].field_mask


class RuleLookup(Protocol):
    def lookup(self, table: int, flow: int) -> tuple[tuple[int, Rule] | None, int]:
        """Best rule of ``table`` for ``flow`` as (rule_id, rule), and the bits read."""
        ...


@dataclass(frozen=True, slots=True)
class FrozenState:
    """What a recirculation resumes with: the table and the OF-only fields."""

    table: int
    of_only: int


class RecircRegistry:
    """recirc_id <-> FrozenState.  Allocation is idempotent (same state, same id)."""

    def __init__(self) -> None:
        self._ids: dict[FrozenState, int] = {}
        self._states: dict[int, FrozenState] = {}

    def id_for(self, state: FrozenState) -> int:
        rid = self._ids.get(state)
        if rid is None:
            rid = self._ids[state] = len(self._ids) + 1
            self._states[rid] = state
        return rid

    def state(self, recirc_id: int) -> FrozenState | None:
        return self._states.get(recirc_id)


@dataclass(frozen=True, slots=True)
class PacketInMeta:
    """What a packet-in says besides the packet; carried in userspace userdata."""

    reason: str
    table: int
    cookie: int
    rule_id: int
    max_len: int = 0xFFFF
    userdata: bytes = b""

    _FMT = "!4sBBQIH"
    _MAGIC = b"FPpi"

    def encode(self) -> bytes:
        return struct.pack(self._FMT, self._MAGIC, ofa.CONTROLLER_REASONS.index(self.reason),
                           self.table, self.cookie, self.rule_id, self.max_len) + self.userdata

    @classmethod
    def decode(cls, data: bytes) -> PacketInMeta | None:
        n = struct.calcsize(cls._FMT)
        if len(data) < n or not data.startswith(cls._MAGIC):
            return None
        _, reason, table, cookie, rule_id, max_len = struct.unpack_from(cls._FMT, data)
        if reason >= len(ofa.CONTROLLER_REASONS):
            return None
        return cls(ofa.CONTROLLER_REASONS[reason], table, cookie, rule_id, max_len, data[n:])


# -- trace events ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LookupEvent:
    depth: int
    table: int
    flow: int
    rule_id: int | None
    rule: Rule | None


@dataclass(frozen=True, slots=True)
class ActionEvent:
    depth: int
    action: ofa.OfAction


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """A remark under the current table: ``detail`` (OVS's `` -> ``), ``warn``
    (`` >> ``: something the rules asked for was not done) or ``error``."""

    depth: int
    text: str
    kind: str = "detail"


TraceEvent = LookupEvent | ActionEvent | NoteEvent


@dataclass(frozen=True, slots=True)
class XlateResult:
    actions: dpa.Actions
    megaflow: Match
    of_wc: int
    initial_flow: int
    final_flow: int
    rules: tuple[tuple[int, int], ...]  # (table, rule_id) in hit order
    packet_ins: tuple[PacketInMeta, ...] = ()
    learned: tuple[Learn, ...] = ()
    uses_normal: bool = False
    error: str | None = None
    events: tuple[TraceEvent, ...] = ()


@dataclass
class XlateEnv:
    """Everything translation reads besides the flow.  Nothing here is written."""

    rules: RuleLookup
    ports: Mapping[int, PortConfig] = field(default_factory=dict)
    macs: MacTable = field(default_factory=MacTable)
    now: float = 0.0
    learning: bool = True
    recirc: RecircRegistry = field(default_factory=RecircRegistry)


class _Abort(Exception):
    pass


class _Xlate:
    def __init__(self, env: XlateEnv, flow: int, trace: bool) -> None:
        self.env = env
        self.ctx = Ctx(flow)
        self.trace = trace
        self.events: list[TraceEvent] = []
        self.rules: list[tuple[int, int]] = []
        self.packet_ins: list[PacketInMeta] = []
        self.learned: list[Learn] = []
        self.uses_normal = False
        self.n_lookups = 0
        self.error: str | None = None

    def note(self, depth: int, text: str, kind: str = "detail") -> None:
        if self.trace:
            self.events.append(NoteEvent(depth, text, kind))

    # -- tables ---------------------------------------------------------------

    def table(self, table: int, depth: int) -> None:
        while True:
            if depth > MAX_DEPTH or self.n_lookups >= MAX_RESUBMITS:
                self.error = (f"over max translation depth {MAX_DEPTH}" if depth > MAX_DEPTH
                              else f"over {MAX_RESUBMITS} resubmit actions")
                raise _Abort
            self.n_lookups += 1
            found, wc = self.env.rules.lookup(table, self.ctx.flow)
            self.ctx.consult(wc)
            if self.trace:
                self.events.append(LookupEvent(depth, table, self.ctx.flow,
                                               found[0] if found else None,
                                               found[1] if found else None))
            if found is None:
                self.note(depth, "No match: drop")
                return
            rule_id, rule = found
            self.rules.append((table, rule_id))
            goto = self.run(rule.actions, table, rule, rule_id, depth)
            if goto is None:
                return
            if goto <= table:
                self.note(depth, f"goto_table:{goto} must go forward: ignored", "warn")
                return
            table = goto

    def run(self, actions: ofa.OfActions, table: int, rule: Rule, rule_id: int,
            depth: int) -> int | None:
        goto = None
        for a in actions:
            if self.trace:
                self.events.append(ActionEvent(depth, a))
            if isinstance(a, ofa.GotoTable):
                goto = a.table
            else:
                self.action(a, table, rule, rule_id, depth)
        return goto

    # -- actions --------------------------------------------------------------

    def action(self, a: ofa.OfAction, table: int, rule: Rule, rule_id: int,
               depth: int) -> None:
        ctx = self.ctx
        if isinstance(a, ofa.Output):
            self.output(a.port, depth)
        elif isinstance(a, ofa.InPort):
            ctx.emit(dpa.Output(ctx.read(F_IN_PORT)))
        elif isinstance(a, (ofa.Flood, ofa.All)):
            in_port = ctx.read(F_IN_PORT)
            for p in sorted(self.env.ports):
                if p != in_port and (isinstance(a, ofa.All) or self.env.ports[p].flood):
                    ctx.emit(dpa.Output(p))
        elif isinstance(a, ofa.Local):
            self.output(OFPP_LOCAL, depth)
        elif isinstance(a, ofa.Normal):
            self.normal(depth)
        elif isinstance(a, ofa.Controller):
            meta = PacketInMeta(a.reason, table, rule.cookie, rule_id, a.max_len, a.userdata)
            self.packet_ins.append(meta)
            ctx.emit(dpa.Userspace(0, meta.encode()))
        elif isinstance(a, ofa.SetVlanVid):
            tags = ctx.touch_vlans()
            ctx.set_vlans([tags[0].replace(vid=a.vid)] + tags[1:] if tags
                          else [Tag(dpf.ETH_TYPE_VLAN, a.vid, 0)])
        elif isinstance(a, ofa.SetVlanPcp):
            tags = ctx.touch_vlans()
            ctx.set_vlans([tags[0].replace(pcp=a.pcp)] + tags[1:] if tags
                          else [Tag(dpf.ETH_TYPE_VLAN, 0, a.pcp)])
        elif isinstance(a, (ofa.StripVlan, ofa.PopVlan)):
            ctx.set_vlans(ctx.touch_vlans()[1:])
        elif isinstance(a, ofa.PushVlan):
            ctx.set_vlans([Tag(a.tpid, 0, 0)] + ctx.touch_vlans())
        elif isinstance(a, ofa.SetField):
            self.set_field(of_field(a.field), a.value, a.mask, depth)
        elif isinstance(a, ofa.SetTunnel):
            self.set_field(of_field("tun_id"), a.tun_id, (1 << 64) - 1, depth)
        elif isinstance(a, ofa.Move):
            src, dst = of_field(a.src), of_field(a.dst)
            if not (self.prereqs_ok(src, depth) and self.prereqs_ok(dst, depth)):
                return
            bits = (1 << a.n_bits) - 1
            ctx.consult((bits << a.src_ofs) << src.offset)
            v = (src.get(ctx.flow) >> a.src_ofs) & bits
            ctx.write((bits << a.dst_ofs) << dst.offset, (v << a.dst_ofs) << dst.offset)
        elif isinstance(a, ofa.DecTtl):
            if ctx.read(_B["eth_type"]) in (dpf.ETH_TYPE_IPV4, dpf.ETH_TYPE_IPV6):
                ctx.emit(dpa.DecTtl())
                ttl = _B["ip_ttl"]
                ctx.flow = (ctx.flow & ~ttl.field_mask) | ttl.put(max(ttl.get(ctx.flow) - 1, 0))
            else:
                self.note(depth, "dec_ttl: not an IP packet, ignored")
        elif isinstance(a, ofa.Resubmit):
            self.resubmit(a, table, depth)
        elif isinstance(a, ofa.Sample):
            sdata = struct.pack("!4sIII", b"FPsm", a.collector_set_id, a.obs_domain_id,
                               a.obs_point_id)
            prob = a.probability * dpa.UINT32_MAX // 0xFFFF
            ctx.emit(dpa.Sample(prob, (dpa.Userspace(0, sdata),)))
        elif isinstance(a, ofa.Ct):
            self.ct(a, depth)
        else:  # GotoTable is handled by run()
            self.note(depth, f"unsupported action {a!r}: ignored", "warn")

    def output(self, port: int, depth: int) -> None:
        if port == self.ctx.read(F_IN_PORT):
            self.note(depth, f"output:{port} is the input port: skipped (use in_port)", "warn")
            return
        if self.env.ports and port not in self.env.ports:
            self.note(depth, f"output:{port}: no such port", "warn")
            return
        self.ctx.emit(dpa.Output(port))

    def prereqs_ok(self, f: OfField, depth: int) -> bool:
        if not f.prereq:
            return True
        names = {n for conj in f.prereq for n, _ in conj}
        vals = {n: self.ctx.read(_B[of_field(n).dp_field or n]) for n in names}
        if any(all(vals[n] == v for n, v in conj) for conj in f.prereq):
            return True
        self.note(depth, f"{f.name}: prerequisites not met, action ignored", "warn")
        return False

    def set_field(self, f: OfField, value: int, mask: int, depth: int) -> None:
        if not self.prereqs_ok(f, depth):
            return
        self.ctx.write(mask << f.offset, value << f.offset)

    def resubmit(self, a: ofa.Resubmit, table: int, depth: int) -> None:
        ctx = self.ctx
        target = table if a.table is None else a.table
        if a.port is None:
            self.table(target, depth + 1)
            return
        saved = F_IN_PORT.get(ctx.flow)
        saved_written = ctx.written & F_IN_PORT.field_mask
        ctx.flow = (ctx.flow & ~F_IN_PORT.field_mask) | F_IN_PORT.put(a.port)
        ctx.written |= F_IN_PORT.field_mask
        try:
            self.table(target, depth + 1)
        finally:
            ctx.flow = (ctx.flow & ~F_IN_PORT.field_mask) | F_IN_PORT.put(saved)
            ctx.written = (ctx.written & ~F_IN_PORT.field_mask) | saved_written

    def normal(self, depth: int) -> None:
        ctx, env = self.ctx, self.env
        self.uses_normal = True
        tags = ctx.touch_vlans()
        d = decide_normal(ctx.flow, dict(env.ports), env.macs, env.now,
                          learning=env.learning)
        ctx.consult(d.consulted)
        if d.learn is not None:
            self.learned.append(d.learn)
            self.note(depth, f"NORMAL: learned {_mac(d.learn.mac)} on port {d.learn.port} "
                             f"in vlan {d.learn.vlan}")
        if d.drop is not None:
            self.note(depth, f"NORMAL: drop: {d.drop}", "warn")
            return
        self.note(depth, f"NORMAL: {'flooding' if d.flooded else 'forwarding'} in vlan "
                         f"{d.vlan} to " + ",".join(str(p) for p, _ in d.outputs))
        saved = list(tags)
        for port, vid in d.outputs:
            if vid is None:
                out = saved[1:] if saved else []
            elif saved:
                cur = saved[0]
                ctx.wc |= cur.vid_src  # comparing the packet's vid reads it
                out = saved if cur.vid == vid else [cur.replace(vid=vid)] + saved[1:]
            else:
                out = [Tag(dpf.ETH_TYPE_VLAN, vid, 0)]
            ctx.set_vlans(out)
            ctx.emit(dpa.Output(port))
        ctx.set_vlans(saved)

    def ct(self, a: ofa.Ct, depth: int) -> None:
        ctx = self.ctx
        if isinstance(a.zone, int):
            zone = a.zone
        else:
            zf = of_field(a.zone.field)
            bits = (1 << a.zone.n_bits) - 1
            ctx.consult((bits << a.zone.ofs) << zf.offset)
            zone = (zf.get(ctx.flow) >> a.zone.ofs) & bits
        mark = None
        for s in a.exec:
            mark = (s.value, s.mask)
        ctx.emit(dpa.Ct(a.commit, zone, mark, a.nat.dp() if a.nat else None))
        if a.table is not None:
            state = FrozenState(a.table, ctx.flow & OF_ONLY_MASK)
            rid = self.env.recirc.id_for(state)
            ctx.emit(dpa.Recirc(rid))
            self.note(depth, f"ct: recirculate as {rid:#x} to table {a.table}")


def _mac(v: int) -> str:
    return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))


def xlate(env: XlateEnv, flow: int, *, side_effects: bool = True,
          trace: bool = False) -> XlateResult:
    """Translate ``flow`` (a packet's datapath key, OF-only fields zero)."""
    x = _Xlate(env, flow & DP_MASK, trace)
    ctx = x.ctx
    ctx.consult(ALWAYS)
    if ctx.read(_B["eth_type"]) in (dpf.ETH_TYPE_IPV4, dpf.ETH_TYPE_IPV6):
        ctx.consult(M_FRAG)
    start = 0
    recirc_id = _B["recirc_id"].get(ctx.flow)
    try:
        if recirc_id:
            st = env.recirc.state(recirc_id)
            if st is None:
                x.error = f"unknown recirc_id {recirc_id:#x}"
                raise _Abort
            ctx.flow |= st.of_only
            start = st.table
        x.table(start, 0)
        actions = tuple(ctx.actions)
    except _Abort:
        actions = ()
        x.note(0, f"translation error: {x.error}: drop", "error")
    mask = exact_unmaskable(ctx.wc & DP_MASK)
    return XlateResult(
        actions=actions, megaflow=Match(flow & mask, mask), of_wc=ctx.wc,
        initial_flow=flow & DP_MASK, final_flow=ctx.flow, rules=tuple(x.rules),
        packet_ins=tuple(x.packet_ins) if side_effects else (),
        learned=tuple(x.learned) if side_effects else (),
        uses_normal=x.uses_normal, error=x.error, events=tuple(x.events))


__all__ = ["MAX_DEPTH", "MAX_RESUBMITS", "ActionEvent", "FrozenState", "LookupEvent",
           "NoteEvent", "PacketInMeta", "RecircRegistry", "RuleLookup", "TraceEvent",
           "XlateEnv", "XlateResult", "xlate"]
