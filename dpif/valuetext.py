"""Text of one field value (and mask), by the field's ``Fmt``.

``format_value`` and ``parse_value`` are inverses for every value a field
can hold: the flow codec relies on that for its round trip.
"""

from __future__ import annotations

import ipaddress

from dpif.fields import FLAG_NAMES, FRAG_NAMES, Field, Fmt


def _hex(v: int) -> str:
    return "0" if v == 0 else f"{v:#x}"


def _mac(v: int) -> str:
    return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))


def _ip(v: int, fmt: Fmt) -> str:
    if fmt is Fmt.IPV4:
        return str(ipaddress.IPv4Address(v))
    return str(ipaddress.IPv6Address(v))


def _flags_exact(f: Field, v: int) -> str | None:
    names = FLAG_NAMES.get(f.name, ())
    out, rest = [], v
    for n, bit in names:
        if v & bit:
            out.append(n)
            rest &= ~bit
    if rest:
        return None
    return "|".join(out) if out else "0"


def _flags_masked(f: Field, v: int, m: int) -> str | None:
    names = FLAG_NAMES.get(f.name, ())
    out, rest = [], m
    for n, bit in names:
        if m & bit:
            out.append(("+" if v & bit else "-") + n)
            rest &= ~bit
    if rest:
        return None
    return "".join(out)


def format_value(f: Field, value: int, mask: int) -> str:
    exact = mask == f.all_ones
    fmt = f.fmt
    if fmt is Fmt.DEC:
        return str(value) if exact else f"{value:#x}/{mask:#x}"
    if fmt is Fmt.HEX:
        return _hex(value) if exact else f"{_hex(value)}/{mask:#x}"
    if fmt is Fmt.HEX16:
        return f"0x{value:04x}" if exact else f"0x{value:04x}/0x{mask:04x}"
    if fmt is Fmt.MAC:
        return _mac(value) if exact else f"{_mac(value)}/{_mac(mask)}"
    if fmt in (Fmt.IPV4, Fmt.IPV6):
        return _ip(value, fmt) if exact else f"{_ip(value, fmt)}/{_ip(mask, fmt)}"
    if fmt is Fmt.FRAG:
        if exact:
            for n, v in FRAG_NAMES:
                if v == value:
                    return n
        return f"{value:#x}/{mask:#x}"
    # FLAGS
    text = _flags_exact(f, value) if exact else _flags_masked(f, value, mask)
    return text if text is not None else f"{value:#x}/{mask:#x}"


class ValueError_(Exception):
    """Raised by parse_value with a message; the caller adds the position."""


def parse_int(s: str) -> int:
    """A number in Python/C syntax (``80``, ``0x50``); ValueError_ otherwise."""
    try:
        return int(s, 0)
    except ValueError:
        raise ValueError_(f"{s!r} is not a number") from None


def parse_mac(s: str) -> int:
    parts = s.split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError_(f"{s!r} is not an Ethernet address")
    try:
        return int.from_bytes(bytes(int(p, 16) for p in parts), "big")
    except ValueError:
        raise ValueError_(f"{s!r} is not an Ethernet address") from None


def parse_ip(s: str, bits: int) -> int:
    """An IPv4 (``bits`` 32) or IPv6 (128) address as an int."""
    try:
        if bits == 32:
            return int(ipaddress.IPv4Address(s))
        return int(ipaddress.IPv6Address(s))
    except ValueError:
        raise ValueError_(f"{s!r} is not an IPv{4 if bits == 32 else 6} address") from None


_int, _parse_mac = parse_int, parse_mac


def _parse_ip(s: str, fmt: Fmt) -> int:
    return parse_ip(s, 32 if fmt is Fmt.IPV4 else 128)


def parse_flags(s: str, names: dict[str, int], all_ones: int,
                numbers: bool = True) -> tuple[int, int]:
    """Flags text -> (value, mask): ``+syn-ack`` (masked) or ``syn|ack``
    (exact; numbers allowed between the bars when ``numbers``)."""
    if s[:1] in "+-":
        v = m = 0
        i = 0
        while i < len(s):
            sign = s[i]
            if sign not in "+-":
                raise ValueError_(f"expected '+' or '-' in flags {s!r}")
            j = i + 1
            while j < len(s) and s[j] not in "+-":
                j += 1
            n = s[i + 1:j]
            if n not in names:
                raise ValueError_(f"unknown flag {n!r} (known: {', '.join(names)})")
            if m & names[n]:
                raise ValueError_(f"flag {n!r} given twice")
            m |= names[n]
            if sign == "+":
                v |= names[n]
            i = j
        return v, m
    v = 0
    for n in s.split("|"):
        if n in names:
            v |= names[n]
        elif numbers:
            v |= _int(n)
        else:
            raise ValueError_(f"unknown flag {n!r} (known: {', '.join(names)})")
    return v, all_ones


def _parse_flags(f: Field, s: str) -> tuple[int, int]:
    return parse_flags(s, dict(FLAG_NAMES.get(f.name, ())), f.all_ones)


def parse_value(f: Field, s: str) -> tuple[int, int]:
    """Parse ``value`` or ``value/mask`` into (value, mask); mask all-ones if exact."""
    if not s:
        raise ValueError_("empty value")
    fmt = f.fmt
    if fmt is Fmt.FLAGS and not s[0].isdigit():
        v, m = _parse_flags(f, s)
    elif fmt is Fmt.FRAG and not s[0].isdigit():
        names = dict(FRAG_NAMES)
        base, _, mtext = s.partition("/")
        if base not in names:
            raise ValueError_(f"frag must be one of no, first, later, not {base!r}")
        v, m = names[base], (_int(mtext) if mtext else f.all_ones)
    else:
        base, slash, mtext = s.partition("/")
        if fmt is Fmt.MAC:
            v = _parse_mac(base)
            m = _parse_mac(mtext) if slash else f.all_ones
        elif fmt in (Fmt.IPV4, Fmt.IPV6):
            v = _parse_ip(base, fmt)
            if not slash:
                m = f.all_ones
            elif mtext.isdigit():
                plen = int(mtext)
                if plen > f.bits:
                    raise ValueError_(f"prefix length {plen} longer than {f.bits}")
                m = (f.all_ones << (f.bits - plen)) & f.all_ones
            else:
                m = _parse_ip(mtext, fmt)
        else:
            v = _int(base)
            m = _int(mtext) if slash else f.all_ones
    if v > f.all_ones or m > f.all_ones or v < 0 or m < 0:
        raise ValueError_(f"value {s!r} does not fit in {f.bits} bits")
    return v & m, m  # like OVS, a value is masked by its own mask
