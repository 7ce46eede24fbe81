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

from dpif import actions as A
from dpif.errors import ValidationError
from dpif.fields import (
    BY_NAME, FIELDS, ETH_TYPE_IPV4, ETH_TYPE_IPV6, FRAG_ANY, FRAG_LATER, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
)
from dpif.flow import Ufid
from dpif.match import Match
from offload import tc_nla as N
from offload import tc_values as V
from offload.tc_flower_actions import (  # noqa: F401 -- re-exported
    PEDIT_LAYOUT, NotOffloadable, OutputCheck, PortInfo, _pedit_fields, _pedit_words,
    actions_back, actions_to_tc,
)

_K = "TCA_FLOWER_KEY_"


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


_PTON = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6}


def _from_attr(attr: str, value: V.Value) -> int:
    if isinstance(value, int):
        return value
    kind = N.ATOM_KIND[N.FLOWER_ATOM[attr]]
    if kind == "mac":
        return int(value.replace(":", ""), 16)
    try:  # inet_pton: 20x faster than ipaddress (adopting 50k filters parses 100k)
        return int.from_bytes(socket.inet_pton(_PTON[kind], value), "big")  # type: ignore[index]
    except (OSError, KeyError):  # not that family's text: ipaddress says what is wrong
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
        self.src: dict[str, str] = {}  # key attribute -> the field its value came from

    def refuse(self, reason: str, field: str) -> None:
        if self.refusal is None:
            self.refusal = NotOffloadable(reason, field=field)

    def put(self, fname: str, attr: str, mask_attr: str | None, value: int, mask: int) -> None:
        if mask_attr is None:
            if mask != _ONES[fname]:
                self.refuse("flower matches this field only exactly", fname)
                return
            self.keys[attr] = _to_attr(attr, value)
            self.src[attr] = fname
            return
        self.keys[attr] = _to_attr(attr, value)
        self.src[attr] = fname
        self.keys[mask_attr] = _to_attr(mask_attr, mask)


def _match_keys(m: Match, k: _Keys | None = None
                ) -> tuple[dict[str, V.Value], int] | NotOffloadable:
    """Flower keys and tcm protocol for a match (in_port/recirc_id handled by caller)."""
    k = _Keys() if k is None else k
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
    try:
        keys = canonical_match_keys(match)
    except ValidationError as e:  # reported after the actions' refusal, as before
        keys = NotOffloadable(f"flower refused the translation: {e.message}")
        if isinstance(acts := actions_to_tc(match, actions, ingress, ports, check),
                      NotOffloadable):
            return acts
        return keys
    if isinstance(keys, NotOffloadable):
        return keys
    acts = actions_to_tc(match, actions, ingress, ports, check)
    if isinstance(acts, NotOffloadable):
        return acts
    try:
        return V.FlowerFilter.with_canonical_keys(
            ifindex=ingress.ifindex, prio=prio, handle=handle, keys=keys[0], actions=acts,
            chain=_value(match, "recirc_id"), protocol=keys[1], flags=flags,
            cookie=ufid.to_bytes())
    except ValidationError as e:
        return NotOffloadable(f"flower refused the translation: {e.message}")


# --- per-mask plans ------------------------------------------------------------
#
# A megaflow table has few distinct masks.  What _match_keys + canonical_keys
# decide -- refuse or not, which attributes in which order, the masks, the
# protocol, every constant -- depends only on the mask and on the values of
# the "control" fields below; the other fields' values are only copied.  So
# the result is computed once per (mask, control values) on a probe match
# (control values kept, every other value 0) and kept as a plan: per
# canonical attribute, a constant or the field whose value it copies.
# Applying a plan is a shift, a mask and (for addresses) one conversion per
# key.  A plan whose probe needed a check on a copied value (a field wider
# than its attribute, a value the canonical form would have to convert) is
# not kept: such a match takes the full path every time.

_CONTROL = ("eth_type", "ip_proto", "vlan_tpid", "cvlan_tpid", "arp_op", "ip_frag",
            "ct_state", "tun_id")
