#!/usr/bin/env python3
"""Failover report: hacache and django-redis's SentinelClient on one Sentinel service, under load.

Run from the repository root::

    python benchmarks/failover.py [--seconds 12] [--kill-at 4] [--down-after-ms 1000]
                                  [--mode kill|pause] [--json PATH] [--png PATH]
                                  [--failover-timeout-ms 3000] [--wait-replicas N]
                                  [--hacache-options JSON] [--ops PATH]

Defaults write ``benchmarks/results/failover-MODE.json``, the kill plot to
``benchmarks/plots/failover.png`` (committed) and the pause plot next to the JSON; every node's
log is copied to ``benchmarks/results/failover-MODE-logs/``; ``--ops`` also saves every operation.

It starts one shard (``shard0``: a master, two replicas) watched by three Sentinels, then runs
two load generators at once against that shard, each in its own spawned process so neither
shares a GIL, a pool or a Sentinel client with the other: hacache through its ``sentinel://``
LOCATION, and django-redis with its ``SentinelClient``. At ``--kill-at`` seconds the current
master gets SIGKILL (``--mode pause``: SIGSTOP, and SIGCONT once the load has stopped), and
every Sentinel's events are recorded, so the report can say when the promotion happened and
how long each backend took to notice.

Each generator process runs two threads over the same few keys:

- the *writer* lane does ``set(key, version)`` then ``get(key)`` in a tight loop (read your
  own write: the value must be at least the version just acknowledged);
- the *reader* lane only does ``get(key)``, so that reads are not queued behind a write that is
  waiting for Sentinel's promotion: otherwise the read gap could never be shorter than the
  write gap, whatever the backend does.

A get is *wrong* when it returns a version older than the newest one the process had been
acknowledged for that key when the get started, or nothing (every key is written before the
load starts, without expiry). Every operation's start (``time.monotonic``, which all processes
on Linux share), latency and outcome are recorded; the parent turns them into a table, a JSON
file and a PNG (latency p99 and errors per 50 ms, with the kill and the ``+switch-master``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import math
import os
import pickle
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PLOTS = REPO / "benchmarks" / "plots"

SHARD = "shard0"
KEYS = 4  # "a few keys": each one is written and read every few operations
BIN = 0.050  # seconds per bin in the plot and in the JSON series
SLOW = 0.100  # seconds: such operations are also drawn one by one, from start to end
DURING_TAIL = 1.0  # "during" the failover runs from the kill to one second after the switch
SOCKET_TIMEOUT = 0.25
SOCKET_CONNECT_TIMEOUT = 0.25
HACACHE_OPTIONS: dict[str, Any] = {
    "FAILOVER_TIMEOUT": 3,
    "SOCKET_TIMEOUT": SOCKET_TIMEOUT,
    "SOCKET_CONNECT_TIMEOUT": SOCKET_CONNECT_TIMEOUT,
}
BACKENDS = ("hacache", "django_redis")
LABELS = {"hacache": "hacache", "django_redis": "django-redis"}
COLORS = {"hacache": "tab:blue", "django_redis": "tab:orange"}

# What the team asked of hacache through a master kill.
TARGET_READ_GAP = 0.050
TARGET_WRITE_RESUME = 0.100

# Operation records: (start, latency, op, lane, status, detail): detail is the error class name,
# "key:value<floor" for a wrong read, or "".
SET, GET = 0, 1
WRITER, READER = 0, 1
OK, ERROR, STALE, MISSING = 0, 1, 2, 3
Record = tuple[float, float, int, int, int, str]
RECORD_FIELDS = (
    "start_ms (from the kill)", "latency_ms", "op (0 set, 1 get)", "lane (0 writer, 1 reader)",
    "status (0 ok, 1 error, 2 stale, 3 missing)", "error class, or key:value<floor if wrong",
)  # fmt: skip


# --------------------------------------------------------------------------- load generator


def cache_settings(backend: str, topo: Any, hacache_options: dict[str, Any]) -> dict[str, Any]:
    """The CACHES entry for one backend; distinct KEY_PREFIXes, so they never share a key."""
    if backend == "hacache":
        location = next(u for u in topo.sentinel_urls() if f"/{SHARD}/" in u)
        return {
            "BACKEND": "hacache.HACache",
            "LOCATION": [location],  # a list: one string would be split at its commas
            "KEY_PREFIX": "failover-hacache",
            "OPTIONS": dict(hacache_options),
        }
    # django-redis 7.0 needs its Sentinel connection factory as well as the client class:
    # without CONNECTION_FACTORY (or the global DJANGO_REDIS_CONNECTION_FACTORY setting) the
    # plain factory builds SentinelConnectionPool with no service name or Sentinel manager, and
    # the first call fails with a TypeError.
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://{SHARD}/0",
        "KEY_PREFIX": "failover-django-redis",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.SentinelClient",
            "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
            "CONNECTION_POOL_CLASS": "redis.sentinel.SentinelConnectionPool",
            "SENTINELS": [list(a) for a in topo.sentinel_addresses()],
            "SOCKET_TIMEOUT": SOCKET_TIMEOUT,
            "SOCKET_CONNECT_TIMEOUT": SOCKET_CONNECT_TIMEOUT,
        },
    }


class _Recorder:
    """Per-process outcome log; lanes append tuples (atomic under the GIL, so no lock)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.samples: dict[str, list[tuple[float, str]]] = {}  # a few messages per error class

    def error(self, start: float, op: int, lane: int, exc: BaseException) -> None:
        now = time.monotonic()
        name = type(exc).__name__
        self.records.append((start, now - start, op, lane, ERROR, name))
        kept = self.samples.setdefault(name, [])
        if len(kept) < 5:
            kept.append((start, str(exc)[:300]))


