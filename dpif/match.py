"""Keys, masks and matches over the packed field layout of ``dpif.fields``.

A *key* is an int holding every field at its offset.  A *mask* is an int of
the same layout whose 1-bits say which key bits a flow looks at.  A
``Match(key, mask)`` keeps OVS's invariant that every wildcarded bit is zero
in the key, so two matches are equal exactly when they match the same
packets, and ``packet_key & mask == match.key`` is the whole test.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from dpif.errors import ValidationError
from dpif.fields import ALL_ONES, BY_NAME, FIELDS, Field, field

FieldValue = int | tuple[int, int]  # exact value, or (value, mask)


def pack(values: Mapping[str, int]) -> int:
    """Pack a {field name: value} mapping into a key int."""
    key = 0
    for name, value in values.items():
        key |= field(name).put(value)
    return key


def unpack(packed: int) -> dict[str, int]:
    """Every field whose bits are non-zero in ``packed``."""
    out = {}
    for f in FIELDS:
        v = (packed >> f.offset) & f.all_ones
        if v:
            out[f.name] = v
    return out


_UNMASKABLE_BITS = tuple(f.field_mask for f in FIELDS if not f.maskable)


def exact_unmaskable(mask: int) -> int:
    """``mask`` with every non-maskable field that it touches made exact.

    A rule layer may look at part of such a field (ofproto reads "a VLAN tag
    is present" as the top bit of ``vlan_tpid``); the megaflow then matches
    the whole field, which is narrower and therefore still sound.
    """
    for fm in _UNMASKABLE_BITS:
        if mask & fm:
            mask |= fm
    return mask


@dataclass(frozen=True, slots=True)
class Match:
    """A megaflow match: packed key and mask, wildcarded key bits zero."""

    key: int
    mask: int

    def __post_init__(self) -> None:
        if self.mask & ~ALL_ONES or self.mask < 0:
            raise ValidationError("mask has bits outside the field layout")
        stray = self.key & ~self.mask
        if stray:
            names = ", ".join(f.name for f in FIELDS if stray & f.field_mask)
            raise ValidationError("key has bits set where the mask wildcards them",
                                  fields=names)
        for f in FIELDS:
            if not f.maskable:
                m = (self.mask >> f.offset) & f.all_ones
                if m and m != f.all_ones:
                    raise ValidationError("field cannot be partially masked",
                                          field=f.name, mask=hex(m))

    @classmethod
    def build(cls, values: Mapping[str, FieldValue] | None = None,
              **kw: FieldValue) -> Match:
        """``Match.build(eth_type=0x800, ipv4_dst=(0x0a000000, 0xffffff00))``.

        An int is an exact match; a (value, mask) pair is masked.  The value
        is masked for you, so the invariant always holds.
        """
        items = dict(values or {})
        items.update(kw)
        key = mask = 0
        for name, spec in items.items():
            f = field(name)
            if isinstance(spec, tuple):
                value, m = spec
            else:
                value, m = spec, f.all_ones
            mask |= f.put(m)
            key |= f.put(value & m)
        return cls(key, mask)

    @classmethod
    def catchall(cls) -> Match:
        return cls(0, 0)

    @classmethod
    def from_packet_key(cls, packet_key: int, mask: int) -> Match:
        return cls(packet_key & mask, mask)

    def matches(self, packet_key: int) -> bool:
        return packet_key & self.mask == self.key

    def value(self, name: str) -> int:
        return BY_NAME[name].get(self.key)

    def field_mask(self, name: str) -> int:
        return BY_NAME[name].get(self.mask)

    def get(self, name: str) -> tuple[int, int]:
        f = BY_NAME[name]
        return f.get(self.key), f.get(self.mask)

    def is_exact(self, name: str) -> bool:
        f = BY_NAME[name]
        return f.get(self.mask) == f.all_ones

    def has(self, name: str) -> bool:
        """Does the match look at any bit of this field?"""
        return bool(self.mask & BY_NAME[name].field_mask)

    def fields(self) -> Iterator[tuple[Field, int, int]]:
        """(field, value, mask) of every field the match looks at."""
        for f in FIELDS:
            m = (self.mask >> f.offset) & f.all_ones
            if m:
                yield f, (self.key >> f.offset) & f.all_ones, m

    def with_field(self, name: str, value: int, mask: int | None = None) -> Match:
        f = field(name)
        m = f.all_ones if mask is None else mask
        clear = ~f.field_mask
        return Match((self.key & clear) | f.put(value & m), (self.mask & clear) | f.put(m))

    def without(self, *names: str) -> Match:
        clear = ALL_ONES
        for n in names:
            clear &= ~field(n).field_mask
        return Match(self.key & clear, self.mask & clear)

    def overlaps(self, other: Match) -> bool:
        """Can one packet match both?  True when they agree on shared bits."""
        common = self.mask & other.mask
        return (self.key & common) == (other.key & common)

    def __repr__(self) -> str:
        parts = []
        for f, v, m in self.fields():
            parts.append(f"{f.name}={v:#x}" + ("" if m == f.all_ones else f"/{m:#x}"))
        return "Match(" + ", ".join(parts) + ")"
