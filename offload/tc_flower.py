"""Megaflow <-> tc flower filter translation.  Pure: returns values, never sends.

Theory of operation
-------------------
``to_flower`` turns a megaflow (dpif ``Match`` + ``Actions``) into a
``FlowerFilter`` value, or a ``NotOffloadable(reason)`` naming the field or
action flower cannot express.  ``from_flower`` is the inverse, so a dump
reads back what we installed (tested as a round trip in the kernel tier).

Safety rule: a filter may match a *subset* of the megaflow's packets, never
a superset.  A packet the filter does not take simply misses tc and reaches
the software path; a packet it takes wrongly would be mis-forwarded.  So a
field flower can only match exactly (VLAN id, ip_proto, MPLS) must be exact
in the megaflow, or the flow stays in software.

Mapping, declared in tables below and in ``dpif.fields`` (``Field.flower``):

* in_port -> the device the filter sits on; recirc_id -> the tc chain.
* eth_type -> tcm protocol (+ KEY_ETH_TYPE); with VLANs the protocol is the
  outer TPID and VLAN_ETH_TYPE / CVLAN_ETH_TYPE carry what follows each tag;
  "no VLAN" (vlan_tpid matched as 0) is the protocol itself, or
  KEY_NUM_OF_VLANS=0 when eth_type is wildcarded.
* ports and ICMP type/code pick their TCP/UDP/SCTP or ICMPV4/V6 attribute
  by ip_proto / eth_type; ip_frag and ct_state are bit-mapped.
* actions: output -> mirred (mirror for all but the last, redirect last),
  drop -> gact shot, recirc -> gact goto chain, push/pop_vlan -> vlan,
  set(eth|ipv4|ipv6|tcp|udp) -> pedit words + csum, dec_ttl -> pedit add
  0xff on the TTL byte + csum (only when the match proves ttl > 1, so the
  "ttl <= 1 goes to userspace" rule still holds), set(tunnel) ->
  tunnel_key set, sample(1/N, userspace(pid=G)) -> act_sample rate N group G.
* the ufid rides in the first action's cookie: it marks the filter as ours.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dpif import actions as A
from dpif.errors import ValidationError
from dpif.fields import (
    BY_NAME, FIELDS, ETH_TYPE_IPV4, ETH_TYPE_IPV6, FRAG_ANY, FRAG_LATER, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Fmt,
)
from dpif.flow import Ufid
from dpif.match import Match
from offload import tc_nla as N
from offload import tc_values as V

_K = "TCA_FLOWER_KEY_"


@dataclass(frozen=True, slots=True)
class NotOffloadable:
    """Why a megaflow stays in software; ``field``/``action`` say what."""

    reason: str
    field: str | None = None
    action: str | None = None

    def __str__(self) -> str:
        what = self.field or self.action
        return f"{self.reason} ({what})" if what else self.reason


@dataclass(frozen=True, slots=True)
class PortInfo:
    """A datapath port as the offload layer sees it."""

    port_no: int
    ifindex: int
    ifname: str


# A check of output ports against the ingress port's eswitch: None = fine,
# else the refusal text (offload.eswitch.Topology.offload_refusal fits).
OutputCheck = Callable[[PortInfo, list[PortInfo]], str | None]

# --- keys --------------------------------------------------------------------

# Fields with no flower key of their own, or handled by code below.
_SPECIAL = {"in_port", "recirc_id", "eth_type", "vlan_tpid", "cvlan_tpid", "tp_src", "tp_dst",
            "icmp_type", "icmp_code", "ip_frag", "ct_state", "tun_id"}
_L4_ATTRS = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP"}
_ICMP_ATTRS = {(ETH_TYPE_IPV4, IPPROTO_ICMP): "ICMPV4", (ETH_TYPE_IPV6, IPPROTO_ICMPV6): "ICMPV6"}
# OVS_CS_F_* -> TCA_FLOWER_KEY_CT_FLAGS_*
_CT_BITS = ((0x01, 1 << 0), (0x02, 1 << 1), (0x04, 1 << 2), (0x20, 1 << 3), (0x10, 1 << 4),
            (0x08, 1 << 5))


_ATTR_KIND = {name: N.ATOM_KIND.get(atom) for name, atom in N.FLOWER_ATTRS}


def _to_attr(attr: str, value: int) -> V.Value:
    kind = _ATTR_KIND[attr]
    if kind == "mac":
        return value.to_bytes(6, "big").hex(":")
    if kind == "ip4":
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    if kind == "ip6":
        return str(ipaddress.IPv6Address(value))
    return value


def _from_attr(attr: str, value: V.Value) -> int:
    if isinstance(value, int):
        return value
    if N.ATOM_KIND[N.FLOWER_ATOM[attr]] == "mac":
        return int(value.replace(":", ""), 16)
    return int(ipaddress.ip_address(value))


_IS_FRAG, _FIRST = N.TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT, N.TCA_FLOWER_KEY_FLAGS_FRAG_IS_FIRST


def _frag_to_flower(value: int, mask: int) -> tuple[int, int] | None:
    """ip_frag (ANY, LATER bits) -> flower (IS_FRAGMENT, FRAG_IS_FIRST) key, mask.

    LATER implies ANY in every parsed packet, so "not a fragment" needs only
    IS_FRAGMENT; LATER without ANY in the mask cannot be said in flower.
    """
    if mask & FRAG_ANY:
        if not value & FRAG_ANY:
            return None if value & FRAG_LATER else (0, _IS_FRAG)
        if mask & FRAG_LATER:
            return _IS_FRAG | (0 if value & FRAG_LATER else _FIRST), _IS_FRAG | _FIRST
        return _IS_FRAG, _IS_FRAG
    if value & FRAG_LATER:
        return _IS_FRAG, _IS_FRAG | _FIRST
    return None


def _frag_from_flower(fv: int, fm: int) -> tuple[int, int]:
    if not fm & _IS_FRAG:
        raise ValidationError("flower FRAG_IS_FIRST without IS_FRAGMENT", flags=hex(fm))
    if not fv & _IS_FRAG:
        return 0, FRAG_ANY | FRAG_LATER
    if fm & _FIRST:
        return FRAG_ANY | (0 if fv & _FIRST else FRAG_LATER), FRAG_ANY | FRAG_LATER
    return FRAG_ANY, FRAG_ANY


def _bits_map(value: int, table: tuple[tuple[int, int], ...], reverse: bool = False) -> int:
    out = 0
    for ours, theirs in table:
        src, dst = (theirs, ours) if reverse else (ours, theirs)
        if value & src:
            out |= dst
    return out


# Field reads on the hot path, from the field table once (offsets follow
# dpif.fields' layout, whatever it is): name -> (bit offset, all-ones).
_POS: dict[str, tuple[int, int]] = {f.name: (f.offset, (1 << f.bits) - 1) for f in FIELDS}
_ONES: dict[str, int] = {name: ones for name, (_, ones) in _POS.items()}


_FIELD_TABLE = tuple((f, f.offset, (1 << f.bits) - 1) for f in FIELDS if f.name not in _SPECIAL)


def _get(m: Match, name: str) -> tuple[int, int]:
    off, ones = _POS[name]
    return (m.key >> off) & ones, (m.mask >> off) & ones


def _value(m: Match, name: str) -> int:
    off, ones = _POS[name]
    return (m.key >> off) & ones


def _has(m: Match, name: str) -> bool:
    off, ones = _POS[name]
    return bool((m.mask >> off) & ones)


def _exact(m: Match, name: str) -> bool:
    off, ones = _POS[name]
    return (m.mask >> off) & ones == ones


class _Keys:
    """Collects flower keys; ``refuse`` records the first reason to stay in software."""

    def __init__(self) -> None:
        self.keys: dict[str, V.Value] = {}
        self.refusal: NotOffloadable | None = None

    def refuse(self, reason: str, field: str) -> None:
        if self.refusal is None:
            self.refusal = NotOffloadable(reason, field=field)

    def put(self, fname: str, attr: str, mask_attr: str | None, value: int, mask: int) -> None:
        if mask_attr is None:
            if mask != _ONES[fname]:
                self.refuse("flower matches this field only exactly", fname)
                return
            self.keys[attr] = _to_attr(attr, value)
            return
        self.keys[attr] = _to_attr(attr, value)
        self.keys[mask_attr] = _to_attr(mask_attr, mask)


def _match_keys(m: Match) -> tuple[dict[str, V.Value], int] | NotOffloadable:
    """Flower keys and tcm protocol for a match (in_port/recirc_id handled by caller)."""
    k = _Keys()
    et, et_mask = _get(m, "eth_type")
    proto, proto_mask = _get(m, "ip_proto")
    protocol = N.ETH_P_ALL
    if _has(m, "vlan_tpid"):
        tpid = _value(m, "vlan_tpid")
        if tpid == 0:  # "no VLAN"
            if et_mask:
                protocol = et
            else:
                k.keys[_K + "NUM_OF_VLANS"] = 0
        else:
            protocol = tpid
            if _has(m, "cvlan_tpid") and _value(m, "cvlan_tpid"):
                k.keys[_K + "VLAN_ETH_TYPE"] = _value(m, "cvlan_tpid")
                if et_mask:
                    k.keys[_K + "CVLAN_ETH_TYPE"] = et
            elif et_mask:
                k.keys[_K + "VLAN_ETH_TYPE"] = et
    elif et_mask:
        protocol = et
    if et_mask and protocol == et:
        k.keys[_K + "ETH_TYPE"] = et
    mkey, mmask = m.key, m.mask
    for f, off, ones in _FIELD_TABLE:  # Match.fields() without _SPECIAL, inlined
        mask = (mmask >> off) & ones
        if not mask:
            continue
        name, value = f.name, (mkey >> off) & ones
        if not f.flower:
            k.refuse("tc flower has no key for this field", name)
        else:
            k.put(name, f.flower[0], f.flower[1] if len(f.flower) > 1 else None, value, mask)
    for fname, suffix in (("tp_src", "SRC"), ("tp_dst", "DST")):
        value, mask = _get(m, fname)
        if mask:
            l4 = _L4_ATTRS.get(proto) if proto_mask == 0xFF else None
            if l4 is None:
                k.refuse("L4 ports need ip_proto tcp, udp or sctp", fname)
            else:
                k.put(fname, f"{_K}{l4}_{suffix}", f"{_K}{l4}_{suffix}_MASK", value, mask)
    for fname, suffix in (("icmp_type", "TYPE"), ("icmp_code", "CODE")):
        value, mask = _get(m, fname)
        if mask:
            fam = _ICMP_ATTRS.get((et, proto)) if et_mask and proto_mask == 0xFF else None
            if fam is None:
                k.refuse("icmp fields need eth_type and ip_proto of ICMP/ICMPv6", fname)
            else:
                k.put(fname, f"{_K}{fam}_{suffix}", f"{_K}{fam}_{suffix}_MASK", value, mask)
    # The kernel's flow dissector reads the ARP fields only of a request or a
    # reply (any other op: every arp key reads 0), our parser of any op.
    arp_matched = [n for n in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")
                   if _has(m, n)]
    if arp_matched and not (_exact(m, "arp_op") and _value(m, "arp_op") in (1, 2)):
        k.refuse("the kernel reads ARP fields only of a request or reply: an ARP match "
                 "needs arp_op=1 or 2 exactly", arp_matched[0])
    value, mask = _get(m, "ip_frag")
    # The kernel's flow dissector (cls_flower passes no PARSE_1ST_FRAG) reads
    # no L4 header of any IP fragment: flower sees ports/icmp/tcp_flags 0 on a
    # *first* fragment, where our parser (as OVS's) reads the real ones.  So
    # an L4 match is offloadable only when the megaflow rules first fragments
    # out: ip_frag=no, or ip_frag=later (no L4 fields on either side).
    # Found by tests/offload/test_differential_kernel.py.
    l4_matched = [n for n in ("tp_src", "tp_dst", "tcp_flags", "icmp_type", "icmp_code")
                  if _has(m, n)]
    if l4_matched and not ((mask & FRAG_ANY and not value & FRAG_ANY)
                           or (mask & FRAG_LATER and value & FRAG_LATER)):
        k.refuse("flower reads no L4 header of a first fragment: an L4 match needs "
                 "ip_frag=no or ip_frag=later", l4_matched[0])
    if mask:
        frag = _frag_to_flower(value, mask)
        if frag is None:
            k.refuse("flower cannot match 'later' apart from 'fragment'", "ip_frag")
        else:
            k.keys[_K + "FLAGS"], k.keys[_K + "FLAGS_MASK"] = frag
    value, mask = _get(m, "ct_state")
    if mask:
        if mask & 0xC0:
            k.refuse("flower has no snat/dnat ct_state bits", "ct_state")
        k.keys[_K + "CT_STATE"] = _bits_map(value, _CT_BITS)
        k.keys[_K + "CT_STATE_MASK"] = _bits_map(mask, _CT_BITS)
    value, mask = _get(m, "tun_id")
    if mask:
        if mask != _ONES["tun_id"] or value >> 32:
            k.refuse("flower matches only an exact 32-bit tunnel key", "tun_id")
        else:
            k.keys[_K + "ENC_KEY_ID"] = value
    if k.refusal is not None:
        return k.refusal
    return k.keys, protocol


# --- pedit layout: where each settable field lives in its header ------------

_HT = {"eth": N.TCA_PEDIT_KEY_EX_HDR_TYPE_ETH, "ipv4": 2, "ipv6": 3,
       "tcp": N.TCA_PEDIT_KEY_EX_HDR_TYPE_TCP, "udp": N.TCA_PEDIT_KEY_EX_HDR_TYPE_UDP}
# (group, field) -> bit offset from the header start (network order)
PEDIT_LAYOUT: dict[tuple[str, str], int] = {
    ("eth", "eth_dst"): 0, ("eth", "eth_src"): 48,
    ("ipv4", "ip_tos"): 8, ("ipv4", "ip_ttl"): 64, ("ipv4", "ipv4_src"): 96,
    ("ipv4", "ipv4_dst"): 128,
    ("ipv6", "ip_tos"): 4, ("ipv6", "ipv6_label"): 12, ("ipv6", "ip_ttl"): 56,
    ("ipv6", "ipv6_src"): 64, ("ipv6", "ipv6_dst"): 192,
    ("tcp", "tp_src"): 0, ("tcp", "tp_dst"): 16,
    ("udp", "tp_src"): 0, ("udp", "tp_dst"): 16,
}
_CSUM_FOR = {"ipv4": 1 | N.TCA_CSUM_UPDATE_FLAG_TCP | N.TCA_CSUM_UPDATE_FLAG_UDP,
             "ipv6": N.TCA_CSUM_UPDATE_FLAG_TCP | N.TCA_CSUM_UPDATE_FLAG_UDP
             | N.TCA_CSUM_UPDATE_FLAG_ICMP,
             "tcp": N.TCA_CSUM_UPDATE_FLAG_TCP, "udp": N.TCA_CSUM_UPDATE_FLAG_UDP}
_CSUM_IPV4HDR = 1


def _pedit_words(group: str, fields: tuple[tuple[str, int, int], ...]
                 ) -> list[V.PeditKey] | NotOffloadable:
    words: dict[int, tuple[int, int]] = {}  # word offset -> (set bits, value)
    for fname, value, mask in fields:
        off = PEDIT_LAYOUT.get((group, fname))
        if off is None:
            return NotOffloadable("pedit cannot rewrite this field", action=f"set({group}.{fname})")
        width = BY_NAME[fname].bits
        end = off + width
        span = -(-end // 32) * 32
        vbits, mbits = value << (span - end), mask << (span - end)
        for w in range(off // 32, (end - 1) // 32 + 1):
            shift = span - 32 * (w + 1)
            wm, wv = (mbits >> shift) & 0xFFFFFFFF, (vbits >> shift) & 0xFFFFFFFF
            pm, pv = words.get(w * 4, (0, 0))
            words[w * 4] = (pm | wm, pv | wv)
    return [V.PeditKey(_HT[group], off, ~m & 0xFFFFFFFF, v) for off, (m, v) in sorted(words.items())]


def _pedit_fields(group: str, keys: list[V.PeditKey]) -> tuple[tuple[str, int, int], ...]:
    """Inverse of _pedit_words."""
    words = {k.offset: (~k.mask & 0xFFFFFFFF, k.val) for k in keys}
    out, covered = [], {o: 0 for o in words}
    for (g, fname), off in PEDIT_LAYOUT.items():
        if g != group:
            continue
        width = BY_NAME[fname].bits
        end = off + width
        span = -(-end // 32) * 32
        m = v = 0
        for w in range(off // 32, (end - 1) // 32 + 1):
            wm, wv = words.get(w * 4, (0, 0))
            m, v = (m << 32) | wm, (v << 32) | wv
        first = off // 32
        total = 32 * ((end - 1) // 32 + 1 - first)
        shift = total - (end - 32 * first)
        fm, fv = (m >> shift) & ((1 << width) - 1), (v >> shift) & ((1 << width) - 1)
        if fm:
            out.append((fname, fv & fm, fm))
            for w in range(first, (end - 1) // 32 + 1):
                wshift = span - 32 * (w + 1)
                covered[w * 4] = covered.get(w * 4, 0) | (((fm << (span - end)) >> wshift)
                                                          & 0xFFFFFFFF)
    for o, (m, _) in words.items():
        if m & ~covered.get(o, 0):
            raise ValidationError("pedit rewrites bits of no known field", group=group,
                                  offset=o)
    order = [f for (g, f) in PEDIT_LAYOUT if g == group]
    return tuple(sorted(out, key=lambda t: order.index(t[0])))


# --- actions -----------------------------------------------------------------

_TUN = (("tun_id", "key_id"), ("tun_tp_dst", "dst_port"), ("tun_tos", "tos"), ("tun_ttl", "ttl"))


def _tunnel_set(a: A.SetField) -> V.TunnelKeySet | NotOffloadable:
    vals = {n: (v, m) for n, v, m in a.fields}
    for n, (v, m) in vals.items():
        if m != BY_NAME[n].all_ones:
            return NotOffloadable("tunnel_key sets whole fields only", action=f"set(tunnel.{n})")
    if "tun_ipv4_dst" in vals:
        src, dst, fmt = vals.get("tun_ipv4_src", (0, 0))[0], vals["tun_ipv4_dst"][0], Fmt.IPV4
    elif "tun_ipv6_dst" in vals:
        src, dst, fmt = vals.get("tun_ipv6_src", (0, 0))[0], vals["tun_ipv6_dst"][0], Fmt.IPV6
    else:
        return NotOffloadable("tunnel_key needs a destination", action="set(tunnel)")
    extra = set(vals) - {"tun_ipv4_src", "tun_ipv4_dst", "tun_ipv6_src", "tun_ipv6_dst",
                         *(n for n, _ in _TUN)}
    if extra or vals.get("tun_id", (0, 0))[0] >> 32:
        return NotOffloadable("tunnel_key cannot set this", action=f"set(tunnel.{sorted(extra)})")
    ip = ipaddress.IPv4Address if fmt is Fmt.IPV4 else ipaddress.IPv6Address
    def opt(name: str) -> int | None:
        return vals[name][0] if name in vals else None
    return V.TunnelKeySet(src=str(ip(src)), dst=str(ip(dst)), key_id=opt("tun_id"),
                          dst_port=opt("tun_tp_dst"), tos=opt("tun_tos"), ttl=opt("tun_ttl"))


def _ttl_proves_above_one(m: Match) -> bool:
    v, mask = m.get("ip_ttl")
    return bool(v & mask & 0xFE)


def _actions(m: Match, actions: A.Actions, ingress: PortInfo, ports: Mapping[int, PortInfo],
             check: OutputCheck | None) -> list[V.TcAction] | NotOffloadable:
    out: list[V.TcAction] = []
    outs = [i for i, a in enumerate(actions) if isinstance(a, A.Output)]
    last_output = outs[-1] if outs else None
    et = m.value("eth_type") if m.is_exact("eth_type") else None
    targets: list[PortInfo] = []
    for i, a in enumerate(actions):
        if isinstance(a, A.Output):
            p = ports.get(a.port)
            if p is None:
                return NotOffloadable("output port has no netdev", action=f"output:{a.port}")
            targets.append(p)
            eaction = N.TCA_EGRESS_REDIR if i == last_output else N.TCA_EGRESS_MIRROR
            out.append(V.Mirred(p.ifindex, eaction))
        elif isinstance(a, A.PushVlan):
            out.append(V.Vlan(N.TCA_VLAN_ACT_PUSH, a.vid, a.pcp, a.tpid))
        elif isinstance(a, A.PopVlan):
            out.append(V.Vlan(N.TCA_VLAN_ACT_POP))
        elif isinstance(a, A.Recirc):
            if i != len(actions) - 1:
                return NotOffloadable("recirc must be the last action", action="recirc")
            out.append(V.Gact.goto_chain(a.recirc_id))
        elif isinstance(a, A.SetField) and a.group == "tunnel":
            t = _tunnel_set(a)
            if isinstance(t, NotOffloadable):
                return t
            out.append(t)
        elif isinstance(a, A.SetField):
            if a.group not in _HT:
                return NotOffloadable("pedit cannot rewrite this header", action=f"set({a.group})")
            words = _pedit_words(a.group, a.fields)
            if isinstance(words, NotOffloadable):
                return words
            out.append(V.Pedit(tuple(words)))
            flags = _CSUM_FOR.get(a.group, 0)
            if a.group == "ipv4" and all(n in ("ip_tos", "ip_ttl") for n, _, _ in a.fields):
                flags = _CSUM_IPV4HDR
            if flags:
                out.append(V.Csum(flags))
        elif isinstance(a, A.DecTtl):
            if et not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6) or not _ttl_proves_above_one(m):
                return NotOffloadable("dec_ttl offloads only when the match proves ttl > 1",
                                      action="dec_ttl")
            if et == ETH_TYPE_IPV4:
                out.append(V.Pedit((V.PeditKey(2, 8, 0x00FFFFFF, 0xFF000000,
                                               N.TCA_PEDIT_KEY_EX_CMD_ADD),)))
                out.append(V.Csum(_CSUM_IPV4HDR))
            else:
                out.append(V.Pedit((V.PeditKey(3, 4, 0xFFFFFF00, 0x000000FF,
                                               N.TCA_PEDIT_KEY_EX_CMD_ADD),)))
        elif isinstance(a, A.Sample):
            s = _sample(a)
            if isinstance(s, NotOffloadable):
                return s
            out.append(s)
        else:
            name = type(a).__name__.lower()
            return NotOffloadable("no tc action for this datapath action", action=name)
    if not actions:
        out.append(V.Gact.drop())
    elif not isinstance(actions[-1], (A.Output, A.Recirc)) and last_output is None:
        out.append(V.Gact.drop())  # rewrites without output: the packet ends here
    elif last_output is not None and last_output != len(actions) - 1:
        return NotOffloadable("actions after the last output", action="output")
    if len(out) > N.TCA_ACT_MAX_PRIO:
        return NotOffloadable(f"more than {N.TCA_ACT_MAX_PRIO} tc actions", action="(list)")
    if check is not None and targets:
        reason = check(ingress, targets)
        if reason:
            return NotOffloadable(reason, action="output")
    return out


def _sample(a: A.Sample) -> V.Sample | NotOffloadable:
    if len(a.actions) != 1 or not isinstance(a.actions[0], A.Userspace) or a.actions[0].userdata:
        return NotOffloadable("act_sample only sends to a psample group: "
                              "sample(actions(userspace(pid=GROUP)))", action="sample")
    if a.probability == 0:
        return NotOffloadable("sample probability 0", action="sample")
    rate = round(A.UINT32_MAX / a.probability)
    if abs(round(A.UINT32_MAX / rate) - a.probability) > 1:
        return NotOffloadable("act_sample needs a probability of 1/N", action="sample")
    return V.Sample(rate=rate, group=a.actions[0].pid)


# --- the two directions ------------------------------------------------------


def to_flower(match: Match, actions: A.Actions, ufid: Ufid, *, ports: Mapping[int, PortInfo],
              prio: int, handle: int, flags: int,
              check: OutputCheck | None = None) -> V.FlowerFilter | NotOffloadable:
    """The flower filter for a megaflow, or why there is none."""
    if not _exact(match, "in_port"):
        return NotOffloadable("megaflow must match in_port exactly", field="in_port")
    ingress = ports.get(_value(match, "in_port"))
    if ingress is None:
        return NotOffloadable("ingress port has no netdev", field="in_port")
    if _has(match, "recirc_id") and not _exact(match, "recirc_id"):
        return NotOffloadable("recirc_id must be exact", field="recirc_id")
    keys = _match_keys(match)
    if isinstance(keys, NotOffloadable):
        return keys
    acts = _actions(match, actions, ingress, ports, check)
    if isinstance(acts, NotOffloadable):
        return acts
    try:
        return V.FlowerFilter(ifindex=ingress.ifindex, prio=prio, handle=handle,
                              keys=tuple(keys[0].items()), actions=tuple(acts),
                              chain=_value(match, "recirc_id"), protocol=keys[1], flags=flags,
                              cookie=ufid.to_bytes())
    except ValidationError as e:
        return NotOffloadable(f"flower refused the translation: {e.message}")


def ufid_of(f: V.FlowerFilter) -> Ufid | None:
    """The ufid in a filter's cookie, or None for a filter that is not ours."""
    return Ufid.from_bytes(f.cookie) if len(f.cookie) == 16 else None