def _get(
    cache: Any, key: str, floor: int, lane: int, rec: _Recorder, append: Callable[..., Any]
) -> None:
    start = time.monotonic()
    try:
        value = cache.get(key)
    except Exception as exc:
        rec.error(start, GET, lane, exc)
        return
    status = MISSING if value is None else STALE if value < floor else OK
    detail = "" if status == OK else f"{key}:{value}<{floor}"  # which versions went missing
    append((start, time.monotonic() - start, GET, lane, status, detail))


def _writer_lane(
    cache: Any, keys: Sequence[str], acked: list[int], stop_at: float, rec: _Recorder
) -> None:
    """set(key, version) then get(key): writes, and reading one's own write right after."""
    append = rec.records.append
    versions = list(acked)
    n = 0
    while True:
        start = time.monotonic()
        if start >= stop_at:
            return
        i = n % len(keys)
        n += 1
        versions[i] += 1
        try:
            cache.set(keys[i], versions[i], timeout=None)
        except Exception as exc:
            rec.error(start, SET, WRITER, exc)
        else:
            append((start, time.monotonic() - start, SET, WRITER, OK, ""))
            acked[i] = versions[i]
        _get(cache, keys[i], acked[i], WRITER, rec, append)


def _reader_lane(
    cache: Any, keys: Sequence[str], acked: list[int], stop_at: float, rec: _Recorder
) -> None:
    """Gets only: whether reads go on while writes wait for a new master."""
    append = rec.records.append
    n = 0
    while time.monotonic() < stop_at:
        i = n % len(keys)
        n += 1
        _get(cache, keys[i], acked[i], READER, rec, append)


