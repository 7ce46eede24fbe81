"""A daemon core on in-memory ports: the same ``Service`` (ControlCore +
ControlServer on a running Runner) as ``flowpath daemon run``, with MemPorts
instead of netdevs and the software datapath as the bridge's placer."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ofproto.bridge import Bridge
from ofproto.control import BridgeInfo
from ofproto.daemon import Service, port_info
from ofproto.normal import PortConfig
from ofproto.revalidator import RevalidatorConfig
from ofproto.ruletext import parse_rule
from swpath.datapath import SwDatapath
from swpath.ports import MemPort
from swpath.runner import Runner

MAC1 = bytes.fromhex("020000000001")
MAC2 = bytes.fromhex("020000000002")


def udp(src: bytes = MAC1, dst: bytes = MAC2, dport: int = 9999, sport: int = 1234) -> bytes:
    payload = b"x" * 16
    udp_h = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    ip_h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp_h) + len(payload), 0, 0, 64,
                       17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return dst + src + b"\x08\x00" + ip_h + udp_h + payload


def attach(br: Bridge, sw: SwDatapath, ports: Iterable[PortConfig],
           rules: Iterable[str] = (), now: float = 0.0) -> dict[int, MemPort]:
    """``sw``'s upcalls to ``br``, a MemPort per port (by number), and
    ``rules`` added to ``br``'s tables at ``now``."""
    sw.upcall = br.handle_upcall
    sw.action_upcall = br.handle_action_upcall
    mem = {p.number: MemPort(p.number, p.name) for p in ports}
    for m in mem.values():
        sw.add_port(m)
    for r in rules:
        br.tables.add(parse_rule(r), now)
    return mem


@dataclass
class Rig:
    bridge: Bridge
    sw: SwDatapath
    mem: dict[int, MemPort]
    runner: Runner
    service: Service
    socket: str


@contextmanager
def rig(*, packet_in_limit: int = 1024, serve: bool = True,
        reval: RevalidatorConfig | None = None) -> Iterator[Rig]:
    sw = SwDatapath()
    ports = [PortConfig(1, "p1"), PortConfig(2, "p2")]
    br = Bridge("br0", ports, placer=sw, packet_in_limit=packet_in_limit)
    mem = attach(br, sw, ports)
    runner = Runner(sw, mem.values())
    runner.start()
    d = tempfile.mkdtemp(prefix="fpctl")  # short: AF_UNIX paths are limited to 107 bytes
    path = os.path.join(d, "br0.sock")
    info = BridgeInfo("skip_sw", None, tuple(port_info(p, p.name) for p in ports), br.clock())
    svc = Service(br, runner, info, path, reval)
    if serve:
        svc.start()
    try:
        yield Rig(br, sw, mem, runner, svc, path)
    finally:
        svc.close()
        runner.stop_and_join()
        runner.close()
        for m in mem.values():
            m.close()
        shutil.rmtree(d, ignore_errors=True)
