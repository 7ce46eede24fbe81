"""Terse filter dumps: the counters, flags and cookie of every flower filter,
without its keys or action options.

Theory of operation
-------------------
Since Linux 5.7 an RTM_GETTFILTER dump request may carry TCA_DUMP_FLAGS
(an nla_bitfield32) with TCA_DUMP_FLAGS_TERSE.  Flower then dumps per filter
only (6.1: cls_api.c ``tcf_fill_node``, cls_flower.c ``fl_terse_dump``,
act_api.c ``tcf_action_dump_terse``; the kernel tier checks it on real
dumps)::

    nlmsghdr, tcmsg (ifindex, handle, info = prio << 16 | htons(protocol))
    TCA_KIND "flower", TCA_CHAIN
    TCA_OPTIONS
      TCA_FLOWER_FLAGS      (if non-zero: skip_hw/skip_sw, in_hw/not_in_hw)
      TCA_FLOWER_ACT
        TCA_ACT_PRIO_n      TCA_ACT_KIND, TCA_ACT_STATS (BASIC, BASIC_HW,
                            QUEUE [, PKT64] [, RATE_EST]), TCA_ACT_COOKIE

-- no keys, no action options, so no tcf_t: no lastuse.  A message is about
half of the full one and needs no key decoding: what a revalidator needs
when it holds the keys already (``OffloadDatapath.dump``).  Its counters
follow ``FilterDump.stats`` (those of the first action, TCA_STATS_PKT64
over the 32-bit BASIC packets) and its cookie ``FilterDump.filter.cookie``
(the first action cookie).

Kernel quirks (6.1, seen in the VM): each priority starts with a header
message (handle 0, no TCA_OPTIONS), as in a full dump.  A classifier without
a terse dump is skipped (matchall: its header only) or ends the dump with
EMSGSIZE after the filters before it (u32; ``tc -brief`` then says "Dump
terminated").  ``TcNetlink.dump_stats`` raises that as OffloadError; a dump
of one (chain, prio) never reaches the other classifier (the kernel skips
other priorities before walking them).

Decoding, by message shape (as ``tc_dumpshape``): the first message of a
layout is walked generically -- every length checked; malformed input raises
OffloadError naming the attribute and its byte offset -- and the walk
records where each value lies.  That compiles into one ``struct.Struct``
reading every attribute header, the "flower" kind and the values at once.
A later message of the same length is read with one ``unpack_from``; if
its headers and kind equal the recorded ones, the walk would be the same,
so the values are taken by position.  Otherwise it is walked (and its shape
learnt).  The walk itself reads its values through the shape it compiled,
so both ways give the same value.  The shape table is bounded.

``TerseFilter`` is a NamedTuple -- immutable, built from the unpacked values
with one ``tuple.__new__`` (0.4 us on the host against 3.6 us for a frozen
dataclass of 11 fields: it is made once per filter in dumps of tens of
thousands).
"""

from __future__ import annotations

import operator
import socket
import struct
from typing import Any, Callable, NamedTuple

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, nla
from pyroute2.netlink.rtnl import RTM_GETTFILTER

from offload import tc_decode as D
from offload import tc_nla as N
from offload import tc_values as V
from offload import tc_wire as W


class TerseFilter(NamedTuple):
    """One flower filter of a terse dump: who it is, its flags, its cookie
    and its counters (totals and the hardware part, as ``TcStats``)."""

    ifindex: int
    chain: int
    prio: int
    protocol: int
    handle: int
    flags: int  # TCA_FLOWER_FLAGS as dumped: policy bits and IN_HW / NOT_IN_HW
    cookie: bytes
    packets: int
    bytes: int
    hw_packets: int
    hw_bytes: int

    @property
    def in_hw(self) -> bool:
        return bool(self.flags & N.TCA_CLS_FLAGS_IN_HW)

    @property
    def not_in_hw(self) -> bool:
        return bool(self.flags & N.TCA_CLS_FLAGS_NOT_IN_HW)

    @property
    def ident(self) -> tuple[int, int, int, int]:
        """(ifindex, chain, prio, handle), as ``FlowerFilter.ident``."""
        return (self.ifindex, self.chain, self.prio, self.handle)

    @property
    def stats(self) -> V.TcStats:
        """The counters as ``FilterDump.stats`` has them (idle_ms unknown)."""
        return V.TcStats(self.packets, self.bytes, self.hw_packets, self.hw_bytes, None)


