"""The daemon's configuration file: a small TOML file, read once at start.

Theory of operation
-------------------
``parse_config(text, path)`` is pure: TOML text in, a frozen
``DaemonConfig`` out, or one ``ParseError`` naming the file, the key and
the value (``bad vlan_mode (file=br0.toml, key=port[2].vlan_mode,
value='acess')``).  Unknown keys are errors too: a typo must not be
silently ignored.  ``load_config(path)`` is the only I/O (reading the file).

Example::

    bridge = "br0"                  # required
    policy = "skip_sw"              # skip_sw | none | skip_hw (OVS tc-policy)
    netns = "fpsw"                  # optional: where the netdevs live
    flow_limit = 200000             # megaflows, tc and software together: the ceiling
                                    # of the limit the revalidator adapts (as OVS)
    max_idle_ms = 10000             # a megaflow idle this long is deleted (100 ms
                                    # above the flow limit; offloaded: at least 2 s)
    revalidate_interval_ms = 500    # revalidator sweeps (at most max_idle_ms apart)
    packet_in_limit = 1024          # packet-in queue length (oldest dropped)
    socket = "/run/flowpath/br0.sock"   # default /run/flowpath/<bridge>.sock
    rules = "br0.rules"             # optional add-flow lines; relative to this file
    eswitch_check = true            # offload only outputs on the ingress port's eswitch
                                    # (false: also put tc filters on plain netdevs, e.g. veth)

    [[port]]
    number = 1                      # OpenFlow / datapath port number
    netdev = "p1"
    vlan_mode = "access"            # access | trunk (default trunk)
    tag = 10                        # access VLAN
    # trunks = [10, 20]             # trunk: the VLANs carried (empty: all)
    # flood = true                  # NORMAL floods to this port
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any

from dpif.errors import ParseError, ValidationError
from offload.datapath import Policy
from ofproto.bridge import DEFAULT_FLOW_LIMIT, DEFAULT_PACKET_IN_LIMIT
from ofproto.normal import PortConfig, VlanMode
from ofproto.revalidator import DEFAULT_INTERVAL_MS, DEFAULT_MAX_IDLE_MS

SOCKET_DIR = "/run/flowpath"
_TOP_KEYS = ("bridge", "policy", "netns", "flow_limit", "max_idle_ms",
             "revalidate_interval_ms", "packet_in_limit", "socket", "rules", "eswitch_check",
             "port")
_PORT_KEYS = ("number", "netdev", "vlan_mode", "tag", "trunks", "flood")
_IFNAMSIZ = 15


def default_socket_path(bridge: str) -> str:
    """Where the daemon of ``bridge`` serves its control socket by default."""
    return os.path.join(SOCKET_DIR, f"{bridge}.sock")


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One ``[[port]]``: the NORMAL configuration and the netdev it lives on."""

    config: PortConfig
    netdev: str


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    path: str
    bridge: str
    ports: tuple[PortSpec, ...]
    policy: Policy = Policy.SKIP_SW
    netns: str | None = None
    flow_limit: int = DEFAULT_FLOW_LIMIT
    packet_in_limit: int = DEFAULT_PACKET_IN_LIMIT
    socket: str = ""
    rules: str | None = None  # absolute path of the initial rules file
    eswitch_check: bool = True
    max_idle_ms: int = DEFAULT_MAX_IDLE_MS
    revalidate_interval_ms: int = DEFAULT_INTERVAL_MS


