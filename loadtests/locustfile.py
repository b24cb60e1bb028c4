"""Locust model of a real site on ``testproject``: what the cache backend sees in production.

Two kinds of visitors share one Zipf-distributed key space (YCSB's default skew, s = 0.99):

* ``Reader``: anonymous traffic. Whole cached pages (``/cached/``, ``cache_page``), the home page
  (template fragment cache), pages built from fragments (``/fragments/``: one ``get_many``, a
  ``set_many`` when fragments expire) and low-level item reads (``/item/<key>/``).
* ``Member``: visitors with a cache-backed session (``/session/``), the hit counter
  (``add`` + ``incr``), and the same item traffic.

Item traffic is the configurable read/write mix: each ``/item/`` call is a POST (a write that must
invalidate every near-cache) with probability ``--write-ratio``, else a GET. ``loadtests/run.py``
prefills the key space so reads hit. Options (also settable by environment variable)::

    --key-space N      LOADTEST_KEY_SPACE     item keys k0..k(N-1)              (10000)
    --zipf-s S         LOADTEST_ZIPF_S        popularity ~ 1 / rank**S          (0.99)
    --write-ratio W    LOADTEST_WRITE_RATIO   share of item calls that write    (0.05)
    --value-bytes B    LOADTEST_VALUE_BYTES   size of item values               (512)
    --fragments N      LOADTEST_FRAGMENTS     fragments per /fragments/ page    (20)
    --seed S           LOADTEST_SEED          makes every user's choices repeatable (1)
    --warmup S         LOADTEST_WARMUP        seconds before measurement starts (5)
    --stats-json PATH  LOADTEST_STATS_JSON    where to write the exact measurements

Locust's own statistics round response times to whole milliseconds, too coarse for a backend
whose cache calls take tens of microseconds, so every request's exact time is also recorded
after the warm-up and written to ``--stats-json`` when the test stops, together with checks
locust cannot express: item hit ratio, fragment hit ratio and session coherence (a visitor's
session counter must go up by one per request even when consecutive requests land on different
gunicorn workers, which is exactly what a stale near-cache would break).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from array import array
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment

from loadtests.workload import DEFAULTS, ZipfKeys, item_key, item_value

PERCENTILES = (50, 90, 95, 99, 99.9)


class Recorder:
    """Exact per-request timings and site-level checks for the measured window."""

    def __init__(self) -> None:
        self.measuring = False
        self.started_at = 0.0
        self.stopped_at = 0.0
        self.times: defaultdict[tuple[str, str], array[float]] = defaultdict(lambda: array("d"))
        self.failures: Counter[tuple[str, str]] = Counter()
        # Every measured request's end time, duration and outcome, for the per-second bins.
        self.ends = array("d")
        self.durations = array("d")
        self.failed = array("b")
        self.failure_kinds: Counter[str] = Counter()
        self.checks: Counter[str] = Counter()
        self.cpu_warnings = 0
        self.warmup_failures = 0
        self.warmup_failure_kinds: Counter[str] = Counter()

    def start(self) -> None:
        """Drop everything seen so far (the warm-up) and start the measured window."""
        self.times.clear()
        self.ends, self.durations, self.failed = array("d"), array("d"), array("b")
        self.failures.clear()
        self.failure_kinds.clear()
        self.checks.clear()
        self.started_at = time.time()
        self.measuring = True

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        if exception is not None:
            kind = f"{request_type} {name}: {type(exception).__name__}: {exception}"
        if not self.measuring:
            if exception is not None:  # not measured, but never hidden
                self.warmup_failures += 1
                self.warmup_failure_kinds[kind] += 1
            return
        self.times[(request_type, name)].append(response_time)
        self.ends.append(time.time())
        self.durations.append(response_time)
        self.failed.append(exception is not None)
        if exception is not None:
            self.failures[(request_type, name)] += 1
            self.failure_kinds[kind] += 1

    def check(self, name: str, n: int = 1) -> None:
        if self.measuring:
            self.checks[name] += n

    def summary(self, environment: Environment) -> dict[str, Any]:
        """Everything run.py needs, in plain JSON types."""
        stopped = self.stopped_at or time.time()
        window = max(stopped - self.started_at, 1e-9) if self.started_at else 0.0
        endpoints = {}
        everything = array("d")
        for (method, name), times in sorted(self.times.items()):
            everything.extend(times)
            endpoints[f"{method} {name}"] = _describe(times, self.failures[(method, name)], window)
        runner = environment.runner
        return {
            "measured_from": self.started_at,
            "measured_to": stopped,
            "measured_seconds": window,
            "total": _describe(everything, sum(self.failures.values()), window),
            "endpoints": endpoints,
            "failure_kinds": dict(self.failure_kinds.most_common(20)),
            "warmup_failures": self.warmup_failures,
            "warmup_failure_kinds": dict(self.warmup_failure_kinds.most_common(20)),
            "checks": dict(self.checks),
            "bins": self.bins(),
            "cpu_warning": bool(runner and runner.cpu_warning_emitted) or self.cpu_warnings > 0,
            "cpu_warning_samples": self.cpu_warnings,
            "users": runner.user_count if runner else 0,
            "options": {key: getattr(environment.parsed_options, key) for key in DEFAULTS},
            "zipf_top_share": {
                str(k): KEYS.share_of_top(k) for k in (1, 10, 100, 1000) if KEYS is not None
            },
        }

    def bins(self, width: float = 1.0) -> list[dict[str, Any]]:
        """Requests, failures and p50/p99 per ``width`` s of the window, by completion time.

        The whole-window figures hide a failover; these show when errors and slow requests
        happened (``t``: the bin's start in seconds after the window opened).
        """
        grouped: defaultdict[int, list[float]] = defaultdict(list)
        failed: Counter[int] = Counter()
        for end, duration, bad in zip(self.ends, self.durations, self.failed, strict=True):
            index = max(0, int((end - self.started_at) // width))
            grouped[index].append(duration)
            failed[index] += bad
        out = []
        for index in range(max(grouped, default=-1) + 1):
            times = sorted(grouped.get(index, []))
            out.append(
                {
                    "t": index * width,
                    "requests": len(times),
                    "failures": failed[index],
                    "p50_ms": _percentile(times, 50),
                    "p99_ms": _percentile(times, 99),
                    "max_ms": times[-1] if times else math.nan,
                }
            )
        return out


def _percentile(sorted_times: list[float], p: float) -> float:
    """Nearest-rank percentile, the definition locust and most load tools use."""
    if not sorted_times:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_times)))
    return sorted_times[rank - 1]


def _describe(times: array[float], failures: int, window: float) -> dict[str, Any]:
    ordered = sorted(times)
    count = len(ordered)
    return {
        "requests": count,
        "failures": failures,
        "rps": count / window if window else 0.0,
        "mean_ms": sum(ordered) / count if count else math.nan,
        **{f"p{p:g}_ms": _percentile(ordered, p) for p in PERCENTILES},
        "max_ms": ordered[-1] if ordered else math.nan,
    }


RECORDER = Recorder()
KEYS: ZipfKeys | None = None
_user_numbers = itertools.count()


# (option, type, environment variable, help); defaults come from DEFAULTS.
ARGUMENTS: tuple[tuple[str, type, str, str], ...] = (
    ("--key-space", int, "LOADTEST_KEY_SPACE", "number of item keys"),
    ("--zipf-s", float, "LOADTEST_ZIPF_S", "Zipf exponent of key popularity"),
    ("--write-ratio", float, "LOADTEST_WRITE_RATIO", "share of item calls that POST"),
    ("--value-bytes", int, "LOADTEST_VALUE_BYTES", "item value size"),
    ("--fragments", int, "LOADTEST_FRAGMENTS", "fragments per /fragments/ page"),
    ("--seed", int, "LOADTEST_SEED", "base seed of every user's choices"),
    ("--warmup", float, "LOADTEST_WARMUP", "seconds before measuring starts"),
)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("hacache load test")
    for flag, kind, env_var, help_text in ARGUMENTS:
        default = DEFAULTS[flag[2:].replace("-", "_")]
        group.add_argument(flag, type=kind, env_var=env_var, default=default, help=help_text)
    group.add_argument(
        "--stats-json",
        env_var="LOADTEST_STATS_JSON",
        default="",
        help="write exact measurements here when the test stops",
    )


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    global KEYS
    options = environment.parsed_options
    if options is None:  # imported by a tool, not run by locust
        return
    if not 0.0 <= options.write_ratio <= 1.0:
        raise ValueError("--write-ratio must be between 0 and 1")
    KEYS = ZipfKeys(options.key_space, options.zipf_s)
    random.seed(options.seed)  # locust draws each user's next task from the global generator
    environment.events.request.add_listener(RECORDER.on_request)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    """Start measuring after the warm-up, which also lets every user get spawned first."""
    gevent.spawn_later(environment.parsed_options.warmup, RECORDER.start)


@events.cpu_warning.add_listener
def _on_cpu_warning(**_: Any) -> None:
    if RECORDER.measuring:
        RECORDER.cpu_warnings += 1


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    RECORDER.measuring = False
    RECORDER.stopped_at = time.time()
    path = environment.parsed_options.stats_json
    if path:
        Path(path).write_text(json.dumps(RECORDER.summary(environment), indent=1) + "\n")


class SiteUser(FastHttpUser):
    """Shared behaviour: a repeatable random stream per user and the item read/write mix.

    No think time: each user is one connection issuing requests back to back, so throughput is
    what the server (gunicorn + Django + the cache backend) can serve at this concurrency.
    """

    abstract = True

    def wait_time(self) -> float:
        return 0.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.number = next(_user_numbers)
        self.rng = random.Random(options.seed * 1_000_003 + self.number)
        self.writes = 0

    def item(self) -> None:
        """One item call: a Zipf-chosen key, written with probability --write-ratio."""
        options = self.environment.parsed_options
        assert KEYS is not None
        key = item_key(KEYS.draw(self.rng))
        if self.rng.random() < options.write_ratio:
            self.writes += 1
            body = item_value(f"u{self.number}w{self.writes}", options.value_bytes)
            with self.client.post(
                f"/item/{key}/",
                data=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
                name="/item/[key]",
                catch_response=True,
            ) as response:
                if response.status_code != 201:
                    response.failure(f"write answered {response.status_code}")
            return
        with self.client.get(f"/item/{key}/", name="/item/[key]", catch_response=True) as response:
            if response.status_code == 200:
                RECORDER.check("item_hits")
                response.success()
            elif response.status_code == 404:  # a miss is an answer, not an error
                RECORDER.check("item_misses")
                response.success()
            else:
                response.failure(f"read answered {response.status_code}")


class Reader(SiteUser):
    """Anonymous visitor: cached pages, fragment-built pages and item reads."""

    weight = 3

    @task(4)
    def cached_page(self) -> None:
        self.client.get("/cached/")

    @task(1)
    def home(self) -> None:
        self.client.get("/")

    @task(2)
    def fragments(self) -> None:
        n = self.environment.parsed_options.fragments
        with self.client.get(
            f"/fragments/?n={n}", name="/fragments/", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"fragments answered {response.status_code}")
                return
            body = response.json()
            RECORDER.check("fragment_hits", body["hits"])
            RECORDER.check("fragment_misses", body["misses"])
            if body["failed"]:
                response.failure(f"set_many failed for {body['failed']} fragments")

    @task(8)
    def read_item(self) -> None:
        self.item()


class Member(SiteUser):
    """Visitor with a session cookie: session counter, hit counter and item traffic."""

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.session_count = 0

    @task(3)
    def session(self) -> None:
        with self.client.get("/session/", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"session answered {response.status_code}")
                return
            count = response.json()["count"]
            expected = self.session_count + 1
            if count == expected:
                RECORDER.check("session_ok")
            elif count < expected:
                # An earlier session value was read: an update of ours is lost. Counted, not
                # failed: it is the coherence window the near-cache documents, and the report
                # shows how often the window is hit under load.
                RECORDER.check("session_stale")
            else:
                response.failure(f"session count jumped from {self.session_count} to {count}")
            self.session_count = count

    @task(1)
    def counter(self) -> None:
        self.client.get("/counter/")

    @task(1)
    def cached_page(self) -> None:
        self.client.get("/cached/")

    @task(3)
    def item_traffic(self) -> None:
        self.item()
