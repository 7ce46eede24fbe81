"""OpenFlow action lists in ovs-ofctl text: ``mod_vlan_vid:10,output:2``.

``parse_actions(text)`` and ``format_actions(actions)`` are inverses on
everything ``format_actions`` prints.  Spellings follow OVS's
``lib/ofp-actions.c``: ``output:2``, ``IN_PORT``, ``NORMAL``,
``CONTROLLER:65535`` or ``controller(reason=..,max_len=..,userdata=..)``,
``mod_*:V``, ``set_field:V->F``, ``load:V->F[a..b]``, ``move:A[..]->B[..]``,
``resubmit:P`` / ``resubmit(P,T)``, ``sample(probability=..,..)``,
``ct(commit,table=..,zone=..,nat(..),exec(..))``; the empty list is ``drop``.

The ``mod_*`` actions are declared once in ``MOD_ACTIONS`` (action name ->
field); reserved-port actions in ``PORT_ACTIONS``.  Errors are ParseErrors
carrying the whole text, the position of the offending action and what was
expected there.
"""

from __future__ import annotations

from collections.abc import Callable

from dpif.errors import ParseError, ValidationError
from dpif.scan import Scanner
from ofproto import ofactions as A
from ofproto.actionformat import MOD_ACTIONS, PORT_ACTIONS, format_action, format_actions
from ofproto.offields import OFPP_MAX, OfField, of_field
from ofproto.ofvalues import BadValue, format_port, parse_port, parse_value

_PORT_ACTION_BY_NAME = {n: cls for n, cls in PORT_ACTIONS}


class _Bad(Exception):
    """Raised inside one action's parser; turned into a ParseError at its position."""

    def __init__(self, message: str, expected: str | None = None, field: str | None = None,
                 offset: int = 0) -> None:
        super().__init__(message)
        self.message, self.expected, self.field, self.offset = message, expected, field, offset


# --- small parsers -------------------------------------------------------------

def _num(s: str, what: str, hi: int) -> int:
    try:
        n = int(s, 0)
    except ValueError:
        raise _Bad(f"{what}: {s!r} is not a number", expected="number") from None
    if not 0 <= n <= hi:
        raise _Bad(f"{what}: {s} out of range 0..{hi}")
    return n


def _field(name: str) -> OfField:
    try:
        return of_field(name)
    except ValidationError:
        raise _Bad(f"unknown field {name!r}", expected="field name", field=name) from None


def _subfield(s: str) -> A.FieldRef:
    """``NAME``, ``NAME[]``, ``NAME[n]``, ``NAME[a..b]``."""
    name, br, rng = s.partition("[")
    f = _field(name)
    if not br or rng == "]":
        return A.FieldRef(name, 0, f.bits)
    if not rng.endswith("]"):
        raise _Bad(f"{s!r}: expected ']'", expected="]")
    lo, dots, hi = rng[:-1].partition("..")
    a = _num(lo, name, f.bits - 1)
    b = _num(hi, name, f.bits - 1) if dots else a
    if b < a:
        raise _Bad(f"{s!r}: bit range is backwards")
    return A.FieldRef(name, a, b - a + 1)


def _value(f: OfField, name: str, s: str) -> tuple[int, int]:
    try:
        return parse_value(f, s)
    except BadValue as e:
        raise _Bad(f"{name}: {e}", expected=f"{f.fmt.value} value", field=name) from None


def _kv(args: str) -> list[tuple[str, str, int]]:
    """Split ``a=1,b,c=(x,y)`` at depth-0 commas into (key, value, offset)."""
    out, sc = [], Scanner(args)
    while not sc.at_end():
        start = sc.pos
        item = sc.until(",")
        eq, par = item.find("="), item.find("(")
        if eq >= 0 and (par < 0 or eq < par):
            key, val = item[:eq], item[eq + 1:]
        else:
            key, val = item, ""
        out.append((key.strip(), val.strip(), start))
        sc.accept(",")
    return out


def _inner(arg: str, name: str) -> str:
    if not (arg.startswith("(") and arg.endswith(")")):
        raise _Bad(f"{name}: expected '(...)'", expected="(")
    return arg[1:-1]


# --- one parser per action name ---------------------------------------------

def _p_output(arg: str) -> A.OfAction:
    port = _port(arg)
    if port < OFPP_MAX:
        return A.Output(port)
    return _reserved(port, arg)


def _port(s: str) -> int:
    try:
        return parse_port(s)
    except BadValue as e:
        raise _Bad(str(e), expected="port") from None


def _reserved(port: int, text: str) -> A.OfAction:
    name = format_port(port)
    if name in _PORT_ACTION_BY_NAME:
        act: A.OfAction = _PORT_ACTION_BY_NAME[name]()
        return act
    if name == "CONTROLLER":
        return A.Controller()
    raise _Bad(f"cannot output to reserved port {text!r}", expected="port")


