"""The serializers side by side: stored size and the time of ``dumps`` and ``loads``.

    python benchmarks/serializers.py [--rounds 7] [--json benchmarks/results/serializers.json]

JSON-like records (ids, names, tags, flags, floats: what all four can store) of about 1 KB,
10 KB and 100 KB pickled; each serializer in each round, in a rotated order; medians of the
rounds, and each one's ratio to stdlib ``json``. Nothing else runs: no Redis, no codec.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from values import SIZES, per_call, records, write_results  # this script's folder is on sys.path

from hacache.serializers import (
    JSONSerializer,
    MsgpackSerializer,
    OrjsonSerializer,
    PickleSerializer,
)

SERIALIZERS = {
    "pickle": PickleSerializer(),
    "json": JSONSerializer(),
    "orjson": OrjsonSerializer(),
    "msgpack": MsgpackSerializer(),
}


def table(rounds: int) -> list[dict]:
    rows = []
    for label, size in SIZES.items():
        value = records(size)
        stored = {name: s.dumps(value) for name, s in SERIALIZERS.items()}
        assert all(s.loads(stored[n]) == value for n, s in SERIALIZERS.items())
        times: dict[str, dict[str, list[float]]] = {n: {"dumps": [], "loads": []} for n in stored}
        names = list(SERIALIZERS)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                s = SERIALIZERS[name]
                times[name]["dumps"].append(per_call(s.dumps, value) * 1e6)
                times[name]["loads"].append(per_call(s.loads, stored[name]) * 1e6)
        base = {op: statistics.median(times["json"][op]) for op in ("dumps", "loads")}
        for name in names:
            med = {op: statistics.median(times[name][op]) for op in ("dumps", "loads")}
            rows.append({
                "size": label, "serializer": name, "stored_bytes": len(stored[name]),
                "dumps_us": med["dumps"], "loads_us": med["loads"],
                "dumps_vs_json": base["dumps"] / med["dumps"],
                "loads_vs_json": base["loads"] / med["loads"],
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default="benchmarks/results/serializers.json")
    args = parser.parse_args()
    rows = table(args.rounds)
    print(f"{'size':>5} {'serializer':>10} {'bytes':>7} {'dumps µs':>9} {'x json':>7} "
          f"{'loads µs':>9} {'x json':>7}")  # fmt: skip
    for r in rows:
        print(
            f"{r['size']:>5} {r['serializer']:>10} {r['stored_bytes']:>7} {r['dumps_us']:>9.1f} "
            f"{r['dumps_vs_json']:>7.2f} {r['loads_us']:>9.1f} {r['loads_vs_json']:>7.2f}"
        )
    write_results(args.json, rounds=args.rounds, rows=rows)


if __name__ == "__main__":
    main()
