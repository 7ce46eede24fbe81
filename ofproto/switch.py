"""A switch on real netdevs: the whole path of a packet, wired once.

Theory of operation
-------------------
::

    netdev ingress (tc): flowpath's flower filters  ── hit ──> forwarded by tc / the NIC
           │ miss
           └─ catch-all (lowest prio) ─> miss veth ─> NetdevPort rx ring
                                                        │
                        Runner (poll loop) ── batch ──> SwDatapath.process
                                                        │ software megaflow hit: actions
                                                        │ miss: upcall
                                                        v
                                         Bridge.handle_upcall (ofproto xlate)
                                                        │ megaflow
                                                        v
                        OffloadDatapath.put ── tc flower (policy) ── or ── SwDatapath

The upcall's own packet is executed once, in software (``UpcallResult``
with ``match=None``: the bridge placed the flow itself).  Packets that were
already on their way through the miss channel when a flow went to tc reach
software, miss its cache, and are translated and executed once more by the
same rules (a duplicate upcall installs nothing): none is lost and none is
handled twice.

Everything runs in one network namespace (``netns``); the Runner is a
thread of this process.  ``close`` removes its miss channels (misses go back
to the kernel stack) and, with ``cleanup=True``, its tc filters; without
``cleanup`` the filters stay and keep forwarding, to be adopted by the next
start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from offload.datapath import OffloadDatapath, Policy
from offload.tc_flower import OutputCheck
from offload.tc_netlink import TcNetlink
from ofproto.bridge import DEFAULT_PACKET_IN_LIMIT, Bridge
from ofproto.normal import PortConfig
from ofproto.ruletext import parse_rule
from swpath.datapath import SwDatapath
from swpath.ports import NetdevPort
from swpath.runner import Runner

log = structlog.get_logger("ofproto.switch")


@dataclass(frozen=True, slots=True)
class SwitchPort:
    """A bridge port on a netdev."""

    config: PortConfig
    ifname: str


class Switch:
    """Bridge + offload-first datapath + netdev ports + poll loop."""

    def __init__(self, name: str, ports: Iterable[SwitchPort], *, netns: str | None = None,
                 policy: Policy = Policy.SKIP_SW, check: OutputCheck | None = None,
                 flow_limit: int = 200_000, adopt: bool = True,
                 packet_in_limit: int = DEFAULT_PACKET_IN_LIMIT) -> None:
        self.name = name
        self.netns = netns
        self.ports = list(ports)
        self.tc = TcNetlink(netns=netns)
        self.sw = SwDatapath(flow_limit=flow_limit)
        self.dp = OffloadDatapath(self.tc, self.sw, policy=policy, check=check,
                                  flow_limit=flow_limit)
        self.bridge = Bridge(name, [p.config for p in self.ports], placer=self.dp,
                             flow_limit=flow_limit, packet_in_limit=packet_in_limit)
        self.sw.upcall = self.bridge.handle_upcall
        self.sw.action_upcall = self.bridge.handle_action_upcall
        self.netdevs: list[NetdevPort] = []
        self.log = log.bind(bridge=name, netns=netns, policy=policy.value)
        try:
            for p in self.ports:
                self.dp.add_port(p.config.number, p.ifname)
            self.adopted = self.dp.adopt() if adopt else 0
            for p in self.ports:
                nd = NetdevPort(p.ifname, p.config.number, netns=netns, miss=True)
                self.netdevs.append(nd)
                self.sw.add_port(nd)
        except BaseException:
            self.close(cleanup=True)
            raise
        self.runner = Runner(self.sw, self.netdevs)
        self.log.info("switch up", ports=[p.ifname for p in self.ports], adopted=self.adopted)

    def add_rules(self, lines: Iterable[str]) -> int:
        """Add ovs-ofctl rules; return how many."""
        n = 0
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                self.bridge.tables.add(parse_rule(line))
                n += 1
        return n

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop_and_join()

    def close(self, *, cleanup: bool = False) -> None:
        """Stop, close ports and their miss channels; with ``cleanup`` also
        delete our tc filters (else they keep forwarding for the next start).
        A second call does nothing."""
        if getattr(self, "closed", False):
            return
        self.closed = True
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.stop_and_join()
            runner.close()
        for nd in self.netdevs:
            nd.close()  # and its miss channel: misses go back to the kernel stack
        if cleanup:
            self.dp.cleanup()
        self.tc.close()
