"""``trace(bridge, flow_or_packet)``: what ``ovs-appctl ofproto/trace`` shows, as data and text.

The trace is a translation without side effects with event recording on
(``xlate(..., trace=True)``): every table lookup with the rule it hit (or
none), every OF action run under it, and notes (NORMAL's decision, skipped
outputs, errors).  ``TraceResult`` keeps those as values; ``render`` prints
them the way OVS does::

    Flow: in_port=1,vlan_tci=0x0000,dl_src=...,dl_dst=...,dl_type=0x0800,...

    bridge("br0")
    -------------
     0. ip,nw_dst=10.0.0.0/24, priority 100, cookie 0x1
        resubmit(,1)
         1. priority 0
                output:2

    Final flow: unchanged
    Megaflow: recirc_id=0,eth,ip,in_port=1,nw_dst=10.0.0.0/24,nw_frag=no
    Datapath actions: 2
"""

from __future__ import annotations

from dataclasses import dataclass

from dpif import actions as dpa
from dpif.actiontext import format_actions as format_dp_actions
from dpif.fields import BY_NAME
from dpif.match import Match
from ofproto.actionformat import format_action
from ofproto.bridge import Bridge
from ofproto.offields import DP_MASK, OfMatch
from ofproto.rule import OFP_DEFAULT_PRIORITY, Rule
from ofproto.ruletext import PRINTABLE_MASK, format_match, parse_match
from ofproto.xlate import ActionEvent, LookupEvent, NoteEvent, TraceEvent
from swpath.parse import parse_key

_IN_PORT = BY_NAME["in_port"]
_RECIRC = BY_NAME["recirc_id"]


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One table visit: the rule hit (None: miss), its actions and notes, in order."""

    depth: int
    table: int
    rule_id: int | None
    rule: Rule | None
    lines: tuple[tuple[int, str], ...]  # (depth, text): actions and notes under it


@dataclass(frozen=True, slots=True)
class TraceResult:
    bridge: str
    flow: int
    steps: tuple[TraceStep, ...]
    final_flow: int
    megaflow: Match
    actions: dpa.Actions
    error: str | None = None
    notes: tuple[str, ...] = ()  # before the first lookup (e.g. translation errors)

    def to_dict(self) -> dict[str, object]:
        """A JSON-able view (``--json``)."""
        return {
            "bridge": self.bridge,
            "flow": format_flow(self.flow),
            "steps": [{"depth": s.depth, "table": s.table, "rule_id": s.rule_id,
                       "rule": None if s.rule is None else _rule_head(s.rule),
                       "lines": [t for _, t in s.lines]} for s in self.steps],
            "final_flow": format_flow(self.final_flow),
            "megaflow": format_megaflow(self.megaflow),
            "datapath_actions": format_dp_actions(self.actions),
            "error": self.error,
        }


def _present_mask(flow: int) -> int:
    """Fields to show for a flow: every non-zero one plus the basics, as OVS does."""
    mask = 0
    for name in ("in_port", "eth_type", "eth_src", "eth_dst", "vlan_tpid", "vlan_vid",
                 "vlan_pcp"):
        mask |= BY_NAME[name].field_mask
    for f in BY_NAME.values():
        if f.get(flow):
            mask |= f.field_mask
    return mask & PRINTABLE_MASK


def format_flow(flow: int) -> str:
    m = _present_mask(flow)
    return format_match(OfMatch(flow & m, m)) or "(empty)"


def format_megaflow(m: Match) -> str:
    mask = m.mask & PRINTABLE_MASK
    text = format_match(OfMatch(m.key & mask, mask))
    rid = _RECIRC.get(m.key)
    head = (f"recirc_id={rid:#x}" if rid else "recirc_id=0") if m.has("recirc_id") else ""
    return ",".join(t for t in (head, text) if t)


def _rule_head(rule: Rule) -> str:
    text = format_match(rule.match)
    parts = [text] if text else []
    if rule.priority != OFP_DEFAULT_PRIORITY or not parts:
        parts.append(f"priority {rule.priority}")
    if rule.cookie:
        parts.append(f"cookie {rule.cookie:#x}")
    return ", ".join(parts)


def _steps(events: tuple[TraceEvent, ...]) -> tuple[tuple[TraceStep, ...], tuple[str, ...]]:
    steps: list[TraceStep] = []
    pre: list[str] = []
    cur: tuple[LookupEvent, list[tuple[int, str]]] | None = None
    for ev in events:
        if isinstance(ev, LookupEvent):
            if cur is not None:
                steps.append(_close(cur))
            cur = (ev, [])
        elif isinstance(ev, ActionEvent):
            if cur is not None:
                cur[1].append((ev.depth, format_action(ev.action)))
        elif isinstance(ev, NoteEvent):
            if cur is None:
                pre.append(ev.text)
            else:
                cur[1].append((ev.depth, ev.text))
    if cur is not None:
        steps.append(_close(cur))
    return tuple(steps), tuple(pre)


def _close(cur: tuple[LookupEvent, list[tuple[int, str]]]) -> TraceStep:
    ev, lines = cur
    return TraceStep(ev.depth, ev.table, ev.rule_id, ev.rule, tuple(lines))


def _to_key(bridge: Bridge, flow_or_packet: int | bytes | str, in_port: int | None) -> int:
    if isinstance(flow_or_packet, bytes):
        return parse_key(flow_or_packet, _IN_PORT.put(in_port or 0))
    if isinstance(flow_or_packet, str):
        sel = parse_match(flow_or_packet)
        key = sel.match.key & DP_MASK
    else:
        key = flow_or_packet & DP_MASK
    if in_port is not None:
        key = (key & ~_IN_PORT.field_mask) | _IN_PORT.put(in_port)
    return key


def trace(bridge: Bridge, flow_or_packet: int | bytes | str, *, in_port: int | None = None,
          now: float | None = None) -> TraceResult:
    """Trace a datapath key, a packet (with ``in_port``) or an ovs-ofctl style flow."""
    key = _to_key(bridge, flow_or_packet, in_port)
    res = bridge.translate(key, side_effects=False, trace=True, now=now)
    steps, notes = _steps(res.events)
    # the trace only reports the end of a translation error once, at the end
    return TraceResult(bridge.name, key, steps, res.final_flow & DP_MASK, res.megaflow,
                       res.actions, res.error, notes)


def render(t: TraceResult) -> str:
    """The trace as ``ofproto/trace`` text."""
    out = [f"Flow: {format_flow(t.flow)}", "", f'bridge("{t.bridge}")',
           "-" * (len(t.bridge) + 10)]
    for s in t.steps:
        ind = "    " * s.depth + " "
        if s.rule is None:
            out.append(f"{ind}{s.table}. No match.")
            out.append("    " * s.depth + "    drop")
        else:
            out.append(f"{ind}{s.table}. {_rule_head(s.rule)}")
        for depth, text in s.lines:
            if s.rule is None and text == "No match: drop":
                continue
            out.append("    " * depth + "    " + text)
    for n in t.notes:
        out.append(f" {n}")
    out.append("")
    final = "unchanged" if t.final_flow == t.flow else format_flow(t.final_flow)
    out.append(f"Final flow: {final}")
    out.append(f"Megaflow: {format_megaflow(t.megaflow)}")
    if t.error:
        out.append(f"Translation failed ({t.error}), packet is dropped.")
    out.append(f"Datapath actions: {format_dp_actions(t.actions)}")
    return "\n".join(out) + "\n"
