"""Megaflow lookups/s for 10k megaflows over 1, 4, 16 and 64 masks.

Skewed (zipf-like, s=1.1) traffic over the installed flows, measured in one
process next to two yardsticks:

* floor   one exact-match ``dict`` probe of a packed key (the least any
          Python classifier can do per packet);
* linear  a scan over every megaflow (``key & mask == match.key``), on a
          smaller sample because it is slow.

Rows: the cache without EMC (``tss``: the projection index, then the
subtables it does not answer for), plain tuple space search without EMC on
the same flows (``tss-plain``, ``MegaflowCache(use_index=False)``), the cache
with EMC (``tss+emc``), the parser alone on a 64-byte TCP frame (``parse``)
and on the same frame with one VLAN tag (``parse-vlan``), and parse+lookup
(``parse+emc``).  Timing is best of
``--repeat`` runs (min), to damp other load on the machine.

    python bench/swpath_lookup.py [--flows 10000] [--lookups 200000]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import struct
import time
from collections.abc import Callable

from dpif.flow import Ufid
from dpif.match import Match
from swpath.cache import MegaflowCache
from swpath.parse import parse_key

# Field groups a mask can be built of, as ofproto's translations typically do.
_CHOICES: list[dict[str, int]] = [
    {"eth_type": 0xFFFF}, {"ip_proto": 0xFF}, {"tp_dst": 0xFFFF}, {"tp_src": 0xFFFF},
    {"ipv4_src": 0xFFFFFF00}, {"ip_tos": 0xFC}, {"ip_ttl": 0xFF},
    {"eth_src": 0xFFFFFFFFFFFF}, {"ipv4_src": 0xFFFF0000}, {"tcp_flags": 0x0FFF},
]


def make_masks(n: int, rng: random.Random) -> list[dict[str, int]]:
    base = {"recirc_id": 0xFFFFFFFF, "in_port": 0xFFFFFFFF, "eth_type": 0xFFFF,
            "ip_proto": 0xFF, "ipv4_dst": 0xFFFFFFFF}
    seen: set[tuple[tuple[str, int], ...]] = set()
    out = []
    for combo in itertools.chain.from_iterable(
            itertools.combinations(range(len(_CHOICES)), r) for r in range(0, 5)):
        m = dict(base)
        for i in combo:
            for k, v in _CHOICES[i].items():
                m[k] = m.get(k, 0) | v
        t = tuple(sorted(m.items()))
        if t not in seen:
            seen.add(t)
            out.append(m)
        if len(out) == n:
            break
    rng.shuffle(out)
    return out


def frame_for(i: int) -> bytes:
    """A 64-byte Ethernet/IPv4/TCP frame; flow i differs in ipv4_dst."""
    eth = struct.pack("!6s6sH", b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x01", 0x0800)
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40, 1, 0x4000, 64, 6, 0, 0x0A000001,
                     0x0B000000 + i)
    tcp = struct.pack("!HHIIHHHH", 1000 + i % 50, 80, 1, 2, 0x5010, 1000, 0, 0)
    return eth + ip + tcp + bytes(64 - 54)


def build(nflows: int, nmasks: int, seed: int = 1, use_index: bool = True
          ) -> tuple[MegaflowCache, list[int], list[Match], list[bytes]]:
    rng = random.Random(seed)
    masks = make_masks(nmasks, rng)
    md = Match.build(in_port=1).key
    cache = MegaflowCache(flow_limit=nflows * 2, emc_size=8192, use_index=use_index)
    keys, matches, frames = [], [], []
    for i in range(nflows):
        fr = frame_for(i)
        key = parse_key(fr, md)
        m = masks[i % nmasks]
        mask = Match.build({k: (v, v) for k, v in m.items()}).mask
        match = Match.from_packet_key(key, mask)
        cache.insert(Ufid(i + 1), match, ())
        keys.append(key)
        matches.append(match)
        frames.append(fr)
    return cache, keys, matches, frames


def zipf_sample(n: int, count: int, s: float = 1.1, seed: int = 2) -> list[int]:
    rng = random.Random(seed)
    weights = [1 / (r + 1) ** s for r in range(n)]
    cum = list(itertools.accumulate(weights))
    ranks = list(range(n))
    rng.shuffle(ranks)  # popular flows spread over all masks
    total = cum[-1]
    return [ranks[bisect.bisect_left(cum, rng.random() * total)] for _ in range(count)]


def best(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{args.flows} megaflows, {args.lookups} zipf(1.1) lookups, best of {args.repeat}")
    print(f"{'masks':>5} {'variant':<10} {'ns/lookup':>10} {'Mlookups/s':>11} {'x floor':>8}")
    for nmasks in (1, 4, 16, 64):
        cache, keys, matches, frames = build(args.flows, nmasks)
        plain = build(args.flows, nmasks, use_index=False)[0]
        plain.emc_size = 0
        order = zipf_sample(args.flows, args.lookups)
        stream = [keys[i] for i in order]
        fstream = [frames[i] for i in order]
        vstream = [f[:12] + b"\x81\x00\x00\x0a" + f[12:-4] for f in fstream]  # vid 10
        exact = {k: i for i, k in enumerate(keys)}

        def floor() -> None:
            get = exact.get
            for k in stream:
                get(k)

        def tss() -> None:
            look = cache._lookup_subtables  # no EMC
            for k in stream:
                look(k)

        def tss_plain() -> None:
            look = plain._lookup_subtables
            for k in stream:
                look(k)

        def tss_emc() -> None:
            look = cache.lookup
            for k in stream:
                look(k)

        md = Match.build(in_port=1).key

        def parse_only() -> None:
            for f in fstream:
                parse_key(f, md)

        def parse_vlan() -> None:
            for f in vstream:
                parse_key(f, md)

        def parse_emc() -> None:
            look = cache.lookup
            for f in fstream:
                look(parse_key(f, md))

        lin_n = max(200, args.lookups // 500)
        lin_stream = stream[:lin_n]
        pairs = [(m.key, m.mask) for m in matches]

        def linear() -> None:
            for k in lin_stream:
                for mk, mm in pairs:
                    if k & mm == mk:
                        break

        for k in stream[:50]:  # sanity: everyone agrees with the linear scan
            e = cache.lookup_nocache(k)
            assert e is not None and e.match.matches(k) and plain.lookup_nocache(k) is not None
        print(f"{nmasks:>5} index: {'on' if cache.index_common is not None else 'off'}, "
              f"{cache.unindexed} unindexed subtables, {cache.rebuilds} rebuilds")
        f_t = best(floor, args.repeat) / len(stream)
        emc_size = cache.emc_size
        rows: list[tuple[str, float]] = [("floor", f_t)]
        cache.emc_size = 0
        cache.clear_emc()
        rows.append(("tss", best(tss, args.repeat) / len(stream)))
        rows.append(("tss-plain", best(tss_plain, args.repeat) / len(stream)))
        cache.emc_size = emc_size
        cache.rerank()
        rows.append(("tss+emc", best(tss_emc, args.repeat) / len(stream)))
        rows.append(("parse", best(parse_only, args.repeat) / len(stream)))
        rows.append(("parse-vlan", best(parse_vlan, args.repeat) / len(stream)))
        rows.append(("parse+emc", best(parse_emc, args.repeat) / len(stream)))
        rows.append(("linear", best(linear, max(1, args.repeat // 2)) / len(lin_stream)))
        for name, t in rows:
            print(f"{nmasks:>5} {name:<10} {t * 1e9:>10.0f} {1e-6 / t:>11.3f} {t / f_t:>8.1f}")


if __name__ == "__main__":
    main()
