"""``flowpath ofctl ...`` against a running daemon (its control socket).

* ``add-flow`` / ``add-flows``: add rules (validated here first, so a bad
  rule names its ``FILE:LINE``; the daemon parses again and adds them).
* ``mod-flows [--strict]`` / ``del-flows [--strict]``: as ovs-ofctl.
* ``dump-flows``: ``ovs-ofctl dump-flows`` lines with counters.
* ``monitor``: packet-ins as they arrive (``ovs-ofctl monitor br0 65534``).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cli.common import JSON_OPTION, connect, daemon_options, emit_json, lines_of_file
from cli.ofctl import _parse_numbered
from dpif.errors import FlowpathError
from ofproto.ruletext import parse_match

STRICT_OPTION = click.option("--strict", is_flag=True,
                             help="Select only the rule with this exact match and priority.")


def _send_rules(socket_path: str | None, bridge: str, texts: list[str]) -> None:
    with connect(socket_path, bridge) as c:
        c.request("add-flows", rules=texts)


@click.command("add-flow")
@click.argument("rule")
@daemon_options
def add_flow(rule: str, socket_path: str | None, bridge: str) -> None:
    """Add one rule (ovs-ofctl add-flow syntax) to the daemon's bridge."""
    _parse_numbered(rule, None)
    _send_rules(socket_path, bridge, [rule])


@click.command("add-flows")
@click.argument("file", metavar="FILE | -")
@daemon_options
def add_flows(file: str, socket_path: str | None, bridge: str) -> None:
    """Add the rules of FILE (one add-flow line each; ``-``: stdin)."""
    numbered = list(lines_of_file(file))  # read once: FILE may be stdin
    for n, text in numbered:
        _parse_numbered(text, f"{file}:{n}")
    _send_rules(socket_path, bridge, [text for _, text in numbered])


@click.command("mod-flows")
@click.argument("rule")
@STRICT_OPTION
@daemon_options
def mod_flows(rule: str, strict: bool, socket_path: str | None, bridge: str) -> None:
    """Change the actions (and cookie) of the rules RULE's match selects."""
    parse_match(rule, modify=True)
    with connect(socket_path, bridge) as c:
        c.request("mod-flows", rule=rule, strict=strict)


@click.command("del-flows")
@click.argument("match", required=False, default="")
@STRICT_OPTION
@daemon_options
def del_flows(match: str, strict: bool, socket_path: str | None, bridge: str) -> None:
    """Delete the rules MATCH selects (every rule without MATCH; cookie=V/M selects
    by cookie)."""
    parse_match(match)
    with connect(socket_path, bridge) as c:
        c.request("del-flows", match=match, strict=strict)


@click.command("dump-flows")
@click.argument("match", required=False, default="")
@daemon_options
@JSON_OPTION
def dump_flows(match: str, socket_path: str | None, bridge: str, as_json: bool) -> None:
    """Print the daemon's rules as ``ovs-ofctl dump-flows`` does (with counters)."""
    if match:
        parse_match(match)
    with connect(socket_path, bridge) as c:
        rules = c.request("dump-flows", match=match or None)
    if as_json:
        emit_json(rules)
        return
    for r in rules:
        click.echo(r["line"])


def monitor_line(p: dict[str, Any]) -> str:
    return (f"seq={p['seq']} in_port={p['in_port']} reason={p['reason']} table={p['table']} "
            f"cookie={p['cookie']} total_len={p['total_len']}: {p['flow']}")


@click.command()
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N packet-ins (exit 1 if --timeout comes first).")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Stop after S seconds.")
@click.option("--since", type=click.IntRange(min=0), default=None, metavar="SEQ",
              help="Start after packet-in SEQ still queued (0: the whole queue); "
                   "default: only new ones.")
@daemon_options
@JSON_OPTION
def monitor(count: int | None, timeout: float | None, since: int | None,
            socket_path: str | None, bridge: str, as_json: bool) -> None:
    """Print packet-ins as they arrive (like ``ovs-ofctl monitor BRIDGE 65534``).

    One line each: seq, in_port, reason, table, cookie, total_len and the
    packet as a dpctl flow; ``--json``: one JSON object per line.  The
    packet is not forwarded unless the rule's other actions say so.
    """
    wait = None if timeout is None else timeout + 30.0
    with connect(socket_path, bridge, timeout=wait) as c:
        for p in c.stream("monitor", "packet_in", count=count, timeout=timeout, since=since):
            click.echo(json.dumps(p, sort_keys=False) if as_json else monitor_line(p))
        final = c.final
    if count is not None and final.get("delivered", 0) < count:
        raise FlowpathError(f"monitor: {final.get('reason')} after {final.get('delivered')} of "
                            f"{count} packet-in(s)")


COMMANDS = (add_flow, add_flows, mod_flows, del_flows, dump_flows, monitor)
