"""Datapath action text in OVS dpctl style: ``push_vlan(vid=100,pcp=0),2``.

``format_actions(parse_actions(s)) == s`` for printed text.  Spellings:

    2                       Output(2)
    drop                    ()  (the empty list)
    push_vlan([tpid=0x88a8,]vid=N,pcp=N)   pop_vlan
    set(GROUP(attr=v[/m],...))             (tunnel: set(tunnel(tun_id=..,dst=..)))
    dec_ttl   recirc(0x1)   hash(l4(BASIS))   ct_clear
    sample(sample=50.0%,actions(...))
    userspace(pid=N[,userdata(HEX)])
    ct([commit,]zone=N[,mark=V/M][,nat[(src|dst=A[-B][:P[-Q]])]])
"""

from __future__ import annotations

from dpif.actions import (
    UINT32_MAX, Action, Actions, Ct, CtClear, DecTtl, Hash, Nat, Output, PopVlan, PushVlan,
    Recirc, Sample, SetField, Userspace,
)
from dpif.errors import ValidationError
from dpif.fields import BY_NAME, ETH_TYPE_VLAN, GROUP_BY_NAME, Fmt
from dpif.scan import Scanner
from dpif.valuetext import ValueError_, format_value, parse_value


def _hex(v: int) -> str:
    return "0" if v == 0 else f"{v:#x}"


def _fmt_nat(n: Nat) -> str:
    if n.kind is None:
        return "nat"
    addr = n.addr_min or ""
    if n.addr_max:
        addr += f"-{n.addr_max}"
    if ":" in addr and n.port_min is not None:
        addr = f"[{addr}]"
    if n.port_min is not None:
        addr += f":{n.port_min}"
        if n.port_max is not None:
            addr += f"-{n.port_max}"
    return f"nat({n.kind}={addr})" if addr else f"nat({n.kind})"


def format_action(a: Action) -> str:
    if isinstance(a, Output):
        return str(a.port)
    if isinstance(a, PushVlan):
        tpid = "" if a.tpid == ETH_TYPE_VLAN else f"tpid={a.tpid:#x},"
        return f"push_vlan({tpid}vid={a.vid},pcp={a.pcp})"
    if isinstance(a, PopVlan):
        return "pop_vlan"
    if isinstance(a, SetField):
        attr_of = {f: attr for attr, f in GROUP_BY_NAME[a.group].attrs}
        parts = []
        for name, v, m in a.fields:
            f = BY_NAME[name]
            text = format_value(f, v, m)
            parts.append(f"{attr_of[name]}({text})" if f.fmt is Fmt.FLAGS
                         else f"{attr_of[name]}={text}")
        return f"set({a.group}({','.join(parts)}))"
    if isinstance(a, DecTtl):
        return "dec_ttl"
    if isinstance(a, Recirc):
        return f"recirc({_hex(a.recirc_id)})"
    if isinstance(a, Hash):
        return f"hash({a.alg}({a.basis}))"
    if isinstance(a, Sample):
        return f"sample(sample={a.fraction * 100:.1f}%,actions({format_actions(a.actions)}))"
    if isinstance(a, Userspace):
        ud = f",userdata({a.userdata.hex()})" if a.userdata else ""
        return f"userspace(pid={a.pid}{ud})"
    if isinstance(a, Ct):
        parts = ["commit"] if a.commit else []
        if a.zone:
            parts.append(f"zone={a.zone}")
        if a.mark is not None:
            parts.append(f"mark={_hex(a.mark[0])}/{a.mark[1]:#x}")
        if a.nat is not None:
            parts.append(_fmt_nat(a.nat))
        return f"ct({','.join(parts)})" if parts else "ct"
    if isinstance(a, CtClear):
        return "ct_clear"
    raise ValidationError("unknown action type", action=type(a).__name__)


def format_actions(actions: Actions) -> str:
    return ",".join(format_action(a) for a in actions) if actions else "drop"


def parse_actions(sc: Scanner, stop: str = "") -> Actions:
    """Parse a comma-separated action list at the cursor up to end/``stop``."""
    sc.skip_space()
    if sc.peek("drop") and not (sc.peek_ident() or "").startswith("drop_"):
        sc.ident()
        return ()
    out: list[Action] = []
    while True:
        sc.skip_space()
        out.append(_parse_one(sc))
        sc.skip_space()
        if not sc.accept(","):
            break
    if not sc.at_end() and not (stop and sc.text[sc.pos] in stop):
        raise sc.error(f"unexpected text {sc.text[sc.pos:sc.pos + 10]!r} after actions",
                       expected="',' or end of actions")
    return tuple(out)