_REVERSE: dict[str, str] = {}  # flower key attr -> field, for the generic fields
for _f in BY_NAME.values():
    if _f.flower and _f.name not in _SPECIAL and _f.flower[0].startswith(_K):
        _REVERSE[_f.flower[0]] = _f.name
for _proto, _l4 in _L4_ATTRS.items():
    _REVERSE[f"{_K}{_l4}_SRC"], _REVERSE[f"{_K}{_l4}_DST"] = "tp_src", "tp_dst"
for _fam in _ICMP_ATTRS.values():
    _REVERSE[f"{_K}{_fam}_TYPE"], _REVERSE[f"{_K}{_fam}_CODE"] = "icmp_type", "icmp_code"
_SKIP = {_K + "ETH_TYPE", _K + "VLAN_ETH_TYPE", _K + "CVLAN_ETH_TYPE", _K + "NUM_OF_VLANS",
         _K + "FLAGS", _K + "CT_STATE", _K + "ENC_KEY_ID"}


def from_flower(f: V.FlowerFilter, ports_by_ifindex: Mapping[int, PortInfo]
                ) -> tuple[Match, A.Actions]:
    """The megaflow a filter implements (ValidationError if it is not one of ours)."""
    keys = dict(f.keys)
    ingress = ports_by_ifindex.get(f.ifindex)
    if ingress is None:
        raise ValidationError("filter on a device that is not a datapath port", ifindex=f.ifindex)
    vals: dict[str, int | tuple[int, int]] = {"in_port": ingress.port_no, "recirc_id": f.chain}
    for attr, value in keys.items():
        if attr in N.MASK_ATTRS or attr in _SKIP:
            continue
        fname = _REVERSE.get(attr)
        if fname is None:
            raise ValidationError("flower key outside the megaflow model", attr=attr)
        mask_attr = N.MASK_OF.get(attr)
        mask = (_from_attr(mask_attr, keys[mask_attr]) if mask_attr in keys
                else BY_NAME[fname].all_ones)
        vals[fname] = (_from_attr(attr, value), mask)
    if f.protocol in N.VLAN_TPIDS:
        vals["vlan_tpid"] = f.protocol
        if _K + "CVLAN_ETH_TYPE" in keys or (
                keys.get(_K + "VLAN_ETH_TYPE") in N.VLAN_TPIDS):
            vals["cvlan_tpid"] = int(keys[_K + "VLAN_ETH_TYPE"])
            if _K + "CVLAN_ETH_TYPE" in keys:
                vals["eth_type"] = int(keys[_K + "CVLAN_ETH_TYPE"])
        elif _K + "VLAN_ETH_TYPE" in keys:
            vals["eth_type"] = int(keys[_K + "VLAN_ETH_TYPE"])
    elif f.protocol != N.ETH_P_ALL:
        # protocol X never matches a tagged packet (tc sees the TPID), so
        # the filter's packets are exactly "no VLAN, eth_type X".
        vals["eth_type"] = f.protocol
        vals["vlan_tpid"] = 0
    if keys.get(_K + "NUM_OF_VLANS") == 0:
        vals["vlan_tpid"] = 0
    if _K + "FLAGS" in keys:
        vals["ip_frag"] = _frag_from_flower(int(keys[_K + "FLAGS"]), int(keys[_K + "FLAGS_MASK"]))
    if _K + "CT_STATE" in keys:
        vals["ct_state"] = (_bits_map(int(keys[_K + "CT_STATE"]), _CT_BITS, True),
                            _bits_map(int(keys[_K + "CT_STATE_MASK"]), _CT_BITS, True))
    if _K + "ENC_KEY_ID" in keys:
        vals["tun_id"] = int(keys[_K + "ENC_KEY_ID"])
    return Match.build(vals), _actions_back(f, ports_by_ifindex, vals)


