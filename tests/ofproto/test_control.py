"""The control core (no sockets, one thread) and the JSON-lines server on a
socket (the daemon's Service on in-memory ports)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from dpif.actions import Output
from dpif.errors import ValidationError
from dpif.fields import ALL_ONES, BY_NAME, FIELDS
from dpif.keytext import format_key
from dpif.match import Match
from swpath.parse import parse_key
from ofproto.bridge import Bridge
from ofproto.control import BridgeInfo, ControlCore, packet_flow
from ofproto.control_io import ControlClient
from ofproto.control_proto import (ControlError, ProtocolError, RemoteError, Request,
                                   decode_request)
from ofproto.normal import PortConfig
from ofproto.revalidator import RevalidatorConfig
from swpath.datapath import SwDatapath
from swpath.ports import MemPort
from tests.ofproto.control_rig import attach, rig, udp


def core_rig(now: list[float] | None = None, reval: RevalidatorConfig | None = None
             ) -> tuple[ControlCore, SwDatapath, dict[int, MemPort]]:
    """A ControlCore over a software bridge with MemPorts 1 and 2, on the
    fake clock ``now[0]`` if given."""
    clock = {} if now is None else {"clock": lambda: now[0]}
    sw = SwDatapath(**clock)
    ports = [PortConfig(1, "p1"), PortConfig(2, "p2")]
    br = Bridge("br0", ports, placer=sw, **clock)
    mem = attach(br, sw, ports)
    return ControlCore(br, BridgeInfo("skip_sw", None, (), br.clock()), reval), sw, mem


def call(core: ControlCore, cmd: str, **args: Any) -> Any:
    reply = core.handle(Request(cmd, args))
    assert reply["ok"], reply
    return reply["result"]


def test_add_dump_counts_and_packet_in_not_forwarded() -> None:
    core, sw, mem = core_rig()
    assert call(core, "add-flows", rules=["priority=100,udp,tp_dst=9999,actions=controller",
                                          "priority=0,actions=normal"])["added"] == 2
    sw.process(1, [udp() for _ in range(5)])
    assert not any(m.sent for m in mem.values())  # controller: not forwarded
    pins, last = core.packet_ins(0)
    assert len(pins) == 5 and last == 5
    assert all(p.in_port == 1 and p.reason == "action" for p in pins)
    rules = call(core, "dump-flows")
    assert [r["priority"] for r in rules] == [100, 0]
    assert rules[0]["n_packets"] == 5 and rules[0]["n_bytes"] == 5 * len(udp())
    assert rules[1]["n_packets"] == 0
    line = rules[0]["line"]
    assert line.startswith(" cookie=0x0, duration=") and "n_packets=5" in line
    assert "idle_age=" in line and line.endswith("priority=100,udp,tp_dst=9999 "
                                                 "actions=CONTROLLER:65535")
    flows = call(core, "dp-dump-flows", type="sw")
    assert len(flows) == 1 and flows[0]["dp"] == "sw" and flows[0]["packets"] == 4
    assert call(core, "dp-dump-flows", type="offloaded") == []


def test_packet_flow_is_dpctl_text() -> None:
    text = packet_flow(udp(), 1)
    assert text == ("in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02),"
                    "eth_type(0x0800),ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,"
                    "frag=no),udp(src=1234,dst=9999)")


def _packet_flow_by_retry(packet: bytes, in_port: int) -> str:
    """The former packet_flow (format, and on refusal format again without the
    fields it names): the oracle of the one-pass version."""
    key = parse_key(packet, BY_NAME["in_port"].put(in_port))
    m = Match.from_packet_key(key, ALL_ONES)
    meta = {f.name for f in FIELDS[:FIELDS.index(BY_NAME["eth_src"])]} - {"in_port"}
    m = m.without(*[f.name for f, v, _ in m.fields() if f.name in meta and v == 0],
                  *(["tcp_flags"] if m.value("tcp_flags") == 0 else []))
    try:
        return format_key(m)
    except ValidationError as e:
        hidden = str(e.context.get("fields", ""))
        return format_key(m.without(*[n for n in hidden.split(",") if n]))


@pytest.mark.parametrize("packet", [
    udp(), udp(dport=53, sport=5353),
    bytes.fromhex("ffffffffffff020000000001080600010800060400010200000000010a000001"
                  "0000000000000a000002"),  # ARP request
    bytes.fromhex("02000000000202000000000186dd6000000000083a40") + bytes(15) + b"\x01"
    + bytes(15) + b"\x02" + bytes.fromhex("8000000000000000"),  # ICMPv6 echo
    bytes.fromhex("020000000002020000000001810000640800") + udp()[14:],  # VLAN 100
    bytes.fromhex("02000000000202000000000188b5") + bytes(46),  # not IP
    bytes.fromhex("020000000002020000000001080045000028000040004006") + bytes(2)
    + bytes([10, 0, 0, 1, 10, 0, 0, 2]) + bytes.fromhex("04d20050000000000000000050120000")
    + bytes(4),  # TCP SYN-ACK
])
def test_packet_flow_formats_once_like_the_retry(packet: bytes) -> None:
    assert packet_flow(packet, 3) == _packet_flow_by_retry(packet, 3)


def test_rule_changes_revalidate_installed_flows() -> None:
    core, sw, mem = core_rig()
    call(core, "add-flows", rules=["priority=10,udp,actions=output:2"])
    sw.process(1, [udp()])
    assert len(mem[2].sent) == 1 and len(list(sw.dump())) == 1
    # an unrelated rule keeps the flow
    assert call(core, "add-flows", rules=["priority=20,tcp,actions=drop"])["flows_removed"] == 0
    # mod-flows changes the actions: the flow is modified in place (same ufid),
    # and the next packet takes the new ones without an upcall
    (before,) = sw.dump()
    assert call(core, "mod-flows", rule="udp,actions=drop") == {
        "modified": 1, "flows_removed": 0, "flows_modified": 1}
    sw.process(1, [udp()])
    assert len(mem[2].sent) == 1
    (f,) = sw.dump()
    assert f.actions == () and f.ufid == before.ufid and core.bridge.counters["upcall"] == 1
    # a table miss drops too: the drop flow is still right after the rule goes
    assert call(core, "del-flows", match="udp", strict=False) == {
        "deleted": 1, "flows_removed": 0, "flows_modified": 0}
    assert call(core, "del-flows")["flows_removed"] == 0 and call(core, "dump-flows") == []
    # the counters of the flow that went were credited to its rule before it went
    call(core, "add-flows", rules=["priority=10,udp,actions=output:2"])
    sw.process(1, [udp(), udp(), udp()])
    call(core, "mod-flows", rule="priority=10,udp,actions=output:2,output:1", strict=True)
    (r,) = [r for r in call(core, "dump-flows") if r["priority"] == 10]
    assert r["n_packets"] == 3


def test_strict_and_cookie_selection() -> None:
    core, sw, mem = core_rig()
    call(core, "add-flows", rules=["cookie=0x1,priority=5,udp,actions=drop",
                                   "cookie=0x2,priority=6,udp,actions=drop"])
    assert call(core, "del-flows", match="udp", strict=True)["deleted"] == 0
    assert call(core, "del-flows", match="cookie=0x2/-1")["deleted"] == 1
    assert [r["cookie"] for r in call(core, "dump-flows")] == ["0x1"]
    assert call(core, "dump-flows", match="tcp") == []


@pytest.mark.parametrize("cmd, args, words", [
    ("add-flows", {"rules": ["udp,tp_dst=99999,actions=drop"]}, "rule 1: tp_dst"),
    ("add-flows", {"rules": "not a list"}, "wrong type"),
    ("add-flows", {}, "missing argument"),
    ("mod-flows", {"rule": "udp"}, "must specify actions"),
    ("dp-dump-flows", {"type": "hw"}, "--type must be one of"),
])
def test_bad_requests_are_one_line_errors(cmd: str, args: dict[str, Any], words: str) -> None:
    core, _, _ = core_rig()
    reply = core.handle(Request(cmd, args))
    assert reply["ok"] is False and words in reply["error"]["message"]
    assert "\n" not in reply["error"]["message"]


def test_status() -> None:
    core, sw, _ = core_rig()
    call(core, "add-flows", rules=["actions=controller"])
    sw.process(1, [udp()])
    st = call(core, "status")
    assert st["rules"] == 1 and st["flows"] == {"total": 1, "tc_in_hw": 0,
                                                "tc_not_in_hw": 0, "sw": 1}
    assert st["packet_ins"]["last_seq"] == 1 and st["packet_ins"]["dropped"] == 0
    rv = st["revalidator"]
    assert rv["flows"] == 1 and rv["flow_limit"] == st["flow_limit"] == 10000
    assert rv["flow_limit_max"] == 200000 and rv["sweeps"] == 0 and rv["last_dump_ms"] is None
    assert (rv["max_idle_ms"], rv["interval_ms"]) == (10000, 500)


def test_tick_sweeps_when_due_and_says_when_the_next_is() -> None:
    now = [100.0]
    core, sw, _ = core_rig(now, RevalidatorConfig(max_idle=2.0, interval=0.5))
    call(core, "add-flows", rules=["udp,actions=output:2"])
    sw.process(1, [udp(), udp()])
    assert core.tick() == 0.5 and core.reval.totals["sweeps"] == 1
    now[0] = 100.2
    assert core.tick() == pytest.approx(0.3) and core.reval.totals["sweeps"] == 1
    now[0] = 102.5
    assert core.tick() == 0.5 and core.reval.totals["sweeps"] == 2
    assert call(core, "dp-dump-flows") == []  # idle 2.5 s > 2 s
    st = call(core, "status")["revalidator"]
    assert (st["aged_out"], st["sweeps"], st["flows"]) == (1, 2, 0)
    assert st["last_dump_ms"] == 0.0 and st["max_idle_ms"] == 2000
    assert [r["n_packets"] for r in call(core, "dump-flows")] == [2]


@pytest.mark.parametrize("line, words", [
    (b"hello\n", "not JSON"), (b"[1,2]\n", "not a JSON object"), (b'{"x":1}\n', "no \"cmd\""),
    (b'{"cmd":"reboot"}\n', "unknown command"), (b'{"cmd":"status","args":[]}\n', "args"),
    (b"\xff\n", "not UTF-8"),
])
def test_decode_request_errors(line: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        decode_request(line)


# --- over the socket ------------------------------------------------------------------


def raw(path: str) -> tuple[socket.socket, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(5)
    return s, s.makefile("rb")


def test_malformed_lines_get_error_replies_and_the_server_keeps_serving() -> None:
    with rig() as r:
        s, f = raw(r.socket)
        for bad in (b"garbage\n", b'{"cmd": 3}\n', b'{"cmd":"nope"}\n'):
            s.sendall(bad)
            reply = json.loads(f.readline())
            assert reply["ok"] is False and reply["error"]["type"] == "ProtocolError"
        s.sendall(b'{"cmd":"status"}\n')  # same connection, still served
        assert json.loads(f.readline())["result"]["bridge"] == "br0"
        s.close()
        with ControlClient(r.socket) as c:  # and new connections too
            assert c.request("status")["rules"] == 0


def test_socket_is_mode_0600_and_removed_on_close() -> None:
    import os
    import stat
    with rig() as r:
        assert stat.S_IMODE(os.stat(r.socket).st_mode) == 0o600
        path = r.socket
    assert not os.path.exists(path)


def test_remote_error_and_missing_socket() -> None:
    with rig() as r:
        with ControlClient(r.socket) as c:
            with pytest.raises(RemoteError, match="rule 1"):
                c.request("add-flows", rules=["nw_dst=1.2.3.400,actions=drop"])
    with pytest.raises(ControlError, match="cannot connect to /nonexistent/x.sock.*daemon "
                                           "running"):
        ControlClient("/nonexistent/x.sock")


def test_monitor_streams_new_packet_ins_until_count() -> None:
    with rig() as r:
        with ControlClient(r.socket) as c:
            c.request("add-flows", rules=["priority=100,udp,tp_dst=9999,actions=controller",
                                          "priority=0,actions=normal"])
        r.mem[1].inject([udp(sport=1)])  # before the monitor: not shown by default
        time.sleep(0.2)
        got: list[dict[str, Any]] = []

        def watch() -> None:
            with ControlClient(r.socket) as c:
                got.extend(c.stream("monitor", "packet_in", count=3, timeout=10))
                got.append(c.final)
        t = threading.Thread(target=watch)
        t.start()
        deadline = time.monotonic() + 5
        while r.service.core.monitors == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        r.mem[1].inject([udp(sport=n) for n in (2, 3, 4, 5)])
        t.join(10)
        *pins, final = got
        assert [p["seq"] for p in pins] == [2, 3, 4]
        assert all(p["in_port"] == 1 and p["reason"] == "action" and p["table"] == 0
                   for p in pins)
        assert "udp(src=2,dst=9999)" in pins[0]["flow"]
        assert final == {"delivered": 3, "reason": "count", "last_seq": 4}
        assert not any(m.sent for m in r.mem.values())  # never forwarded
        with ControlClient(r.socket) as c:  # --since 0: the whole queue; --timeout ends it
            pins = list(c.stream("monitor", "packet_in", since=0, timeout=0.3))
            assert [p["seq"] for p in pins] == [1, 2, 3, 4, 5]
            assert c.final["reason"] == "timeout"


def test_close_ends_a_waiting_monitor() -> None:
    with rig() as r:
        c = ControlClient(r.socket)
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.extend(list(c.stream("monitor", "packet_in"))
                                                       + [c.final]))
        t.start()
        time.sleep(0.3)
        r.service.close()
        t.join(5)
        assert not t.is_alive()
        assert got == [{"delivered": 0, "reason": "shutdown", "last_seq": 0}]
        c.close()


def test_expire_removes_timed_out_rules_and_their_flows() -> None:
    now = [100.0]
    core, sw, mem = core_rig(now)
    assert core.expire() == 0  # no timed rule: nothing to do
    call(core, "add-flows", rules=["priority=10,udp,idle_timeout=5,actions=output:2",
                                   "priority=5,hard_timeout=8,actions=drop",
                                   "priority=0,actions=drop"])
    sw.process(1, [udp()])
    assert len(list(sw.dump())) == 1
    now[0] = 103.0
    sw.process(1, [udp()])  # a hit in the datapath keeps the rule alive
    now[0] = 107.0
    assert core.expire() == 0  # idle 4 s since the last packet
    now[0] = 108.5
    assert core.expire() == 2  # idle 5.5 s, and the hard timeout of 8 s
    assert [r["priority"] for r in call(core, "dump-flows")] == [0]
    (f,) = sw.dump()  # their flow now holds what the rules left say: drop
    assert f.actions == ()
    sw.process(1, [udp()])
    assert len(mem[2].sent) == 2  # the next packet follows the rules left: drop


def test_service_timer_expires_rules_while_serving() -> None:
    with rig() as r:
        with ControlClient(r.socket) as c:
            c.request("add-flows", rules=["priority=7,hard_timeout=1,actions=drop",
                                          "priority=0,actions=drop"])
            deadline = time.monotonic() + 10
            while len(c.request("dump-flows")) == 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert [x["priority"] for x in c.request("dump-flows")] == [0]
