"""``flowpath dpctl ...``: datapath flows, straight against the library and tc.

* ``normalize``: parse dpctl flow lines, print them canonically (or as JSON).
* ``why-not-offloaded``: the pure translation (``to_flower``) of one flow,
  with the eswitch check; prints the tc command it would install or the
  reason (field / action) it stays in software.
* ``dump-flows``: the daemon's flows (tc and software merged), or with
  ``--dev`` flowpath-owned tc filters on a device, as dpctl lines.
* ``cleanup``: delete exactly flowpath's filters on a device.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import Any

import click

from cli.common import (JSON_OPTION, NETNS_OPTION, connect, daemon_options, emit_json,
                        lines_from, parse_port_maps)
from cli.tcrender import render_delete, render_filter
from dpif import actions as A
from dpif.actiontext import format_action, format_actions
from dpif.errors import FlowpathError
from dpif.fields import Field, Fmt
from dpif.flow import FlowStats, Ufid
from dpif.flowtext import FlowText, format_flow, parse_flow
from dpif.keytext import format_key
from dpif.match import Match
from dpif.valuetext import format_value
from offload import tc_values as V
from offload.datapath import PRIO_MAX, PRIO_MIN, Policy
from offload.tc_flower import NotOffloadable, PortInfo, from_flower, to_flower, ufid_of

OFFLINE_IFINDEX_BASE = 1000


@click.group()
def dpctl() -> None:
    """Datapath flows: normalize, explain offload, dump and clean tc filters."""


# --- normalize -------------------------------------------------------------------------


def _mask_text(f: Field, mask: int) -> str:
    if f.fmt in (Fmt.MAC, Fmt.IPV4, Fmt.IPV6):
        return format_value(f, mask, f.all_ones)
    return f"{mask:#x}"


def match_json(m: Match) -> list[dict[str, Any]]:
    out = []
    for f, value, mask in m.fields():
        try:
            vtext = format_value(f, value, f.all_ones) if f.fmt not in (Fmt.FLAGS,) \
                else format_value(f, value, mask)
        except Exception:  # a value only meaningful with its mask
            vtext = f"{value:#x}"
        out.append({"field": f.name, "value": vtext, "mask": _mask_text(f, mask),
                    "exact": mask == f.all_ones})
    return out


def stats_json(s: FlowStats | None, now: float) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"packets": s.packets, "bytes": s.bytes,
            "used": None if s.used is None else round(max(0.0, now - s.used), 3),
            "tcp_flags": s.tcp_flags}


def flow_json(ft: FlowText, now: float = 0.0) -> dict[str, Any]:
    return {
        "ufid": None if ft.ufid is None else str(ft.ufid),
        "key": format_key(ft.match),
        "fields": match_json(ft.match),
        "actions": [format_action(a) for a in ft.actions],
        "actions_text": format_actions(ft.actions),
        "stats": stats_json(ft.stats, now),
        "offloaded": ft.offloaded,
        "dp": ft.dp,
        "line": format_flow(ft, now),
    }


@dpctl.command()
@click.argument("lines", nargs=-1, required=True, metavar="LINE... | -")
@JSON_OPTION
def normalize(lines: tuple[str, ...], as_json: bool) -> None:
    """Parse dpctl flow lines and print them canonically (``-``: read stdin).

    The output parses back to the same flow: ``normalize`` is a round trip.
    """
    flows = [parse_flow(line) for line in lines_from(lines)]
    if as_json:
        emit_json([flow_json(ft) for ft in flows])
        return
    for ft in flows:
        click.echo(format_flow(ft))


# --- why-not-offloaded -------------------------------------------------------------------


@dataclass
class Explanation:
    """The answer to "why is my flow (not) offloaded?", as data."""

    flow: str
    policy: str
    offloadable: bool
    reason: str | None = None
    field: str | None = None
    action: str | None = None
    stage: str | None = None  # match | actions | recirc | eswitch | ports
    tc: str | None = None
    checks: list[tuple[str, str]] = dc_field(default_factory=list)  # (check, result)
    notes: list[str] = dc_field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "policy": self.policy, "offloadable": self.offloadable,
                "reason": self.reason, "field": self.field, "action": self.action,
                "stage": self.stage, "tc": self.tc,
                "checks": [{"check": c, "result": r} for c, r in self.checks],
                "notes": self.notes}

    def render(self) -> str:
        out = [f"flow: {self.flow}", f"policy: {self.policy}"]
        for check, result in self.checks:
            out.append(f"  {check + ':':<22} {result}")
        if self.offloadable:
            out.append("verdict: offloadable; flowpath would install:")
            out.append(f"  {self.tc}")
        else:
            what = f" (field {self.field})" if self.field else (
                f" (action {self.action})" if self.action else "")
            out.append(f"verdict: NOT offloadable: {self.reason}{what}")
            out.append("  the flow stays in flowpath's software datapath")
        for n in self.notes:
            out.append(f"note: {n}")
        return "\n".join(out)


def _recirc_reason(match: Match, actions: A.Actions) -> str | None:
    # Same rule as offload.datapath: a miss in tc chain N cannot carry recirc_id.
    if match.value("recirc_id") or any(isinstance(a, A.Recirc) for a in actions):
        return "recirculation stays in software (a tc chain miss cannot carry recirc_id)"
    return None


def explain(ft: FlowText, ports: Mapping[int, PortInfo], *, policy: Policy,
            check: Any = None, netns: str | None = None,
            eswitch_note: str | None = None, hw_tc_offload: str | None = None) -> Explanation:
    """Run the pure translation step by step and say where it stops."""
    m, actions = ft.match, ft.actions
    ex = Explanation(flow=format_flow(FlowText(m, actions)), policy=policy.value,
                     offloadable=False)
    if eswitch_note:
        ex.notes.append(eswitch_note)
    ufid = ft.ufid or Ufid(1)
    names = {p.ifindex: p.ifname for p in ports.values()}

    def ifname(ifindex: int) -> str:
        return names.get(ifindex, f"ifindex:{ifindex}")

    in_port = m.value("in_port") if m.is_exact("in_port") else None
    if in_port is not None:
        p = ports.get(in_port)
        ex.checks.append(("ingress port", f"{in_port} -> {p.ifname} (ifindex {p.ifindex})"
                          if p else f"{in_port} -> no device (give --port {in_port}=IFNAME)"))
    for a in actions:
        if isinstance(a, A.Output):
            p = ports.get(a.port)
            ex.checks.append((f"output {a.port}", f"{p.ifname} (ifindex {p.ifindex})" if p
                              else f"no device (give --port {a.port}=IFNAME)"))
    recirc = _recirc_reason(m, actions)
    # 1. the match alone (actions "drop"), without the eswitch check
    only_match = to_flower(m, (), ufid, ports=ports, prio=PRIO_MIN, handle=1,
                           flags=policy.flags)
    if isinstance(only_match, NotOffloadable):
        ex.checks.append(("match", f"refused: {only_match}"))
        return _verdict(ex, "match", only_match)
    ex.checks.append(("match", "ok: every matched field has a flower key"))
    # 2. actions, still without the eswitch check
    no_check = to_flower(m, actions, ufid, ports=ports, prio=PRIO_MIN, handle=1,
                         flags=policy.flags)
    if isinstance(no_check, NotOffloadable):
        ex.checks.append(("actions", f"refused: {no_check}"))
        return _verdict(ex, "actions", no_check)
    ex.checks.append(("actions", f"ok: {len(no_check.actions)} tc action(s)"))
    # 3. recirculation (a placement rule of the offload datapath)
    if recirc:
        ex.checks.append(("recirculation", "refused"))
        return _verdict(ex, "recirc", NotOffloadable(recirc, field="recirc_id"
                                                      if m.value("recirc_id") else None,
                                                      action=None if m.value("recirc_id")
                                                      else "recirc"))
    # 4. the eswitch: ingress a switchdev port, outputs on the same eswitch
    if check is not None:
        full = to_flower(m, actions, ufid, ports=ports, prio=PRIO_MIN, handle=1,
                         flags=policy.flags, check=check)
        if isinstance(full, NotOffloadable):
            ex.checks.append(("eswitch", f"refused: {full.reason}"))
            return _verdict(ex, "eswitch", full)
        ex.checks.append(("eswitch", "ok: ingress and outputs on one switchdev eswitch"))
    else:
        ex.checks.append(("eswitch", "skipped"))
        full = no_check
    ex.offloadable = True
    ex.tc = render_filter(full, ifname, netns=netns)
    if hw_tc_offload is not None:
        ex.checks.append(("hw-tc-offload", hw_tc_offload))
        if not hw_tc_offload.startswith("on") and policy is not Policy.SKIP_HW:
            dev = ports[m.value("in_port")].ifname
            ex.notes.append(f"hw-tc-offload is {hw_tc_offload} on {dev}: the NIC will not take "
                            f"the filter" + (" and skip_sw makes the kernel refuse it"
                                             if policy is Policy.SKIP_SW else "")
                            + (f"; try: ethtool -K {dev} hw-tc-offload on"
                               if "fixed" not in hw_tc_offload else ""))
    ex.notes.append(f"prio {PRIO_MIN} and handle 1 are illustrative: the datapath gives one "
                    f"prio per (mask, protocol) in {PRIO_MIN}..{PRIO_MAX}")
    if policy is Policy.SKIP_SW:
        ex.notes.append("skip_sw: if the driver refuses the filter, the flow goes to the "
                        "software datapath and keeps the kernel's extack text as its reason")
    return ex


def _verdict(ex: Explanation, stage: str, r: NotOffloadable) -> Explanation:
    ex.offloadable = False
    ex.reason, ex.field, ex.action, ex.stage = r.reason, r.field, r.action, stage
    return ex


def resolve_ports(port_map: Mapping[int, str], *, offline: bool,
                  netns: str | None) -> dict[int, PortInfo]:
    if offline:
        return {n: PortInfo(n, OFFLINE_IFINDEX_BASE + n, name) for n, name in port_map.items()}
    from offload.tc_netlink import TcNetlink
    with TcNetlink(netns=netns) as tc:
        return {n: PortInfo(n, tc.ifindex(name), name) for n, name in port_map.items()}


@dpctl.command("why-not-offloaded")
@click.argument("line")
@click.option("--port", "port_opts", multiple=True, metavar="N=IFNAME",
              help="Datapath port N is netdev IFNAME (repeat for every port the flow uses).")
@click.option("--policy", type=click.Choice([p.value for p in Policy]), default="skip_sw",
              show_default=True, help="tc placement policy (as OVS's tc-policy).")
@NETNS_OPTION
@click.option("--offline", is_flag=True,
              help="Do not touch the kernel: fake ifindexes (1000+N), no eswitch check.")
@click.option("--no-eswitch-check", is_flag=True,
              help="Skip the devlink check that ingress and outputs share a switchdev eswitch.")
@JSON_OPTION
def why_not_offloaded(line: str, port_opts: tuple[str, ...], policy: str, netns: str | None,
                      offline: bool, no_eswitch_check: bool, as_json: bool) -> None:
    """Explain whether a datapath flow can go to tc flower, and why not.

    LINE is a dpctl flow (``in_port(1),eth_type(0x0800),...,actions:2``).
    Prints the tc filter flowpath would install, or the reason naming the
    field or action that keeps the flow in software.  Exit status is 0 for
    either answer.
    """
    ft = parse_flow(line)
    ports = resolve_ports(parse_port_maps(port_opts), offline=offline, netns=netns)
    check = None
    note = None
    if offline:
        note = "offline: ifindexes are fake (1000+N) and the eswitch check was skipped"
    elif not no_eswitch_check:
        from offload.datapath import eswitch_check
        from offload.switchdev import discover
        try:
            topo = discover(netns)
        except FlowpathError as e:
            raise type(e)(f"eswitch discovery failed ({e.message}); "
                          "use --no-eswitch-check to skip it", **e.context) from e
        check = eswitch_check(topo)
    feature = None
    ingress = ports.get(ft.match.value("in_port")) if ft.match.is_exact("in_port") else None
    if not offline and ingress is not None:
        feature = _hw_tc_offload(ingress.ifname, netns)
    ex = explain(ft, ports, policy=Policy(policy), check=check, netns=netns, eswitch_note=note,
                 hw_tc_offload=feature)
    if as_json:
        emit_json(ex.to_dict())
    else:
        click.echo(ex.render())


def _hw_tc_offload(ifname: str, netns: str | None) -> str:
    """``on`` / ``off`` / ``off [fixed]`` / ``n/a (why)`` for a netdev's hw-tc-offload."""
    from offload.switchdev import Switchdev
    try:
        with Switchdev(netns) as sd:
            st = sd.tc_offload(ifname)
    except FlowpathError as e:
        return f"n/a ({e.message})"
    return ("on" if st.active else "off") + ("" if st.available else " [fixed]")