class _ListHandler(logging.Handler):
    """Keeps hacache's own log lines with a monotonic timestamp: evidence of what it saw."""

    def __init__(self, sink: list[tuple[float, str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append((time.monotonic(), record.levelname, record.getMessage()))


def generate(
    backend: str,
    entry: dict[str, Any],
    seconds: float,
    ready: Any,
    go: Any,
    start_at: Any,
    out: str,
) -> None:
    """Child process: configure Django with one cache, warm up, run both lanes, save records."""
    import django
    from django.conf import settings

    settings.configure(CACHES={"default": entry}, USE_TZ=True)
    django.setup()
    from django.core.cache import caches

    log: list[tuple[float, str, str]] = []
    hacache_logger = logging.getLogger("hacache")
    hacache_logger.addHandler(_ListHandler(log))
    hacache_logger.setLevel(logging.DEBUG)
    hacache_logger.propagate = False

    keys = [f"k{i}" for i in range(KEYS)]
    cache = caches["default"]
    for key in keys:
        cache.set(key, 0, timeout=None)
    acked = [0] * KEYS
    master_moves: list[tuple[float, str]] = []
    if backend == "hacache":
        shard = cache._router.shards[SHARD]
        shard.master_listeners.append(
            lambda s: master_moves.append((time.monotonic(), s.master.address))
        )
    rec = _Recorder()
    warm = threading.Barrier(3)
    lanes = []
    for lane in (_writer_lane, _reader_lane):

        def run(lane: Callable[..., None] = lane) -> None:
            lane_cache = caches["default"]  # Django's caches are per thread
            for key in keys:  # warm this thread's connections up; not recorded
                lane_cache.get(key)
            warm.wait()
            go.wait(60)
            start, stop = start_at.value, start_at.value + seconds
            time.sleep(max(0.0, start - time.monotonic()))
            lane(lane_cache, keys, acked, stop, rec)

        lanes.append(threading.Thread(target=run, name=lane.__name__, daemon=True))
    for thread in lanes:
        thread.start()
    warm.wait()
    ready.set()
    for thread in lanes:
        thread.join()
    result = {
        "backend": backend,
        "records": rec.records,
        "samples": rec.samples,
        "log": log,
        "master_moves": master_moves,
    }
    with open(out, "wb") as fh:
        pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)


# --------------------------------------------------------------------------- Sentinel events


@dataclass(frozen=True)
class SentinelEvent:
    t: float
    sentinel: str
    channel: str
    data: str


class SentinelWatch(threading.Thread):
    """Records every event one Sentinel publishes, stamped when it arrives."""

    def __init__(self, name: str, host: str, port: int, sink: list[SentinelEvent]) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        import redis

        self.sentinel = name
        self.sink = sink
        self.stopping = threading.Event()
        self.client = redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("*")  # sent now: every later event reaches us

    def run(self) -> None:
        import redis

        while not self.stopping.is_set():
            try:
                message = self.pubsub.get_message(timeout=0.05)
            except redis.RedisError as exc:  # a sentinel is not the subject here; note it
                self.sink.append(SentinelEvent(time.monotonic(), self.sentinel, "!error", str(exc)))
                self.stopping.wait(0.1)
                continue
            if message and message.get("type") == "pmessage":
                channel, data = message["channel"], message["data"]
                self.sink.append(
                    SentinelEvent(time.monotonic(), self.sentinel, channel.decode(), data.decode())
                )

    def stop(self) -> None:
        self.stopping.set()
        self.join(2)
        with contextlib.suppress(Exception):
            self.pubsub.close()
            self.client.close()


def _first(events: list[SentinelEvent], channel: str, contains: str = SHARD) -> float | None:
    times = [e.t for e in events if e.channel == channel and contains in e.data.split()]
    return min(times) if times else None


# --------------------------------------------------------------------------- analysis


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest rank: always a latency that was really observed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _latency(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": _pct(values, 0.50) * 1000,
        "p99_ms": _pct(values, 0.99) * 1000,
        "max_ms": max(values) * 1000,
    }


def _longest_gap(done: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    """Longest stretch of [lo, hi] with no completion in it: (length, where it starts)."""
    edges = [lo, *sorted(t for t in done if lo <= t <= hi), hi]
    best, at = 0.0, lo
    for a, b in itertools.pairwise(edges):
        if b - a > best:
            best, at = b - a, a
    return best, at


def lost_versions(wrong: list[Record]) -> int:
    """Acknowledged versions some later read did not see: per key, the union of the ranges
    (value, floor] the wrong reads revealed (a missing value misses versions 0..floor).

    From the master (hacache's reads), that is data lost; from a replica, it may be lag.
    """
    ranges: dict[str, list[tuple[int, int]]] = {}
    for r in wrong:
        key, _, rest = r[5].partition(":")
        value, _, floor = rest.partition("<")
        low = -1 if value == "None" else int(value)
        ranges.setdefault(key, []).append((low, int(floor)))
    total = 0
    for spans in ranges.values():
        reach = None
        for low, high in sorted(spans):
            low = low if reach is None else max(low, reach)
            if high > low:
                total += high - low
                reach = high
    return total


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def summarize(
    result: dict[str, Any], start: float, stop: float, kill: float, switch: float | None
) -> dict[str, Any]:
    """One backend's numbers; every time is in ms relative to the kill unless named otherwise."""
    records: list[Record] = result["records"]
    reads = [r for r in records if r[2] == GET]
    writes = [r for r in records if r[2] == SET]
    during_end = (switch + DURING_TAIL) if switch is not None else stop

    def phase(r: Record) -> str:
        return "before" if r[0] < kill else "during" if r[0] < during_end else "after"

    def errors_by_class(rs: list[Record]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in rs:
            if r[4] == ERROR:
                counts[r[5]] = counts.get(r[5], 0) + 1
        return counts

    good_reads = [r[0] + r[1] for r in reads if r[4] == OK]
    good_writes = [r[0] + r[1] for r in writes if r[4] == OK]
    # From the last success before the kill to the end of the load: a stall the machine causes
    # before the kill is not the failover's doing; the longest one is reported as the noise floor.
    read_from = max((t for t in good_reads if t <= kill), default=start)
    write_from = max((t for t in good_writes if t <= kill), default=start)
    read_gap, read_gap_at = _longest_gap(good_reads, read_from, stop)
    write_gap, write_gap_at = _longest_gap(good_writes, write_from, stop)
    read_noise, _ = _longest_gap(good_reads, start, read_from)
    write_noise, _ = _longest_gap(good_writes, start, write_from)
    # Writes resumed where the outage (the longest write gap after the kill) ended.
    resumed = write_gap_at + write_gap if write_gap_at + write_gap < stop else None
    moves = result.get("master_moves") or []
    moved = moves[0][0] if moves else None
    first_write_after_move = (
        min((t for t in good_writes if t >= moved), default=None) if moved is not None else None
    )
    wrong = [r for r in reads if r[4] in (STALE, MISSING)]
    latency = {
        kind: {
            p: _latency([r[1] for r in rs if phase(r) == p]) for p in ("before", "during", "after")
        }
        for kind, rs in (("read", reads), ("write", writes))
    }
    before = [r for r in records if r[0] < kill]
    first_error = min((r[0] + r[1] for r in records if r[4] == ERROR), default=None)
    last_error = max((r[0] + r[1] for r in records if r[4] == ERROR), default=None)
    return {
        "ops": len(records),
        "reads": len(reads),
        "writes": len(writes),
        "ops_per_s_before_kill": len(before) / (kill - start) if kill > start else None,
        "read_errors": sum(r[4] == ERROR for r in reads),
        "write_errors": sum(r[4] == ERROR for r in writes),
        "read_errors_by_class": errors_by_class(reads),
        "write_errors_by_class": errors_by_class(writes),
        "first_error_ms": _ms(None if first_error is None else first_error - kill),
        "last_error_ms": _ms(None if last_error is None else last_error - kill),
        "error_samples": {
            name: [(_ms(t - kill), msg) for t, msg in kept]
            for name, kept in result["samples"].items()
        },
        "wrong_values": len(wrong),
        "acked_versions_missed": lost_versions(wrong),
        "wrong_stale": sum(r[4] == STALE for r in wrong),
        "wrong_missing": sum(r[4] == MISSING for r in wrong),
        "wrong_by_phase": {
            p: sum(phase(r) == p for r in wrong) for p in ("before", "during", "after")
        },
        "wrong_by_lane": {
            "writer (read own write)": sum(r[3] == WRITER for r in wrong),
            "reader": sum(r[3] == READER for r in wrong),
        },
        "read_gap_ms": _ms(read_gap),
        "read_gap_starts_ms": _ms(read_gap_at - kill),
        "write_gap_ms": _ms(write_gap),
        "write_gap_starts_ms": _ms(write_gap_at - kill),
        "read_gap_before_kill_ms": _ms(read_noise),
        "write_gap_before_kill_ms": _ms(write_noise),
        "writes_resumed_ms": _ms(None if resumed is None else resumed - kill),
        "switch_to_writes_resumed_ms": _ms(
            None if resumed is None or switch is None else resumed - switch
        ),
        "switch_to_client_moved_ms": _ms(
            None if moved is None or switch is None else moved - switch
        ),
        "client_moved_to_first_write_ms": _ms(
            None if first_write_after_move is None else first_write_after_move - moved
        ),
        "latency": latency,
        "client_moved_master_ms": [(_ms(t - kill), addr) for t, addr in moves],
        "log": [(_ms(t - kill), level, msg) for t, level, msg in result.get("log", [])],
    }


def series(result: dict[str, Any], start: float, stop: float, kill: float) -> dict[str, Any]:
    """Per-50 ms bins (by start for latency, by completion for errors), x relative to the kill."""
    n = math.ceil((stop - start) / BIN) + 1
    lat: dict[int, list[list[float]]] = {SET: [[] for _ in range(n)], GET: [[] for _ in range(n)]}
    errors = [0] * n
    wrong = [0] * n
    slow: list[tuple[float, float, int, int]] = []
    for t, latency, op, _lane, status, _ in result["records"]:
        lat[op][min(n - 1, int((t - start) / BIN))].append(latency)
        if latency >= SLOW and len(slow) < 1000:
            slow.append((round(t - kill, 4), round(latency * 1000, 2), op, status))
        done = min(n - 1, int((t + latency - start) / BIN))
        if status == ERROR:
            errors[done] += 1
        elif status in (STALE, MISSING):
            wrong[done] += 1

    def p99(bins: list[list[float]]) -> list[float | None]:
        return [_pct(b, 0.99) * 1000 if b else None for b in bins]

    return {
        "t": [round(start - kill + (i + 0.5) * BIN, 4) for i in range(n)],
        "read_p99_ms": p99(lat[GET]),
        "write_p99_ms": p99(lat[SET]),
        "errors": errors,
        "wrong": wrong,
        "slow_ops": slow,  # (start s, latency ms, op 0 set / 1 get, status 0 ok / 1 error ...)
    }


# --------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _lat_cell(d: dict[str, Any]) -> str:
    if not d["n"]:
        return "-"
    return f"{d['p50_ms']:.2f} / {d['p99_ms']:.1f} / {d['max_ms']:.0f}"


def table(report: dict[str, Any]) -> str:
    b = report["backends"]
    t = report["timeline_ms"]
    rows: list[tuple[str, ...]] = [
        ("", *(LABELS[k] for k in BACKENDS)),
        ("ops (reads / writes)", *(f"{b[k]['reads']:,} / {b[k]['writes']:,}" for k in BACKENDS)),
        ("ops/s before the kill", *(_fmt(b[k]["ops_per_s_before_kill"], 0) for k in BACKENDS)),
        ("read errors to the caller", *(_fmt(b[k]["read_errors"]) for k in BACKENDS)),
        ("write errors to the caller", *(_fmt(b[k]["write_errors"]) for k in BACKENDS)),
        (
            "wrong values (stale / missing)",
            *(
                f"{b[k]['wrong_values']:,} ({b[k]['wrong_stale']:,} / {b[k]['wrong_missing']:,})"
                for k in BACKENDS
            ),
        ),
        (
            "  acknowledged versions they missed",
            *(_fmt(b[k]["acked_versions_missed"]) for k in BACKENDS),
        ),
        (
            "  of which before / during / after",
            *(" / ".join(f"{v:,}" for v in b[k]["wrong_by_phase"].values()) for k in BACKENDS),
        ),
        (
            "read gap, ms (starts at kill+ms)",
            *(
                f"{_fmt(b[k]['read_gap_ms'])} ({_fmt(b[k]['read_gap_starts_ms'])})"
                for k in BACKENDS
            ),
        ),
        (
            "write gap, ms (starts at kill+ms)",
            *(
                f"{_fmt(b[k]['write_gap_ms'])} ({_fmt(b[k]['write_gap_starts_ms'])})"
                for k in BACKENDS
            ),
        ),
        (
            "  read / write gap before the kill (noise)",
            *(
                " / ".join(_fmt(b[k][f"{kind}_gap_before_kill_ms"]) for kind in ("read", "write"))
                for k in BACKENDS
            ),
        ),
        ("kill -> first +switch-master, ms", *(_fmt(t["switch_master"]) for _ in BACKENDS)),
        (
            "writes resumed, ms after +switch-master",
            *(_fmt(b[k]["switch_to_writes_resumed_ms"]) for k in BACKENDS),
        ),
        (
            "  +switch-master -> client moved, ms",
            *(_fmt(b[k]["switch_to_client_moved_ms"]) for k in BACKENDS),
        ),
    ]
    for kind in ("read", "write"):
        for p in ("before", "during", "after"):
            rows.append(
                (
                    f"{kind} p50/p99/max ms, {p}",
                    *(_lat_cell(b[k]["latency"][kind][p]) for k in BACKENDS),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """hacache against the team's goals; None: not applicable to this mode or not measured."""
    h = report["backends"]["hacache"]
    checks: list[tuple[str, bool | None, str]] = []
    if report["mode"] == "kill":
        checks.append(
            (
                f"reads keep succeeding through the kill, gap < {TARGET_READ_GAP * 1000:.0f} ms",
                h["read_errors"] == 0 and h["read_gap_ms"] < TARGET_READ_GAP * 1000,
                f"{h['read_errors']} read errors, longest read gap {h['read_gap_ms']} ms",
            )
        )
    else:
        checks.append(("read gap target (defined for a kill)", None, f"{h['read_gap_ms']} ms"))
    resume = h["switch_to_writes_resumed_ms"]
    checks.append(
        (
            f"writes resume within {TARGET_WRITE_RESUME * 1000:.0f} ms of +switch-master",
            None if resume is None else resume < TARGET_WRITE_RESUME * 1000,
            f"resumed {resume} ms after the first +switch-master (negative: before it)",
        )
    )
    checks.append(("zero wrong values", h["wrong_values"] == 0, f"{h['wrong_values']} wrong"))
    return checks


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels sharing time since the kill: p99 latency per 50 ms, and errors per 50 ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(12, 7), dpi=100, gridspec_kw={"height_ratios": [3, 2]}
    )
    for key in BACKENDS:
        s = report["series"][key]
        color, label = COLORS[key], LABELS[key]
        top.plot(s["t"], s["read_p99_ms"], color=color, lw=1.2, label=f"{label} get")
        top.plot(s["t"], s["write_p99_ms"], color=color, lw=1.2, ls="--", label=f"{label} set")
        bottom.step(
            s["t"], s["errors"], where="mid", color=color, lw=1.2, label=f"{label} errors",
            zorder=3 if key == "hacache" else 2,  # on top: its line is mostly a flat zero
        )  # fmt: skip
        if any(s["wrong"]):
            bottom.step(
                s["t"], s["wrong"], where="mid", color=color, lw=1, ls=":",
                label=f"{label} wrong values",
            )  # fmt: skip
        if s["slow_ops"]:
            starts, lats = [o[0] for o in s["slow_ops"]], [o[1] for o in s["slow_ops"]]
            ends = [a + b / 1000 for a, b in zip(starts, lats, strict=True)]
            top.hlines(
                lats, starts, ends, color=color, lw=3, alpha=0.35,
                label=f"{label} op > {SLOW * 1000:.0f} ms, start to end",
            )  # fmt: skip
    top.set_yscale("log")
    top.set_ylabel("p99 latency per 50 ms (ms, log)")
    bottom.set_ylabel("per 50 ms: errors, wrong values")
    what = "killed (SIGKILL)" if report["mode"] == "kill" else "paused (SIGSTOP)"
    bottom.set_xlabel(f"seconds since the master was {what}")
    switches = [item["first_ms"] / 1000 for item in report["switches"]]
    for ax in (top, bottom):
        ax.axvline(0, color="red", lw=1)
        for x in switches:
            ax.axvline(x, color="green", lw=1)
        ax.grid(alpha=0.3)
    top.text(0, 0.02, " kill" if report["mode"] == "kill" else " pause", color="red",
             transform=top.get_xaxis_transform(), va="bottom")  # fmt: skip
    for n, x in enumerate(switches):
        label = " +switch-master" if n == 0 else f" +switch-master #{n + 1}"
        top.text(x, 0.02, label, color="green", transform=top.get_xaxis_transform(),
                 va="bottom")  # fmt: skip
    top.legend(loc="upper left", fontsize=8, ncol=3)
    bottom.legend(loc="upper right", fontsize=9)
    errors = {k: b["read_errors"] + b["write_errors"] for k, b in report["backends"].items()}
    down_after = report["config"]["down_after_ms"]
    fig.suptitle(
        f"Master {report['mode']} on a Sentinel shard (down-after {down_after} ms), steady load. "
        f"Errors reaching the caller: hacache {errors['hacache']:,}, "
        f"django-redis {errors['django_redis']:,}",
        fontsize=12,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    # The PNG is committed: a 128-colour palette keeps it to a fraction of the RGBA size.
    from PIL import Image

    with Image.open(buffer) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MAXCOVERAGE)
        small.save(path, optimize=True)


# --------------------------------------------------------------------------- orchestration


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for dist in ("django", "redis", "django-redis", "hiredis"):
        try:
            out[dist] = version(dist)
        except Exception:
            out[dist] = "not installed"
    server = shutil.which("redis-server")
    if server:
        text = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        out["redis-server"] = text.split("v=")[1].split()[0] if "v=" in text else text.strip()
    return out


def _sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing

    from hacache.topology import Topology

    hacache_options = {**HACACHE_OPTIONS, **json.loads(args.hacache_options)}
    if args.wait_replicas:
        hacache_options["WAIT_REPLICAS"] = args.wait_replicas
    ctx = multiprocessing.get_context("spawn")
    run_dir = Path(tempfile.mkdtemp(prefix="hacache-failover-"))
    topo = Topology(
        run_dir, shards=1, replicas=2, sentinels=3, down_after_ms=args.down_after_ms,
        failover_timeout_ms=args.failover_timeout_ms,
    )  # fmt: skip
    events: list[SentinelEvent] = []
    watches: list[SentinelWatch] = []
    procs: dict[str, Any] = {}
    victim: str | None = None
    paused = False
    try:
        topo.up()
        entries = {b: cache_settings(b, topo, hacache_options) for b in BACKENDS}
        for node in topo.nodes():
            if node.is_sentinel:
                watches.append(SentinelWatch(node.name, node.host, node.port, events))
        for watch in watches:
            watch.start()
        go, start_at = ctx.Event(), ctx.Value("d", 0.0)
        readies = {b: ctx.Event() for b in BACKENDS}
        outs = {b: str(run_dir / f"{b}.pickle") for b in BACKENDS}
        for b in BACKENDS:
            procs[b] = ctx.Process(
                target=generate,
                args=(b, entries[b], args.seconds, readies[b], go, start_at, outs[b]),
                name=f"load-{b}",
            )
            procs[b].start()
        for b in BACKENDS:
            if not readies[b].wait(60):
                raise RuntimeError(
                    f"the {b} generator did not get ready (exit {procs[b].exitcode})"
                )
        victim = topo.masters()[SHARD].name
        old_master = next(n for n in topo.nodes() if n.name == victim)
        start = time.monotonic() + 0.3
        start_at.value = start
        go.set()
        stop = start + args.seconds
        _sleep_until(start + args.kill_at)
        kill = time.monotonic()
        if args.mode == "kill":
            topo.kill(victim)
        else:
            topo.pause(victim)
            paused = True
        signalled = time.monotonic()
        for b in BACKENDS:
            procs[b].join(args.seconds + 30)
            if procs[b].exitcode != 0:
                raise RuntimeError(f"the {b} generator failed (exit {procs[b].exitcode})")
        if paused:
            topo.resume(victim)
            paused = False
        time.sleep(0.2)  # late events (the other sentinels' +switch-master) still count
        new_master = topo.masters()[SHARD]
        results = {}
        for b in BACKENDS:
            with open(outs[b], "rb") as fh:
                results[b] = pickle.load(fh)
    finally:
        for watch in watches:
            watch.stop()
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        if paused and victim is not None:
            with contextlib.suppress(Exception):
                topo.resume(victim)
        logs = RESULTS / f"failover-{args.mode}-logs"
        with contextlib.suppress(OSError):
            shutil.rmtree(logs, ignore_errors=True)
            logs.mkdir(parents=True, exist_ok=True)
            for node in topo.nodes():
                if Path(node.log).exists():
                    shutil.copy(node.log, logs / Path(node.log).name)
        topo.down()
        shutil.rmtree(run_dir, ignore_errors=True)

    switch = _first(events, "+switch-master")
    timeline = {
        "kill_call_returned": signalled - kill,
        "sdown": _first(events, "+sdown", "master"),
        "odown": _first(events, "+odown"),
        "elected_leader": _first(events, "+elected-leader"),
        "selected_replica": _first(events, "+selected-slave"),
        "promoted": _first(events, "+promoted-slave"),
        "failover_end": _first(events, "+failover-end"),
        "switch_master": switch,
    }
    timeline_ms: dict[str, float | None] = {
        k: _ms(v if k == "kill_call_returned" else v - kill)
        for k, v in timeline.items()
        if v is not None
    }
    timeline_ms.setdefault("switch_master", None)
    # One entry per promotion (a spurious second failover shows up as a second entry), with the
    # time each sentinel announced it: they learn of it at different times.
    switches: list[dict[str, Any]] = []
    for e in sorted(events, key=lambda e: e.t):
        words = e.data.split()
        if e.channel != "+switch-master" or words[0] != SHARD:
            continue
        to = f"{words[3]}:{words[4]}"
        if not switches or switches[-1]["to"] != to:
            switches.append({"from": f"{words[1]}:{words[2]}", "to": to, "per_sentinel_ms": {}})
        switches[-1]["per_sentinel_ms"].setdefault(e.sentinel, _ms(e.t - kill))
    for item in switches:
        item["first_ms"] = min(item["per_sentinel_ms"].values())
    report: dict[str, Any] = {
        "mode": args.mode,
        "command": " ".join(["python", "benchmarks/failover.py", *sys.argv[1:]]),
        "config": {
            "seconds": args.seconds,
            "kill_at": args.kill_at,
            "down_after_ms": args.down_after_ms,
            "failover_timeout_ms": args.failover_timeout_ms,
            "topology": "1 shard (master + 2 replicas), 3 sentinels, quorum 2",
            "keys": KEYS,
            "lanes": "per process: writer (set then get) and reader (get) threads",
            "killed": f"{victim} ({old_master.host}:{old_master.port})",
            "new_master": f"{new_master.name} ({new_master.host}:{new_master.port})",
        },
        "hacache": entries["hacache"],
        "django_redis": entries["django_redis"],
        "versions": _versions(),
        "timeline_ms": timeline_ms,
        "switches": switches,
        "sentinel_events": [
            {"ms": _ms(e.t - kill), "sentinel": e.sentinel, "channel": e.channel, "data": e.data}
            for e in sorted(events, key=lambda e: e.t)
        ],
        "backends": {b: summarize(results[b], start, stop, kill, switch) for b in BACKENDS},
        "series": {b: series(results[b], start, stop, kill) for b in BACKENDS},
    }
    report["targets"] = [
        {"target": name, "met": met, "measured": measured}
        for name, met, measured in targets(report)
    ]
    if args.ops:
        # Every operation, ms relative to the kill: for digging into one stall or one error.
        raw = {
            b: [
                (round((r[0] - kill) * 1000, 3), round(r[1] * 1000, 3), *r[2:])
                for r in results[b]["records"]
            ]
            for b in BACKENDS
        }
        args.ops.parent.mkdir(parents=True, exist_ok=True)
        args.ops.write_text(json.dumps({"fields": RECORD_FIELDS, **raw}) + "\n")
    return report


def print_report(report: dict[str, Any]) -> None:
    c, t = report["config"], report["timeline_ms"]
    print(
        f"\nmode {report['mode']}: {c['topology']}; down-after {c['down_after_ms']} ms, "
        f"failover-timeout {c['failover_timeout_ms']} ms; {c['seconds']} s of load, "
        f"{c['killed']} {'killed' if report['mode'] == 'kill' else 'paused'} at {c['kill_at']} s"
    )
    print(f"hacache OPTIONS: {json.dumps(report['hacache']['OPTIONS'])}")
    shown = {k: v for k, v in report["django_redis"]["OPTIONS"].items() if k != "SENTINELS"}
    print(f"django-redis OPTIONS: {json.dumps(shown)} + SENTINELS")
    print(
        "Sentinel, ms after the kill: "
        + ", ".join(f"{k} {v}" for k, v in t.items() if k != "kill_call_returned")
    )
    for n, item in enumerate(report["switches"], 1):
        per = ", ".join(f"{k} {v}" for k, v in sorted(item["per_sentinel_ms"].items()))
        print(f"promotion {n}: {item['from']} -> {item['to']}; +switch-master, ms: {per}")
    if len(report["switches"]) > 1:
        print(
            f"NOTE: Sentinel failed over {len(report['switches'])} times in this run; every "
            "number after the first promotion includes the later ones."
        )
    moves = report["backends"]["hacache"]["client_moved_master_ms"]
    print(f"hacache moved to the new master at, ms: {moves or 'never'}")
    print()
    print(table(report))
    print()
    for key in BACKENDS:
        b = report["backends"][key]
        for kind in ("read", "write"):
            counts = b[f"{kind}_errors_by_class"]
            if counts:
                print(f"{LABELS[key]} {kind} errors: {counts}")
    print("\nhacache targets:")
    for item in report["targets"]:
        mark = {True: "MET", False: "NOT MET", None: "n/a"}[item["met"]]
        print(f"  [{mark}] {item['target']}: {item['measured']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds of load")
    parser.add_argument("--kill-at", type=float, default=4.0, help="seconds into the load")
    parser.add_argument("--down-after-ms", type=int, default=1000)
    parser.add_argument("--failover-timeout-ms", type=int, default=3000)
    parser.add_argument("--mode", choices=("kill", "pause"), default="kill")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/failover-MODE.json")
    parser.add_argument(
        "--png",
        type=Path,
        help="default: benchmarks/plots/failover.png for kill, benchmarks/results/ for pause",
    )
    parser.add_argument(
        "--hacache-options", default="{}", help="JSON merged into hacache's OPTIONS"
    )
    parser.add_argument("--wait-replicas", type=int, default=0, help="hacache WAIT_REPLICAS")
    parser.add_argument("--ops", type=Path, help="also write every operation to this JSON file")
    args = parser.parse_args(argv)
    if not 0 < args.kill_at < args.seconds:
        parser.error("--kill-at must fall inside --seconds")
    report = run(args)
    print_report(report)
    json_path = args.json or RESULTS / f"failover-{args.mode}.json"
    png_path = args.png or (
        PLOTS / "failover.png" if args.mode == "kill" else RESULTS / "failover-pause.png"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, png_path)
    print(f"\nJSON: {json_path}\nPNG:  {png_path}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # Ctrl-C and TERM: clean up
    sys.exit(main())
