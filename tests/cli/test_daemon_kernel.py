"""Kernel tier: ``flowpath daemon run`` as a process, driven by the CLI.

h1 (10.7.0.1) -- p1 [netns sw: flowpath daemon, bridge br0] p2 -- h2 (10.7.0.2)

Rules: UDP to 9999 goes to the controller, everything else NORMAL.  N
datagrams h1 -> h2:9999 come out of ``ofctl monitor`` as N packet-ins (in_port
1, decoded flow) and none reaches h2; ping still works through NORMAL;
``ofctl dump-flows`` counts; SIGTERM stops the daemon cleanly, removes its
socket and leaves the offloaded filters.

Aging: with a small ``max_idle_ms``, idle megaflows leave tc (as the kernel
shows) and the software datapath, while the rules keep their counts.

Run in the VM:  .venv/bin/python tools/kernel_tier.py -- tests/cli/test_daemon_kernel.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from ofproto.control_io import ControlClient
from ofproto.control_proto import ControlError
from tests.kernel.netns import Netns, VethPair

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
N = 8

RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); s.settimeout(float(sys.argv[1]))
print("ready", flush=True)
n = 0
try:
    while True:
        s.recv(2048); n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""


def flowpath(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in-process (a cold Python start per command is slow in the TCG VM)."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(cli, list(args))
    assert "Traceback" not in r.stdout + r.stderr
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def monitors(sock: str) -> int:
    with ControlClient(sock) as c:
        return int(c.request("status")["packet_ins"]["monitors"])


@pytest.fixture
def rig(netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
        tc_flower: None) -> tuple[Netns, Netns, Netns]:
    h1, sw, h2 = netns_factory("fdh1"), netns_factory("fdsw"), netns_factory("fdh2")
    veth_factory(h1, "h1e", sw, "p1", addr_a="10.7.0.1/24")
    veth_factory(sw, "p2", h2, "h2e", addr_b="10.7.0.2/24")
    return h1, sw, h2


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="fpd"))  # short: AF_UNIX path limit
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_daemon(workdir: Path, sw: Netns, extra: str = ""
                 ) -> tuple[subprocess.Popen[bytes], Path, str]:
    """``flowpath daemon run`` on p1/p2 in ``sw`` (policy none): the process,
    its stderr file and its socket, once the socket is there."""
    sock = str(workdir / "br0.sock")
    (workdir / "br0.rules").write_text("priority=100,udp,tp_dst=9999,actions=controller\n"
                                       "priority=0,actions=normal\n")
    cfg = workdir / "br0.toml"
    cfg.write_text(f'bridge = "br0"\npolicy = "none"\nnetns = "{sw.name}"\n'
                   f'socket = "{sock}"\nrules = "br0.rules"\neswitch_check = false\n'
                   + extra + '[[port]]\nnumber = 1\nnetdev = "p1"\n'
                   '[[port]]\nnumber = 2\nnetdev = "p2"\n')
    err_path = workdir / "daemon.err"
    with open(err_path, "w") as err:
        daemon = subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "info",
                                   "daemon", "run", "--config", str(cfg)], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:  # a cold start in a TCG VM (imports, pyroute2) is slow
        wait_for(lambda: os.path.exists(sock) or daemon.poll() is not None, 240, "the socket")
    except AssertionError:
        daemon.kill()
        daemon.wait()
        raise AssertionError(f"no socket; daemon stderr: {err_path.read_text()}") from None
    return daemon, err_path, sock


@contextmanager
def daemon_running(workdir: Path, sw: Netns, extra: str = ""
                   ) -> Iterator[tuple[subprocess.Popen[bytes], Path, str]]:
    """``start_daemon``, killed on the way out if the test left it running."""
    daemon, err_path, sock = start_daemon(workdir, sw, extra)
    try:
        yield daemon, err_path, sock
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def sigterm(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the daemon exits cleanly (status 0) within 30 s."""
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0