def _p_controller(arg: str) -> A.OfAction:
    if not arg:
        return A.Controller()
    if not arg.startswith("("):
        return A.Controller(max_len=_num(arg, "controller max_len", 0xFFFF))
    kw: dict[str, object] = {}
    for k, v, _ in _kv(_inner(arg, "controller")):
        if k == "max_len":
            kw["max_len"] = _num(v, "max_len", 0xFFFF)
        elif k == "reason":
            if v not in A.CONTROLLER_REASONS:
                raise _Bad(f"unknown controller reason {v!r}",
                           expected=" | ".join(A.CONTROLLER_REASONS))
            kw["reason"] = v
        elif k == "userdata":
            try:
                kw["userdata"] = bytes.fromhex(v.replace(".", ""))
            except ValueError:
                raise _Bad(f"userdata {v!r} is not hex bytes (01.02.ff)") from None
        else:
            raise _Bad(f"controller: unknown or unsupported argument {k!r}",
                       expected="reason=, max_len=, userdata=")
    return A.Controller(**kw)  # type: ignore[arg-type]


def _p_set_field(arg: str) -> A.OfAction:
    val, arrow, name = arg.rpartition("->")
    if not arrow:
        raise _Bad("set_field: expected VALUE->FIELD", expected="->")
    f = _field(name)
    if f.virtual:
        raise _Bad(f"set_field to {name} is not supported (use mod_vlan_vid)", field=name)
    v, m = _value(f, name, val)
    return A.SetField(name, v, m)


def _p_load(arg: str) -> A.OfAction:
    val, arrow, dst = arg.partition("->")
    if not arrow:
        raise _Bad("load: expected VALUE->FIELD[..]", expected="->")
    ref = _subfield(dst)
    v = _num(val, "load value", (1 << 128) - 1)
    if v >> ref.n_bits:
        raise _Bad(f"load: value {val} does not fit in {ref.n_bits} bits", field=ref.field)
    mask = ((1 << ref.n_bits) - 1) << ref.ofs
    return A.SetField(ref.field, v << ref.ofs, mask, "load")


def _p_move(arg: str) -> A.OfAction:
    src, arrow, dst = arg.partition("->")
    if not arrow:
        raise _Bad("move: expected SRC[..]->DST[..]", expected="->")
    s, d = _subfield(src), _subfield(dst)
    if s.n_bits != d.n_bits:
        raise _Bad(f"move: source is {s.n_bits} bits but destination is {d.n_bits}")
    return A.Move(s.field, s.ofs, d.field, d.ofs, s.n_bits)


def _p_resubmit(arg: str) -> A.OfAction:
    if arg.startswith("("):
        parts = _inner(arg, "resubmit").split(",")
        if len(parts) == 1:
            parts.append("")
        if len(parts) != 2:
            raise _Bad("resubmit: expected (PORT,TABLE)", expected="(port,table)")
        ptext, ttext = parts[0].strip(), parts[1].strip()
        port = _port(ptext) if ptext else None
        table = _num(ttext, "resubmit table", 254) if ttext else None
    else:
        port, table = _port(arg), None
    if port == 0xFFF8:  # IN_PORT
        port = None
    return A.Resubmit(port, table)


def _p_sample(arg: str) -> A.OfAction:
    kw: dict[str, int] = {}
    known = ("probability", "collector_set_id", "obs_domain_id", "obs_point_id")
    for k, v, _ in _kv(_inner(arg, "sample")):
        if k not in known:
            raise _Bad(f"sample: unknown or unsupported argument {k!r}",
                       expected=", ".join(known))
        kw[k] = _num(v, k, 0xFFFF if k == "probability" else 0xFFFFFFFF)
    if not kw.get("probability"):
        raise _Bad("sample: probability must be 1..65535", expected="probability=")
    return A.Sample(**kw)


def _p_nat(arg: str) -> A.Nat:
    if not arg:
        return A.Nat()
    kind, addr_min, addr_max, pmin, pmax, flags = None, None, None, None, None, []
    for k, v, _ in _kv(_inner(arg, "nat")):
        if k in ("src", "dst"):
            kind = k
            if v.startswith("["):  # [v6]-[v6]:p-q
                close = v.rfind("]")
                addrs, ports = v[:close + 1], v[close + 1:].lstrip(":")
                lo, _, hi = addrs.partition("-")
                addr_min, addr_max = lo.strip("[]"), (hi.strip("[]") or None)
            else:
                addrs, _, ports = v.partition(":")
                lo, _, hi = addrs.partition("-")
                addr_min, addr_max = lo or None, hi or None
            if ports:
                plo, _, phi = ports.partition("-")
                pmin = _num(plo, "nat port", 0xFFFF)
                pmax = _num(phi, "nat port", 0xFFFF) if phi else None
        elif k in A.NAT_FLAGS and not v:
            flags.append(k)
        else:
            raise _Bad(f"nat: unknown argument {k!r}", expected="src=, dst=, persistent, "
                                                                "hash, random")
    return A.Nat(kind, addr_min, addr_max, pmin, pmax, tuple(flags))


