"""The mutable state of one translation: the flow, what was read, what to commit.

Theory of operation
-------------------
Translation walks a packet's OF flow through the tables.  Actions change the
flow (``set_field``, VLAN edits, ``move``...) and later lookups read the
changed flow.  Three masks over the OF flow layout keep the megaflow exact
where it must be and wild everywhere else:

``wc``
    the megaflow mask being built: *original packet* bits that some decision
    depended on.

``written``
    bits of the current flow whose value no longer comes from the packet but
    was written by an action with a value that is the same for every packet
    of the megaflow (a constant, or bits already in ``wc``).  Reading them
    adds nothing to ``wc``.  The OF-only fields (metadata, registers) start
    out written: they are zero for every packet.

``dirty``
    datapath bits written since the last commit.  Before anything that lets
    the packet out (output, controller, conntrack, sample) ``commit`` emits
    one datapath ``set(...)`` per header group for them -- unconditionally,
    never "only if it differs from the packet", which would make the actions
    depend on the packet's original value (OVS compares and un-wildcards; we
    don't need to).

VLAN tags do not fit "bits": a pop moves the inner tag's bits to the outer
position.  So the first VLAN edit *touches* the stack: it reads whether the
packet has one or two tags (their TPIDs go into ``wc``) and from then on the
stack is a list of ``Tag`` values whose fields carry their *provenance*, the
original bits they came from (0 for constants).  Reading a VLAN bit of the
flow after that adds that provenance to ``wc``.  ``commit`` compares the
datapath's stack with the flow's by identity: the longest common inner
suffix stays, the rest of the datapath's tags are popped and the flow's are
pushed -- and a pushed tag's values are what the datapath action carries, so
their provenance goes into ``wc``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpif import actions as dpa
from dpif import fields as dpf
from ofproto.offields import OF_ONLY_MASK

_B = dpf.BY_NAME
VLAN_POS: tuple[tuple[dpf.Field, dpf.Field, dpf.Field], ...] = (
    (_B["vlan_tpid"], _B["vlan_vid"], _B["vlan_pcp"]),
    (_B["cvlan_tpid"], _B["cvlan_vid"], _B["cvlan_pcp"]),
)
VLAN_ALL = 0
for _pos in VLAN_POS:
    for _f in _pos:
        VLAN_ALL |= _f.field_mask
M_TPIDS = VLAN_POS[0][0].field_mask | VLAN_POS[1][0].field_mask


def _m(*names: str) -> int:
    m = 0
    for n in names:
        m |= _B[n].field_mask
    return m


# Datapath fields a datapath set() can write, by how their group is chosen.
_FIXED_GROUP = {"eth_src": "eth", "eth_dst": "eth", "skb_mark": "skb_mark",
                "arp_op": "arp", "arp_spa": "arp", "arp_tpa": "arp", "arp_sha": "arp",
                "arp_tha": "arp", "nd_target": "nd", "nd_sll": "nd", "nd_tll": "nd",
                "mpls_label": "mpls", "mpls_tc": "mpls", "mpls_ttl": "mpls",
                "mpls_bos": "mpls"}
for _f in dpf.FIELDS:
    if _f.name.startswith("tun_"):
        _FIXED_GROUP[_f.name] = "tunnel"
_L3 = ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "ipv6_label", "ip_tos", "ip_ttl")
_L4 = ("tp_src", "tp_dst", "icmp_type", "icmp_code")
SETTABLE = _m(*_FIXED_GROUP, *_L3, *_L4)
M_ETH_TYPE = _m("eth_type")
M_IP_PROTO = _m("ip_proto")
_PROTO_GROUP = {dpf.IPPROTO_TCP: "tcp", dpf.IPPROTO_UDP: "udp", dpf.IPPROTO_SCTP: "sctp",
                dpf.IPPROTO_ICMP: "icmp", dpf.IPPROTO_ICMPV6: "icmpv6"}


@dataclass(frozen=True, slots=True, eq=False)
class Tag:
    """A VLAN tag of the flow's stack; ``*_src`` are the original bits it came from."""

    tpid: int
    vid: int
    pcp: int
    tpid_src: int = 0
    vid_src: int = 0
    pcp_src: int = 0

    def replace(self, *, vid: int | None = None, pcp: int | None = None) -> Tag:
        return Tag(self.tpid, self.vid if vid is None else vid,
                   self.pcp if pcp is None else pcp, self.tpid_src,
                   self.vid_src if vid is None else 0, self.pcp_src if pcp is None else 0)

    @property
    def src(self) -> int:
        return self.tpid_src | self.vid_src | self.pcp_src


