"""Switchdev: devlink eswitches, representors and ``hw-tc-offload`` -- the edge.

Theory of operation
-------------------
The offload datapath needs three facts about a netdev before it sends a tc
flower rule: is it a port of a hardware eswitch, is that eswitch in
``switchdev`` mode, and is every output port on the *same* eswitch.  This
module answers them and is the only place that talks to the kernel for them:

- devlink over generic netlink (``offload.devlink_nla``): device dump,
  ``DEVLINK_CMD_ESWITCH_GET``/``SET`` and the port dump;
- rtnetlink: links with ``IFLA_PHYS_SWITCH_ID`` / ``IFLA_PHYS_PORT_NAME``;
- the ETHTOOL_GFEATURES/SFEATURES ioctl for ``hw-tc-offload``.

``Switchdev`` reads those into frozen records and hands them to the pure
``offload.eswitch.build_topology()``; ``discover()`` is the one-call form.
The model types are re-exported here, so callers import only this module:

    topo = discover()
    sw = topo.eswitch_of('eni10npf0vf0')       # Eswitch or None
    topo.same_eswitch('eni10npf0vf0', 'eni10np1')

Errors: pyroute2 ``NetlinkError`` and ``OSError`` are mapped exactly once,
in ``_mapped()``: ENODEV/ENOENT -> ``DeviceError`` (the device is missing or
vanished), anything else -> ``OffloadError`` with the kernel's extack text.
Both name the device and the operation.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError

from dpif.errors import DeviceError, OffloadError
from offload import devlink_nla as nla
from offload.eswitch import (
    _MODE_FROM_KERNEL,
    _MODE_TO_KERNEL,
    DevlinkDevice,
    DevlinkPort,
    Eswitch,
    EswitchMode,
    EswitchPort,
    LinkInfo,
    Topology,
    build_topology,
    decode_link,
    decode_port,
)
from offload.port_name import PortFlavour, PortName, format_port_name, parse_port_name

__all__ = [
    'DevlinkDevice', 'DevlinkPort', 'Eswitch', 'EswitchMode', 'EswitchPort', 'LinkInfo',
    'PortFlavour', 'PortName', 'Switchdev', 'TcOffload', 'Topology', 'build_topology',
    'discover', 'format_port_name', 'parse_port_name',
]

log = structlog.get_logger(__name__)

HW_TC_OFFLOAD = 'hw-tc-offload'
_GONE = (errno.ENODEV, errno.ENOENT, errno.ENXIO)


@dataclass(frozen=True)
class TcOffload:
    """The ``hw-tc-offload`` feature of one netdev (``ethtool -k``)."""

    dev: str
    available: bool     # the driver lets it be changed (not "[fixed]")
    active: bool        # currently on


@contextmanager
def _mapped(op: str, dev: str | None) -> Iterator[None]:
    """Map lower-layer errors to the flowpath tree, naming ``dev`` and ``op``."""
    try:
        yield
    except NetlinkError as e:
        extack = e.args[1] if len(e.args) > 1 and e.args[1] != _strerror(e.code) else None
        if e.code in _GONE:
            raise DeviceError('device not found', dev=dev, op=op, errno=e.code,
                              reason=extack) from e
        raise OffloadError('kernel refused', extack=extack, errno=e.code,
                           dev=dev, op=op) from e
    except OSError as e:
        if e.errno in _GONE:
            raise DeviceError('device not found', dev=dev, op=op, errno=e.errno) from e
        raise OffloadError('kernel refused', extack=e.strerror, errno=e.errno,
                           dev=dev, op=op) from e


def _strerror(code: int) -> str:
    return os.strerror(code)


def _split_handle(handle: str) -> tuple[str, str]:
    bus, sep, dev = handle.partition('/')
    if not sep or not bus or not dev:
        raise DeviceError('devlink handle must be bus/device', dev=handle)
    return bus, dev


class Switchdev:
    """Netlink I/O for eswitch discovery and control; one instance per netns.

    Sockets are opened lazily and closed by ``close()`` / the context manager.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._dl: nla.DevlinkSocket | None = None
        self._ipr: Any = None

    def __enter__(self) -> Switchdev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for sock in (self._dl, self._ipr):
            if sock is not None:
                sock.close()
        self._dl = self._ipr = None

    # -- sockets ------------------------------------------------------------

    def _sock_kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = {'ext_ack': True}
        if self.netns is not None:
            kw['netns'] = self.netns
            kw['flags'] = 0     # never create a missing namespace (pyroute2 default O_CREAT)
        return kw

    def _devlink(self) -> nla.DevlinkSocket:
        if self._dl is None:
            with _mapped('devlink-open', self.netns):
                sock = nla.DevlinkSocket(**self._sock_kw())
                try:
                    sock.bind()
                except BaseException:
                    sock.close()
                    raise
            self._dl = sock
        return self._dl

    def _iproute(self) -> Any:
        if self._ipr is None:
            with _mapped('rtnl-open', self.netns):
                self._ipr = IPRoute(**self._sock_kw())
        return self._ipr

    def _request(self, cmd: int, attrs: list[list[Any]], flags: int) -> tuple[Any, ...]:
        sock = self._devlink()
        msg = nla.devlinkmsg()
        msg['cmd'] = cmd
        msg['version'] = 1
        msg['attrs'] = attrs
        return tuple(sock.nlm_request(msg, msg_type=sock.prid, msg_flags=flags))

    # -- devlink ------------------------------------------------------------

    def devices(self) -> tuple[str, ...]:
        """Handles (``bus/dev``) of every devlink instance in the netns."""
        with _mapped('devlink-dev-dump', None):
            msgs = self._request(nla.DEVLINK_CMD_GET, [], NLM_F_REQUEST | NLM_F_DUMP)
        return tuple(f"{m.get_attr('DEVLINK_ATTR_BUS_NAME')}/{m.get_attr('DEVLINK_ATTR_DEV_NAME')}"
                     for m in msgs)

    def eswitch_mode(self, handle: str) -> EswitchMode | None:
        """The eswitch mode of ``handle``; None if the driver has no eswitch."""
        bus, dev = _split_handle(handle)
        try:
            with _mapped('eswitch-get', handle):
                (msg,) = self._request(nla.DEVLINK_CMD_ESWITCH_GET,
                                       [['DEVLINK_ATTR_BUS_NAME', bus],
                                        ['DEVLINK_ATTR_DEV_NAME', dev]], NLM_F_REQUEST)
        except OffloadError as e:
            if e.errno == errno.EOPNOTSUPP:
                return None
            raise
        raw = msg.get_attr('DEVLINK_ATTR_ESWITCH_MODE')
        return _MODE_FROM_KERNEL.get(raw) if raw is not None else None

    def set_eswitch_mode(self, handle: str, mode: EswitchMode) -> None:
        """Switch ``handle`` to ``mode`` (legacy <-> switchdev); waits for the ack."""
        bus, dev = _split_handle(handle)
        log.info('eswitch mode set', dev=handle, mode=mode.value)
        with _mapped(f'eswitch-set {mode.value}', handle):
            self._request(nla.DEVLINK_CMD_ESWITCH_SET,
                          [['DEVLINK_ATTR_BUS_NAME', bus], ['DEVLINK_ATTR_DEV_NAME', dev],
                           ['DEVLINK_ATTR_ESWITCH_MODE', _MODE_TO_KERNEL[mode]]],
                          NLM_F_REQUEST | NLM_F_ACK)

    def ports(self, handle: str | None = None) -> tuple[DevlinkPort, ...]:
        """The devlink port dump (of one device if ``handle`` is given)."""
        attrs: list[list[Any]] = []
        if handle is not None:
            bus, dev = _split_handle(handle)
            attrs = [['DEVLINK_ATTR_BUS_NAME', bus], ['DEVLINK_ATTR_DEV_NAME', dev]]
        with _mapped('devlink-port-dump', handle):
            msgs = self._request(nla.DEVLINK_CMD_PORT_GET, attrs, NLM_F_REQUEST | NLM_F_DUMP)
        found = tuple(decode_port(m) for m in msgs)
        return found if handle is None else tuple(p for p in found if p.handle == handle)

    # -- rtnetlink ----------------------------------------------------------

    def links(self) -> tuple[LinkInfo, ...]:
        """Every link with its phys_switch_id / phys_port_name."""
        with _mapped('link-dump', None):
            return tuple(decode_link(m) for m in self._iproute().get_links())

    def link(self, ifname: str) -> LinkInfo:
        """One link by name; DeviceError naming it if it does not exist."""
        with _mapped('link-get', ifname):
            msgs = self._iproute().get_links(ifname=ifname)
        if not msgs:
            raise DeviceError('device not found', dev=ifname, op='link-get')
        return decode_link(msgs[0])

    # -- discovery ----------------------------------------------------------

    def discover(self) -> Topology:
        """This netns's eswitches and which netdev is which port."""
        devices = tuple(DevlinkDevice(h, self.eswitch_mode(h)) for h in self.devices())
        topo = build_topology(devices, self.ports(), self.links())
        log.debug('switchdev discovered', eswitches=[sw.name for sw in topo])
        return topo

    # -- hw-tc-offload ------------------------------------------------------

    def tc_offload(self, ifname: str) -> TcOffload:
        """Read the ``hw-tc-offload`` feature of ``ifname`` (``ethtool -k``)."""
        with self._features(ifname, 'features-get') as f:
            return TcOffload(ifname, available=f.available(), active=f.active())

    def enable_tc_offload(self, ifname: str, on: bool = True) -> TcOffload:
        """Turn ``hw-tc-offload`` on (or off); OffloadError if the device refuses
        (veth: the feature is fixed off)."""
        op = 'features-set hw-tc-offload ' + ('on' if on else 'off')
        with self._features(ifname, op) as f:
            if f.active() == on:
                return TcOffload(ifname, f.available(), on)
            if not f.available():
                raise OffloadError('feature is fixed', dev=ifname, op=op, feature=HW_TC_OFFLOAD)
            with _mapped(op, ifname):
                f.set(on)
        state = self.tc_offload(ifname)
        if state.active != on:
            raise OffloadError('feature did not change', dev=ifname, op=op,
                               feature=HW_TC_OFFLOAD)
        log.info('tc offload feature set', dev=ifname, on=on)
        return state

    @contextmanager
    def _features(self, ifname: str, op: str) -> Iterator[Any]:
        from pyroute2.ethtool.ioctl import IoctlEthtool, NotSupportedError
        with _mapped(op, ifname):
            eth = IoctlEthtool()
            eth.sock.close()
            eth.sock = self._ioctl_socket()
        try:
            eth.change_ifname(ifname)
            with _mapped(op, ifname):
                try:
                    feats = eth.get_features()
                except NotSupportedError as e:
                    raise OffloadError('ethtool features not supported', dev=ifname,
                                       op=op) from e
            if HW_TC_OFFLOAD not in feats:
                raise OffloadError('kernel has no such feature', dev=ifname, op=op,
                                   feature=HW_TC_OFFLOAD)
            yield _Features(eth, feats)
        finally:
            eth.sock.close()

    def _ioctl_socket(self) -> socket.socket:
        """An AF_INET socket in our netns (ethtool ioctls act on the socket's netns)."""
        if self.netns is None:
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        from pyroute2.netns import create_socket
        sock: socket.socket = create_socket(self.netns, socket.AF_INET, socket.SOCK_DGRAM,
                                            flags=0)
        return sock


@dataclass(frozen=True)
class _Features:
    """An open ethtool ioctl handle and the feature list it read."""

    eth: Any
    feats: Any

    def available(self) -> bool:
        return bool(self.feats.is_available(HW_TC_OFFLOAD))

    def active(self) -> bool:
        return bool(self.feats.is_active(HW_TC_OFFLOAD))

    def set(self, on: bool) -> None:
        from pyroute2.ethtool.ioctl import NotSupportedError
        self.feats.set_value(HW_TC_OFFLOAD, on)
        try:
            self.eth.set_features(self.feats)
        except NotSupportedError as e:
            # SFEATURES returns ETHTOOL_F_* bits when a request was not applied
            raise OSError(errno.EOPNOTSUPP, 'feature change not applied') from e

def discover(netns: str | None = None) -> Topology:
    """One-shot discovery: open, read, close."""
    with Switchdev(netns) as sd:
        return sd.discover()
