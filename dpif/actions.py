"""Datapath actions: small frozen values, executed by swpath, encoded by offload.

An action list is a tuple of these values, applied in order; the empty tuple
drops the packet (printed ``drop``, as OVS does).  Values only: how a
datapath runs them lives in that datapath.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dpif.errors import ValidationError
from dpif.fields import BY_NAME, ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD, GROUP_BY_NAME

UINT32_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Output:
    port: int


@dataclass(frozen=True, slots=True)
class PushVlan:
    vid: int
    pcp: int = 0
    tpid: int = ETH_TYPE_VLAN

    def __post_init__(self) -> None:
        if not 0 <= self.vid < 4096:
            raise ValidationError("vlan id out of range 0..4095", vid=self.vid)
        if not 0 <= self.pcp < 8:
            raise ValidationError("vlan pcp out of range 0..7", pcp=self.pcp)
        if self.tpid not in (ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD):
            raise ValidationError("vlan tpid must be 0x8100 or 0x88a8", tpid=hex(self.tpid))


@dataclass(frozen=True, slots=True)
class PopVlan:
    pass


@dataclass(frozen=True, slots=True)
class SetField:
    """``set(group(attr=value[/mask],...))``: rewrite header fields.

    ``fields`` holds (field name, value, mask); a mask that is not all ones
    makes it OVS's masked set.  ``group`` is the text group (``ipv4``,
    ``tcp``, ``tunnel``...); the tunnel group is "set tunnel metadata".
    """

    group: str
    fields: tuple[tuple[str, int, int], ...]

    def __post_init__(self) -> None:
        g = GROUP_BY_NAME.get(self.group)
        if g is None:
            raise ValidationError("set of an unknown header group", group=self.group)
        if not self.fields:
            raise ValidationError("set needs at least one field", group=self.group)
        order = g.field_names()
        allowed = set(order)
        if any(n not in allowed for n, _, _ in self.fields):
            bad = next(n for n, _, _ in self.fields if n not in allowed)
            raise ValidationError("field is not part of the set group", group=self.group,
                                  field=bad)
        if len({n for n, _, _ in self.fields}) != len(self.fields):
            raise ValidationError("set names a field twice", group=self.group)
        # canonical order (the group's), so equal sets compare equal
        object.__setattr__(self, "fields", tuple(sorted(self.fields,
                                                        key=lambda t: order.index(t[0]))))
        for name, value, mask in self.fields:
            if name not in allowed:
                raise ValidationError("field is not part of the set group",
                                      group=self.group, field=name)
            f = BY_NAME[name]
            if value & ~mask or mask > f.all_ones or mask <= 0:
                raise ValidationError("set value/mask out of range or value outside mask",
                                      field=name)

    @property
    def masked(self) -> bool:
        return any(m != BY_NAME[n].all_ones for n, _, m in self.fields)


@dataclass(frozen=True, slots=True)
class DecTtl:
    """Decrement IPv4 TTL / IPv6 hop limit; at ttl <= 1 send to userspace."""


@dataclass(frozen=True, slots=True)
class Recirc:
    recirc_id: int


@dataclass(frozen=True, slots=True)
class Hash:
    """Compute dp_hash over the L4 5-tuple with ``basis``."""

    basis: int = 0
    alg: str = "l4"


@dataclass(frozen=True, slots=True)
class Sample:
    """Run ``actions`` on a copy of the packet with probability/UINT32_MAX."""

    probability: int
    actions: tuple[Action, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= UINT32_MAX:
            raise ValidationError("sample probability out of range", value=self.probability)

    @property
    def fraction(self) -> float:
        return self.probability / UINT32_MAX


@dataclass(frozen=True, slots=True)
class Userspace:
    """Send the packet to the upcall handler (``controller`` in OpenFlow)."""

    pid: int = 0
    userdata: bytes = b""


@dataclass(frozen=True, slots=True)
class Nat:
    kind: str | None = None  # "src", "dst" or None (reverse NAT of an existing entry)
    addr_min: str | None = None
    addr_max: str | None = None
    port_min: int | None = None
    port_max: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in (None, "src", "dst"):
            raise ValidationError("nat kind must be src or dst", kind=self.kind)
        for a in (self.addr_min, self.addr_max):
            if a is not None:
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    raise ValidationError("bad nat address", address=a) from None


@dataclass(frozen=True, slots=True)
class Ct:
    """Send through conntrack: ``ct(commit,zone=5,mark=..,nat(..))``."""

    commit: bool = False
    zone: int = 0
    mark: tuple[int, int] | None = None  # (value, mask)
    nat: Nat | None = None


@dataclass(frozen=True, slots=True)
class CtClear:
    pass


Action = (Output | PushVlan | PopVlan | SetField | DecTtl | Recirc | Hash | Sample
          | Userspace | Ct | CtClear)
Actions = tuple[Action, ...]


def outputs(actions: Actions) -> tuple[int, ...]:
    """Every output port of an action list, nested samples included."""
    out: list[int] = []
    for a in actions:
        if isinstance(a, Output):
            out.append(a.port)
        elif isinstance(a, Sample):
            out.extend(outputs(a.actions))
    return tuple(out)
