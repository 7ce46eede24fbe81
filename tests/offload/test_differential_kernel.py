"""Kernel tier, differential: kernel tc flower vs the software datapath.

The same pairwise non-overlapping megaflows go into kernel flower (through
``to_flower`` and ``TcNetlink``, policy skip_hw, on a veth in a fresh netns)
and into ``SwDatapath``.  Then concrete frames -- some built from each
megaflow (its key, with every wildcarded bit randomised) and some random --
are sent one by one into that veth from its peer namespace (raw AF_PACKET).
Which filter took a frame is read from the per-filter counters; the software
verdict is ``cache.lookup(parse_key(frame) | in_port)``.  Both must name the
same megaflow (or none) for every frame, and the final counters must agree.

Ordering: after each frame a *sentinel* frame (ethertype 0x88b5, its own
drop filter) follows from the same CPU (the sending thread is pinned), and
veth delivers through that CPU's backlog in order, so once the sentinel has
been counted the frame before it has been classified.  No timings are
asserted; every wait is bounded.

Megaflows are drawn from a small field space with a seeded generator:
eth_type ip/ipv6/arp (untagged) or 802.1Q-tagged IPv4, ip_proto tcp/udp/icmp
(or wildcarded), masked IPv4/IPv6/ARP address prefixes, L4 ports with masks,
ICMP type/code, ip_frag (no/first/later/any/wildcard), ip_tos, eth_dst.  Only
those ``to_flower`` accepts take part; the refusals are printed with reasons.

What it found (Linux 6.1), now refused by ``to_flower``: flower dissects no
L4 header of a *first* IP fragment (ports/icmp read 0 there, while OVS's and
our parser read them), and the kernel reads ARP fields only of a request or
reply.  Counters: tc credits ``skb->len`` at ingress, i.e. the frame without
its Ethernet header (and without a VLAN tag already moved to the skb), where
OVS and our software datapath count the whole frame (see ``tc_len``).
"""

from __future__ import annotations

import collections
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from dpif import actions as A
from dpif.fields import BY_NAME, FRAG_ANY, FRAG_LATER
from dpif.flow import FlowSpec, Ufid
from dpif.match import Match, unpack
from offload import tc_nla as N
from offload.tc_flower import NotOffloadable, PortInfo, to_flower, ufid_of
from offload.tc_netlink import TcNetlink
from offload.tc_values import FilterDump, FlowerFilter, Gact
from swpath.cache import MegaflowCache
from swpath.datapath import SwDatapath
from swpath.parse import parse_key
from dpif.errors import FlowExists
from tests.kernel.netns import Netns, VethPair

pytestmark = pytest.mark.kernel

SENTINEL_TYPE = 0x88B5
SENTINEL_PRIO = 1
FIRST_PRIO = 0x0800
IN_PORT = 1
WAIT_S = 10.0  # bound for one frame's classification to show up

# --- the field space -----------------------------------------------------------------

MACS = [bytes.fromhex(h) for h in ("020000000001", "020000000002", "0a1b2c3d4e5f")]
V4_BASE = [0x0A010203, 0x0A010280, 0x0A020000, 0xC0A80001]
V6_BASE = [int.from_bytes(bytes.fromhex("20010db8000000000000000000000001"), "big"),
           int.from_bytes(bytes.fromhex("20010db8000100000000000000000042"), "big")]
PORTS = [0, 53, 80, 443, 4096, 8080]
PORT_MASKS = [0xFFFF, 0xFFFF, 0xFF00, 0xFFF0, 0xF000]
FRAGS: list[tuple[int, int] | None] = [None, (0, 3), (0, 3), (0, 3), (1, 3), (3, 3), (1, 1),
                                       (2, 2)]


def _prefix(bits: int, plen: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)


