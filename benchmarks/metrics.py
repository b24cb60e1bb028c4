#!/usr/bin/env python3
"""What METRICS costs: the same calls with metrics off and on, interleaved, in one run.

    python benchmarks/metrics.py [--rounds 7] [--calls 20000]

Starts one throw-away Redis server, builds four caches on it (remote only and with a near-cache,
each with METRICS off and on), then alternates rounds of remote get, remote set and near-cache
hits between them, and reports the median time per call and the on/off ratio. Targets: at most
1.03x on remote get/set, 1.15x on a near-cache hit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    import django
    from django.conf import settings

    from hacache.topology import Topology

    with Topology(tempfile.mkdtemp(prefix="hacache-metrics-"), shards=1) as topo:
        location = topo.master_urls()
        caches = {
            f"{kind}_{state}": {
                "BACKEND": "hacache.HACache",
                "LOCATION": location,
                "KEY_PREFIX": f"{kind}{state}",
                "OPTIONS": {"METRICS": state == "on", "NEAR_CACHE": kind == "near"},
            }
            for kind in ("remote", "near")
            for state in ("off", "on")
        }
        settings.configure(CACHES={"default": caches["remote_off"], **caches})
        django.setup()
        from django.core.cache import caches as handler

        for alias in caches:
            cache = handler[alias]
            if cache._router.near is not None:
                cache._router.bus.listen()
                cache._router.near.wait_trusted(5)
            cache.set("k", "v")
            cache.get("k")
        workloads = {
            "remote get": ("remote", lambda c: c.get("k"), args.calls // 10),
            "remote set": ("remote", lambda c: c.set("k", "v"), args.calls // 10),
            "near-cache hit": ("near", lambda c: c.get("k"), args.calls),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, (kind, call, count) in workloads.items():
                for state in ("off", "on"):
                    cache = handler[f"{kind}_{state}"]
                    start = time.perf_counter()
                    for _ in range(count):
                        call(cache)
                    elapsed = (time.perf_counter() - start) / count
                    times.setdefault((name, state), []).append(elapsed)
    print(f"{'workload':<16} {'off, us':>9} {'on, us':>9} {'on/off':>7} {'target':>7}")
    targets = {"remote get": 1.03, "remote set": 1.03, "near-cache hit": 1.15}
    for name in workloads:
        off = statistics.median(times[(name, "off")]) * 1e6
        on = statistics.median(times[(name, "on")]) * 1e6
        print(f"{name:<16} {off:>9.2f} {on:>9.2f} {on / off:>7.3f} {targets[name]:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
