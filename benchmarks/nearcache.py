"""Near-cache benchmark: a hit against Django's LocMemCache and a remote hit, and the delay from a
write in one process to the eviction in another. Also a hit with ``"METRICS": True`` against one
without (target: at most 1.15x the time), measured in the same rounds.

    python benchmarks/nearcache.py [--writes 2000] [--json benchmarks/results/nearcache.json]

Starts its own 3-shard topology. The gets run in interleaved rounds (their order rotating),
median per call over rounds. Cross-process delays use CLOCK_MONOTONIC, which all processes on
one Linux machine share.
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
METRICS_TARGET = 1.15  # a near hit with METRICS on, at most this many times one without


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


def _interleaved(calls: dict[str, Any], seconds: float, rounds: int) -> dict[str, list[float]]:
    """Microseconds per call of each of ``calls`` in each round, the order rotating per round."""
    names, per_round = list(calls), {name: [] for name in calls}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            per_round[name].append(_per_call(calls[name], seconds / rounds))
    return per_round


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


def measure(writes: int, seconds: float, rounds: int) -> dict[str, Any]:
    run_dir = tempfile.mkdtemp(prefix="hacache-bench-")
    topology = Topology(run_dir, shards=3).up()
    try:
        urls = topology.master_urls()
        caches = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "near": {"BACKEND": "hacache.HACache", "LOCATION": urls, "KEY_PREFIX": "n",
                     "OPTIONS": {"NEAR_CACHE": True}},
            "metered": {"BACKEND": "hacache.HACache", "LOCATION": urls, "KEY_PREFIX": "m",
                        "OPTIONS": {"NEAR_CACHE": True, "METRICS": True}},
            "remote": {"BACKEND": "hacache.HACache", "LOCATION": urls, "KEY_PREFIX": "r"},
        }  # fmt: skip
        handler = _setup(caches)
        locmem, near, remote = handler["default"], handler["near"], handler["remote"]
        metered = handler["metered"]
        for cache in (near, metered):
            cache._router.bus.listen()
            cache._router.near.wait_trusted(10)
        value = {"user": 42, "name": "x" * 50}
        for cache in (locmem, near, remote, metered):
            cache.set("hot", value, timeout=3600)
        near.get("hot")
        metered.get("hot")
        per_round = _interleaved(
            {
                "locmem_get_us": lambda: locmem.get("hot"),
                "near_hit_get_us": lambda: near.get("hot"),
                "near_hit_metrics_get_us": lambda: metered.get("hot"),
                "remote_hit_get_us": lambda: remote.get("hot"),
            },
            seconds,
            rounds,
        )
        timings = {name: statistics.median(times) for name, times in per_round.items()}
        timings["metrics_on_off"] = timings["near_hit_metrics_get_us"] / timings["near_hit_get_us"]

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
            "metrics_target": METRICS_TARGET,
            "metrics_met": timings["metrics_on_off"] <= METRICS_TARGET,
            "rounds": rounds,
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
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the gets")
    parser.add_argument("--json", default="benchmarks/results/nearcache.json")
    args = parser.parse_args()
    result = measure(args.writes, args.seconds, args.rounds)
    print(f"get, LocMemCache          {result['locmem_get_us']:8.2f} us")
    print(
        f"get, near-cache hit       {result['near_hit_get_us']:8.2f} us"
        f"   ({result['near_vs_locmem']:.2f}x LocMemCache)"
    )
    print(
        f"get, near hit, METRICS on {result['near_hit_metrics_get_us']:8.2f} us"
        f"   ({result['metrics_on_off']:.3f}x off; target <= "
        f"{METRICS_TARGET:g}: {'MET' if result['metrics_met'] else 'MISSED'})"
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
