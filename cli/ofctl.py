"""``flowpath ofctl ...``: OpenFlow-style rules (ovs-ofctl syntax), offline.

* ``parse``: validate add-flow lines and print them as dump-flows does.
* ``trace``: ofproto/trace of a flow through a rule file, without a daemon.
"""

from __future__ import annotations

from typing import Any

import click

from cli.common import JSON_OPTION, emit_json, lines_from, lines_of_file
from dpif.errors import FlowpathError, ParseError
from ofproto.actiontext import format_actions
from ofproto.rule import Rule
from ofproto.ruletext import format_match, format_rule, parse_rule


@click.group()
def ofctl() -> None:
    """OpenFlow-style rules in ovs-ofctl syntax: parse, trace (offline); add-flow,
    add-flows, mod-flows, del-flows, dump-flows, monitor (the daemon)."""


def rule_json(rule: Rule) -> dict[str, Any]:
    return {"table": rule.table, "priority": rule.priority, "cookie": f"{rule.cookie:#x}",
            "match": format_match(rule.match, rule.priority),
            "actions": format_actions(rule.actions),
            "idle_timeout": rule.idle_timeout, "hard_timeout": rule.hard_timeout,
            "importance": rule.importance, "flags": sorted(rule.flags),
            "line": format_rule(rule).strip()}


def _parse_numbered(text: str, where: str | None) -> Rule:
    try:
        return parse_rule(text)
    except ParseError as e:
        if where is None:
            raise
        raise e.at(where) from None


@ofctl.command()
@click.argument("rules", nargs=-1, required=True, metavar="RULE... | -")
@JSON_OPTION
def parse(rules: tuple[str, ...], as_json: bool) -> None:
    """Parse ovs-ofctl add-flow RULEs (``-``: one per stdin line) and print them
    like ``ovs-ofctl dump-flows --no-stats``.  The first malformed rule is an
    error naming the field and its position."""
    parsed = [_parse_numbered(text, None) for text in lines_from(rules)]
    if as_json:
        emit_json([rule_json(r) for r in parsed])
        return
    for r in parsed:
        click.echo(format_rule(r))


def load_rules(path: str) -> list[Rule]:
    return [_parse_numbered(text, f"{path}:{n}") for n, text in lines_of_file(path)]


@ofctl.command()
@click.option("--rules", "rules_file", required=True, metavar="FILE",
              help="ovs-ofctl add-flow lines, one per line (# comments; '-' for stdin).")
@click.option("--port", "port_opts", multiple=True, metavar="N=NAME",
              help="Bridge port N named NAME (NORMAL floods to these); default ports 1..4.")
@click.option("--bridge", "bridge_name", default="br0", show_default=True)
@click.argument("flow")
@JSON_OPTION
def trace(rules_file: str, port_opts: tuple[str, ...], bridge_name: str, flow: str,
          as_json: bool) -> None:
    """Trace FLOW (ovs-ofctl match syntax, e.g. 'in_port=1,udp,nw_dst=10.0.0.5')
    through the rules of FILE, like ``ovs-appctl ofproto/trace``."""
    try:
        from ofproto.bridge import Bridge
        from ofproto.normal import PortConfig
        from ofproto.trace import render
        from ofproto.trace import trace as do_trace
    except ImportError as e:  # pragma: no cover - ofproto still landing
        raise FlowpathError("ofproto trace is not available in this build", error=str(e)) from e
    from cli.common import parse_port_maps
    rules = load_rules(rules_file)
    pm = parse_port_maps(port_opts) or {n: f"p{n}" for n in (1, 2, 3, 4)}
    br = Bridge(bridge_name, [PortConfig(n, name) for n, name in sorted(pm.items())])
    for r in rules:
        br.tables.add(r)
    result = do_trace(br, flow)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(render(result), nl=False)
