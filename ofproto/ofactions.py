"""OpenFlow actions: small frozen values, as ``ovs-ofctl`` spells them.

A rule's actions are a tuple of these, applied in order; the empty tuple drops
(printed ``drop``).  Translation (``ofproto/xlate.py``) turns them into
datapath actions; the text codec is ``ofproto/actiontext.py``.

Fields are named by ovs-ofctl names (``ofproto.offields``); values and masks
are raw bits of that field (``SetField("nw_tos", 4, 0x3f)`` sets DSCP 4, which
ovs-ofctl writes ``mod_nw_tos:16``).  ``SetField.spelling`` only remembers
which text produced it (``mod_nw_src``, ``set_field`` or ``load``), so a rule
prints back as it was written, as OVS does with its "raw" action types.

Ports: OpenFlow port numbers are datapath port numbers, 1:1; the reserved
numbers (``LOCAL`` 0xfffe, ``IN_PORT``, ``CONTROLLER``...) are in
``offields.PORT_NAMES``.  The reserved outputs are their own actions
(``InPort``, ``Normal``, ``Flood``, ``All``, ``Controller``, ``Local``), so
``Output.port`` is always a plain port number below 0xff00.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dpif import actions as dpa
from dpif.errors import ValidationError
from dpif.fields import ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD
from ofproto.offields import OFPP_MAX, OfField, of_field

CONTROLLER_REASONS = ("action", "no_match", "invalid_ttl", "action_set", "group",
                      "packet_out")
NAT_FLAGS = ("persistent", "hash", "random")


def _check_field(name: str, *, allow_virtual: bool = False) -> OfField:
    f = of_field(name)
    if f.virtual and not allow_virtual:
        raise ValidationError("field cannot be written by set_field/load/move "
                              "(use mod_vlan_vid/mod_vlan_pcp)", field=name)
    return f


@dataclass(frozen=True, slots=True)
class Output:
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port < OFPP_MAX:
            raise ValidationError("output port out of range (reserved ports have "
                                  "their own actions)", port=self.port)


@dataclass(frozen=True, slots=True)
class InPort:
    """Output to the port the packet came in on."""


@dataclass(frozen=True, slots=True)
class Normal:
    """The L2 learning switch (``ofproto/normal.py``)."""


@dataclass(frozen=True, slots=True)
class Flood:
    """Every port but the input port (and ports with flooding off)."""


@dataclass(frozen=True, slots=True)
class All:
    """Every port but the input port."""


@dataclass(frozen=True, slots=True)
class Local:
    """The bridge's local port (OF ``LOCAL``, datapath port 0xfffe)."""


@dataclass(frozen=True, slots=True)
class Controller:
    max_len: int = 65535
    reason: str = "action"
    userdata: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.max_len <= 0xFFFF:
            raise ValidationError("controller max_len out of range", max_len=self.max_len)
        if self.reason not in CONTROLLER_REASONS:
            raise ValidationError("unknown packet-in reason", reason=self.reason)


@dataclass(frozen=True, slots=True)
class SetVlanVid:
    """``mod_vlan_vid``: set the VID, pushing an 802.1Q tag if there is none."""

    vid: int

    def __post_init__(self) -> None:
        if not 0 <= self.vid <= 0xFFF:
            raise ValidationError("vlan id out of range 0..4095", vid=self.vid)


@dataclass(frozen=True, slots=True)
class SetVlanPcp:
    """``mod_vlan_pcp``: set the PCP, pushing an 802.1Q tag if there is none."""

    pcp: int

    def __post_init__(self) -> None:
        if not 0 <= self.pcp <= 7:
            raise ValidationError("vlan pcp out of range 0..7", pcp=self.pcp)


@dataclass(frozen=True, slots=True)
class StripVlan:
    """``strip_vlan``: remove the outer tag if any."""


@dataclass(frozen=True, slots=True)
class PushVlan:
    tpid: int = ETH_TYPE_VLAN

    def __post_init__(self) -> None:
        if self.tpid not in (ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD):
            raise ValidationError("push_vlan tpid must be 0x8100 or 0x88a8",
                                  tpid=hex(self.tpid))


@dataclass(frozen=True, slots=True)
class PopVlan:
    """``pop_vlan``: same effect as strip_vlan, OpenFlow 1.1+ spelling."""


