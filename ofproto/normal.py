"""NORMAL: the L2 learning switch behind the OpenFlow ``normal`` action.

Theory of operation
-------------------
``decide_normal`` is a pure function of (the flow, the bridge's port
configuration, the MAC table, the time): it returns a ``NormalDecision``
value -- drop with a reason, or the VLAN the packet belongs to and the list
of (port, tag to send with) outputs -- plus the MAC to learn and the mask of
every flow bit it read.  It never changes the MAC table; the bridge applies
``decision.learn`` when side effects are on (the revalidator re-translates
with them off).

The steps follow OVS's ``xlate_normal``:

1. Input VLAN.  An *access* port with ``tag`` T puts untagged (and
   priority-tagged, vid 0) frames in VLAN T and drops frames tagged with any
   other vid.  A *trunk* port takes the frame's vid (untagged -> VLAN 0) and
   drops it unless ``trunks`` is empty (all VLANs) or lists it.  Reads:
   ``in_port``, the tag's presence (``vlan_tpid``) and ``vlan_vid``.
2. A multicast source MAC is dropped.  Reads: the group bit of ``eth_src``.
3. Learning.  ``(vlan, eth_src) -> in_port``; a MAC seen on another port
   than its entry *moves*.  When learning is on the megaflow must be exact on
   ``eth_src``: otherwise a new station's packets would hit an existing
   megaflow and never be learned.
4. Forwarding.  A multicast/broadcast ``eth_dst`` floods; a unicast one is
   looked up in the MAC table: known -> that port, unless it is the input
   port (no hairpin: drop); unknown -> flood.  Reads: ``eth_dst``.
5. Flooding sends to every port of the VLAN except the input port and ports
   with ``flood=False``, in port-number order.
6. Output tagging: to an access port untagged; to a trunk port tagged with
   the VLAN (the frame's pcp is kept), or untagged for VLAN 0.

MAC table: entries age out ``aging`` seconds after they were last seen --
by an upcall, or late, by the revalidator when a NORMAL flow's counters grow
(``refresh``; OVS's xlate cache does the same), so a station whose traffic
stays in the datapath is not forgotten --
(OVS's default 300 s) and the table holds at most ``max_entries`` (the least
recently seen goes first).  ``version`` increases on every change that can
alter a forwarding decision (a new MAC, a move, an expiry, a flush): flows
translated through NORMAL are stale when it moved.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from dpif.errors import ValidationError
from dpif.fields import BY_NAME

_F = BY_NAME
M_IN_PORT = _F["in_port"].field_mask
M_VLAN_TPID = _F["vlan_tpid"].field_mask
M_VLAN_VID = _F["vlan_vid"].field_mask
M_ETH_SRC = _F["eth_src"].field_mask
M_ETH_DST = _F["eth_dst"].field_mask
# The group (multicast) bit of a MAC is the low bit of its first octet, i.e.
# bit 40 of the 48-bit value.
M_ETH_SRC_GROUP = 1 << (_F["eth_src"].offset + 40)

DEFAULT_AGING = 300.0
DEFAULT_MAX_ENTRIES = 2048


class VlanMode(Enum):
    ACCESS = "access"
    TRUNK = "trunk"


@dataclass(frozen=True, slots=True)
class PortConfig:
    """A bridge port as NORMAL sees it.  Port number = datapath port number."""

    number: int
    name: str
    vlan_mode: VlanMode = VlanMode.TRUNK
    tag: int = 0  # access VLAN
    trunks: frozenset[int] = frozenset()  # empty: every VLAN
    flood: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.tag < 4096:
            raise ValidationError("vlan tag out of range 0..4095", port=self.name, tag=self.tag)
        bad = [v for v in self.trunks if not 0 <= v < 4096]
        if bad:
            raise ValidationError("trunk vlan out of range 0..4095", port=self.name,
                                  trunks=bad)

    def carries(self, vlan: int) -> bool:
        if self.vlan_mode is VlanMode.ACCESS:
            return vlan == self.tag
        return not self.trunks or vlan in self.trunks

    def out_tag(self, vlan: int) -> int | None:
        """The vid to send ``vlan`` with on this port; None: untagged."""
        if self.vlan_mode is VlanMode.ACCESS or vlan == 0:
            return None
        return vlan


@dataclass(frozen=True, slots=True)
class MacEntry:
    vlan: int
    mac: int
    port: int
    seen: float


@dataclass(frozen=True, slots=True)
class Learn:
    """A MAC learning side effect: ``mac`` on ``vlan`` is behind ``port``."""

    vlan: int
    mac: int
    port: int


class MacTable:
    """(vlan, mac) -> port, with aging, a size limit and a change version."""

    def __init__(self, aging: float = DEFAULT_AGING,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.aging = aging
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, int], MacEntry] = OrderedDict()
        self.version = 0
        self.moves = 0

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[MacEntry]:
        return list(self._entries.values())

    def lookup(self, vlan: int, mac: int, now: float) -> int | None:
        e = self._entries.get((vlan, mac))
        if e is None or now - e.seen >= self.aging:
            return None
        return e.port

    def learn(self, vlan: int, mac: int, port: int, now: float) -> str:
        """Record a sighting; returns "new", "moved" or "refreshed"."""
        k = (vlan, mac)
        old = self._entries.pop(k, None)
        self._entries[k] = MacEntry(vlan, mac, port, now)
        if old is None or now - old.seen >= self.aging:
            outcome = "new"
        elif old.port != port:
            outcome = "moved"
            self.moves += 1
        else:
            return "refreshed"
        self.version += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return outcome

    def refresh(self, vlan: int, mac: int, port: int, when: float) -> str:
        """A sighting reported late (a datapath flow's counters grew): refresh
        the entry if it still says ``port``, learn it if it is gone; leave it
        if the MAC is now elsewhere (the sighting predates the move).
        Returns "refreshed", "new" or "ignored"."""
        k = (vlan, mac)
        e = self._entries.get(k)
        if e is not None and now_alive(e, when, self.aging):
            if e.port != port or when <= e.seen:
                return "ignored"
            self._entries.move_to_end(k)
            self._entries[k] = MacEntry(vlan, mac, port, when)
            return "refreshed"
        return self.learn(vlan, mac, port, when)

    def expire(self, now: float) -> int:
        """Drop entries older than the aging time; returns how many."""
        dead = [k for k, e in self._entries.items() if now - e.seen >= self.aging]
        for k in dead:
            del self._entries[k]
        if dead:
            self.version += 1
        return len(dead)

    def flush(self, port: int | None = None) -> int:
        dead = [k for k, e in self._entries.items() if port is None or e.port == port]
        for k in dead:
            del self._entries[k]
        if dead:
            self.version += 1
        return len(dead)


def now_alive(e: MacEntry, now: float, aging: float) -> bool:
    return now - e.seen < aging


@dataclass(frozen=True, slots=True)
class NormalDecision:
    """What NORMAL does with one flow.  ``outputs`` empty and ``drop`` set: dropped."""

    vlan: int
    outputs: tuple[tuple[int, int | None], ...]  # (port, vid to send with or None)
    drop: str | None = None
    flooded: bool = False
    learn: Learn | None = None
    consulted: int = 0  # mask of the flow bits read


def _is_multicast(mac: int) -> bool:
    return bool((mac >> 40) & 1)


def decide_normal(flow: int, ports: dict[int, PortConfig], macs: MacTable, now: float,
                  *, learning: bool = True) -> NormalDecision:
    """The NORMAL decision for ``flow`` (a packed key in the dpif layout)."""
    in_port = _F["in_port"].get(flow)
    wc = M_IN_PORT
    port = ports.get(in_port)
    if port is None:
        return NormalDecision(0, (), drop=f"input port {in_port} is not a bridge port",
                              consulted=wc)
    tagged = _F["vlan_tpid"].get(flow) != 0
    wc |= M_VLAN_TPID
    vid = 0
    if tagged:
        vid = _F["vlan_vid"].get(flow)
        wc |= M_VLAN_VID
    if port.vlan_mode is VlanMode.ACCESS:
        if vid != 0:
            return NormalDecision(0, (), drop=f"vlan {vid} tagged packet on access port "
                                  f"{port.name} (vlan {port.tag})", consulted=wc)
        vlan = port.tag
    else:
        vlan = vid
        if not port.carries(vlan):
            return NormalDecision(vlan, (), drop=f"vlan {vlan} is not trunked on port "
                                  f"{port.name}", consulted=wc)
    src = _F["eth_src"].get(flow)
    wc |= M_ETH_SRC if learning else M_ETH_SRC_GROUP
    if _is_multicast(src):
        return NormalDecision(vlan, (), drop="multicast source address", consulted=wc)
    learn = Learn(vlan, src, in_port) if learning else None
    dst = _F["eth_dst"].get(flow)
    wc |= M_ETH_DST
    if not _is_multicast(dst):
        out = macs.lookup(vlan, dst, now)
        if out is not None:
            if out == in_port:
                return NormalDecision(vlan, (), drop="destination is on the input port",
                                      learn=learn, consulted=wc)
            dest = ports.get(out)
            if dest is not None and dest.carries(vlan):
                return NormalDecision(vlan, ((out, dest.out_tag(vlan)),), learn=learn,
                                      consulted=wc)
    outs = tuple((p.number, p.out_tag(vlan)) for p in sorted(ports.values(),
                                                              key=lambda p: p.number)
                 if p.number != in_port and p.flood and p.carries(vlan))
    return NormalDecision(vlan, outs, drop=None if outs else "flood: no other port in vlan",
                          flooded=True, learn=learn, consulted=wc)
