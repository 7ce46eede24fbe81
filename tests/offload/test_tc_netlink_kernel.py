"""Kernel tier: TcNetlink against real tc flower on veth / netdevsim.

Each test builds a fresh netns (tests/kernel/netns.py fixtures), installs
with our netlink layer and reads back twice: with our decoder (the value must
equal what we put) and with ``tc -s -j filter show`` (an independent oracle:
iproute2's own flower/action printers).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from dpif.errors import OffloadError
from offload import tc_nla as N
from offload.tc_netlink import TcNetlink
from offload.tc_op import TcOp
from offload.tc_values import FlowerFilter, Gact, Mirred
from tests.offload.tc_cases import ACTION_CASES, KEY_CASES, K

pytestmark = pytest.mark.kernel
SKIP_HW = N.TCA_CLS_FLAGS_SKIP_HW

# Our attribute -> the name iproute2 6.1 prints in "keys".  Masks are part of
# the printed value ("a/b" or "<name>_mask").  ENC_UDP_SRC_PORT is not printed
# by tc 6.1 (our decoder still sees it come back).
ORACLE_KEYS = {
    "ETH_DST": "dst_mac", "ETH_SRC": "src_mac", "ETH_TYPE": "eth_type", "IP_PROTO": "ip_proto",
    "IPV4_SRC": "src_ip", "IPV4_DST": "dst_ip", "IPV6_SRC": "src_ip", "IPV6_DST": "dst_ip",
    "TCP_SRC": "src_port", "TCP_DST": "dst_port", "UDP_SRC": "src_port", "UDP_DST": "dst_port",
    "SCTP_SRC": "src_port", "SCTP_DST": "dst_port", "VLAN_ID": "vlan_id", "VLAN_PRIO": "vlan_prio",
    "VLAN_ETH_TYPE": "vlan_ethtype", "CVLAN_ID": "cvlan_id", "CVLAN_PRIO": "cvlan_prio",
    "CVLAN_ETH_TYPE": "cvlan_ethtype", "MPLS_LABEL": "mpls_label", "MPLS_TC": "mpls_tc",
    "MPLS_BOS": "mpls_bos", "MPLS_TTL": "mpls_ttl", "ARP_SIP": "arp_sip", "ARP_TIP": "arp_tip",
    "ARP_OP": "arp_op", "ARP_SHA": "arp_sha", "ARP_THA": "arp_tha", "IP_TOS": "ip_tos",
    "IP_TTL": "ip_ttl", "TCP_FLAGS": "tcp_flags", "ICMPV4_TYPE": "icmp_type",
    "ICMPV4_CODE": "icmp_code", "ICMPV6_TYPE": "icmp_type", "ICMPV6_CODE": "icmp_code",
    "ENC_KEY_ID": "enc_key_id", "ENC_IPV4_SRC": "enc_src_ip", "ENC_IPV4_DST": "enc_dst_ip",
    "ENC_IPV6_SRC": "enc_src_ip", "ENC_IPV6_DST": "enc_dst_ip", "ENC_UDP_DST_PORT": "enc_dst_port",
    "ENC_IP_TOS": "enc_tos", "ENC_IP_TTL": "enc_ttl", "CT_STATE": "ct_state", "CT_ZONE": "ct_zone",
    "CT_MARK": "ct_mark", "FLAGS": "ip_flags",
}
NAMES = {0x0800: {"ipv4", "ip"}, 0x86DD: {"ipv6"}, 0x0806: {"arp"}, 0x8100: {"802.1Q"},
         0x88A8: {"802.1ad"}, 6: {"tcp"}, 17: {"udp"}, 132: {"sctp"}, 1: {"icmp", "request"},
         58: {"icmpv6"}}


def spellings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    return {str(value), f"{value:x}", f"0x{value:x}"} | NAMES.get(value, set())


def oracle_mismatches(f: FlowerFilter, tc_entry: dict[str, Any]) -> list[str]:
    """What tc -j shows that disagrees with (or lacks) the keys we set."""
    shown = tc_entry["options"].get("keys", {})
    bad = []
    for attr, value in f.keys:
        short = attr.removeprefix(K)
        if short not in ORACLE_KEYS:
            continue  # masks, ENC_UDP_SRC_PORT
        name = ORACLE_KEYS[short]
        if name not in shown:
            bad.append(f"{short}: tc shows no {name}")
        elif short == "ETH_TYPE" and f.protocol in N.VLAN_TPIDS:
            continue  # tc prints the inner type here; the TPID is the protocol
        elif isinstance(shown[name], (dict, bool)) or short == "CT_STATE":
            continue  # ip_flags / ct_state are symbolic: presence is the check
        elif str(shown[name]).split("/")[0] not in spellings(value):
            bad.append(f"{short}: tc shows {name}={shown[name]!r}, we set {value!r}")
    return bad


@pytest.fixture
def dev(netns: Any, veth_factory: Any, tc_flower: None) -> Any:
    """(netns, TcNetlink, ifindex of vt0, ifindex of vt1) with an ingress qdisc on vt0."""
    veth_factory(netns, "vt0", netns, "vt1")
    with TcNetlink(netns=netns.name) as tc:
        ifindex = tc.ifindex("vt0")
        assert tc.ensure_ingress(ifindex) is True
        yield netns, tc, ifindex, tc.ifindex("vt1")


def tc_show(ns: Any, devname: str = "vt0") -> dict[tuple[int, int, int], dict[str, Any]]:
    return {(e.get("chain", 0), e["pref"], e["options"]["handle"]): e
            for e in ns.tc_filters(devname)}


def test_every_key_round_trips(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    put = [FlowerFilter(ifindex, prio=n, handle=n, protocol=proto, keys=keys, flags=SKIP_HW,
                        actions=(Gact.drop(),), cookie=n.to_bytes(16, "big"))
           for n, (proto, keys) in enumerate(KEY_CASES.values(), start=1)]
    assert tc.install(put) == [None] * len(put)
    ours = {d.filter.ident: d for d in tc.dump(ifindex)}
    shown = tc_show(ns)
    problems = []
    for name, f in zip(KEY_CASES, put):
        got = ours.get(f.ident)
        if got is None or got.filter != f:
            problems.append(f"{name}: decoded {got and got.filter} != put {f}")
            continue
        assert got.not_in_hw and not got.in_hw and got.filter.flags == SKIP_HW
        entry = shown[(0, f.prio, f.handle)]
        problems += [f"{name}: {p}" for p in oracle_mismatches(f, entry)]
        assert entry["options"]["actions"][0]["cookie"] == f.cookie.hex()
    assert not problems, "\n".join(problems)


def test_every_action_round_trips(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    put = [FlowerFilter(ifindex, prio=n, handle=n, chain=3, flags=SKIP_HW, actions=build(peer))
           for n, build in enumerate(ACTION_CASES.values(), start=1)]
    assert tc.install(put) == [None] * len(put)
    ours = {d.filter.ident: d for d in tc.dump(ifindex)}
    shown = tc_show(ns)
    for name, f in zip(ACTION_CASES, put):
        got = ours[f.ident]
        assert got.filter == f, name
        tc_acts = shown[(3, f.prio, f.handle)]["options"]["actions"]
        assert [a["kind"] for a in tc_acts] == [a.kind for a in f.actions], name
        for ours_act, theirs in zip(f.actions, tc_acts):
            if isinstance(ours_act, Mirred):
                assert theirs["to_dev"] == "vt1"
                assert theirs["direction"] == ("egress" if ours_act.eaction <= 2 else "ingress")
            for field_, tc_name in (("vid", "id"), ("prio", "priority"), ("key_id", "key_id"),
                                    ("dst_port", "dst_port"), ("rate", "rate"),
                                    ("group", "group"), ("trunc", "trunc_size"),
                                    ("mark", "mark")):
                if getattr(ours_act, field_, None) is not None and tc_name in theirs:
                    assert theirs[tc_name] == getattr(ours_act, field_), (name, field_)
            if hasattr(ours_act, "keys") and ours_act.kind == "pedit":
                assert theirs["nkeys"] == len(ours_act.keys)
                assert [(k["offset"], int(k["val"], 16), int(k["mask"], 16)) for k in theirs["keys"]] \
                    == [(k.offset, k.val, k.mask) for k in ours_act.keys]


def test_delete_one_leaves_siblings(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    fs = [FlowerFilter(ifindex, prio=p, handle=h, protocol=0x0800, flags=SKIP_HW,
                       keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17, K + "UDP_DST": h},
                       actions=(Gact.drop(),))
          for p in (10, 20) for h in (1, 2, 3)]
    assert tc.install(fs) == [None] * 6
    tc.delete(fs[1])  # prio 10, handle 2
    left = {d.filter.ident for d in tc.dump(ifindex)}
    assert left == {f.ident for f in fs} - {fs[1].ident}
    assert set(tc_show(ns)) == {(0, f.prio, f.handle) for f in fs if f is not fs[1]}
    with pytest.raises(OffloadError) as err:
        tc.delete(fs[1])
    assert err.value.errno == errno.ENOENT and err.value.context["handle"] == 2


def test_add_is_exclusive_replace_is_not(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    f = FlowerFilter(ifindex, prio=5, handle=9, flags=SKIP_HW, actions=(Gact.drop(),))
    tc.add(f)
    with pytest.raises(OffloadError) as err:
        tc.add(f)
    assert err.value.errno == errno.EEXIST
    assert err.value.context["device"] == "vt0" and err.value.context["prio"] == 5
    g = FlowerFilter(ifindex, prio=5, handle=9, flags=SKIP_HW, actions=(Gact.pass_(),))
    tc.replace(g)
    (got,) = tc.dump(ifindex)
    assert got.filter == g


def test_batch_reports_each_outcome(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    # distinct matches: flower refuses a second filter with the same key+mask
    # in one prio (EEXIST, no extack)
    good = [FlowerFilter(ifindex, prio=1, handle=h, flags=SKIP_HW, protocol=0x0800,
                         keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17, K + "UDP_DST": h},
                         actions=(Gact.drop(),)) for h in (1, 2, 3)]
    bad = FlowerFilter(ifindex, prio=1, handle=4, flags=SKIP_HW, protocol=0x0800,
                       keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17, K + "UDP_DST": 4},
                       actions=(Mirred(99999),))
    out = tc.apply([TcOp("add", good[0]), TcOp("add", bad), TcOp("add", good[1]),
                    TcOp("add", good[0]), TcOp("add", good[2])])
    assert out[0] is None and out[2] is None and out[4] is None
    assert isinstance(out[1], OffloadError) and out[1].context["handle"] == 4
    assert out[1].errno == errno.ENODEV
    assert isinstance(out[3], OffloadError) and out[3].errno == errno.EEXIST
    assert {d.filter.handle for d in tc.dump(ifindex)} == {1, 2, 3}


def test_qdisc_ownership(netns: Any, veth_factory: Any, tc_flower: None) -> None:
    veth_factory(netns, "vq0", netns, "vq1")
    netns.tc("qdisc", "add", "dev", "vq1", "ingress")  # somebody else's
    with TcNetlink(netns=netns.name) as tc:
        mine, theirs = tc.ifindex("vq0"), tc.ifindex("vq1")
        assert tc.ensure_ingress(theirs) is False
        assert tc.release_ingress(theirs) is False
        assert tc.ensure_ingress(mine) is True and tc.ensure_ingress(mine) is False
        assert tc.release_ingress(mine) is True
        assert not tc.has_ingress(mine) and tc.has_ingress(theirs)


def test_skip_sw_on_veth_is_refused_like_tc_says(dev: Any) -> None:
    ns, tc, ifindex, peer = dev
    f = FlowerFilter(ifindex, prio=9, handle=1, flags=N.TCA_CLS_FLAGS_SKIP_SW,
                     actions=(Gact.drop(),))
    with pytest.raises(OffloadError) as err:
        tc.add(f)
    oracle = ns.tc("filter", "add", "dev", "vt0", "ingress", "prio", "9", "handle", "1",
                   "flower", "skip_sw", "action", "drop", check=False)
    assert oracle.returncode != 0
    assert err.value.errno == errno.EOPNOTSUPP
    assert "Operation not supported" in oracle.stderr
    assert err.value.context["device"] == "vt0" and err.value.context["chain"] == 0
    # veth has no tc offload at all: the kernel gives no extack text, and neither does tc
    assert (err.value.extack or "") in oracle.stderr


def test_netdevsim_refuses_skip_sw_with_extack(netdevsim: Any, tc_flower: None) -> None:
    rep = netdevsim.representors["pf0vf0"]
    with TcNetlink(netns=netdevsim.ns.name) as tc:
        ifindex = tc.ifindex(rep)
        tc.ensure_ingress(ifindex)
        hw = FlowerFilter(ifindex, prio=1, handle=1, flags=N.TCA_CLS_FLAGS_SKIP_SW,
                          actions=(Gact.drop(),))
        with pytest.raises(OffloadError) as err:
            tc.add(hw)
        assert err.value.extack.rstrip(".") == "netdevsim: only offload of BPF classifiers supported"
        assert rep in str(err.value) and err.value.context["prio"] == 1
        sw = FlowerFilter(ifindex, prio=2, handle=1, actions=(Gact.drop(),))
        tc.add(sw)
        (got,) = tc.dump(ifindex)
        assert got.filter == sw and got.not_in_hw and not got.in_hw and got.in_hw_count == 0


def test_redirect_counts_exactly_n_packets(netns_factory: Any, veth_factory: Any,
                                           tc_flower: None) -> None:
    """sender --va/vb--> [flower udp dport 9999 -> mirred redirect] --vc/vd--> sink."""
    n = 25
    src, mid, sink = netns_factory("src"), netns_factory("mid"), netns_factory("sink")
    pair = veth_factory(src, "va", mid, "vb", addr_a="10.77.0.1/24", addr_b="10.77.0.2/24")
    veth_factory(mid, "vc", sink, "vd")
    with TcNetlink(netns=mid.name) as tc:
        vb, vc = tc.ifindex("vb"), tc.ifindex("vc")
        tc.ensure_ingress(vb)
        f = FlowerFilter(vb, prio=1, handle=1, protocol=0x0800, flags=SKIP_HW,
                         keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17, K + "UDP_DST": 9999},
                         actions=(Mirred(vc),), cookie=b"\x42" * 16)
        tc.add(f)
        rx_before = sink.json("ip", "-s", "-j", "link", "show", "dev", "vd")[0]["stats64"]["rx"]["packets"]
        # static neighbour: no ARP, and no ping binary needed in the VM
        src.ip("neigh", "replace", "10.77.0.2", "lladdr", pair.mac_b, "dev", "va")
        src.run("python3", "-c",
                "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for i in range({n}): s.sendto(b'x'*100, ('10.77.0.2', 9999))")
        time.sleep(0.5)
        (got,) = tc.dump(vb)
        assert got.filter == f
        assert got.stats.packets == n and got.stats.hw_packets == 0
        assert got.stats.bytes == n * (20 + 8 + 100)  # tc ingress counts from the L3 header
        assert got.stats.idle_ms is not None and got.stats.idle_ms < 5000
        links = sink.json("ip", "-s", "-j", "link", "show", "dev", "vd")
        assert links[0]["stats64"]["rx"]["packets"] - rx_before == n
        shown = mid.tc_filters("vb")[0]["options"]["actions"][0]["stats"]
        assert shown["packets"] == n


def test_batched_install_is_faster(dev: Any, capsys: Any) -> None:
    """Figures, not a timed assertion: batched vs one-at-a-time install."""
    ns, tc, ifindex, peer = dev
    count = 300

    def filters(prio: int) -> list[FlowerFilter]:
        return [FlowerFilter(ifindex, prio=prio, handle=h, protocol=0x0800, flags=SKIP_HW,
                             keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 6, K + "TCP_DST": h},
                             actions=(Gact.drop(),), cookie=h.to_bytes(16, "big"))
                for h in range(1, count + 1)]

    one, batch = filters(1), filters(2)
    t0 = time.perf_counter()
    for f in one:
        tc.add(f)
    t1 = time.perf_counter()
    assert tc.install(batch) == [None] * count
    t2 = time.perf_counter()
    t3 = time.perf_counter()
    dumped = tc.dump(ifindex)
    t4 = time.perf_counter()
    assert len(dumped) == 2 * count
    with capsys.disabled():
        print(f"\n[tc_netlink] {count} filters: one-at-a-time {count / (t1 - t0):.0f}/s, "
              f"batched {count / (t2 - t1):.0f}/s ({(t1 - t0) / (t2 - t1):.1f}x); "
              f"dump {2 * count / (t4 - t3):.0f} filters/s")


def test_hand_decoder_matches_pyroute2_on_kernel_dumps(dev: Any) -> None:
    """tc_decode and tc_dumpfast (the dump path) against pyroute2's parser on
    what 6.1 really dumps: every key group, every action, stats, timestamps, in_hw_count."""
    from offload import tc_decode as D
    from offload import tc_dumpfast as F
    from offload import tc_dumpshape as S
    from offload.tc_values import decode_filter

    ns, tc, ifindex, peer = dev
    put = [FlowerFilter(ifindex, prio=n, handle=n, protocol=proto, keys=keys, flags=SKIP_HW,
                        actions=(Gact.drop(),), cookie=n.to_bytes(16, "big"))
           for n, (proto, keys) in enumerate(KEY_CASES.values(), start=1)]
    put += [FlowerFilter(ifindex, prio=100 + n, handle=n, chain=3, actions=build(peer),
                         cookie=b"\x07" * (n % 17))
            for n, build in enumerate(ACTION_CASES.values(), start=1)]
    assert tc.install(put) == [None] * len(put)
    seen = seen_fast = 0
    for data, start, end in tc.dump_messages(ifindex):
        ref = N.tcmsg_flower(data[start:end])
        ref.decode()
        ours = D.decode_message(data, start, end)
        want = decode_filter(ref)
        assert ours == want
        assert F.decode_message(data, start, end) == want
        if want is not None:  # the kernel's shape: the fast path itself, no fallback
            assert F._decode(data, start, end) == want
            seen_fast += 1
            assert S.decode_message(data, start, end) == want  # learns the shape
            assert S.decode_message(data, start, end) == want  # reads by it
        seen += ours is not None
    assert seen == seen_fast == len(put)
    assert {d.filter for d in tc.dump(ifindex)} == set(put)


def test_pipelined_batch_matches_refusals_across_chunks(netns: Any, veth_factory: Any,
                                                         tc_flower: None) -> None:
    """7 chunks of 16: every refusal is matched to its request, with the
    kernel's extack."""
    veth_factory(netns, "vp0", netns, "vp1")
    with TcNetlink(netns=netns.name, batch_size=16) as tc:
        ifindex = tc.ifindex("vp0")
        tc.ensure_ingress(ifindex)
        ops = [TcOp("add", FlowerFilter(
            ifindex, prio=1, handle=h, flags=SKIP_HW, protocol=0x0800,
            keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17, K + "UDP_DST": h},
            actions=(Mirred(99999 if h % 3 == 0 else tc.ifindex("vp1")),)))
            for h in range(1, 101)]
        out = tc.apply(iter(ops))
        for h, o in enumerate(out, start=1):
            if h % 3 == 0:
                assert isinstance(o, OffloadError) and o.errno == errno.ENODEV, (h, o)
                assert o.context["handle"] == h
            else:
                assert o is None, (h, o)
        assert {d.filter.handle for d in tc.dump(ifindex)} == {h for h in range(1, 101) if h % 3}
        # a whole chunk refused (more refusals than one chunk holds) keeps every outcome,
        # each with the kernel's extack ("Filter already exists" for a taken handle)
        one = tc.apply([ops[0]])[0]  # the same refusal on its own: the kernel's words
        assert isinstance(one, OffloadError) and one.errno == errno.EEXIST and one.extack
        again = tc.apply(ops)
        assert all(isinstance(o, OffloadError) for o in again)
        assert [o.errno for o in again if isinstance(o, OffloadError)].count(errno.EEXIST) == 67
        assert [o.context["handle"] for o in again if isinstance(o, OffloadError)] == list(
            range(1, 101))
        assert all(o.extack == one.extack for o in again
                   if isinstance(o, OffloadError) and o.errno == errno.EEXIST)


