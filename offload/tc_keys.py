"""Canonical form of tc flower keys: what we put equals what the kernel dumps.

Theory of operation
-------------------
A key set is a mapping (or pairs) of TCA_FLOWER_KEY_* names to values:
MAC -> 'aa:bb:cc:dd:ee:ff', IPv4/IPv6 -> address text (compressed, as
``ipaddress`` prints it), everything else -> int in host terms.
``canonical_keys`` validates each value against its attribute's atom and
puts the set in the form the kernel dumps: sorted in kernel enum order,
every maskable key with its mask (all-ones, or for FLAGS and CT_STATE the
bits the kernel knows, when the caller gave none), a key whose mask is zero
dropped, and for VLAN filters ETH_TYPE equal to the protocol (outer TPID).
A cheap per-attribute test recognises a value that is already canonical
(the common case); anything else takes the slow path, which converts it
or raises ``ValidationError``.  Re-exported by ``tc_values``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Union

from dpif.errors import ValidationError
from offload import tc_nla as N

Value = Union[int, str]

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


