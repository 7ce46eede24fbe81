#!/usr/bin/env python3
"""Install and dump rates of tc flower filters: flowpath next to ``tc``.

Run as root where the kernel has cls_flower (the kernel tier's VM):

    bench/run_in_vm.sh -- .venv/bin/python bench/tc_install.py --sizes 1000,10000

For each N, N distinct megaflows (UDP to 10.x.y.z, exact ipv4_dst and tp_dst,
one mask -> one tc priority, action output to a second veth) are put on a
veth in a fresh network namespace, policy skip_hw, four ways, each in its
own fresh namespace:

* ``put``      -- ``OffloadDatapath.put`` of each megaflow (translation,
                 bookkeeping, one netlink round trip per flow);
* ``put_many`` -- ``OffloadDatapath.put_many`` of all of them (the same
                 translation and bookkeeping, one pipelined tc batch);
* ``install``  -- ``to_flower`` of every megaflow, then one batched
                 ``TcNetlink.install`` (translation time shown apart);
* ``tc -batch``-- ``tc -n NS -batch FILE`` with the same filters, the file
                 written from the very FlowerFilter values (not timed);
* dumps with counters: ``OffloadDatapath.dump`` (a terse dump joined with
  the flows it holds, back to DpFlow), ``TcNetlink.dump_stats`` (terse
  receive + decode), ``TcNetlink.dump`` (full receive + decode), next to
  ``tc -s filter show dev X ingress`` (the issue's yardstick) and
  ``tc -s -brief filter show dev X ingress`` (terse against terse), output
  to /dev/null, all of the same filters in the same namespace.

``--only install`` times the installs alone (no dump rows); ``--repeat R``
runs every way R times, interleaved, and keeps each one's best time.
``--only dump`` skips the install comparison: it installs with
``TcNetlink.install``, lets an ``OffloadDatapath`` ``adopt`` the filters and
times only the dumps (best of ``--repeat``; the datapath's first dump apart,
as later ones give back the values of flows whose counters did not move).

Ratio = tc time / our time: >= 1.0 means flowpath is at least as fast.
Times are wall-clock (time.perf_counter), one run each; the VM is TCG, so
compare ratios, not absolute figures.  ``--profile`` prints a cProfile
summary of the ``put`` path for the first N.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import ipaddress
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpif.actions import Output  # noqa: E402
from dpif.flow import DpFlow, FlowSpec, Ufid  # noqa: E402
from dpif.match import Match  # noqa: E402
from offload import tc_nla as N  # noqa: E402
from offload import tc_values as V  # noqa: E402
from offload.datapath import OffloadDatapath, Policy  # noqa: E402
from offload.tc_flower import NotOffloadable, PortInfo, to_flower  # noqa: E402
from offload.tc_netlink import TcNetlink  # noqa: E402
from swpath.datapath import SwDatapath  # noqa: E402

T = TypeVar("T")


def sh(*argv: str, stdout: int | None = subprocess.DEVNULL) -> None:
    subprocess.run(list(argv), check=True, stdout=stdout, stdin=subprocess.DEVNULL)


@contextmanager
def fresh_ns(tag: str) -> Iterator[str]:
    """A fresh netns with veths bp0 <-> bp1 (both ends inside), ingress on bp0
    left to the caller.  Deleted afterwards."""
    ns = f"fpbench-{tag}-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "bp0", "type", "veth", "peer", "name", "bp1")
        sh("ip", "-n", ns, "link", "set", "bp0", "up")
        sh("ip", "-n", ns, "link", "set", "bp1", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], stdin=subprocess.DEVNULL)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def megaflows(n: int) -> list[FlowSpec]:
    out = []
    for i in range(n):
        m = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ip_proto=17,
                        ipv4_dst=0x0A000000 + (i >> 4), tp_dst=1000 + (i & 15), ip_frag=(0, 3))
        out.append(FlowSpec(m, (Output(2),), Ufid(0x5EED0000_00000000_00000000_00000000 + i)))
    return out


# --- tc batch text from FlowerFilter values ------------------------------------------

_KEY_TEXT = {
    "TCA_FLOWER_KEY_ETH_TYPE": None,  # said by "protocol"
    # tc reads a numeric ip_proto as hex: use the names
    "TCA_FLOWER_KEY_IP_PROTO": lambda v: "ip_proto " + {1: "icmp", 6: "tcp", 17: "udp",
                                                        132: "sctp", 58: "icmpv6"}[v],
    "TCA_FLOWER_KEY_IPV4_DST": lambda v: f"dst_ip {v}",
    "TCA_FLOWER_KEY_UDP_DST": lambda v: f"dst_port {v}",
    "TCA_FLOWER_KEY_TCP_DST": lambda v: f"dst_port {v}",
}


def tc_line(f: V.FlowerFilter, dev: str, ifname: Callable[[int], str]) -> str:
    """One ``tc -batch`` line for ``f`` (the subset of keys/actions this bench uses)."""
    keys = dict(f.keys)
    words = [f"filter add dev {dev} ingress prio {f.prio} handle {f.handle} "
             f"protocol {f.protocol:#06x} chain {f.chain} flower"]
    if f.flags & N.TCA_CLS_FLAGS_SKIP_HW:
        words.append("skip_hw")
    for attr, value in keys.items():
        if attr.endswith("_MASK"):
            continue
        mask = keys.get(attr + "_MASK")
        if attr == "TCA_FLOWER_KEY_FLAGS":
            assert value == 0 and mask == N.TCA_FLOWER_KEY_FLAGS_IS_FRAGMENT, (value, mask)
            words.append("ip_flags nofrag")
            continue
        text = _KEY_TEXT[attr]
        if text is None:
            continue
        w = text(value)
        if mask is not None and mask != V._full_mask(attr + "_MASK"):
            if isinstance(mask, str):
                w += "/" + str(ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen)
            else:
                w += f"/{mask:#x}"
        words.append(w)
    for i, act in enumerate(f.actions):
        assert isinstance(act, V.Mirred) and act.eaction == N.TCA_EGRESS_REDIR, act
        words.append(f"action mirred egress redirect dev {ifname(act.ifindex)}")
        if i == 0 and f.cookie:
            words.append(f"cookie {f.cookie.hex()}")
    return " ".join(words)


# --- the runs ------------------------------------------------------------------------


def run_put(specs: list[FlowSpec], profile: bool, dumps: bool = True) -> dict[str, float]:
    res: dict[str, float] = {}
    with fresh_ns("put") as ns:
        tc = TcNetlink(netns=ns)
        dp = OffloadDatapath(tc, SwDatapath(flow_limit=len(specs) + 1), policy=Policy.SKIP_HW,
                             flow_limit=len(specs) + 1)
        dp.add_port(1, "bp0")
        dp.add_port(2, "bp1")

        def put_all() -> None:
            for s in specs:
                dp.put(s)
        if profile:
            prof = cProfile.Profile()
            res["put"], _ = timed(lambda: prof.runcall(put_all))
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        else:
            res["put"], _ = timed(put_all)
        if dumps:
            flows = dp.dump()
            res["dp.dump"], got = timed(lambda: list(flows))
            assert len(got) == len(specs) and all(f.placement.dp == "tc" for f in got)
            res["tc show(put)"], _ = timed(lambda: sh(
                "tc", "-n", ns, "-s", "filter", "show", "dev", "bp0", "ingress"))
        else:
            assert len(tc.dump(dp.ports[1].ifindex)) == len(specs)
        tc.close()
    return res


def run_put_many(specs: list[FlowSpec], dumps: bool = True) -> dict[str, float]:
    res: dict[str, float] = {}
    with fresh_ns("pm") as ns:
        tc = TcNetlink(netns=ns)
        dp = OffloadDatapath(tc, SwDatapath(flow_limit=len(specs) + 1), policy=Policy.SKIP_HW,
                             flow_limit=len(specs) + 1)
        dp.add_port(1, "bp0")
        dp.add_port(2, "bp1")
        res["put_many"], out = timed(lambda: dp.put_many(specs))
        bad = [o for o in out if not isinstance(o, DpFlow) or o.placement.dp != "tc"]
        assert not bad, [str(o) for o in bad[:3]]
        if dumps:
            res["dp.dump(pm)"], got = timed(lambda: list(dp.dump()))
            assert len(got) == len(specs)
        else:
            assert len(tc.dump(dp.ports[1].ifindex)) == len(specs)
        tc.close()
    return res


def translate(specs: list[FlowSpec], ports: dict[int, PortInfo]) -> list[V.FlowerFilter]:
    """``to_flower`` of every megaflow, handles 1.. in one priority (the pure
    translation, as a reference: the datapath itself uses its templates)."""
    out = []
    for h, s in enumerate(specs, start=1):
        f = to_flower(s.match, s.actions, s.ufid, ports=ports, prio=0x0800, handle=h,
                      flags=N.TCA_CLS_FLAGS_SKIP_HW)
        assert not isinstance(f, NotOffloadable), f
        out.append(f)
    return out


def run_install(specs: list[FlowSpec], dumps: bool = True
                ) -> tuple[dict[str, float], list[V.FlowerFilter]]:
    res: dict[str, float] = {}
    with fresh_ns("inst") as ns:
        tc = TcNetlink(netns=ns)
        ports = {1: PortInfo(1, tc.ifindex("bp0"), "bp0"), 2: PortInfo(2, tc.ifindex("bp1"), "bp1")}
        tc.ensure_ingress(ports[1].ifindex)

        res["translate"], filters = timed(lambda: translate(specs, ports))
        res["install"], outcomes = timed(lambda: tc.install(filters))
        assert outcomes == [None] * len(filters), [str(o) for o in outcomes if o][:3]
        if dumps:
            res.update(time_dumps(ns, tc, ports[1].ifindex, len(filters)))
        else:
            assert len(tc.dump(ports[1].ifindex)) == len(filters)
        tc.close()
    return res, filters


def time_dumps(ns: str, tc: TcNetlink, ifindex: int, n: int, dp: OffloadDatapath | None = None,
               repeat: int = 1) -> dict[str, float]:
    """Best-of-``repeat`` times of every dump of the ``n`` filters on bp0's
    ingress: ours (the datapath's if ``dp``) and tc's two yardsticks."""
    runs: dict[str, Callable[[], object]] = {
        "tc show": lambda: sh("tc", "-n", ns, "-s", "filter", "show", "dev", "bp0", "ingress"),
        "tc brief": lambda: sh("tc", "-n", ns, "-s", "-brief", "filter", "show", "dev", "bp0",
                               "ingress"),
        "tc.dump_stats": lambda: tc.dump_stats(ifindex),
        "tc.dump": lambda: tc.dump(ifindex),
    }
    if dp is not None:
        runs["dp.dump"] = lambda: list(dp.dump())
    res: dict[str, float] = {}
    for i in range(repeat):
        for name, fn in runs.items():
            took, out = timed(fn)
            if name == "dp.dump" and i:  # it gives back the values of flows with no news
                name = "dp.dump again"
            res[name] = min(took, res.get(name, took))
            if isinstance(out, list):
                assert len(out) == n, (name, len(out))
    return res


def run_dump_only(specs: list[FlowSpec], repeat: int) -> dict[str, float]:
    """Install with ``TcNetlink.install``, adopt into an ``OffloadDatapath``,
    time the dumps."""
    res: dict[str, float] = {}
    with fresh_ns("dump") as ns:
        tc = TcNetlink(netns=ns)
        dp = OffloadDatapath(tc, SwDatapath(flow_limit=len(specs) + 1), policy=Policy.SKIP_HW,
                             flow_limit=len(specs) + 1)
        ports = {1: dp.add_port(1, "bp0"), 2: dp.add_port(2, "bp1")}
        filters = translate(specs, ports)
        res["install"], outcomes = timed(lambda: tc.install(filters))
        assert outcomes == [None] * len(filters), [str(o) for o in outcomes if o][:3]
        res["adopt"], adopted = timed(dp.adopt)
        assert adopted == len(filters)
        res.update(time_dumps(ns, tc, ports[1].ifindex, len(filters), dp, repeat))
        tc.close()
    return res


def run_tc_batch(filters: list[V.FlowerFilter], dumps: bool = True) -> dict[str, float]:
    res: dict[str, float] = {}
    with fresh_ns("tcb") as ns:
        sh("tc", "-n", ns, "qdisc", "add", "dev", "bp0", "ingress")
        tc = TcNetlink(netns=ns)  # only to map the new namespace's ifindexes
        names = {tc.ifindex("bp0"): "bp0", tc.ifindex("bp1"): "bp1"}
        tc.close()
        # the filters were built in another namespace: same names, maybe other ifindexes
        first = filters[0]
        src_out = next(a.ifindex for a in first.actions if isinstance(a, V.Mirred))
        lines = [tc_line(f, "bp0", lambda ix: "bp1" if ix == src_out else names[ix])
                 for f in filters]
        with tempfile.NamedTemporaryFile("w", suffix=".tc", delete=False) as fh:
            fh.write("\n".join(lines) + "\n")
            path = fh.name
        try:
            res["tc -batch"], _ = timed(lambda: sh("tc", "-n", ns, "-batch", path))
        finally:
            os.unlink(path)
        if dumps:
            res["tc show(tcb)"], _ = timed(lambda: sh("tc", "-n", ns, "-s", "filter", "show",
                                                      "dev", "bp0", "ingress"))
        out = subprocess.run(["tc", "-n", ns, "filter", "show", "dev", "bp0", "ingress"],
                             capture_output=True, text=True, check=True).stdout
        assert out.count("cookie") == len(filters), "tc -batch did not install every filter"
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-put-above", type=int, default=10**9,
                    help="skip the one-by-one put path above this N (it is the slow one)")
    ap.add_argument("--log", action="store_true", help="keep flowpath's per-flow info logs")
    ap.add_argument("--only", choices=("all", "install", "dump"), default="all",
                    help="install: no dump rows; dump: install quickly, time only the dumps")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every way this many times, interleaved, and keep each one's best")
    args = ap.parse_args()
    dumps = args.only == "all"
    if not args.log:  # a line per flow on a (virtual) console is a benchmark of the console
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# tc_install: Linux {platform.release()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    if args.only == "dump":
        return dump_only(sizes, args.repeat)
    for i, n in enumerate(sizes):
        specs = megaflows(n)
        r: dict[str, float] = {}
        for rep in range(args.repeat):  # the ways interleaved; the best time of each kept
            got: dict[str, float] = {}
            ri, filters = run_install(specs, dumps=dumps)
            got.update(ri)
            got.update(run_tc_batch(filters, dumps=dumps))
            got.update(run_put_many(specs, dumps=dumps))
            if n <= args.no_put_above:
                got.update(run_put(specs, args.profile and i == 0 and rep == 0, dumps=dumps))
            print(f"# N={n}: " + ", ".join(f"{k} {v:.2f}s" for k, v in got.items()), flush=True)
            r = {k: min(v, r.get(k, v)) for k, v in got.items()}
        rows.append((n, r))

    def row(n: int, what: str, ours: float | None, theirs: float, vs: str) -> str:
        if ours is None:
            return f"| {n} | {what} | (not run) | {vs} {theirs:.2f} | |"
        return f"| {n} | {what} | {ours:.2f} | {vs} {theirs:.2f} | {theirs / ours:.2f} |"

    print("\n| N | flowpath | flowpath s | tc s | ratio (tc/ours) |")
    print("|--:|---|--:|--:|--:|")
    for n, r in rows:
        print(row(n, "OffloadDatapath.put (one by one)", r.get("put"), r["tc -batch"], "tc -batch"))
        print(row(n, "OffloadDatapath.put_many (batched)", r["put_many"], r["tc -batch"],
                  "tc -batch"))
        print(row(n, "to_flower + TcNetlink.install (batched)", r["translate"] + r["install"],
                  r["tc -batch"], "tc -batch"))
        print(row(n, "  of which TcNetlink.install", r["install"], r["tc -batch"], "tc -batch"))
        if dumps:
            dump_rows(n, r, row)
    return 0


def dump_rows(n: int, r: dict[str, float], row: Callable[..., str]) -> None:
    """The dump rows: ours next to both of tc's yardsticks, same filters."""
    ours = [("OffloadDatapath.dump (terse)", r.get("dp.dump", r.get("dp.dump(pm)"))),
            ("TcNetlink.dump_stats (terse)", r["tc.dump_stats"]),
            ("TcNetlink.dump (full)", r["tc.dump"])]
    if "dp.dump again" in r:
        ours.insert(1, ("OffloadDatapath.dump again (terse, no flow changed)",
                        r["dp.dump again"]))
    for what, took in ours:
        print(row(n, what, took, r["tc show"], "tc -s show"))
        if "full" not in what:
            print(row(n, what, took, r["tc brief"], "tc -s -brief show"))


def dump_only(sizes: list[int], repeat: int) -> int:
    rows = []
    for n in sizes:
        r = run_dump_only(megaflows(n), repeat)
        print(f"# N={n}: " + ", ".join(f"{k} {v:.2f}s" for k, v in r.items()), flush=True)
        rows.append((n, r))

    def row(n: int, what: str, ours: float, theirs: float, vs: str) -> str:
        return f"| {n} | {what} | {ours:.2f} | {vs} {theirs:.2f} | {theirs / ours:.2f} |"

    print("\n| N | flowpath | flowpath s | tc s | ratio (tc/ours) |")
    print("|--:|---|--:|--:|--:|")
    for n, r in rows:
        dump_rows(n, r, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
