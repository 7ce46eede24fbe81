"""Fast RTM_NEWTFILTER decoder: what pyroute2's generic parser reads, with
``struct``.

Theory of operation
-------------------
pyroute2 builds an object per attribute when it parses a message; decoding a
dumped flower filter that way cost ~10 ms in the TCG VM, the largest part of
a dump (docs/performance.md).  This module reads the same bytes directly.

Nothing is re-listed: like ``tc_wire``, the attribute numbers, atoms and
struct layouts come from the ``nla_map``/``fields`` tables of ``tc_nla``,
compiled once at import into ``number -> (name, decoder)`` tables.  A
decoder turns a payload into *the value pyroute2 would give* (an int, a
MAC/IP text, bytes, a dict for a C struct, or an ``Attrs`` view for a nest),
so ``tc_values.decode_filter`` -- the one place where a message becomes a
``FilterDump`` -- runs unchanged on an ``Attrs`` view instead of a pyroute2
message.  The tests cross-check both paths on encoded and on real kernel
dumps (tests/offload/test_tc_decode.py, test_tc_netlink_kernel.py).

Dynamic attributes are resolved as pyroute2 resolves them: TCA_OPTIONS is
flower options when TCA_KIND is 'flower' (else raw bytes), TCA_ACT_OPTIONS is
the options class of the action's TCA_ACT_KIND (else raw bytes).

Robustness: an attribute number a table does not know is kept as 'UNKNOWN'
(pyroute2's name; ``decode_filter`` reports it in ``unsupported``), except
in TCA_FLOWER_ACT, where it is skipped (its names give action positions).  A length that runs past its
container, a header cut short or a payload too short for its type raises
``OffloadError`` naming the attribute and its byte offset in the message.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from pyroute2.netlink import nla

from dpif.errors import OffloadError
from offload import tc_nla as N
from offload.tc_values import FilterDump, decode_filter

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
TCMSG = struct.Struct("=BBHiIII")  # family, pad1, pad2, ifindex, handle, parent, info
NLAHDR = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
UNKNOWN = "UNKNOWN"

Decoder = Callable[[bytes, int, int], Any]


class _Short(Exception):
    """A payload shorter than its type needs (wrapped with name and offset)."""


def malformed(what: str, attr: str, offset: int) -> OffloadError:
    return OffloadError(f"malformed tc netlink message: {what}", attr=attr, offset=offset)


class Attrs:
    """A decoded attribute list with the slice of pyroute2's nla interface
    that ``tc_values`` uses: ``get_attr`` (first value or None),
    ``get_attrs`` (all values) and ``["attrs"]`` (the (name, value) pairs);
    a message view also answers its header fields (``["handle"]``...)."""

    __slots__ = ("pairs", "fields", "_first")

    def __init__(self, pairs: list[tuple[str, Any]], fields: dict[str, int] | None = None
                 ) -> None:
        self.pairs = pairs
        self.fields = fields
        self._first: dict[str, Any] | None = None

    def get_attr(self, name: str) -> Any:
        first = self._first
        if first is None:
            first = self._first = dict(reversed(self.pairs))
        return first.get(name)

    def get_attrs(self, name: str) -> list[Any]:
        return [v for n, v in self.pairs if n == name]

    def __getitem__(self, key: str) -> Any:
        if key == "attrs":
            return self.pairs
        if self.fields is not None and key in self.fields:
            return self.fields[key]
        raise KeyError(key)


# --- atoms (the values pyroute2's atom classes decode to) -------------------------


def _struct_atom(fmt: str) -> Decoder:
    st = struct.Struct(fmt)
    size, unpack = st.size, st.unpack_from

    def dec(d: bytes, s: int, e: int) -> Any:
        if e - s < size:
            raise _Short(size)
        return unpack(d, s)[0]
    return dec


def _fixed(size: int, fn: Callable[[bytes], Any]) -> Decoder:
    def dec(d: bytes, s: int, e: int) -> Any:
        if e - s < size:
            raise _Short(size)
        return fn(d[s:s + size])
    return dec


def _asciiz(d: bytes, s: int, e: int) -> str:
    return d[s:e].rstrip(b"\0").decode("utf-8")


def _cdata(d: bytes, s: int, e: int) -> bytes:
    return bytes(d[s:e])


def _hex(d: bytes, s: int, e: int) -> str:
    return d[s:e].hex(":")


def _none(d: bytes, s: int, e: int) -> None:
    return None


def _flag(d: bytes, s: int, e: int) -> bool:
    return True


def _inet(family: int) -> Callable[[bytes], str]:
    def fn(b: bytes) -> str:
        return socket.inet_ntop(family, b)
    return fn


ATOM_DECODERS: dict[str, Decoder] = {
    **{name: _struct_atom(getattr(nla, name).fields[0][1])
       for name in ("uint8", "uint16", "uint32", "uint64", "be16", "be32", "be64")},
    "l2addr": _fixed(6, lambda b: b.hex(":")),
    "ip4addr": _fixed(4, _inet(socket.AF_INET)),
    "ip6addr": _fixed(16, _inet(socket.AF_INET6)),
    "asciiz": _asciiz, "cdata": _cdata, "hex": _hex, "none": _none, "flag": _flag,
}


def _fields(cls: type[nla]) -> Decoder:
    names = tuple(name for name, _ in cls.fields)
    st = struct.Struct("=" + "".join(fmt for _, fmt in cls.fields))
    size, unpack = st.size, st.unpack_from

    def dec(d: bytes, s: int, e: int) -> dict[str, int]:
        if e - s < size:
            raise _Short(size)
        return dict(zip(names, unpack(d, s)))
    return dec


# --- compiled tables ----------------------------------------------------------------


class Table:
    """One nla class: attribute number -> (name, decoder | nested Table |
    None for a dynamic attribute the caller resolves)."""

    def __init__(self, cls: type[nla]) -> None:
        self.cls = cls
        self.keep_unknown = True  # as pyroute2 does ('UNKNOWN'); not in TCA_FLOWER_ACT
        self.slots: dict[int, tuple[str, Any]] = {}
        for i, entry in enumerate(cls.nla_map):
            num, name, fmt = (i, *entry) if len(entry) == 2 else entry
            self.slots[num] = (name, _compile(cls, fmt))

    def decode(self, d: bytes, start: int, end: int,
               resolve: Callable[[str, list[tuple[str, Any]]], Any] | None = None
               ) -> list[tuple[str, Any]]:
        """The (name, value) pairs of the attributes in d[start:end]."""
        out: list[tuple[str, Any]] = []
        slots = self.slots
        unpack = NLAHDR.unpack_from
        off = start
        while off < end:  # the loop of ``attributes``, inlined (hot)
            if end - off < 4:
                raise malformed(f"{end - off} trailing bytes, too short for an attribute "
                                "header", self.cls.__name__, off)
            length, num = unpack(d, off)
            if length < 4 or off + length > end:
                raise malformed(f"attribute length {length} runs past its container "
                                f"({end - off} bytes left)",
                                slots.get(num & NLA_TYPE_MASK, (self.cls.__name__,))[0], off)
            s, e = off + 4, off + length
            off += (length + 3) & ~3
            slot = slots.get(num & NLA_TYPE_MASK)
            if slot is None:
                if self.keep_unknown:
                    out.append((UNKNOWN, None))
                continue
            name, dec = slot
            try:
                if isinstance(dec, Table):
                    value: Any = Attrs(dec.decode(d, s, e))
                elif dec is None:
                    value = resolve(name, out) if resolve else None
                    if isinstance(value, Table):
                        value = Attrs(value.decode(d, s, e))
                    else:
                        value = bytes(d[s:e])
                else:
                    value = dec(d, s, e)
            except _Short as exc:
                raise malformed(f"payload of {e - s} bytes, needs {exc.args[0]}",
                                name, s - 4) from None
            except (UnicodeDecodeError, ValueError) as exc:
                raise malformed(f"bad payload ({exc})", name, s - 4) from None
            out.append((name, value))
        return out


_TABLES: dict[type, Table] = {}


def _compile(owner: type[nla], fmt: str) -> Any:
    if fmt in ATOM_DECODERS:
        return ATOM_DECODERS[fmt]
    target = getattr(owner, fmt, None)
    if fmt.startswith("get_") and callable(target):
        return None  # dynamic: resolved by the caller
    if not isinstance(target, type):
        return _hex
    if getattr(target, "nla_map", None):
        if target not in _TABLES:
            _TABLES[target] = Table(target)
        return _TABLES[target]
    if getattr(target, "fields", None):
        return _fields(target)
    return _hex


def attributes(d: bytes, start: int, end: int, where: str) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of each attribute in
    d[start:end]; OffloadError on a header or length that does not fit."""
    unpack = NLAHDR.unpack_from
    off = start
    while off < end:
        if end - off < 4:
            raise malformed(f"{end - off} trailing bytes, too short for an attribute header",
                            where, off)
        length, num = unpack(d, off)
        if length < 4 or off + length > end:
            raise malformed(f"attribute length {length} runs past its container "
                            f"({end - off} bytes left)", where, off)
        yield num & NLA_TYPE_MASK, off + 4, off + length
        off += (length + 3) & ~3


