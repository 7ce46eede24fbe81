"""Fast RTM_{NEW,DEL}TFILTER encoder: the bytes pyroute2 would produce, built
with ``struct``.

Theory of operation
-------------------
pyroute2's generic encoder builds an object per attribute and was half the
cost of installing a filter (docs/performance.md, "Offload (tc flower)
install and dump").  This module produces the *same bytes* (the oracle test,
tests/offload/test_tc_wire.py, compares them with pyroute2's for every key
group, every action and the translation examples) for the messages
``tc_netlink`` sends: filter add/replace and filter delete.

Nothing is re-listed here: attribute numbers, atoms and struct layouts come
from the ``nla_map``/``fields`` tables of ``tc_nla`` (``FLOWER_ATTRS`` order
is the attribute number; a nest's NLA_F_NESTED comes from the payload class's
``nla_flags``, which is what pyroute2 puts in the header).  The tables are
compiled once at import into per-attribute ``(type | flags, packer)`` pairs.
The action option lists come from the action values' own ``options()`` (the
same lists ``tc_values.encode_filter`` hands to pyroute2).

``encode_filter_body`` is the message after the netlink header (what a
template of ``tc_template`` holds) and ``body_offsets`` finds, by walking
those bytes, where the keys' payloads and the cookie are (what a template
patches).

Anything outside what the tables cover (an action kind without an options
class, e.g. ``UnknownAction``; an atom with no packer here such as 'hex')
raises ``FastEncodeUnsupported``; the sender then falls back to pyroute2's
encoder, which reports the real error if there is one.  Netlink layout:
nlmsghdr + struct tcmsg + attributes, each attribute ``len``(unpadded) +
``type``, payload padded to NLA_ALIGNTO (4) with zeroes.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import Any, Callable, Union

from pyroute2.netlink import nla

from offload import tc_nla as N
from offload.tc_values import FlowerFilter

NLA_ALIGNTO = 4
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
TCMSG = struct.Struct("=BBHiIII")  # family, pad1, pad2, ifindex, handle, parent, info
NLAHDR = struct.Struct("=HH")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class FastEncodeUnsupported(Exception):
    """The fast encoder does not cover this value: use pyroute2's encoder."""


Packer = Callable[[Any], bytes]


def _l2addr(value: Any) -> bytes:
    return bytes(int(x, 16) for x in value.split(":"))


def _asciiz(value: Any) -> bytes:
    return value.encode() + b"\0"


def _ip4(value: Any) -> bytes:
    return socket.inet_pton(socket.AF_INET, value)


def _ip6(value: Any) -> bytes:
    return socket.inet_pton(socket.AF_INET6, value)


def _cdata(value: Any) -> bytes:
    return bytes(value)


def _struct_packer(fmt: str) -> Packer:
    return struct.Struct(fmt).pack


# pyroute2 atom name -> packer (same formats as pyroute2's atom classes).
ATOM_PACKERS: dict[str, Packer] = {
    **{name: _struct_packer(getattr(nla, name).fields[0][1])
       for name in ("uint8", "uint16", "uint32", "uint64", "be16", "be32", "be64")},
    "l2addr": _l2addr, "ip4addr": _ip4, "ip6addr": _ip6,
    "asciiz": _asciiz, "cdata": _cdata,
}


class Nest:
    """One nla class's compiled table: name -> (type | flags, encoder).

    The encoder is an atom packer, a struct packer (for ``fields`` classes,
    value is a dict of field -> int, missing fields 0), a nested ``Nest``
    (value is ``{"attrs": [[name, value], ...]}``) or None for dynamic types
    (TCA_OPTIONS, TCA_ACT_OPTIONS) that the caller resolves."""

    def __init__(self, cls: type[nla]) -> None:
        self.cls = cls
        self.attrs: dict[str, tuple[int, Any]] = {}
        for i, entry in enumerate(cls.nla_map):
            num, name, fmt = (i, *entry) if len(entry) == 2 else entry
            self.attrs[name] = _compile(cls, num, fmt)

    def encode(self, attrs: list[list[Any]]) -> bytes:
        out = []
        table = self.attrs
        for name, value in attrs:
            try:
                num, enc = table[name]
            except KeyError:
                raise FastEncodeUnsupported(f"{self.cls.__name__}: {name}") from None
            if isinstance(enc, Nest):
                payload = enc.encode(value["attrs"])
            elif isinstance(enc, _Fields):
                payload = enc.pack(value)
            elif enc is None:
                raise FastEncodeUnsupported(f"dynamic attribute {name}")
            else:
                payload = enc(value)
            out.append(attr(num, payload))
        return b"".join(out)


class _Fields:
    """A ``fields`` (C struct) nla: dict of field -> value, missing fields 0."""

    def __init__(self, cls: type[nla]) -> None:
        self.names = tuple(name for name, _ in cls.fields)
        self.struct = struct.Struct("".join(fmt for _, fmt in cls.fields))

    def pack(self, value: Any) -> bytes:
        get = value.get
        return self.struct.pack(*[get(name, 0) for name in self.names])


