"""Filter templates: a megaflow's flower filter and its wire bytes without
the translation, for the many megaflows that differ only in copied values.

Theory of operation
-------------------
``tc_flower``'s per-mask plan says, for every match with one mask and one set
of control values, which canonical flower keys are constants and which copy
a field's value.  Everything else in the filter the datapath makes of a
megaflow -- device (in_port), chain (recirc_id), protocol (a control
value), prio (per mask and protocol), flags (policy), the tc actions (the
datapath actions and its ports) -- does not depend on the copied values
either, but for ``dec_ttl``, whose translation reads ip_ttl.  So the first
filter the full path makes for such a megaflow is compiled into a
``FilterTemplate``: the filter value and its encoded body (``tc_wire``: the
tcmsg and the attributes, what follows the netlink header), with the byte
offset and byte order of each copied key's payload, of the handle and of
the cookie.  ``build`` makes another megaflow's filter and body by patching
only those: its keys (the plan's constants and its copied values), its
handle and its cookie (the ufid).  ``body_for`` patches the bytes alone and
``PatchedFilter`` stands for the filter until its value is asked for: a
burst of puts needs only the bytes and the filter's name (device, chain,
prio, handle).

``compile_template`` returns None -- the full path every time -- for a
match whose plan is not kept, for actions with dec_ttl, for a filter
``tc_wire`` does not encode, or without a cookie.  Which megaflows share a
template (``template_key``) and when to forget templates (the datapath's
ports change) is the caller's business.  ``tests/offload/test_tc_template.py``
checks ``build`` against the full path (``to_flower`` + ``tc_wire``) with
hypothesis: the same filter, the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Optional

from dpif import actions as A
from dpif.fields import BY_NAME
from dpif.match import Match
from offload import tc_flower as TF
from offload import tc_wire as W
from offload.tc_values import FlowerFilter, Value

_HANDLE = struct.Struct("=I")
# the bits of a match that decide its template, with its mask and actions:
# the plan's control fields, in_port (the device) and recirc_id (the chain)
SELECT_BITS = (TF.CONTROL_BITS | BY_NAME["in_port"].field_mask
               | BY_NAME["recirc_id"].field_mask)


def template_key(m: Match, actions: A.Actions) -> tuple[int, int, A.Actions]:
    """Megaflows with equal keys here share a template (given the same
    ports, policy and prio table)."""
    return m.mask, m.key & SELECT_BITS, actions


# (index in keys, attribute, bit offset, all-ones, converter, byte offset in
# the body, payload size, byte order)
_Copied = tuple[int, str, int, int, Optional[Callable[[int], Value]], int, int, str]


class FilterTemplate:
    """The filter of one template key, and how to make another's."""

    __slots__ = ("filter", "body", "keys", "copied", "cookie_at")

    def __init__(self, f: FlowerFilter, body: bytes, copied: tuple[_Copied, ...],
                 cookie_at: int) -> None:
        self.filter = f
        self.body = body
        self.keys = list(f.keys)
        self.copied = copied
        self.cookie_at = cookie_at

    def body_for(self, key: int, handle: int, cookie: bytes) -> bytearray:
        """The message body for a match with packed ``key`` (of this
        template's key), at ``handle`` (1 .. 2**32-1) with ``cookie`` (as
        long as the template's)."""
        body = bytearray(self.body)
        for _, _, off, ones, _, at, size, order in self.copied:
            body[at:at + size] = ((key >> off) & ones).to_bytes(
                size, order)  # type: ignore[arg-type]
        _HANDLE.pack_into(body, W.TCMSG_HANDLE_AT, handle)
        at = self.cookie_at
        body[at:at + len(cookie)] = cookie
        return body

    def filter_for(self, key: int, handle: int, cookie: bytes) -> FlowerFilter:
        """The filter whose body ``body_for`` gives."""
        keys = self.keys.copy()
        for i, attr, off, ones, conv, _, _, _ in self.copied:
            v = (key >> off) & ones
            keys[i] = (attr, v if conv is None else conv(v))
        return self.filter.variant(tuple(keys), handle, cookie)

    def build(self, key: int, handle: int, cookie: bytes) -> tuple[FlowerFilter, bytearray]:
        """``filter_for`` and ``body_for`` at once."""
        return self.filter_for(key, handle, cookie), self.body_for(key, handle, cookie)


def _template_field(name: str) -> Any:
    """A read-only attribute of PatchedFilter: its template's filter's ``name``."""
    return property(lambda self: getattr(self.template.filter, name))


class PatchedFilter:
    """A template's filter for one megaflow, not made: what tc needs to name
    it (device, parent, chain, prio, protocol: the template's; its handle
    and cookie) at once, its ``FlowerFilter`` value when asked (``value``:
    the keys' values converted, as much work again as the body).  A burst of
    puts sends bodies and keeps these; most filters are never looked at."""

    __slots__ = ("template", "key", "handle", "cookie")

    def __init__(self, template: FilterTemplate, key: int, handle: int, cookie: bytes) -> None:
        self.template = template
        self.key = key
        self.handle = handle
        self.cookie = cookie

    # the template's own: what the megaflows of a template share
    ifindex: int = _template_field("ifindex")
    parent: int = _template_field("parent")
    chain: int = _template_field("chain")
    prio: int = _template_field("prio")
    protocol: int = _template_field("protocol")

    def value(self) -> FlowerFilter:
        return self.template.filter_for(self.key, self.handle, self.cookie)

    def __repr__(self) -> str:
        return f"PatchedFilter({self.value()!r})"


def _byte_order(attr: str, conv: Callable[[int], Value] | None, size: int,
                ones: int) -> str | None:
    """The byte order in which tc_wire packs the copied int of ``attr`` (one
    for a value with distinct bytes, checked on all-ones too), or None if it
    packs it some other way."""
    pack = W.key_packer(attr)

    def packed(v: int) -> bytes:
        return pack(v if conv is None else conv(v))
    probe = int.from_bytes(bytes(range(1, size + 1)), "big") & ones
    for order in ("big", "little"):
        if all(packed(v) == v.to_bytes(size, order)
               for v in (probe, ones, 0)):
            return order
    return None


def compile_template(f: FlowerFilter, m: Match, actions: A.Actions) -> FilterTemplate | None:
    """The template of ``f``, the full path's filter for megaflow (m,
    actions); None when there can be none (see the module's docstring)."""
    plan = TF.plan_of(m)
    if not isinstance(plan, tuple) or not f.cookie:
        return None
    if any(isinstance(a, A.DecTtl) for a in actions):
        return None
    steps, _ = plan
    if [s[0] for s in steps] != [k for k, _ in f.keys]:
        return None  # not the plan's keys (cannot happen for to_flower's filters)
    try:
        body = W.encode_filter_body(f)
    except W.FastEncodeUnsupported:
        return None
    key_at, cookie_at = W.body_offsets(body, len(f.keys))
    if cookie_at is None:
        return None
    copied: list[_Copied] = []
    for i, (attr, _, off, ones, conv) in enumerate(steps):
        if off < 0:
            continue
        at = key_at[i]
        size = W.NLAHDR.unpack_from(body, at - 4)[0] - 4
        order = _byte_order(attr, conv, size, ones)
        if order is None:
            return None
        copied.append((i, attr, off, ones, conv, at, size, order))
    return FilterTemplate(f, body, tuple(copied), cookie_at)