def test_an_exception_from_the_ops_sends_nothing(netns: Any, veth_factory: Any,
                                                 tc_flower: None) -> None:
    """A generator of operations that raises mid-way: the exception
    propagates, nothing was sent, and the socket is in step afterwards."""
    veth_factory(netns, "vx0", netns, "vx1")
    with TcNetlink(netns=netns.name, batch_size=16) as tc:
        ifindex = tc.ifindex("vx0")
        tc.ensure_ingress(ifindex)

        def ops(n: int, fail_at: int | None) -> Iterator[TcOp]:
            for h in range(1, n + 1):
                if h == fail_at:
                    raise KeyError("translation bug")
                yield TcOp("add", FlowerFilter(
                    ifindex, prio=1, handle=h, flags=SKIP_HW, protocol=0x0800,
                    keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17, K + "UDP_DST": h},
                    actions=(Gact.drop(),)))
        with pytest.raises(KeyError, match="translation bug"):
            tc.apply(ops(100, fail_at=41))
        assert tc.dump(ifindex) == []
        assert tc.apply([]) == []
        assert tc.apply(ops(60, None)) == [None] * 60
        assert len(tc.dump(ifindex)) == 60


def test_get_reads_one_filter_as_the_dump_has_it(dev: Any) -> None:
    """get asks for one filter (RTM_GETTFILTER without NLM_F_DUMP): the same
    value as its entry in a dump; None for a handle, priority or protocol
    that is not there."""
    ns, tc, ifindex, peer = dev
    fs = [FlowerFilter(ifindex, prio=p, handle=h, chain=c, protocol=0x0800, flags=SKIP_HW,
                       keys={K + "ETH_TYPE": 0x0800, K + "IP_PROTO": 17, K + "UDP_DST": h},
                       actions=(Gact.drop(), Mirred(peer)), cookie=bytes([p, h, c]))
          for c in (0, 4) for p in (10, 20) for h in (1, 2)]
    assert tc.install(fs) == [None] * len(fs)
    dumped = {d.filter.ident: d for d in tc.dump(ifindex)}

    def aged(d: Any) -> Any:  # the ages (idle_ms) grow between two reads
        return replace(d, stats=replace(d.stats, idle_ms=None), action_stats=tuple(
            replace(s, idle_ms=None) for s in d.action_stats))
    for f in fs:
        got = tc.get(f)
        assert got is not None and aged(got) == aged(dumped[f.ident])
        assert got.stats.idle_ms >= dumped[f.ident].stats.idle_ms
    missing = [replace(fs[0], handle=9), replace(fs[0], prio=11), replace(fs[0], chain=5),
               replace(fs[0], protocol=0x86DD)]
    assert [tc.get(f) for f in missing] == [None] * len(missing)
