#!/usr/bin/env python3
"""How long a near-cache keeps serving a value another client changed behind hacache's back.

    python benchmarks/tracking.py [--writes 200]

Starts two throw-away Redis servers; a cache with ``NEAR_CACHE`` (and, in a second run, with
``NEAR_CACHE_TRACKING``) fills its near-cache with a key, then a plain redis-py client (as
``redis-cli`` would) overwrites it, and the cache is polled (every 0.2 ms, sleeping between, so
the subscriber thread gets the GIL as it would in a real process) until it serves the new
value. Reports p50/p99/max of that delay; without tracking, whether it was still served stale
after 1 s (until NEAR_CACHE_TTL, 60 s by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(urls: list[str], tracking: bool, writes: int) -> list[float | None]:
    import redis

    from hacache.backend import HACache

    options = {"NEAR_CACHE": True, "NEAR_CACHE_TRACKING": tracking}
    cache = HACache(urls, {"KEY_PREFIX": f"trk{int(tracking)}", "OPTIONS": options})
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(5)
    delays: list[float | None] = []
    for i in range(writes):
        key = f"k{i}"
        cache.set(key, 1)
        deadline = time.monotonic() + 1
        while cache.get(key) != 1 or cache.near_cache_stats()["hits"] == 0:
            assert time.monotonic() < deadline
        made = cache.make_key(key)
        client = redis.Redis(**cache._router.shard_for(made).spec.connection_kwargs)
        started = time.perf_counter()
        client.set(made, b"2")
        while cache.get(key) != 2:
            if time.perf_counter() - started > 1.0:
                break
            time.sleep(0.0002)
        delay = time.perf_counter() - started
        delays.append(delay * 1000 if delay <= 1.0 else None)
        if not tracking and i == 9:
            break  # each costs a second: ten are enough to show it
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    import django
    from django.conf import settings

    settings.configure()
    django.setup()
    from hacache.topology import Topology

    with Topology(tempfile.mkdtemp(prefix="hacache-tracking-"), shards=2) as topo:
        for tracking in (True, False):
            delays = run(topo.master_urls(), tracking, args.writes)
            seen = sorted(d for d in delays if d is not None)
            stale = len(delays) - len(seen)
            label = "NEAR_CACHE_TRACKING on " if tracking else "NEAR_CACHE_TRACKING off"
            if seen:
                p99 = seen[min(len(seen) - 1, int(len(seen) * 0.99))]
                print(f"{label}: {len(delays)} foreign writes, stale for p50 "
                      f"{statistics.median(seen):.2f} ms, p99 {p99:.2f} ms, max {seen[-1]:.2f} ms;"
                      f" still stale after 1 s: {stale}")  # fmt: skip
            else:
                print(f"{label}: {len(delays)} foreign writes, every one still served stale "
                      "after 1 s (until NEAR_CACHE_TTL)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