# --- dump-flows / cleanup ---------------------------------------------------------------


def is_ours(f: V.FlowerFilter) -> bool:
    return PRIO_MIN <= f.prio <= PRIO_MAX and ufid_of(f) is not None


class _PortsByIfindex(Mapping[int, PortInfo]):
    """ifindex -> PortInfo: explicit ``--port`` maps, else port number = ifindex."""

    def __init__(self, explicit: Mapping[int, PortInfo], ifname: Any, strict: bool) -> None:
        self._explicit = {p.ifindex: p for p in explicit.values()}
        self._ifname = ifname
        self._strict = strict

    def __getitem__(self, ifindex: int) -> PortInfo:
        if ifindex in self._explicit:
            return self._explicit[ifindex]
        if self._strict:
            raise KeyError(ifindex)
        return PortInfo(ifindex, ifindex, self._ifname(ifindex))

    def get(self, ifindex: int, default: Any = None) -> Any:
        try:
            return self[ifindex]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[int]:
        return iter(self._explicit)

    def __len__(self) -> int:
        return len(self._explicit)


def _dump_stats(d: V.FilterDump, now: float) -> FlowStats:
    s = d.stats
    used = None
    if s.packets and s.idle_ms is not None:
        used = now - s.idle_ms / 1000.0
    return FlowStats(s.packets, s.bytes, used)


