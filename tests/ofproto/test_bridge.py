"""Bridge upcalls (with SwDatapath), dedup, flow limit, packet-ins; trace output."""

from __future__ import annotations

import struct

from dpif import actions as dpa
from dpif.fields import BY_NAME
from ofproto.bridge import Bridge
from ofproto.normal import PortConfig, VlanMode
from ofproto.trace import render, trace
from swpath.datapath import SwDatapath
from swpath.parse import parse_key
from swpath.ports import MemPort
from tests.ofproto.control_rig import attach

MAC1 = bytes.fromhex("020000000001")
MAC2 = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


def udp(src: bytes = MAC1, dst: bytes = MAC2, nw_dst: str = "10.0.0.2", dport: int = 80,
        sport: int = 1234) -> bytes:
    ip_dst = bytes(int(x) for x in nw_dst.split("."))
    payload = b"x" * 16
    udp_h = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    ip_h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp_h) + len(payload), 0, 0, 64,
                       17, 0, bytes([10, 0, 0, 1]), ip_dst)
    return dst + src + b"\x08\x00" + ip_h + udp_h + payload


def setup(rules: list[str], *, flow_limit: int = 1000, placer: bool = False,
          ports: list[PortConfig] | None = None) -> tuple[Bridge, SwDatapath, dict[int, MemPort]]:
    dp = SwDatapath(clock=lambda: 0.0)
    cfg = ports or [PortConfig(n, f"p{n}") for n in (1, 2, 3)]
    br = Bridge("br0", cfg, placer=dp if placer else None, flow_limit=flow_limit,
                clock=lambda: 0.0)
    return br, dp, attach(br, dp, cfg, rules)


def test_upcall_installs_one_megaflow_and_forwards_each_packet_once() -> None:
    br, dp, mem = setup(["priority=10,ip,nw_dst=10.0.0.0/24,actions=output:2",
                         "priority=0,actions=drop"])
    pkts = [udp(nw_dst=f"10.0.0.{i}", dport=i) for i in range(1, 6)]
    dp.process(1, pkts)
    assert len(mem[2].sent) == 5
    flows = list(dp.dump())
    assert len(flows) == 1 and flows[0].actions == (dpa.Output(2),)
    assert flows[0].match.field_mask("ipv4_dst") == 0xFFFFFF00
    assert not flows[0].match.has("tp_dst")
    assert br.counters["upcall"] == 1 and len(br.ukeys) == 1
    (rid, _), = [(rid, r) for rid, r in br.tables.rules() if r.priority == 10]
    assert br.tables.stats(rid).n_packets == 1  # the upcall's own packet


def test_duplicate_upcall_installs_one_flow() -> None:
    br, dp, mem = setup(["actions=output:2"], placer=True)
    key = parse_key(udp(), BY_NAME["in_port"].put(1))
    r1 = br.handle_upcall(udp(), key, 1)
    r2 = br.handle_upcall(udp(), key, 1)
    assert r1 is not None and r2 is not None
    assert r1.match is None and r2.match is None  # the bridge placed it itself
    assert r1.actions == r2.actions == (dpa.Output(2),)
    assert len(list(dp.dump())) == 1 and br.counters["upcall_duplicate"] == 1


def test_process_miss_executes_once_via_placer() -> None:
    br, dp, mem = setup(["actions=output:2,output:3"], placer=True)
    br.process_miss(udp(), 1)
    assert len(mem[2].sent) == 1 and len(mem[3].sent) == 1
    dp.process(1, [udp()])  # now a datapath hit
    assert len(mem[2].sent) == 2 and br.counters["upcall"] == 1


def test_flow_limit_is_respected_and_packets_still_forwarded() -> None:
    br, dp, mem = setup(["priority=10,udp,tp_dst=1,actions=output:2",
                         "priority=10,udp,tp_dst=2,actions=output:2",
                         "priority=10,udp,tp_dst=3,actions=output:2",
                         "priority=0,actions=output:3"], flow_limit=2)
    dp.process(1, [udp(dport=p) for p in (1, 2, 3)])
    assert len(br.ukeys) == 2 and len(list(dp.dump())) == 2
    assert br.counters["flow_limit_hit"] == 1
    assert len(mem[2].sent) == 3


def test_controller_packet_in_is_queued_once_per_packet_and_not_forwarded() -> None:
    br, dp, mem = setup(["cookie=0x42,udp,actions=controller(max_len=20)"])
    dp.process(1, [udp(), udp()])  # one upcall, one datapath hit
    pins = br.pop_packet_ins()
    assert len(pins) == 2
    assert all(p.cookie == 0x42 and p.reason == "action" and len(p.packet) == 20
               and p.total_len == len(udp()) and p.in_port == 1 for p in pins)
    assert not any(m.sent for m in mem.values())
    assert br.packet_ins_since(pins[-1].seq) == []


