"""Text of one OpenFlow field value (and mask), by the field's ``OfFmt``.

Spellings follow ovs-ofctl (``lib/match.c``, ``lib/meta-flow.c``): decimal
ports and 16-bit values (masked ``0x50/0xfff0``), ``%#x`` hex for registers,
metadata, tunnel ids and marks, ``0x%04x`` for ``dl_type`` and ``vlan_tci``,
CIDR prefixes for addresses where the mask is one, flags as ``syn|ack``
(exact) or ``+syn-ack`` (masked), fragments by name.  ``parse_value`` and
``format_value`` are inverses: ``parse_value(f, format_value(f, v, m)) ==
(v, m)`` for every raw value/mask a field can hold.

Values are raw bits of the field; ``OfField.scale`` is applied here only
(``nw_tos`` is written in the TOS byte position: raw DSCP 4 is ``16``).
"""

from __future__ import annotations

import ipaddress

from dpif.fields import FLAG_NAMES
from dpif.valuetext import ValueError_
from dpif.valuetext import parse_int as _int
from dpif.valuetext import parse_ip as _parse_ip
from dpif.valuetext import parse_flags
from dpif.valuetext import parse_mac as _parse_mac
from ofproto.offields import PORT_BY_NAME, PORT_NAME_BY_NUM, OfField, OfFmt

BadValue = ValueError_  # the value error of rule text (shared with dpctl text)

# ovs-ofctl nw_frag spellings: (name, value, mask); parsing takes the first
# entry of a name, printing looks up (value, mask).
FRAG_SPELLINGS: tuple[tuple[str, int, int], ...] = (
    ("no", 0, 3), ("first", 1, 3), ("later", 3, 3),
    ("no", 0, 1), ("yes", 1, 1),
    ("not_later", 0, 2), ("later", 2, 2),
)
_FRAG_PARSE: dict[str, tuple[int, int]] = {}
for _n, _v, _m in FRAG_SPELLINGS:
    _FRAG_PARSE.setdefault(_n, (_v, _m))
# Print a name only where it parses back to the same bits ("later" is A|L/A|L;
# OVS also prints it for L/L, which would not round-trip: that prints 0x2/0x2).
_FRAG_PRINT = {(v, m): n for n, v, m in FRAG_SPELLINGS if _FRAG_PARSE[n] == (v, m)}

# OF names of flag fields: the datapath's bit names.
_FLAGS = {"tcp_flags": FLAG_NAMES["tcp_flags"], "ct_state": FLAG_NAMES["ct_state"]}


def c_hex(v: int) -> str:
    """C's ``%#x``: 0 is ``0``, others ``0x..``."""
    return "0" if v == 0 else f"{v:#x}"


def _mac(v: int) -> str:
    return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))


def _prefix_len(mask: int, bits: int) -> int | None:
    inv = ~mask & ((1 << bits) - 1)
    if inv & (inv + 1):
        return None
    return bits - inv.bit_length()


def _ip_text(v: int, bits: int) -> str:
    return str(ipaddress.IPv4Address(v) if bits == 32 else ipaddress.IPv6Address(v))


def format_port(port: int) -> str:
    return PORT_NAME_BY_NUM.get(port, str(port))


def parse_port(s: str) -> int:
    named = PORT_BY_NAME.get(s.upper())
    if named is not None:
        return named
    try:
        n = int(s, 0)
    except ValueError:
        raise BadValue(f"{s!r} is not a port number or name "
                       f"({', '.join(PORT_BY_NAME)})") from None
    if not 0 <= n <= 0xFFFFFFFF:
        raise BadValue(f"port {s} out of range")
    return n


def _flags_text(f: OfField, v: int, m: int) -> str | None:
    names = _FLAGS[f.name]
    known = 0
    for _, bit in names:
        known |= bit
    if m == f.all_ones:
        if v & ~known:
            return None
        return "|".join(n for n, bit in names if v & bit) or "0"
    if m & ~known:
        return None
    return "".join(("+" if v & bit else "-") + n for n, bit in names if m & bit)


def format_value(f: OfField, value: int, mask: int) -> str:
    """ovs-ofctl text of a raw (value, mask); mask == all ones is exact."""
    exact = mask == f.all_ones
    fmt = f.fmt
    v, m = value << f.scale, mask << f.scale
    if fmt is OfFmt.DEC:
        return str(v) if exact else f"0x{v:x}/0x{m:x}"
    if fmt is OfFmt.HEX:
        return c_hex(v) if exact else f"{c_hex(v)}/{m:#x}"
    if fmt in (OfFmt.HEX16, OfFmt.TCI):
        return f"0x{v:04x}" if exact else f"0x{v:04x}/0x{m:04x}"
    if fmt is OfFmt.MAC:
        return _mac(v) if exact else f"{_mac(v)}/{_mac(m)}"
    if fmt in (OfFmt.IPV4, OfFmt.IPV6):
        text = _ip_text(v, f.bits)
        if exact:
            return text
        plen = _prefix_len(m, f.bits)
        return f"{text}/{plen}" if plen is not None else f"{text}/{_ip_text(m, f.bits)}"
    if fmt is OfFmt.PORT:
        return format_port(v) if exact else f"0x{v:x}/0x{m:x}"
    if fmt is OfFmt.FRAG:
        name = _FRAG_PRINT.get((v, m))
        return name if name is not None else f"0x{v:x}/0x{m:x}"
    flags = _flags_text(f, v, m)
    if flags is not None:
        return flags
    return f"{v:#x}/{m:#x}" if not exact else f"{v:#x}"


def _parse_flags(f: OfField, s: str) -> tuple[int, int]:
    return parse_flags(s, dict(_FLAGS[f.name]), f.all_ones, numbers=False)


def parse_value(f: OfField, s: str) -> tuple[int, int]:
    """Parse ``value`` or ``value/mask`` into raw (value, mask); masks the value."""
    if not s:
        raise BadValue("empty value")
    fmt = f.fmt
    full = f.all_ones << f.scale
    base, slash, mtext = s.partition("/")
    if fmt is OfFmt.FLAGS and not s[0].isdigit():
        v, m = _parse_flags(f, s)
    elif fmt is OfFmt.FRAG and not s[0].isdigit():
        if slash or s not in _FRAG_PARSE:
            raise BadValue(f"{s!r} is not one of {', '.join(_FRAG_PARSE)}")
        v, m = _FRAG_PARSE[s]
    elif fmt is OfFmt.MAC:
        v = _parse_mac(base)
        m = _parse_mac(mtext) if slash else full
    elif fmt in (OfFmt.IPV4, OfFmt.IPV6):
        v = _parse_ip(base, f.bits)
        if not slash:
            m = full
        elif mtext.isdigit():
            plen = int(mtext)
            if plen > f.bits:
                raise BadValue(f"prefix length {plen} longer than {f.bits}")
            m = (full << (f.bits - plen)) & full
        else:
            m = _parse_ip(mtext, f.bits)
    elif fmt is OfFmt.PORT and not slash:
        v, m = parse_port(s), full
    else:
        v = _int(base)
        m = _int(mtext) if slash else full
    if v < 0 or m < 0 or v > full or m > full:
        raise BadValue(f"value {s!r} does not fit in {f.bits + f.scale} bits")
    if f.scale:
        low = (1 << f.scale) - 1
        if v & low:
            raise BadValue(f"{s!r}: the low {f.scale} bits must be zero")
        v, m = v >> f.scale, m >> f.scale
    if m != f.all_ones and not f.maskable:
        raise BadValue("field does not support masking")
    return v & m, m