def dump_entry(d: V.FilterDump, ports: Mapping[int, PortInfo], ifname: Any, now: float,
               netns: str | None) -> dict[str, Any]:
    f = d.filter
    ours = is_ours(f)
    entry: dict[str, Any] = {
        "owner": "flowpath" if ours else "foreign",
        "device": ifname(f.ifindex), "chain": f.chain, "prio": f.prio, "handle": f.handle,
        "in_hw": d.in_hw, "not_in_hw": d.not_in_hw, "in_hw_count": d.in_hw_count,
        "packets": d.stats.packets, "bytes": d.stats.bytes,
        "hw_packets": d.stats.hw_packets, "hw_bytes": d.stats.hw_bytes,
        "idle_ms": d.stats.idle_ms,
        "tc": render_filter(f, ifname, netns=netns),
    }
    if ours:
        entry["ufid"] = str(ufid_of(f))
        try:
            match, actions = from_flower(f, ports)
        except (FlowpathError, KeyError) as e:
            entry["error"] = f"cannot read back as a megaflow: {e}"
            return entry
        ft = FlowText(match, actions, ufid_of(f), _dump_stats(d, now), d.in_hw, "tc")
        entry["flow"] = flow_json(ft, now)
        entry["line"] = format_flow(ft, now)
    return entry