def random_megaflow(rng: random.Random) -> dict[str, int | tuple[int, int]]:
    """One megaflow's field values (in_port/recirc_id added by the caller)."""
    fam = rng.choices(["ipv4", "ipv6", "arp", "vlan"], [5, 3, 2, 2])[0]
    v: dict[str, int | tuple[int, int]] = {}
    if rng.random() < 0.15:
        v["eth_dst"] = int.from_bytes(rng.choice(MACS), "big")
    if fam == "arp":
        v.update(vlan_tpid=0, eth_type=0x0806)
        if rng.random() < 0.7:
            v["arp_op"] = rng.choice([1, 2])
        if rng.random() < 0.7:
            v["arp_tpa"] = (rng.choice(V4_BASE), _prefix(32, rng.choice([8, 16, 24, 32])))
        if rng.random() < 0.3:
            v["arp_spa"] = (rng.choice(V4_BASE), _prefix(32, rng.choice([16, 32])))
        return v
    if fam == "vlan":
        v.update(vlan_tpid=0x8100, vlan_vid=rng.choice([10, 20]), eth_type=0x0800)
        if rng.random() < 0.3:
            v["vlan_pcp"] = rng.choice([0, 5])
    else:
        v.update(vlan_tpid=0, eth_type=0x0800 if fam == "ipv4" else 0x86DD)
    v6 = fam == "ipv6"
    proto = rng.choice([6, 17, 58 if v6 else 1, None])
    if proto is not None:
        v["ip_proto"] = proto
    if v6:
        v["ipv6_dst"] = (rng.choice(V6_BASE), _prefix(128, rng.choice([64, 120, 128])))
        if rng.random() < 0.1:
            v["ipv6_label"] = 1  # flower has no flow-label key: a refusal
        frag = (0, 3) if rng.random() < 0.9 else None
    else:
        v["ipv4_dst"] = (rng.choice(V4_BASE), _prefix(32, rng.choice([8, 16, 24, 32])))
        if rng.random() < 0.3:
            v["ipv4_src"] = (rng.choice(V4_BASE), _prefix(32, rng.choice([16, 32])))
        frag = rng.choice(FRAGS)
    if frag is not None:
        v["ip_frag"] = frag
    if rng.random() < 0.15:
        v["ip_tos"] = (rng.choice([0, 0x10, 0xB8]), rng.choice([0xFF, 0xFC]))
    later = frag is not None and frag[0] & FRAG_LATER
    if proto in (6, 17) and not later:
        for name in ("tp_dst", "tp_src"):
            if rng.random() < (0.8 if name == "tp_dst" else 0.3):
                v[name] = (rng.choice(PORTS), rng.choice(PORT_MASKS))
    elif proto in (1, 58) and not later:
        if rng.random() < 0.7:
            v["icmp_type"] = rng.choice([0, 8] if proto == 1 else [128, 129])
        if rng.random() < 0.3:
            v["icmp_code"] = 0
    elif proto is None and rng.random() < 0.1:
        v["tp_dst"] = 80  # ports without ip_proto: a refusal
    return v


# --- frames --------------------------------------------------------------------------


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _fill(rng: random.Random, m: Match | None, name: str, rand: int) -> int:
    """``rand`` with the bits the megaflow ``m`` looks at taken from its key."""
    if m is None:
        return rand
    value, mask = m.get(name)
    return (rand & ~mask & BY_NAME[name].all_ones) | value


@dataclass(frozen=True)
class Frame:
    data: bytes
    tagged: bool
    origin: str  # "flow N" or "random"


