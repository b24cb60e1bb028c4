#!/usr/bin/env python3
"""``delete_pattern`` over many keys: hacache on 3 shards against django-redis, same run.

Run from the repository root::

    python benchmarks/delete_pattern.py [--keys N] [--others N] [--repeat R] [--json PATH]
    python benchmarks/delete_pattern.py --quick      # 10,000 keys, 2 repeats: a smoke test
    python benchmarks/delete_pattern.py --replot     # table and plot again from the JSON

Issue 12's target: ``delete_pattern`` over 100,000 keys on 3 shards, timed against
django-redis's on one server in the same run (hacache scans its shards concurrently, all shards
in one round trip per step, so it should be faster).

It starts four throw-away Redis servers with the project's launcher (``Topology(shards=4)``):
the first three are hacache's shards and also django-redis's ``ShardClient``'s servers, the
fourth is django-redis's default client's single server. Django is configured once, one cache
alias per backend, each with its own KEY_PREFIX.

One *trial* is one (backend, itersize) pair: every server is flushed, the backend gets ``--keys``
matching keys (``page:{i}``) and ``--others`` non-matching ones (``keep:{i}``), written in bulk
(``set_many`` in chunks of 1,000; for ``ShardClient``, whose ``set_many`` is one SET per key,
redis-py pipelines to the server its own ring picks, with its own key and encoding), without
expiry. The backend's raw keys are then checked with redis-py (DBSIZE and SCAN) to be exactly
what was written, ``delete_pattern("page:*", itersize=...)`` is timed alone (wall clock,
``time.perf_counter``, after a ``gc.collect``), and the result is checked: the count returned is
``--keys``, no matching key is left, and every non-matching key is still there (again DBSIZE and
SCAN on the raw servers, against the backend's own ``make_key``). Each repeat runs every trial
once, the trial order rotating from repeat to repeat so machine noise is shared out.

Itersizes: each backend's default (``None``: no COUNT, so Redis scans ~10 slots a step) and
1,000. The table gives the median, min and max seconds over repeats, keys deleted per second
(from the median) and the ratio to django-redis on one server at the same itersize (its median
time over this one's, so above 1 is faster). JSON goes to ``benchmarks/results/
delete_pattern.json`` (git-ignored), the plot to ``benchmarks/plots/delete_pattern.png``
(committed).

What the backends do: hacache SCANs every shard at once, each step's UNLINK of the keys found
riding in the same round trip as the next SCAN. django-redis's default client SCANs its one
server and queues one DEL per key in a pipeline sent at the end. django-redis's ``ShardClient``
SCANs its servers one after the other, then sends all the keys found, in one DEL, to every
server.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The same set-up helpers as the backend benchmark (run from the repository root, this
# script's folder is on sys.path).
from backends import _expect, _plain, machine_description

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "benchmarks" / "results" / "delete_pattern.json"
DEFAULT_PNG = REPO / "benchmarks" / "plots" / "delete_pattern.png"

PATTERN = "page:*"
VALUE = "v" * 32
CHUNK = 1000
ITERSIZES: tuple[int | None, ...] = (None, 1000)
# alias -> (label, servers it uses: indexes into the topology's master URLs)
BACKENDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "hacache": ("hacache, 3 shards", (0, 1, 2)),
    "django_redis": ("django-redis, 1 server", (3,)),
    "django_redis_shard": ("django-redis ShardClient, 3 servers", (0, 1, 2)),
}
BASELINE = "django_redis"


@dataclass(frozen=True)
class Trial:
    alias: str
    itersize: int | None

    @property
    def name(self) -> str:
        return f"{self.alias}[itersize={self.itersize}]"


# --------------------------------------------------------------------------- set-up


def caches_setting(urls: list[str]) -> dict[str, dict[str, Any]]:
    plain = [_plain(u) for u in urls]
    return {
        "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "hacache": {"BACKEND": "hacache.HACache", "LOCATION": urls[:3], "KEY_PREFIX": "hc"},
        "django_redis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": plain[3],
            "KEY_PREFIX": "dr",
        },
        "django_redis_shard": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": plain[:3],
            "KEY_PREFIX": "drs",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"},
        },
    }


def configure_django(urls: list[str]) -> dict[str, Any]:
    import django
    from django.conf import settings

    settings.configure(CACHES=caches_setting(urls), USE_TZ=True)
    django.setup()
    from django.core.cache import caches

    return {alias: caches[alias] for alias in BACKENDS}


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def fill(alias: str, cache: Any, keys: list[str]) -> None:
    """Write ``keys`` without expiry, in bulk."""
    if alias != "django_redis_shard":
        for chunk in _chunks(keys, CHUNK):
            cache.set_many(dict.fromkeys(chunk, VALUE), timeout=None)
        return
    client = cache.client  # django-redis's ShardClient: route with its own ring
    value = client.encode(VALUE)
    for chunk in _chunks(keys, CHUNK):
        pipes: dict[int, Any] = {}
        for key in chunk:
            raw = client.make_key(key)
            server = client.get_server(raw)
            pipe = pipes.get(id(server))
            if pipe is None:
                pipe = pipes[id(server)] = server.pipeline(transaction=False)
            pipe.set(raw, value)
        for pipe in pipes.values():
            pipe.execute()


def raw_keys(servers: list[Any]) -> tuple[int, set[str]]:
    """(total DBSIZE, every key by SCAN) over the given redis-py clients."""
    size = sum(s.dbsize() for s in servers)
    found: set[str] = set()
    for s in servers:
        found.update(k.decode() for k in s.scan_iter(count=1000))
    return size, found


# --------------------------------------------------------------------------- one trial


def run_trial(
    trial: Trial,
    cache: Any,
    servers: list[Any],
    every_server: list[Any],
    matching: list[str],
    others: list[str],
) -> float:
    for s in every_server:
        s.flushall()
    fill(trial.alias, cache, matching)
    fill(trial.alias, cache, others)
    expected_kept = {cache.make_key(k) for k in others}
    expected_all = expected_kept | {cache.make_key(k) for k in matching}
    size, found = raw_keys(servers)
    _expect(size == len(expected_all), f"{trial.name}: DBSIZE {size} after the fill")
    _expect(found == expected_all, f"{trial.name}: the raw keys are not the backend's keys")
    gc.collect()
    started = time.perf_counter()
    count = cache.delete_pattern(PATTERN, itersize=trial.itersize)
    took = time.perf_counter() - started
    _expect(count == len(matching), f"{trial.name}: delete_pattern answered {count}")
    size, found = raw_keys(servers)
    _expect(size == len(others), f"{trial.name}: DBSIZE {size} after delete_pattern")
    _expect(found == expected_kept, f"{trial.name}: kept keys differ after delete_pattern")
    return took


# --------------------------------------------------------------------------- report


def summarise(times: dict[Trial, list[float]], keys: int) -> list[dict[str, Any]]:
    medians = {t: statistics.median(v) for t, v in times.items()}
    rows = []
    for trial, values in times.items():
        base = medians[Trial(BASELINE, trial.itersize)]
        rows.append(
            {
                "backend": trial.alias,
                "label": BACKENDS[trial.alias][0],
                "itersize": trial.itersize,
                "median_s": medians[trial],
                "min_s": min(values),
                "max_s": max(values),
                "keys_per_s": keys / medians[trial],
                "speedup_vs_django_redis_1_server": base / medians[trial],
                "seconds": values,
            }
        )
    return rows


def report(rows: list[dict[str, Any]], keys: int, others: int, repeat: int) -> str:
    head = (
        f"delete_pattern({PATTERN!r}): {keys:,} matching + {others:,} other keys, "
        f"median of {repeat} repeat(s)"
    )
    columns = ("backend", "itersize", "median s", "min s", "max s", "keys/s", "vs dr-1")
    table = [
        (
            r["label"],
            "default" if r["itersize"] is None else str(r["itersize"]),
            f"{r['median_s']:.3f}",
            f"{r['min_s']:.3f}",
            f"{r['max_s']:.3f}",
            f"{r['keys_per_s']:,.0f}",
            f"{r['speedup_vs_django_redis_1_server']:.2f}x",
        )
        for r in rows
    ]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(columns)]
    lines = [head, ""]
    lines.append(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    for row in table:
        lines.append(
            "  ".join(
                v.ljust(w) if i < 2 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines.append("")
    lines.append("vs dr-1: django-redis on one server's median time / this one's, same itersize")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], keys: int, repeat: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(BACKENDS)
    for i, alias in enumerate(BACKENDS):
        mine = [
            next(r for r in rows if r["backend"] == alias and r["itersize"] == it)
            for it in ITERSIZES
        ]
        xs = [x + (i - (len(BACKENDS) - 1) / 2) * width for x in range(len(ITERSIZES))]
        medians = [r["median_s"] for r in mine]
        low = [r["median_s"] - r["min_s"] for r in mine]
        high = [r["max_s"] - r["median_s"] for r in mine]
        ax.bar(xs, medians, width, yerr=[low, high], capsize=4, label=BACKENDS[alias][0])
        for x, r in zip(xs, mine, strict=True):
            ax.annotate(
                f"{r['median_s']:.2f} s",
                (x, r["max_s"]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(ITERSIZES)))
    ax.set_xticklabels(
        ["itersize default (COUNT 10)" if it is None else f"itersize {it}" for it in ITERSIZES]
    )
    ax.set_ylabel("seconds (median; bars: min to max)")
    ax.set_title(f"delete_pattern over {keys:,} keys, {repeat} repeats")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--keys", type=int, default=None, help="matching keys (default 100,000)")
    p.add_argument("--others", type=int, default=None, help="other keys (default 20,000)")
    p.add_argument("--repeat", type=int, default=None, help="repeats (default 5)")
    p.add_argument("--quick", action="store_true", help="10,000 + 2,000 keys, 2 repeats")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    p.add_argument("--png", type=Path, default=DEFAULT_PNG, help="where to write the plot")
    p.add_argument("--replot", action="store_true", help="no run: table and plot from --json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.replot:
        saved = json.loads(args.json.read_text())
        c = saved["config"]
        print(report(saved["results"], c["matching_keys"], c["other_keys"], c["repeat"]))
        plot(saved["results"], c["matching_keys"], c["repeat"], args.png)
        print(f"\nplot written to {args.png}")
        return 0
    keys = args.keys if args.keys is not None else (10_000 if args.quick else 100_000)
    others = args.others if args.others is not None else keys // 5
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 5)
    if keys < 1 or others < 0 or repeat < 1:
        raise SystemExit("--keys and --repeat must be at least 1, --others at least 0")
    matching = [f"page:{i}" for i in range(keys)]
    kept = [f"keep:{i}" for i in range(others)]

    import redis

    from hacache.topology import Topology

    trials = [Trial(alias, itersize) for itersize in ITERSIZES for alias in BACKENDS]
    times: dict[Trial, list[float]] = {t: [] for t in trials}
    with tempfile.TemporaryDirectory(prefix="hacache-bench-") as run_dir:
        topology = Topology(run_dir, shards=4)
        servers: list[Any] = []
        try:
            topology.up()
            urls = topology.master_urls()
            servers = [redis.Redis.from_url(_plain(u)) for u in urls]
            caches = configure_django(urls)
            machine = machine_description(urls[0])
            for r in range(repeat):
                shift = r % len(trials)
                for trial in trials[shift:] + trials[:shift]:
                    mine = [servers[i] for i in BACKENDS[trial.alias][1]]
                    took = run_trial(trial, caches[trial.alias], mine, servers, matching, kept)
                    times[trial].append(took)
                    print(f"  repeat {r + 1}/{repeat} {trial.name}: {took:.3f} s", file=sys.stderr)
            for s in servers:
                s.flushall()
        finally:
            for s in servers:
                s.close()
            topology.down()
    if hasattr(os, "getloadavg"):
        machine["load_average_after"] = list(os.getloadavg())
    rows = summarise(times, keys)
    results = {
        "machine": machine,
        "config": {
            "pattern": PATTERN,
            "matching_keys": keys,
            "other_keys": others,
            "repeat": repeat,
            "itersizes": list(ITERSIZES),
            "servers": "Topology(shards=4): hacache and ShardClient on the first 3, "
            "django-redis's default client on the 4th",
            "fill": f"set_many in chunks of {CHUNK} (ShardClient: redis-py pipelines along "
            "its own ring), no expiry",
            "timing": "time.perf_counter around delete_pattern alone, after gc.collect; "
            "trial order rotates every repeat",
            "checks": "count returned == matching keys; DBSIZE and SCAN on the raw servers "
            "before (exactly the keys written) and after (exactly the other keys)",
            "caches": caches_setting(urls),
        },
        "results": rows,
    }
    print(report(rows, keys, others, repeat))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    plot(rows, keys, repeat, args.png)
    print(f"\nresults written to {args.json}, plot to {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