def _int(sc: Scanner, text: str, pos: int, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise sc.error(f"{what}: {text!r} is not a number", pos=pos, expected="a number") from None


def _kv(sc: Scanner) -> dict[str, tuple[str, int]]:
    """Parse ``k=v,k=v`` up to ')' into {k: (v, pos)}."""
    out: dict[str, tuple[str, int]] = {}
    while not sc.peek(")"):
        if out:
            sc.expect(",")
        k = sc.ident()
        sc.expect("=")
        pos = sc.pos
        out[k] = (sc.until(",)"), pos)
    return out


def _parse_one(sc: Scanner) -> Action:
    pos = sc.pos
    if sc.pos < len(sc.text) and sc.text[sc.pos].isdigit():
        return Output(_int(sc, sc.until(",)"), pos, "output port"))
    name = sc.ident()
    try:
        return _parse_named(sc, name, pos)
    except ValidationError as e:
        raise sc.error(f"{name}: {e}", pos=pos) from None


_WITH_ARGS = frozenset({"push_vlan", "set", "recirc", "hash", "sample", "userspace", "ct"})


def _parse_named(sc: Scanner, name: str, pos: int) -> Action:
    if name == "pop_vlan":
        return PopVlan()
    if name == "dec_ttl":
        return DecTtl()
    if name == "ct_clear":
        return CtClear()
    if name == "ct" and not sc.peek("("):
        return Ct()
    if name not in _WITH_ARGS:
        raise sc.error(f"unknown action {name!r}", pos=pos, expected="an action")
    sc.expect("(")
    if name == "push_vlan":
        kv = _kv(sc)
        unknown = set(kv) - {"tpid", "vid", "pcp", "cfi"}
        if unknown:
            raise sc.error(f"push_vlan has no field {sorted(unknown)[0]!r}", pos=pos,
                           expected="tpid, vid or pcp")
        if "vid" not in kv:
            raise sc.error("push_vlan needs vid=", pos=pos, expected="vid=N")
        args = {k: _int(sc, v, p, f"push_vlan {k}") for k, (v, p) in kv.items() if k != "cfi"}
        act: Action = PushVlan(**args)
    elif name == "set":
        act = _parse_set(sc)
    elif name == "recirc":
        p = sc.pos
        act = Recirc(_int(sc, sc.until(")"), p, "recirc id"))
    elif name == "hash":
        alg = sc.ident()
        sc.expect("(")
        p = sc.pos
        act = Hash(_int(sc, sc.until(")"), p, "hash basis"), alg)
        sc.expect(")")
    elif name == "sample":
        sc.expect("sample=")
        p = sc.pos
        pct = sc.until("%")
        sc.expect("%")
        try:
            frac = float(pct) / 100
        except ValueError:
            raise sc.error(f"sample: {pct!r} is not a percentage", pos=p) from None
        if not 0 <= frac <= 1:
            raise sc.error("sample: percentage must be within 0..100", pos=p)
        sc.expect(",actions(")
        inner = parse_actions(sc, stop=")")
        sc.expect(")")
        act = Sample(round(frac * UINT32_MAX), inner)
    elif name == "userspace":
        sc.expect("pid=")
        p = sc.pos
        pid = _int(sc, sc.until(",)"), p, "userspace pid")
        data = b""
        if sc.accept(",userdata("):
            p = sc.pos
            try:
                data = bytes.fromhex(sc.until(")"))
            except ValueError:
                raise sc.error("userspace: userdata is not hex", pos=p) from None
            sc.expect(")")
        act = Userspace(pid, data)
    elif name == "ct":
        act = _parse_ct(sc)
    else:
        raise sc.error(f"unknown action {name!r}", pos=pos, expected="an action")
    sc.expect(")")
    return act


def _parse_set(sc: Scanner) -> SetField:
    gpos = sc.pos
    gname = sc.ident()
    g = GROUP_BY_NAME.get(gname)
    if g is None or g.scalar:
        raise sc.error(f"set of unknown header {gname!r}", pos=gpos, expected="a header group")
    sc.expect("(")
    attrs = dict(g.attrs)
    fields: list[tuple[str, int, int]] = []
    while not sc.peek(")"):
        if fields:
            sc.expect(",")
        apos = sc.pos
        attr = sc.ident()
        fname = attrs.get(attr)
        if fname is None:
            raise sc.error(f"{gname} has no field {attr!r}", pos=apos)
        f = BY_NAME[fname]
        if f.fmt is Fmt.FLAGS and sc.accept("("):
            text = sc.until(")")
            sc.expect(")")
        else:
            sc.expect("=")
            text = sc.until(",)")
        try:
            v, m = parse_value(f, text)
        except ValueError_ as e:
            raise sc.error(f"set {gname}({attr}): {e}", pos=apos) from None
        fields.append((fname, v, m))
    sc.expect(")")
    return SetField(gname, tuple(fields))


def _parse_ct(sc: Scanner) -> Ct:
    commit, zone, mark, nat = False, 0, None, None
    first = True
    while not sc.peek(")"):
        if not first:
            sc.expect(",")
        first = False
        pos = sc.pos
        word = sc.ident()
        if word == "commit":
            commit = True
        elif word == "zone":
            sc.expect("=")
            zone = _int(sc, sc.until(",)"), pos, "ct zone")
        elif word == "mark":
            sc.expect("=")
            v, _, m = sc.until(",)").partition("/")
            mark = (_int(sc, v, pos, "ct mark"), _int(sc, m, pos, "ct mark mask") if m
                    else 0xFFFFFFFF)
        elif word == "nat":
            nat = _parse_nat(sc)
        else:
            raise sc.error(f"ct has no option {word!r}", pos=pos,
                           expected="commit, zone=, mark= or nat")
    return Ct(commit, zone, mark, nat)


def _parse_nat(sc: Scanner) -> Nat:
    if not sc.accept("("):
        return Nat()
    pos = sc.pos
    kind = sc.ident()
    if kind not in ("src", "dst"):
        raise sc.error("nat kind must be src or dst", pos=pos, expected="src or dst")
    if sc.accept(")"):
        return Nat(kind)
    sc.expect("=")
    spec = sc.until(")")
    sc.expect(")")
    ports = None
    if spec.startswith("["):
        addrs, _, rest = spec[1:].partition("]")
        ports = rest[1:] if rest.startswith(":") else None
    elif spec.count(":") == 1:
        addrs, _, ports = spec.partition(":")
    else:
        addrs = spec
    amin, _, amax = addrs.partition("-")
    pmin = pmax = None
    if ports:
        a, _, b = ports.partition("-")
        pmin = _int(sc, a, pos, "nat port")
        pmax = _int(sc, b, pos, "nat port") if b else None
    return Nat(kind, amin or None, amax or None, pmin, pmax)