def _short_line(entry: dict[str, Any], verbose: bool) -> str:
    if entry["owner"] == "foreign":
        return f"foreign: prio {entry['prio']} handle {entry['handle']:#x} chain " \
               f"{entry['chain']}, packets:{entry['packets']}, bytes:{entry['bytes']}: " \
               f"{entry['tc']}"
    if "error" in entry:
        return f"ufid:{entry['ufid']}, unreadable: {entry['error']}, prio {entry['prio']} " \
               f"handle {entry['handle']:#x}"
    line: str = entry["line"]
    return line if verbose else short_line(line)


def short_line(line: str) -> str:
    """A ``-m`` flow line as dpctl prints it without ``-m``: no ufid, offloaded or
    dp.  Parsed and printed again with the dpif codecs (they round-trip, ``used``
    included), not cut as a string."""
    return format_flow(replace(parse_flow(line), ufid=None, offloaded=None, dp=None))


@dpctl.command("dump-flows")
@click.option("--dev", "devs", multiple=True, metavar="IFNAME",
              help="Read tc directly: device whose ingress tc filters to dump (repeatable). "
                   "Without --dev, ask the daemon.")
@click.option("--port", "port_opts", multiple=True, metavar="N=IFNAME",
              help="Print device IFNAME as datapath port N.  Without any --port, a "
                   "device's port number is its ifindex.")
