"""Helpers for translation tests: pipelines from Rule lists, packet keys."""

from __future__ import annotations

from collections.abc import Iterable

from dpif.fields import ETH_TYPE_IPV4, ETH_TYPE_VLAN
from dpif.match import pack
from ofproto.classifier import Pipeline
from ofproto.normal import MacTable, PortConfig, VlanMode
from ofproto.rule import Rule
from ofproto.xlate import XlateEnv

MAC_A = 0x0200_0000_000A
MAC_B = 0x0200_0000_000B
MAC_C = 0x0200_0000_000C
BCAST = 0xFFFF_FFFF_FFFF


def pipeline(rules: Iterable[Rule]) -> Pipeline[Rule]:
    p: Pipeline[Rule] = Pipeline()
    for i, r in enumerate(rules):
        p.insert(r.table, i + 1, r, r.match.key, r.match.mask, r.priority)
    return p


def env(rules: Iterable[Rule], ports: dict[int, PortConfig] | None = None,
        macs: MacTable | None = None) -> XlateEnv:
    if ports is None:
        ports = {n: PortConfig(n, f"p{n}") for n in range(1, 5)}
    return XlateEnv(pipeline(rules), ports, macs if macs is not None else MacTable(), now=0.0)


def ip_key(in_port: int = 1, src: int = 0x0A000001, dst: int = 0x0A000102,
           proto: int = 6, sport: int = 1234, dport: int = 80, ttl: int = 64,
           vid: int | None = None, eth_src: int = MAC_A, eth_dst: int = MAC_B,
           tpid: int = ETH_TYPE_VLAN) -> int:
    v = {"in_port": in_port, "eth_src": eth_src, "eth_dst": eth_dst,
         "eth_type": ETH_TYPE_IPV4, "ipv4_src": src, "ipv4_dst": dst, "ip_proto": proto,
         "ip_ttl": ttl, "tp_src": sport, "tp_dst": dport}
    if vid is not None:
        v |= {"vlan_tpid": tpid, "vlan_vid": vid}
    return pack(v)


def access_trunk_ports() -> dict[int, PortConfig]:
    return {
        1: PortConfig(1, "a10", VlanMode.ACCESS, tag=10),
        2: PortConfig(2, "b10", VlanMode.ACCESS, tag=10),
        3: PortConfig(3, "c20", VlanMode.ACCESS, tag=20),
        4: PortConfig(4, "trunk", VlanMode.TRUNK),
    }
