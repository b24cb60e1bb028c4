"""The data behind the demo's live status page (``/status/``, ``/status/data/``).

``build()`` is pure: it turns what was asked (``hacache.inspection`` shard statuses, the samples
of prometheus-client's metrics, this process's shard views and near-cache) into one JSON-ready
dict. ``gather()`` does the asking. Nothing here holds a password: servers are ``host:port``
addresses as ``hacache.inspection`` reports them, and metric labels never hold one.

Metrics: with ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn) the samples are every worker's, summed
by prometheus-client's ``MultiProcessCollector``; otherwise this process's registry, after
``hacache.metrics.fold_all()``. Without ``"METRICS": True`` the page falls back to this process's
own near-cache counters and shows no hit rate or latency.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hacache import inspection

NEAR_COUNTERS = (
    "hits",
    "misses",
    "fills",
    "evictions",
    "expirations",
    "invalidations",
    "gap_flushes",
    "resubscribe_flushes",
)
NEAR_GAUGES = ("entries", "bytes", "untrusted_shards")


@dataclass(frozen=True)
class Sample:
    name: str  # the sample's name: ``hacache_hits_total``, ``hacache_latency_seconds_bucket``
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class LocalShard:
    """This process's view of one shard (what its requests route by)."""

    master: str | None
    generation: int  # moves on whenever the master does
    epoch: int  # Sentinel's config-epoch; -1: not known
    failovers: int  # master changes this process saw


@dataclass(frozen=True)
class Local:
    """This process's own state: shard views, near-cache counters (None: no near-cache)."""

    shards: Mapping[str, LocalShard]
    near: Mapping[str, int] | None = None
    metrics_on: bool = False


# -- pure ------------------------------------------------------------------------------------


def _total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile``: ``buckets`` maps each upper bound (``le``, with
    ``inf``) to its cumulative count; linear inside the bucket the rank falls in. None: empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # past the last finite bucket: that bucket's bound
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def shard_latency(samples: Iterable[Sample], alias: str) -> dict[str, dict[str, Any]]:
    """Per shard, every op together: calls, mean and rough p99 (ms) of the remote latency."""
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for s in samples:
        if not s.name.startswith("hacache_latency_seconds") or s.labels.get("alias") != alias:
            continue
        shard = s.labels.get("shard", "")
        if s.name == "hacache_latency_seconds_bucket":
            buckets[shard][float(s.labels["le"])] += s.value
        elif s.name == "hacache_latency_seconds_sum":
            sums[shard] += s.value
        elif s.name == "hacache_latency_seconds_count":
            counts[shard] += s.value
    found = {}
    for shard, count in counts.items():
        p99 = quantile(0.99, buckets[shard])
        found[shard] = {
            "calls": int(count),
            "mean_ms": round(sums[shard] / count * 1000, 3) if count else None,
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }
    return found


def _ratio(hits: float, misses: float) -> float | None:
    return round(hits / (hits + misses), 4) if hits + misses else None


def _server(server: inspection.Server) -> dict[str, Any]:
    return {
        "role": server.role,
        "reported_role": server.reported_role,
        "address": server.address,
        "reachable": server.reachable,
        "latency_ms": server.latency_ms,
        "sentinel_flags": server.sentinel_flags,
        "breaker": server.breaker,
        "error": server.error,
    }


def _sentinel(report: inspection.SentinelReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "service": report.service,
        "sentinels": report.sentinels,
        "answered": report.answered,
        "master": report.master,
        "master_flags": report.master_flags,
        "config_epoch": report.config_epoch,
        "error": report.error,
    }


def build(
    alias: str,
    shards: Iterable[inspection.ShardStatus],
    samples: Iterable[Sample],
    local: Local,
    metrics_source: str,
    now: float,
) -> dict[str, Any]:
    """Everything the page shows, as plain JSON types."""
    samples = list(samples)
    latency = shard_latency(samples, alias) if local.metrics_on else {}
    rows = []
    for status in shards:
        here = local.shards.get(status.name)
        rows.append(
            {
                "name": status.name,
                "kind": status.kind,
                "weight": status.weight,
                "ok": status.ok,
                "near_cache_trusted": status.near_cache_trusted,
                "servers": [_server(s) for s in status.servers],
                "sentinel": _sentinel(status.sentinel),
                "failover": {
                    "seen": int(
                        _total(samples, "hacache_failovers_total", alias=alias, shard=status.name)
                    )
                    if local.metrics_on
                    else None,
                    "seen_here": None if here is None else here.failovers,
                    "generation": None if here is None else here.generation,
                    "epoch": None if here is None or here.epoch < 0 else here.epoch,
                    "master": None if here is None else here.master,
                },
                "latency": latency.get(status.name),
            }
        )
    hit_rate = None
    if local.metrics_on:
        hits = _total(samples, "hacache_hits_total", alias=alias)
        misses = _total(samples, "hacache_misses_total", alias=alias)
        hit_rate = {"hits": int(hits), "misses": int(misses), "ratio": _ratio(hits, misses)}
    near = None
    if local.near is not None:
        if local.metrics_on:
            near = {n: int(_total(samples, f"hacache_near_{n}_total", alias=alias))
                    for n in NEAR_COUNTERS}  # fmt: skip
            near |= {n: int(_total(samples, f"hacache_near_{n}", alias=alias)) for n in NEAR_GAUGES}
            near["source"] = metrics_source
        else:
            near = {n: int(local.near.get(n, 0)) for n in (*NEAR_COUNTERS, *NEAR_GAUGES)}
            near["source"] = "this process"
        near["ratio"] = _ratio(near["hits"], near["misses"])
    return {
        "alias": alias,
        "generated_at": now,
        "ok": all(r["ok"] for r in rows),
        "shards_up": sum(r["ok"] for r in rows),
        "metrics": {"enabled": local.metrics_on, "source": metrics_source},
        "hit_rate": hit_rate,
        "near_cache": near,
        "shards": rows,
    }


# -- asking ----------------------------------------------------------------------------------


def read_metrics() -> tuple[list[Sample], str]:
    """prometheus-client's samples (every gunicorn worker's if multiprocess), and their source."""
    try:
        import prometheus_client as p
    except ImportError:
        return [], "prometheus-client not installed"
    from hacache.metrics import fold_all

    fold_all()
    registry: Any = p.REGISTRY
    source = "this process"
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = p.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        source = "every worker (multiprocess)"
    samples = [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in registry.collect()
        if family.name.startswith("hacache_")
        for s in family.samples
    ]
    return samples, source


def local_state(alias: str) -> Local:
    router = inspection.router_for(alias)
    shards = {}
    for name, shard in router.shards.items():
        view = shard.view
        shards[name] = LocalShard(
            master=None if view.master is None else view.master.address,
            generation=view.generation,
            epoch=view.epoch,
            failovers=shard.stats.failovers,
        )
    near = router.near
    near_counts = None
    if near is not None:
        near_counts = {
            **near.stats.as_dict(),
            "entries": len(near),
            "bytes": near.size_bytes,
            "untrusted_shards": sum(not near.trusted(name) for name in router.shards),
        }
    return Local(shards=shards, near=near_counts, metrics_on=router.options.metrics)


def gather(alias: str = "default") -> dict[str, Any]:
    """Ask the shards, the metrics and this process; ``build`` the page's data."""
    from django.core.cache import caches

    caches[alias]  # the backend (and its meter, with METRICS) exists before the metrics are read
    shards = inspection.status(alias)
    local = local_state(alias)
    samples, source = read_metrics() if local.metrics_on else ([], "off")
    return build(alias, shards, samples, local, source, time.time())