CONTROL_BITS = 0  # the control fields' bits: a plan is per (mask, key & CONTROL_BITS)
for _name in _CONTROL:
    CONTROL_BITS |= BY_NAME[_name].field_mask
_DIRECT = {_K + n for n in ("ETH_TYPE", "VLAN_ETH_TYPE", "CVLAN_ETH_TYPE", "NUM_OF_VLANS",
                            "FLAGS", "FLAGS_MASK", "CT_STATE", "CT_STATE_MASK", "ENC_KEY_ID")}


def _conv(attr: str) -> Callable[[int], V.Value] | None:
    kind = _ATTR_KIND[attr]
    if kind == "mac":
        return lambda v: v.to_bytes(6, "big").hex(":")
    if kind == "ip4":
        return lambda v: socket.inet_ntop(socket.AF_INET, v.to_bytes(4, "big"))
    if kind == "ip6":
        def ip6(v: int) -> V.Value:
            text = socket.inet_ntop(socket.AF_INET6, v.to_bytes(16, "big"))
            return str(ipaddress.IPv6Address(v)) if "." in text else text
        return ip6
    return None


_CONV = {attr: _conv(attr) for attr in _ATTR_KIND}
# (attr, constant, bit offset, all-ones, converter); offset -1: the constant
_Step = tuple[str, V.Value, int, int, Callable[[int], V.Value] | None]
_Plan = tuple[tuple[_Step, ...], int]
_PLANS: dict[tuple[int, int], _Plan | NotOffloadable | None] = {}
_PLANS_MAX = 4096


def _make_plan(m: Match) -> _Plan | NotOffloadable | None:
    k = _Keys()
    probe = Match(m.key & CONTROL_BITS, m.mask)
    got = _match_keys(probe, k)
    if isinstance(got, NotOffloadable):
        return got
    if set(k.src) & _DIRECT:
        return None
    try:
        canon = V.canonical_keys(got[0], got[1])
    except ValidationError:
        return None  # the full path raises it, with the real values
    steps: list[_Step] = []
    for attr, const in canon:
        fname = k.src.get(attr)
        if fname is None or fname in _CONTROL:
            steps.append((attr, const, -1, 0, None))
            continue
        off, ones = _POS[fname]
        kind = _ATTR_KIND[attr]
        if isinstance(kind, int) and ones >= 1 << kind:
            return None  # a copied value could be out of the attribute's range
        steps.append((attr, const, off, ones, _CONV[attr]))
    return tuple(steps), got[1]


def plan_of(m: Match) -> _Plan | NotOffloadable | None:
    """The cached plan of m's mask and control values (None: no plan is
    kept, the full path decides): per canonical key (attribute, constant,
    bit offset of the field it copies or -1, the field's all-ones, converter
    of the copied int or None), and the tcm protocol."""
    ident = (m.mask, m.key & CONTROL_BITS)
    if ident in _PLANS:
        return _PLANS[ident]
    plan = _make_plan(m)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[ident] = plan
    return plan


def canonical_match_keys(m: Match) -> tuple[tuple[tuple[str, V.Value], ...], int] | NotOffloadable:
    """``canonical_keys`` of ``_match_keys(m)`` and the protocol, or the
    refusal (ValidationError as canonical_keys raises it), through the plan
    of m's mask and control values."""
    plan = plan_of(m)
    if plan is None:
        got = _match_keys(m)
        if isinstance(got, NotOffloadable):
            return got
        return V.canonical_keys(got[0], got[1]), got[1]
    if isinstance(plan, NotOffloadable):
        return plan
    key = m.key
    out = []
    for attr, const, off, ones, conv in plan[0]:
        if off < 0:
            out.append((attr, const))
        else:
            v = (key >> off) & ones
            out.append((attr, conv(v) if conv is not None else v))
    return tuple(out), plan[1]


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
    return Match.build(vals), actions_back(f, ports_by_ifindex, vals)


