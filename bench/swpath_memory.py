"""Memory per megaflow in the software cache at 200k flows (tracemalloc).

Counts everything the cache allocates for the flows: entries, matches, key
ints, ufids, the action tuples, the subtable and ufid dicts, the projection
index (``--no-index``: without it) and the overlap projection indexes.  The flows are
made the way an upcall makes them (a parsed packet key & a mask), over 4
masks.  The EMC is empty (it is bounded at emc_size entries regardless).

    python bench/swpath_memory.py [--flows 200000]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from dpif.actions import Output
from dpif.flow import Ufid
from dpif.match import Match
from swpath.cache import MegaflowCache
from swpath.parse import parse_key

try:
    from bench.swpath_lookup import frame_for, make_masks  # run as a module
except ImportError:  # run as a script
    from swpath_lookup import frame_for, make_masks  # type: ignore[no-redef]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=200_000)
    ap.add_argument("--masks", type=int, default=4)
    ap.add_argument("--no-index", action="store_true", help="MegaflowCache(use_index=False)")
    args = ap.parse_args()
    import random
    masks = [Match.build({k: (v, v) for k, v in m.items()}).mask
             for m in make_masks(args.masks, random.Random(1))]
    md = Match.build(in_port=1).key
    keys = [parse_key(frame_for(i), md) for i in range(args.flows)]  # not counted
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    cache = MegaflowCache(flow_limit=args.flows, emc_size=8192, use_index=not args.no_index)
    for i, key in enumerate(keys):
        mask = masks[i % len(masks)]
        cache.insert(Ufid(0x5EED << 64 | i), Match.from_packet_key(key, mask),
                     (Output(2 + i % 8),))
    gc.collect()
    after = tracemalloc.take_snapshot()
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    print(f"{len(cache)} megaflows over {args.masks} masks: {total / 2**20:.1f} MiB, "
          f"{total / len(cache):.0f} bytes per megaflow (goal < 1024); projection index "
          f"{'on' if cache.index_common is not None else 'off'}")


if __name__ == "__main__":
    main()
