"""Rules in ovs-ofctl text: parse ``add-flow``/``del-flows`` lines, print ``dump-flows``.

Theory of operation
-------------------
A rule line is a list of items separated by commas or white space:
keywords (``table=``, ``priority=``, ``cookie=``, ``idle_timeout=``, ...),
flags (``send_flow_rem``...), protocol shorthands (``tcp``, ``arp``...),
fields (``nw_dst=10.0.0.0/24``, any name or alias of ``offields.OF_FIELDS``)
and last ``actions=...``, which takes the rest of the line.  The items that
``dump-flows`` adds (``duration``, ``n_packets``, ``n_bytes``, ``idle_age``,
``hard_age``) are ignored, as ovs-ofctl does, so a dumped line parses back.

Parsing runs in two passes so the order of items does not matter: first the
shorthands and ``dl_type``, then every field; ``nw_src``/``nw_dst``/
``nw_proto`` mean ``arp_spa``/``arp_tpa``/``arp_op`` when the rule matches
ARP, as in OVS.  A field whose prerequisites the rule lacks (``tp_dst``
without ``tcp``) is an error naming the field, where ovs-ofctl would drop it
with a log message.

Printing follows OVS's ``match_format`` order: priority, marks and conntrack,
the shorthand, registers, tunnel, metadata, in_port, VLAN, L2, L3, L4.  The
order is the table ``PRINT_ORDER``; the ``<...>`` entries are the places where
the shorthand, the VLAN fields, ``dl_type`` and ``nw_proto`` go.  Every field
is printed with ``ofvalues.format_value``, so ``parse_rule(format_rule(r)) ==
r`` (checked by the tests with hypothesis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

from dpif import fields as dpf
from dpif.errors import ParseError, ValidationError
from dpif.scan import Scanner
from ofproto.actiontext import format_actions, parse_actions
from ofproto.ofactions import OfActions
from ofproto.offields import (
    BY_NAME, OF_FIELDS, OfField, OfMatch, VLAN_CFI, VLAN_PCP_MASK, VLAN_VID_MASK, of_field,
    tci_from_dp, tci_to_dp,
)
from ofproto.ofvalues import BadValue, format_value, parse_value
from ofproto.rule import FLOW_FLAGS, OFP_DEFAULT_PRIORITY, Rule, RuleSelector, RuleStats

# (shorthand, dl_type, nw_proto or None); printing prefers the (type, proto) entry.
SHORTHANDS: tuple[tuple[str, int, int | None], ...] = (
    ("ip", dpf.ETH_TYPE_IPV4, None), ("ipv6", dpf.ETH_TYPE_IPV6, None),
    ("icmp", dpf.ETH_TYPE_IPV4, dpf.IPPROTO_ICMP), ("igmp", dpf.ETH_TYPE_IPV4, 2),
    ("tcp", dpf.ETH_TYPE_IPV4, dpf.IPPROTO_TCP), ("udp", dpf.ETH_TYPE_IPV4, dpf.IPPROTO_UDP),
    ("sctp", dpf.ETH_TYPE_IPV4, dpf.IPPROTO_SCTP),
    ("icmp6", dpf.ETH_TYPE_IPV6, dpf.IPPROTO_ICMPV6),
    ("tcp6", dpf.ETH_TYPE_IPV6, dpf.IPPROTO_TCP), ("udp6", dpf.ETH_TYPE_IPV6, dpf.IPPROTO_UDP),
    ("sctp6", dpf.ETH_TYPE_IPV6, dpf.IPPROTO_SCTP),
    ("arp", dpf.ETH_TYPE_ARP, None), ("rarp", dpf.ETH_TYPE_RARP, None),
    ("mpls", dpf.ETH_TYPE_MPLS, None), ("mplsm", dpf.ETH_TYPE_MPLS_MC, None),
)
_SHORTHAND = {n: (t, p) for n, t, p in SHORTHANDS}
_SHORTHAND_NAME = {(t, p): n for n, t, p in SHORTHANDS}

PRINT_ORDER: tuple[str, ...] = (
    "pkt_mark", "ct_state", "ct_zone", "ct_mark", "<shorthand>",
    *(f"reg{i}" for i in range(16)),
    "tun_id", "tun_src", "tun_dst", "tun_ipv6_src", "tun_ipv6_dst", "metadata", "in_port",
    "<vlan>", "dl_src", "dl_dst", "<dl_type>",
    "ipv6_src", "ipv6_dst", "ipv6_label", "nw_src", "nw_dst", "arp_spa", "arp_tpa",
    "<nw_proto>", "arp_op", "arp_sha", "arp_tha", "nw_tos", "nw_ecn", "nw_ttl", "nw_frag",
    "icmp_type", "icmp_code", "tp_src", "tp_dst", "tcp_flags",
)
_PRINTED = [BY_NAME[n] for n in PRINT_ORDER if not n.startswith("<")] + \
    [BY_NAME["dl_type"], BY_NAME["nw_proto"]]
_VLAN_BITS = tci_to_dp(0xFFFF, 0xFFFF)[1]
PRINTABLE_MASK = _VLAN_BITS
for _f in _PRINTED:
    PRINTABLE_MASK |= _f.field_mask
# Every OF field is printable through some name that views the same bits.
assert all(f.virtual or f.field_mask & ~PRINTABLE_MASK == 0 for f in OF_FIELDS)

_Err = Callable[..., ParseError]

# Items of dump-flows output that parsing skips.
_STATS_ITEMS = ("duration", "n_packets", "n_bytes", "idle_age", "hard_age")
# In an ARP rule these names mean the ARP fields.
_ARP_VIEWS = {"nw_src": "arp_spa", "nw_dst": "arp_tpa", "nw_proto": "arp_op",
              "ip_src": "arp_spa", "ip_dst": "arp_tpa", "ip_proto": "arp_op"}
_U64 = (1 << 64) - 1


# --- printing ---------------------------------------------------------------

def _vlan_text(m: OfMatch) -> list[str]:
    """OVS's dl_vlan / dl_vlan_pcp / vlan_tci choice (lib/match.c)."""
    v, mask = tci_from_dp(m.key, m.mask)
    if not mask:
        return []
    vid_m, pcp_m = mask & VLAN_VID_MASK, mask & VLAN_PCP_MASK
    if (mask & VLAN_CFI and v & VLAN_CFI and vid_m in (0, VLAN_VID_MASK)
            and pcp_m in (0, VLAN_PCP_MASK) and (vid_m or pcp_m)):
        out = []
        if vid_m:
            out.append(f"dl_vlan={v & VLAN_VID_MASK}")
        if pcp_m:
            out.append(f"dl_vlan_pcp={v >> 13}")
        return out
    if mask == 0xFFFF:
        return [f"vlan_tci=0x{v:04x}"]
    return [f"vlan_tci=0x{v:04x}/0x{mask:04x}"]


