"""tc action values (gact, mirred, vlan, pedit, csum, tunnel_key, skbedit,
sample) and how each reads back from its decoded options.

Theory of operation
-------------------
Each action is a frozen value normalised to what the kernel dumps (mirred's
control follows its eaction, vlan push/modify always has prio and TPID,
tunnel_key addresses in canonical text, zeroes the kernel omits are None).
``options()`` gives the TCA_<KIND>_* attribute list the encoders
(``tc_values.encode_filter`` for pyroute2, ``tc_wire`` for the fast path)
put in TCA_ACT_OPTIONS; ``from_options`` (``ACTION_DECODERS`` by kind)
reads it back from any view with ``get_attr``/``get_attrs`` (a pyroute2
message or a ``tc_decode.Attrs``).  Re-exported by ``tc_values``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from dpif.errors import ValidationError
from offload import tc_nla as N

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
ACTION_DECODERS: dict[str, Any] = {
    "gact": Gact.from_options, "mirred": Mirred.from_options, "vlan": Vlan.from_options,
    "pedit": Pedit.from_options, "csum": Csum.from_options,
    "tunnel_key": _tunnel_key_from_options, "skbedit": SkbEdit.from_options,
    "sample": Sample.from_options,
}


