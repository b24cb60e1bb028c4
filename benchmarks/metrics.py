#!/usr/bin/env python3
"""What METRICS costs in CPU instructions, client side: steadier than wall clock on a busy VM.

    python benchmarks/metrics.py [--calls 2000] [--json benchmarks/results/metrics.json]
                                 [--on '{"SIGN_VALUES": true, "SIGNING_KEY": "k"}']

``--on`` measures other OPTIONS the same way ("on" is those options, "off" none of them).

Starts one throw-away Redis server, then runs a tiny Django process under
``valgrind --tool=callgrind`` for each of remote get, remote set and near-cache hit, with METRICS
off and on, once making ``--calls`` calls (ten times as many near hits) and once none. The
difference over the calls is instructions per call, counted on the calling thread only (the
subscriber and the metrics folder run on their own). The wall-clock on/off ratios, in the same
run, are in ``backends.py`` (remote get, set) and ``nearcache.py`` (near hit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ("remote get", "remote set", "near hit")
NEAR_FACTOR = 10  # a near hit is ~10x cheaper: more calls for as many instructions


def child(workload: str, state: str, calls: int, url: str, on: str) -> None:
    """Under callgrind: one cache, warmed up, then ``calls`` calls of ``workload``."""
    sys.path.insert(0, str(REPO))
    import django
    from django.conf import settings

    options = {"NEAR_CACHE": workload == "near hit", **(json.loads(on) if state == "on" else {})}
    settings.configure(
        CACHES={"default": {"BACKEND": "hacache.HACache", "LOCATION": [url], "OPTIONS": options}}
    )
    django.setup()
    import hacache.invalidation

    # Under callgrind everything runs ~50x slower: the subscriber could miss its 1 s PONG,
    # flush and distrust the near-cache, and near hits would turn into remote gets.
    hacache.invalidation.HEARTBEAT = 10.0
    from django.core.cache import cache

    if workload == "near hit":
        cache._router.bus.listen()
        cache._router.near.wait_trusted(30)
    call = (lambda: cache.set("k", "v")) if workload == "remote set" else (lambda: cache.get("k"))
    for _ in range(200):  # the same warm-up whatever ``calls`` is
        cache.set("k", "v")
    for _ in range(200):
        call()
    for _ in range(calls):
        call()
    from hacache.router import close_all_routers

    close_all_routers()


def instructions(workload: str, state: str, calls: int, url: str, on: str, out: Path) -> int:
    """Instructions the calling thread ran, from callgrind's per-thread output."""
    prefix = out / f"{workload.replace(' ', '-')}-{state}-{calls}"
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes",
         f"--callgrind-out-file={prefix}.%p", sys.executable, __file__,
         "--child", workload, state, str(calls), url, on],
        check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    main_thread = next(out.glob(f"{prefix.name}.*-01"))
    return int(re.search(r"^summary: (\d+)", main_thread.read_text(), re.M).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks/results/metrics.json")
    parser.add_argument("--on", default='{"METRICS": true}', help="OPTIONS measured, as JSON")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workload, state, calls, url, on = args.child
        child(workload, state, int(calls), url, on)
        return 0
    sys.path.insert(0, str(REPO))
    from hacache.topology import Topology

    runs = [
        (w, s, n * (NEAR_FACTOR if w == "near hit" else 1))
        for w in WORKLOADS
        for s in ("off", "on")
        for n in (0, args.calls)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="hacache-callgrind-") as tmp,
        Topology(tmp, shards=1) as topology,
        ThreadPoolExecutor(os.cpu_count() or 1) as pool,
    ):
        url = topology.master_urls()[0]
        counts = list(pool.map(lambda r: instructions(*r, url, args.on, Path(tmp)), runs))
    per_call = {}
    for i in range(0, len(runs), 2):
        (workload, state, calls), (none, some) = runs[i + 1], counts[i : i + 2]
        per_call.setdefault(workload, {})[state] = (some - none) / calls
    print(f"{'instructions per call':<22} {'off':>9} {'on':>9} {'on/off':>7}")
    for workload, row in per_call.items():
        row["ratio"] = row["on"] / row["off"]
        print(f"{workload:<22} {row['off']:>9,.0f} {row['on']:>9,.0f} {row['ratio']:>7.3f}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    result = {
        "instructions_per_call": per_call,
        "on": json.loads(args.on),
        "calls": args.calls,
        "near_calls": args.calls * NEAR_FACTOR,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "hacache_commit": commit.stdout.strip(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