# --- the request ------------------------------------------------------------------------

_TERSE = {"value": N.TCA_DUMP_FLAGS_TERSE, "selector": N.TCA_DUMP_FLAGS_TERSE}


def dump_request(ifindex: int, chain: int | None, prio: int, seq: int, pid: int = 0,
                 parent: int = N.TC_H_INGRESS_PARENT, terse: bool = True) -> bytes:
    """An RTM_GETTFILTER dump request, terse unless ``terse`` is False, for
    the filters under ``parent`` of ``ifindex``: every chain (``chain``
    None) or one, every priority (``prio`` 0) or one."""
    attrs: list[list[Any]] = [] if chain is None else [["TCA_CHAIN", chain]]
    if terse:
        attrs.append(["TCA_DUMP_FLAGS", _TERSE])
    body = W.TCMSG_NEST.encode(attrs)
    return W.header(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, seq, pid, ifindex, 0, parent,
                    prio, 0, len(body)) + body


# --- attribute numbers (from tc_nla's tables, through tc_decode's compiled ones) -------------


def _names(table: D.Table) -> dict[int, str]:
    return {num: name for num, (name, _) in table.slots.items()}


_TOP = _names(D.TOP)
_FLOWER = _names(D.FLOWER)
_ACT_PRIO = _names(D._TABLES[N.tca_act_prio])
_ACT = _names(D._TABLES[N.tca_act])
_STATS = _names(D._TABLES[N.stats2])


def _num(names: dict[int, str], name: str) -> int:
    return next(num for num, n in names.items() if n == name)


_T_KIND, _T_CHAIN, _T_OPTIONS = (_num(_TOP, n) for n in ("TCA_KIND", "TCA_CHAIN", "TCA_OPTIONS"))
_F_FLAGS, _F_ACT = _num(_FLOWER, "TCA_FLOWER_FLAGS"), _num(_FLOWER, "TCA_FLOWER_ACT")
_A_STATS, _A_COOKIE = _num(_ACT, "TCA_ACT_STATS"), _num(_ACT, "TCA_ACT_COOKIE")
_S_BASIC, _S_BASIC_HW, _S_PKT64 = (_num(_STATS, n) for n in (
    "TCA_STATS_BASIC", "TCA_STATS_BASIC_HW", "TCA_STATS_PKT64"))
_FLOWER_KIND = b"flower\0"

_BASIC_SIZE = struct.calcsize("=" + "".join(fmt for _, fmt in N.stats2.basic.fields))
_PKT64_SIZE = struct.calcsize("=" + nla.uint64.fields[0][1])
_IFINDEX_AT = D.NLMSGHDR.size + 4  # tcmsg: family, pad1, pad2, ifindex, handle, parent, info
_HANDLE_AT = D.NLMSGHDR.size + 8
_INFO_AT = D.NLMSGHDR.size + 16
_BODY = D.NLMSGHDR.size + D.TCMSG.size

# The values a shape reads, in this order (then turned into a TerseFilter).
_ROLES = ("ifindex", "handle", "info", "chain", "flags", "cookie", "packets", "bytes",
          "hw_packets", "hw_bytes")
_DEFAULT = {"chain": 0, "flags": 0, "cookie": b"", "packets": 0, "bytes": 0,
            "hw_packets": 0, "hw_bytes": 0}
_DEFAULTS = (0, b"")  # appended to the unpacked values: where absent roles point


# --- the generic walk: validates and says where every value lies -----------------------------