def build_frame(rng: random.Random, m: Match | None, dst_mac: bytes) -> Frame:
    """A well-formed frame, from the megaflow ``m`` (None: a random one)."""
    f = lambda name, rand: _fill(rng, m, name, rand)  # noqa: E731
    if m is not None:
        tpid, et = m.value("vlan_tpid"), m.value("eth_type")
    else:
        tpid, et = rng.choice([(0, 0x0800)] * 4 + [(0, 0x86DD)] * 2 + [(0, 0x0806), (0x8100, 0x0800),
                                                                      (0, 0x88B6)])
    dst = f("eth_dst", int.from_bytes(rng.choice([dst_mac] + MACS), "big")).to_bytes(6, "big")
    src = f("eth_src", int.from_bytes(b"\x02" + rng.randbytes(5), "big")).to_bytes(6, "big")
    l2 = dst + src
    if tpid:
        tci = f("vlan_pcp", rng.choice([0, 5, 7])) << 13 | f("vlan_vid", rng.choice([10, 20, 30]))
        l2 += struct.pack("!HH", tpid, tci)
    l2 += struct.pack("!H", et)
    if et == 0x0806:
        op = f("arp_op", rng.choice([1, 2, 3]))
        body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
        body += f("arp_sha", int.from_bytes(src, "big")).to_bytes(6, "big")
        body += f("arp_spa", rng.choice(V4_BASE) ^ rng.getrandbits(8)).to_bytes(4, "big")
        body += f("arp_tha", 0).to_bytes(6, "big")
        body += f("arp_tpa", rng.choice(V4_BASE) ^ rng.getrandbits(rng.choice([0, 8, 16])))\
            .to_bytes(4, "big")
        return Frame(l2 + body, bool(tpid), "")
    if et not in (0x0800, 0x86DD):
        return Frame(l2 + rng.randbytes(46), bool(tpid), "")
    v6 = et == 0x86DD
    proto = f("ip_proto", rng.choice([6, 17, 58 if v6 else 1, 6, 17, 47]))
    frag = 0 if v6 else f("ip_frag", rng.choice([0, 0, 0, 0, FRAG_ANY, FRAG_ANY | FRAG_LATER]))
    if frag == FRAG_LATER:  # not a packet: "later" implies "any"
        frag = FRAG_ANY | FRAG_LATER
    tos = f("ip_tos", rng.choice([0, 0, 0x10, 0xB8, 0xBB]))
    ttl = f("ip_ttl", rng.randrange(1, 256))
    if frag & FRAG_LATER:
        l4 = rng.randbytes(8)
    elif proto in (6, 17):
        sport = f("tp_src", rng.choice(PORTS + [rng.randrange(1024, 65536)]))
        dport = f("tp_dst", rng.choice(PORTS + [rng.randrange(1024, 65536)]))
        if proto == 6:
            l4 = struct.pack("!HHIIHHHH", sport, dport, rng.getrandbits(32), 0,
                             0x5000 | f("tcp_flags", rng.choice([0x02, 0x10, 0x18])), 1024, 0, 0)
        else:
            l4 = struct.pack("!HHHH", sport, dport, 8 + 8, 0) + rng.randbytes(8)
    elif proto in (1, 58):
        types = [0, 8, 3] if proto == 1 else [128, 129, 1]
        l4 = struct.pack("!BBH", f("icmp_type", rng.choice(types)),
                         f("icmp_code", rng.choice([0, 0, 1])), 0) + rng.randbytes(4)
    else:
        l4 = rng.randbytes(8)
    l4 += rng.randbytes(rng.randrange(0, 12))
    if v6:
        label = f("ipv6_label", rng.choice([0, 0, 1, 0x12345]))
        sip = f("ipv6_src", V6_BASE[0] ^ rng.getrandbits(16))
        dip = f("ipv6_dst", rng.choice(V6_BASE) ^ rng.getrandbits(rng.choice([0, 8, 16, 70])))
        hdr = struct.pack("!IHBB", 6 << 28 | tos << 20 | label, len(l4), proto, ttl)
        hdr += sip.to_bytes(16, "big") + dip.to_bytes(16, "big")
    else:
        sip = f("ipv4_src", rng.choice(V4_BASE) ^ rng.getrandbits(rng.choice([0, 8, 20])))
        dip = f("ipv4_dst", rng.choice(V4_BASE) ^ rng.getrandbits(rng.choice([0, 8, 20, 28])))
        fo = 0
        if frag & FRAG_LATER:
            fo = rng.randrange(1, 200) | rng.choice([0, 0x2000])
        elif frag & FRAG_ANY:
            fo = 0x2000
        hdr = struct.pack("!BBHHHBBHII", 0x45, tos, 20 + len(l4), rng.getrandbits(16), fo,
                          ttl, proto, 0, sip, dip)
        hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return Frame(l2 + hdr + l4, bool(tpid), "")


ETH_HLEN = 14


def tc_len(fr: Frame) -> int:
    """What tc's byte counters credit for a frame at ingress: skb->len there,
    i.e. without the Ethernet header, and without a VLAN tag the receive path
    has already moved into skb->vlan_tci (measured in the 6.1 VM).  OVS and
    our software datapath count the whole frame."""
    return len(fr.data) - ETH_HLEN - (4 if fr.tagged else 0)