def _item(m: OfMatch, f: OfField) -> str | None:
    v, mask = m.get(f.name)
    return f"{f.name}={format_value(f, v, mask)}" if mask else None


def format_match(m: OfMatch, priority: int = OFP_DEFAULT_PRIORITY) -> str:
    """The match part of a dump-flows line: ``priority=100,tcp,nw_dst=10.0.0.0/24``."""
    stray = m.mask & ~PRINTABLE_MASK
    if stray:
        raise ValidationError("match uses datapath fields ovs-ofctl cannot spell",
                              mask=hex(stray))
    out: list[str] = []
    if priority != OFP_DEFAULT_PRIORITY:
        out.append(f"priority={priority}")
    dl_type = m.value("dl_type") if m.has("dl_type") else None
    proto = m.value("nw_proto") if m.has("nw_proto") else None
    short = None
    if dl_type is not None:
        short = _SHORTHAND_NAME.get((dl_type, proto))
        if short is None:
            short = _SHORTHAND_NAME.get((dl_type, None))
        elif proto is not None:
            proto = None  # implied by the shorthand
    for name in PRINT_ORDER:
        text: str | None
        if name == "<shorthand>":
            text = short
        elif name == "<vlan>":
            out.extend(_vlan_text(m))
            continue
        elif name == "<dl_type>":
            text = None if short or dl_type is None else f"dl_type=0x{dl_type:04x}"
        elif name == "<nw_proto>":
            text = None if proto is None else f"nw_proto={proto}"
        else:
            text = _item(m, BY_NAME[name])
        if text:
            out.append(text)
    return ",".join(out)


def _duration(seconds: float) -> str:
    ms = max(0, int(round(seconds * 1000)))
    sec, frac = divmod(ms, 1000)
    return f"{sec}.{frac:03d}s" if frac else f"{sec}s"


