#!/usr/bin/env python3
"""Resharding 3 -> 4 shards: the hit rate of reads of existing keys through the change, with
and without ``PREVIOUS_LOCATION``, and the mover's throughput.

    python benchmarks/reshard.py [--keys 100000] [--seconds 10] [--json PATH] [--plot PATH]

Starts four throw-away Redis servers, writes ``--keys`` keys through a cache on the first three,
then switches to a cache on all four and reads random existing keys (``get_many`` of 20) for
``--seconds``, recomputing (``set``) each miss as an application would. Run once without
``PREVIOUS_LOCATION`` (the quarter of keys that moved miss until recomputed) and once with it,
``manage.py hacache reshard``'s mover running meanwhile in a thread. Then the mover alone on a
fresh fill, for its throughput. Reports the hit rate in the first half second and over time
(plotted), and the mover's keys per second.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WINDOW = 0.5  # seconds per point of the hit-rate curve
LABELS = (("without", "without PREVIOUS_LOCATION"), ("with", "with PREVIOUS_LOCATION"))
BATCH = 20


def fill(urls: list[str], keys: int) -> None:
    import redis

    from hacache.backend import HACache

    for url in urls:
        redis.Redis.from_url(url.split("?")[0]).flushdb()
    before = HACache(urls[:3], {"KEY_PREFIX": "b"})
    names = [f"key:{i}" for i in range(keys)]
    for start in range(0, keys, 1000):
        before.set_many({k: k for k in names[start : start + 1000]}, timeout=None)


def read(cache: Any, keys: int, seconds: float, seed: int) -> list[dict[str, float]]:
    """Random existing keys for ``seconds``; each miss recomputed. Hit rate per WINDOW."""
    rng = random.Random(seed)
    points, start = [], time.monotonic()
    window_end, hits, total = start + WINDOW, 0, 0
    while (now := time.monotonic()) < start + seconds:
        names = [f"key:{i}" for i in rng.sample(range(keys), BATCH)]  # distinct keys
        found = cache.get_many(names)
        hits += len(found)
        total += len(names)
        missing = {k: k for k in names if k not in found}
        if missing:
            cache.set_many(missing, timeout=None)  # the "database" answers; cached again
        if now >= window_end:
            points.append({"t": round(window_end - start, 2), "hit_rate": hits / total})
            window_end, hits, total = window_end + WINDOW, 0, 0
    return points


def move(cache: Any, out: dict[str, Any]) -> None:
    from hacache.mover import Mover, key_pattern

    started = time.monotonic()
    summary = Mover(cache._router, key_pattern(cache), batch=1000).run()
    out.update(summary.as_dict(), finished_at=time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", default=str(REPO / "benchmarks/results/reshard.json"))
    parser.add_argument("--plot", default=str(REPO / "benchmarks/plots/reshard.png"))
    args = parser.parse_args()
    import django
    from django.conf import settings

    settings.configure()
    django.setup()
    from hacache.backend import HACache
    from hacache.router import close_all_routers
    from hacache.topology import Topology

    results: dict[str, Any] = {"keys": args.keys, "seconds": args.seconds}
    with Topology(tempfile.mkdtemp(prefix="hacache-reshard-"), shards=4) as topo:
        urls = topo.master_urls()
        fill(urls, args.keys)
        plain = HACache(urls, {"KEY_PREFIX": "b"})
        results["without"] = {"points": read(plain, args.keys, args.seconds, 1)}
        close_all_routers()

        fill(urls, args.keys)
        migrating = HACache(urls, {"KEY_PREFIX": "b", "OPTIONS": {"PREVIOUS_LOCATION": urls[:3]}})
        mover: dict[str, Any] = {}
        thread = threading.Thread(target=move, args=(migrating, mover))
        thread.start()
        results["with"] = {"points": read(migrating, args.keys, args.seconds, 1)}
        thread.join()
        results["with"]["mover"] = mover
        close_all_routers()

        fill(urls, args.keys)
        alone: dict[str, Any] = {}
        move(HACache(urls, {"KEY_PREFIX": "b", "OPTIONS": {"PREVIOUS_LOCATION": urls[:3]}}),
             alone)  # fmt: skip
        results["mover_alone"] = alone
        close_all_routers()

    for name in ("without", "with"):
        points = results[name]["points"]
        results[name]["first_window"] = points[0]["hit_rate"]
        results[name]["overall"] = sum(p["hit_rate"] for p in points) / len(points)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"{args.keys:,} keys, 3 -> 4 shards, reads of existing keys for {args.seconds:g} s")
    print(f"{'':28}{'first 0.5 s':>12}{'whole run':>12}")
    for name, label in (
        ("without", "without PREVIOUS_LOCATION"),
        ("with", "with PREVIOUS_LOCATION"),
    ):
        r = results[name]
        print(f"{label:28}{r['first_window']:>11.2%}{r['overall']:>12.2%}")
    for label, m in (("mover, during the reads", mover), ("mover, alone", alone)):
        print(f"{label:28}{m['moved']:>9,} keys moved in {m['seconds']:.2f} s = "
              f"{m['keys_per_second']:,.0f} keys/s; left to move: {m['left_to_move']}")  # fmt: skip
    plot(results, Path(args.plot))
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, label in (
        ("without", "without PREVIOUS_LOCATION"),
        ("with", "with PREVIOUS_LOCATION"),
    ):
        points = results[name]["points"]
        ax.plot([p["t"] for p in points], [100 * p["hit_rate"] for p in points], label=label)
    done = results["with"]["mover"].get("finished_at")
    if done:
        ax.axvline(done, color="grey", linestyle=":", label="mover finished")
    ax.set_xlabel("seconds after the change to 4 shards")
    ax.set_ylabel("hit rate of existing keys (%)")
    ax.set_ylim(0, 101)
    ax.legend(loc="lower right")
    ax.set_title(f"Resharding 3 -> 4 shards, {results['keys']:,} keys")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