def sentinel_frame(dst_mac: bytes) -> bytes:
    return dst_mac + b"\x02\x00\x00\x00\x00\xee" + struct.pack("!H", SENTINEL_TYPE) + bytes(46)


# --- the rig -------------------------------------------------------------------------


@dataclass
class Megaflow:
    ufid: Ufid
    match: Match
    actions: A.Actions
    filter: FlowerFilter


def generate(rng: random.Random, ports: dict[int, PortInfo], want: int, tries: int
             ) -> tuple[list[Megaflow], collections.Counter[str]]:
    index = MegaflowCache(emc_size=0)
    flows: list[Megaflow] = []
    refused: collections.Counter[str] = collections.Counter()
    outputs: list[A.Actions] = [(A.Output(2),), (A.Output(3),), ()]
    for _ in range(tries):
        if len(flows) >= want:
            break
        vals = random_megaflow(rng)
        vals.update(in_port=IN_PORT, recirc_id=0)
        match = Match.build(vals)
        actions = rng.choice(outputs)
        ufid = Ufid(rng.getrandbits(128))
        f = to_flower(match, actions, ufid, ports=ports, prio=FIRST_PRIO + len(flows), handle=1,
                      flags=N.TCA_CLS_FLAGS_SKIP_HW)
        if isinstance(f, NotOffloadable):
            refused[str(f)] += 1
            continue
        try:
            index.insert(ufid, match, actions)
        except FlowExists:
            refused["overlaps an earlier megaflow (not generated)"] += 1
            continue
        flows.append(Megaflow(ufid, match, actions, f))
    return flows, refused


def _send_pinned(sock: socket.socket, frames: list[bytes]) -> None:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # this thread only: one backlog, in order
    for data in frames:
        sock.send(data)


def _counts(dumps: list[FilterDump]) -> dict[tuple[int, int], int]:
    return {(d.filter.prio, d.filter.handle): d.stats.packets for d in dumps}


