"""Render a ``FlowerFilter`` value as a ``tc filter add ... flower ...`` command line.

Pure: no I/O.  The text is what a user would type to install the same
filter by hand (iproute2 ``tc-flower(8)``, ``tc-mirred(8)``, ``tc-pedit(8)``
... syntax), so ``why-not-offloaded`` can show *exactly* what flowpath would
ask the kernel for, and a user can try it with ``tc`` themselves.

Device names come from ``ifname(ifindex)`` (the caller's port map or
netlink); an unknown ifindex renders as ``ifindex:N``.  Anything the
renderer cannot express in tc syntax is still printed, as
``<ATTR>=<value>``, rather than silently dropped -- the output may then not
be accepted verbatim by tc, but it never hides a key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from offload import tc_nla as N
from offload import tc_values as V

IfName = Callable[[int], str]

_K = "TCA_FLOWER_KEY_"

PROTOCOL_NAMES = {0x0003: "all", 0x0800: "ip", 0x86DD: "ipv6", 0x0806: "arp", 0x8035: "rarp",
                  0x8100: "802.1Q", 0x88A8: "802.1ad", 0x8847: "mpls_uc", 0x8848: "mpls_mc"}
IP_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
ARP_OP_NAMES = {1: "request", 2: "reply"}
# TCA_FLOWER_KEY_CT_FLAGS_* bit -> tc's ct_state word
CT_STATE_NAMES = ((1 << 0, "new"), (1 << 1, "est"), (1 << 2, "rel"), (1 << 3, "trk"),
                  (1 << 4, "inv"), (1 << 5, "rpl"))
CSUM_NAMES = ((1, "ip4h"), (2, "icmp"), (4, "igmp"), (8, "tcp"), (16, "udp"), (32, "udplite"),
              (64, "sctp"))
CONTROL_NAMES = {N.TC_ACT_OK: "pass", N.TC_ACT_RECLASSIFY: "reclassify", N.TC_ACT_SHOT: "drop",
                 N.TC_ACT_PIPE: "pipe", N.TC_ACT_STOLEN: "stolen", N.TC_ACT_TRAP: "trap",
                 -1: "continue"}
MIRRED_EACTIONS = {N.TCA_EGRESS_REDIR: "egress redirect", N.TCA_EGRESS_MIRROR: "egress mirror",
                   N.TCA_INGRESS_REDIR: "ingress redirect", N.TCA_INGRESS_MIRROR: "ingress mirror"}

# Simple keys: flower attribute suffix -> tc keyword.  Values print by kind
# (MAC / address / number); masks as /prefixlen for addresses when the mask
# is contiguous, else value/mask.
_SIMPLE = {
    "INDEV": "indev",
    "ETH_DST": "dst_mac", "ETH_SRC": "src_mac",
    "VLAN_ID": "vlan_id", "VLAN_PRIO": "vlan_prio",
    "CVLAN_ID": "cvlan_id", "CVLAN_PRIO": "cvlan_prio",
    "IPV4_SRC": "src_ip", "IPV4_DST": "dst_ip", "IPV6_SRC": "src_ip", "IPV6_DST": "dst_ip",
    "TCP_SRC": "src_port", "TCP_DST": "dst_port", "UDP_SRC": "src_port", "UDP_DST": "dst_port",
    "SCTP_SRC": "src_port", "SCTP_DST": "dst_port",
    "ARP_SIP": "arp_sip", "ARP_TIP": "arp_tip", "ARP_SHA": "arp_sha", "ARP_THA": "arp_tha",
    "MPLS_LABEL": "mpls_label", "MPLS_TC": "mpls_tc", "MPLS_BOS": "mpls_bos",
    "MPLS_TTL": "mpls_ttl",
    "IP_TOS": "ip_tos", "IP_TTL": "ip_ttl", "TCP_FLAGS": "tcp_flags",
    "ENC_KEY_ID": "enc_key_id", "ENC_IPV4_SRC": "enc_src_ip", "ENC_IPV4_DST": "enc_dst_ip",
    "ENC_IPV6_SRC": "enc_src_ip", "ENC_IPV6_DST": "enc_dst_ip",
    "ENC_UDP_DST_PORT": "enc_dst_port", "ENC_UDP_SRC_PORT": "enc_src_port",
    "ENC_IP_TOS": "enc_tos", "ENC_IP_TTL": "enc_ttl",
    "CT_ZONE": "ct_zone", "CT_MARK": "ct_mark", "CT_LABELS": "ct_label",
    "NUM_OF_VLANS": "num_of_vlans", "HASH": "hash",
}
_HEX_KEYS = {"IP_TOS", "TCP_FLAGS", "ENC_IP_TOS", "CT_MARK", "HASH"}
_ETHTYPE_KEYS = {"VLAN_ETH_TYPE": "vlan_ethtype", "CVLAN_ETH_TYPE": "cvlan_ethtype"}
# pedit header types (TCA_PEDIT_KEY_EX_HDR_TYPE_*) -> tc's header word
_PEDIT_HDR = {N.TCA_PEDIT_KEY_EX_HDR_TYPE_ETH: "eth", 2: "ip", 3: "ip6",
              N.TCA_PEDIT_KEY_EX_HDR_TYPE_TCP: "tcp", N.TCA_PEDIT_KEY_EX_HDR_TYPE_UDP: "udp"}
_PEDIT_GROUP = {N.TCA_PEDIT_KEY_EX_HDR_TYPE_ETH: "eth", 2: "ipv4", 3: "ipv6",
                N.TCA_PEDIT_KEY_EX_HDR_TYPE_TCP: "tcp", N.TCA_PEDIT_KEY_EX_HDR_TYPE_UDP: "udp"}
# (pedit group, dpif field) -> tc pedit field word
_PEDIT_FIELD = {
    ("eth", "eth_dst"): "dst", ("eth", "eth_src"): "src",
    ("ipv4", "ipv4_src"): "src", ("ipv4", "ipv4_dst"): "dst", ("ipv4", "ip_tos"): "tos",
    ("ipv4", "ip_ttl"): "ttl",
    ("ipv6", "ipv6_src"): "src", ("ipv6", "ipv6_dst"): "dst",
    ("ipv6", "ip_tos"): "traffic_class", ("ipv6", "ipv6_label"): "flow_lbl",
    ("ipv6", "ip_ttl"): "hoplimit",
    ("tcp", "tp_src"): "sport", ("tcp", "tp_dst"): "dport",
    ("udp", "tp_src"): "sport", ("udp", "tp_dst"): "dport",
}


def protocol_name(proto: int) -> str:
    return PROTOCOL_NAMES.get(proto, f"0x{proto:04x}")


def _addr_with_mask(value: str, mask: str | None) -> str:
    """``addr`` (exact), ``addr/prefixlen`` (contiguous mask) or ``addr/mask``."""
    if mask is None:
        return value
    try:
        m = ipaddress.ip_address(mask)
    except ValueError:
        return f"{value}/{mask}"
    width = m.max_prefixlen
    bits = int(m)
    ones = bin(bits).count("1")
    if bits != ((1 << ones) - 1) << (width - ones):  # not contiguous
        return f"{value}/{mask}"
    return value if ones == width else f"{value}/{ones}"


def _mac_with_mask(value: str, mask: str | None) -> str:
    if mask is None or mask == "ff:ff:ff:ff:ff:ff":
        return value
    bits = bin(int(mask.replace(":", ""), 16))[2:].zfill(48)
    if "01" not in bits:  # contiguous: a prefix length
        return f"{value}/{bits.count('1')}"
    return f"{value}/{mask}"


def _int_with_mask(value: int, mask: int | None, full: int, hexa: bool) -> str:
    text = f"{value:#x}" if hexa else str(value)
    if mask is None or mask == full:
        return text
    return f"{text}/{mask:#x}"


def _full(mask_attr: str) -> int:
    full = V._full_mask(mask_attr)
    return full if isinstance(full, int) else 0


def _ip_flags(value: int, mask: int) -> str:
    words = []
    if mask & N.TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT:
        words.append("frag" if value & N.TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT else "nofrag")
    if mask & N.TCA_FLOWER_KEY_FLAGS_FRAG_IS_FIRST:
        words.append("firstfrag" if value & N.TCA_FLOWER_KEY_FLAGS_FRAG_IS_FIRST
                     else "nofirstfrag")
    return "/".join(words)


def _ct_state(value: int, mask: int) -> str:
    return "".join(("+" if value & bit else "-") + name
                   for bit, name in CT_STATE_NAMES if mask & bit)


def render_keys(f: V.FlowerFilter) -> list[str]:
    """The flower match words (``dst_mac ... ip_proto tcp dst_port 80``)."""
    keys = dict(f.keys)
    out: list[str] = []
    for attr, value in f.keys:
        if attr in N.MASK_ATTRS:
            continue
        mask_attr = N.MASK_OF.get(attr)
        mask = keys.get(mask_attr) if mask_attr else None
        suffix = attr[len(_K):] if attr.startswith(_K) else attr[len("TCA_FLOWER_"):]
        if suffix == "ETH_TYPE":
            if f.protocol == N.ETH_P_ALL and value != N.ETH_P_ALL:
                out.append(f"# eth_type {protocol_name(int(value))} without protocol")
            continue  # carried by "protocol"
        if suffix == "IP_PROTO":
            out.append(f"ip_proto {IP_PROTO_NAMES.get(int(value), str(value))}")
        elif suffix in _ETHTYPE_KEYS:
            out.append(f"{_ETHTYPE_KEYS[suffix]} {protocol_name(int(value))}")
        elif suffix == "FLAGS":
            out.append(f"ip_flags {_ip_flags(int(value), int(mask or 0))}")
        elif suffix == "CT_STATE":
            out.append(f"ct_state {_ct_state(int(value), int(mask or 0))}")
        elif suffix == "ARP_OP" and (mask is None or mask == 0xFF):
            out.append(f"arp_op {ARP_OP_NAMES.get(int(value), str(value))}")
        elif suffix.startswith(("ICMPV4_", "ICMPV6_")):
            word = "type" if suffix.endswith("TYPE") else "code"
            full = _full(mask_attr) if mask_attr else 0xFF
            out.append(f"{word} {_int_with_mask(int(value), _opt_int(mask), full, False)}")
        elif suffix in _SIMPLE:
            word = _SIMPLE[suffix]
            if isinstance(value, str) and value.count(":") == 5 and len(value) == 17:
                out.append(f"{word} {_mac_with_mask(value, _opt_str(mask))}")
            elif isinstance(value, str):
                out.append(f"{word} {_addr_with_mask(value, _opt_str(mask))}")
            else:
                full = _full(mask_attr) if mask_attr else 0
                out.append(f"{word} {_int_with_mask(value, _opt_int(mask), full, suffix in _HEX_KEYS)}")
        else:
            text = f"{value}" if mask is None else f"{value}/{mask}"
            out.append(f"{attr}={text}")
    # tc parses keys in order: VLAN ethertypes decide how later IP keys are
    # read, ip_proto must precede ports and ICMP type/code, type precedes code.
    out.sort(key=_key_rank)
    _type_before_code(out)
    return out


_RANK = (("indev", 0), ("dst_mac", 1), ("src_mac", 1), ("vlan_", 2), ("cvlan_", 3),
         ("num_of_vlans", 3), ("mpls_", 4), ("ip_proto", 5))


def _key_rank(word: str) -> int:
    for prefix, rank in _RANK:
        if word.startswith(prefix):
            return rank
    return 6


def _type_before_code(words: list[str]) -> None:
    for i in range(len(words) - 1):
        if words[i].startswith("code ") and words[i + 1].startswith("type "):
            words[i], words[i + 1] = words[i + 1], words[i]


def _opt_int(v: V.Value | None) -> int | None:
    return None if v is None else int(v)


def _opt_str(v: V.Value | None) -> str | None:
    return None if v is None else str(v)


# --- actions -------------------------------------------------------------------------


def _control(c: int | None) -> str:
    if c is None:
        return "pipe"
    if c & N.TC_ACT_GOTO_CHAIN == N.TC_ACT_GOTO_CHAIN and c != -1:
        return f"goto chain {c & N.TC_ACT_EXT_VAL_MASK}"
    return CONTROL_NAMES.get(c, str(c))


def _pedit(p: V.Pedit) -> str:
    from offload.tc_flower import _pedit_fields  # the inverse of the translation's layout
    words: list[str] = []
    # ADD commands (dec_ttl) are single words; SET words decode to named fields
    sets: dict[int, list[V.PeditKey]] = {}
    for k in p.keys:
        if k.cmd == N.TCA_PEDIT_KEY_EX_CMD_ADD:
            words.append(_pedit_add(k))
        else:
            sets.setdefault(k.htype, []).append(k)
    for htype, keys in sets.items():
        group = _PEDIT_GROUP.get(htype)
        named: tuple[tuple[str, int, int], ...] | None = None
        if group is not None:
            try:
                named = _pedit_fields(group, keys)
            except Exception:  # bits of no known field: print raw words below
                named = None
        if named is None or group is None:
            words += [_pedit_raw(k) for k in keys]
            continue
        for fname, value, mask in named:
            words.append(_pedit_set(htype, group, fname, value, mask))
    return f"pedit ex {' '.join(words)} {_control(p.control)}"


def _pedit_set(htype: int, group: str, fname: str, value: int, mask: int) -> str:
    from dpif.fields import BY_NAME
    hdr = _PEDIT_HDR[htype]
    word = _PEDIT_FIELD.get((group, fname), fname)
    bits = BY_NAME[fname].bits
    full = (1 << bits) - 1
    if fname.startswith("eth_"):
        text = ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))
    elif fname.startswith("ipv4_"):
        text = str(ipaddress.IPv4Address(value))
    elif fname in ("ipv6_src", "ipv6_dst"):
        text = str(ipaddress.IPv6Address(value))
    else:
        text = str(value) if fname.startswith("tp_") else f"{value:#x}"
    if mask == full:
        return f"munge {hdr} {word} set {text}"
    return f"munge {hdr} {word} set {text} retain {mask:#x}"


def _pedit_add(k: V.PeditKey) -> str:
    hdr = _PEDIT_HDR.get(k.htype, f"htype{k.htype}")
    if (k.htype, k.offset, k.mask) == (2, 8, 0x00FFFFFF):
        return f"munge ip ttl add {k.val >> 24:#x}"
    if (k.htype, k.offset, k.mask) == (3, 4, 0xFFFFFF00):
        return f"munge ip6 hoplimit add {k.val & 0xFF:#x}"
    return f"munge {hdr} offset {k.offset} u32 add {k.val:#010x} retain {~k.mask & 0xFFFFFFFF:#010x}"


def _pedit_raw(k: V.PeditKey) -> str:
    hdr = _PEDIT_HDR.get(k.htype, f"htype{k.htype}")
    return (f"munge {hdr} offset {k.offset} u32 set {k.val:#010x} "
            f"retain {~k.mask & 0xFFFFFFFF:#010x}")


def render_action(a: V.TcAction, ifname: IfName) -> str:
    """One tc action, without the leading ``action`` word."""
    if isinstance(a, V.Gact):
        c = a.control
        if c == N.TC_ACT_SHOT:
            return "drop"
        if c == N.TC_ACT_OK:
            return "pass"
        if c == N.TC_ACT_TRAP:
            return "trap"
        return f"gact {_control(c)}" if c & N.TC_ACT_GOTO_CHAIN != N.TC_ACT_GOTO_CHAIN \
            else _control(c)
    if isinstance(a, V.Mirred):
        what = MIRRED_EACTIONS.get(a.eaction, f"eaction {a.eaction}")
        return f"mirred {what} dev {ifname(a.ifindex)}"
    if isinstance(a, V.Vlan):
        if a.v_action == N.TCA_VLAN_ACT_POP:
            return f"vlan pop {_control(a.control)}"
        verb = "push" if a.v_action == N.TCA_VLAN_ACT_PUSH else "modify"
        return (f"vlan {verb} id {a.vid} priority {a.prio} "
                f"protocol {protocol_name(a.protocol or N.ETH_P_8021Q)} {_control(a.control)}")
    if isinstance(a, V.Pedit):
        return _pedit(a)
    if isinstance(a, V.Csum):
        names = [n for bit, n in CSUM_NAMES if a.update_flags & bit]
        return f"csum {' and '.join(names) or '0'} {_control(a.control)}"
    if isinstance(a, V.TunnelKeySet):
        parts = [f"tunnel_key set src_ip {a.src} dst_ip {a.dst}"]
        for word, v in (("id", a.key_id), ("dst_port", a.dst_port), ("tos", a.tos),
                        ("ttl", a.ttl)):
            if v is not None:
                parts.append(f"{word} {v}")
        parts.append("nocsum" if a.no_csum else "csum")
        return " ".join(parts) + f" {_control(a.control)}"
    if isinstance(a, V.TunnelKeyUnset):
        return f"tunnel_key unset {_control(a.control)}"
    if isinstance(a, V.SkbEdit):
        parts = ["skbedit"]
        if a.mark is not None:
            parts.append(f"mark {a.mark:#x}" + (f"/{a.mask:#x}" if a.mask is not None else ""))
        if a.priority is not None:
            parts.append(f"priority {a.priority:#x}")
        if a.ptype is not None:
            parts.append(f"ptype {a.ptype}")
        return " ".join(parts) + f" {_control(a.control)}"
    if isinstance(a, V.Sample):
        trunc = f" trunc {a.trunc}" if a.trunc is not None else ""
        return f"sample rate {a.rate} group {a.group}{trunc} {_control(a.control)}"
    return f"{a.kind} # not modelled by flowpath"


def render_flags(flags: int) -> list[str]:
    out = []
    if flags & N.TCA_CLS_FLAGS_SKIP_HW:
        out.append("skip_hw")
    if flags & N.TCA_CLS_FLAGS_SKIP_SW:
        out.append("skip_sw")
    if flags & N.TCA_CLS_FLAGS_VERBOSE:
        out.append("verbose")
    return out


def render_filter(f: V.FlowerFilter, ifname: IfName, *, netns: str | None = None,
                  verb: str = "add") -> str:
    """``tc [-n NS] filter add dev DEV ingress ... flower ... action ...`` for ``f``."""
    head = ["tc"]
    if netns:
        head += ["-n", netns]
    head += ["filter", verb, "dev", ifname(f.ifindex)]
    head.append("ingress" if f.parent == N.TC_H_INGRESS_PARENT else f"parent {f.parent:#x}")
    head += ["protocol", protocol_name(f.protocol), "prio", str(f.prio), "handle",
             f"{f.handle:#x}"]
    if f.chain:
        head += ["chain", str(f.chain)]
    head.append("flower")
    head += render_flags(f.flags)
    if f.classid is not None:
        head += ["classid", f"{f.classid >> 16:x}:{f.classid & 0xFFFF:x}"]
    head += render_keys(f)
    for i, a in enumerate(f.actions):
        text = f"action {render_action(a, ifname)}"
        if i == 0 and f.cookie:
            text += f" cookie {f.cookie.hex()}"
        head.append(text)
    return " ".join(head)


def render_delete(f: V.FlowerFilter, ifname: IfName, *, netns: str | None = None) -> str:
    """The exact single-filter delete (never the flushing form)."""
    head = ["tc"] + (["-n", netns] if netns else [])
    head += ["filter", "del", "dev", ifname(f.ifindex), "ingress", "protocol",
             protocol_name(f.protocol), "prio", str(f.prio), "handle", f"{f.handle:#x}"]
    if f.chain:
        head += ["chain", str(f.chain)]
    head.append("flower")
    return " ".join(head)
