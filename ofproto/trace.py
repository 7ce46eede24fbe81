"""``trace(bridge, flow_or_packet)``: what ``ovs-appctl ofproto/trace`` shows, as data and text.

The trace is a translation without side effects with event recording on
(``xlate(..., trace=True)``): every table lookup with the rule it hit (or
none), every OF action run under it, and notes (NORMAL's decision, skipped
outputs, errors).  ``TraceResult`` keeps those as values; ``render`` prints
them the way OVS does.

OVS's text is a tree printed by one rule (``ofproto-dpif-trace.c``): each
table visit is a node whose children are its actions, its notes and the table
visits its ``resubmit``/``goto_table`` caused (after the action that caused
them).  A node is indented one step (4 columns) more than its level unless it
is the *last* node of its list and not a leaf (an action or a note); the
children of an indented node go two levels deeper.  So a resubmit that is a
rule's last action prints flat, and one followed by more actions nests::

    Flow: in_port=1,vlan_tci=0x0000,dl_src=...,dl_dst=...,dl_type=0x0800,...

    bridge("br0")
    -------------
     0. ip,nw_dst=10.0.0.0/24, priority 100, cookie 0x1
        resubmit(,1)
         1. priority 0
                output:2
        output:3

    Final flow: unchanged
    Megaflow: recirc_id=0,eth,ip,in_port=1,nw_dst=10.0.0.0/24,nw_frag=no
    Datapath actions: 2,3

Notes print as OVS's `` -> `` (detail), `` >> `` (warning) and
`` >>>> ... <<<<`` (error) lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpif import actions as dpa
from dpif.actiontext import format_actions as format_dp_actions
from dpif.fields import (
    BY_NAME, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
)
from dpif.match import Match
from ofproto.actionformat import format_action
from ofproto.bridge import Bridge
from ofproto.ofactions import GotoTable
from ofproto.offields import DP_MASK, OfMatch
from ofproto.rule import Rule
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
class TraceNode:
    """One line of the trace tree: ``table``, ``action``, ``detail``, ``warn``,
    ``error`` (the last four are leaves)."""

    kind: str
    text: str
    subs: tuple[TraceNode, ...] = ()


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
    tree: tuple[TraceNode, ...] = ()  # under bridge("..."), as OVS prints it

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


# Fields OVS's flow_format always shows for a flow of this kind, zero or not
# (then every other non-zero field): (eth_type, ip_proto or None) -> fields.
_BASICS = ("in_port", "eth_type", "eth_src", "eth_dst", "vlan_tpid", "vlan_vid", "vlan_pcp")
_IP_BASICS = ("ip_tos", "ip_ttl", "ip_frag")
_SHOWN: dict[tuple[int, int | None], tuple[str, ...]] = {
    (ETH_TYPE_ARP, None): ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha"),
    (ETH_TYPE_IPV4, None): ("ipv4_src", "ipv4_dst", *_IP_BASICS),
    (ETH_TYPE_IPV6, None): ("ipv6_src", "ipv6_dst", "ipv6_label", *_IP_BASICS),
    **{(et, proto): ("tp_src", "tp_dst", *extra)
       for et in (ETH_TYPE_IPV4, ETH_TYPE_IPV6)
       for proto, extra in ((IPPROTO_TCP, ("tcp_flags",)), (IPPROTO_UDP, ()),
                            (IPPROTO_SCTP, ()))},
    **{(et, proto): ("icmp_type", "icmp_code")
       for et, proto in ((ETH_TYPE_IPV4, IPPROTO_ICMP), (ETH_TYPE_IPV6, IPPROTO_ICMPV6))},
}


def _present_mask(flow: int) -> int:
    """Fields to show for a flow: the ones OVS always shows for its kind, plus
    every other non-zero one."""
    et, proto = BY_NAME["eth_type"].get(flow), BY_NAME["ip_proto"].get(flow)
    mask = 0
    for name in (*_BASICS, *_SHOWN.get((et, None), ()), *_SHOWN.get((et, proto), ())):
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
    head = ",".join(t for t in (head, "eth") if t)  # packet_type: always Ethernet here
    return ",".join(t for t in (head, text) if t)


def _rule_head(rule: Rule) -> str:
    text = format_match(rule.match)
    parts = [text] if text else []
    parts.append(f"priority {rule.priority}")  # always, as OVS's xlate_report_table
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


class _Open:
    """A table node being built: its text and its children so far."""

    __slots__ = ("text", "subs")

    def __init__(self, text: str) -> None:
        self.text = text
        self.subs: list[_Open | TraceNode] = []

    def freeze(self) -> TraceNode:
        return TraceNode("table", self.text, tuple(
            s.freeze() if isinstance(s, _Open) else s for s in self.subs))


def _tree(events: tuple[TraceEvent, ...]) -> tuple[TraceNode, ...]:
    """The OVS trace tree from xlate's flat events.

    xlate numbers depths by resubmit nesting; a ``goto_table`` continues at
    the same depth but, as in OVS, its table is a child of the table that
    jumped.  ``open_at[d]`` is the table node whose actions run at depth d.
    """
    root: list[_Open | TraceNode] = []
    open_at: list[_Open] = []
    goto_pending = False
    for ev in events:
        if isinstance(ev, LookupEvent):
            head = "No match." if ev.rule is None else _rule_head(ev.rule)
            node = _Open(f"{ev.table:2d}. {head}")
            if ev.depth < len(open_at) and goto_pending:
                open_at[ev.depth].subs.append(node)  # goto: a child of the jumper
            elif 0 < ev.depth <= len(open_at):
                open_at[ev.depth - 1].subs.append(node)
            else:
                root.append(node)
            del open_at[ev.depth:]
            open_at.append(node)
            goto_pending = False
            continue
        parent = open_at[ev.depth].subs if ev.depth < len(open_at) else root
        if isinstance(ev, ActionEvent):
            parent.append(TraceNode("action", format_action(ev.action)))
            goto_pending = isinstance(ev.action, GotoTable)
        elif ev.text == "No match: drop":
            parent.append(TraceNode("action", "drop"))
        elif open_at:
            parent.append(TraceNode(ev.kind, ev.text))
    return tuple(n.freeze() if isinstance(n, _Open) else n for n in root)


_LEAF_PREFIX = {"action": "", "detail": " -> ", "warn": " >> ", "error": " >>>> "}


def _print_tree(nodes: tuple[TraceNode, ...], level: int, out: list[str]) -> None:
    for i, n in enumerate(nodes):
        more = 1 if (i < len(nodes) - 1 or n.kind != "table") else 0
        pad = " " * ((level + more) * 4)
        tail = " <<<<" if n.kind == "error" else ""
        out.append(f"{pad}{_LEAF_PREFIX.get(n.kind, '')}{n.text}{tail}")
        _print_tree(n.subs, level + 2 * more, out)


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
                       res.actions, res.error, notes, _tree(res.events))


def render(t: TraceResult) -> str:
    """The trace as ``ofproto/trace`` text."""
    out = [f"Flow: {format_flow(t.flow)}", "", f'bridge("{t.bridge}")',
           "-" * (len(t.bridge) + 10)]
    _print_tree(t.tree, 0, out)
    for n in t.notes:
        out.append(f" >>>> {n} <<<<")
    out.append("")
    final = "unchanged" if t.final_flow == t.flow else format_flow(t.final_flow)
    out.append(f"Final flow: {final}")
    out.append(f"Megaflow: {format_megaflow(t.megaflow)}")
    if t.error:
        out.append(f"Translation failed ({t.error}), packet is dropped.")
    out.append(f"Datapath actions: {format_dp_actions(t.actions)}")
    return "\n".join(out) + "\n"
