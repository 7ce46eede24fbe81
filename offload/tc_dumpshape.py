"""Dump decoding by message shape: one ``struct.Struct`` per filter layout.

Theory of operation
-------------------
The filters of one megaflow mask dump as messages of one *shape*: the same
attributes, in the same order, with the same lengths, at the same offsets;
only values differ (addresses, ports, handles, counters, the cookie).  A
dump of a megaflow table has few shapes.

When ``tc_dumpfast`` has decoded a message, ``learn`` walks it once more
and compiles its shape: one ``struct.Struct`` that reads, in a single call,
every attribute header (as a u32), the literal payloads the decoding
depends on (TCA_KIND, each TCA_ACT_KIND) and every value the ``FilterDump``
needs (chain, each key, flags, in_hw_count, each action's parameters,
lastuse, counters and cookie), plus the recipe turning those values into the
result.  ``decode_message`` looks up the shapes learnt for the message's
length, reads the message with each one's Struct and takes the first whose
headers and literals equal the learnt ones.  Equal headers at equal offsets
make the same walk, so what remains per message is what depends on values:
the checks ``tc_dumpfast`` makes on them (prio, handle, a VLAN protocol, a
zero mask send the message down its path) and the conversions.

Only shapes ``tc_dumpfast`` reads with its own code are learnt (gact and
mirred actions; no TCA_FLOWER_INDEV); a message no shape fits goes through
``tc_dumpfast`` (and from there, if need be, the generic ``tc_decode``), so
every path gives the same value (tests/offload/test_tc_decode.py).  The
shape table is bounded (cleared when full).
"""

from __future__ import annotations

import operator
import socket
import struct
from typing import Any, Callable

from offload import tc_decode as D
from offload import tc_dumpfast as F
from offload import tc_nla as N
from offload import tc_values as V

_BE16 = "be16"
# integer atom -> struct code in native order (big-endian atoms are swapped after)
_CODE = {atom: fmt.lstrip("<>!=@") for atom, fmt in F._INT_ATOMS.items()}


def _swap16(v: int) -> int:
    return ((v & 0xFF) << 8) | (v >> 8)


def _mac(b: bytes) -> str:
    return b.hex(":")


def _ip4(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, b)


def _ip6(b: bytes) -> str:
    text = socket.inet_ntop(socket.AF_INET6, b)
    return F.ip6_text(b) if "." in text else text


# key attribute number -> (codes, converter or None, zero as read)
_KEY_READ: dict[int, tuple[str, Callable[[Any], Any] | None, Any]] = {}
for _num, (_name, _atom) in enumerate(N.FLOWER_ATTRS):
    if _num in F._KEYS:
        if _atom in _CODE:
            _KEY_READ[_num] = (_CODE[_atom], _swap16 if _atom == _BE16
                               else socket.ntohl if _atom == "be32" else None, 0)
        elif _atom == "l2addr":
            _KEY_READ[_num] = ("6s", _mac, b"\0" * 6)
        elif _atom == "ip4addr":
            _KEY_READ[_num] = ("4s", _ip4, b"\0" * 4)
        elif _atom == "ip6addr":
            _KEY_READ[_num] = ("16s", _ip6, b"\0" * 16)
_PARMS_CODES = {"gact": F._GACT_ST.format.lstrip("="), "mirred": F._MIRRED_ST.format.lstrip("=")}