def format_rule(rule: Rule, stats: RuleStats | None = None, now: float = 0.0) -> str:
    """One ``ovs-ofctl dump-flows`` line (leading space included, as OVS prints).

    Without ``stats`` it is the ``--no-stats`` form: no duration, counters or
    ages, and cookie/table only when non-zero.
    """
    parts: list[str] = []
    if stats is not None or rule.cookie:
        parts.append(f"cookie={rule.cookie:#x}" if rule.cookie else "cookie=0x0")
    if stats is not None:
        parts.append(f"duration={_duration(now - stats.created)}")
    if stats is not None or rule.table:
        parts.append(f"table={rule.table}")
    if stats is not None:
        parts.append(f"n_packets={stats.n_packets}")
        parts.append(f"n_bytes={stats.n_bytes}")
    if rule.idle_timeout:
        parts.append(f"idle_timeout={rule.idle_timeout}")
    if rule.hard_timeout:
        parts.append(f"hard_timeout={rule.hard_timeout}")
    head = ", ".join(parts)
    head = head + ", " if head else ""
    for flag in FLOW_FLAGS:
        if flag in rule.flags:
            head += flag + " "
    if rule.importance:
        head += f"importance={rule.importance}, "
    if stats is not None:
        head += f"idle_age={max(0, int(now - stats.used))}, "
    match = format_match(rule.match, rule.priority)
    return f" {head}{match}{' ' if match else ''}actions={format_actions(rule.actions)}"


# --- parsing -----------------------------------------------------------------

@dataclass
class _Parsed:
    match: OfMatch
    table: int | None = None
    priority: int | None = None
    cookie: int = 0
    cookie_mask: int | None = None
    cookie_given: bool = False
    idle_timeout: int = 0
    hard_timeout: int = 0
    importance: int = 0
    out_port: int | None = None
    flags: frozenset[str] = frozenset()
    actions: OfActions | None = None


def _items(text: str) -> list[tuple[str, str | None, int, int]]:
    """(key, value or None, key pos, value pos); ``actions`` value is the rest of the text."""
    sc = Scanner(text, "rule")
    out: list[tuple[str, str | None, int, int]] = []
    while True:
        while not sc.at_end() and text[sc.pos] in ", \t\r\n":
            sc.pos += 1
        if sc.at_end():
            return out
        start = sc.pos
        item = sc.until(", \t\r\n")
        key, eq, value = item.partition("=")
        key = key.strip()
        vpos = start + len(key) + 1
        if key in ("actions", "action") and eq:
            out.append(("actions", text[vpos:], start, vpos))
            return out
        out.append((key, value if eq else None, start, vpos))


def _parse(text: str, *, allow_cookie_mask: bool) -> _Parsed:
    def err(msg: str, pos: int, expected: str | None = None, **ctx: Any) -> ParseError:
        return ParseError(f"rule: {msg}", text=text, pos=pos, expected=expected, **ctx)

    def num(key: str, value: str | None, pos: int, hi: int) -> int:
        if value is None:
            raise err(f"{key} needs a value", pos, "=number", field=key)
        try:
            n = int(value, 0)
        except ValueError:
            raise err(f"{key}: {value!r} is not a number", pos, "number", field=key,
                      value=value) from None
        if not 0 <= n <= hi:
            raise err(f"{key}: {value} out of range 0..{hi}", pos, field=key, value=value)
        return n

    p = _Parsed(OfMatch.catchall())
    items = _items(text)
    fields: list[tuple[str, str, int, int]] = []
    flags: set[str] = set()
    # pass 1: keywords, shorthands, dl_type
    for key, value, kpos, vpos in items:
        if key == "actions":
            assert value is not None
            p.actions = parse_actions(value, base=vpos, whole=text)
        elif key in _STATS_ITEMS:
            continue
        elif key == "table":
            p.table = num(key, value, vpos, 254)
        elif key == "priority":
            p.priority = num(key, value, vpos, 0xFFFF)
        elif key in ("idle_timeout", "hard_timeout", "importance"):
            setattr(p, key, num(key, value, vpos, 0xFFFF))
        elif key == "cookie":
            base, slash, mtext = (value or "").partition("/")
            p.cookie = num(key, base, vpos, _U64)
            p.cookie_given = True
            if slash:
                if not allow_cookie_mask:
                    raise err("a cookie mask is only for matching (del-flows, mod-flows)",
                              vpos + len(base), field="cookie", value=value)
                p.cookie_mask = _U64 if mtext == "-1" else num(key, mtext, vpos, _U64)
        elif key == "out_port":
            if not allow_cookie_mask:
                raise err("out_port is only for matching (del-flows, mod-flows)", kpos,
                          field=key)
            try:
                p.out_port = parse_value(BY_NAME["in_port"], value or "")[0]
            except BadValue as e:
                raise err(f"out_port: {e}", vpos, "port", field=key, value=value) from None
        elif key in FLOW_FLAGS and value is None:
            flags.add(key)
        elif key in _SHORTHAND and value is None:
            t, proto = _SHORTHAND[key]
            p.match = p.match.with_field("dl_type", t)
            if proto is not None:
                p.match = p.match.with_field("nw_proto", proto)
        elif value is None:
            raise err(f"unknown keyword {key!r}", kpos, "field=value, keyword or shorthand",
                      field=key)
        elif key in ("dl_type", "eth_type"):
            p.match = _set(p.match, key, value, vpos, err)
        else:
            fields.append((key, value, kpos, vpos))
    p.flags = frozenset(flags)
    # pass 2: fields, now that dl_type is known (ARP views)
    is_arp = p.match.has("dl_type") and p.match.value("dl_type") in (
        dpf.ETH_TYPE_ARP, dpf.ETH_TYPE_RARP)
    used: dict[str, tuple[str, int]] = {}
    for key, value, kpos, vpos in fields:
        name = _ARP_VIEWS.get(key, key) if is_arp else key
        if name not in BY_NAME:
            raise err(f"unknown field {key!r}", kpos, "field name", field=key)
        p.match = _set(p.match, name, value, vpos, err)
        used[BY_NAME[name].name] = (key, kpos)
    for f in p.match.missing_prereqs():
        key, kpos = next(((k, pos) for n, (k, pos) in used.items()
                          if BY_NAME[n].offset == f.offset), (f.name, 0))
        need = " or ".join(",".join(f"{n}={v:#x}" if n == "dl_type" else f"{n}={v}"
                                    for n, v in conj) for conj in BY_NAME[key].prereq[:2])
        raise err(f"{key} requires {need}" + (" ..." if len(BY_NAME[key].prereq) > 2 else ""),
                  kpos, "a shorthand such as tcp, udp, ip, arp", field=key)
    return p


