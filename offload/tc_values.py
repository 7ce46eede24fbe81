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
(``encode_filter`` / ``decode_filter``); no I/O here.  The action values
live in ``tc_actions`` and key canonicalisation in ``tc_keys``; both are
re-exported here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Protocol

from dpif.errors import ValidationError
from offload import tc_nla as N
from offload.tc_actions import (  # noqa: F401 -- re-exported: the action values live here
    ACTION_DECODERS, Csum, Gact, Mirred, Pedit, PeditKey, Sample, SkbEdit, TcAction,
    TunnelKeySet, TunnelKeyUnset, UnknownAction, Vlan,
)
from offload.tc_keys import (  # noqa: F401 -- re-exported: key canonicalisation lives here
    Value, _full_mask, _normalise, _normalise_slow, canonical_keys,
)

_ACTION_DECODERS = ACTION_DECODERS  # the old name (tests)
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
        self._check()

    def _check(self) -> None:
        """Every rule of the value but the keys' canonical form."""
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
        re-canonicalisation.  Fields not given take their defaults."""
        new = object.__new__(cls)
        new.__dict__.update(_FILTER_DEFAULTS, **fields)
        return new

    @classmethod
    def with_canonical_keys(cls, **fields: Any) -> FlowerFilter:
        """A filter whose ``keys`` are canonical already (``canonical_keys``'
        output, e.g. a cached translation plan), validated but for the key
        canonicalisation: ValidationError as the constructor raises it."""
        new = cls.trusted(**fields)
        object.__setattr__(new, "actions", tuple(new.actions))
        new._check()
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

    def variant(self, keys: tuple[tuple[str, Value], ...], handle: int,
                cookie: bytes) -> FlowerFilter:
        """This filter with other keys, handle and cookie, *not* checked: for
        ``tc_template``, whose caller vouches for them (canonical keys of
        the same plan, a handle in range, a cookie of the same length)."""
        new = object.__new__(FlowerFilter)
        new.__dict__.update(self.__dict__, keys=keys, handle=handle, cookie=cookie)
        return new

    def key(self, name: str) -> Value | None:
        return dict(self.keys).get(name)


_FILTER_DEFAULTS = {f.name: f.default for f in fields(FlowerFilter) if f.default is not MISSING}


class FilterRef(Protocol):
    """A filter not made yet (``tc_template.PatchedFilter``): its name and
    cookie, and its value on demand."""

    ifindex: int
    parent: int
    chain: int
    prio: int
    protocol: int
    handle: int
    cookie: bytes

    def value(self) -> FlowerFilter: ...


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
