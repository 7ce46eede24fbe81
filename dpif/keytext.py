"""Flow key text in OVS dpctl style: ``in_port(2),eth(src=..),eth_type(0x0800),...``.

Printing walks ``fields.GROUPS`` in order and prints every group with a field
the match looks at; groups that share fields (ipv4/ipv6, tcp/udp/sctp, ...)
are chosen by the eth_type / ip_proto the match holds, as OVS does.  VLAN
tags print the OVS way: ``eth_type(0x8100),vlan(vid=10,pcp=0),encap(...)``,
with a second ``vlan`` inside the first ``encap`` for 802.1ad.

Parsing accepts groups in any order and the same spellings (plus prefix
lengths for addresses).  ``format_key(parse_key(s)) == s`` for printed text.
"""

from __future__ import annotations

from dpif.errors import ValidationError
from dpif.fields import BY_NAME, GROUP_BY_NAME, GROUPS, Fmt, Group
from dpif.match import Match
from dpif.scan import Scanner
from dpif.valuetext import ValueError_, format_value, parse_value

# Groups the printer handles itself (VLAN framing) or by selection.
_L2_TAIL = ("vlan", "cvlan", "eth_type")
_VLAN_ATTRS = {"vlan": ("vlan_tpid", "vlan_vid", "vlan_pcp"),
               "cvlan": ("cvlan_tpid", "cvlan_vid", "cvlan_pcp")}


def _applies(g: Group, m: Match) -> bool:
    if g.when is None:
        return True
    fname, values = g.when
    return m.is_exact(fname) and m.value(fname) in values


def _format_group(g: Group, m: Match, name: str | None = None) -> str | None:
    parts = []
    for attr, fname in g.attrs:
        v, mask = m.get(fname)
        if not mask:
            continue
        f = BY_NAME[fname]
        text = format_value(f, v, mask)
        if g.scalar:
            return f"{name or g.name}({text})"
        if f.fmt is Fmt.FLAGS:
            parts.append(f"{attr}({text})")
        else:
            parts.append(f"{attr}={text}")
    if not parts:
        return None
    return f"{name or g.name}({','.join(parts)})"


def _format_tail(m: Match) -> list[str]:
    """Everything after eth(): eth_type, L2.5-L4 groups."""
    out: list[str] = []
    et = _format_group(GROUP_BY_NAME["eth_type"], m)
    if et:
        out.append(et)
    for g in GROUPS:
        if g.when is not None and _applies(g, m):
            text = _format_group(g, m)
            if text:
                out.append(text)
        elif g.name == "tcp_flags":
            text = _format_group(g, m)
            if text:
                out.append(text)
    return out


def _vlan(m: Match, which: str) -> tuple[str, str] | None:
    tpid_f, vid_f, pcp_f = _VLAN_ATTRS[which]
    if not m.has(tpid_f) or m.value(tpid_f) == 0:
        # "no tag" (tpid matched as 0) prints as no vlan(), which is what an
        # absent vlan() means to OVS's datapath; a wildcarded tag prints the same.
        return None
    tpid = format_value(BY_NAME[tpid_f], m.value(tpid_f), BY_NAME[tpid_f].all_ones)
    g = Group("vlan", (("vid", vid_f), ("pcp", pcp_f)))
    return f"eth_type({tpid})", _format_group(g, m) or "vlan()"


def format_key(m: Match) -> str:
    out: list[str] = []
    printed: set[str] = set()
    for g in GROUPS:
        if g.name in _L2_TAIL or g.when is not None or g.name == "tcp_flags":
            continue
        text = _format_group(g, m)
        if text:
            out.append(text)
        if g.name == "eth":
            break
    tail = _format_tail(m)
    outer, inner = _vlan(m, "vlan"), _vlan(m, "cvlan")
    if inner and not outer:
        raise ValidationError("inner vlan (cvlan) without an outer vlan")
    if outer:
        body = ",".join(tail)
        if inner:
            body = f"{inner[0]},{inner[1]},encap({body})"
        out.append(f"{outer[0]},{outer[1]},encap({body})")
    else:
        out.extend(tail)
    text = ",".join(out)
    _check_all_printed(m, text)
    return text


def visible_fields(m: Match) -> set[str]:
    """The fields ``format_key`` can show for ``m``: those of every group
    whose prerequisite ``m`` matches (tcp ports only with ip_proto=6, ...)."""
    visible: set[str] = set()
    for g in GROUPS:
        if _applies(g, m):
            visible.update(g.field_names())
    return visible


