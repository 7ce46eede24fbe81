"""The eswitch model: a pure function from dumped records to eswitches.

Theory of operation
-------------------
A SmartNIC in switchdev mode exposes its embedded switch (eswitch) as one
devlink instance (``pci/0000:03:00.0``, ``netdevsim/netdevsim10``) whose
*ports* each have a netdev: the uplink (flavour ``physical``) and one
*representor* per PCI function (``pcipf``/``pcivf``/``pcisf``).  A tc flower
rule on a representor programs the eswitch; a ``mirred`` redirect can only be
offloaded to a netdev on the *same* switch, which the kernel decides by
comparing ``phys_switch_id`` (``IFLA_PHYS_SWITCH_ID``).

The I/O edge (``offload.switchdev.Switchdev``) turns kernel replies into plain
frozen *records* -- ``DevlinkDevice``, ``DevlinkPort``, ``LinkInfo`` -- with
the pure ``decode_*`` functions below; ``build_topology()`` joins them:

- each devlink device is one ``Eswitch``; its ports come from the port dump,
  netdev name/ifindex joined with the link records by ifindex;
- its ``switch_id`` is the phys_switch_id of its port netdevs;
- netdevs that have a phys_switch_id but belong to no devlink port (a driver
  without devlink ports, a devlink instance we cannot see) are grouped by
  switch_id into an ``Eswitch`` with ``handle=None``, flavours taken from
  ``phys_port_name``;
- ``Topology.same_eswitch(a, b)`` follows the kernel: equal phys_switch_id if
  both have one, else the same devlink handle.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from dpif.errors import ParseError
from offload import devlink_nla as nla
from offload.port_name import PortFlavour, PortName, parse_port_name

log = structlog.get_logger(__name__)


class EswitchMode(enum.Enum):
    """devlink eswitch mode; the value is iproute2's spelling."""

    LEGACY = 'legacy'
    SWITCHDEV = 'switchdev'


_MODE_FROM_KERNEL = {nla.DEVLINK_ESWITCH_MODE_LEGACY: EswitchMode.LEGACY,
                     nla.DEVLINK_ESWITCH_MODE_SWITCHDEV: EswitchMode.SWITCHDEV}
_MODE_TO_KERNEL = {v: k for k, v in _MODE_FROM_KERNEL.items()}
_FLAVOUR_FROM_KERNEL = {
    nla.DEVLINK_PORT_FLAVOUR_PHYSICAL: PortFlavour.PHYSICAL,
    nla.DEVLINK_PORT_FLAVOUR_CPU: PortFlavour.CPU,
    nla.DEVLINK_PORT_FLAVOUR_DSA: PortFlavour.DSA,
    nla.DEVLINK_PORT_FLAVOUR_PCI_PF: PortFlavour.PCI_PF,
    nla.DEVLINK_PORT_FLAVOUR_PCI_VF: PortFlavour.PCI_VF,
    nla.DEVLINK_PORT_FLAVOUR_VIRTUAL: PortFlavour.VIRTUAL,
    nla.DEVLINK_PORT_FLAVOUR_UNUSED: PortFlavour.UNUSED,
    nla.DEVLINK_PORT_FLAVOUR_PCI_SF: PortFlavour.PCI_SF,
}


# --------------------------------------------------------------------------
# Records: what the edge reads, as plain values.


@dataclass(frozen=True)
class DevlinkDevice:
    """One devlink instance and its eswitch mode (None: no eswitch support)."""

    handle: str
    mode: EswitchMode | None = None


@dataclass(frozen=True)
class DevlinkPort:
    """One entry of the devlink port dump."""

    handle: str
    index: int
    flavour: PortFlavour | None
    netdev: str | None = None
    ifindex: int | None = None
    controller: int | None = None
    external: bool = False
    pf: int | None = None
    vf: int | None = None
    sf: int | None = None
    number: int | None = None
    split: int | None = None


@dataclass(frozen=True)
class LinkInfo:
    """One rtnetlink link: name, ifindex, phys_switch_id and phys_port_name."""

    ifname: str
    ifindex: int
    switch_id: str | None = None
    port_name: str | None = None


# --------------------------------------------------------------------------
# The model.