_NESTS: dict[type, Nest] = {}


def _compile(owner: type[nla], num: int, fmt: str) -> tuple[int, Any]:
    if fmt in ATOM_PACKERS:
        return num | getattr(nla, fmt).nla_flags, ATOM_PACKERS[fmt]
    target = getattr(owner, fmt, None)
    if fmt.startswith("get_") and callable(target):  # dynamic: the caller resolves
        return num, None
    if not isinstance(target, type) or target.__module__ != N.__name__:
        return num, _unsupported(fmt)  # 'none', 'hex', 'flag', ...: never sent
    flags = num | int(getattr(target, "nla_flags", 0))
    if getattr(target, "nla_map", None):
        if target not in _NESTS:
            _NESTS[target] = Nest(target)
        return flags, _NESTS[target]
    if getattr(target, "fields", None):
        return flags, _Fields(target)
    return num, _unsupported(fmt)


def _unsupported(fmt: str) -> Packer:
    def pack(value: Any) -> bytes:
        raise FastEncodeUnsupported(f"atom {fmt}")
    return pack


def attr(num: int, payload: bytes) -> bytes:
    """One netlink attribute: header (unpadded length) + payload + padding."""
    n = len(payload)
    return NLAHDR.pack(n + 4, num) + payload + _PAD[n & 3]


# --- compiled tables (once, at import) -------------------------------------------

TCMSG_NEST = Nest(N.tcmsg_flower)
FLOWER_NEST = Nest(N.flower_options)
ACT_PRIO_NEST = Nest(N.tca_act_prio)
ACT_NEST = Nest(N.tca_act)
ACTION_NESTS: dict[str, Nest] = {kind: Nest(cls) for kind, cls in N.ACTION_OPTIONS.items()}

_T_KIND = TCMSG_NEST.attrs["TCA_KIND"][0]
_T_CHAIN = TCMSG_NEST.attrs["TCA_CHAIN"][0]
# TCA_OPTIONS is dynamic in tcmsg_flower (flower_options when kind is flower)
_T_OPTIONS = TCMSG_NEST.attrs["TCA_OPTIONS"][0] | N.flower_options.nla_flags
_F_FLAGS, _F_FLAGS_ENC = FLOWER_NEST.attrs["TCA_FLOWER_FLAGS"]
_F_CLASSID, _F_CLASSID_ENC = FLOWER_NEST.attrs["TCA_FLOWER_CLASSID"]
_F_ACT = FLOWER_NEST.attrs["TCA_FLOWER_ACT"][0]
_A_KIND = ACT_NEST.attrs["TCA_ACT_KIND"][0]
_A_OPTIONS = ACT_NEST.attrs["TCA_ACT_OPTIONS"][0]
_A_COOKIE, _A_COOKIE_ENC = ACT_NEST.attrs["TCA_ACT_COOKIE"]
_PRIO_NUM = [ACT_PRIO_NEST.attrs.get(f"TCA_ACT_PRIO_{i}", (0, None))[0]
             for i in range(N.TCA_ACT_MAX_PRIO + 1)]
_KIND_FLOWER = attr(_T_KIND, _asciiz("flower"))
_U32 = struct.Struct("=I").pack
# Per-key (type | flags, packer) for the flower keys a FlowerFilter may carry.
_KEYS: dict[str, tuple[int, Packer]] = {
    name: FLOWER_NEST.attrs[name] for name in N.FLOWER_KEY_ATTRS | N.MASK_ATTRS
    if callable(FLOWER_NEST.attrs[name][1]) and not isinstance(FLOWER_NEST.attrs[name][1], Nest)
}
_ACT_KIND_ATTR: dict[str, bytes] = {kind: attr(_A_KIND, _asciiz(kind)) for kind in ACTION_NESTS}


def header(msg_type: int, flags: int, seq: int, pid: int, ifindex: int, handle: int,
            parent: int, prio: int, protocol: int, body_len: int) -> bytes:
    return (NLMSGHDR.pack(NLMSGHDR.size + TCMSG.size + body_len, msg_type, flags, seq, pid)
            + TCMSG.pack(socket.AF_UNSPEC, 0, 0, ifindex, handle, parent,
                         (prio << 16) | socket.htons(protocol)))


