"""One flow line, as ``ovs-appctl dpctl/dump-flows -m`` prints it.

    ufid:UUID, KEY, packets:N, bytes:N, used:Xs|never, [flags:SF.,]
    [offloaded:yes|no, dp:tc|sw, ]actions:ACTIONS

Every part but KEY and actions is optional when parsing.  ``used`` is
relative to ``now`` (time.monotonic()) on both print and parse, so
``format_flow(parse_flow(s, now), now) == s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpif.actions import Actions
from dpif.actiontext import format_actions, parse_actions
from dpif.flow import DpFlow, FlowStats, Ufid
from dpif.keytext import format_key, parse_key
from dpif.match import Match
from dpif.scan import Scanner

# Packet TCP flag letters, as OVS's packet_tcp_flag_to_string prints them.
TCP_FLAG_LETTERS: tuple[tuple[str, int], ...] = (
    ("F", 0x001), ("S", 0x002), ("R", 0x004), ("P", 0x008), (".", 0x010),
    ("U", 0x020), ("E", 0x040), ("C", 0x080), ("N", 0x100),
)


@dataclass(frozen=True, slots=True)
class FlowText:
    """A parsed flow line.  Missing optional parts are None."""

    match: Match
    actions: Actions
    ufid: Ufid | None = None
    stats: FlowStats | None = None
    offloaded: bool | None = None
    dp: str | None = None


def format_tcp_flags(flags: int) -> str:
    return "".join(ch for ch, bit in TCP_FLAG_LETTERS if flags & bit)


def format_used(used: float | None, now: float) -> str:
    if used is None:
        return "never"
    return f"{max(0.0, now - used):.3f}s"


def format_flow(ft: FlowText, now: float = 0.0) -> str:
    parts = []
    if ft.ufid is not None:
        parts.append(f"ufid:{ft.ufid}")
    parts.append(format_key(ft.match))
    if ft.stats is not None:
        s = ft.stats
        parts.append(f"packets:{s.packets}")
        parts.append(f"bytes:{s.bytes}")
        parts.append(f"used:{format_used(s.used, now)}")
        if s.tcp_flags:
            parts.append(f"flags:{format_tcp_flags(s.tcp_flags)}")
    if ft.offloaded is not None:
        parts.append(f"offloaded:{'yes' if ft.offloaded else 'no'}")
    if ft.dp is not None:
        parts.append(f"dp:{ft.dp}")
    return ", ".join(parts) + f", actions:{format_actions(ft.actions)}"


def parse_flow(text: str, now: float = 0.0) -> FlowText:
    sc = Scanner(text.rstrip("\n"), "flow")
    sc.skip_space()
    ufid = None
    if sc.accept("ufid:"):
        pos = sc.pos
        u = sc.until(",")
        try:
            ufid = Ufid.parse(u)
        except Exception:
            raise sc.error(f"bad ufid {u.strip()!r}", pos=pos, expected="a UUID") from None
        sc.expect(",")
        sc.skip_space()
    match = parse_key(sc)
    fields: dict[str, tuple[str, int]] = {}
    actions: Actions | None = None
    while True:
        sc.skip_space()
        if sc.at_end():
            break
        sc.expect(",")
        sc.skip_space()
        pos = sc.pos
        name = sc.peek_ident()
        if name is None or not sc.text.startswith(":", pos + len(name)):
            raise sc.error("expected 'name:value' after the key", expected=
                           "packets:, bytes:, used:, flags:, offloaded:, dp: or actions:")
        sc.ident()
        sc.expect(":")
        if name == "actions":
            actions = parse_actions(sc)
            break
        if name in fields:
            raise sc.error(f"{name} given twice", pos=pos)
        vpos = sc.pos
        fields[name] = (sc.until(",").strip(), vpos)
    if actions is None:
        raise sc.error("missing actions:", expected="actions:")
    return FlowText(match, actions, ufid, _stats(sc, fields, now),
                    _yes_no(sc, fields), _dp(sc, fields))


def _stats(sc: Scanner, fields: dict[str, tuple[str, int]], now: float) -> FlowStats | None:
    known = {"packets", "bytes", "used", "flags", "offloaded", "dp"}
    for name, (v, pos) in fields.items():
        if name not in known:
            pos = sc.text.rfind(name, 0, pos)
            raise sc.error(f"unknown flow attribute {name!r}", pos=pos,
                           expected=", ".join(sorted(known)))
    if not any(k in fields for k in ("packets", "bytes", "used", "flags")):
        return None
    nums = {}
    for k in ("packets", "bytes"):
        v, pos = fields.get(k, ("0", 0))
        if not v.isdigit():
            raise sc.error(f"{k}: {v!r} is not a count", pos=pos, expected="a number")
        nums[k] = int(v)
    used = None
    u, pos = fields.get("used", ("never", 0))
    if u != "never":
        if not u.endswith("s"):
            raise sc.error(f"used: {u!r}", pos=pos, expected="'never' or seconds like 0.4s")
        try:
            used = now - float(u[:-1])
        except ValueError:
            raise sc.error(f"used: {u!r}", pos=pos, expected="seconds like 0.4s") from None
    flags = 0
    ftext, pos = fields.get("flags", ("", 0))
    letters = dict(TCP_FLAG_LETTERS)
    for ch in ftext:
        if ch not in letters:
            raise sc.error(f"flags: unknown tcp flag letter {ch!r}", pos=pos,
                           expected="letters of FSRP.UECN")
        flags |= letters[ch]
    return FlowStats(nums["packets"], nums["bytes"], used, flags)


def _yes_no(sc: Scanner, fields: dict[str, tuple[str, int]]) -> bool | None:
    if "offloaded" not in fields:
        return None
    v, pos = fields["offloaded"]
    if v not in ("yes", "no", "partial"):
        raise sc.error(f"offloaded: {v!r}", pos=pos, expected="yes or no")
    return v == "yes"


def _dp(sc: Scanner, fields: dict[str, tuple[str, int]]) -> str | None:
    if "dp" not in fields:
        return None
    v, pos = fields["dp"]
    if not v.isidentifier():
        raise sc.error(f"dp: {v!r}", pos=pos, expected="a datapath name (tc, sw)")
    return v


def format_dpflow(flow: DpFlow, now: float) -> str:
    """A datapath's flow as ``dpctl/dump-flows -m`` prints it."""
    p = flow.placement
    return format_flow(FlowText(flow.match, flow.actions, flow.ufid, flow.stats,
                                p.offloaded, p.dp), now)
