"""Micro-benchmark: per-filter decode time of a dumped filter, four ways.

    .venv/bin/python bench/tc_decode.py [--n 5000]

Builds the messages a dump with counters carries for the install
benchmark's megaflows (bench/tc_install.py: UDP, exact ipv4_dst and tp_dst,
ip_frag=no, output -> mirred redirect, with action stats and tcf_t), plus
the shared tc test cases, and prints the mean time per filter for
pyroute2's parser + ``tc_values.decode_filter``, for ``tc_decode`` (the
generic hand decoder), for ``tc_dumpfast`` and ``tc_dumpshape`` (what
``TcNetlink.dump`` uses), and for the same filters' terse dump messages
(``tc_terse``, what ``TcNetlink.dump_stats`` uses; checked against pyroute2's
parse first).  No kernel needed; the full decoders give the same values
(checked first).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from offload import tc_decode as D  # noqa: E402
from offload import tc_dumpfast as F  # noqa: E402
from offload import tc_dumpshape as S  # noqa: E402
from offload import tc_nla as N  # noqa: E402
from offload import tc_values as V  # noqa: E402
from offload.tc_flower import PortInfo, to_flower  # noqa: E402
from tests.offload.tc_cases import ACTION_CASES, KEY_CASES  # noqa: E402
from offload import tc_terse as T  # noqa: E402
from tests.offload.test_tc_decode import dump_message  # noqa: E402
from tests.offload.test_tc_terse import Act, reference, terse_message  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
from tc_install import megaflows  # noqa: E402

PORTS = {1: PortInfo(1, 3, "bp0"), 2: PortInfo(2, 4, "bp1")}


def bench_messages(n: int) -> list[bytes]:
    out = []
    for i, spec in enumerate(megaflows(n)):
        f = to_flower(spec.match, spec.actions, spec.ufid, ports=PORTS, prio=2,
                      handle=i + 1, flags=N.TCA_CLS_FLAGS_SKIP_HW)
        assert isinstance(f, V.FlowerFilter), f
        out.append(dump_message(f, [(i, 60 * i, 0, 0, 250)], in_hw_count=0,
                                extra_flags=N.TCA_CLS_FLAGS_NOT_IN_HW))
    return out


def terse_messages(n: int) -> list[bytes]:
    """The terse dump messages of ``bench_messages(n)``'s filters."""
    return [terse_message(3, 0, 2, 0x800, i + 1, N.TCA_CLS_FLAGS_SKIP_HW
                          | N.TCA_CLS_FLAGS_NOT_IN_HW,
                          (Act("mirred", (i, 60 * i, 0, 0), (0x5EED << 112 | i).to_bytes(16, "big")),))
            for i in range(n)]


def case_messages() -> list[bytes]:
    out = [dump_message(V.FlowerFilter(ifindex=3, prio=10, handle=0x11, protocol=proto,
                                       keys=keys, actions=(V.Gact.drop(),), cookie=b"c" * 16),
                        [(1, 60, 0, 0, 12)], in_hw_count=0)
           for proto, keys in KEY_CASES.values()]
    for build in ACTION_CASES.values():
        f = V.FlowerFilter(ifindex=3, prio=1, handle=1, actions=build(7), cookie=b"u")
        out.append(dump_message(f, [(1, 2, 3, 4, 5)] * len(f.actions), in_hw_count=1))
    return out


def pyroute2(msg: bytes) -> Any:
    m = N.tcmsg_flower(msg)
    m.decode()
    return V.decode_filter(m)


def per_filter(fn: Callable[[bytes], Any], msgs: list[bytes]) -> float:
    t0 = time.perf_counter()
    for m in msgs:
        fn(m)
    return (time.perf_counter() - t0) / len(msgs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    n = ap.parse_args().n
    for label, msgs in (("install-bench megaflows", bench_messages(n)),
                        ("tc test cases (all key groups and actions)", case_messages() * 20)):
        for m in msgs[:200]:
            assert S.decode_message(m) == F.decode_message(m) == D.decode_message(m) == pyroute2(m)
        slow = per_filter(pyroute2, msgs[:1000])
        generic = per_filter(D.decode_message, msgs)
        fast = per_filter(F.decode_message, msgs)
        shaped = per_filter(S.decode_message, msgs)
        print(f"{label}: {len(msgs)} messages")
        print(f"  pyroute2 + decode_filter:        {slow * 1e6:8.1f} us/filter")
        print(f"  tc_decode.decode_message:        {generic * 1e6:8.1f} us/filter")
        print(f"  tc_dumpfast.decode_message:      {fast * 1e6:8.1f} us/filter"
              f"   ({slow / fast:.1f}x pyroute2, {generic / fast:.1f}x tc_decode)")
        print(f"  tc_dumpshape.decode_message:     {shaped * 1e6:8.1f} us/filter"
              f"   ({slow / shaped:.1f}x pyroute2, {generic / shaped:.1f}x tc_decode)")
    terse = terse_messages(n)
    for m in terse[:200]:
        assert T.decode_message(m) == reference(m)
    full = bench_messages(n)
    t_full = per_filter(S.decode_message, full)
    t_terse = per_filter(T.decode_message, terse)
    print(f"terse dump of the install-bench megaflows: {n} messages "
          f"({len(terse[0])} bytes each, full {len(full[0])})")
    print(f"  tc_terse.decode_message:         {t_terse * 1e6:8.1f} us/filter"
          f"   ({t_full / t_terse:.1f}x tc_dumpshape on the full message)")


if __name__ == "__main__":
    main()
