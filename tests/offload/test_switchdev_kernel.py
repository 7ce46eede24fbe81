"""Kernel tier: switchdev discovery against netdevsim, cross-checked with iproute2.

Each test gets netdevsim (unique id, own netns) from tests/kernel/netns.py;
``devlink -j`` and ``ip -d -j link`` are the independent oracle.
"""

from __future__ import annotations

from typing import Any

import pytest

from dpif.errors import DeviceError, OffloadError
from kernel.netns import delete_netdevsim
from offload.switchdev import EswitchMode, PortFlavour, Switchdev, discover

pytestmark = pytest.mark.kernel


def _devlink_mode(nsim: Any) -> str:
    data = nsim.ns.json('devlink', '-j', 'dev', 'eswitch', 'show', nsim.devlink_handle)
    return str(data['dev'][nsim.devlink_handle]['mode'])


def test_discover_netdevsim_in_switchdev_mode(netdevsim: Any) -> None:
    topo = discover(netdevsim.ns.name)
    sw = topo.eswitch(netdevsim.devlink_handle)
    assert sw is not None, [s.name for s in topo]
    assert sw.mode is EswitchMode.SWITCHDEV
    assert _devlink_mode(netdevsim) == 'switchdev'

    reps = sorted(sw.representors, key=lambda p: p.vf or 0)
    assert [r.netdev for r in reps] == [netdevsim.representors['pf0vf0'],
                                       netdevsim.representors['pf0vf1']]
    assert [r.flavour for r in reps] == [PortFlavour.PCI_VF] * 2
    assert [(r.pf, r.vf) for r in reps] == [(0, 0), (0, 1)]

    (uplink,) = netdevsim.uplinks
    up = sw.port(uplink)
    assert up is not None and up.flavour is PortFlavour.PHYSICAL

    # one phys_switch_id for the PF port and both representors, as sysfs sees it
    # (not ``ip -j``: iproute2 truncates netdevsim's 32-byte id to 31 bytes)
    ids = {netdevsim.ns.run('cat', f'/sys/class/net/{n}/phys_switch_id').stdout.strip()
           for n in [uplink, *netdevsim.representors.values()]}
    assert len(ids) == 1
    assert sw.switch_id is not None and sw.switch_id.replace(':', '') == ids.pop()
    for name, netdev in netdevsim.representors.items():
        assert netdevsim.ns.link(netdev)['phys_port_name'] == name
        port = topo.port_of(netdev)
        assert port is not None and port.ifindex == netdevsim.ns.link(netdev)['ifindex']
        assert topo.eswitch_of(netdev) is sw
        assert topo.same_eswitch(netdev, uplink)


def test_two_netdevsims_are_two_eswitches(netdevsim_factory: Any) -> None:
    a = netdevsim_factory(1)
    b = netdevsim_factory(1, ns=a.ns)
    topo = discover(a.ns.name)
    ra, rb = a.representors['pf0vf0'], b.representors['pf0vf0']
    assert topo.eswitch_of(ra) is topo.eswitch(a.devlink_handle)
    assert topo.eswitch_of(rb) is topo.eswitch(b.devlink_handle)
    assert not topo.same_eswitch(ra, rb)
    assert topo.same_eswitch(ra, a.uplinks[0])


def test_eswitch_mode_round_trip(netdevsim: Any) -> None:
    h = netdevsim.devlink_handle
    with Switchdev(netdevsim.ns.name) as sd:
        sd.set_eswitch_mode(h, EswitchMode.LEGACY)
        assert sd.eswitch_mode(h) is EswitchMode.LEGACY
        assert _devlink_mode(netdevsim) == 'legacy'
        legacy = sd.discover().eswitch(h)
        assert legacy is not None and legacy.representors == ()

        sd.set_eswitch_mode(h, EswitchMode.SWITCHDEV)
        assert sd.eswitch_mode(h) is EswitchMode.SWITCHDEV
        assert _devlink_mode(netdevsim) == 'switchdev'
        sw = sd.discover().eswitch(h)
        assert sw is not None and sorted(r.vf for r in sw.representors
                                         if r.vf is not None) == [0, 1]
    # the oracle agrees on the port list too
    netdevsim.refresh()
    assert sorted(netdevsim.representors) == ['pf0vf0', 'pf0vf1']


def test_port_dump_matches_devlink_tool(netdevsim: Any) -> None:
    with Switchdev(netdevsim.ns.name) as sd:
        ports = {f'{p.handle}/{p.index}': p for p in sd.ports(netdevsim.devlink_handle)}
    assert set(ports) == {p['handle'] for p in netdevsim.ports}
    for ref in netdevsim.ports:
        p = ports[ref['handle']]
        assert p.flavour is not None and p.flavour.value == ref['flavour']
        assert p.netdev == ref.get('netdev')
        assert p.pf == ref.get('pfnum') and p.vf == ref.get('vfnum')
        assert p.external == ref.get('external', False)
        if 'controller' in ref:
            assert p.controller == ref['controller']


def test_veth_is_on_no_eswitch(netdevsim: Any, veth_factory: Any) -> None:
    ns = netdevsim.ns
    veth_factory(ns, 'fpva', ns, 'fpvb')
    rep = netdevsim.representors['pf0vf0']
    with Switchdev(ns.name) as sd:
        topo = sd.discover()
        assert topo.eswitch_of('fpva') is None
        assert not topo.same_eswitch('fpva', rep)
        assert not topo.same_eswitch('fpva', 'fpvb')
        state = sd.tc_offload('fpva')
        assert not state.available and not state.active     # "off [fixed]"
        with pytest.raises(OffloadError) as info:
            sd.enable_tc_offload('fpva')
        assert 'fpva' in str(info.value)


def test_hw_tc_offload_on_representor(netdevsim: Any) -> None:
    rep = netdevsim.representors['pf0vf1']
    with Switchdev(netdevsim.ns.name) as sd:
        before = sd.tc_offload(rep)
        assert before.available
        assert sd.enable_tc_offload(rep).active
        assert 'hw-tc-offload: on' in netdevsim.ns.run('ethtool', '-k', rep).stdout
        assert not sd.enable_tc_offload(rep, on=False).active
        assert 'hw-tc-offload: off' in netdevsim.ns.run('ethtool', '-k', rep).stdout


def test_vanished_device_errors_name_it(netdevsim_factory: Any) -> None:
    nsim = netdevsim_factory(2)
    rep = nsim.representors['pf0vf0']
    h = nsim.devlink_handle
    with Switchdev(nsim.ns.name) as sd:
        assert sd.eswitch_mode(h) is EswitchMode.SWITCHDEV
        delete_netdevsim(nsim)
        with pytest.raises(DeviceError) as info:
            sd.eswitch_mode(h)
        assert h in str(info.value) and 'eswitch-get' in str(info.value)
        with pytest.raises(DeviceError) as info:
            sd.set_eswitch_mode(h, EswitchMode.LEGACY)
        assert h in str(info.value)
        with pytest.raises(DeviceError) as info:
            sd.tc_offload(rep)
        assert rep in str(info.value)
        with pytest.raises(DeviceError) as info:
            sd.link(rep)
        assert rep in str(info.value)
        assert sd.discover().eswitch(h) is None


def test_missing_netns_is_a_device_error() -> None:
    with pytest.raises(DeviceError) as info:
        discover('fp-no-such-netns-0')
    assert 'fp-no-such-netns-0' in str(info.value)
