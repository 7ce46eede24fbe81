"""Megaflow actions <-> tc actions, for ``tc_flower`` (pure, no I/O).

Theory of operation
-------------------
``actions_to_tc`` maps datapath actions to tc action values (output ->
mirred, mirror for all but the last output and redirect for it; drop ->
gact shot; recirc -> gact goto chain; push/pop_vlan -> vlan; set(eth|ipv4|
ipv6|tcp|udp) -> pedit words from ``PEDIT_LAYOUT`` + csum; dec_ttl -> pedit
add 0xff on the TTL byte + csum, only when the match proves ttl > 1;
set(tunnel) -> tunnel_key set; sample(1/N, userspace(pid=G)) -> act_sample)
or returns ``NotOffloadable`` naming the action.  ``actions_back`` is the
inverse, for filters read back from a dump.  The result types of the
translation (``NotOffloadable``, ``PortInfo``, ``OutputCheck``) live here
and are re-exported by ``tc_flower``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dpif import actions as A
from dpif.errors import ValidationError
from dpif.fields import BY_NAME, ETH_TYPE_IPV4, ETH_TYPE_IPV6, Fmt
from dpif.match import Match
from offload import tc_nla as N
from offload import tc_values as V

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
# else the refusal text (offload.eswitch.Topology.offload_refusal fits).  Its
# answer must depend on the ports alone: the datapath asks once per template.
OutputCheck = Callable[[PortInfo, list[PortInfo]], str | None]

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


def actions_to_tc(m: Match, actions: A.Actions, ingress: PortInfo, ports: Mapping[int, PortInfo],
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


def actions_back(f: V.FlowerFilter, ports: Mapping[int, PortInfo],
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