def _actions_back(f: V.FlowerFilter, ports: Mapping[int, PortInfo],
                  vals: Mapping[str, int | tuple[int, int]]) -> A.Actions:
    out: list[A.Action] = []
    groups = {v: k for k, v in _HT.items()}
    for act in f.actions:
        if isinstance(act, V.Mirred):
            p = ports.get(act.ifindex)
            if p is None:
                raise ValidationError("mirred to a device that is not a datapath port",
                                      ifindex=act.ifindex)
            out.append(A.Output(p.port_no))
        elif isinstance(act, V.Gact):
            if act.control & N.TC_ACT_GOTO_CHAIN == N.TC_ACT_GOTO_CHAIN:
                out.append(A.Recirc(act.control & N.TC_ACT_EXT_VAL_MASK))
            elif act.control != N.TC_ACT_SHOT:
                raise ValidationError("gact other than drop/goto", control=act.control)
        elif isinstance(act, V.Vlan):
            if act.v_action == N.TCA_VLAN_ACT_POP:
                out.append(A.PopVlan())
            elif act.v_action == N.TCA_VLAN_ACT_PUSH:
                out.append(A.PushVlan(act.vid or 0, act.prio or 0, act.protocol or 0x8100))
            else:
                raise ValidationError("vlan modify is not a datapath action")
        elif isinstance(act, V.Pedit):
            if any(k.cmd == N.TCA_PEDIT_KEY_EX_CMD_ADD for k in act.keys):
                out.append(A.DecTtl())
                continue
            htypes = {k.htype for k in act.keys}
            if len(htypes) != 1 or next(iter(htypes)) not in groups:
                raise ValidationError("pedit over several or unknown headers")
            group = groups[htypes.pop()]
            out.append(A.SetField(group, _pedit_fields(group, list(act.keys))))
        elif isinstance(act, V.Csum):
            continue  # implied by the pedit before it
        elif isinstance(act, V.TunnelKeySet):
            fam = "ipv6" if ":" in act.dst else "ipv4"
            fields = [(f"tun_{fam}_src", int(ipaddress.ip_address(act.src)), BY_NAME[
                f"tun_{fam}_src"].all_ones)] if int(ipaddress.ip_address(act.src)) else []
            fields.append((f"tun_{fam}_dst", int(ipaddress.ip_address(act.dst)),
                           BY_NAME[f"tun_{fam}_dst"].all_ones))
            for n, attr in _TUN:
                value = getattr(act, attr)
                if value is not None:
                    fields.append((n, value, BY_NAME[n].all_ones))
            order = [fn for _, fn in _TUNNEL_ORDER]
            out.append(A.SetField("tunnel", tuple(sorted(fields, key=lambda t: order.index(t[0])))))
        elif isinstance(act, V.Sample):
            out.append(A.Sample(round(A.UINT32_MAX / act.rate), (A.Userspace(act.group),)))
        else:
            raise ValidationError("tc action outside the megaflow model", kind=act.kind)
    return tuple(out)


from dpif.fields import GROUP_BY_NAME as _G  # noqa: E402

_TUNNEL_ORDER = _G["tunnel"].attrs
