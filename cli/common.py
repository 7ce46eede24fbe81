"""Shared CLI pieces: port maps, JSON output, reading lines from args or stdin."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import click

from dpif.errors import ParseError

NETNS_OPTION = click.option("--netns", "netns", metavar="NS", default=None,
                            help="Network namespace (ip netns name); default: the current one.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def parse_port_maps(items: Iterable[str]) -> dict[int, str]:
    """``--port N=IFNAME`` options -> {N: IFNAME} (ParseError naming the bad one)."""
    out: dict[int, str] = {}
    for item in items:
        num, sep, name = item.partition("=")
        if not sep or not name or not num.strip().isdigit():
            raise ParseError("--port wants N=IFNAME", text=item, pos=0, expected="N=IFNAME")
        port = int(num)
        if port in out and out[port] != name:
            raise ParseError("--port given twice for one port number", text=item, pos=0,
                             port=port)
        out[port] = name
    names = list(out.values())
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ParseError("one device mapped to two port numbers", device=sorted(dup)[0])
    return out


def lines_from(args: Iterable[str]) -> Iterator[str]:
    """Each argument, or every non-empty, non-comment stdin line for ``-``."""
    for a in args:
        if a == "-":
            for line in sys.stdin:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line
        else:
            yield a


def lines_of_file(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each rule line of a file (``-``: stdin); # comments skipped."""
    try:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as e:
        raise click.FileError(path, hint=e.strerror or str(e)) from e
    try:
        for n, raw in enumerate(stream, start=1):
            line = raw.strip()
            if line and not line.startswith("#"):
                yield n, line
    finally:
        if stream is not sys.stdin:
            stream.close()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def daemon_options(fn: Any) -> Any:
    """``--socket PATH`` / ``--bridge NAME``: which daemon to talk to."""
    fn = click.option("--socket", "socket_path", metavar="PATH", default=None,
                      help="The daemon's control socket (default: /run/flowpath/BRIDGE.sock).")(fn)
    fn = click.option("--bridge", "-b", "bridge", metavar="NAME", default="br0",
                      show_default=True, help="Bridge whose daemon to talk to.")(fn)
    return fn


def connect(socket_path: str | None, bridge: str, *, timeout: float | None = 120.0) -> Any:
    """A ``ControlClient`` to the daemon (one clear error if it is not there)."""
    from ofproto.control_io import ControlClient
    from ofproto.daemon_config import default_socket_path
    return ControlClient(socket_path or default_socket_path(bridge), timeout=timeout)
