"""``flowpath daemon ...``: run the daemon in the foreground, ask it how it is.

* ``run --config FILE``: build the bridge the config describes and serve its
  control socket until SIGTERM/SIGINT (``ofproto.daemon``).
* ``status``: ports, policy, flow counts per placement, the revalidator
  (flow limit, last dump time, flows aged out), packet-in queue.
"""

from __future__ import annotations

from typing import Any

import click

from cli.common import JSON_OPTION, connect, daemon_options, emit_json


@click.group()
def daemon() -> None:
    """The flowpath daemon: run it, ask its status."""


@daemon.command()
@click.option("--config", "config_path", required=True, metavar="FILE",
              help="The daemon's TOML config (bridge, ports, policy, socket, rules).")
@click.option("--cleanup-on-exit", is_flag=True,
              help="Delete flowpath's tc filters on the way out (default: they stay, keep "
                   "forwarding, and are adopted by the next start).")
def run(config_path: str, cleanup_on_exit: bool) -> None:
    """Run the daemon in the foreground (like ovs-vswitchd under systemd).

    SIGTERM or SIGINT stop it cleanly: the control socket is removed, the
    miss channels too, and the offloaded filters stay unless
    --cleanup-on-exit.
    """
    from ofproto.daemon import run_daemon
    from ofproto.daemon_config import load_config
    run_daemon(load_config(config_path), cleanup_on_exit=cleanup_on_exit)


def render_revalidator(rv: dict[str, Any]) -> str:
    dump = "-" if rv["last_dump_ms"] is None else f"{rv['last_dump_ms']}ms"
    return (f"  revalidator: flow limit {rv['flow_limit']} (max {rv['flow_limit_max']}), "
            f"max idle {rv['max_idle_ms']}ms, sweep every {rv['interval_ms']}ms, "
            f"last dump {dump}, {rv['sweeps']} sweeps, aged out {rv['aged_out']}, "
            f"limit deleted {rv['limit_deleted']}, modified {rv['modified']}, "
            f"deleted {rv['deleted']}")


def render_status(st: dict[str, Any]) -> str:
    fl, pin = st["flows"], st["packet_ins"]
    out = [f"bridge {st['bridge']}: policy {st['policy']}, netns {st['netns'] or '-'}, "
           f"up {st['uptime']:.0f}s",
           f"  rules: {st['rules']}",
           f"  flows: {fl['total']} (limit {st['flow_limit']}): tc in hw {fl['tc_in_hw']}, "
           f"tc not in hw {fl['tc_not_in_hw']}, software {fl['sw']}",
           render_revalidator(st["revalidator"]),
           f"  packet-ins: {pin['queued']} queued, last seq {pin['last_seq']}, "
           f"{pin['dropped']} dropped, {pin['monitors']} monitor(s)",
           "  ports:"]
    for p in st["ports"]:
        vlan = f"access tag {p['tag']}" if p["vlan_mode"] == "access" else (
            "trunk " + (",".join(map(str, p["trunks"])) if p["trunks"] else "all VLANs"))
        out.append(f"    {p['number']:>5}  {p['netdev']:<16} {vlan}")
    if st["counters"]:
        out.append("  counters: " + " ".join(f"{k}={v}" for k, v in st["counters"].items()))
    return "\n".join(out)


@daemon.command()
@daemon_options
@JSON_OPTION
def status(socket_path: str | None, bridge: str, as_json: bool) -> None:
    """Ports, policy, flow counts per placement, revalidator, packet-ins."""
    with connect(socket_path, bridge) as c:
        st = c.request("status")
    if as_json:
        emit_json(st)
    else:
        click.echo(render_status(st))
