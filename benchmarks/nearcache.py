"""Near-cache benchmark: a hit against Django's LocMemCache and a remote hit, and the delay from a
write in one process to the eviction in another.

    python benchmarks/nearcache.py [--writes 2000] [--json benchmarks/results/nearcache.json]

Starts its own 3-shard topology. Cross-process delays use CLOCK_MONOTONIC, which all processes
on one Linux machine share.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hacache.topology import Topology

SPAWN = multiprocessing.get_context("spawn")


def _setup(caches: dict) -> Any:
    import django
    from django.conf import settings

    settings.configure(CACHES=caches)
    django.setup()
    from django.core.cache import caches as handler

    return handler


def _per_call(fn: Any, seconds: float) -> float:
    """Mean microseconds per call over about ``seconds``, after a warm-up."""
    for _ in range(1000):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            fn()
        calls += 1000
    return (time.perf_counter() - start) / calls * 1e6


def _listener(caches: dict, keys: list[str], conn: Any) -> None:
    """In another process: hold every key near and note when each one's eviction arrives."""
    handler = _setup(caches)
    cache = handler["near"]
    near = cache._router.near
    cache._router.bus.listen()
    near.wait_trusted(10)
    made = {cache.make_key(k): k for k in keys}
    for key in keys:
        cache.get(key)
    evicted: dict[str, float] = {}
    real_evict = near.evict

    def evict(keys_: Any, *, remote: bool = False) -> None:
        now = time.monotonic()
        for key in keys_:
            if remote and key in made:
                evicted.setdefault(made[key], now)
        real_evict(keys_, remote=remote)

    near.evict = evict
    conn.send("ready")
    conn.recv()  # the writer is done
    time.sleep(0.5)
    conn.send(evicted)


def measure(writes: int, seconds: float) -> dict[str, Any]:
    run_dir = tempfile.mkdtemp(prefix="hacache-bench-")
    topology = Topology(run_dir, shards=3).up()
    try:
        urls = topology.master_urls()
        caches = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "near": {"BACKEND": "hacache.HACache", "LOCATION": urls, "KEY_PREFIX": "n",
                     "OPTIONS": {"NEAR_CACHE": True}},
            "remote": {"BACKEND": "hacache.HACache", "LOCATION": urls, "KEY_PREFIX": "r"},
        }  # fmt: skip
        handler = _setup(caches)
        locmem, near, remote = handler["default"], handler["near"], handler["remote"]
        near._router.bus.listen()
        near._router.near.wait_trusted(10)
        value = {"user": 42, "name": "x" * 50}
        for cache in (locmem, near, remote):
            cache.set("hot", value, timeout=3600)
        near.get("hot")
        timings = {
            "locmem_get_us": _per_call(lambda: locmem.get("hot"), seconds),
            "near_hit_get_us": _per_call(lambda: near.get("hot"), seconds),
            "remote_hit_get_us": _per_call(lambda: remote.get("hot"), seconds),
        }

        keys = [f"inv{i}" for i in range(writes)]
        for key in keys:
            near.set(key, 0, timeout=3600)
        parent, child = SPAWN.Pipe()
        listener = SPAWN.Process(target=_listener, args=(caches, keys, child))
        listener.start()
        assert parent.recv() == "ready"
        started: dict[str, float] = {}
        for key in keys:
            started[key] = time.monotonic()
            near.set(key, 1, timeout=3600)
        parent.send("done")
        evicted = parent.recv()
        listener.join(10)
        delays = sorted((evicted[k] - started[k]) * 1000 for k in keys if k in evicted)
        return {
            **timings,
            "near_vs_locmem": timings["near_hit_get_us"] / timings["locmem_get_us"],
            "remote_vs_near": timings["remote_hit_get_us"] / timings["near_hit_get_us"],
            "writes": writes,
            "invalidations_seen": len(delays),
            "delay_ms_p50": statistics.median(delays),
            "delay_ms_p99": delays[int(len(delays) * 0.99) - 1],
            "delay_ms_max": delays[-1],
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
        }
    finally:
        from hacache.router import close_all_routers

        close_all_routers()  # stop the subscribers before their servers go
        topology.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=2.0, help="per get measurement")
    parser.add_argument("--json", default="benchmarks/results/nearcache.json")
    args = parser.parse_args()
    result = measure(args.writes, args.seconds)
    print(f"get, LocMemCache          {result['locmem_get_us']:8.2f} us")
    print(
        f"get, near-cache hit       {result['near_hit_get_us']:8.2f} us"
        f"   ({result['near_vs_locmem']:.2f}x LocMemCache)"
    )
    print(
        f"get, remote hit (Redis)   {result['remote_hit_get_us']:8.2f} us"
        f"   ({result['remote_vs_near']:.1f}x the near hit)"
    )
    print(
        f"invalidation delay, write start -> eviction in another process, "
        f"{result['invalidations_seen']}/{result['writes']} writes: "
        f"p50 {result['delay_ms_p50']:.2f} ms, p99 {result['delay_ms_p99']:.2f} ms, "
        f"max {result['delay_ms_max']:.2f} ms"
    )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