@pytest.mark.parametrize("seed", [20261123, 7])
def test_flower_and_software_agree_on_every_frame(
        seed: int, netns_factory: Callable[..., Netns],
        veth_factory: Callable[..., VethPair], tc_flower: None) -> None:
    rng = random.Random(seed)
    txns, swns = netns_factory("fpdtx"), netns_factory("fpdsw")
    pair = veth_factory(txns, "tx0", swns, "dp0")
    veth_factory(swns, "o2a", swns, "o2b")
    veth_factory(swns, "o3a", swns, "o3b")
    dp_mac = bytes.fromhex(pair.mac_b.replace(":", ""))

    tc = TcNetlink(netns=swns.name)
    try:
        ports = {n: PortInfo(n, tc.ifindex(name), name)
                 for n, name in ((1, "dp0"), (2, "o2a"), (3, "o3a"))}
        dp0 = ports[1].ifindex
        tc.ensure_ingress(dp0)
        flows, refused = generate(rng, ports, want=14, tries=200)
        print(f"\nseed {seed}: {len(flows)} megaflows on tc and in software; "
              f"{sum(refused.values())} candidates left out:")
        for reason, n in refused.most_common():
            print(f"  {n:3d} x {reason}")
        for fl in flows:
            print(f"  flow prio {fl.filter.prio:#x}: {fl.match!r} -> {fl.actions!r}")
        assert len(flows) >= 6, "generator produced too few offloadable megaflows"
        sentinel = FlowerFilter(ifindex=dp0, prio=SENTINEL_PRIO, handle=1,
                                protocol=SENTINEL_TYPE, flags=N.TCA_CLS_FLAGS_SKIP_HW,
                                actions=(Gact.drop(),))
        outcomes = tc.install([fl.filter for fl in flows] + [sentinel])
        assert outcomes == [None] * (len(flows) + 1), [str(o) for o in outcomes if o]
        by_ident = {(fl.filter.prio, fl.filter.handle): fl for fl in flows}
        for d in tc.dump(dp0):  # the cookie names the megaflow
            if d.filter.prio != SENTINEL_PRIO:
                assert ufid_of(d.filter) == by_ident[(d.filter.prio, d.filter.handle)].ufid

        sw = SwDatapath(emc_size=0)
        for fl in flows:
            sw.put(FlowSpec(fl.match, fl.actions, fl.ufid))
        md = BY_NAME["in_port"].put(IN_PORT)

        frames: list[Frame] = []
        for i, fl in enumerate(flows):
            for _ in range(3):
                fr = build_frame(rng, fl.match, dp_mac)
                frames.append(Frame(fr.data, fr.tagged, f"flow {i}"))
        frames += [Frame(fr.data, fr.tagged, "random")
                   for fr in (build_frame(rng, None, dp_mac) for _ in range(24))]
        rng.shuffle(frames)

        sock = txns.call(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
        try:
            txns.call(sock.bind, ("tx0", 0))
            sent_sentinels = 0
            before = _counts(tc.dump(dp0))
            mismatches: list[str] = []
            aimed_hit = 0
            tc_bytes: collections.Counter[Ufid] = collections.Counter()
            sw_bytes: collections.Counter[Ufid] = collections.Counter()
            for fr in frames:
                key = parse_key(fr.data, md)
                entry = sw.cache.lookup_nocache(key)
                linear = [fl.ufid for fl in flows if fl.match.matches(key)]
                assert linear == ([entry.ufid] if entry else []), "cache vs linear scan"
                sw_verdict = entry.ufid if entry else None
                if fr.origin != "random" and sw_verdict == flows[int(fr.origin[5:])].ufid:
                    aimed_hit += 1
                sw.process(IN_PORT, [fr.data])

                txns.call(_send_pinned, sock, [fr.data, sentinel_frame(dp_mac)])
                sent_sentinels += 1
                deadline = time.monotonic() + WAIT_S
                while True:
                    after = _counts(tc.dump(dp0))
                    if after.get((SENTINEL_PRIO, 1), 0) >= sent_sentinels:
                        break
                    assert time.monotonic() < deadline, "sentinel frame never classified"
                    time.sleep(0.01)
                took = [ident for ident, n in after.items()
                        if ident[0] != SENTINEL_PRIO and n != before.get(ident, 0)]
                assert all(after[i] - before.get(i, 0) == 1 for i in took)
                tc_verdict = by_ident[took[0]].ufid if len(took) == 1 else None
                if len(took) > 1 or tc_verdict != sw_verdict:
                    mismatches.append(
                        f"{fr.origin}: frame {fr.data.hex()}\n    key {unpack(key)}"
                        f"\n    software: {_name(flows, sw_verdict)}  tc: "
                        f"{[_name(flows, by_ident[t].ufid) for t in took]}")
                if sw_verdict is not None:
                    sw_bytes[sw_verdict] += len(fr.data)
                    tc_bytes[sw_verdict] += tc_len(fr)
                before = after
        finally:
            sock.close()

        hits = sum(1 for fr in frames if sw.cache.lookup_nocache(parse_key(fr.data, md)))
        print(f"seed {seed}: {len(frames)} frames, {hits} taken by a megaflow, "
              f"{aimed_hit} of {3 * len(flows)} aimed frames hit their megaflow, "
              f"{len(mismatches)} verdict mismatches")
        assert not mismatches, "\n".join(mismatches)

        final = {ufid_of(d.filter): d.stats for d in tc.dump(dp0) if d.filter.prio != SENTINEL_PRIO}
        for fl in flows:
            got = sw.get(fl.ufid).stats
            assert final[fl.ufid].packets == got.packets, _name(flows, fl.ufid)
            assert got.bytes == sw_bytes[fl.ufid], _name(flows, fl.ufid)
            assert final[fl.ufid].bytes == tc_bytes[fl.ufid], _name(flows, fl.ufid)
        assert aimed_hit >= len(flows)  # the frames do exercise the megaflows
    finally:
        tc.close()


def _name(flows: list[Megaflow], ufid: Ufid | None) -> str:
    for i, fl in enumerate(flows):
        if fl.ufid == ufid:
            return f"flow {i} {fl.match!r}"
    return "none"
