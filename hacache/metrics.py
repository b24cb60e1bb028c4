"""Prometheus metrics (``"METRICS": True``; ``pip install hacache[metrics]``), cheap per call.

What it keeps:

- **Off, nothing changes**: no metric code runs and no object is created; the backend and router
  methods are the unwrapped ones.
- **On, calls count into plain integers** (a dict slot per call, a bucket per latency) and a
  background thread folds them into prometheus-client's metrics once a second, and again before
  every scrape this process serves, so the counting costs no lock and no mmap write per call.
  prometheus-client's multiprocess mode (gunicorn) works as is: the folded values land in its
  files; gauges are set by the same thread with a ``multiprocess_mode`` each.
- Totals are exact: every call counted is folded exactly once; a forked child starts at zero
  (what the parent had not folded yet is the parent's to fold).
- Labels never hold a key, a value or a password: alias, shard, server address, op, error class.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from hacache.router import Router

FLUSH_EVERY = 1.0  # seconds
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0)  # fmt: skip
UPPER = (*BUCKETS, float("inf"))

_meters: weakref.WeakSet[Meter] = weakref.WeakSet()
_lock = threading.RLock()
_flusher: threading.Thread | None = None
_metrics: dict[str, Any] = {}


def _registry() -> dict[str, Any]:
    """prometheus-client's metric objects, made once per process (its registry is global)."""
    if _metrics:
        return _metrics
    try:
        import prometheus_client as p
    except ImportError as exc:
        raise ImproperlyConfigured(
            "hacache: OPTIONS['METRICS']: needs prometheus-client; pip install 'hacache[metrics]'"
        ) from exc
    a, s = ["alias"], ["alias", "shard"]
    counters = {
        "calls": ("Cache calls (get_many, set_many, delete_many: keys)", [*a, "op"]),
        "hits": ("Keys found by get / get_many", [*a, "op"]),
        "misses": ("Keys not found by get / get_many", [*a, "op"]),
        "errors": ("Calls that raised, by exception class", [*a, "op", "error"]),
        "near_hits": ("Near-cache hits", a),
        "near_misses": ("Near-cache misses", a),
        "near_fills": ("Values kept in the near-cache", a),
        "near_evictions": ("Near-cache entries dropped for room", a),
        "near_expirations": ("Near-cache entries expired", a),
        "near_invalidations": ("Keys invalidated by other processes' writes", a),
        "near_gap_flushes": ("Shards flushed because invalidations were lost", a),
        "near_resubscribe_flushes": ("Shards flushed because the subscriber reconnected", a),
        "replica_reads": ("Reads answered by a replica", s),
        "hedged_reads": ("Reads also sent to a replica after HEDGE_DELAY", s),
        "failovers": ("Master changes seen (+switch-master)", s),
        "writes_waited": ("Writes that waited for a promotion", s),
        "writes_dropped": ("Writes dropped failing open", s),
        "pool_timeouts": ("No free connection within POOL_TIMEOUT", [*s, "server"]),
    }
    for name, (doc, labels) in counters.items():
        _metrics[name] = p.Counter(f"hacache_{name}", doc, labels)
    _metrics["latency"] = p.Histogram(
        "hacache_latency_seconds", "Remote call latency", [*s, "op"], buckets=BUCKETS
    )
    _metrics["lag"] = p.Histogram(
        "hacache_invalidation_lag_seconds", "Write to eviction in another process", s,
        buckets=BUCKETS,
    )  # fmt: skip
    gauges = {
        "near_entries": ("Entries in the near-cache", a, "livesum"),
        "near_bytes": ("Bytes held by the near-cache", a, "livesum"),
        "near_untrusted_shards": ("Shards whose near-cache entries are not trusted", a, "livemax"),
        "dropped_writes": ("Keys in the dropped-write record", s, "livesum"),
        "breaker_open": ("1 while a server's circuit breaker is open", [*s, "server"], "livemax"),
        "shard_up": ("1 while the shard's master answers, 0 once its breaker opens", s, "livemin"),
        "ejected_shards": ("Shards ejected from the ring", a, "livemax"),
        "pool_connections": ("Pooled connections", [*s, "server", "state"], "livesum"),
    }
    for name, (doc, labels, mode) in gauges.items():
        _metrics[name] = p.Gauge(f"hacache_{name}", doc, labels, multiprocess_mode=mode)
    return _metrics


