#!/usr/bin/env python3
"""Stampede benchmark: many callers of ``get_or_set`` on one hot key whose value is slow to make.

Run from the repository root::

    python benchmarks/stampede.py [--seconds 10] [--processes 4] [--threads 8]
                                  [--compute 0.2] [--lifetime 1] [--json PATH]

It starts one throw-away Redis server with the project's launcher and, in the same run, one
after the other, puts four set-ups through the same load: hacache with its default
protection, hacache with ``OPTIONS['STAMPEDE']: False`` (Django's get, add, get), Django's
own ``RedisCache``, and hacache with a 5 s ``GRACE`` (the previous value served meanwhile).
For each, ``--processes`` spawned processes x ``--threads`` threads call ``get_or_set(KEY,
compute, timeout=lifetime)`` for ``--seconds`` seconds, pausing ``--pause`` between calls;
``compute`` sleeps ``--compute`` seconds.

Every computation's start time comes back from the processes. An *expiry* is a miss episode:
computations that start within half a lifetime of the episode's first one belong to it (a new
value cannot expire sooner than one lifetime after it was stored). Reported per backend:
computations, expiries, computations per expiry (mean and worst), and every call's duration
(the longest, the longest beyond one computation, and how many calls took more than a quarter
of a computation: the callers that computed or waited for a value).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this worktree's hacache, not an installed one

DEFAULT_JSON = REPO / "benchmarks" / "results" / "stampede.json"
KEY = "hot"
BACKENDS = ("hacache", "hacache_off", "django", "hacache_grace")
LABELS = {
    "hacache": "hacache, default protection",
    "hacache_grace": "hacache, GRACE 5 s",
    "hacache_off": "hacache, STAMPEDE False",
    "django": "Django RedisCache",
}
TARGET_PER_EXPIRY = 1.0
WAIT_BOUND = 0.1  # seconds beyond one computation a caller may wait: the target's small bound


def caches_setting(url: str) -> dict[str, dict[str, Any]]:
    plain = url.split("?", 1)[0]
    return {
        "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "hacache": {"BACKEND": "hacache.HACache", "LOCATION": [url], "KEY_PREFIX": "hc"},
        "hacache_off": {
            "BACKEND": "hacache.HACache",
            "LOCATION": [url],
            "KEY_PREFIX": "hcoff",
            "OPTIONS": {"STAMPEDE": False},
        },
        "hacache_grace": {
            "BACKEND": "hacache.HACache",
            "LOCATION": [url],
            "KEY_PREFIX": "hcgrace",
            "OPTIONS": {"STAMPEDE": {"GRACE": 5}},
        },
        "django": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": plain,
            "KEY_PREFIX": "dj",
        },
    }


def worker(
    caches: dict,
    alias: str,
    threads: int,
    seconds: float,
    compute: float,
    lifetime: int,
    pause: float,
    ready: Any,
    results: Any,
) -> None:
    """One process: ``threads`` callers for ``seconds`` once every process is ``ready``."""
    import django
    from django.conf import settings

    settings.configure(CACHES=caches, USE_TZ=True)
    django.setup()
    from django.core.cache import caches as django_caches

    cache = django_caches[alias]
    cache.get("warm-up")  # the first call builds the client and connects: not measured
    computations: list[float] = []
    waits: list[list[float]] = [[] for _ in range(threads)]
    lock = threading.Lock()

    def make_value() -> str:
        started = time.time()
        with lock:
            computations.append(started)
        time.sleep(compute)
        return f"made at {started}"

    def caller(mine: list[float], stop_at: float) -> None:
        mine_cache = django_caches[alias]  # Django's handler gives each thread its own object
        while time.time() < stop_at:
            began = time.perf_counter()
            mine_cache.get_or_set(KEY, make_value, lifetime)
            mine.append(time.perf_counter() - began)
            if pause:
                time.sleep(pause)

    ready.wait(120)
    stop_at = time.time() + seconds
    pool = [threading.Thread(target=caller, args=(waits[i], stop_at)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    slow = sum(t > compute / 4 for w in waits for t in w)
    results.put({"computations": computations, "waits": [max(w) for w in waits if w],
                 "calls": sum(len(w) for w in waits), "slow_calls": slow})  # fmt: skip


def episodes(starts: list[float], lifetime: float) -> list[int]:
    """Computations per miss episode, in order."""
    counts: list[int] = []
    first = None
    for start in sorted(starts):
        if first is None or start - first > lifetime / 2:
            first = start
            counts.append(0)
        counts[-1] += 1
    return counts


def run_backend(caches: dict, alias: str, args: argparse.Namespace) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    ready, results = spawn.Barrier(args.processes + 1), spawn.Queue()
    work = (caches, alias, args.threads, args.seconds, args.compute, args.lifetime, args.pause)
    procs = [
        spawn.Process(target=worker, args=(*work, ready, results)) for _ in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    ready.wait(120)
    outcomes = [results.get(timeout=args.seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(30)
    starts = [s for o in outcomes for s in o["computations"]]
    per_episode = episodes(starts, args.lifetime)
    waits = [w for o in outcomes for w in o["waits"]]
    return {
        "backend": LABELS[alias],
        "calls": sum(o["calls"] for o in outcomes),
        "computations": len(starts),
        "expiries": len(per_episode),
        "per_expiry_mean": round(len(starts) / max(1, len(per_episode)), 2),
        "per_expiry_max": max(per_episode, default=0),
        "per_expiry": per_episode,
        "max_wait_s": round(max(waits), 3),
        "median_of_callers_max_wait_s": round(statistics.median(waits), 3),
        "max_wait_beyond_compute_s": round(max(waits) - args.compute, 3),
        "calls_slower_than_a_quarter_compute": sum(o["slow_calls"] for o in outcomes),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--compute", type=float, default=0.2, help="seconds per computation")
    parser.add_argument("--lifetime", type=int, default=1, help="the value's timeout, seconds")
    parser.add_argument("--pause", type=float, default=0.001, help="seconds between calls")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hacache.topology import Topology

    with tempfile.TemporaryDirectory(prefix="hacache-stampede-") as run_dir:
        topology = Topology(run_dir, shards=1)
        try:
            topology.up()
            url = topology.master_urls()[0]
            caches = caches_setting(url)
            rows = []
            for alias in BACKENDS:
                print(f"{LABELS[alias]}: {args.processes} processes x {args.threads} threads "
                      f"for {args.seconds:g} s ...", flush=True)  # fmt: skip
                rows.append(run_backend(caches, alias, args))
        finally:
            topology.down()
    header = ("backend", "calls", "computes", "expiries", "per expiry", "worst", "max wait",
              "beyond compute", "slow calls")  # fmt: skip
    table = [header] + [
        (r["backend"], str(r["calls"]), str(r["computations"]), str(r["expiries"]),
         f"{r['per_expiry_mean']:.2f}", str(r["per_expiry_max"]), f"{r['max_wait_s']:.3f} s",
         f"{r['max_wait_beyond_compute_s']:+.3f} s",
         str(r["calls_slower_than_a_quarter_compute"]))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    protected = rows[0]
    verdict = {
        "per_expiry_max<=1": protected["per_expiry_max"] <= TARGET_PER_EXPIRY,
        f"max_wait<=compute+{WAIT_BOUND}s": protected["max_wait_s"] <= args.compute + WAIT_BOUND,
    }
    print("targets (hacache, default protection):",
          ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdict.items()))  # fmt: skip
    report = {
        "config": {**vars(args), "json": str(args.json), "key": KEY, "redis_shards": 1,
                   "python": platform.python_version(), "machine": platform.platform(),
                   "expiry_rule": "computations starting within lifetime/2 of an episode's "
                   "first computation belong to that episode"},
        "results": rows,
        "targets": verdict,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"written to {args.json}")
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
