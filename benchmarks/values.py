"""Value format benchmark: size and speed of each compressor, and the cost of signing.

    python benchmarks/values.py [--rounds 7] [--json benchmarks/results/values.json]

For 1 KB, 10 KB and 100 KB values, realistic JSON-like data (a list of records, pickled) and
random bytes: the stored size and the time of ``Codec.dumps`` / ``Codec.loads`` (serialize +
compress + sign, and back) with no compressor, zlib, zstd and lz4 (``COMPRESS_MIN_BYTES`` 0).
Then signing on and off, in the codec alone and end to end (``cache.get`` / ``cache.set`` on
one local redis-server, started here). Medians over interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hacache.codec import Codec, derive_key
from hacache.serializers import PickleSerializer

SIZES = {"1KB": 1024, "10KB": 10 * 1024, "100KB": 100 * 1024}
COMPRESSORS = [None, "zlib", "zstd", "lz4"]


def records(size: int) -> list[dict[str, Any]]:
    """JSON-like rows (ids, names, tags, flags, floats) until the pickle reaches ``size``."""
    rng = random.Random(size)
    words = ["alpha", "beta", "gamma", "delta", "omega", "user", "order", "paid", "open"]
    rows: list[dict[str, Any]] = []
    serializer = PickleSerializer()
    while len(serializer.dumps(rows)) < size:
        rows.append(
            {
                "id": rng.randrange(10**6),
                "name": " ".join(rng.choices(words, k=3)),
                "email": f"{rng.choice(words)}{rng.randrange(1000)}@example.com",
                "tags": rng.sample(words, 3),
                "active": rng.random() < 0.5,
                "score": round(rng.random() * 100, 2),
            }
        )
    return rows


def per_call(fn: Any, arg: Any, budget: float = 0.05) -> float:
    """Seconds per call: enough calls to fill ``budget``."""
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(50):
            fn(arg)
        n += 50
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / n


def codec_table(rounds: int) -> list[dict[str, Any]]:
    serializer = PickleSerializer()
    key = (derive_key("benchmark"),)
    rows = []
    for kind in ("json-like", "random"):
        for label, size in SIZES.items():
            value = records(size) if kind == "json-like" else os.urandom(size)
            plain = len(serializer.dumps(value))
            codecs = {
                (c, s): Codec(serializer, key if s else (), c, 0)
                for c in COMPRESSORS
                for s in (False, True)
            }
            samples: dict[tuple, list[tuple[float, float]]] = {k: [] for k in codecs}
            for _ in range(rounds):
                for k in random.sample(list(codecs), len(codecs)):
                    codec = codecs[k]
                    stored = codec.dumps(value)
                    samples[k].append((per_call(codec.dumps, value), per_call(codec.loads, stored)))
            for (compressor, signed), codec in codecs.items():
                stored = codec.dumps(value)
                assert codec.loads(stored) == value
                dumps = statistics.median(s[0] for s in samples[(compressor, signed)])
                loads = statistics.median(s[1] for s in samples[(compressor, signed)])
                rows.append(
                    {
                        "data": kind,
                        "size": label,
                        "serialized_bytes": plain,
                        "compressor": compressor or "none",
                        "signed": signed,
                        "stored_bytes": len(stored),
                        "ratio": round(len(stored) / plain, 3),
                        "dumps_us": round(dumps * 1e6, 2),
                        "loads_us": round(loads * 1e6, 2),
                    }
                )
    return rows


def end_to_end(rounds: int) -> dict[str, Any]:
    import django
    from django.conf import settings

    from hacache.topology import Topology

    settings.configure(SECRET_KEY="b" * 50, CACHES={})
    django.setup()
    from hacache.backend import HACache
    from hacache.router import close_all_routers

    value = records(1024)
    with tempfile.TemporaryDirectory() as work:
        topo = Topology(Path(work), shards=1)
        topo.up()
        try:
            url = topo.master_urls()
            caches = {}
            for name, options in (("off", {}), ("signed", {"SIGN_VALUES": True})):
                params = {"LOCATION": url, "KEY_PREFIX": name, "OPTIONS": options}
                caches[name] = HACache(url, params)
                caches[name].set("k", value, None)
            samples: dict[str, dict[str, list[float]]] = {n: {"get": [], "set": []} for n in caches}
            for _ in range(rounds):
                for name in random.sample(list(caches), len(caches)):
                    cache = caches[name]
                    samples[name]["get"].append(per_call(cache.get, "k", 0.2))
                    samples[name]["set"].append(
                        per_call(lambda v, c=cache: c.set("k", v, None), value, 0.2)
                    )
            result = {
                name: {op: round(statistics.median(s) * 1e6, 1) for op, s in ops.items()}
                for name, ops in samples.items()
            }
        finally:
            close_all_routers()
            topo.down()
    return {"value": "1KB json-like, pickled", "us_per_call": result}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default="benchmarks/results/values.json")
    args = parser.parse_args()
    rows = codec_table(args.rounds)
    print(f"{'data':<10} {'size':>5} {'compressor':>10} {'signed':>6} {'stored B':>9} "
          f"{'ratio':>6} {'dumps µs':>9} {'loads µs':>9}")  # fmt: skip
    for r in rows:
        print(
            f"{r['data']:<10} {r['size']:>5} {r['compressor']:>10} {r['signed']!s:>6} "
            f"{r['stored_bytes']:>9} {r['ratio']:>6.3f} {r['dumps_us']:>9.2f} {r['loads_us']:>9.2f}"
        )
    e2e = end_to_end(args.rounds)
    print("\nend to end, 1 KB value, one local redis-server (µs per call, median):")
    for name, ops in e2e["us_per_call"].items():
        print(f"  {name:<7} get {ops['get']:>7.1f}   set {ops['set']:>7.1f}")
    write_results(args.json, rounds=args.rounds, codec=rows, end_to_end=e2e)


def write_results(path: str, **results: Any) -> None:
    """``results`` as JSON at ``path``, with the Python version and machine they ran on."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine()}
    out.write_text(json.dumps({**meta, **results}, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