def encode_options(f: FlowerFilter) -> bytes:
    """The TCA_OPTIONS payload (flower keys, flags, classid, actions)."""
    out = []
    keys, hdr, pad = _KEYS, NLAHDR.pack, _PAD
    for name, value in f.keys:
        try:
            num, pack = keys[name]
        except KeyError:
            raise FastEncodeUnsupported(f"flower key {name}") from None
        payload = pack(value)
        n = len(payload)
        out.append(hdr(n + 4, num) + payload + pad[n & 3])  # attr(), inlined: 8+ per filter
    if f.flags:
        out.append(attr(_F_FLAGS, _F_FLAGS_ENC(f.flags)))
    if f.classid is not None:
        out.append(attr(_F_CLASSID, _F_CLASSID_ENC(f.classid)))
    if f.actions:
        try:
            bodies = _action_bodies(f.actions)
        except TypeError:  # an unhashable action value: encoded every time
            bodies = _action_bodies.__wrapped__(f.actions)
        acts = []
        for i, body in enumerate(bodies, start=1):
            if i == 1 and f.cookie:
                body += attr(_A_COOKIE, _A_COOKIE_ENC(f.cookie))
            acts.append(attr(_PRIO_NUM[i], body))
        out.append(attr(_F_ACT, b"".join(acts)))
    return b"".join(out)


@functools.lru_cache(maxsize=4096)
def _action_bodies(actions: tuple[Any, ...]) -> tuple[bytes, ...]:
    """TCA_ACT_KIND + TCA_ACT_OPTIONS of each action (what its TCA_ACT_PRIO_i
    nest holds but the cookie), remembered per actions tuple: the many
    filters of one megaflow table share a few (half of a filter's encoding
    time, measured on the host)."""
    out = []
    for act in actions:
        nest = ACTION_NESTS.get(act.kind)
        if nest is None:  # UnknownAction and kinds we do not declare
            raise FastEncodeUnsupported(f"action kind {act.kind}")
        out.append(_ACT_KIND_ATTR[act.kind] + attr(_A_OPTIONS | nest.cls.nla_flags,
                                                   nest.encode(act.options())))
    return tuple(out)


def encode_filter_bytes(f: FlowerFilter, msg_type: int, flags: int, seq: int,
                        pid: int = 0) -> bytes:
    """The complete netlink message pyroute2 would send for
    ``encode_filter(f)`` with this header type/flags/sequence number/pid."""
    body = encode_filter_body(f)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags, seq, pid) + body


def encode_filter_body(f: FlowerFilter) -> bytes:
    """What follows the netlink header in ``encode_filter_bytes``: the tcmsg
    and the attributes (the same for add and replace, any seq/pid)."""
    attrs = (_KIND_FLOWER + attr(_T_CHAIN, _U32(f.chain))
             + attr(_T_OPTIONS, encode_options(f)))
    return TCMSG.pack(socket.AF_UNSPEC, 0, 0, f.ifindex, f.handle, f.parent,
                      (f.prio << 16) | socket.htons(f.protocol)) + attrs


def with_header(body: Encoded, msg_type: int, flags: int, seq: int, pid: int) -> bytes:
    """A netlink message: its header (type, flags, seq, pid) + ``body``."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags, seq, pid) + body


TCMSG_HANDLE_AT = 8  # byte offset of tcm_handle in the tcmsg (family, pads, ifindex)


def _nla_walk(data: Encoded, start: int, end: int) -> list[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of the attributes in
    data[start:end]."""
    out = []
    while start + 4 <= end:
        n, num = NLAHDR.unpack_from(data, start)
        out.append((num & 0x3FFF, start + 4, start + n))
        start += (n + 3) & ~3
    return out


def body_offsets(body: Encoded, nkeys: int) -> tuple[list[int], int | None]:
    """Where ``encode_filter_body`` put things: the payload offset of each of
    the first ``nkeys`` flower keys (f.keys order) and of the first action's
    cookie (None without one)."""
    top = {num: (a, b) for num, a, b in _nla_walk(body, TCMSG.size, len(body))}
    a, b = top[_T_OPTIONS & 0x3FFF]
    opts = _nla_walk(body, a, b)
    keys = [start for _, start, _ in opts[:nkeys]]
    cookie = None
    acts = [(s, e) for num, s, e in opts if num == _F_ACT & 0x3FFF]
    if acts:
        first = _nla_walk(body, *acts[0])[0]
        cookie = next((s for num, s, _ in _nla_walk(body, first[1], first[2])
                       if num == _A_COOKIE & 0x3FFF), None)
    return keys, cookie


def key_packer(name: str) -> Packer:
    """The packer of flower key ``name`` (FastEncodeUnsupported if none)."""
    try:
        return _KEYS[name][1]
    except KeyError:
        raise FastEncodeUnsupported(f"flower key {name}") from None


def encode_delete_bytes(ifindex: int, chain: int, prio: int, handle: int, protocol: int,
                        parent: int, msg_type: int, flags: int, seq: int,
                        pid: int = 0) -> bytes:
    """The bytes of ``tc_values.delete_msg(...)`` (callers validate first)."""
    body = _KIND_FLOWER + attr(_T_CHAIN, _U32(chain))
    return header(msg_type, flags, seq, pid, ifindex, handle, parent, prio, protocol,
                   len(body)) + body


Encoded = Union[bytes, bytearray]


def set_seq(data: Encoded, seq: int, pid: int) -> bytearray:
    """A copy of one encoded message with its sequence number and pid set."""
    out = bytearray(data)
    struct.pack_into("=II", out, 8, seq, pid)
    return out
