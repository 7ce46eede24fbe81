"""The daemon's control core: one request value in, one reply value out.

Theory of operation
-------------------
``ControlCore.handle(request)`` implements every control command on a
``Bridge`` (its rule tables, its ukeys and its placer datapath) and returns
a reply dict (``control_proto.ok`` / ``error_reply``); it never raises for a
bad request and does no socket I/O, so tests drive it directly.

Threading -- the whole argument.  ``handle`` reads and writes the bridge and
the datapath, which the datapath thread (``swpath.runner.Runner``) also uses
for every packet and upcall.  The socket server never calls ``handle``
itself: it submits it with ``Runner.call_soon`` and waits for the future, so
``handle`` runs *on the datapath thread, between two poll rounds*.  One
thread ever touches the bridge, the tables, the MAC table, the ukeys, the
tc netlink socket and the software cache: there is no race to reason about
and no lock.  The price is that a slow command (a dump of many tc filters)
pauses forwarding in software for its duration; tc keeps forwarding.  The
same holds for the packet-in queue: the monitor reads it through
``packet_ins`` on the datapath thread; the only thing that crosses threads
otherwise is ``Bridge.packet_in_listeners`` waking a watcher.

The megaflows' life after install is the revalidator's
(``ofproto.revalidator``; one per core, same thread): counters credited to
rules, idle aging, the flow limit, rechecks after rule and MAC changes.

Rule changes (add/mod/del-flows) are followed by ``Revalidator.revalidate``:
every installed megaflow is translated again (no side effects) from its own
key; a flow stays when the new megaflow still covers it and the actions are
the same, is modified in place when only the actions differ, else it is
deleted from its datapath (tc or software) and from the bridge's ukeys, and
the next packet makes a fresh upcall.  Counters of deleted flows are
credited to their rules first.

The daemon's timer calls ``tick`` (on the datapath thread like any
command): every ``RevalidatorConfig.period`` it runs a sweep, which also
removes the rules past their ``idle_timeout`` or ``hard_timeout`` (a rule's
idle time is measured from the last packet of any of its flows, in tc or in
software, credited first) and rechecks their flows.  ``expire`` does only
that last part (no aging), for callers without the timer.

Rule counters: the upcall's own packet is credited by the bridge; packets
that then hit the installed megaflow (tc or software) are credited from the
flows' counters before every ``dump-flows``, rule change and sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from dpif.actiontext import format_actions as format_dp_actions
from dpif.errors import FlowpathError, ParseError, ValidationError
from dpif.fields import ALL_ONES, BY_NAME, FIELDS
from dpif.flow import DpFlow
from dpif.flowtext import format_dpflow
from dpif.keytext import format_key, visible_fields
from dpif.match import Match
from ofproto.actiontext import format_actions
from ofproto.bridge import Bridge, PacketIn
from ofproto.control_proto import Request, arg, error_reply, ok
from ofproto.revalidator import Outcome, Revalidator, RevalidatorConfig
from ofproto.ruletext import format_match, format_rule, parse_match, parse_rule
from swpath.parse import parse_key

log = structlog.get_logger("ofproto.control")

DP_TYPES = ("offloaded", "sw", "all")
# datapath metadata fields printed in a packet-in's flow only when non-zero
_METADATA = {f.name for f in FIELDS[:FIELDS.index(BY_NAME["eth_src"])]} - {"in_port"}
_IN_PORT = BY_NAME["in_port"]


@dataclass(frozen=True, slots=True)
class PortInfo:
    """A port as ``status`` shows it."""

    number: int
    netdev: str
    vlan_mode: str
    tag: int
    trunks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BridgeInfo:
    """What ``status`` reports besides the live state."""

    policy: str
    netns: str | None
    ports: tuple[PortInfo, ...]
    started: float  # the bridge's clock


def packet_flow(packet: bytes, in_port: int) -> str:
    """A packet decoded as a dpctl-style flow key (zero metadata left out, and
    the fields whose prerequisite the packet lacks: IPv6 of an IPv4 packet...)."""
    key = parse_key(packet, _IN_PORT.put(in_port))
    m = Match.from_packet_key(key, ALL_ONES)
    shown = visible_fields(m)  # the text groups this packet selects
    drop = [f.name for f, v, _ in m.fields()
            if f.name not in shown or (f.name in _METADATA and v == 0)]
    if m.value("tcp_flags") == 0:
        drop.append("tcp_flags")
    if m.value("vlan_tpid") == 0:
        drop += ["vlan_tpid", "vlan_vid", "vlan_pcp"]
    return format_key(m.without(*dict.fromkeys(drop)))


def packet_in_json(p: PacketIn) -> dict[str, Any]:
    return {"seq": p.seq, "time": p.time, "in_port": p.in_port, "reason": p.reason,
            "table": p.table, "cookie": f"{p.cookie:#x}", "rule_id": p.rule_id,
            "total_len": p.total_len, "len": len(p.packet), "flow": packet_flow(p.packet,
                                                                                p.in_port),
            "packet": p.packet.hex(), "userdata": p.userdata.hex()}


class ControlCore:
    """Control commands on one bridge; call ``handle`` on the datapath thread only."""

    def __init__(self, bridge: Bridge, info: BridgeInfo,
                 reval: RevalidatorConfig | None = None) -> None:
        if bridge.placer is None:
            raise ValidationError("the control core needs a bridge with a placer datapath",
                                  bridge=bridge.name)
        self.bridge = bridge
        self.dp = bridge.placer
        self.info = info
        self.monitors = 0  # written by the server (an int: atomic enough to report)
        self.reval = Revalidator(bridge, bridge.placer,
                                 reval or RevalidatorConfig(flow_limit=bridge.flow_limit))
        self._next_sweep = bridge.clock()
        self.log = log.bind(bridge=bridge.name)
        self._cmds: dict[str, Callable[[Request], Any]] = {
            "add-flows": self._add_flows, "mod-flows": self._mod_flows,
            "del-flows": self._del_flows, "dump-flows": self._dump_flows,
            "dp-dump-flows": self._dp_dump_flows, "status": self._status,
        }

    # -- entry points ---------------------------------------------------------------

    def handle(self, req: Request) -> dict[str, Any]:
        fn = self._cmds.get(req.cmd)
        if fn is None:
            return error_reply(ValidationError("not a request/reply command", cmd=req.cmd))
        try:
            return ok(fn(req))
        except FlowpathError as e:
            self.log.info("request refused", cmd=req.cmd, error=str(e))
            return error_reply(e)
        except Exception as e:  # noqa: BLE001 - a bug must not kill the datapath thread
            self.log.error("request failed", cmd=req.cmd, error=repr(e), exc_info=True)
            return error_reply(e)

    def tick(self) -> float:
        """The daemon timer's call: a sweep when one is due; seconds to the next."""
        if self.bridge.clock() >= self._next_sweep:
            start = self.bridge.clock()
            self.reval.sweep()
            self._next_sweep = start + self.reval.cfg.period
        return max(0.0, self._next_sweep - self.bridge.clock())

    def expire(self, now: float | None = None) -> int:
        """Remove rules past their idle/hard timeout (and their flows); how many."""
        tables = self.bridge.tables
        if not tables.has_timeouts:
            return 0
        flows = self.reval.credit_all()
        gone = tables.expire(self.bridge.clock() if now is None else now)
        if gone:
            out = self._revalidate(flows)
            self.log.info("rules expired", rules=len(gone), flows_removed=out.deleted)
        return len(gone)

    def packet_ins(self, since: int) -> tuple[list[PacketIn], int]:
        """Queued packet-ins after ``since`` and the newest seq (datapath thread)."""
        return self.bridge.packet_ins_since(since), self.bridge.packet_in_seq

    # -- rules ----------------------------------------------------------------------

    def _add_flows(self, req: Request) -> dict[str, Any]:
        texts = arg(req, "rules", list, required=True)
        rules = []
        for n, text in enumerate(texts, start=1):
            if not isinstance(text, str):
                raise ParseError(f"rule {n}: not a string")
            try:
                rules.append(parse_rule(text))
            except ParseError as e:
                raise e.at(f"rule {n}", drop="rule: ") from None
        now = self.bridge.clock()
        for n, r in enumerate(rules, start=1):
            try:
                self.bridge.tables.add(r, now)
            except ValidationError as e:
                self._revalidate()
                raise ValidationError(f"rule {n}: {e.message} (rules before it were added)",
                                      **e.context) from None
        out = self._revalidate()
        self.log.info("rules added", n=len(rules), flows_removed=out.deleted,
                      flows_modified=out.modified)
        return {"added": len(rules), **_changed(out)}

    def _mod_flows(self, req: Request) -> dict[str, Any]:
        sel = parse_match(arg(req, "rule", str, required=True), modify=True)
        strict = bool(arg(req, "strict", bool, False))
        flows = self.reval.credit_all()
        ids = self.bridge.tables.modify(sel, strict=strict, now=self.bridge.clock())
        return {"modified": len(ids), **_changed(self._revalidate(flows))}

    def _del_flows(self, req: Request) -> dict[str, Any]:
        sel = parse_match(arg(req, "match", str, ""))
        strict = bool(arg(req, "strict", bool, False))
        flows = self.reval.credit_all()
        gone = self.bridge.tables.delete(sel, strict=strict)
        return {"deleted": len(gone), **_changed(self._revalidate(flows))}

    def _dump_flows(self, req: Request) -> list[dict[str, Any]]:
        text = arg(req, "match", str, "")
        self.reval.credit_all()
        tables = self.bridge.tables
        # both in dump-flows order (table, priority high to low, id)
        ids = tables.select(parse_match(text)) if text else [i for i, _ in tables.rules()]
        now = self.bridge.clock()
        out = []
        for rid in ids:
            r, st = tables.get(rid), tables.stats(rid)
            out.append({"rule_id": rid, "table": r.table, "priority": r.priority,
                        "cookie": f"{r.cookie:#x}", "match": format_match(r.match, r.priority),
                        "actions": format_actions(r.actions),
                        "n_packets": st.n_packets, "n_bytes": st.n_bytes,
                        "duration": round(max(0.0, now - st.created), 3),
                        "idle_age": int(max(0.0, now - st.used)),
                        "idle_timeout": r.idle_timeout, "hard_timeout": r.hard_timeout,
                        "flags": sorted(r.flags),
                        "line": format_rule(r, st, now)})
        return out

    # -- the datapath ---------------------------------------------------------------

    def _dp_dump_flows(self, req: Request) -> list[dict[str, Any]]:
        kind = arg(req, "type", str, "all")
        if kind not in DP_TYPES:
            raise ValidationError("--type must be one of " + ", ".join(DP_TYPES), type=kind)
        now = time.monotonic()
        out = []
        for f in self.dp.dump():
            if kind == "offloaded" and f.placement.dp != "tc":
                continue
            if kind == "sw" and f.placement.dp == "tc":
                continue
            out.append({"ufid": str(f.ufid), "dp": f.placement.dp,
                        "offloaded": f.placement.offloaded, "reason": f.placement.reason,
                        "packets": f.stats.packets, "bytes": f.stats.bytes,
                        "used": None if f.stats.used is None
                        else round(max(0.0, now - f.stats.used), 3),
                        "key": format_key(f.match), "actions": format_dp_actions(f.actions),
                        "line": format_dpflow(f, now)})
        return out

    def _status(self, req: Request) -> dict[str, Any]:
        flows = list(self.dp.dump())
        placement = {"tc_in_hw": 0, "tc_not_in_hw": 0, "sw": 0}
        for f in flows:
            if f.placement.dp == "tc":
                placement["tc_in_hw" if f.placement.offloaded else "tc_not_in_hw"] += 1
            else:
                placement["sw"] += 1
        br = self.bridge
        queued = br.packet_ins_since(0)
        return {
            "bridge": br.name, "policy": self.info.policy, "netns": self.info.netns,
            "uptime": round(br.clock() - self.info.started, 3),
            "ports": [{"number": p.number, "netdev": p.netdev, "vlan_mode": p.vlan_mode,
                       "tag": p.tag, "trunks": list(p.trunks)} for p in self.info.ports],
            "rules": len(br.tables), "flows": {"total": len(flows), **placement},
            "flow_limit": br.flow_limit, "revalidator": self.reval.status(),
            "packet_ins": {"queued": len(queued), "last_seq": br.packet_in_seq,
                           "dropped": br.counters.get("packet_in_dropped", 0),
                           "monitors": self.monitors},
            "counters": dict(sorted(br.counters.items())),
        }

    # -- revalidation ---------------------------------------------------------------

    def _revalidate(self, flows: list[DpFlow] | None = None) -> Outcome:
        """Recheck every installed flow after a rule change (``flows``: a dump
        the caller just credited)."""
        return self.reval.revalidate(flows)


def _changed(out: Outcome) -> dict[str, int]:
    return {"flows_removed": out.deleted, "flows_modified": out.modified}