def _p_ct(arg: str) -> A.OfAction:
    commit, zone, table, nat = False, 0, None, None
    zone_ref: A.FieldRef | None = None
    execs: tuple[A.SetField, ...] = ()
    for k, v, _ in _kv(_inner(arg, "ct") if arg else ""):
        if k == "commit" and not v:
            commit = True
        elif k == "table":
            table = _num(v, "ct table", 254)
        elif k == "zone":
            if v[:1].isdigit():
                zone = _num(v, "ct zone", 0xFFFF)
            else:
                zone_ref = _subfield(v)
        elif k.startswith("nat"):
            nat = _p_nat(k[3:])
        elif k.startswith("exec"):
            inner = parse_actions(_inner(k[4:], "exec"))
            if not all(isinstance(a, A.SetField) for a in inner):
                raise _Bad("ct(exec(...)) may only hold set_field/load of ct_mark")
            execs = tuple(a for a in inner if isinstance(a, A.SetField))
        else:
            raise _Bad(f"ct: unknown or unsupported argument {k!r}",
                       expected="commit, table=, zone=, nat, exec()")
    return A.Ct(commit, zone_ref if zone_ref is not None else zone, table, nat, execs)


def _p_mod(name: str) -> Callable[[str], A.OfAction]:
    fname = MOD_ACTIONS[name]

    def parse(arg: str) -> A.OfAction:
        f = of_field(fname)
        v, m = _value(f, name, arg)
        if m != f.all_ones:
            raise _Bad(f"{name} takes an exact value", field=fname)
        return A.SetField(fname, v, m, name)
    return parse


def _no_arg(cls: type) -> Callable[[str], A.OfAction]:
    def parse(arg: str) -> A.OfAction:
        if arg:
            raise _Bad(f"unexpected argument {arg!r}")
        act: A.OfAction = cls()
        return act
    return parse


_PARSERS: dict[str, Callable[[str], A.OfAction]] = {
    "output": _p_output,
    "controller": _p_controller,
    "mod_vlan_vid": lambda a: A.SetVlanVid(_num(a, "mod_vlan_vid", 0xFFF)),
    "mod_vlan_pcp": lambda a: A.SetVlanPcp(_num(a, "mod_vlan_pcp", 7)),
    "strip_vlan": _no_arg(A.StripVlan),
    "pop_vlan": _no_arg(A.PopVlan),
    "push_vlan": lambda a: A.PushVlan(_num(a, "push_vlan", 0xFFFF)),
    "set_field": _p_set_field,
    "load": _p_load,
    "move": _p_move,
    "dec_ttl": _no_arg(A.DecTtl),
    "set_tunnel": lambda a: A.SetTunnel(_num(a, "set_tunnel", 0xFFFFFFFF)),
    "set_tunnel64": lambda a: A.SetTunnel(_num(a, "set_tunnel64", (1 << 64) - 1)),
    "resubmit": _p_resubmit,
    "goto_table": lambda a: A.GotoTable(_num(a, "goto_table", 254)),
    "sample": _p_sample,
    "ct": _p_ct,
    **{n: _p_mod(n) for n in MOD_ACTIONS},
    **{n.lower(): _no_arg(cls) for n, cls in PORT_ACTIONS},
}


def _parse_one(item: str) -> A.OfAction:
    if item[:1].isdigit():
        return _p_output(item)
    if item.upper() in _PORT_ACTION_BY_NAME or item.upper() == "CONTROLLER":
        return _PARSERS[item.lower()]("")
    name_end = len(item)
    for i, c in enumerate(item):
        if c in ":(=":
            name_end = i
            break
    name, rest = item[:name_end], item[name_end:]
    arg = rest[1:] if rest[:1] in (":", "=") else rest
    parser = _PARSERS.get(name.lower())
    if parser is None:
        raise _Bad(f"unknown or unsupported action {name!r}", expected="action")
    return parser(arg)


def parse_actions(text: str, *, base: int = 0, whole: str | None = None) -> A.OfActions:
    """Parse an ovs-ofctl action list.  ``base``/``whole`` place errors in a rule."""
    sc = Scanner(text, "actions")
    out: list[A.OfAction] = []
    stripped = text.strip()
    if stripped.lower() == "drop":
        return ()
    while not sc.at_end():
        sc.skip_space()
        start = sc.pos
        item = sc.until(",").strip()
        if not item:
            raise ParseError("actions: empty action", text=whole or text, pos=base + start,
                             expected="action")
        try:
            out.append(_parse_one(item))
        except _Bad as e:
            raise ParseError(f"actions: {e.message}", text=whole or text, pos=base + start,
                             expected=e.expected, field=e.field, action=item) from None
        except ParseError as e:  # nested exec(...)
            raise ParseError(f"{e.message}", text=whole or text, pos=base + start,
                             expected=e.expected, action=item) from None
        except ValidationError as e:
            raise ParseError(f"actions: {e.message}", text=whole or text, pos=base + start,
                             action=item, **e.context) from None
        if sc.peek(")"):
            raise ParseError("actions: unbalanced ')'", text=whole or text, pos=base + sc.pos)
        sc.accept(",")
    return tuple(out)


__all__ = ["MOD_ACTIONS", "format_action", "format_actions", "parse_actions"]
