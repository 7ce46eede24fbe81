"""Micro-benchmark: per-filter encode time, pyroute2's encoder vs tc_wire.

    .venv/bin/python bench/tc_encode.py [--n 2000]

Encodes the shared tc test cases (every key group with an action, every
action case) and prints the mean time per filter for pyroute2's generic
``msg.encode()`` (from ``encode_filter``) and for
``tc_wire.encode_filter_bytes``, and their ratio.  Then, for the megaflows
of bench/tc_install.py (one mask, UDP, exact ipv4_dst + tp_dst), the time
per flow of the full path (``to_flower`` + ``encode_filter_bytes``) and of
a ``tc_template.FilterTemplate.build`` (filter and body, checked equal).
No kernel needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from offload import tc_nla as N  # noqa: E402
from offload.tc_values import FlowerFilter, Gact, encode_filter  # noqa: E402
from offload.tc_wire import encode_filter_bytes  # noqa: E402
from dpif.actions import Output  # noqa: E402
from dpif.flow import Ufid  # noqa: E402
from dpif.match import Match  # noqa: E402
from offload.tc_flower import PortInfo, to_flower  # noqa: E402
from offload.tc_template import compile_template  # noqa: E402
from offload.tc_wire import encode_filter_body  # noqa: E402
from tests.offload.tc_cases import ACTION_CASES, KEY_CASES  # noqa: E402

RTM_NEWTFILTER = 44
FLAGS = 0x605


def filters() -> list[FlowerFilter]:
    out = [FlowerFilter(ifindex=3, prio=10, handle=0x11, protocol=proto, keys=keys,
                        flags=N.TCA_CLS_FLAGS_SKIP_HW, actions=(Gact.drop(),),
                        cookie=b"\xab" * 16)
           for proto, keys in KEY_CASES.values()]
    out += [FlowerFilter(ifindex=3, prio=1, handle=1, actions=build(7), cookie=b"ufid")
            for build in ACTION_CASES.values()]
    return out


def pyroute2_bytes(f: FlowerFilter, seq: int) -> bytes:
    msg = encode_filter(f)
    msg["header"]["type"] = RTM_NEWTFILTER
    msg["header"]["flags"] = FLAGS
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def per_filter(fn: object, fs: list[FlowerFilter], n: int) -> float:
    work = [fs[i % len(fs)] for i in range(n)]
    t0 = time.perf_counter()
    for seq, f in enumerate(work):
        fn(f, seq)  # type: ignore[operator]
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    fs = filters()
    for seq, f in enumerate(fs):  # sanity: the same bytes
        assert encode_filter_bytes(f, RTM_NEWTFILTER, FLAGS, seq) == pyroute2_bytes(f, seq)
    slow = per_filter(pyroute2_bytes, fs, n)
    fast = per_filter(lambda f, seq: encode_filter_bytes(f, RTM_NEWTFILTER, FLAGS, seq), fs, n)
    print(f"filters: {len(fs)} shapes, {n} encodes each way")
    print(f"pyroute2 encode_filter + msg.encode: {slow * 1e6:8.1f} us/filter")
    print(f"tc_wire.encode_filter_bytes:         {fast * 1e6:8.1f} us/filter")
    print(f"ratio: {slow / fast:.1f}x")
    templates(n)


def templates(n: int) -> None:
    ports = {1: PortInfo(1, 3, "bp0"), 2: PortInfo(2, 4, "bp1")}
    acts = (Output(2),)
    ms = [Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ip_proto=17,
                      ipv4_dst=0x0A000000 + (i >> 4), tp_dst=1000 + (i & 15), ip_frag=(0, 3))
          for i in range(n)]

    def full(i: int) -> FlowerFilter:
        f = to_flower(ms[i], acts, Ufid(i), ports=ports, prio=0x800, handle=i + 1, flags=1)
        assert isinstance(f, FlowerFilter)
        return f
    t = compile_template(full(0), ms[0], acts)
    assert t is not None
    for i in (1, n - 1):  # sanity: the same filter and bytes
        f, body = t.build(ms[i].key, i + 1, Ufid(i).to_bytes())
        assert f == full(i) and bytes(body) == encode_filter_body(full(i))
    t0 = time.perf_counter()
    for i in range(n):
        encode_filter_bytes(full(i), RTM_NEWTFILTER, FLAGS, i)
    t1 = time.perf_counter()
    for i in range(n):
        t.build(ms[i].key, i + 1, Ufid(i).to_bytes())
    t2 = time.perf_counter()
    for i in range(n):  # what a put burst does: the bytes, the filter left unmade
        t.body_for(ms[i].key, i + 1, Ufid(i).to_bytes())
    t3 = time.perf_counter()
    print(f"megaflow -> filter + bytes, {n} flows of one mask:")
    print(f"to_flower + encode_filter_bytes:     {(t1 - t0) / n * 1e6:8.1f} us/flow")
    print(f"FilterTemplate.build:                {(t2 - t1) / n * 1e6:8.1f} us/flow")
    print(f"FilterTemplate.body_for (put burst): {(t3 - t2) / n * 1e6:8.1f} us/flow")
    print(f"ratio: {(t1 - t0) / (t2 - t1):.1f}x (build), {(t1 - t0) / (t3 - t2):.1f}x (body_for)")


if __name__ == "__main__":
    main()
