"""NORMAL's decision and MAC table: learning, moves, aging, flooding, VLANs."""

from __future__ import annotations

from dpif.fields import ETH_TYPE_VLAN
from dpif.match import pack
from ofproto.normal import (
    M_ETH_DST, M_ETH_SRC, M_ETH_SRC_GROUP, M_IN_PORT, M_VLAN_TPID, M_VLAN_VID, Learn,
    MacTable, PortConfig, VlanMode, decide_normal,
)

A, B, C = 0x0200_0000_000A, 0x0200_0000_000B, 0x0200_0000_000C
BCAST = 0xFFFF_FFFF_FFFF

PORTS = {
    1: PortConfig(1, "p1", VlanMode.ACCESS, tag=10),
    2: PortConfig(2, "p2", VlanMode.ACCESS, tag=10),
    3: PortConfig(3, "p3", VlanMode.ACCESS, tag=20),
    4: PortConfig(4, "trunk", VlanMode.TRUNK),
    5: PortConfig(5, "t20", VlanMode.TRUNK, trunks=frozenset({20})),
}


def flow(in_port: int, src: int, dst: int, vid: int | None = None) -> int:
    v = {"in_port": in_port, "eth_src": src, "eth_dst": dst, "eth_type": 0x0800}
    if vid is not None:
        v |= {"vlan_tpid": ETH_TYPE_VLAN, "vlan_vid": vid}
    return pack(v)


def test_unknown_destination_floods_the_vlan_without_hairpin() -> None:
    d = decide_normal(flow(1, A, B), PORTS, MacTable(), 0.0)
    assert d.flooded and d.vlan == 10
    assert d.outputs == ((2, None), (4, 10))
    assert d.learn == Learn(10, A, 1)


def test_learned_destination_is_unicast_and_moves() -> None:
    macs = MacTable()
    macs.learn(10, B, 2, 0.0)
    d = decide_normal(flow(1, A, B), PORTS, macs, 1.0)
    assert d.outputs == ((2, None),) and not d.flooded
    assert macs.learn(10, B, 4, 2.0) == "moved" and macs.moves == 1
    d = decide_normal(flow(1, A, B), PORTS, macs, 3.0)
    assert d.outputs == ((4, 10),)


def test_no_hairpin() -> None:
    macs = MacTable()
    macs.learn(10, B, 1, 0.0)
    d = decide_normal(flow(1, A, B), PORTS, macs, 0.0)
    assert d.outputs == () and d.drop is not None and "input port" in d.drop


def test_aging() -> None:
    macs = MacTable(aging=10.0)
    assert macs.learn(10, B, 2, 0.0) == "new"
    v = macs.version
    assert decide_normal(flow(1, A, B), PORTS, macs, 9.9).outputs == ((2, None),)
    assert decide_normal(flow(1, A, B), PORTS, macs, 10.0).flooded
    assert macs.learn(10, B, 2, 5.0) == "refreshed" and macs.version == v
    assert macs.expire(20.0) == 1 and len(macs) == 0 and macs.version == v + 1


def test_size_limit_evicts_least_recently_seen() -> None:
    macs = MacTable(max_entries=2)
    macs.learn(10, A, 1, 0.0)
    macs.learn(10, B, 2, 1.0)
    macs.learn(10, A, 1, 2.0)  # A refreshed
    macs.learn(10, C, 3, 3.0)
    assert {e.mac for e in macs.entries()} == {A, C}


def test_broadcast_floods_and_multicast_source_drops() -> None:
    assert decide_normal(flow(3, A, BCAST), PORTS, MacTable(), 0.0).outputs == ((4, 20), (5, 20))
    d = decide_normal(flow(1, BCAST, A), PORTS, MacTable(), 0.0)
    assert d.drop == "multicast source address" and d.learn is None


def test_trunk_input_vlans() -> None:
    d = decide_normal(flow(4, A, BCAST, vid=20), PORTS, MacTable(), 0.0)
    assert d.vlan == 20 and d.outputs == ((3, None), (5, 20))
    d = decide_normal(flow(5, A, BCAST, vid=10), PORTS, MacTable(), 0.0)
    assert d.drop is not None and "not trunked" in d.drop
    d = decide_normal(flow(4, A, BCAST), PORTS, MacTable(), 0.0)  # untagged: vlan 0
    assert d.vlan == 0 and d.outputs == ()  # only trunk 4 carries vlan 0; no hairpin
    assert d.consulted & M_VLAN_TPID and not d.consulted & M_VLAN_VID


def test_tagged_packet_on_access_port_is_dropped() -> None:
    d = decide_normal(flow(1, A, B, vid=10), PORTS, MacTable(), 0.0)
    assert d.drop is not None and "access port" in d.drop
    # priority-tagged (vid 0) is accepted as untagged
    assert decide_normal(flow(1, A, B, vid=0), PORTS, MacTable(), 0.0).vlan == 10


def test_consulted_fields() -> None:
    d = decide_normal(flow(1, A, B), PORTS, MacTable(), 0.0)
    assert d.consulted == M_IN_PORT | M_VLAN_TPID | M_ETH_SRC | M_ETH_DST
    d = decide_normal(flow(1, A, B), PORTS, MacTable(), 0.0, learning=False)
    assert d.consulted == M_IN_PORT | M_VLAN_TPID | M_ETH_SRC_GROUP | M_ETH_DST
    assert d.learn is None


def test_unknown_input_port_drops() -> None:
    d = decide_normal(flow(9, A, B), PORTS, MacTable(), 0.0)
    assert d.drop is not None and d.consulted == M_IN_PORT
