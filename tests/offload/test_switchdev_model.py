"""The pure eswitch model: records -> Topology, lookups, and the devlink table.

The records below are shaped like what the kernel dumped for netdevsim in
switchdev mode with 2 VFs (6.1) plus a veth pair, and like a two-PF
ConnectX host where each PF is its own devlink instance and eswitch.
"""

from __future__ import annotations

import pytest

from offload import devlink_nla as nla
from offload.eswitch import decode_port
from offload.switchdev import (
    DevlinkDevice,
    DevlinkPort,
    EswitchMode,
    LinkInfo,
    PortFlavour,
    build_topology,
)

NSIM = 'netdevsim/netdevsim10'
# netdevsim's phys_switch_id is 32 bytes (measured on 6.1)
SID = ':'.join(['6d', 'ff', '05', '2e'] * 8)

NSIM_DEVICES = [DevlinkDevice(NSIM, EswitchMode.SWITCHDEV)]
NSIM_PORTS = [
    DevlinkPort(NSIM, 0, PortFlavour.PHYSICAL, 'eni10np1', 3, number=1),
    DevlinkPort(NSIM, 128, PortFlavour.PCI_VF, 'eni10npf0vf0', 4, pf=0, vf=0, controller=0),
    DevlinkPort(NSIM, 129, PortFlavour.PCI_VF, 'eni10npf0vf1', 5, pf=0, vf=1, controller=0),
]
NSIM_LINKS = [
    LinkInfo('lo', 1),
    LinkInfo('vea', 2),
    LinkInfo('eni10np1', 3, SID, 'p1'),
    LinkInfo('eni10npf0vf0', 4, SID, 'pf0vf0'),
    LinkInfo('eni10npf0vf1', 5, SID, 'pf0vf1'),
    LinkInfo('veb', 6),
]


def nsim_topology():  # type: ignore[no-untyped-def]
    return build_topology(NSIM_DEVICES, NSIM_PORTS, NSIM_LINKS)


def test_netdevsim_eswitch_and_representors() -> None:
    topo = nsim_topology()
    (sw,) = topo.eswitches
    assert sw.handle == NSIM
    assert sw.mode is EswitchMode.SWITCHDEV
    assert sw.switch_id == SID
    reps = sw.representors
    assert [r.netdev for r in reps] == ['eni10npf0vf0', 'eni10npf0vf1']
    assert [r.vf for r in reps] == [0, 1]
    assert {r.flavour for r in reps} == {PortFlavour.PCI_VF}
    assert all(r.pf == 0 for r in reps)
    # local controller: not "external", so no controller number in the model
    assert all(r.controller is None and not r.external for r in reps)
    up = sw.port('eni10np1')
    assert up is not None and up.flavour is PortFlavour.PHYSICAL and up.number == 1


def test_lookups() -> None:
    topo = nsim_topology()
    sw = topo.eswitch_of('eni10npf0vf1')
    assert sw is not None and sw.handle == NSIM
    assert topo.eswitch(NSIM) is sw
    assert topo.eswitch_of('vea') is None
    assert topo.eswitch_of('nonexistent') is None
    port = topo.port_of('eni10npf0vf0')
    assert port is not None and port.ifindex == 4 and port.index == 128
    assert topo.same_eswitch('eni10npf0vf0', 'eni10npf0vf1')
    assert topo.same_eswitch('eni10npf0vf0', 'eni10np1')
    assert not topo.same_eswitch('eni10npf0vf0', 'vea')
    assert not topo.same_eswitch('vea', 'veb')


def test_netdev_name_follows_the_link_by_ifindex() -> None:
    """A rename between the devlink and the link dump: the link name wins."""
    links = [LinkInfo('renamed', 4, SID, 'pf0vf0') if li.ifindex == 4 else li
             for li in NSIM_LINKS]
    topo = build_topology(NSIM_DEVICES, NSIM_PORTS, links)
    assert topo.eswitch_of('renamed') is not None
    assert topo.eswitch_of('eni10npf0vf0') is None


def test_legacy_mode_device_without_netdev_ports() -> None:
    topo = build_topology([DevlinkDevice(NSIM, EswitchMode.LEGACY)],
                          [DevlinkPort(NSIM, 0, PortFlavour.PHYSICAL, 'eni10np1', 3, number=1)],
                          [LinkInfo('eni10np1', 3, SID, 'p1')])
    (sw,) = topo.eswitches
    assert sw.mode is EswitchMode.LEGACY
    assert sw.representors == ()