def _check_all_printed(m: Match, text: str) -> None:
    if m.has("vlan_tpid") and m.value("vlan_tpid") == 0:
        m = m.without("vlan_tpid", "vlan_vid", "vlan_pcp")
    # Every field the match looks at must be shown; a field whose group was
    # not selected (tcp ports without ip_proto=6, ...) cannot be written.
    visible = visible_fields(m)
    hidden = [f.name for f, _, _ in m.fields() if f.name not in visible]
    if hidden:
        raise ValidationError("match has fields whose prerequisite is not matched "
                              "(e.g. L4 ports need eth_type and ip_proto)",
                              fields=",".join(hidden))


def parse_key(sc: Scanner) -> Match:
    """Parse key groups at the cursor up to the first thing that is not ``name(``."""
    values: dict[str, tuple[int, int]] = {}
    _parse_items(sc, values, depth=0)
    try:
        return Match.build(values)
    except ValidationError as e:
        raise sc.error(e.message) from None


def _set(sc: Scanner, values: dict[str, tuple[int, int]], fname: str, vm: tuple[int, int],
         pos: int) -> None:
    if fname in values:
        raise sc.error(f"field {fname} given twice", pos=pos)
    f = BY_NAME[fname]
    if not f.maskable and vm[1] != f.all_ones:
        raise sc.error(f"field {fname} cannot be masked", pos=pos, expected="an exact value")
    values[fname] = vm


def _parse_items(sc: Scanner, values: dict[str, tuple[int, int]], depth: int) -> None:
    pending_et: tuple[tuple[int, int], int] | None = None
    first = True
    while True:
        sc.skip_space()
        save = sc.pos
        if not first:
            if not sc.accept(","):
                break
            sc.skip_space()
        name = sc.peek_ident()
        if name is None or not sc.text.startswith("(", sc.pos + len(name)):
            sc.pos = save
            break
        first = False
        start = sc.pos
        sc.ident()
        sc.expect("(")
        if name == "eth_type":
            vm = _scalar_value(sc, "eth_type")
            if pending_et is not None:
                raise sc.error("eth_type given twice", pos=start)
            pending_et = (vm, start)
        elif name == "vlan":
            which = "vlan" if depth == 0 else "cvlan"
            if depth > 1:
                raise sc.error("more than two vlan tags", pos=start)
            if pending_et is None:
                raise sc.error("vlan(...) must follow eth_type(TPID)", pos=start,
                               expected="eth_type(0x8100) before vlan")
            _set(sc, values, _VLAN_ATTRS[which][0], pending_et[0], pending_et[1])
            pending_et = None
            g = Group("vlan", (("vid", _VLAN_ATTRS[which][1]), ("pcp", _VLAN_ATTRS[which][2])))
            _parse_attrs(sc, g, values)
        elif name == "encap":
            _parse_items(sc, values, depth + 1)
        else:
            found = GROUP_BY_NAME.get(name)
            if found is None or name in _L2_TAIL:
                raise sc.error(f"unknown key field {name!r}", pos=start, expected="a key group")
            g = found
            if g.scalar:
                fname = g.attrs[0][1]
                _set(sc, values, fname, _scalar_value(sc, fname), start)
            else:
                _parse_attrs(sc, g, values)
        sc.expect(")")
    if pending_et is not None:
        _set(sc, values, "eth_type", pending_et[0], pending_et[1])


def _scalar_value(sc: Scanner, fname: str) -> tuple[int, int]:
    pos = sc.pos
    text = sc.until(")")
    try:
        return parse_value(BY_NAME[fname], text.strip())
    except ValueError_ as e:
        raise sc.error(f"{fname}: {e}", pos=pos, expected=BY_NAME[fname].fmt.value) from None


def _parse_attrs(sc: Scanner, g: Group, values: dict[str, tuple[int, int]]) -> None:
    attrs = dict(g.attrs)
    first = True
    while not sc.peek(")"):
        if not first:
            sc.expect(",")
        first = False
        pos = sc.pos
        attr = sc.ident()
        fname = attrs.get(attr)
        if fname is None:
            raise sc.error(f"{g.name} has no field {attr!r}", pos=pos,
                           expected=" or ".join(a for a, _ in g.attrs))
        f = BY_NAME[fname]
        if f.fmt is Fmt.FLAGS and sc.peek("("):
            sc.expect("(")
            vm = _scalar_value(sc, fname)
            sc.expect(")")
        else:
            sc.expect("=")
            vpos = sc.pos
            text = sc.until(",)")
            try:
                vm = parse_value(f, text.strip())
            except ValueError_ as e:
                raise sc.error(f"{g.name}({attr}): {e}", pos=vpos, expected=f.fmt.value) from None
        _set(sc, values, fname, vm, pos)
