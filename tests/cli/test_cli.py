"""The flowpath CLI, unit tier: CliRunner, no root, no kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.dpctl import short_line
from cli.main import cli
from dpif.actions import Actions
from dpif.flow import FlowStats, Ufid
from dpif.flowtext import FlowText, format_flow, parse_flow
from dpif.match import Match
from tests.dpif.strategies import action_lists, matches

OVS_LINE = ("recirc_id(0),in_port(2),eth(src=00:00:00:00:00:01,dst=00:00:00:00:00:02),"
            "eth_type(0x0800),ipv4(src=10.1.1.1,dst=10.1.1.2,proto=1,tos=0,ttl=64,frag=no),"
            "icmp(type=8,code=0), packets:9, bytes:756, used:0.001s, actions:3")
UFID_LINE = ("ufid:3b4c3b4c-0000-4000-8000-000000000001, recirc_id(0),in_port(1),"
             "eth_type(0x0800),ipv4(dst=10.0.0.0/255.255.255.0,proto=6,frag=no),tcp(dst=80), "
             "packets:0, bytes:0, used:never, offloaded:yes, dp:tc, actions:2")


def runner() -> CliRunner:
    try:  # click 8.1 mixes stderr into stdout unless told not to; 8.2 keeps them apart
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    r = runner().invoke(cli, list(args), input=input)
    return r.exit_code, r.stdout, r.stderr


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flowpath: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


# --- normalize ---------------------------------------------------------------------------


@pytest.mark.parametrize("line", [OVS_LINE, UFID_LINE])
def test_normalize_round_trips_ovs_lines(line: str) -> None:
    code, out, err = run("dpctl", "normalize", line)
    assert (code, err) == (0, "")
    assert out == line + "\n"
    code, again, _ = run("dpctl", "normalize", out.strip())
    assert again == out


def test_normalize_canonicalises_spacing_and_order() -> None:
    messy = ("in_port(2),recirc_id(0),eth_type(0x800),ipv4(dst=10.1.1.2,src=10.1.1.1,frag=no)"
             ",  actions:3")
    code, out, _ = run("dpctl", "normalize", messy)
    assert code == 0
    assert out.startswith("recirc_id(0),in_port(2),eth_type(0x0800),ipv4(")
    assert run("dpctl", "normalize", out.strip())[1] == out


def test_normalize_reads_stdin_and_skips_comments() -> None:
    code, out, _ = run("dpctl", "normalize", "-", input=f"# a comment\n{OVS_LINE}\n\n{OVS_LINE}\n")
    assert code == 0
    assert out.splitlines() == [OVS_LINE, OVS_LINE]


def test_normalize_json_structure() -> None:
    code, out, _ = run("dpctl", "normalize", "--json", OVS_LINE)
    assert code == 0
    (flow,) = json.loads(out)
    assert flow["line"] == OVS_LINE
    assert flow["actions"] == ["3"] and flow["actions_text"] == "3"
    assert flow["stats"] == {"packets": 9, "bytes": 756, "used": 0.001, "tcp_flags": 0}
    fields = {f["field"]: f for f in flow["fields"]}
    assert fields["ipv4_src"] == {"field": "ipv4_src", "value": "10.1.1.1",
                                  "mask": "255.255.255.255", "exact": True}
    assert fields["eth_type"]["value"] == "0x0800"
    assert fields["in_port"]["value"] == "2"
    assert fields["ip_frag"]["value"] == "no"


def test_normalize_json_masked_field() -> None:
    code, out, _ = run("dpctl", "normalize", "--json", UFID_LINE)
    (flow,) = json.loads(out)
    assert flow["ufid"] == "3b4c3b4c-0000-4000-8000-000000000001"
    assert flow["offloaded"] is True and flow["dp"] == "tc"
    dst = next(f for f in flow["fields"] if f["field"] == "ipv4_dst")
    assert dst == {"field": "ipv4_dst", "value": "10.0.0.0", "mask": "255.255.255.0",
                   "exact": False}


@pytest.mark.parametrize("bad,needle", [
    ("in_port(2),eth(src=zz:00:00:00:00:01), actions:1", "Ethernet address"),
    ("in_port(2),nosuchfield(1), actions:1", "nosuchfield"),
    ("in_port(2)", "actions"),
])
def test_normalize_malformed_is_one_line_error(bad: str, needle: str) -> None:
    assert_one_line_error(*run("dpctl", "normalize", bad), needle)


def test_normalize_error_names_position() -> None:
    code, out, err = run("dpctl", "normalize", "in_port(2),eth(src=zz), actions:1")
    assert_one_line_error(code, out, err, "pos=", "eth(src)")


# --- why-not-offloaded ---------------------------------------------------------------------


def why(line: str, *extra: str) -> tuple[int, str, str]:
    return run("dpctl", "why-not-offloaded", "--offline", "--port", "1=rep1",
               "--port", "2=rep2", "--port", "3=rep3", *extra, line)


def test_why_offloadable_prints_tc_command() -> None:
    line = OVS_LINE.replace("in_port(2)", "in_port(1)")
    code, out, err = why(line)
    assert (code, err) == (0, "")
    assert "verdict: offloadable" in out
    tc = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("tc filter add"))
    assert tc.startswith("tc filter add dev rep1 ingress protocol ip prio 2048 handle 0x1 "
                         "flower skip_sw ")
    assert "ip_proto icmp" in tc and "src_ip 10.1.1.1 dst_ip 10.1.1.2" in tc
    assert "type 8 code 0" in tc and "ip_flags nofrag" in tc
    assert "action mirred egress redirect dev rep3" in tc
    assert "ingress port:" in out and "1 -> rep1 (ifindex 1001)" in out


def test_why_policy_flag_in_command() -> None:
    code, out, _ = why("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(frag=no), actions:2",
                       "--policy", "skip_hw")
    assert code == 0 and " flower skip_hw " in out
    code, out, _ = why("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(frag=no), actions:2",
                       "--policy", "none")
    assert code == 0 and " flower ip_flags nofrag " in out


@pytest.mark.parametrize("line,reason,what", [
    ("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(frag=no), actions:ct(commit),2",
     "no tc action for this datapath action", "(action ct)"),
    ("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(frag=no), actions:recirc(0x5)",
     "recirculation stays in software", "(action recirc)"),
    ("recirc_id(0),in_port(1), actions:9",
     "output port has no netdev", "(action output:9)"),
    ("recirc_id(0),in_port(7), actions:2", "ingress port has no netdev", "(field in_port)"),
    ("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(frag=no), actions:dec_ttl,2",
     "dec_ttl offloads only when the match proves ttl > 1", "(action dec_ttl)"),
])
def test_why_not_offloadable_names_reason(line: str, reason: str, what: str) -> None:
    code, out, err = why(line)
    assert (code, err) == (0, "")
    verdict = next(ln for ln in out.splitlines() if ln.startswith("verdict:"))
    assert verdict.startswith("verdict: NOT offloadable: " + reason), verdict
    assert verdict.endswith(what), verdict
    assert "tc filter add" not in out


def test_why_json() -> None:
    code, out, _ = why("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(frag=no), "
                       "actions:ct(commit),2", "--json")
    data = json.loads(out)
    assert data["offloadable"] is False and data["stage"] == "actions"
    assert data["action"] == "ct" and data["field"] is None and data["tc"] is None
    assert {"check": "match", "result": "ok: every matched field has a flower key"} \
        in data["checks"]
    code, out, _ = why(OVS_LINE.replace("in_port(2)", "in_port(1)"), "--json")
    data = json.loads(out)
    assert data["offloadable"] is True and data["tc"].startswith("tc filter add dev rep1 ")
    assert data["reason"] is None


def test_why_dec_ttl_offloads_when_ttl_proved() -> None:
    code, out, _ = why("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(ttl=64,frag=no), "
                       "actions:dec_ttl,2")
    assert code == 0 and "action pedit ex munge ip ttl add 0xff pipe" in out
    assert "action csum ip4h pipe" in out


def test_why_bad_port_option_is_one_line_error() -> None:
    assert_one_line_error(*run("dpctl", "why-not-offloaded", "--offline", "--port", "x",
                               OVS_LINE), "--port wants N=IFNAME")


def test_why_malformed_flow() -> None:
    assert_one_line_error(*why("in_port(1),ipv4(src=1.2.3), actions:2"), "ipv4")


def test_why_bad_policy_is_usage_error() -> None:
    code, out, err = why(OVS_LINE, "--policy", "fast")
    assert_one_line_error(code, out, err, "--policy")
    assert code == 2


# --- ofctl parse / trace ---------------------------------------------------------------------


def test_ofctl_parse_prints_dump_flows_style() -> None:
    code, out, err = run("ofctl", "parse",
                         "table=0,priority=100,ip,nw_dst=10.0.0.0/24,cookie=0x1,"
                         "actions=resubmit(,1),output:3", "actions=drop")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        " cookie=0x1, priority=100,ip,nw_dst=10.0.0.0/24 actions=resubmit(,1),output:3",
        " actions=drop"]


def test_ofctl_parse_json() -> None:
    code, out, _ = run("ofctl", "parse", "--json", "table=2,priority=7,tcp,tp_dst=80,actions=2")
    (r,) = json.loads(out)
    assert (r["table"], r["priority"], r["actions"]) == (2, 7, "output:2")
    assert r["match"] == "priority=7,tcp,tp_dst=80"


@pytest.mark.parametrize("rule,needles", [
    ("ip,nw_dst=10.0.0.300,actions=drop", ("nw_dst", "pos=10")),
    ("ip,nw_dst=10.0.0.3", ("must specify actions",)),
    ("ip,bogus=1,actions=drop", ("bogus",)),
    ("actions=output:", ("output",)),
])
def test_ofctl_parse_errors(rule: str, needles: tuple[str, ...]) -> None:
    assert_one_line_error(*run("ofctl", "parse", rule), *needles)


def test_ofctl_trace(tmp_path: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text("# two tables\n"
                     "table=0,priority=100,ip,nw_dst=10.0.0.0/24,cookie=0x1,"
                     "actions=resubmit(,1),output:3\n"
                     "table=1,priority=0,actions=output:2\n")
    code, out, err = run("ofctl", "trace", "--rules", str(rules),
                         "in_port=1,udp,nw_dst=10.0.0.5,tp_dst=80")
    assert (code, err) == (0, "")
    assert " 0. ip,nw_dst=10.0.0.0/24, priority 100, cookie 0x1" in out
    assert out.rstrip().endswith("Datapath actions: 2,3")
    code, out, _ = run("ofctl", "trace", "--json", "--rules", str(rules),
                       "in_port=1,udp,nw_dst=10.0.0.5,tp_dst=80")
    data = json.loads(out)
    assert data["datapath_actions"] == "2,3"
    assert [s["table"] for s in data["steps"]] == [0, 1]


def test_ofctl_trace_bad_rule_file_names_line(tmp_path: Path) -> None:
    rules = tmp_path / "r.txt"
    rules.write_text("actions=drop\nip,nw_dst=1.2.3.999,actions=drop\n")
    assert_one_line_error(*run("ofctl", "trace", "--rules", str(rules), "in_port=1"),
                          f"{rules}:2", "nw_dst")


def test_ofctl_trace_missing_file_is_one_line() -> None:
    code, out, err = run("ofctl", "trace", "--rules", "/nonexistent/rules", "in_port=1")
    assert_one_line_error(code, out, err, "/nonexistent/rules", "No such file")
    assert code == 1


# --- global behaviour ----------------------------------------------------------------------------


def test_unknown_command_and_option_are_one_line() -> None:
    assert_one_line_error(*run("dpctl", "nope"), "No such command")
    assert_one_line_error(*run("dpctl", "normalize", "--frob", OVS_LINE), "--frob")
    code, _, _ = run("dpctl", "normalize")
    assert code == 2


def test_help_everywhere() -> None:
    for args in ([], ["dpctl"], ["dpctl", "why-not-offloaded"], ["dpctl", "dump-flows"],
                 ["dpctl", "cleanup"], ["switchdev", "show"], ["switchdev", "mode"],
                 ["ofctl", "parse"], ["ofctl", "trace"]):
        code, out, _ = run(*args, "--help")
        assert code == 0 and "Usage:" in out, args


def test_log_options_configure_logging() -> None:
    code, out, err = run("--log-level", "debug", "--log-json", "dpctl", "normalize", OVS_LINE)
    assert code == 0 and out == OVS_LINE + "\n"


def test_dump_flows_missing_device_is_one_line_error() -> None:
    # needs rtnetlink, which every Linux host has unprivileged; the device does not exist
    code, out, err = run("dpctl", "dump-flows", "--dev", "no-such-dev0")
    assert_one_line_error(code, out, err, "no-such-dev0")


def test_console_script_help() -> None:
    exe = Path(sys.executable).parent / "flowpath"
    if not exe.exists():
        pytest.skip("flowpath console script not installed in this environment")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "dpctl" in r.stdout and "switchdev" in r.stdout
    r = subprocess.run([str(exe), "dpctl", "normalize", "in_port(1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@settings(max_examples=200, deadline=None)
@given(matches(), action_lists(), st.integers(0, 2**128 - 1), st.integers(0, 10**9),
       st.one_of(st.none(), st.integers(0, 10**7)), st.integers(0, 0x1FF), st.booleans(),
       st.sampled_from(["tc", "sw"]))
def test_dpctl_short_line_is_the_long_one_minus_ufid_offloaded_dp(
        match: Match, actions: Actions, ufid: int, packets: int, used_ms: int | None,
        flags: int, offloaded: bool, dp: str) -> None:
    """dump-flows without ``-m``: the ``-m`` line with exactly its ufid, offloaded
    and dp parts taken out (cut here as text, the oracle), nothing else changed."""
    now = 5000.0
    used = None if used_ms is None else now - used_ms / 1000
    stats = FlowStats(packets, packets * 60, used, flags)
    long = format_flow(FlowText(match, actions, Ufid(ufid), stats, offloaded, dp), now)
    head = f"ufid:{Ufid(ufid)}, "
    extra = f", offloaded:{'yes' if offloaded else 'no'}, dp:{dp}, actions:"
    assert long.startswith(head) and long.count(extra) == 1
    short = short_line(long)
    assert short == long.removeprefix(head).replace(extra, ", actions:")
    assert parse_flow(short, now) == FlowText(match, actions, None, parse_flow(long, now).stats)