class Shape:
    """One compiled message shape (see the module docstring)."""

    __slots__ = ("unpack", "check", "expected", "chain", "keys", "masks", "eth_type",
                 "flags", "classid", "in_hw_count", "actions")

    def __init__(self, fields: list[tuple[int, str, Any]], d: bytes, start: int) -> None:
        fmt, pos, index = "=", start, 0
        where: dict[Any, int] = {}
        checks: list[int] = []
        for off, codes, role in sorted(fields, key=lambda f: f[0]):
            if off < pos:
                raise ValueError("overlapping fields")
            fmt += f"{off - pos}x" if off > pos else ""
            fmt += codes
            size = struct.calcsize("=" + codes)
            if role == "check":
                checks.append(index)
            else:
                where[role] = index
            index += len(struct.unpack("=" + codes, b"\0" * size))
            pos = off + size
        st = struct.Struct(fmt)
        self.unpack = st.unpack_from
        self.check = operator.itemgetter(*checks)
        self.expected = self.check(self.unpack(d, start))
        self.chain = where.get(("chain",))
        key_nums = sorted(r[1] for r in where if r[0] == "key")
        for num in key_nums:  # canonical only: every key and mask with its partner
            if num in F._PARTNER and F._PARTNER[num] not in key_nums:
                raise ValueError("a key without its mask")
        self.keys = tuple((F._KEYS[num][0], where[("key", num)], _KEY_READ[num][1])
                          for num in key_nums)
        self.masks = tuple((where[("key", num)], _KEY_READ[num][2])
                           for num in key_nums if num in F._MASK_NUMS)
        self.eth_type = where.get(("key", F._ETH_TYPE))
        self.flags = where.get(("flags",))
        self.classid = where.get(("classid",))
        self.in_hw_count = where.get(("in_hw_count",))
        acts = []
        for role in where:
            if role[0] == "parms":
                _, prio, kind, nparms = role
                p = where[role]
                acts.append((prio, kind, p, p + nparms, where.get(("tm", prio)),
                             where.get(("basic", prio)), where.get(("hw", prio)),
                             where.get(("pkt64", prio)), where.get(("cookie", prio))))
        acts.sort(key=lambda a: a[0])
        self.actions = tuple(a[1:] for a in acts)


def learn(d: bytes, start: int, end: int) -> Shape | None:
    """The shape of a message ``tc_dumpfast`` decoded (None: not one we compile)."""
    fields: list[tuple[int, str, Any]] = []
    roles: set[Any] = set()

    def add(off: int, codes: str, role: Any) -> None:
        if role != "check":
            if role in roles:
                raise ValueError("duplicate")
            roles.add(role)
        fields.append((off, codes, role))

    def walk(s: int, e: int) -> list[tuple[int, int, int, int]]:
        out = []
        while s < e:
            length, num = F._NLAHDR(d, s)
            add(s, "I", "check")
            out.append((num & F._MASK, s + 4, s + length, s))
            s += (length + 3) & ~3
        return out

    try:
        for num, ps, pe, _ in walk(start + F._BODY, end):
            if num == F._T_KIND:
                add(ps, f"{pe - ps}s", "check")
            elif num == F._T_CHAIN:
                add(ps, "I", ("chain",))
            elif num == F._T_OPTIONS:
                _learn_options(d, ps, pe, walk, add)
            else:
                return None
        return Shape(fields, d, start)
    except (ValueError, KeyError, struct.error):
        return None


def _learn_options(d: bytes, s: int, e: int, walk: Any, add: Any) -> None:
    for num, ps, pe, _ in walk(s, e):
        if num in _KEY_READ:
            add(ps, _KEY_READ[num][0], ("key", num))
        elif num == F._F_FLAGS:
            add(ps, "I", ("flags",))
        elif num == F._F_CLASSID:
            add(ps, "I", ("classid",))
        elif num == F._F_IN_HW_COUNT:
            add(ps, "I", ("in_hw_count",))
        elif num == F._F_ACT:
            for prio, aps, ape, _ in walk(ps, pe):
                if prio > N.TCA_ACT_MAX_PRIO:
                    raise ValueError("skipped action")
                _learn_action(d, prio, aps, ape, walk, add)
        else:
            raise ValueError("attribute outside the shape")


def _learn_action(d: bytes, prio: int, s: int, e: int, walk: Any, add: Any) -> None:
    kind = None
    for num, ps, pe, _ in walk(s, e):
        if num == F._A_KIND:
            add(ps, f"{pe - ps}s", "check")
            kind = d[ps:pe].rstrip(b"\0").decode()
        elif num == F._A_OPTIONS:
            if kind not in _PARMS_CODES:
                raise ValueError("action kind without a compiled reader")
            tm_num, parms_num = F._SPECIAL[kind][0], F._SPECIAL[kind][1]
            for onum, ops, _, _ in walk(ps, pe):
                if onum == parms_num:
                    codes = _PARMS_CODES[kind]
                    add(ops, codes, ("parms", prio, kind, len(struct.unpack(
                        "=" + codes, b"\0" * struct.calcsize("=" + codes)))))
                elif onum == tm_num:
                    add(ops + 8 * F._LASTUSE, "Q", ("tm", prio))
        elif num == F._A_STATS:
            for snum, sps, _, _ in walk(ps, pe):
                if snum == F._S_BASIC:
                    add(sps, "QI", ("basic", prio))
                elif snum == F._S_BASIC_HW:
                    add(sps, "QI", ("hw", prio))
                elif snum == F._S_PKT64:
                    add(sps, "Q", ("pkt64", prio))
        elif num == F._A_COOKIE:
            add(ps, f"{pe - ps}s", ("cookie", prio))


