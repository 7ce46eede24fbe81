from __future__ import annotations

import io
import json

import structlog

from cli.logsetup import configure


def test_json_lines_carry_bound_context() -> None:
    out = io.StringIO()
    configure(json=True, level="info", stream=out)
    try:
        structlog.get_logger("t").bind(port="eth0", ufid="u1").info("flow_placed", dp="tc")
        structlog.get_logger("t").debug("hidden")
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "flow_placed"
    assert event["port"] == "eth0" and event["ufid"] == "u1" and event["dp"] == "tc"
    assert event["level"] == "info"


def test_console_rendering_is_one_line_with_context() -> None:
    out = io.StringIO()
    configure(json=False, level="debug", stream=out)
    try:
        structlog.get_logger("t").bind(chain=3).warning("refused", reason="extack text")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "refused" in text and "chain=3" in text and "reason='extack text'" in text
    assert text.count("\n") == 1
