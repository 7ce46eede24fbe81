"""Fast path of the filter dump: one RTM_NEWTFILTER message straight to a
``FilterDump``.

Theory of operation
-------------------
``tc_decode`` turns a message into an ``Attrs`` view (a (name, value) pair
per attribute, a view per nest) and ``tc_values.decode_filter`` reads that
view and builds the values through their validating constructors, which
re-canonicalise every key.  Per dumped filter that is most of a dump's cost.

This module reads the *shape the kernel dumps* directly: the top level
(TCA_KIND, TCA_CHAIN, TCA_OPTIONS), the flower options (keys, flags,
classid, in_hw_count, actions), each action (kind, options, index, stats,
cookie, the bitfield32 attributes) and its stats nest.  Flower keys are
decoded by a table lookup per attribute number straight into the final
value (int, MAC text, address text), with one precompiled ``struct.Struct``
per fixed size.  gact and mirred options (what flowpath installs most) are
read by specialised code; any other action kind goes through
``tc_decode``'s generic tables and the kind's own ``from_options``.

Keys the kernel dumps are canonical already (each maskable key with its
non-zero mask, values in the atom's width, addresses as inet_ntop prints
them), so the filter is built with ``FlowerFilter.trusted`` -- no
re-validation -- after cheap checks that this holds: key/mask pairs
complete, masks non-zero, IPv6 text without a dotted quad, the filter's
own limits (prio, action count, cookie size).  A key set that fails them
goes through ``tc_values.canonical_keys`` (which canonicalises or raises
exactly as the validated path does).

Anything else -- an attribute outside that shape, a duplicate, a length
that does not fit exactly, a header cut short, a kind given after its
options -- abandons the fast path for the message, and the generic path
(``tc_decode.decode_message``) decodes it, or raises the ``OffloadError``
naming the attribute and offset.  So both paths give the same result on
every input; tests/offload/test_tc_decode.py checks that on the shared
cases, on hypothesis input and, in the kernel tier, on real dumps.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from pyroute2.netlink import nla

from offload import tc_decode as D
from offload import tc_nla as N
from offload import tc_values as V


class _Fallback(Exception):
    """Not the shape the fast path reads: decode the message generically."""


_NLAHDR = D.NLAHDR.unpack_from
_TCMSG = D.TCMSG.unpack_from
_HDR = D.NLMSGHDR.size
_BODY = D.NLMSGHDR.size + D.TCMSG.size
_MASK = D.NLA_TYPE_MASK


def _num(cls: Any, name: str) -> int:
    for i, entry in enumerate(cls.nla_map):
        num, n = (i, entry[0]) if len(entry) == 2 else (entry[0], entry[1])
        if n == name:
            return num
    raise KeyError(name)


def _min_size(table: D.Table) -> dict[int, int]:
    """Attribute number -> the payload size its generic decoder needs, for
    the attributes a fast reader skips (nests and dynamic ones excluded:
    skipping those would hide a malformed payload, so they fall back)."""
    out = {}
    for num, (_, dec) in table.slots.items():
        if dec is None or isinstance(dec, D.Table):
            continue
        try:
            dec(b"", 0, 0)
            out[num] = 0
        except D._Short as exc:
            out[num] = exc.args[0]
        except (ValueError, UnicodeDecodeError):
            pass
    return out


# --- top level and flower options ------------------------------------------------------

_T_KIND = _num(N.tcmsg_flower, "TCA_KIND")
_T_OPTIONS = _num(N.tcmsg_flower, "TCA_OPTIONS")
_T_CHAIN = _num(N.tcmsg_flower, "TCA_CHAIN")
_FLOWER = b"flower\0"

_K_INT, _K_MAC, _K_IP4, _K_IP6, _K_STR = range(5)
_KIND_CODE = {"mac": (_K_MAC, 6), "ip4": (_K_IP4, 4), "ip6": (_K_IP6, 16), "str": (_K_STR, 0)}
# integer atom -> its struct format (pyroute2's atom class; native order unless it says)
_INT_ATOMS = {atom: (fmt if fmt[0] in "<>!=@" else "=" + fmt)
              for atom, kind in N.ATOM_KIND.items() if isinstance(kind, int)
              for fmt in (getattr(nla, atom).fields[0][1],)}

# attribute number -> (name, code, size, unpack or None) for every key attribute
_KEYS: dict[int, tuple[str, int, int, Any]] = {}
for _n, (_name, _atom) in enumerate(N.FLOWER_ATTRS):
    if _name in N.FLOWER_KEY_ATTRS:
        if _atom in _INT_ATOMS:
            _st = struct.Struct(_INT_ATOMS[_atom])
            _KEYS[_n] = (_name, _K_INT, _st.size, _st.unpack_from)
        else:
            _code, _size = _KIND_CODE[str(N.ATOM_KIND[_atom])]
            _KEYS[_n] = (_name, _code, _size, None)
_NUM = {name: n for n, (name, _) in enumerate(N.FLOWER_ATTRS)}
# key number <-> mask number (the partner each one needs), masks apart
_PARTNER: dict[int, int] = {}
for _key, _mask in N.MASK_OF.items():
    _PARTNER[_NUM[_key]], _PARTNER[_NUM[_mask]] = _NUM[_mask], _NUM[_key]
_MASK_NUMS = frozenset(_NUM[m] for m in N.MASK_ATTRS)
# an all-zero mask as each key kind decodes it (0, "00:00:00:00:00:00", "0.0.0.0", "::")
_ZERO = frozenset(D.ATOM_DECODERS[atom](bytes(16), 0, 16) for atom in N.ATOM_KIND
                  if atom != "asciiz")
_F_ACT = _NUM["TCA_FLOWER_ACT"]
_F_FLAGS = _NUM["TCA_FLOWER_FLAGS"]
_F_CLASSID = _NUM["TCA_FLOWER_CLASSID"]
_F_IN_HW_COUNT = _NUM["TCA_FLOWER_IN_HW_COUNT"]
_ETH_TYPE = _NUM["TCA_FLOWER_KEY_ETH_TYPE"]
def ip6_text(b: bytes) -> str:
    """An IPv6 address as ``tc_values`` canonicalises it: ipaddress's text,
    which never writes a dotted quad (inet_ntop does, for ::ffff:a.b.c.d)."""
    return ipaddress.IPv6Address(b).compressed


_U32 = struct.Struct("=I").unpack_from
_U64 = struct.Struct("=Q").unpack_from
_NTOP = socket.inet_ntop
_AF4, _AF6 = socket.AF_INET, socket.AF_INET6


# --- actions ----------------------------------------------------------------------------

_A_KIND = _num(N.tca_act, "TCA_ACT_KIND")
_A_OPTIONS = _num(N.tca_act, "TCA_ACT_OPTIONS")
_A_STATS = _num(N.tca_act, "TCA_ACT_STATS")
_A_COOKIE = _num(N.tca_act, "TCA_ACT_COOKIE")
_A_SKIP = _min_size(D._TABLES[N.tca_act])  # INDEX, PAD, FLAGS, HW_STATS...: size checks only

_S_BASIC = _num(N.stats2, "TCA_STATS_BASIC")
_S_BASIC_HW = _num(N.stats2, "TCA_STATS_BASIC_HW")
_S_PKT64 = _num(N.stats2, "TCA_STATS_PKT64")
_S_SKIP = _min_size(D._TABLES[N.stats2])
_BASIC = struct.Struct("=" + "".join(fmt for _, fmt in N.stats2.basic.fields))  # bytes, packets
_TCF_T = struct.Struct("=" + "".join(f for _, f in N.tcf_t.fields))
_LASTUSE = [n for n, _ in N.tcf_t.fields].index("lastuse")
_TICK = V.CLK_TCK


def _parms(cls: Any) -> tuple[struct.Struct, dict[str, int]]:
    fields = cls.fields
    return (struct.Struct("=" + "".join(f for _, f in fields)),
            {n: i for i, (n, _) in enumerate(fields)})


# kind -> (TM number, PARMS number, PARMS struct, skip sizes, builder of the action
# from the unpacked PARMS tuple); other kinds use the generic tables.
# Action values are frozen, so one instance per distinct parameter set serves
# every filter (a megaflow table outputs to few ports); bounded, cleared when full.
_ACTION_CACHE: dict[tuple[Any, ...], V.TcAction] = {}
_CACHE_MAX = 4096


def _cached(key: tuple[Any, ...], make: Any, *args: Any) -> V.TcAction:
    action = _ACTION_CACHE.get(key)
    if action is None:
        action = make(*args)
        if len(_ACTION_CACHE) >= _CACHE_MAX:
            _ACTION_CACHE.clear()
        _ACTION_CACHE[key] = action
    return action


def _gact(p: tuple[int, ...]) -> V.TcAction:
    control = p[_GACT_IDX["action"]]
    return _cached(("gact", control), V.Gact, control)


def _mirred(p: tuple[int, ...]) -> V.TcAction:
    ifindex, eaction, control = (p[_MIRRED_IDX["ifindex"]], p[_MIRRED_IDX["eaction"]],
                                 p[_MIRRED_IDX["action"]])
    return _cached(("mirred", ifindex, eaction, control), V.Mirred, ifindex, eaction, control)


def _value(cls: type, **fields: Any) -> Any:
    """A frozen dataclass without running its __init__ (no validation: the
    caller has checked), for the per-filter values."""
    obj: Any = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


_GACT_ST, _GACT_IDX = _parms(N.tc_gen_parms)
_MIRRED_ST, _MIRRED_IDX = _parms(N.act_mirred.tc_mirred)
_SPECIAL: dict[str, tuple[int, int, struct.Struct, dict[int, int], Any]] = {}
for _kind, _cls, _st, _build in (("gact", N.act_gact, _GACT_ST, _gact),
                                 ("mirred", N.act_mirred, _MIRRED_ST, _mirred)):
    _pre = N.ACTION_PREFIX[_kind]
    _tm, _pa = _num(_cls, _pre + "_TM"), _num(_cls, _pre + "_PARMS")
    _skip = {k: v for k, v in _min_size(D.ACTION_TABLES[_kind]).items() if k not in (_tm, _pa)}
    _SPECIAL[_kind] = (_tm, _pa, _st, _skip, _build)


def _stats(d: bytes, s: int, e: int) -> tuple[int, int, int, int]:
    """(packets, bytes, hw packets, hw bytes) of a TCA_ACT_STATS nest."""
    basic = hw = pkt64 = None
    while s < e:
        if e - s < 4:
            raise _Fallback
        length, num = _NLAHDR(d, s)
        num &= _MASK
        ps, pe = s + 4, s + length
        if length < 4 or pe > e:
            raise _Fallback
        if num == _S_BASIC or num == _S_BASIC_HW:
            if length - 4 < 12:
                raise _Fallback
            if num == _S_BASIC:
                if basic is None:
                    basic = _BASIC.unpack_from(d, ps)
            elif hw is None:
                hw = _BASIC.unpack_from(d, ps)
        elif num == _S_PKT64:
            if length - 4 < 8:
                raise _Fallback
            if pkt64 is None:
                pkt64 = _U64(d, ps)[0]
        elif length - 4 < _S_SKIP.get(num, 1 << 30):
            raise _Fallback  # unknown (the generic path names it) or too short
        s += (length + 3) & ~3
    return (pkt64 if pkt64 is not None else (basic[1] if basic else 0),
            basic[0] if basic else 0, hw[1] if hw else 0, hw[0] if hw else 0)


def _options(kind: str, d: bytes, s: int, e: int) -> tuple[V.TcAction, int | None]:
    """The action of ``kind`` from its TCA_ACT_OPTIONS payload, and its
    idle_ms (None without a tcf_t)."""
    special = _SPECIAL.get(kind)
    if special is None:  # the generic tables and the kind's from_options
        table = D.ACTION_TABLES.get(kind)
        if table is None:
            return V.UnknownAction(kind), None
        opts = D.Attrs(table.decode(d, s, e))
        decoder = V.ACTION_DECODERS.get(kind)
        action = decoder(opts) if decoder else V.UnknownAction(kind)
        tm = opts.get_attr(N.ACTION_PREFIX[kind] + "_TM")
        return action, (tm["lastuse"] * 1000 // _TICK if tm is not None else None)
    tm_num, parms_num, parms_st, skip, build = special
    parms = lastuse = None
    while s < e:
        if e - s < 4:
            raise _Fallback
        length, num = _NLAHDR(d, s)
        num &= _MASK
        ps, pe = s + 4, s + length
        if length < 4 or pe > e:
            raise _Fallback
        if num == parms_num:
            if length - 4 < parms_st.size:
                raise _Fallback
            if parms is None:
                parms = parms_st.unpack_from(d, ps)
        elif num == tm_num:
            if length - 4 < _TCF_T.size:
                raise _Fallback
            if lastuse is None:
                lastuse = _TCF_T.unpack_from(d, ps)[_LASTUSE]
        elif length - 4 < skip.get(num, 1 << 30):
            raise _Fallback
        s += (length + 3) & ~3
    if parms is None:
        raise _Fallback  # the generic path raises the from_options error
    return build(parms), (lastuse * 1000 // _TICK if lastuse is not None else None)


def _action(d: bytes, s: int, e: int) -> tuple[V.TcAction, V.TcStats, bytes]:
    kind = None
    action: V.TcAction | None = None
    idle: int | None = None
    counters = (0, 0, 0, 0)
    cookie = None
    seen_stats = False
    while s < e:
        if e - s < 4:
            raise _Fallback
        length, num = _NLAHDR(d, s)
        num &= _MASK
        ps, pe = s + 4, s + length
        if length < 4 or pe > e:
            raise _Fallback
        if num == _A_KIND:
            if kind is None:
                kind = d[ps:pe].rstrip(b"\0").decode("utf-8")
        elif num == _A_OPTIONS:
            if kind is None or action is not None:
                raise _Fallback
            action, idle = _options(kind, d, ps, pe)
        elif num == _A_STATS:
            if not seen_stats:
                counters = _stats(d, ps, pe)
                seen_stats = True
        elif num == _A_COOKIE:
            if cookie is None:
                cookie = bytes(d[ps:pe])
        elif length - 4 < _A_SKIP.get(num, 1 << 30):
            raise _Fallback
        s += (length + 3) & ~3
    if action is None:
        raise _Fallback  # no options: the generic path decides
    packets, nbytes, hw_packets, hw_bytes = counters
    stats = _value(V.TcStats, packets=packets, bytes=nbytes, hw_packets=hw_packets,
                   hw_bytes=hw_bytes, idle_ms=idle)
    return action, stats, cookie or b""


def _actions(d: bytes, s: int, e: int) -> list[tuple[int, V.TcAction, V.TcStats, bytes]]:
    out = []
    top = N.TCA_ACT_MAX_PRIO
    while s < e:
        if e - s < 4:
            raise _Fallback
        length, num = _NLAHDR(d, s)
        num &= _MASK
        if length < 4 or s + length > e:
            raise _Fallback
        if num <= top:  # others: skipped, as the generic path skips them
            out.append((num, *_action(d, s + 4, s + length)))
        s += (length + 3) & ~3
    out.sort(key=lambda a: a[0])
    return out


# --- the message ------------------------------------------------------------------------


def decode_message(d: bytes, start: int = 0, end: int | None = None) -> V.FilterDump | None:
    """``tc_decode.decode_message`` of one raw message, fast when it has the
    kernel's shape (see the module docstring), else by the generic path."""
    end = len(d) if end is None else end
    try:
        return _decode(d, start, end)
    except Exception:  # noqa: BLE001 -- whatever it is, the generic path decides
        return D.decode_message(d, start, end)


