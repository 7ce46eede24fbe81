"""The CLI against a daemon core serving on a socket in a tmp dir (in-memory
ports; the same Service, ControlServer and ControlCore as ``daemon run``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from dpif.flowtext import parse_flow
from ofproto.revalidator import RevalidatorConfig
from tests.ofproto.control_rig import Rig, rig, udp


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(cli, list(args), input=stdin)
    assert "Traceback" not in r.stdout + r.stderr
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def daemon() -> Iterator[Rig]:
    with rig() as r:
        yield r


def test_add_flows_dump_flows_and_dpctl(daemon: Rig, tmp_path: Path) -> None:
    s = daemon.socket
    rules = tmp_path / "r.txt"
    rules.write_text("# comment\npriority=100,udp,tp_dst=9999,actions=controller\n\n"
                     "priority=0,actions=normal\n")
    assert run("ofctl", "add-flows", str(rules), "--socket", s)[0] == 0
    assert run("ofctl", "add-flow", "--socket", s, "priority=50,tcp,actions=drop")[0] == 0
    daemon.mem[1].inject([udp(), udp()])
    time.sleep(0.3)
    rc, out, _ = run("ofctl", "dump-flows", "--socket", s)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 3 and "n_packets=2" in lines[0] and "tp_dst=9999" in lines[0]
    rc, out, _ = run("ofctl", "dump-flows", "--socket", s, "--json")
    assert [r["priority"] for r in json.loads(out)] == [100, 50, 0]
    rc, out, _ = run("dpctl", "dump-flows", "--socket", s)
    assert rc == 0 and out.startswith("recirc_id(0),in_port(1),") and "dp:sw" not in out
    rc, out, _ = run("dpctl", "dump-flows", "--socket", s, "-m", "--type", "sw")
    assert out.startswith("ufid:") and "offloaded:no, dp:sw" in out
    # without -m: each -m flow minus its ufid, offloaded and dp (used moves on between calls)
    short, long = run("dpctl", "dump-flows", "--socket", s, "--type", "sw")[1], out
    assert len(short.splitlines()) == len(long.splitlines()) >= 1
    for a, b in zip(short.splitlines(), long.splitlines(), strict=True):
        fa, fb = parse_flow(a), parse_flow(b)
        assert fb.ufid is not None and fb.offloaded is False and fb.dp == "sw"
        assert fa.stats is not None and fb.stats is not None
        assert replace(fa, stats=replace(fa.stats, used=None)) == replace(
            fb, ufid=None, offloaded=None, dp=None, stats=replace(fb.stats, used=None))
    rc, out, _ = run("dpctl", "dump-flows", "--socket", s, "--type", "offloaded", "--json")
    assert rc == 0 and json.loads(out) == []
    assert run("ofctl", "mod-flows", "--socket", s, "--strict",
               "priority=50,tcp,actions=output:2")[0] == 0
    assert "actions=output:2" in run("ofctl", "dump-flows", "--socket", s, "tcp")[1]
    assert run("ofctl", "del-flows", "--socket", s, "tcp")[0] == 0
    assert len(run("ofctl", "dump-flows", "--socket", s)[1].splitlines()) == 2
    assert run("ofctl", "del-flows", "--socket", s)[0] == 0
    assert run("ofctl", "dump-flows", "--socket", s)[1] == ""


def test_add_flows_from_stdin_and_bad_rule_names_file_line(daemon: Rig, tmp_path: Path
                                                           ) -> None:
    s = daemon.socket
    assert run("ofctl", "add-flows", "-", "--socket", s, stdin="actions=drop\n")[0] == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("actions=drop\nip,nw_dst=10.0.0.300,actions=drop\n")
    rc, out, err = run("ofctl", "add-flows", str(bad), "--socket", s)
    assert rc == 1 and err.startswith(f"flowpath: error: {bad}:2: ") and "nw_dst" in err
    assert len(err.strip().splitlines()) == 1


def test_status(daemon: Rig) -> None:
    rc, out, _ = run("daemon", "status", "--socket", daemon.socket)
    assert rc == 0 and out.startswith("bridge br0: policy skip_sw")
    assert "packet-ins: 0 queued" in out and "p1" in out
    st = json.loads(run("daemon", "status", "--socket", daemon.socket, "--json")[1])
    assert st["flows"]["total"] == 0 and [p["number"] for p in st["ports"]] == [1, 2]


def test_idle_flow_is_aged_out_by_the_daemon_timer_and_counts_stay() -> None:
    with rig(reval=RevalidatorConfig(max_idle=0.3, interval=0.1)) as d:
        s = d.socket
        assert run("ofctl", "add-flow", "--socket", s, "udp,actions=output:2")[0] == 0
        d.mem[1].inject([udp(), udp(), udp()])
        deadline = time.monotonic() + 10
        while len(d.mem[2].sent) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        while run("dpctl", "dump-flows", "--socket", s)[1] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run("dpctl", "dump-flows", "--socket", s)[1] == ""
        assert "n_packets=3," in run("ofctl", "dump-flows", "--socket", s)[1]
        st = json.loads(run("daemon", "status", "--socket", s, "--json")[1])["revalidator"]
        assert st["aged_out"] == 1 and st["sweeps"] >= 3 and st["max_idle_ms"] == 300
        assert st["flows"] == 0 and isinstance(st["last_dump_ms"], float)
        out = run("daemon", "status", "--socket", s)[1]
        assert "revalidator: flow limit 10000 (max 200000), max idle 300ms, " \
               "sweep every 100ms, last dump " in out and "aged out 1," in out


def test_monitor_count_and_json(daemon: Rig) -> None:
    s = daemon.socket
    run("ofctl", "add-flow", "--socket", s, "udp,actions=controller")
    daemon.mem[2].inject([udp(sport=7), udp(sport=8)])
    time.sleep(0.3)
    rc, out, _ = run("ofctl", "monitor", "--socket", s, "--since", "0", "--count", "2")
    assert rc == 0
    first, second = out.splitlines()
    assert first.startswith("seq=1 in_port=2 reason=action table=0 cookie=0x0 total_len=58: "
                            "in_port(2),eth(")
    assert "udp(src=8,dst=9999)" in second
    rc, out, _ = run("ofctl", "monitor", "--socket", s, "--since", "0", "--count", "2", "--json")
    objs = [json.loads(line) for line in out.splitlines()]
    assert [o["seq"] for o in objs] == [1, 2] and objs[0]["in_port"] == 2
    rc, out, err = run("ofctl", "monitor", "--socket", s, "--count", "1", "--timeout", "0.3")
    assert rc == 1 and out == "" and "timeout after 0 of 1 packet-in(s)" in err
    assert not any(m.sent for m in daemon.mem.values())


def test_monitor_streams_as_packets_arrive(daemon: Rig) -> None:
    s = daemon.socket
    run("ofctl", "add-flow", "--socket", s, "udp,actions=controller")
    result: list[tuple[int, str, str]] = []
    t = threading.Thread(target=lambda: result.append(
        run("ofctl", "monitor", "--socket", s, "--count", "3", "--timeout", "10")))
    t.start()
    deadline = time.monotonic() + 5
    while daemon.service.core.monitors == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    daemon.mem[1].inject([udp(sport=n) for n in (1, 2, 3)])
    t.join(10)
    rc, out, _ = result[0]
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == \
        ["seq=1", "seq=2", "seq=3"]


@pytest.mark.parametrize("args", [
    ["ofctl", "dump-flows"], ["ofctl", "add-flow", "actions=drop"], ["ofctl", "monitor"],
    ["dpctl", "dump-flows"], ["daemon", "status"], ["ofctl", "del-flows"],
])
def test_no_daemon_is_one_clear_line(args: list[str], tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    rc, out, err = run(*args, "--socket", path)
    assert rc == 1 and out == ""
    assert err == f"flowpath: error: cannot connect to {path}: No such file or directory; " \
                  "is the daemon running? (flowpath daemon run --config FILE)\n"


def test_bridge_option_names_the_default_path() -> None:
    rc, _, err = run("daemon", "status", "--bridge", "brnone")
    assert rc == 1 and "/run/flowpath/brnone.sock" in err


def test_usage_errors() -> None:
    rc, _, err = run("dpctl", "dump-flows", "--dev", "x", "--type", "sw")
    assert rc == 2 and "--type" in err
    rc, _, err = run("dpctl", "dump-flows", "--all")
    assert rc == 2 and "--dev" in err
    rc, _, err = run("ofctl", "add-flow", "--socket", "/nonexistent", "ip,nw_dst=1.2.3.4")
    assert rc == 1 and "actions" in err  # validated before connecting


def test_daemon_run_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "br0.toml"
    cfg.write_text('bridge = "br0"\npolicy = "fast"\n[[port]]\nnumber = 1\nnetdev = "p1"\n')
    rc, out, err = run("daemon", "run", "--config", str(cfg))
    assert rc == 1 and err.count("\n") == 1
    assert f"file={cfg}" in err and "key=policy" in err and "value='fast'" in err
    rc, _, err = run("daemon", "run", "--config", str(tmp_path / "missing.toml"))
    assert rc == 1 and "cannot read" in err


def test_daemon_run_bad_rules_file_names_file_line_and_keeps_the_context(tmp_path: Path
                                                                         ) -> None:
    """``read_rules`` (before anything touches the kernel): FILE:LINE in front,
    and the parser's structured context (which field, which value) kept."""
    (tmp_path / "br0.rules").write_text("actions=drop\nudp,tp_dst=99999,actions=drop\n")
    cfg = tmp_path / "br0.toml"
    cfg.write_text('bridge = "br0"\nrules = "br0.rules"\n[[port]]\nnumber = 1\nnetdev = "p1"\n')
    rc, _, err = run("daemon", "run", "--config", str(cfg))
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith(f"flowpath: error: {tmp_path / 'br0.rules'}:2: ")
    assert "field=tp_dst" in err and "value=99999" in err and "pos=11" in err