Field = tuple[int, str, str]  # (offset, struct code, role or "check")


def _attrs(d: bytes, s: int, e: int, where: str, names: dict[int, str], fields: list[Field]
           ) -> list[tuple[int, int, int]]:
    """(number, payload start, payload end) of the attributes in d[s:e] (the
    payload of ``where``), each header recorded as a check; OffloadError on
    one that does not fit."""
    out = []
    unpack = D.NLAHDR.unpack_from
    while s < e:
        if e - s < 4:
            raise D.malformed(f"{e - s} trailing bytes, too short for an attribute header",
                              where, s)
        length, num = unpack(d, s)
        num &= D.NLA_TYPE_MASK
        if length < 4 or s + length > e:
            raise D.malformed(f"attribute length {length} runs past its container "
                              f"({e - s} bytes left)", names.get(num, where), s)
        fields.append((s, "I", "check"))
        out.append((num, s + 4, s + length))
        s += (length + 3) & ~3
    return out


def _need(names: dict[int, str], num: int, ps: int, pe: int, size: int) -> None:
    if pe - ps < size:
        raise D.malformed(f"payload of {pe - ps} bytes, needs {size}", names[num], ps - 4)


def _walk(d: bytes, start: int, end: int) -> list[Field] | None:
    """Where the values of the message at d[start:end] lie (None: not a
    flower filter message); OffloadError if it is malformed."""
    if end - start < _BODY:
        raise D.malformed(f"message of {end - start} bytes, shorter than nlmsghdr + tcmsg",
                          "tcmsg", start)
    fields: list[Field] = [(start + _IFINDEX_AT, "i", "ifindex"),
                           (start + _HANDLE_AT, "I", "handle"), (start + _INFO_AT, "I", "info")]
    roles: set[str] = set()

    def value(off: int, code: str, role: str) -> None:
        if role not in roles:  # a duplicate attribute: the first one counts
            roles.add(role)
            fields.append((off, code, role))

    kind = None
    for num, ps, pe in _attrs(d, start + _BODY, end, "tcmsg", _TOP, fields):
        if num == _T_KIND:
            if kind is None:
                kind = bytes(d[ps:pe])
                fields.append((ps, f"{pe - ps}s", "check"))
        elif num == _T_CHAIN:
            _need(_TOP, num, ps, pe, 4)
            value(ps, "I", "chain")
        elif num == _T_OPTIONS and kind == _FLOWER_KIND and "options" not in roles:
            roles.add("options")
            _options(d, ps, pe, fields, value)
    return fields if kind == _FLOWER_KIND else None


def _options(d: bytes, s: int, e: int, fields: list[Field],
             value: Callable[[int, str, str], None]) -> None:
    actions: list[tuple[int, int, int]] | None = None
    for num, ps, pe in _attrs(d, s, e, "TCA_OPTIONS", _FLOWER, fields):
        if num == _F_FLAGS:
            _need(_FLOWER, num, ps, pe, 4)
            value(ps, "I", "flags")
        elif num == _F_ACT and actions is None:
            actions = [a for a in _attrs(d, ps, pe, "TCA_FLOWER_ACT", _ACT_PRIO, fields)
                       if a[0] in _ACT_PRIO]
    for i, (_, ps, pe) in enumerate(sorted(actions or ())):  # by position
        counted = i > 0  # the counters are the first action's (its first TCA_ACT_STATS)
        for num, aps, ape in _attrs(d, ps, pe, "TCA_ACT_PRIO", _ACT, fields):
            if num == _A_COOKIE and ape > aps:
                value(aps, f"{ape - aps}s", "cookie")
            elif num == _A_STATS and not counted:
                counted = True
                _stats(d, aps, ape, fields, value)