def _slots() -> list[float]:
    return [0.0] * (len(UPPER) + 1)  # a count per bucket, then the sum


class _Counts:
    """One thread's running totals: only that thread writes them, so no increment is lost.

    ``op`` names the call in progress, for the router's timing. ``get`` is counted once per
    call, as a hit, a miss or (raised) in ``calls``: its calls total is the three added up."""

    __slots__ = ("calls", "errors", "hits", "lags", "latency", "misses", "op")

    def __init__(self) -> None:
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.hits: defaultdict[str, int] = defaultdict(int)
        self.misses: defaultdict[str, int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = {}
        self.latency: defaultdict[tuple[str, str], list[float]] = defaultdict(_slots)
        self.lags: defaultdict[str, list[float]] = defaultdict(_slots)  # per shard
        self.op = "other"

    def totals(self, name: str) -> dict[Any, int]:
        """A copy of one table, with ``get``'s calls added up for ``calls``."""
        table = dict(getattr(self, name))
        if name == "calls" and ("get" in self.hits or "get" in self.misses):
            table["get"] = table.get("get", 0) + self.hits.get("get", 0) + self.misses.get("get", 0)
        return table


class Meter:
    """One router's counts, as plain integers per thread until folded."""

    def __init__(self, router: Router, alias: str) -> None:
        self.router = router
        self.alias = alias
        self.registry = _registry()
        self.local = threading.local()  # .counts: this thread's _Counts
        self._all: list[_Counts] = []
        self._folded: dict[tuple, float] = {}  # what each running total had when last folded
        self._fold_lock = threading.Lock()
        with _lock:
            _meters.add(self)
        _start_flusher()

    # -- the hot path: plain integers ------------------------------------------------------

    def counts(self) -> _Counts:
        """This thread's totals."""
        try:
            return self.local.counts
        except AttributeError:
            counts = self.local.counts = _Counts()
            with self._fold_lock:
                self._all.append(counts)
            return counts

    def hit(self, op: str, hits: int, misses: int) -> None:
        counts = self.counts()
        if hits:
            counts.hits[op] += hits
        if misses:
            counts.misses[op] += misses

    def error(self, op: str, exc: BaseException) -> None:
        errors = self.counts().errors
        key = (op, type(exc).__name__)
        errors[key] = errors.get(key, 0) + 1

    def observe(self, shard: str, op: str, seconds: float) -> None:
        _slot(self.counts().latency, (shard, op), seconds)

    def observe_lag(self, shard: str, seconds: float) -> None:
        _slot(self.counts().lags, shard, seconds)

    # -- folding ---------------------------------------------------------------------------

    def fold(self) -> None:
        """Add what was counted since the last fold to prometheus-client's metrics."""
        with self._fold_lock:
            m, alias = self.registry, self.alias
            for counts in self._all:
                tag = id(counts)
                for name in ("calls", "hits", "misses", "errors"):
                    metric = m[name]
                    for key, total in counts.totals(name).items():
                        labels = (alias, *key) if name == "errors" else (alias, key)
                        self._delta(metric, (tag, name, key), total, labels)
                for name, metric in (("latency", m["latency"]), ("lags", m["lag"])):
                    for key, slots in list(getattr(counts, name).items()):
                        now = list(slots)
                        before = self._folded.get((tag, name, key)) or [0.0] * len(now)
                        self._folded[(tag, name, key)] = now  # type: ignore[assignment]
                        grown = [a - b for a, b in zip(now, before, strict=True)]
                        if any(grown):
                            labels = (alias, *key) if name == "latency" else (alias, key)
                            _fold_histogram(metric.labels(*labels), grown)
            self._fold_router()

    def _delta(self, metric: Any, key: tuple, total: float, labels: tuple) -> None:
        """A running total kept elsewhere: add to ``metric`` what it grew by since last time."""
        grown = total - self._folded.get(key, 0)
        child = metric.labels(*labels)  # exists from the first fold: increase() sees a 0 first
        if grown > 0:
            child.inc(grown)
        self._folded[key] = total

    def _fold_router(self) -> None:
        m, alias, router = self.registry, self.alias, self.router
        near = router.near
        if near is not None:
            for name, total in near.stats.as_dict().items():
                if f"near_{name}" in m:
                    self._delta(m[f"near_{name}"], ("near", name), total, (alias,))
            m["near_entries"].labels(alias).set(len(near))
            m["near_bytes"].labels(alias).set(near.size_bytes)
            untrusted = sum(not near.trusted(name) for name in router.shards)
            m["near_untrusted_shards"].labels(alias).set(untrusted)
        ejected = 0
        for name, shard in router.shards.items():
            stats = shard.stats
            for field in ("replica_reads", "hedged_reads", "failovers", "writes_waited",
                          "writes_dropped"):  # fmt: skip
                self._delta(m[field], (name, field), getattr(stats, field), (alias, name))
            m["dropped_writes"].labels(alias, name).set(router.dropped.count(name))
            master = shard.view.master
            up = master is not None and not master.breaker.is_open
            m["shard_up"].labels(alias, name).set(int(up))
            ejected += router.is_ejected(shard)
            for endpoint in shard.endpoints():
                server = endpoint.address
                m["breaker_open"].labels(alias, name, server).set(int(endpoint.breaker.is_open))
                idle, in_use, timeouts = endpoint.pool.usage()
                m["pool_connections"].labels(alias, name, server, "idle").set(idle)
                m["pool_connections"].labels(alias, name, server, "in_use").set(in_use)
                self._delta(m["pool_timeouts"], (server, "timeouts"), timeouts,
                            (alias, name, server))  # fmt: skip
        m["ejected_shards"].labels(alias).set(ejected)

    def after_fork(self) -> None:
        """The parent folds what it counted; the child starts from its own zero."""
        self.local.__dict__.clear()  # the forking thread's, the only one left: wrappers keep it
        self._all = []
        self._folded = {}
        self._fold_lock = threading.Lock()


def _slot(table: dict, key: Any, seconds: float) -> None:
    slots = table[key]
    slots[bisect.bisect_left(UPPER, seconds)] += 1
    slots[-1] += seconds


def _fold_histogram(child: Any, slots: list[float]) -> None:
    buckets = getattr(child, "_buckets", None)
    if buckets is None or len(buckets) != len(UPPER):  # not the prometheus-client we know
        for bound, n in zip(UPPER, slots, strict=False):
            for _ in range(int(n)):
                child.observe(bound if bound != float("inf") else BUCKETS[-1] * 2)
        return
    for bucket, n in zip(buckets, slots, strict=False):
        if n:
            bucket.inc(n)
    child._sum.inc(slots[-1])


_by_alias: dict[tuple[int, str], Meter] = {}  # strong: a meter is folded until its router closes


def meter_for(router: Router, alias: str) -> Meter:
    """One meter per router and alias, for the whole process."""
    key = (id(router), alias)
    meter = _by_alias.get(key)
    if meter is None or meter.router is not router:
        with _lock:
            meter = _by_alias.get(key)
            if meter is None or meter.router is not router:
                meter = _by_alias[key] = Meter(router, alias)
                if router.bus is not None and router.bus.lag_sink is None:
                    router.bus.lag_sink = meter.observe_lag  # the router's first alias
    return meter


def forget(router: Router) -> None:
    """A closed router's meters stop being folded (their gauges would overwrite the live ones')."""
    with _lock:
        for key, meter in [(k, m) for k, m in _by_alias.items() if m.router is router]:
            meter.fold()
            _meters.discard(meter)
            del _by_alias[key]


def fold_all() -> None:
    with _lock:
        meters = list(_meters)
    for meter in meters:
        meter.fold()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_EVERY)
        try:
            fold_all()
        except Exception:  # a metrics problem must never stop the counting
            import logging

            logging.getLogger("hacache.metrics").exception("hacache: folding metrics failed")


def _start_flusher() -> None:
    global _flusher
    with _lock:
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_forever, name="hacache-metrics", daemon=True)
            _flusher.start()


def _after_fork_in_child() -> None:
    global _lock, _flusher
    _lock = threading.RLock()
    _flusher = None
    for meter in list(_meters):
        meter.after_fork()
    if _meters:
        _start_flusher()


os.register_at_fork(after_in_child=_after_fork_in_child)


def view(request: Any) -> Any:
    """The scrape endpoint: ``path("metrics/", hacache.metrics.view)`` in a urls.py.

    Folds this process's counts first, so a single-process scrape is exact to the call; with
    ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn) it serves every worker's files, each folded
    within ``FLUSH_EVERY`` seconds."""
    import prometheus_client as p
    from django.http import HttpResponse

    fold_all()
    registry: Any = p.REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = p.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return HttpResponse(p.generate_latest(registry), content_type=p.CONTENT_TYPE_LATEST)