def test_two_pf_host_is_two_eswitches() -> None:
    pf0, pf1 = 'pci/0000:03:00.0', 'pci/0000:03:00.1'
    sid0, sid1 = 'aa:00:00:00:00:00:00:01', 'aa:00:00:00:00:00:00:02'
    topo = build_topology(
        [DevlinkDevice(pf0, EswitchMode.SWITCHDEV), DevlinkDevice(pf1, EswitchMode.LEGACY)],
        [DevlinkPort(pf0, 65535, PortFlavour.PHYSICAL, 'enp3s0f0np0', 10, number=0),
         DevlinkPort(pf0, 1, PortFlavour.PCI_VF, 'enp3s0f0npf0vf0', 11, pf=0, vf=0),
         DevlinkPort(pf0, 2, PortFlavour.PCI_SF, 'en3f0pf0sf88', 12, pf=0, sf=88),
         DevlinkPort(pf0, 3, PortFlavour.PCI_PF, 'enp3s0f0c1pf0', 13, pf=0, controller=1,
                     external=True),
         DevlinkPort(pf1, 131071, PortFlavour.PHYSICAL, 'enp3s0f1np1', 20, number=1)],
        [LinkInfo('enp3s0f0np0', 10, sid0, 'p0'), LinkInfo('enp3s0f0npf0vf0', 11, sid0, 'pf0vf0'),
         LinkInfo('en3f0pf0sf88', 12, sid0, 'pf0sf88'),
         LinkInfo('enp3s0f0c1pf0', 13, sid0, 'c1pf0'),
         LinkInfo('enp3s0f1np1', 20, sid1, 'p1')])
    assert [sw.handle for sw in topo] == [pf0, pf1]
    assert topo.same_eswitch('enp3s0f0npf0vf0', 'en3f0pf0sf88')
    assert not topo.same_eswitch('enp3s0f0npf0vf0', 'enp3s0f1np1')
    ext = topo.port_of('enp3s0f0c1pf0')
    assert ext is not None and ext.external and ext.controller == 1
    sf = topo.port_of('en3f0pf0sf88')
    assert sf is not None and sf.flavour is PortFlavour.PCI_SF and sf.sf == 88


def test_shared_switch_id_across_devlink_instances_is_one_switch() -> None:
    """Multiport eswitch / LAG: two devlink instances, one phys_switch_id."""
    a, b = 'pci/0000:03:00.0', 'pci/0000:03:00.1'
    topo = build_topology(
        [DevlinkDevice(a, EswitchMode.SWITCHDEV), DevlinkDevice(b, EswitchMode.SWITCHDEV)],
        [DevlinkPort(a, 1, PortFlavour.PHYSICAL, 'p0', 10, number=0),
         DevlinkPort(b, 1, PortFlavour.PHYSICAL, 'p1', 11, number=1)],
        [LinkInfo('p0', 10, SID, 'p0'), LinkInfo('p1', 11, SID, 'p1')])
    assert topo.same_eswitch('p0', 'p1')


def test_netdevs_without_devlink_group_by_switch_id() -> None:
    topo = build_topology([], [], [
        LinkInfo('sw0p1', 7, 'beef', 'p1'), LinkInfo('sw0p2', 8, 'beef', 'p2'),
        LinkInfo('rep0', 9, 'beef', 'pf0vf5'), LinkInfo('odd', 10, 'beef', 'weird-name'),
        LinkInfo('other', 11, 'cafe', 'p1'), LinkInfo('veth0', 12)])
    sw = topo.eswitch_of('rep0')
    assert sw is not None and sw.handle is None and sw.mode is None and sw.switch_id == 'beef'
    rep = topo.port_of('rep0')
    assert rep is not None and rep.flavour is PortFlavour.PCI_VF and rep.vf == 5
    odd = topo.port_of('odd')
    assert odd is not None and odd.flavour is None
    assert topo.same_eswitch('sw0p1', 'odd')
    assert not topo.same_eswitch('sw0p1', 'other')
    assert topo.eswitch_of('veth0') is None


def test_ports_of_unlisted_device_still_form_an_eswitch() -> None:
    topo = build_topology([], NSIM_PORTS, NSIM_LINKS)
    (sw,) = topo.eswitches
    assert sw.handle == NSIM and sw.mode is None and len(sw.ports) == 3


def test_topology_is_a_value() -> None:
    assert nsim_topology() == nsim_topology()
    assert hash(nsim_topology()) == hash(nsim_topology())


# -- the devlink attribute table -------------------------------------------

# enum devlink_attr numbers from include/uapi/linux/devlink.h (6.1)
KERNEL_ATTRS = {
    'DEVLINK_ATTR_BUS_NAME': 1, 'DEVLINK_ATTR_DEV_NAME': 2, 'DEVLINK_ATTR_PORT_INDEX': 3,
    'DEVLINK_ATTR_PORT_TYPE': 4, 'DEVLINK_ATTR_PORT_NETDEV_IFINDEX': 6,
    'DEVLINK_ATTR_PORT_NETDEV_NAME': 7, 'DEVLINK_ATTR_ESWITCH_MODE': 25,
    'DEVLINK_ATTR_ESWITCH_INLINE_MODE': 26, 'DEVLINK_ATTR_PAD': 61,
    'DEVLINK_ATTR_ESWITCH_ENCAP_MODE': 62, 'DEVLINK_ATTR_PORT_FLAVOUR': 77,
    'DEVLINK_ATTR_PORT_NUMBER': 78, 'DEVLINK_ATTR_PORT_SPLIT_SUBPORT_NUMBER': 79,
    'DEVLINK_ATTR_PORT_PCI_PF_NUMBER': 127, 'DEVLINK_ATTR_PORT_PCI_VF_NUMBER': 128,
    'DEVLINK_ATTR_PORT_FUNCTION': 145, 'DEVLINK_ATTR_PORT_SPLITTABLE': 148,
    'DEVLINK_ATTR_PORT_EXTERNAL': 149, 'DEVLINK_ATTR_PORT_CONTROLLER_NUMBER': 150,
    'DEVLINK_ATTR_RELOAD_ACTION': 153, 'DEVLINK_ATTR_PORT_PCI_SF_NUMBER': 164,
    'DEVLINK_ATTR_RATE_TYPE': 165, 'DEVLINK_ATTR_NESTED_DEVLINK': 175,
    'DEVLINK_ATTR_SELFTESTS': 176,
}