def test_daemon_controller_monitor_normal_and_sigterm(rig: tuple[Netns, Netns, Netns],
                                                       workdir: Path) -> None:
    h1, sw, h2 = rig
    # flows must outlive the receiver's 4 s of silence and the dumps below
    with daemon_running(workdir, sw, "max_idle_ms = 120000\n") as (daemon, err_path, sock):
        assert daemon.poll() is None, err_path.read_text()
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"

        got: list[subprocess.CompletedProcess[str]] = []
        mon = threading.Thread(target=lambda: got.append(flowpath(
            "ofctl", "monitor", "--socket", sock, "--count", str(N), "--timeout", "60",
            "--json")))
        mon.start()
        wait_for(lambda: not mon.is_alive() or monitors(sock) == 1, 60,
                 "the monitor to subscribe")
        rx = h2.popen(sys.executable, "-c", RECEIVER, "4")
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"for i in range({N}):\n  s.sendto(b'y'*100, ('10.7.0.2', 9999))\n"
                "  time.sleep(0.05)\n")
        h1.run(sys.executable, "-c", code)
        mon.join(90)
        assert got and got[0].returncode == 0, got
        pins = [json.loads(line) for line in got[0].stdout.splitlines()]
        assert len(pins) == N
        for p in pins:
            assert p["in_port"] == 1 and p["reason"] == "action" and p["table"] == 0
            assert p["total_len"] == 14 + 20 + 8 + 100
            assert "in_port(1)" in p["flow"] and "ipv4(src=10.7.0.1,dst=10.7.0.2,proto=17" \
                in p["flow"] and ",dst=9999)" in p["flow"]
        assert [p["seq"] for p in pins] == sorted(p["seq"] for p in pins)
        rx_out, _ = rx.communicate(timeout=30)
        assert int(rx_out.strip()) == 0  # packet-ins are not forwarded

        h1.run("ping", "-c", "3", "-i", "0.2", "-W", "5", "10.7.0.2")  # NORMAL

        r = flowpath("ofctl", "dump-flows", "--socket", sock)
        assert r.returncode == 0, r.stderr
        first, last = r.stdout.splitlines()
        assert f"n_packets={N}," in first and "tp_dst=9999 actions=CONTROLLER" in first
        assert "n_packets=0," not in last and "actions=NORMAL" in last
        r = flowpath("dpctl", "dump-flows", "--socket", sock, "-m", "--json")
        flows = json.loads(r.stdout)
        assert any(f["dp"] == "sw" and "userspace" in f["actions"] for f in flows), flows
        assert any(f["dp"] == "tc" for f in flows), flows  # NORMAL flows on tc (policy none)
        r = flowpath("daemon", "status", "--socket", sock, "--json")
        st = json.loads(r.stdout)
        assert st["packet_ins"]["last_seq"] >= N and st["packet_ins"]["dropped"] == 0
        assert st["flows"]["tc_not_in_hw"] >= 1 and st["flows"]["sw"] >= 1

        sigterm(daemon)
    text = err_path.read_text()
    assert "Traceback" not in text and "daemon stopped" in text
    assert not os.path.exists(sock)
    with pytest.raises(ControlError, match="is the daemon running"):
        ControlClient(sock)
    # no --cleanup-on-exit: flowpath's filters stay for the next start to adopt
    r = flowpath("dpctl", "dump-flows", "--netns", sw.name, "--dev", "p1", "--dev", "p2")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def rule_counts(sock: str) -> dict[int, int]:
    r = flowpath("ofctl", "dump-flows", "--socket", sock, "--json")
    assert r.returncode == 0, r.stderr
    return {x["priority"]: x["n_packets"] for x in json.loads(r.stdout)}


def dp_flows(sock: str) -> list[dict[str, object]]:
    r = flowpath("dpctl", "dump-flows", "--socket", sock, "--json")
    assert r.returncode == 0, r.stderr
    flows: list[dict[str, object]] = json.loads(r.stdout)
    return flows


def test_idle_flows_leave_tc_and_software_and_rules_keep_their_counts(
        rig: tuple[Netns, Netns, Netns], workdir: Path) -> None:
    h1, sw, _ = rig
    with daemon_running(workdir, sw, "max_idle_ms = 4000\nrevalidate_interval_ms = 200\n"
                        ) as (daemon, err_path, sock):
        h1.run("ping", "-c", "3", "-i", "0.2", "-W", "5", "10.7.0.2")  # NORMAL: tc flows
        code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"for i in range({N}):\n  s.sendto(b'y'*100, ('10.7.0.2', 9999))\n")
        h1.run(sys.executable, "-c", code)  # controller: a software flow
        wait_for(lambda: rule_counts(sock).get(100) == N, 30, "the packet-ins counted")
        flows = dp_flows(sock)
        assert any(f["dp"] == "tc" for f in flows) and any(f["dp"] == "sw" for f in flows), \
            flows
        before = rule_counts(sock)
        assert before[0] >= 6  # 3 echo requests and 3 replies, plus ARP
        wait_for(lambda: dp_flows(sock) == [], 90, "the idle flows to age out")
        # the kernel agrees: none of flowpath's filters is left on the ports
        r = flowpath("dpctl", "dump-flows", "--netns", sw.name, "--dev", "p1", "--dev", "p2")
        assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
        after = rule_counts(sock)
        assert after[100] == N and after[0] >= before[0]  # nothing lost with the flows
        st = json.loads(flowpath("daemon", "status", "--socket", sock, "--json").stdout)
        rv = st["revalidator"]
        assert rv["aged_out"] >= len(flows) and rv["flows"] == 0 and st["flows"]["total"] == 0
        assert rv["max_idle_ms"] == 4000 and isinstance(rv["last_dump_ms"], float)
        sigterm(daemon)
    assert "Traceback" not in err_path.read_text()