# --- decoding ---------------------------------------------------------------------------

_SHAPES: dict[int, list[Shape]] = {}
_TRIES: dict[int, int] = {}  # message length -> shapes tried to learn
_SHAPES_MAX = 256
_PER_LENGTH = 4


class _Miss(Exception):
    """The shape fits, but a value needs tc_dumpfast's path."""


def decode_message(d: bytes, start: int = 0, end: int | None = None) -> V.FilterDump | None:
    """``tc_decode.decode_message`` of one raw message: by a learnt shape when
    one fits, else by ``tc_dumpfast`` (learning the message's shape)."""
    end = len(d) if end is None else end
    shapes = _SHAPES.get(end - start)
    fits = False
    if shapes:
        for known in shapes:
            try:
                vals = known.unpack(d, start)
            except struct.error:
                continue
            if known.check(vals) == known.expected:
                fits = True
                try:
                    return _decode(known, vals, d, start)
                except Exception:  # noqa: BLE001 -- a value for tc_dumpfast's checks
                    break
    try:
        got = F._decode(d, start, end)
    except Exception:  # noqa: BLE001 -- not the fast path's shape: nothing to learn
        return D.decode_message(d, start, end)  # F would only run _decode again first
    length = end - start
    if not fits and _TRIES.get(length, 0) < _PER_LENGTH:  # learn at most a few per length
        if len(_TRIES) >= _SHAPES_MAX:
            _SHAPES.clear()
            _TRIES.clear()
        _TRIES[length] = _TRIES.get(length, 0) + 1
        shape = learn(d, start, end)
        if shape is not None:
            _SHAPES.setdefault(length, []).append(shape)
    return got


_TCMSG = F._TCMSG
_HDR = F._HDR
_TICK = F._TICK
_value = F._value
_ZERO = F._ZERO


def _decode(shape: Shape, vals: tuple[Any, ...], d: bytes, start: int) -> V.FilterDump:
    _, _, _, index, handle, parent, info = _TCMSG(d, start + _HDR)
    protocol = socket.ntohs(info & 0xFFFF)
    prio = info >> 16
    if not handle or not prio or protocol in N.VLAN_TPIDS:
        raise _Miss
    if shape.eth_type is not None and _swap16(vals[shape.eth_type]) in N.VLAN_TPIDS:
        raise _Miss  # ETH_TYPE 802.1Q/802.1ad without that protocol: the checked path
    for i, zero in shape.masks:
        if vals[i] == zero:
            raise _Miss
    keys = tuple((name, conv(vals[i]) if conv is not None else vals[i])
                 for name, i, conv in shape.keys)
    actions = []
    stats = []
    cookie = b""
    for kind, p0, p1, tm, basic, hw, pkt64, ck in shape.actions:
        actions.append(F._SPECIAL[kind][4](vals[p0:p1]))
        stats.append(_value(
            V.TcStats,
            packets=vals[pkt64] if pkt64 is not None else (vals[basic + 1] if basic is not None else 0),
            bytes=vals[basic] if basic is not None else 0,
            hw_packets=vals[hw + 1] if hw is not None else 0,
            hw_bytes=vals[hw] if hw is not None else 0,
            idle_ms=vals[tm] * 1000 // _TICK if tm is not None else None))
        if not cookie and ck is not None:
            cookie = vals[ck]
    flags = vals[shape.flags] if shape.flags is not None else 0
    f = V.FlowerFilter.trusted(
        ifindex=index, prio=prio, handle=handle, keys=keys, actions=tuple(actions),
        chain=vals[shape.chain] if shape.chain is not None else 0, protocol=protocol,
        flags=flags & N.POLICY_FLAGS, cookie=cookie,
        classid=vals[shape.classid] if shape.classid is not None else None, parent=parent)
    st = tuple(stats)
    return _value(
        V.FilterDump, filter=f, stats=st[0] if st else V.TcStats(), action_stats=st,
        in_hw=bool(flags & N.TCA_CLS_FLAGS_IN_HW),
        not_in_hw=bool(flags & N.TCA_CLS_FLAGS_NOT_IN_HW),
        in_hw_count=vals[shape.in_hw_count] if shape.in_hw_count is not None else 0,
        unsupported=())