@dataclass(frozen=True)
class EswitchPort:
    """A netdev's place on an eswitch (a representor when flavour is PCI)."""

    netdev: str | None
    ifindex: int | None
    flavour: PortFlavour | None
    controller: int | None = None
    pf: int | None = None
    vf: int | None = None
    sf: int | None = None
    number: int | None = None
    split: int | None = None
    index: int | None = None        # devlink port index; None if not from devlink
    external: bool = False

    @property
    def is_representor(self) -> bool:
        return self.flavour is not None and self.flavour.is_representor


@dataclass(frozen=True)
class Eswitch:
    """One hardware switch.  ``handle`` is the devlink ``bus/dev`` (or None)."""

    handle: str | None
    mode: EswitchMode | None
    switch_id: str | None
    ports: tuple[EswitchPort, ...] = ()

    def port(self, netdev: str) -> EswitchPort | None:
        for p in self.ports:
            if p.netdev == netdev:
                return p
        return None

    @property
    def representors(self) -> tuple[EswitchPort, ...]:
        return tuple(p for p in self.ports if p.is_representor)

    @property
    def name(self) -> str:
        return self.handle or f'switch_id:{self.switch_id}'


@dataclass(frozen=True)
class Topology:
    """This host's eswitches and which netdev is which port."""

    eswitches: tuple[Eswitch, ...] = ()
    _by_netdev: Mapping[str, tuple[Eswitch, EswitchPort]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index: dict[str, tuple[Eswitch, EswitchPort]] = {}
        for sw in self.eswitches:
            for p in sw.ports:
                if p.netdev is not None:
                    index[p.netdev] = (sw, p)
        object.__setattr__(self, '_by_netdev', index)

    def eswitch_of(self, ifname: str) -> Eswitch | None:
        """The eswitch ``ifname`` is a port of, or None (veth, bridge, ...)."""
        hit = self._by_netdev.get(ifname)
        return hit[0] if hit else None

    def port_of(self, ifname: str) -> EswitchPort | None:
        hit = self._by_netdev.get(ifname)
        return hit[1] if hit else None

    def eswitch(self, handle: str) -> Eswitch | None:
        for sw in self.eswitches:
            if sw.handle == handle:
                return sw
        return None

    def same_eswitch(self, a: str, b: str) -> bool:
        """True if netdevs ``a`` and ``b`` are ports of one hardware switch."""
        sa, sb = self.eswitch_of(a), self.eswitch_of(b)
        if sa is None or sb is None:
            return False
        if sa.switch_id is not None and sb.switch_id is not None:
            return sa.switch_id == sb.switch_id
        return sa.handle is not None and sa.handle == sb.handle

    def offload_refusal(self, ingress: str, outputs: Iterable[str]) -> str | None:
        """Why a flow from ``ingress`` to ``outputs`` cannot go to the eswitch, or None.

        The text is meant for ``NotOffloadable(reason)``: ingress not an eswitch
        port, its eswitch not in switchdev mode, or an output on another switch.
        """
        sw = self.eswitch_of(ingress)
        if sw is None:
            return f'{ingress} is not an eswitch port'
        if sw.handle is not None and sw.mode is not EswitchMode.SWITCHDEV:
            mode = sw.mode.value if sw.mode else 'unknown'
            return f'eswitch {sw.name} of {ingress} is in {mode} mode, not switchdev'
        for out in outputs:
            if not self.same_eswitch(ingress, out):
                return f'output {out} is not on eswitch {sw.name} of {ingress}'
        return None

    def __iter__(self) -> Iterator[Eswitch]:
        return iter(self.eswitches)


def build_topology(devices: Iterable[DevlinkDevice], ports: Iterable[DevlinkPort],
                   links: Iterable[LinkInfo]) -> Topology:
    """Pure: join devlink devices, devlink ports and links into a Topology."""
    links = list(links)
    by_ifindex = {link.ifindex: link for link in links}
    by_name = {link.ifname: link for link in links}
    ports_of: dict[str, list[DevlinkPort]] = {}
    for p in ports:
        ports_of.setdefault(p.handle, []).append(p)
    claimed: set[str] = set()
    eswitches: list[Eswitch] = []
    handles = [d.handle for d in devices]
    modes = {d.handle: d.mode for d in devices}
    for handle in ports_of:              # ports of a device the dump did not list
        if handle not in modes:
            handles.append(handle)
            modes[handle] = None
    for handle in handles:
        members: list[EswitchPort] = []
        switch_ids: list[str] = []
        for p in sorted(ports_of.get(handle, ()), key=lambda p: p.index):
            link = by_ifindex.get(p.ifindex) if p.ifindex is not None else None
            if link is None and p.netdev is not None:
                link = by_name.get(p.netdev)
            netdev = link.ifname if link else p.netdev
            if netdev is not None:
                claimed.add(netdev)
            if link is not None and link.switch_id and link.switch_id not in switch_ids:
                switch_ids.append(link.switch_id)
            members.append(EswitchPort(
                netdev=netdev, ifindex=link.ifindex if link else p.ifindex,
                flavour=p.flavour, controller=p.controller if p.external else None,
                pf=p.pf, vf=p.vf, sf=p.sf, number=p.number, split=p.split,
                index=p.index, external=p.external))
        if len(switch_ids) > 1:
            log.warning('devlink device spans several phys_switch_ids', dev=handle,
                        switch_ids=switch_ids)
        eswitches.append(Eswitch(handle=handle, mode=modes[handle],
                                 switch_id=switch_ids[0] if switch_ids else None,
                                 ports=tuple(members)))
    eswitches.extend(_orphan_switches(links, claimed))
    return Topology(tuple(eswitches))


def _orphan_switches(links: Iterable[LinkInfo], claimed: set[str]) -> list[Eswitch]:
    """Group netdevs with a phys_switch_id but no devlink port by switch id."""
    groups: dict[str, list[EswitchPort]] = {}
    for link in sorted(links, key=lambda link: link.ifindex):
        if not link.switch_id or link.ifname in claimed:
            continue
        name: PortName | None = None
        if link.port_name:
            try:
                name = parse_port_name(link.port_name)
            except ParseError:
                log.info('unknown phys_port_name form', dev=link.ifname,
                         port_name=link.port_name)
        groups.setdefault(link.switch_id, []).append(EswitchPort(
            netdev=link.ifname, ifindex=link.ifindex,
            flavour=name.flavour if name else None,
            controller=name.controller if name else None,
            pf=name.pf if name else None, vf=name.vf if name else None,
            sf=name.sf if name else None, number=name.port if name else None,
            split=name.split if name else None,
            external=bool(name and name.controller is not None)))
    return [Eswitch(handle=None, mode=None, switch_id=sid, ports=tuple(members))
            for sid, members in groups.items()]


# --------------------------------------------------------------------------
# Decoding pyroute2 messages into records (pure; messages are nla objects).


def _handle(msg: Any) -> str:
    return f"{msg.get_attr('DEVLINK_ATTR_BUS_NAME')}/{msg.get_attr('DEVLINK_ATTR_DEV_NAME')}"


def decode_port(msg: Any) -> DevlinkPort:
    """A ``DEVLINK_CMD_PORT_NEW`` message as a DevlinkPort record."""
    get = msg.get_attr
    raw_flavour = get('DEVLINK_ATTR_PORT_FLAVOUR')
    flavour = _FLAVOUR_FROM_KERNEL.get(raw_flavour) if raw_flavour is not None else None
    return DevlinkPort(
        handle=_handle(msg), index=get('DEVLINK_ATTR_PORT_INDEX'), flavour=flavour,
        netdev=get('DEVLINK_ATTR_PORT_NETDEV_NAME'),
        ifindex=get('DEVLINK_ATTR_PORT_NETDEV_IFINDEX'),
        controller=get('DEVLINK_ATTR_PORT_CONTROLLER_NUMBER'),
        external=bool(get('DEVLINK_ATTR_PORT_EXTERNAL')),
        pf=get('DEVLINK_ATTR_PORT_PCI_PF_NUMBER'),
        vf=get('DEVLINK_ATTR_PORT_PCI_VF_NUMBER'),
        sf=get('DEVLINK_ATTR_PORT_PCI_SF_NUMBER'),
        number=get('DEVLINK_ATTR_PORT_NUMBER'),
        split=get('DEVLINK_ATTR_PORT_SPLIT_SUBPORT_NUMBER'))


def decode_link(msg: Any) -> LinkInfo:
    """An rtnetlink ``RTM_NEWLINK`` message as a LinkInfo record."""
    return LinkInfo(ifname=msg.get_attr('IFLA_IFNAME'), ifindex=msg['index'],
                    switch_id=msg.get_attr('IFLA_PHYS_SWITCH_ID'),
                    port_name=msg.get_attr('IFLA_PHYS_PORT_NAME'))

