"""dump-flows / cleanup command logic against a fake TcNetlink (unit tier).

The kernel tier (test_cli_kernel.py) checks the same against real filters;
this one pins ownership, port numbering and output format without root.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

import offload.tc_netlink
from cli.main import cli
from dpif.actions import Output
from dpif.errors import DeviceError
from dpif.flow import Ufid
from dpif.flowtext import parse_flow
from dpif.match import Match
from offload import tc_values as V
from offload.tc_flower import PortInfo, to_flower

M = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ipv4_dst=0x0A090002,
                ip_proto=17, ip_frag=(0, 3))
PORTS = {1: PortInfo(1, 11, "pa"), 2: PortInfo(2, 12, "pb")}


def ours(ufid: int, handle: int, packets: int = 0, in_hw: bool = False) -> V.FilterDump:
    f = to_flower(M, (Output(2),), Ufid(ufid), ports=PORTS, prio=0x800, handle=handle,
                  flags=1)
    assert isinstance(f, V.FlowerFilter)
    return V.FilterDump(f, V.TcStats(packets, packets * 100, idle_ms=1500 if packets else 9),
                        in_hw=in_hw)


FOREIGN = V.FilterDump(V.FlowerFilter(11, 100, 1, (("TCA_FLOWER_KEY_IP_PROTO", 6),
                                                   ("TCA_FLOWER_KEY_ETH_TYPE", 0x0800)),
                                      (V.Gact.drop(),), protocol=0x0800), V.TcStats())
# in flowpath's prio range but no ufid cookie: still foreign
NO_COOKIE = V.FilterDump(V.FlowerFilter(11, 0x900, 1, (), (V.Gact.drop(),)), V.TcStats())


class FakeTc:
    instances: list[FakeTc] = []
    filters: dict[int, list[V.FilterDump]] = {}

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.deleted: list[V.FlowerFilter] = []
        FakeTc.instances.append(self)

    def __enter__(self) -> FakeTc:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def ifindex(self, name: str) -> int:
        idx = {"pa": 11, "pb": 12}.get(name)
        if idx is None:
            raise DeviceError("no such device", device=name, netns=self.netns)
        return idx

    def ifname(self, ifindex: int) -> str:
        return {11: "pa", 12: "pb"}.get(ifindex, f"ifindex {ifindex}")

    def dump(self, ifindex: int) -> list[V.FilterDump]:
        return list(self.filters.get(ifindex, []))

    def delete(self, f: V.FlowerFilter) -> None:
        self.deleted.append(f)


@pytest.fixture(autouse=True)
def fake_tc(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeTc.instances = []
    FakeTc.filters = {11: [ours(0x42, 1, packets=3, in_hw=True), FOREIGN, NO_COOKIE,
                           ours(0x43, 2)]}
    monkeypatch.setattr(offload.tc_netlink, "TcNetlink", FakeTc)


def run(*args: str) -> tuple[int, str, str]:
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_dump_flows_ours_only_with_port_map() -> None:
    code, out, err = run("dpctl", "dump-flows", "--dev", "pa", "--port", "1=pa", "--port",
                         "2=pb", "-m")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 2
    first = parse_flow(lines[0])
    assert first.ufid == Ufid(0x42) and first.match == M and first.actions == (Output(2),)
    assert first.stats is not None and first.stats.packets == 3 and first.stats.bytes == 300
    assert ", used:1.500s, offloaded:yes, dp:tc, actions:2" in lines[0]
    assert ", packets:0, bytes:0, used:never, offloaded:no, dp:tc, actions:2" in lines[1]


def test_dump_flows_default_numbering_is_ifindex() -> None:
    code, out, _ = run("dpctl", "dump-flows", "--dev", "pa")
    first = out.splitlines()[0]
    assert first.startswith("recirc_id(0),in_port(11),") and first.endswith("actions:12")
    assert "ufid:" not in first and "dp:tc" not in first


def test_dump_flows_all_marks_foreign() -> None:
    code, out, _ = run("dpctl", "dump-flows", "--dev", "pa", "--all")
    foreign = [ln for ln in out.splitlines() if ln.startswith("foreign:")]
    assert len(foreign) == 2
    assert "prio 100 handle 0x1" in foreign[0] and "ip_proto tcp action drop" in foreign[0]
    assert "prio 2304" in foreign[1]


def test_dump_flows_strict_port_map_marks_unreadable() -> None:
    code, out, _ = run("dpctl", "dump-flows", "--dev", "pa", "--port", "1=pa", "-m")
    assert code == 0
    assert all("unreadable" in ln for ln in out.splitlines())


def test_dump_flows_json() -> None:
    code, out, _ = run("dpctl", "dump-flows", "--dev", "pa", "--all", "--json",
                       "--port", "1=pa", "--port", "2=pb")
    entries: list[dict[str, Any]] = json.loads(out)
    assert [e["owner"] for e in entries] == ["flowpath", "foreign", "foreign", "flowpath"]
    e = entries[0]
    assert e["ufid"] == str(Ufid(0x42)) and e["in_hw"] is True and e["packets"] == 3
    assert e["flow"]["offloaded"] is True and e["flow"]["dp"] == "tc"
    assert e["tc"].startswith("tc filter add dev pa ingress protocol ip prio 2048 handle 0x1 "
                              "flower skip_hw ")


def test_cleanup_deletes_exactly_ours() -> None:
    code, out, err = run("dpctl", "cleanup", "--dev", "pa")
    assert (code, err) == (0, "")
    assert out.strip() == "pa: deleted 2 flowpath filter(s), 2 foreign filter(s) untouched"
    (tc,) = FakeTc.instances
    assert [f.handle for f in tc.deleted] == [1, 2]
    assert all(f.prio == 0x800 for f in tc.deleted)


def test_cleanup_dry_run_deletes_nothing() -> None:
    code, out, _ = run("dpctl", "cleanup", "--dev", "pa", "--dry-run", "--netns", "x")
    assert FakeTc.instances[0].deleted == []
    assert out.splitlines()[:2] == [
        "tc -n x filter del dev pa ingress protocol ip prio 2048 handle 0x1 flower",
        "tc -n x filter del dev pa ingress protocol ip prio 2048 handle 0x2 flower"]
    assert "would delete 2 flowpath filter(s)" in out


def test_missing_device_is_one_line() -> None:
    code, out, err = run("dpctl", "cleanup", "--dev", "nope0")
    assert code == 1 and err.count("\n") == 1 and "nope0" in err and "Traceback" not in err
