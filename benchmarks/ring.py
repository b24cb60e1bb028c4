"""Ring lookup micro-benchmark: how long placing one key takes, cold and remembered.

    python benchmarks/ring.py [--json benchmarks/results/ring.json]

Cold lookups use keys never seen before (hash + bisect); warm ones repeat a hot set of keys
(the placement memo). Results are per lookup, in nanoseconds, for 3 and 16 shards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hacache.ring import HashRing


def per_lookup_ns(ring: HashRing, keys: list[str]) -> float:
    start = time.perf_counter()
    for key in keys:
        ring.node_for(key)
    return (time.perf_counter() - start) / len(keys) * 1e9


def measure() -> dict[str, float]:
    results = {}
    for placement in ("consistent", "ketama"):
        for shards in (3, 16):
            ring = HashRing([f"shard{i}" for i in range(shards)], placement=placement)
            cold = [f":1:user:{i}:profile" for i in range(200_000)]  # more than the memo holds
            hot = [f":1:page:{i % 1000}" for i in range(200_000)]
            name = f"{placement}_{shards}_shards"
            results[f"{name}_cold_ns"] = per_lookup_ns(ring, cold)
            per_lookup_ns(ring, hot[:1000])  # fill the memo
            results[f"{name}_warm_ns"] = per_lookup_ns(ring, hot)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="benchmarks/results/ring.json")
    args = parser.parse_args()
    results = measure()
    for name, value in results.items():
        print(f"{name:36s} {value:8.0f} ns")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