@NETNS_OPTION
@click.option("-m", "--more", "verbose", is_flag=True,
              help="Also print ufid, offloaded:yes|no and dp:tc (as dpctl/dump-flows -m).")
@click.option("--all", "show_all", is_flag=True,
              help="Also list filters that are not flowpath's, marked foreign.")
@click.option("--type", "dp_type", type=click.Choice(["offloaded", "sw", "all"]),
              default=None, help="Daemon only: flows in tc (offloaded), in the software "
                                 "datapath (sw), or both (all, the default).")
@daemon_options
@JSON_OPTION
def dump_flows(devs: tuple[str, ...], port_opts: tuple[str, ...], netns: str | None,
               verbose: bool, show_all: bool, dp_type: str | None, socket_path: str | None,
               bridge: str, as_json: bool) -> None:
    """Dump datapath flows: the daemon's (tc and software merged, like
    ``ovs-appctl dpctl/dump-flows -m``), or with --dev flowpath's tc flower
    filters read straight from the kernel.

    flowpath's filters are those with a priority in 0x0800..0xfeff and a
    16-byte ufid cookie; anything else is foreign and only shown with --all.
    """
    if not devs:
        if port_opts or netns or show_all:
            raise click.UsageError("--port, --netns and --all go with --dev (tc read directly)")
        _dump_daemon_flows(socket_path, bridge, dp_type or "all", verbose, as_json)
        return
    if dp_type is not None:
        raise click.UsageError("--type asks the daemon; it does not go with --dev")
    from offload.tc_netlink import TcNetlink
    port_map = parse_port_maps(port_opts)
    entries: list[dict[str, Any]] = []
    with TcNetlink(netns=netns) as tc:
        explicit = {n: PortInfo(n, tc.ifindex(name), name) for n, name in port_map.items()}
        ports = _PortsByIfindex(explicit, tc.ifname, strict=bool(port_map))
        now = time.monotonic()
        for dev in devs:
            ifindex = tc.ifindex(dev)
            for d in tc.dump(ifindex):
                if is_ours(d.filter) or show_all:
                    entries.append(dump_entry(d, ports, tc.ifname, now, netns))
    if as_json:
        emit_json(entries)
        return
    for e in entries:
        click.echo(_short_line(e, verbose))


def _dump_daemon_flows(socket_path: str | None, bridge: str, dp_type: str, verbose: bool,
                       as_json: bool) -> None:
    with connect(socket_path, bridge) as c:
        flows = c.request("dp-dump-flows", type=dp_type)
    if as_json:
        emit_json(flows)
        return
    for f in flows:
        click.echo(f["line"] if verbose else short_line(f["line"]))


@dpctl.command()
@click.option("--dev", "devs", multiple=True, required=True, metavar="IFNAME",
              help="Device whose flowpath filters to delete (repeatable).")
@NETNS_OPTION
@click.option("--dry-run", is_flag=True, help="Print the tc commands instead of deleting.")
@JSON_OPTION
def cleanup(devs: tuple[str, ...], netns: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete exactly flowpath's filters (ufid cookie, flowpath prio range).

    Foreign filters and the ingress qdisc are left alone.
    """
    from offload.tc_netlink import TcNetlink
    result = []
    with TcNetlink(netns=netns) as tc:
        for dev in devs:
            ifindex = tc.ifindex(dev)
            dumped = tc.dump(ifindex)
            ours = [d.filter for d in dumped if is_ours(d.filter)]
            if dry_run:
                for f in ours:
                    click.echo(render_delete(f, tc.ifname, netns=netns))
            else:
                for f in ours:
                    tc.delete(f)
            result.append({"device": dev, "deleted": 0 if dry_run else len(ours),
                           "would_delete": len(ours) if dry_run else 0,
                           "foreign_left": len(dumped) - len(ours)})
    if as_json:
        emit_json(result)
        return
    for r in result:
        if dry_run:
            click.echo(f"{r['device']}: would delete {r['would_delete']} flowpath filter(s), "
                       f"{r['foreign_left']} foreign filter(s) untouched")
        else:
            click.echo(f"{r['device']}: deleted {r['deleted']} flowpath filter(s), "
                       f"{r['foreign_left']} foreign filter(s) untouched")