@pytest.mark.parametrize(('name', 'number'), sorted(KERNEL_ATTRS.items(), key=lambda kv: kv[1]))
def test_attribute_numbers_match_the_kernel(name: str, number: int) -> None:
    assert nla.attr_number(name) == number


def test_table_has_no_duplicates_and_kernel_prefix() -> None:
    names = [n for n, _ in nla.devlinkmsg.nla_map]
    assert len(names) == len(set(names)) == 177
    assert all(n.startswith('DEVLINK_ATTR_') for n in names)


def _port_msg(attrs: list[list[object]]) -> nla.devlinkmsg:
    msg = nla.devlinkmsg()
    msg['cmd'] = nla.DEVLINK_CMD_PORT_NEW
    msg['version'] = 1
    msg['attrs'] = attrs
    msg.encode()
    out = nla.devlinkmsg(msg.data)
    out.decode()
    return out


def test_port_message_encodes_every_attribute_and_decodes_to_a_record() -> None:
    attrs: list[list[object]] = [
        ['DEVLINK_ATTR_BUS_NAME', 'pci'], ['DEVLINK_ATTR_DEV_NAME', '0000:03:00.0'],
        ['DEVLINK_ATTR_PORT_INDEX', 7], ['DEVLINK_ATTR_PORT_NETDEV_IFINDEX', 42],
        ['DEVLINK_ATTR_PORT_NETDEV_NAME', 'en3f0c2pf1sf9'],
        ['DEVLINK_ATTR_PORT_FLAVOUR', nla.DEVLINK_PORT_FLAVOUR_PCI_SF],
        ['DEVLINK_ATTR_PORT_PCI_PF_NUMBER', 1], ['DEVLINK_ATTR_PORT_PCI_SF_NUMBER', 9],
        ['DEVLINK_ATTR_PORT_CONTROLLER_NUMBER', 2], ['DEVLINK_ATTR_PORT_EXTERNAL', 1],
        ['DEVLINK_ATTR_PORT_FUNCTION',
         {'attrs': [['DEVLINK_PORT_FUNCTION_ATTR_HW_ADDR', '02:00:00:00:00:09'],
                    ['DEVLINK_PORT_FN_ATTR_STATE', 1]]}],
    ]
    msg = _port_msg(attrs)
    # nothing was dropped on encode (pyroute2 drops unknown names silently)
    assert [a[0] for a in msg['attrs']] == [a[0] for a in attrs]
    port = decode_port(msg)
    assert port == DevlinkPort('pci/0000:03:00.0', 7, PortFlavour.PCI_SF, 'en3f0c2pf1sf9', 42,
                               controller=2, external=True, pf=1, sf=9)


def test_unknown_flavour_number_decodes_to_none() -> None:
    port = decode_port(_port_msg([['DEVLINK_ATTR_BUS_NAME', 'x'], ['DEVLINK_ATTR_DEV_NAME', 'y'],
                                  ['DEVLINK_ATTR_PORT_INDEX', 0],
                                  ['DEVLINK_ATTR_PORT_FLAVOUR', 99]]))
    assert port.flavour is None and port.handle == 'x/y'


def test_offload_refusal_reasons() -> None:
    topo = nsim_topology()
    assert topo.offload_refusal('eni10npf0vf0', ['eni10npf0vf1', 'eni10np1']) is None
    assert topo.offload_refusal('eni10npf0vf0', []) is None
    assert topo.offload_refusal('vea', ['eni10np1']) == 'vea is not an eswitch port'
    reason = topo.offload_refusal('eni10npf0vf0', ['eni10np1', 'veb'])
    assert reason == f'output veb is not on eswitch {NSIM} of eni10npf0vf0'
    legacy = build_topology([DevlinkDevice(NSIM, EswitchMode.LEGACY)], NSIM_PORTS, NSIM_LINKS)
    assert legacy.offload_refusal('eni10npf0vf0', ['eni10npf0vf1']) == (
        f'eswitch {NSIM} of eni10npf0vf0 is in legacy mode, not switchdev')
    no_eswitch_ops = build_topology([DevlinkDevice(NSIM, None)], NSIM_PORTS, NSIM_LINKS)
    assert 'unknown mode' in (no_eswitch_ops.offload_refusal('eni10npf0vf0', []) or '')
