"""Kernel tier for the CLI: dump-flows / cleanup against filters that
OffloadDatapath really installed on a veth, why-not-offloaded with live
ifindexes and the devlink eswitch check, switchdev show/mode on netdevsim.

Run in the VM:  .venv/bin/python tools/kernel_tier.py -- tests/cli/test_cli_kernel.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import cli
from dpif.actions import Output
from dpif.flow import FlowSpec, Ufid
from dpif.flowtext import parse_flow
from dpif.match import Match
from offload.datapath import OffloadDatapath, Policy
from offload.tc_netlink import TcNetlink
from swpath.datapath import SwDatapath
from tests.kernel.netns import Netns, VethPair

pytestmark = pytest.mark.kernel

UDP_MATCH = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800,
                        ipv4_dst=0x0A090002, ip_proto=17, ip_frag=(0, 3))
TCP_MATCH = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800,
                        ip_proto=6, tp_dst=80, ip_frag=(0, 3))


def run(*args: str) -> tuple[int, str, str]:
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(cli, list(args))
    assert "Traceback" not in r.stdout + r.stderr
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def veth_rig(netns_factory: Callable[..., Netns], veth_factory: Callable[..., VethPair],
             tc_flower: None) -> tuple[Netns, OffloadDatapath]:
    ns = netns_factory("fpcli")
    veth_factory(ns, "pa", ns, "pb")
    dp = OffloadDatapath(TcNetlink(netns=ns.name), SwDatapath(), policy=Policy.SKIP_HW)
    dp.add_port(1, "pa")
    dp.add_port(2, "pb")
    assert dp.put(FlowSpec(UDP_MATCH, (Output(2),), Ufid(0x42))).placement.dp == "tc"
    assert dp.put(FlowSpec(TCP_MATCH, (), Ufid(0x43))).placement.dp == "tc"
    ns.tc("filter", "add", "dev", "pa", "ingress", "prio", "100", "protocol", "ip",
          "flower", "ip_proto", "udp", "action", "drop")
    return ns, dp


def test_dump_flows_lists_ours_as_dpctl_lines(veth_rig: tuple[Netns, OffloadDatapath]) -> None:
    ns, dp = veth_rig
    code, out, err = run("dpctl", "dump-flows", "--netns", ns.name, "--dev", "pa",
                         "--port", "1=pa", "--port", "2=pb", "-m")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert len(lines) == 2, out  # the foreign prio-100 filter is not listed
    flows = {parse_flow(line).ufid: parse_flow(line) for line in lines}
    # "untagged" (vlan_tpid 0) prints as no vlan(), as in OVS's dpctl text
    assert flows[Ufid(0x42)].match == UDP_MATCH.without("vlan_tpid")
    assert flows[Ufid(0x42)].actions == (Output(2),)
    assert flows[Ufid(0x43)].match == TCP_MATCH.without("vlan_tpid")
    assert flows[Ufid(0x43)].actions == ()
    for line in lines:
        assert "packets:0, bytes:0, used:never, offloaded:no, dp:tc, actions:" in line
    # without -m: no ufid / offloaded / dp tags, as dpctl/dump-flows
    code, out, _ = run("dpctl", "dump-flows", "--netns", ns.name, "--dev", "pa",
                       "--port", "1=pa", "--port", "2=pb")
    assert all(not ln.startswith("ufid:") and "dp:tc" not in ln for ln in out.splitlines())
    assert any(ln.startswith("recirc_id(0),in_port(1),") for ln in out.splitlines())


def test_dump_flows_all_json_and_default_port_numbers(
        veth_rig: tuple[Netns, OffloadDatapath]) -> None:
    ns, dp = veth_rig
    code, out, _ = run("dpctl", "dump-flows", "--netns", ns.name, "--dev", "pa", "--all")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    foreign = [ln for ln in lines if ln.startswith("foreign:")]
    assert len(foreign) == 1 and "prio 100" in foreign[0] and "ip_proto udp" in foreign[0]
    # no --port: a device's port number is its ifindex
    pa, pb = dp.ports[1].ifindex, dp.ports[2].ifindex
    udp = next(ln for ln in lines if "proto=17" in ln)
    assert f"in_port({pa})" in udp and udp.endswith(f"actions:{pb}")
    code, out, _ = run("dpctl", "dump-flows", "--netns", ns.name, "--dev", "pa", "--all",
                       "--json", "--port", "1=pa", "--port", "2=pb")
    entries: list[dict[str, Any]] = json.loads(out)
    owners = sorted(e["owner"] for e in entries)
    assert owners == ["flowpath", "flowpath", "foreign"]
    ours = {e["ufid"]: e for e in entries if e["owner"] == "flowpath"}
    e = ours[str(Ufid(0x42))]
    assert e["flow"]["actions"] == ["2"] and e["in_hw"] is False and e["packets"] == 0
    assert e["tc"].startswith(f"tc -n {ns.name} filter add dev pa ingress protocol ip prio ")
    assert " flower skip_hw " in e["tc"]


def test_cleanup_deletes_exactly_ours(veth_rig: tuple[Netns, OffloadDatapath]) -> None:
    ns, dp = veth_rig
    code, out, _ = run("dpctl", "cleanup", "--netns", ns.name, "--dev", "pa", "--dry-run")
    assert code == 0
    assert out.count("tc -n") == 2 and "would delete 2 flowpath filter(s)" in out
    assert len([f for f in ns.tc_filters("pa") if "options" in f]) == 3
    code, out, err = run("dpctl", "cleanup", "--netns", ns.name, "--dev", "pa")
    assert (code, err) == (0, "")
    assert out.strip() == "pa: deleted 2 flowpath filter(s), 1 foreign filter(s) untouched"
    left = [f for f in ns.tc_filters("pa") if "options" in f]
    assert len(left) == 1 and left[0]["pref"] == 100
    code, out, _ = run("dpctl", "dump-flows", "--netns", ns.name, "--dev", "pa")
    assert (code, out) == (0, "")
    code, out, _ = run("dpctl", "cleanup", "--netns", ns.name, "--dev", "pa", "--json")
    assert json.loads(out) == [{"device": "pa", "deleted": 0, "would_delete": 0,
                                "foreign_left": 1}]


def test_dump_flows_missing_device(netns_factory: Callable[..., Netns]) -> None:
    ns = netns_factory("fpcli")
    code, out, err = run("dpctl", "dump-flows", "--netns", ns.name, "--dev", "nosuch0")
    assert code == 1 and err.count("\n") == 1 and "nosuch0" in err


def test_why_not_offloaded_live_veth(veth_rig: tuple[Netns, OffloadDatapath]) -> None:
    ns, dp = veth_rig
    line = ("recirc_id(0),in_port(1),eth_type(0x0800),ipv4(dst=10.9.0.2,proto=17,frag=no), "
            "actions:2")
    code, out, err = run("dpctl", "why-not-offloaded", "--netns", ns.name, "--port", "1=pa",
                         "--port", "2=pb", line)
    assert (code, err) == (0, ""), err
    assert "verdict: NOT offloadable: pa is not an eswitch port (action output)" in out
    code, out, _ = run("dpctl", "why-not-offloaded", "--netns", ns.name, "--port", "1=pa",
                       "--port", "2=pb", "--no-eswitch-check", "--policy", "skip_hw", line)
    assert "verdict: offloadable" in out
    assert f"(ifindex {dp.ports[1].ifindex})" in out
    assert "hw-tc-offload:" in out  # veth: off [fixed]; skip_hw: no warning note
    code, out, _ = run("dpctl", "why-not-offloaded", "--netns", ns.name, "--port", "1=pa",
                       "--port", "2=pb", "--no-eswitch-check", line)
    assert "verdict: offloadable" in out
    assert "note: hw-tc-offload is off [fixed] on pa: the NIC will not take the filter and " \
        "skip_sw makes the kernel refuse it" in out
    tc = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("tc -n"))
    assert "dev pa" in tc and "action mirred egress redirect dev pb" in tc


def test_why_not_offloaded_netdevsim(netdevsim_factory: Callable[..., Any],
                                     veth_factory: Callable[..., VethPair]) -> None:
    nsim = netdevsim_factory(2)
    ns: Netns = nsim.ns
    veth_factory(ns, "vx0", ns, "vx1")
    reps = nsim.representors
    line = "recirc_id(0),in_port(1),eth_type(0x0800),ipv4(frag=no), actions:2"
    code, out, _ = run("dpctl", "why-not-offloaded", "--netns", ns.name,
                       "--port", f"1={reps['pf0vf0']}", "--port", f"2={reps['pf0vf1']}", line)
    assert code == 0 and "verdict: offloadable" in out, out
    assert "eswitch:" in out and "ok: ingress and outputs on one switchdev eswitch" in out
    code, out, _ = run("dpctl", "why-not-offloaded", "--netns", ns.name, "--json",
                       "--port", f"1={reps['pf0vf0']}", "--port", "2=vx0", line)
    data = json.loads(out)
    assert data["offloadable"] is False and data["stage"] == "eswitch"
    assert data["reason"].startswith("output vx0 is not on eswitch")


def test_switchdev_show_and_mode(netdevsim_factory: Callable[..., Any]) -> None:
    nsim = netdevsim_factory(2)
    ns: Netns = nsim.ns
    code, out, err = run("switchdev", "show", "--netns", ns.name, "--json")
    assert (code, err) == (0, ""), err
    sw = next(s for s in json.loads(out) if s["handle"] == nsim.devlink_handle)
    assert sw["mode"] == "switchdev" and sw["switch_id"]
    vfs = sorted((p["vf"], p["netdev"]) for p in sw["ports"] if p["flavour"] == "pcivf")
    assert vfs == [(0, nsim.representors["pf0vf0"]), (1, nsim.representors["pf0vf1"])]
    assert all(p["representor"] for p in sw["ports"] if p["flavour"] == "pcivf")
    assert all(p["hw_tc_offload"] in ("on", "off", "off [fixed]", "on [fixed]", "n/a")
               for p in sw["ports"])
    code, out, _ = run("switchdev", "show", "--netns", ns.name)
    assert f"eswitch {nsim.devlink_handle}: mode switchdev, switch_id " in out
    assert nsim.representors["pf0vf0"] in out and "pf0vf0" in out
    code, out, err = run("switchdev", "mode", nsim.devlink_handle, "legacy", "--netns", ns.name)
    assert (code, err) == (0, ""), err
    assert out.strip() == f"{nsim.devlink_handle}: eswitch mode legacy"
    code, out, _ = run("switchdev", "show", "--netns", ns.name, "--json")
    sw = next(s for s in json.loads(out) if s["handle"] == nsim.devlink_handle)
    assert sw["mode"] == "legacy"
    code, out, err = run("switchdev", "mode", "netdevsim/nosuch", "legacy", "--netns", ns.name)
    assert code == 1 and err.startswith("flowpath: error: ") and err.count("\n") == 1