@dataclass(frozen=True, slots=True)
class SetField:
    """Write ``value`` under ``mask`` into ``field`` (raw bits of that field)."""

    field: str
    value: int
    mask: int
    spelling: str = "set_field"  # "set_field", "load" or the mod_* action name

    def __post_init__(self) -> None:
        f = _check_field(self.field)
        if self.mask <= 0 or self.mask > f.all_ones:
            raise ValidationError("set mask out of range", field=self.field,
                                  mask=hex(self.mask))
        if self.value < 0 or self.value & ~self.mask:
            raise ValidationError("set value has bits outside its mask",
                                  field=self.field, value=hex(self.value))

    @property
    def of_field(self) -> OfField:
        return of_field(self.field)


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A bit range of a field: ``NXM_NX_REG0[0..15]``."""

    field: str
    ofs: int
    n_bits: int

    def __post_init__(self) -> None:
        f = _check_field(self.field)
        if self.ofs < 0 or self.n_bits <= 0 or self.ofs + self.n_bits > f.bits:
            raise ValidationError("bit range outside the field", field=self.field,
                                  ofs=self.ofs, n_bits=self.n_bits)


@dataclass(frozen=True, slots=True)
class Move:
    """``move:SRC[a..b]->DST[c..d]``: copy ``n_bits`` bits."""

    src: str
    src_ofs: int
    dst: str
    dst_ofs: int
    n_bits: int

    def __post_init__(self) -> None:
        FieldRef(self.src, self.src_ofs, self.n_bits)
        FieldRef(self.dst, self.dst_ofs, self.n_bits)


@dataclass(frozen=True, slots=True)
class DecTtl:
    """Decrement IPv4 TTL / IPv6 hop limit; at 0 send invalid_ttl packet-in."""


@dataclass(frozen=True, slots=True)
class SetTunnel:
    tun_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.tun_id < 1 << 64:
            raise ValidationError("tunnel id out of range", tun_id=self.tun_id)


@dataclass(frozen=True, slots=True)
class Resubmit:
    """Look the flow up again.  ``port`` None keeps in_port; ``table`` None: this table."""

    port: int | None = None
    table: int | None = None

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 0xFFFF:
            raise ValidationError("resubmit port out of range", port=self.port)
        if self.table is not None and not 0 <= self.table < 255:
            raise ValidationError("resubmit table out of range 0..254", table=self.table)


@dataclass(frozen=True, slots=True)
class GotoTable:
    table: int

    def __post_init__(self) -> None:
        if not 0 <= self.table < 255:
            raise ValidationError("goto_table table out of range 0..254", table=self.table)


@dataclass(frozen=True, slots=True)
class Sample:
    """Sample with probability/65535 to an IPFIX collector set (psample offload)."""

    probability: int
    collector_set_id: int = 0
    obs_domain_id: int = 0
    obs_point_id: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 0xFFFF:
            raise ValidationError("sample probability out of range 0..65535",
                                  probability=self.probability)
        for n in ("collector_set_id", "obs_domain_id", "obs_point_id"):
            if not 0 <= getattr(self, n) <= 0xFFFFFFFF:
                raise ValidationError("sample id out of range", **{n: getattr(self, n)})


@dataclass(frozen=True, slots=True)
class Nat:
    """``nat``, ``nat(src=A[-B][:P[-Q]][,persistent|hash|random])``."""

    kind: str | None = None  # "src", "dst" or None: reverse NAT of the connection
    addr_min: str | None = None
    addr_max: str | None = None
    port_min: int | None = None
    port_max: int | None = None
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (None, "src", "dst"):
            raise ValidationError("nat kind must be src or dst", kind=self.kind)
        if self.kind is None and (self.addr_min or self.port_min is not None or self.flags):
            raise ValidationError("nat range needs src= or dst=")
        for a in (self.addr_min, self.addr_max):
            if a is not None:
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    raise ValidationError("bad nat address", address=a) from None
        for p in (self.port_min, self.port_max):
            if p is not None and not 0 <= p <= 0xFFFF:
                raise ValidationError("nat port out of range", port=p)
        for fl in self.flags:
            if fl not in NAT_FLAGS:
                raise ValidationError("unknown nat flag", flag=fl)

    def dp(self) -> dpa.Nat:
        """The datapath's NAT value (flags have no datapath meaning here)."""
        return dpa.Nat(self.kind, self.addr_min, self.addr_max, self.port_min, self.port_max)


@dataclass(frozen=True, slots=True)
class Ct:
    """``ct(commit,zone=Z|zone=FIELD[..],table=T,nat(...),exec(set_field:..->ct_mark))``."""

    commit: bool = False
    zone: int | FieldRef = 0
    table: int | None = None
    nat: Nat | None = None
    exec: tuple[SetField, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.zone, int) and not 0 <= self.zone <= 0xFFFF:
            raise ValidationError("ct zone out of range", zone=self.zone)
        if isinstance(self.zone, FieldRef) and self.zone.n_bits != 16:
            raise ValidationError("ct zone field must be 16 bits wide",
                                  field=self.zone.field)
        if self.table is not None and not 0 <= self.table < 255:
            raise ValidationError("ct table out of range 0..254", table=self.table)
        for a in self.exec:
            if of_field(a.field).name != "ct_mark":
                raise ValidationError("ct(exec(...)) may only set ct_mark", field=a.field)
        if self.exec and not self.commit:
            raise ValidationError("ct(exec(...)) requires commit")


OfAction = (Output | InPort | Normal | Flood | All | Local | Controller | SetVlanVid
            | SetVlanPcp | StripVlan | PushVlan | PopVlan | SetField | Move | DecTtl
            | SetTunnel | Resubmit | GotoTable | Sample | Ct)
OfActions = tuple[OfAction, ...]