def _decode(d: bytes, start: int, end: int) -> V.FilterDump | None:
    if end - start < _BODY:
        raise _Fallback
    _, _, _, index, handle, parent, info = _TCMSG(d, start + _HDR)
    flower = False
    chain = None
    opts_at: tuple[int, int] | None = None
    s = start + _BODY
    while s < end:
        if end - s < 4:
            raise _Fallback
        length, num = _NLAHDR(d, s)
        num &= _MASK
        ps, pe = s + 4, s + length
        if length < 4 or pe > end:
            raise _Fallback
        if num == _T_KIND:
            flower = d[ps:pe] == _FLOWER  # exactly "flower\0", else generic
            if not flower:
                raise _Fallback
        elif num == _T_CHAIN:
            if length != 8 or chain is not None:
                raise _Fallback
            chain = _U32(d, ps)[0]
        elif num == _T_OPTIONS:
            if not flower or opts_at is not None:
                raise _Fallback
            opts_at = (ps, pe)
        else:
            raise _Fallback
        s += (length + 3) & ~3
    if not flower or not handle or opts_at is None:
        raise _Fallback
    return _filter(d, opts_at[0], opts_at[1], index, handle, parent, info, chain or 0)


def _filter(d: bytes, s: int, e: int, index: int, handle: int, parent: int, info: int,
            chain: int) -> V.FilterDump:
    keys: dict[int, V.Value] = {}
    flags = classid = in_hw_count = None
    acts: list[tuple[int, V.TcAction, V.TcStats, bytes]] | None = None
    table = _KEYS
    ntop = _NTOP
    while s < e:
        if e - s < 4:
            raise _Fallback
        length, num = _NLAHDR(d, s)
        num &= _MASK
        ps = s + 4
        size = length - 4
        if size < 0 or ps + size > e:
            raise _Fallback
        slot = table.get(num)
        if slot is not None:
            _, code, want, unpack = slot
            if code == _K_INT:
                if size != want:
                    raise _Fallback
                keys[num] = unpack(d, ps)[0]
            elif code == _K_MAC:
                if size != 6:
                    raise _Fallback
                keys[num] = d[ps:ps + 6].hex(":")
            elif code == _K_IP4:
                if size != 4:
                    raise _Fallback
                keys[num] = ntop(_AF4, d[ps:ps + 4])
            elif code == _K_IP6:
                if size != 16:
                    raise _Fallback
                text = ntop(_AF6, d[ps:ps + 16])
                keys[num] = ip6_text(d[ps:ps + 16]) if "." in text else text
            else:
                keys[num] = d[ps:ps + size].rstrip(b"\0").decode("utf-8")
        elif num == _F_ACT:
            if acts is not None:
                raise _Fallback
            acts = _actions(d, ps, ps + size)
        elif num == _F_FLAGS or num == _F_CLASSID or num == _F_IN_HW_COUNT:
            if size != 4:
                raise _Fallback
            value = _U32(d, ps)[0]
            if num == _F_FLAGS:
                if flags is not None:
                    raise _Fallback
                flags = value
            elif num == _F_CLASSID:
                if classid is not None:
                    raise _Fallback
                classid = value
            else:
                if in_hw_count is not None:
                    raise _Fallback
                in_hw_count = value
        else:
            raise _Fallback  # unsupported attribute: the generic path lists it
        s += (length + 3) & ~3
    protocol = socket.ntohs(info & 0xFFFF)
    prio = info >> 16
    actions = tuple(a[1] for a in acts) if acts else ()
    stats = tuple(a[2] for a in acts) if acts else ()
    cookie = next((a[3] for a in acts if a[3]), b"") if acts else b""
    if (not prio or len(actions) > N.TCA_ACT_MAX_PRIO or len(cookie) > N.TC_COOKIE_MAX_SIZE):
        raise _Fallback  # the validated path raises the ValidationError
    if protocol in N.VLAN_TPIDS:  # the kernel dumps the inner ethertype there
        keys[_ETH_TYPE] = protocol
    ordered = sorted(keys.items())
    partner = _PARTNER
    regular = not (keys.get(_ETH_TYPE) in N.VLAN_TPIDS and protocol not in N.VLAN_TPIDS)
    for num, value in ordered:
        p = partner.get(num)
        if p is not None and (p not in keys or (num in _MASK_NUMS and value in _ZERO)):
            regular = False
            break
    named = tuple((table[num][0], value) for num, value in ordered)
    if not regular:
        named = V.canonical_keys(named, protocol)
    f = V.FlowerFilter.trusted(
        ifindex=index, prio=prio, handle=handle, keys=named, actions=actions, chain=chain,
        protocol=protocol, flags=(flags or 0) & N.POLICY_FLAGS, cookie=cookie,
        classid=classid, parent=parent)
    fl = flags or 0
    return _value(
        V.FilterDump, filter=f, stats=stats[0] if stats else V.TcStats(), action_stats=stats,
        in_hw=bool(fl & N.TCA_CLS_FLAGS_IN_HW), not_in_hw=bool(fl & N.TCA_CLS_FLAGS_NOT_IN_HW),
        in_hw_count=in_hw_count or 0, unsupported=())