class Ctx:
    """One translation's flow, masks, VLAN stack and emitted datapath actions."""

    def __init__(self, flow: int) -> None:
        self.flow = flow
        self.wc = 0
        self.written = OF_ONLY_MASK
        self.dirty = 0
        self.vlans: list[Tag] | None = None  # None: untouched, read the flow's bits
        self.dp_vlans: list[Tag] = []
        self.actions: list[dpa.Action] = []

    # -- reading -----------------------------------------------------------

    def consult(self, mask: int) -> None:
        """Record that a decision read ``mask`` bits of the current flow."""
        vm = mask & VLAN_ALL
        if vm:
            if self.vlans is None:
                self.wc |= vm
            else:
                for pos, tag in zip(VLAN_POS, self.vlans):
                    tp, vid, pcp = pos
                    if vm & tp.field_mask:
                        self.wc |= tag.tpid_src
                    if vm & vid.field_mask:
                        self.wc |= tag.vid_src
                    if vm & pcp.field_mask:
                        self.wc |= tag.pcp_src
        self.wc |= mask & ~VLAN_ALL & ~self.written

    def read(self, f: dpf.Field) -> int:
        self.consult(f.field_mask)
        return f.get(self.flow)

    # -- writing -----------------------------------------------------------

    def write(self, mask: int, value: int) -> None:
        """Set flow bits ``mask`` to ``value`` (already shifted into place)."""
        self.flow = (self.flow & ~mask) | (value & mask)
        self.written |= mask
        self.dirty |= mask & SETTABLE

    # -- VLAN stack ----------------------------------------------------------

    def touch_vlans(self) -> list[Tag]:
        if self.vlans is None:
            self.wc |= M_TPIDS
            tags = []
            for tp, vid, pcp in VLAN_POS:
                if not tp.get(self.flow):
                    break
                tags.append(Tag(tp.get(self.flow), vid.get(self.flow), pcp.get(self.flow),
                                tp.field_mask, vid.field_mask, pcp.field_mask))
            self.vlans = tags
            self.dp_vlans = list(tags)
            self.written |= VLAN_ALL
        return self.vlans

    def set_vlans(self, tags: list[Tag]) -> None:
        self.touch_vlans()
        self.vlans = list(tags)
        flow = self.flow & ~VLAN_ALL
        for (tp, vid, pcp), tag in zip(VLAN_POS, tags):
            flow |= tp.put(tag.tpid) | vid.put(tag.vid) | pcp.put(tag.pcp)
        self.flow = flow

    def _commit_vlans(self) -> None:
        if self.vlans is None:
            return
        dp, of = self.dp_vlans, self.vlans
        k = 0
        while k < min(len(dp), len(of)) and dp[len(dp) - 1 - k] is of[len(of) - 1 - k]:
            k += 1
        for _ in range(len(dp) - k):
            self.actions.append(dpa.PopVlan())
        for tag in reversed(of[:len(of) - k]):
            self.wc |= tag.src
            self.actions.append(dpa.PushVlan(tag.vid, tag.pcp, tag.tpid))
        self.dp_vlans = list(of)

    # -- commit ------------------------------------------------------------

    def commit(self) -> None:
        """Emit datapath actions that make the packet look like the flow."""
        self._commit_vlans()
        if not self.dirty:
            return
        groups: dict[str, list[tuple[str, int, int]]] = {}
        for f in dpf.FIELDS:
            m = f.get(self.dirty)
            if not m:
                continue
            group = _FIXED_GROUP.get(f.name)
            if group is None:
                group = self._group_of(f.name)
            if group is None:
                continue
            groups.setdefault(group, []).append((f.name, f.get(self.flow) & m, m))
        for group, items in groups.items():
            self.actions.append(dpa.SetField(group, tuple(items)))
        self.dirty = 0

    def _group_of(self, name: str) -> str | None:
        et = self.read(_B["eth_type"])
        if name in _L3:
            if et == dpf.ETH_TYPE_IPV4 and not name.startswith("ipv6"):
                return "ipv4"
            if et == dpf.ETH_TYPE_IPV6 and not name.startswith("ipv4"):
                return "ipv6"
            return None
        if et not in (dpf.ETH_TYPE_IPV4, dpf.ETH_TYPE_IPV6):
            return None
        g = _PROTO_GROUP.get(self.read(_B["ip_proto"]))
        if g is None or (name.startswith("icmp") != g.startswith("icmp")):
            return None
        return g

    def emit(self, action: dpa.Action) -> None:
        self.commit()
        self.actions.append(action)