def _stats(d: bytes, s: int, e: int, fields: list[Field],
           value: Callable[[int, str, str], None]) -> None:
    for num, ps, pe in _attrs(d, s, e, "TCA_ACT_STATS", _STATS, fields):
        if num == _S_BASIC or num == _S_BASIC_HW:
            _need(_STATS, num, ps, pe, _BASIC_SIZE)
            hw = "hw_" if num == _S_BASIC_HW else ""
            value(ps, "Q", hw + "bytes")
            value(ps + 8, "I", hw + "basic_packets")
        elif num == _S_PKT64:
            _need(_STATS, num, ps, pe, _PKT64_SIZE)
            value(ps, "Q", "pkt64")


# --- shapes --------------------------------------------------------------------------------


class Shape:
    """One compiled message layout (see the module docstring)."""

    __slots__ = ("unpack", "check", "expected", "pick")

    def __init__(self, fields: list[Field], d: bytes, start: int) -> None:
        fmt, pos, index = "=", start, 0
        checks: list[int] = []
        where: dict[str, int] = {}
        for off, code, role in sorted(fields):
            assert off >= pos, "overlapping fields"  # the walk reads disjoint places
            fmt += (f"{off - pos}x" if off > pos else "") + code
            if role == "check":
                checks.append(index)
            else:
                where[role] = index
            index += 1
            pos = off + struct.calcsize("=" + code)
        st = struct.Struct(fmt)
        self.unpack = st.unpack_from
        self.check = operator.itemgetter(*checks)
        self.expected = self.check(self.unpack(d, start))
        # PKT64 (when the kernel added it) is the packet count; BASIC's is 32 bits
        if "pkt64" in where:
            where["packets"] = where["pkt64"]
        elif "basic_packets" in where:
            where["packets"] = where["basic_packets"]
        if "hw_basic_packets" in where:
            where["hw_packets"] = where["hw_basic_packets"]
        absent = {role: index + _DEFAULTS.index(_DEFAULT[role]) for role in _DEFAULT}
        self.pick = operator.itemgetter(*(where.get(r, absent.get(r, -1)) for r in _ROLES))

    def read(self, d: bytes, start: int) -> TerseFilter | None:
        """The value of the message at d[start:] (which has this shape)."""
        return _build(self.pick(self.unpack(d, start) + _DEFAULTS))


_new = tuple.__new__
_ntohs = socket.ntohs


def _build(v: tuple[Any, ...]) -> TerseFilter | None:
    ifindex, handle, info, chain, flags, cookie, packets, nbytes, hw_packets, hw_bytes = v
    if not handle:
        return None  # a priority's header message
    return _new(TerseFilter, (ifindex, chain, info >> 16, _ntohs(info & 0xFFFF), handle,
                              flags, cookie, packets, nbytes, hw_packets, hw_bytes))


_SHAPES: dict[int, list[Shape]] = {}
_SHAPES_MAX = 256  # lengths
_PER_LENGTH = 8


def decode_message(d: bytes, start: int = 0, end: int | None = None) -> TerseFilter | None:
    """One RTM_NEWTFILTER message of a terse dump at d[start:end] (None: not
    a flower filter, or a priority's header message); OffloadError if it is
    malformed."""
    end = len(d) if end is None else end
    length = end - start
    shapes = _SHAPES.get(length)
    if shapes is not None:
        for shape in shapes:
            vals = shape.unpack(d, start) + _DEFAULTS
            if shape.check(vals) == shape.expected:  # _build, inlined (per filter)
                (ifindex, handle, info, chain, flags, cookie, packets, nbytes, hw_packets,
                 hw_bytes) = shape.pick(vals)
                if not handle:
                    return None
                return _new(TerseFilter, (ifindex, chain, info >> 16, _ntohs(info & 0xFFFF),
                                          handle, flags, cookie, packets, nbytes, hw_packets,
                                          hw_bytes))
    fields = _walk(d, start, end)
    if fields is None:
        return None
    shape = Shape(fields, d, start)
    if shapes is None:
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        shapes = _SHAPES[length] = []
    if len(shapes) < _PER_LENGTH:
        shapes.append(shape)
    return shape.read(d, start)