def _set(m: OfMatch, name: str, value: str, vpos: int, err: _Err) -> OfMatch:
    f = of_field(name)
    try:
        v, mask = parse_value(f, value)
        return m.with_field(name, v, mask)
    except BadValue as e:
        raise err(f"{name}: {e}", vpos, f"{f.fmt.value} value", field=name,
                  value=value) from None
    except ValidationError as e:
        raise err(f"{name}: {e.message}", vpos, field=name, value=value) from None


def parse_rule(text: str) -> Rule:
    """An ``ovs-ofctl add-flow`` line: match, keywords and ``actions=`` (required)."""
    p = _parse(text, allow_cookie_mask=False)
    if p.actions is None:
        raise ParseError("rule: must specify actions", text=text, pos=len(text),
                         expected="actions=...")
    try:
        return Rule(p.match, p.actions, p.table or 0,
                    OFP_DEFAULT_PRIORITY if p.priority is None else p.priority,
                    p.cookie, p.idle_timeout, p.hard_timeout, p.importance, p.flags)
    except ValidationError as e:
        raise ParseError(f"rule: {e.message}", text=text, pos=0, **e.context) from None


def parse_match(text: str, *, modify: bool = False) -> RuleSelector:
    """A ``del-flows`` (or, with ``modify``, ``mod-flows``) argument.

    Match, ``table`` (absent: every table), ``priority`` (for --strict),
    ``cookie=V/M`` to select by cookie, ``out_port``.  For mod-flows,
    ``cookie=V`` without a mask sets the new cookie and ``actions=`` is
    required; del-flows refuses both, as ovs-ofctl does.
    """
    p = _parse(text, allow_cookie_mask=True)
    if p.cookie_given and p.cookie_mask is None and not modify:
        raise ParseError("rule: cannot set cookie in del-flows (select with cookie=V/M)",
                         text=text, pos=text.find("cookie"), expected="cookie=V/M",
                         field="cookie")
    if modify and p.actions is None:
        raise ParseError("rule: mod-flows must specify actions", text=text, pos=len(text),
                         expected="actions=...")
    if not modify and p.actions is not None:
        raise ParseError("rule: del-flows takes no actions", text=text,
                         pos=text.find("action"), field="actions")
    return RuleSelector(
        match=p.match, table=p.table,
        priority=OFP_DEFAULT_PRIORITY if p.priority is None else p.priority,
        cookie=p.cookie if p.cookie_mask is not None else 0,
        cookie_mask=p.cookie_mask if p.cookie_mask is not None else 0,
        out_port=p.out_port,
        actions=p.actions,
        new_cookie=p.cookie if p.cookie_given and p.cookie_mask is None else None,
        flags=p.flags)