class _Checker:
    """Typed reads of one table, each error naming file, key and value."""

    def __init__(self, path: str, table: dict[str, Any], prefix: str, allowed: tuple[str, ...]
                 ) -> None:
        self.path, self.table, self.prefix = path, table, prefix
        for k in table:
            if k not in allowed:
                raise self.error(k, table[k], f"unknown key (known: {', '.join(allowed)})")

    def error(self, key: str, value: Any, why: str) -> ParseError:
        return ParseError(f"config: {why}", file=self.path, key=self.prefix + key,
                          value=repr(value) if value is not None else None)

    def get(self, key: str, typ: type, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.table:
            if required:
                raise self.error(key, None, "missing required key")
            return default
        v = self.table[key]
        if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise self.error(key, v, "expected an integer")
        if not isinstance(v, typ):
            raise self.error(key, v, f"expected a {typ.__name__}")
        return v

    def int_in(self, key: str, lo: int, hi: int, default: int | None = None, *,
               required: bool = False) -> int | None:
        v = self.get(key, int, default, required=required)
        if v is not None and not lo <= v <= hi:
            raise self.error(key, v, f"out of range {lo}..{hi}")
        return v

    def name(self, key: str, *, required: bool = False) -> str | None:
        v = self.get(key, str, required=required)
        if v is not None and (not v or len(v) > _IFNAMSIZ or "/" in v
                              or any(c.isspace() for c in v)):
            raise self.error(key, v, f"not a valid name (1..{_IFNAMSIZ} characters, no "
                                     "'/' or spaces)")
        return v


def _port(path: str, i: int, table: Any) -> PortSpec:
    if not isinstance(table, dict):
        raise ParseError("config: expected a [[port]] table", file=path, key=f"port[{i}]")
    c = _Checker(path, table, f"port[{i}].", _PORT_KEYS)
    number = c.int_in("number", 1, 0xFEFF, required=True)
    netdev = c.name("netdev", required=True)
    assert number is not None and netdev is not None
    mode_text = c.get("vlan_mode", str, "trunk")
    try:
        mode = VlanMode(mode_text)
    except ValueError:
        raise c.error("vlan_mode", mode_text, "expected access or trunk") from None
    tag = c.int_in("tag", 0, 4095, 0)
    trunks = c.get("trunks", list, [])
    for t in trunks:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= 4095:
            raise c.error("trunks", trunks, "expected a list of VLAN ids 0..4095")
    flood = c.get("flood", bool, True)
    if mode is VlanMode.TRUNK and tag:
        raise c.error("tag", tag, "tag is for access ports (vlan_mode = \"access\")")
    if mode is VlanMode.ACCESS and trunks:
        raise c.error("trunks", trunks, "trunks is for trunk ports")
    try:
        cfg = PortConfig(number, netdev, mode, tag or 0, frozenset(trunks), flood)
    except ValidationError as e:
        raise ParseError(f"config: {e.message}", file=path, key=f"port[{i}]",
                         **e.context) from None
    return PortSpec(cfg, netdev)


def parse_config(text: str, path: str) -> DaemonConfig:
    """TOML text of the file at ``path`` -> ``DaemonConfig`` (pure)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ParseError(f"config: not valid TOML: {e}", file=path) from None
    c = _Checker(path, doc, "", _TOP_KEYS)
    bridge = c.name("bridge", required=True)
    assert bridge is not None
    policy_text = c.get("policy", str, Policy.SKIP_SW.value)
    try:
        policy = Policy(policy_text)
    except ValueError:
        raise c.error("policy", policy_text,
                      "expected one of " + ", ".join(p.value for p in Policy)) from None
    netns = c.get("netns", str)
    if netns is not None and (not netns or "/" in netns):
        raise c.error("netns", netns, "not an ip netns name")
    flow_limit = c.int_in("flow_limit", 1, 10_000_000, DEFAULT_FLOW_LIMIT)
    max_idle = c.int_in("max_idle_ms", 100, 86_400_000, DEFAULT_MAX_IDLE_MS)
    interval = c.int_in("revalidate_interval_ms", 10, 60_000, DEFAULT_INTERVAL_MS)
    pin_limit = c.int_in("packet_in_limit", 1, 1_000_000, DEFAULT_PACKET_IN_LIMIT)
    sock = c.get("socket", str, default_socket_path(bridge))
    if not sock:
        raise c.error("socket", sock, "empty path")
    rules = c.get("rules", str)
    base = os.path.dirname(os.path.abspath(path))
    if rules is not None:
        rules = os.path.normpath(os.path.join(base, rules))
    raw_ports = c.get("port", list, [])
    if not raw_ports:
        raise c.error("port", None, "at least one [[port]] is needed")
    ports = tuple(_port(path, i, t) for i, t in enumerate(raw_ports))
    seen_no: set[int] = set()
    seen_dev: set[str] = set()
    for i, p in enumerate(ports):
        if p.config.number in seen_no:
            raise ParseError("config: port number used twice", file=path,
                             key=f"port[{i}].number", value=p.config.number)
        if p.netdev in seen_dev:
            raise ParseError("config: netdev used twice", file=path, key=f"port[{i}].netdev",
                             value=repr(p.netdev))
        seen_no.add(p.config.number)
        seen_dev.add(p.netdev)
    assert flow_limit is not None and pin_limit is not None
    assert max_idle is not None and interval is not None
    return DaemonConfig(path, bridge, ports, policy, netns, flow_limit, pin_limit,
                        sock, rules, c.get("eswitch_check", bool, True), max_idle, interval)


def load_config(path: str) -> DaemonConfig:
    """Read and parse the config file (the one place it is read)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ParseError(f"config: cannot read: {e.strerror or e}", file=path) from None
    except UnicodeDecodeError:
        raise ParseError("config: not UTF-8 text", file=path) from None
    return parse_config(text, path)
