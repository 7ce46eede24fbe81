"""Kernel tier: terse dumps (``TcNetlink.dump_stats``) against full dumps of
the same real filters.

The full dump (``TcNetlink.dump``, itself checked against ``tc -j`` in
test_tc_netlink_kernel.py) is the oracle: for every filter -- many masks and
protocols, several chains, every action kind, policies skip_hw and none,
with and without cookies, after real traffic -- the terse dump must give the
same identity, flags, cookie and counters.  Also what the kernel does around
it: a matchall catch-all (no terse dump in 6.1) is skipped; a u32 one ends
the dump with EMSGSIZE, and one (chain, prio) at a time still works.
"""

from __future__ import annotations

import errno
import struct
import sys
from dataclasses import replace
from typing import Any, Iterator

import pytest

from dpif.errors import OffloadError
from offload import tc_nla as N
from offload.tc_netlink import TcNetlink
from offload.tc_terse import TerseFilter
from offload.tc_values import FilterDump, FlowerFilter, Gact
from tests.offload.tc_cases import ACTION_CASES, KEY_CASES, K

pytestmark = pytest.mark.kernel
SKIP_HW = N.TCA_CLS_FLAGS_SKIP_HW


@pytest.fixture
def dev(netns: Any, veth_factory: Any, tc_flower: None) -> Iterator[Any]:
    """(netns, TcNetlink, ifindex of vt0, ifindex of vt1), ingress qdisc on vt0."""
    veth_factory(netns, "vt0", netns, "vt1")
    with TcNetlink(netns=netns.name) as tc:
        ifindex = tc.ifindex("vt0")
        tc.ensure_ingress(ifindex)
        yield netns, tc, ifindex, tc.ifindex("vt1")


def udp_frame(dport: int, payload: int = 10) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + payload, 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    udp = struct.pack("!HHHH", 4000, dport, 8 + payload, 0)
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip + udp + b"x" * payload


def send_frames(ns: Any, dev: str, frames: list[bytes]) -> None:
    """Raw frames out of ``dev`` (so into its veth peer's ingress)."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
            f"s.bind(({dev!r}, 0))\n"
            "for line in sys.stdin.read().split():\n"
            "    s.send(bytes.fromhex(line))\n")
    ns.run(sys.executable, "-c", code, input="\n".join(f.hex() for f in frames))


def same_filter(t: TerseFilter, d: FilterDump) -> None:
    f = d.filter
    assert t.ident == f.ident and t.protocol == f.protocol, (t, f)
    assert t.flags & N.POLICY_FLAGS == f.flags, (t, f)
    assert (t.in_hw, t.not_in_hw) == (d.in_hw, d.not_in_hw), (t, d)
    assert t.cookie == f.cookie, (t, f)
    assert t.stats == replace(d.stats, idle_ms=None), (t, d)


def test_terse_dump_equals_the_full_dump(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    put = [FlowerFilter(ifindex, prio=10 + n, handle=n, protocol=proto, keys=keys,
                        flags=SKIP_HW if n % 2 else 0, actions=(Gact.drop(),),
                        cookie=n.to_bytes(16, "big") if n % 3 else b"")
           for n, (proto, keys) in enumerate(KEY_CASES.values(), start=1)]
    put += [FlowerFilter(ifindex, prio=200 + n, handle=n, chain=3, flags=SKIP_HW if n % 2 else 0,
                         actions=build(peer), cookie=b"act%d" % n)
            for n, build in enumerate(ACTION_CASES.values(), start=1)]
    # first in line for the traffic (prio 2); they drop it (a redirect to the
    # peer would loop back into vt0)
    counted = [FlowerFilter(ifindex, prio=2, handle=h, protocol=0x0800, flags=SKIP_HW if h % 2
                            else 0, keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17,
                                          K + "UDP_DST": h},
                            actions=(Gact.drop(),), cookie=h.to_bytes(16, "big"))
               for h in range(1, 6)]
    assert tc.install(put + counted) == [None] * (len(put) + len(counted))
    # a catch-all as the miss channel has it: matchall has no terse dump (skipped)
    ns.tc("filter", "add", "dev", "vt0", "ingress", "prio", "65535", "protocol", "all",
          "matchall", "action", "drop")
    send_frames(ns, "vt1", [udp_frame(h) for h in range(1, 6) for _ in range(h * 3)])

    full = {d.filter.ident: d for d in tc.dump(ifindex)}
    terse = tc.dump_stats(ifindex)
    assert sorted(t.ident for t in terse) == sorted(full)
    assert len(full) == len(put) + len(counted)
    for t in terse:
        same_filter(t, full[t.ident])
    by_ident = {t.ident: t for t in terse}
    for f in counted:  # the traffic: h * 3 frames to port h, counted from the IP header
        h = f.handle
        assert (by_ident[f.ident].packets, by_ident[f.ident].bytes) == (h * 3, h * 3 * 38)
    # one chain, one priority
    assert sorted(tc.dump_stats(ifindex, chain=3)) == sorted(t for t in terse if t.chain == 3)
    assert sorted(tc.dump_stats(ifindex, 0, 2)) == sorted(t for t in terse if t.prio == 2)
    assert tc.dump_stats(ifindex, 7) == []


def test_a_u32_filter_stops_the_terse_dump_but_not_one_priority(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    first = FlowerFilter(ifindex, prio=5, handle=1, flags=SKIP_HW, actions=(Gact.drop(),),
                         cookie=b"one")
    later = FlowerFilter(ifindex, prio=6, handle=1, chain=2, flags=SKIP_HW,
                         actions=(Gact.drop(),), cookie=b"two")
    tc.add(first)
    ns.tc("filter", "add", "dev", "vt0", "ingress", "prio", "65535", "protocol", "all",
          "u32", "match", "u32", "0", "0", "action", "drop")
    tc.add(later)  # chain 2 is walked after chain 0, so after the u32 filter
    with pytest.raises(OffloadError) as err:
        tc.dump_stats(ifindex)
    assert err.value.errno == errno.EMSGSIZE and err.value.context["device"] == "vt0"
    full = {d.filter.ident: d for d in tc.dump(ifindex)}
    for f in (first, later):
        (t,) = tc.dump_stats(ifindex, f.chain, f.prio)
        same_filter(t, full[f.ident])