TOP = Table(N.tcmsg_flower)
FLOWER = Table(N.flower_options)
ACTION_TABLES: dict[str, Table] = {kind: Table(cls) for kind, cls in N.ACTION_OPTIONS.items()}


def _resolve_options(name: str, before: list[tuple[str, Any]]) -> Table | None:
    kind = next((v for n, v in before if n == "TCA_KIND"), None)
    return FLOWER if kind == "flower" else None


def _resolve_act_options(name: str, before: list[tuple[str, Any]]) -> Table | None:
    kind = next((v for n, v in before if n == "TCA_ACT_KIND"), None)
    return ACTION_TABLES.get(kind) if isinstance(kind, str) else None


# TCA_ACT_OPTIONS is dynamic: give the tca_act table its resolver.
_ACT = _TABLES[N.tca_act]


def _decode_act(d: bytes, s: int, e: int) -> Attrs:
    return Attrs(_ACT.decode(d, s, e, resolve=_resolve_act_options))


_PRIO = _TABLES[N.tca_act_prio]
_PRIO.slots = {num: (name, _decode_act) for num, (name, _) in _PRIO.slots.items()}
_PRIO.keep_unknown = False  # decode_filter reads the position from each name


# --- messages -------------------------------------------------------------------------


def message_view(d: bytes, start: int = 0, end: int | None = None) -> Attrs:
    """One RTM_*TFILTER message (nlmsghdr + tcmsg + attributes) at d[start:end]
    as an ``Attrs`` view: header fields as pyroute2 names them, TCA_OPTIONS
    of a flower filter decoded."""
    end = len(d) if end is None else end
    if end - start < NLMSGHDR.size + TCMSG.size:
        raise malformed(f"message of {end - start} bytes, shorter than nlmsghdr + tcmsg",
                        "tcmsg", start)
    family, _, _, index, handle, parent, info = TCMSG.unpack_from(d, start + NLMSGHDR.size)
    fields = {"family": family, "index": index, "handle": handle, "parent": parent,
              "info": info}
    pairs = TOP.decode(d, start + NLMSGHDR.size + TCMSG.size, end, resolve=_resolve_options)
    return Attrs(pairs, fields)