def test_normal_learns_through_upcalls() -> None:
    ports = [PortConfig(1, "a", VlanMode.ACCESS, tag=10), PortConfig(2, "b", VlanMode.ACCESS,
             tag=10), PortConfig(3, "t", VlanMode.TRUNK)]
    br, dp, mem = setup(["actions=normal"], ports=ports)
    dp.process(1, [udp(MAC1, MAC2)])  # unknown dst: flood
    assert len(mem[2].sent) == 1 and len(mem[3].sent) == 1
    tagged = mem[3].sent[0]
    assert tagged[12:14] == b"\x81\x00" and tagged[14:16] == struct.pack("!H", 10)
    dp.process(2, [udp(MAC2, MAC1)])  # reply: MAC1 was learned on port 1
    assert len(mem[1].sent) == 1 and len(mem[3].sent) == 1
    assert br.macs.lookup(10, int.from_bytes(MAC2, "big"), 0.0) == 2


def test_trace_known_case() -> None:
    br, _, _ = setup(["table=0,priority=100,ip,nw_dst=10.0.0.0/24,cookie=0x1,"
                      "actions=resubmit(,1),output:3",
                      "table=1,priority=0,actions=output:2"])
    t = trace(br, "in_port=1,udp,nw_dst=10.0.0.5,tp_dst=80")
    assert [(s.table, s.rule is not None) for s in t.steps] == [(0, True), (1, True)]
    assert t.actions == (dpa.Output(2), dpa.Output(3))
    text = render(t)
    assert text.splitlines()[2:] == [
        'bridge("br0")',
        "-------------",
        " 0. ip,nw_dst=10.0.0.0/24, priority 100, cookie 0x1",
        "    resubmit(,1)",
        "     1. priority 0",
        "            output:2",
        "    output:3",
        "",
        "Final flow: unchanged",
        "Megaflow: recirc_id=0,eth,ip,in_port=1,nw_dst=10.0.0.0/24,nw_frag=no",
        "Datapath actions: 2,3",
    ]
    assert text.startswith("Flow: udp,in_port=1,vlan_tci=0x0000,")
    assert t.to_dict()["datapath_actions"] == "2,3"


def test_trace_tree_indents_like_ovs() -> None:
    """OVS's rule (ofproto-dpif-trace.c): a node is indented unless it is the
    last of its list and not a leaf; an indented node's children go two levels
    deeper.  So tail resubmits and goto_table print flat; others nest."""
    br, _, _ = setup(["table=0,in_port=1,actions=resubmit(,1)",
                      "table=1,actions=mod_nw_tos:8,goto_table:2",
                      "table=2,actions=resubmit(,3),output:2",
                      "table=3,actions=output:5,output:3",
                      "table=0,in_port=2,actions=output:2"])
    body = render(trace(br, udp(), in_port=1)).split("-------------\n")[1].split("\n\n")[0]
    assert body.splitlines() == [
        " 0. in_port=1, priority 32768",
        "    resubmit(,1)",
        " 1. priority 32768",
        "    mod_nw_tos:8",
        "    goto_table:2",
        " 2. priority 32768",
        "    resubmit(,3)",
        "     3. priority 32768",
        "            output:5",
        "             >> output:5: no such port",
        "            output:3",
        "    output:2",
    ]  # the note follows OVS's " >> " warning style
    body = render(trace(br, udp(), in_port=2)).split("-------------\n")[1].split("\n\n")[0]
    assert body.splitlines() == [" 0. in_port=2, priority 32768",
                                 "    output:2",
                                 "     >> output:2 is the input port: skipped (use in_port)"]


def test_trace_miss_and_rewrite() -> None:
    br, _, _ = setup(["in_port=1,actions=mod_vlan_vid:5,mod_nw_dst:10.9.9.9,output:2"])
    t = trace(br, udp(), in_port=1)
    text = render(t)
    assert "Final flow: " in text and "Final flow: unchanged" not in text
    assert "nw_dst=10.9.9.9" in text.split("Final flow: ")[1].splitlines()[0]
    assert "Datapath actions: push_vlan(vid=5,pcp=0),set(ipv4(dst=10.9.9.9)),2" in text
    t = trace(br, udp(), in_port=2)
    text = render(t)
    assert " 0. No match.\n    drop\n" in text
    assert text.endswith("Datapath actions: drop\n")


def test_overlapping_megaflow_is_narrowed_not_lost() -> None:
    from dpif.flow import FlowSpec, Ufid
    from dpif.match import Match
    br, dp, mem = setup(["actions=output:2"], placer=True)
    # A megaflow some earlier rule set left behind, overlapping what xlate makes now.
    old = Match.build(in_port=1, eth_type=0x0800, ipv4_dst=0x0A000005)
    dp.put(FlowSpec(old, (dpa.Output(2),), Ufid(1)))
    dp.process(1, [udp(nw_dst="10.0.0.6")] * 3)
    assert len(mem[2].sent) == 3
    assert br.counters.get("megaflow_narrowed") == 1
    assert br.counters["upcall"] == 1  # the narrowed flow took the next two
    new = [f for f in dp.dump() if f.ufid != Ufid(1)]
    assert len(new) == 1 and new[0].match.is_exact("ipv4_dst")
    assert new[0].match.value("ipv4_dst") == 0x0A000006
    assert not new[0].match.overlaps(old)
