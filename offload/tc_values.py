"""Frozen values for tc flower filters and actions, and their netlink codec.

Theory of operation
-------------------
The translation above (offload/tc_flower.py) speaks only in these values: a
``FlowerFilter`` says *what* to install -- where (ifindex, chain, prio,
handle, protocol), what to match (``keys``: kernel attribute name -> value),
what to do (``actions``), placement flags and the ownership ``cookie``.  A
dump comes back as ``FilterDump``: the same ``FlowerFilter`` plus what the
kernel observed (counters, in_hw, in_hw_count).

Canonical form, so that "what we put" == "what the kernel dumps":

* keys are sorted in kernel enum order; every maskable key carries its mask
  (all-ones when the caller gave none -- the kernel dumps it that way); a
  key whose mask is zero is dropped (the kernel drops it too).  For
  TCA_FLOWER_KEY_FLAGS and CT_STATE "exact" is the set of bits the kernel
  knows, not all-ones.
* For VLAN filters the kernel dumps TCA_FLOWER_KEY_ETH_TYPE as the *inner*
  ethertype, so the outer TPID is carried by ``protocol``: when ``protocol``
  is 802.1Q/802.1ad, ETH_TYPE equals it (we set it; decode restores it).
* Actions are normalised to what the kernel dumps (mirred's control follows
  its eaction, vlan push/modify always has prio and TPID, ...).
* The cookie (<= 16 bytes, the flow's ufid) rides on the first action.

Value types: MAC -> 'aa:bb:cc:dd:ee:ff', IPv4/IPv6 -> address text
(compressed), everything else -> int in host terms (a port is 80, not
htons(80)).  Encoding and decoding happen at the message level only
(``encode_filter`` / ``decode_filter``); no I/O here.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from dpif.errors import ValidationError
from offload import tc_nla as N

Value = Union[int, str]
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- stats -------------------------------------------------------------------


@dataclass(frozen=True)
class TcStats:
    """Counters of one action (or of a filter: its first action).

    ``packets``/``bytes`` are the totals (software + hardware, as the kernel
    reports TCA_STATS_BASIC); ``hw_*`` is the hardware part
    (TCA_STATS_BASIC_HW).  ``idle_ms`` is the time since last use (since
    install if never used), from the action's tcf_t.
    """

    packets: int = 0
    bytes: int = 0
    hw_packets: int = 0
    hw_bytes: int = 0
    idle_ms: int | None = None


# --- actions -----------------------------------------------------------------


def _parms(opts: Any, kind: str) -> Any:
    return opts.get_attr(N.ACTION_PREFIX[kind] + "_PARMS")


@dataclass(frozen=True)
class Gact:
    """gact: drop (TC_ACT_SHOT), pass (TC_ACT_OK), goto chain, trap..."""

    control: int = N.TC_ACT_SHOT
    kind: ClassVar[str] = "gact"

    @classmethod
    def drop(cls) -> Gact:
        return cls(N.TC_ACT_SHOT)

    @classmethod
    def pass_(cls) -> Gact:
        return cls(N.TC_ACT_OK)

    @classmethod
    def goto_chain(cls, chain: int) -> Gact:
        return cls(N.TC_ACT_GOTO_CHAIN | (chain & N.TC_ACT_EXT_VAL_MASK))

    def options(self) -> list[list[Any]]:
        return [["TCA_GACT_PARMS", {"action": self.control}]]

    @classmethod
    def from_options(cls, opts: Any) -> Gact:
        return cls(_parms(opts, "gact")["action"])


@dataclass(frozen=True)
class Mirred:
    """mirred: eaction TCA_EGRESS_REDIR/MIRROR or TCA_INGRESS_REDIR/MIRROR."""

    ifindex: int
    eaction: int = N.TCA_EGRESS_REDIR
    control: int | None = None  # None: STOLEN for redirect, PIPE for mirror
    kind: ClassVar[str] = "mirred"

    def __post_init__(self) -> None:
        if self.eaction not in (1, 2, 3, 4):
            raise ValidationError("mirred: bad eaction", eaction=self.eaction)
        if self.control is None:
            redirect = self.eaction in (N.TCA_EGRESS_REDIR, N.TCA_INGRESS_REDIR)
            object.__setattr__(self, "control", N.TC_ACT_STOLEN if redirect else N.TC_ACT_PIPE)

    def options(self) -> list[list[Any]]:
        return [["TCA_MIRRED_PARMS", {"action": self.control, "eaction": self.eaction,
                                      "ifindex": self.ifindex}]]

    @classmethod
    def from_options(cls, opts: Any) -> Mirred:
        p = _parms(opts, "mirred")
        return cls(ifindex=p["ifindex"], eaction=p["eaction"], control=p["action"])


@dataclass(frozen=True)
class Vlan:
    """vlan: pop, push (vid, prio, protocol=TPID) or modify."""

    v_action: int
    vid: int | None = None
    prio: int | None = None
    protocol: int | None = None
    control: int = N.TC_ACT_PIPE
    kind: ClassVar[str] = "vlan"

    def __post_init__(self) -> None:
        if self.v_action == N.TCA_VLAN_ACT_POP:
            if (self.vid, self.prio, self.protocol) != (None, None, None):
                raise ValidationError("vlan pop takes no vid/prio/protocol")
        elif self.v_action in (N.TCA_VLAN_ACT_PUSH, N.TCA_VLAN_ACT_MODIFY):
            if self.vid is None or not 0 <= self.vid < 4096:
                raise ValidationError("vlan push/modify needs vid 0..4095", vid=self.vid)
            object.__setattr__(self, "prio", self.prio or 0)
            object.__setattr__(self, "protocol", self.protocol or N.ETH_P_8021Q)
        else:
            raise ValidationError("vlan: bad v_action", v_action=self.v_action)

    def options(self) -> list[list[Any]]:
        out: list[list[Any]] = [["TCA_VLAN_PARMS", {"action": self.control,
                                                    "v_action": self.v_action}]]
        if self.v_action != N.TCA_VLAN_ACT_POP:
            out += [["TCA_VLAN_PUSH_VLAN_ID", self.vid],
                    ["TCA_VLAN_PUSH_VLAN_PROTOCOL", self.protocol],
                    ["TCA_VLAN_PUSH_VLAN_PRIORITY", self.prio]]
        return out

    @classmethod
    def from_options(cls, opts: Any) -> Vlan:
        p = _parms(opts, "vlan")
        return cls(v_action=p["v_action"], vid=opts.get_attr("TCA_VLAN_PUSH_VLAN_ID"),
                   prio=opts.get_attr("TCA_VLAN_PUSH_VLAN_PRIORITY"),
                   protocol=opts.get_attr("TCA_VLAN_PUSH_VLAN_PROTOCOL"), control=p["action"])


@dataclass(frozen=True)
class PeditKey:
    """One 32-bit pedit word: packet = (packet & mask) ^ val (cmd SET), at
    ``offset`` (multiple of 4) from header ``htype``.  mask/val are the word
    in network order: mask keeps bits, val sets them."""

    htype: int
    offset: int
    mask: int
    val: int
    cmd: int = N.TCA_PEDIT_KEY_EX_CMD_SET


@dataclass(frozen=True)
class Pedit:
    keys: tuple[PeditKey, ...]
    control: int = N.TC_ACT_PIPE
    kind: ClassVar[str] = "pedit"

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValidationError("pedit needs at least one key")

    def options(self) -> list[list[Any]]:
        sel = N.PEDIT_SEL.pack(0, 0, self.control, 0, 0, len(self.keys), 0)
        words = b"".join(N.PEDIT_KEY.pack(k.mask.to_bytes(4, "big"), k.val.to_bytes(4, "big"),
                                          k.offset, 0, 0, 0) for k in self.keys)
        ex = [["TCA_PEDIT_KEY_EX", {"attrs": [["TCA_PEDIT_KEY_EX_HTYPE", k.htype],
                                              ["TCA_PEDIT_KEY_EX_CMD", k.cmd]]}]
              for k in self.keys]
        return [["TCA_PEDIT_PARMS_EX", sel + words], ["TCA_PEDIT_KEYS_EX", {"attrs": ex}]]

    @classmethod
    def from_options(cls, opts: Any) -> Pedit:
        raw = opts.get_attr("TCA_PEDIT_PARMS_EX") or opts.get_attr("TCA_PEDIT_PARMS")
        _, _, control, _, _, nkeys, _ = N.PEDIT_SEL.unpack_from(raw)
        ex_nest = opts.get_attr("TCA_PEDIT_KEYS_EX")
        ex = ex_nest.get_attrs("TCA_PEDIT_KEY_EX") if ex_nest is not None else []
        keys = []
        for i in range(nkeys):
            mask, val, off, _, _, _ = N.PEDIT_KEY.unpack_from(
                raw, N.PEDIT_SEL.size + i * N.PEDIT_KEY.size)
            htype, cmd = N.TCA_PEDIT_KEY_EX_HDR_TYPE_NETWORK, N.TCA_PEDIT_KEY_EX_CMD_SET
            if i < len(ex):
                htype = ex[i].get_attr("TCA_PEDIT_KEY_EX_HTYPE")
                cmd = ex[i].get_attr("TCA_PEDIT_KEY_EX_CMD")
            keys.append(PeditKey(htype, off, int.from_bytes(mask, "big"),
                                 int.from_bytes(val, "big"), cmd))
        return cls(tuple(keys), control)


@dataclass(frozen=True)
class Csum:
    """csum: TCA_CSUM_UPDATE_FLAG_* bits (IPV4HDR, ICMP, TCP, UDP, SCTP...)."""

    update_flags: int
    control: int = N.TC_ACT_PIPE
    kind: ClassVar[str] = "csum"

    def options(self) -> list[list[Any]]:
        return [["TCA_CSUM_PARMS", {"action": self.control, "update_flags": self.update_flags}]]

    @classmethod
    def from_options(cls, opts: Any) -> Csum:
        p = _parms(opts, "csum")
        return cls(p["update_flags"], p["action"])


@dataclass(frozen=True)
class TunnelKeySet:
    """tunnel_key set: src/dst are both IPv4 or both IPv6 text."""

    src: str
    dst: str
    key_id: int | None = None
    dst_port: int | None = None
    tos: int | None = None
    ttl: int | None = None
    no_csum: bool = False
    control: int = N.TC_ACT_PIPE
    kind: ClassVar[str] = "tunnel_key"

    def __post_init__(self) -> None:
        src, dst = ipaddress.ip_address(self.src), ipaddress.ip_address(self.dst)
        if src.version != dst.version:
            raise ValidationError("tunnel_key: src and dst differ in family",
                                  src=self.src, dst=self.dst)
        object.__setattr__(self, "src", str(src))
        object.__setattr__(self, "dst", str(dst))
        for name in ("dst_port", "tos", "ttl"):  # the kernel omits zeroes
            if getattr(self, name) == 0:
                object.__setattr__(self, name, None)

    def options(self) -> list[list[Any]]:
        v = "6" if ":" in self.src else "4"
        out: list[list[Any]] = [
            ["TCA_TUNNEL_KEY_PARMS", {"action": self.control,
                                      "t_action": N.TCA_TUNNEL_KEY_ACT_SET}],
            [f"TCA_TUNNEL_KEY_ENC_IPV{v}_SRC", self.src],
            [f"TCA_TUNNEL_KEY_ENC_IPV{v}_DST", self.dst],
            ["TCA_TUNNEL_KEY_NO_CSUM", int(self.no_csum)],
        ]
        for attr, value in (("ENC_KEY_ID", self.key_id), ("ENC_DST_PORT", self.dst_port),
                            ("ENC_TOS", self.tos), ("ENC_TTL", self.ttl)):
            if value is not None:
                out.append([f"TCA_TUNNEL_KEY_{attr}", value])
        return out


@dataclass(frozen=True)
class TunnelKeyUnset:
    control: int = N.TC_ACT_PIPE
    kind: ClassVar[str] = "tunnel_key"

    def options(self) -> list[list[Any]]:
        return [["TCA_TUNNEL_KEY_PARMS", {"action": self.control,
                                          "t_action": N.TCA_TUNNEL_KEY_ACT_RELEASE}]]


def _tunnel_key_from_options(opts: Any) -> TunnelKeySet | TunnelKeyUnset:
    p = _parms(opts, "tunnel_key")
    if p["t_action"] == N.TCA_TUNNEL_KEY_ACT_RELEASE:
        return TunnelKeyUnset(p["action"])
    g = opts.get_attr
    return TunnelKeySet(
        src=g("TCA_TUNNEL_KEY_ENC_IPV4_SRC") or g("TCA_TUNNEL_KEY_ENC_IPV6_SRC"),
        dst=g("TCA_TUNNEL_KEY_ENC_IPV4_DST") or g("TCA_TUNNEL_KEY_ENC_IPV6_DST"),
        key_id=g("TCA_TUNNEL_KEY_ENC_KEY_ID"), dst_port=g("TCA_TUNNEL_KEY_ENC_DST_PORT"),
        tos=g("TCA_TUNNEL_KEY_ENC_TOS"), ttl=g("TCA_TUNNEL_KEY_ENC_TTL"),
        no_csum=bool(g("TCA_TUNNEL_KEY_NO_CSUM")), control=p["action"])


@dataclass(frozen=True)
class SkbEdit:
    """skbedit: mark (with optional mask), priority, ptype (PACKET_*)."""

    mark: int | None = None
    mask: int | None = None
    priority: int | None = None
    ptype: int | None = None
    control: int = N.TC_ACT_PIPE
    kind: ClassVar[str] = "skbedit"
    ATTRS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("mark", "TCA_SKBEDIT_MARK"), ("mask", "TCA_SKBEDIT_MASK"),
        ("priority", "TCA_SKBEDIT_PRIORITY"), ("ptype", "TCA_SKBEDIT_PTYPE"))

    def __post_init__(self) -> None:
        if (self.mark, self.priority, self.ptype) == (None, None, None):
            raise ValidationError("skbedit needs mark, priority or ptype")

    def options(self) -> list[list[Any]]:
        out: list[list[Any]] = [["TCA_SKBEDIT_PARMS", {"action": self.control}]]
        return out + [[a, getattr(self, f)] for f, a in self.ATTRS if getattr(self, f) is not None]

    @classmethod
    def from_options(cls, opts: Any) -> SkbEdit:
        values = {f: opts.get_attr(a) for f, a in cls.ATTRS}
        return cls(control=_parms(opts, "skbedit")["action"], **values)


@dataclass(frozen=True)
class Sample:
    """sample (psample): 1 in ``rate`` packets to ``group``, truncated."""

    rate: int
    group: int
    trunc: int | None = None
    control: int = N.TC_ACT_PIPE
    kind: ClassVar[str] = "sample"

    def options(self) -> list[list[Any]]:
        out: list[list[Any]] = [["TCA_SAMPLE_PARMS", {"action": self.control}],
                                ["TCA_SAMPLE_RATE", self.rate],
                                ["TCA_SAMPLE_PSAMPLE_GROUP", self.group]]
        if self.trunc is not None:
            out.append(["TCA_SAMPLE_TRUNC_SIZE", self.trunc])
        return out

    @classmethod
    def from_options(cls, opts: Any) -> Sample:
        return cls(opts.get_attr("TCA_SAMPLE_RATE"), opts.get_attr("TCA_SAMPLE_PSAMPLE_GROUP"),
                   opts.get_attr("TCA_SAMPLE_TRUNC_SIZE"), _parms(opts, "sample")["action"])


@dataclass(frozen=True)
class UnknownAction:
    """An action of a kind we do not model (decode only: adopted filters)."""

    kind: str

    def options(self) -> list[list[Any]]:
        raise ValidationError("cannot encode an unknown action", kind=self.kind)


TcAction = Union[Gact, Mirred, Vlan, Pedit, Csum, TunnelKeySet, TunnelKeyUnset, SkbEdit,
                 Sample, UnknownAction]
_ACTION_DECODERS: dict[str, Any] = {
    "gact": Gact.from_options, "mirred": Mirred.from_options, "vlan": Vlan.from_options,
    "pedit": Pedit.from_options, "csum": Csum.from_options,
    "tunnel_key": _tunnel_key_from_options, "skbedit": SkbEdit.from_options,
    "sample": Sample.from_options,
}


# --- keys --------------------------------------------------------------------


def _full_mask(mask_attr: str) -> Value:
    if mask_attr in N.FULL_MASK_OVERRIDE:
        return N.FULL_MASK_OVERRIDE[mask_attr]
    kind = N.ATOM_KIND[N.FLOWER_ATOM[mask_attr]]
    return {"mac": "ff:ff:ff:ff:ff:ff", "ip4": "255.255.255.255",
            "ip6": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}.get(
        kind, (1 << kind) - 1 if isinstance(kind, int) else 0)  # type: ignore[arg-type]


def _is_zero(value: Value) -> bool:
    if isinstance(value, int):
        return value == 0
    return value in ("00:00:00:00:00:00", "0.0.0.0", "::")


def _normalise_slow(name: str, value: Value) -> Value:
    kind = N.ATOM_KIND[N.FLOWER_ATOM[name]]
    try:
        if kind == "mac":
            octets = bytes(int(x, 16) for x in str(value).split(":"))
            if len(octets) != 6:
                raise ValueError(value)
            return ":".join(f"{b:02x}" for b in octets)
        if kind in ("ip4", "ip6"):
            return str(ipaddress.IPv4Address(value) if kind == "ip4"
                       else ipaddress.IPv6Address(value))
        if kind == "str":
            return str(value)
        if not isinstance(value, int) or not 0 <= value < (1 << int(kind)):
            raise ValueError(value)
        return value
    except ValueError as exc:
        raise ValidationError("bad flower key value", attr=name, value=value) from exc


def _fast_int(limit: int) -> Any:
    def check(value: Value) -> bool:
        return type(value) is int and 0 <= value < limit
    return check


def _fast_inet(family: int) -> Any:
    def check(value: Value) -> bool:  # already the text inet_ntop (= ipaddress) prints
        if type(value) is not str or (family == socket.AF_INET6 and "." in value):
            return False
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, value)) == value
        except OSError:
            return False
    return check


def _fast_mac(value: Value) -> bool:
    if type(value) is not str or len(value) != 17 or value[2::3] != ":::::":
        return False
    return bytes.fromhex(value.replace(":", "")).hex(":") == value  # ValueError: slow path


# attribute -> a cheap test "this value is already canonical" (else the slow path
# validates and converts; both give the same result for a canonical value).
_FAST_CHECK: dict[str, Any] = {}
for _name in N.FLOWER_KEY_ATTRS | N.MASK_ATTRS:
    _kind = N.ATOM_KIND[N.FLOWER_ATOM[_name]]
    _FAST_CHECK[_name] = (
        _fast_mac if _kind == "mac" else _fast_inet(socket.AF_INET) if _kind == "ip4"
        else _fast_inet(socket.AF_INET6) if _kind == "ip6"
        else (lambda v: type(v) is str) if _kind == "str" else _fast_int(1 << int(_kind)))


def _normalise(name: str, value: Value) -> Value:
    check = _FAST_CHECK.get(name)
    try:
        if check is not None and check(value):
            return value
    except ValueError:
        pass
    return _normalise_slow(name, value)


# key or mask attribute -> (position in MASK_OF, key, mask)
_MASK_PAIR: dict[str, tuple[int, str, str]] = {}
for _i, (_key, _mask) in enumerate(N.MASK_OF.items()):
    _MASK_PAIR[_key] = _MASK_PAIR[_mask] = (_i, _key, _mask)
_FULL_MASK: dict[str, Value] = {}


def canonical_keys(keys: Any, protocol: int) -> tuple[tuple[str, Value], ...]:
    """Validate and canonicalise a key set (see the module docstring)."""
    items = dict(keys.items() if hasattr(keys, "items") else keys)
    if not N.FLOWER_KEY_ATTRS.issuperset(items):
        raise ValidationError("unknown or unsupported flower key",
                              attrs=sorted(set(items) - N.FLOWER_KEY_ATTRS))
    if protocol in N.VLAN_TPIDS:
        if items.setdefault("TCA_FLOWER_KEY_ETH_TYPE", protocol) != protocol:
            raise ValidationError("vlan filter: protocol must equal ETH_TYPE (outer TPID)",
                                  protocol=hex(protocol))
    elif items.get("TCA_FLOWER_KEY_ETH_TYPE") in N.VLAN_TPIDS:
        raise ValidationError("vlan filter: protocol must equal ETH_TYPE (outer TPID)",
                              protocol=hex(protocol))
    out = {k: _normalise(k, v) for k, v in items.items()}
    pair = _MASK_PAIR
    for _, key, mask in sorted({pair[k] for k in out if k in pair}):
        if key in out and mask not in out:
            full = _FULL_MASK.get(mask)
            if full is None:
                full = _FULL_MASK[mask] = _full_mask(mask)
            out[mask] = full
        elif mask in out and key not in out:
            raise ValidationError("flower mask without its key", attr=mask)
        if mask in out and _is_zero(out[mask]):
            del out[key], out[mask]
    order = N.FLOWER_ORDER
    return tuple(sorted(out.items(), key=lambda kv: order[kv[0]]))


# --- the filter ---------------------------------------------------------------


@dataclass(frozen=True)
class FlowerFilter:
    """One tc flower filter on the ingress of ``ifindex``.

    (ifindex, chain, prio, handle) names it; ``protocol`` is the tcm_info
    ethertype (ETH_P_ALL by default); ``flags`` is TCA_CLS_FLAGS_SKIP_HW /
    SKIP_SW; ``keys`` are TCA_FLOWER_KEY_* (and TCA_FLOWER_INDEV) by kernel
    name -- a mapping or pairs, canonicalised to sorted pairs.
    """

    ifindex: int
    prio: int
    handle: int
    keys: tuple[tuple[str, Value], ...] = ()
    actions: tuple[TcAction, ...] = ()
    chain: int = 0
    protocol: int = N.ETH_P_ALL
    flags: int = 0
    cookie: bytes = b""
    classid: int | None = None
    parent: int = N.TC_H_INGRESS_PARENT

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", canonical_keys(self.keys, self.protocol))
        object.__setattr__(self, "actions", tuple(self.actions))
        if not (0 < self.prio < 0x10000 and 0 < self.handle < (1 << 32)):
            # prio 0 or handle 0 turn a delete into a flush: never allow them
            raise ValidationError("flower filter needs prio 1..65535 and a non-zero handle",
                                  prio=self.prio, handle=self.handle)
        if not 0 <= self.chain < (1 << 32) or self.flags & ~N.POLICY_FLAGS:
            raise ValidationError("bad chain or flags", chain=self.chain, flags=self.flags)
        if len(self.actions) > N.TCA_ACT_MAX_PRIO:
            raise ValidationError("too many actions", count=len(self.actions))
        if len(self.cookie) > N.TC_COOKIE_MAX_SIZE or (self.cookie and not self.actions):
            raise ValidationError("cookie must be <= 16 bytes and needs an action",
                                  cookie=self.cookie.hex())

    @classmethod
    def trusted(cls, **fields: Any) -> FlowerFilter:
        """A filter from fields known to be valid and canonical already (a
        kernel dump that passed ``tc_dumpfast``'s checks): no validation, no
        re-canonicalisation.  Every field must be given."""
        new = object.__new__(cls)
        new.__dict__.update(fields)
        return new

    @property
    def ident(self) -> tuple[int, int, int, int]:
        return (self.ifindex, self.chain, self.prio, self.handle)

    def placed(self, prio: int, handle: int) -> FlowerFilter:
        """This filter at another (prio, handle): ``dataclasses.replace``
        without re-canonicalising keys that already are canonical."""
        if not (0 < prio < 0x10000 and 0 < handle < (1 << 32)):
            raise ValidationError("flower filter needs prio 1..65535 and a non-zero handle",
                                  prio=prio, handle=handle)
        new = object.__new__(FlowerFilter)
        new.__dict__.update(self.__dict__, prio=prio, handle=handle)
        return new

    def key(self, name: str) -> Value | None:
        return dict(self.keys).get(name)


@dataclass(frozen=True)
class FilterDump:
    """A filter as dumped: the value plus what the kernel observed."""

    filter: FlowerFilter
    stats: TcStats
    action_stats: tuple[TcStats, ...] = ()
    in_hw: bool = False
    not_in_hw: bool = False
    in_hw_count: int = 0
    unsupported: tuple[str, ...] = field(default=())  # attributes we could not model


# --- codec -------------------------------------------------------------------


def filter_header(msg: N.tcmsg_flower, ifindex: int, parent: int, handle: int,
                  prio: int, protocol: int) -> None:
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = ifindex
    msg["handle"] = handle
    msg["parent"] = parent
    msg["info"] = (prio << 16) | socket.htons(protocol)


def encode_filter(f: FlowerFilter) -> N.tcmsg_flower:
    """The RTM_NEWTFILTER body for ``f`` (header type/flags set by the sender)."""
    msg = N.tcmsg_flower()
    filter_header(msg, f.ifindex, f.parent, f.handle, f.prio, f.protocol)
    opts: list[list[Any]] = [[k, v] for k, v in f.keys]
    if f.flags:
        opts.append(["TCA_FLOWER_FLAGS", f.flags])
    if f.classid is not None:
        opts.append(["TCA_FLOWER_CLASSID", f.classid])
    acts = []
    for i, act in enumerate(f.actions, start=1):
        attrs: list[list[Any]] = [["TCA_ACT_KIND", act.kind],
                                  ["TCA_ACT_OPTIONS", {"attrs": act.options()}]]
        if i == 1 and f.cookie:
            attrs.append(["TCA_ACT_COOKIE", f.cookie])
        acts.append([f"TCA_ACT_PRIO_{i}", {"attrs": attrs}])
    if acts:
        opts.append(["TCA_FLOWER_ACT", {"attrs": acts}])
    msg["attrs"] = [["TCA_KIND", "flower"], ["TCA_CHAIN", f.chain],
                    ["TCA_OPTIONS", {"attrs": opts}]]
    return msg


def delete_msg(ifindex: int, chain: int, prio: int, handle: int, protocol: int,
               parent: int = N.TC_H_INGRESS_PARENT) -> N.tcmsg_flower:
    """RTM_DELTFILTER body for exactly one filter (never the flushing form)."""
    if not (prio and handle):
        raise ValidationError("refusing a filter delete without prio and handle (flush)",
                              prio=prio, handle=handle)
    msg = N.tcmsg_flower()
    filter_header(msg, ifindex, parent, handle, prio, protocol)
    msg["attrs"] = [["TCA_KIND", "flower"], ["TCA_CHAIN", chain]]
    return msg


def _action_stats(act: Any, kind: str, opts: Any) -> TcStats:
    st = act.get_attr("TCA_ACT_STATS")
    basic = st.get_attr("TCA_STATS_BASIC") if st is not None else None
    hw = st.get_attr("TCA_STATS_BASIC_HW") if st is not None else None
    pkt64 = st.get_attr("TCA_STATS_PKT64") if st is not None else None
    tm = opts.get_attr(N.ACTION_PREFIX[kind] + "_TM") if kind in N.ACTION_PREFIX else None
    return TcStats(
        packets=pkt64 if pkt64 is not None else (basic["packets"] if basic else 0),
        bytes=basic["bytes"] if basic else 0,
        hw_packets=hw["packets"] if hw else 0, hw_bytes=hw["bytes"] if hw else 0,
        idle_ms=tm["lastuse"] * 1000 // CLK_TCK if tm is not None else None)


def decode_filter(msg: Any) -> FilterDump | None:
    """A dumped RTM_NEWTFILTER -> FilterDump; None for non-flower or the
    per-priority header message (handle 0)."""
    if msg.get_attr("TCA_KIND") != "flower" or not msg["handle"]:
        return None
    opts = msg.get_attr("TCA_OPTIONS")
    if opts is None:
        return None
    protocol = socket.ntohs(msg["info"] & 0xFFFF)
    keys: dict[str, Value] = {}
    unsupported: list[str] = []
    for name, value in ((a[0], a[1]) for a in opts["attrs"]):
        if name in N.FLOWER_KEY_ATTRS:
            keys[name] = value
        elif name not in ("TCA_FLOWER_ACT", "TCA_FLOWER_FLAGS", "TCA_FLOWER_CLASSID",
                          "TCA_FLOWER_IN_HW_COUNT"):
            unsupported.append(name)
    if protocol in N.VLAN_TPIDS:  # kernel dumps the inner ethertype here
        keys["TCA_FLOWER_KEY_ETH_TYPE"] = protocol
    actions: list[TcAction] = []
    stats: list[TcStats] = []
    cookie = b""
    acts = opts.get_attr("TCA_FLOWER_ACT")
    for _, act in sorted(((int(a[0].rsplit("_", 1)[1]), a[1]) for a in acts["attrs"]),
                         key=lambda x: x[0]) if acts is not None else ():
        kind = act.get_attr("TCA_ACT_KIND")
        aopts = act.get_attr("TCA_ACT_OPTIONS")
        decoder = _ACTION_DECODERS.get(kind)
        actions.append(decoder(aopts) if decoder else UnknownAction(kind))
        stats.append(_action_stats(act, kind, aopts))
        cookie = cookie or (act.get_attr("TCA_ACT_COOKIE") or b"")
    flags = opts.get_attr("TCA_FLOWER_FLAGS") or 0
    f = FlowerFilter(
        ifindex=msg["index"], prio=msg["info"] >> 16, handle=msg["handle"], keys=tuple(keys.items()),
        actions=tuple(actions), chain=msg.get_attr("TCA_CHAIN") or 0, protocol=protocol,
        flags=flags & N.POLICY_FLAGS, cookie=bytes(cookie),
        classid=opts.get_attr("TCA_FLOWER_CLASSID"), parent=msg["parent"])
    return FilterDump(
        filter=f, stats=stats[0] if stats else TcStats(), action_stats=tuple(stats),
        in_hw=bool(flags & N.TCA_CLS_FLAGS_IN_HW), not_in_hw=bool(flags & N.TCA_CLS_FLAGS_NOT_IN_HW),
        in_hw_count=opts.get_attr("TCA_FLOWER_IN_HW_COUNT") or 0, unsupported=tuple(unsupported))