def decode_message(d: bytes, start: int = 0, end: int | None = None) -> FilterDump | None:
    """``tc_values.decode_filter`` of one raw message (None: not a flower
    filter, or the per-priority header message)."""
    return decode_filter(message_view(d, start, end))


# --- replies: message walk and acknowledgements ------------------------------------------

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_CAPPED = 0x100  # the ack carries only the request's header
NLM_F_ACK_TLVS = 0x200  # extended ack attributes follow
NLMSGERR_ATTR_MSG = 1
_ERRNO = struct.Struct("=i")


def messages(d: bytes, end: int | None = None) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, start, end) of each netlink message in d[:end]."""
    end = len(d) if end is None else end
    unpack = NLMSGHDR.unpack_from
    off = 0
    while off < end:
        if end - off < NLMSGHDR.size:
            raise malformed(f"{end - off} trailing bytes, too short for nlmsghdr",
                            "nlmsghdr", off)
        length, msg_type, flags, seq, _ = unpack(d, off)
        if length < NLMSGHDR.size or off + length > end:
            raise malformed(f"message length {length} runs past the datagram "
                            f"({end - off} bytes left)", "nlmsghdr", off)
        yield msg_type, flags, seq, off, off + length
        off += (length + 3) & ~3


def ack(d: bytes, start: int, end: int, flags: int, echoed: bool = True
        ) -> tuple[int, str | None]:
    """(errno, extack text) of an NLMSG_ERROR (errno 0: success) or of a dump's
    NLMSG_DONE (``echoed=False``: no request copy before the attributes);
    the extack is the kernel's NLMSGERR_ATTR_MSG, if any."""
    body = start + NLMSGHDR.size
    if end - body < 4:
        raise malformed("acknowledgement without its error code", "nlmsgerr", start)
    code = -_ERRNO.unpack_from(d, body)[0]
    text = None
    if flags & NLM_F_ACK_TLVS:
        tlv = body + 4
        if echoed and end - tlv >= NLMSGHDR.size:  # NLMSG_ERROR echoes the request (header)
            echoed = NLMSGHDR.unpack_from(d, tlv)[0]
            tlv += NLMSGHDR.size if flags & NLM_F_CAPPED else (echoed + 3) & ~3
        for num, s, e in attributes(d, tlv, end, "nlmsgerr"):
            if num == NLMSGERR_ATTR_MSG:
                text = d[s:e].rstrip(b"\0").decode("utf-8", "replace")
    return code, text
