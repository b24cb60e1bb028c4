"""What ``manage.py hacache`` and the health check ask of a cache alias: its shards' servers,
the ring's balance, where a key lives. Returns plain dataclasses (``asdict`` for JSON).

Invariants: every question is bounded by the shard's own socket timeouts and asked on a
connection of its own (never a pooled one, so nothing here moves a breaker or a view); no
password or connection argument is ever copied into a result, only ``host:port`` addresses and
shard names; breaker and near-cache states are this process's (they are per process).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from redis.exceptions import RedisError

from hacache.endpoint import Endpoint
from hacache.ops import _ok
from hacache.router import Op, Router, get_router
from hacache.sentinel import pairs
from hacache.shard import Shard


@dataclass
class Server:
    role: str  # "master" or "replica", as hacache expects it; ``reported_role``: its own word
    address: str
    reachable: bool = False
    latency_ms: float | None = None
    reported_role: str | None = None
    redis_version: str | None = None
    used_memory: int | None = None
    maxmemory: int | None = None
    keys: int | None = None
    connected_clients: int | None = None
    sentinel_flags: list[str] | None = None
    breaker: str | None = None  # closed, open, half-open; None: this process has no endpoint
    error: str | None = None


@dataclass
class SentinelReport:
    service: str
    sentinels: int
    answered: int
    master: str | None = None
    master_flags: list[str] = field(default_factory=list)
    config_epoch: int | None = None
    replicas: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class ShardStatus:
    name: str
    weight: int
    kind: str  # "server" or "sentinel"
    servers: list[Server]
    sentinel: SentinelReport | None = None
    near_cache_trusted: bool | None = None  # None: no near-cache

    @property
    def master(self) -> Server | None:
        return next((s for s in self.servers if s.role == "master"), None)

    @property
    def ok(self) -> bool:
        master = self.master
        return master is not None and master.reachable


def router_for(alias: str) -> Router:
    """The process-wide router of a ``CACHES`` alias (the one the backend uses)."""
    params = settings.CACHES[alias]
    return get_router(params.get("LOCATION"), params.get("OPTIONS"))


def breaker_state(endpoint: Endpoint) -> str:
    breaker = endpoint.breaker
    opened_at = breaker.opened_at
    if opened_at is None:
        return "closed"
    return "half-open" if time.monotonic() - opened_at >= breaker.cooldown else "open"


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _client(shard: Shard, host: str | None = None, port: int | None = None) -> redis.Redis:
    kwargs = dict(shard.spec.connection_kwargs)
    if host is not None:
        kwargs.update(host=host, port=port)
    pool = redis.ConnectionPool(connection_class=shard.spec.connection_class, **kwargs)
    return redis.Redis(connection_pool=pool)


def _split(address: str) -> tuple[str | None, int | None]:
    host, sep, port = address.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else (None, None)


@contextlib.contextmanager
def _connected(shard: Shard, address: str) -> Iterator[redis.Redis]:
    """A client of its own for one server of the shard, closed with its sockets on exit."""
    host, port = _split(address) if shard.spec.sentinels else (None, None)
    client = _client(shard, host, port)
    try:
        yield client
    finally:
        client.close()
        client.connection_pool.disconnect()


def probe(shard: Shard, server: Server) -> Server:
    """PING (timed) and INFO one server, on a connection of its own."""
    try:
        with _connected(shard, server.address) as client:
            client.ping()  # connects: the timed PING below is one round trip
            start = time.perf_counter()
            client.ping()
            server.latency_ms = round((time.perf_counter() - start) * 1000, 3)
            server.reachable = True
            info = client.info()
    except (redis.RedisError, OSError) as exc:
        server.error = _message(exc)
        return server
    server.reported_role = "master" if info.get("role") == "master" else "replica"
    server.redis_version = str(info.get("redis_version"))
    server.used_memory = info.get("used_memory")
    server.maxmemory = info.get("maxmemory")
    server.connected_clients = info.get("connected_clients")
    db = shard.spec.connection_kwargs.get("db", 0) or 0
    server.keys = int(info.get(f"db{db}", {}).get("keys", 0))
    return server


def ask_sentinels(shard: Shard) -> SentinelReport:
    """Every sentinel of the shard; the report with the newest config-epoch wins."""
    spec = shard.spec
    report = SentinelReport(service=spec.service or "", sentinels=len(spec.sentinels), answered=0)
    best: tuple[int, dict[str, str], list[Any]] | None = None
    for host, port in spec.sentinels:
        client = redis.Redis(host=host, port=port, **spec.sentinel_kwargs)
        try:
            master = pairs(client.execute_command("SENTINEL", "MASTER", spec.service))
            replicas = client.execute_command("SENTINEL", "REPLICAS", spec.service)
        except (redis.RedisError, OSError) as exc:
            report.error = f"{host}:{port}: {_message(exc)}"
            continue
        finally:
            client.close()
        report.answered += 1
        epoch = int(master.get("config-epoch", "0") or 0)
        if best is None or epoch > best[0]:
            best = (epoch, master, [pairs(r) for r in replicas])
    if best is None:
        return report
    report.config_epoch, master, replicas = best
    report.master = f"{master['ip']}:{master['port']}"
    report.master_flags = sorted(master.get("flags", "").split(","))
    report.replicas = [
        {
            "address": f"{r['ip']}:{r['port']}",
            "flags": sorted(r.get("flags", "").split(",")),
            "master_link_status": r.get("master-link-status"),
        }
        for r in replicas
    ]
    report.error = None if report.answered == report.sentinels else report.error
    return report


def _endpoints(shard: Shard) -> dict[str, Endpoint]:
    view = shard.view
    found = {e.address: e for e in view.replicas}
    if view.master is not None:
        found[view.master.address] = view.master
    return found


def servers_of(shard: Shard) -> tuple[list[Server], SentinelReport | None]:
    """The shard's servers as hacache should see them (Sentinel's report for a Sentinel shard)."""
    if not shard.spec.sentinels:
        return [Server("master", shard.spec.address)], None
    report = ask_sentinels(shard)
    servers = [Server("master", report.master, sentinel_flags=report.master_flags)]
    if report.master is None:
        servers = []
    servers += [Server("replica", r["address"], sentinel_flags=r["flags"]) for r in report.replicas]
    return servers, report


def shard_status(router: Router, shard: Shard) -> ShardStatus:
    if shard.monitor is not None and shard.master is None:
        # What a first request does: this process's view (and breakers) to show. If no
        # sentinel answers, the Sentinel report below says why.
        with contextlib.suppress(redis.RedisError, OSError):
            shard.discover()
    servers, report = servers_of(shard)
    if report is not None and report.master is None:
        servers.append(Server("master", "?", error=report.error or "no sentinel answered"))
    endpoints = _endpoints(shard)
    for server in servers:
        if server.address in endpoints:
            server.breaker = breaker_state(endpoints[server.address])
        if server.address != "?":
            probe(shard, server)
    near = router.near
    return ShardStatus(
        name=shard.name,
        weight=shard.spec.weight,
        kind="sentinel" if shard.spec.sentinels else "server",
        servers=servers,
        sentinel=report,
        near_cache_trusted=None if near is None else near.trusted(shard.name),
    )


def status(alias: str = "default") -> list[ShardStatus]:
    """Every shard's status, asked of all shards at once (the slowest bounds the wait)."""
    router = router_for(alias)
    shards = list(router.shards.values())
    with ThreadPoolExecutor(max_workers=min(len(shards), 16)) as pool:
        return list(pool.map(lambda s: shard_status(router, s), shards))


@dataclass
class RingShare:
    name: str
    weight: int
    points: int
    expected: float  # weight / total weight
    measured: float  # share of the sample's keys


def ring(alias: str = "default", sample: int = 10_000) -> list[RingShare]:
    """Points per shard, and the share of ``sample`` random keys each one gets."""
    router = router_for(alias)
    points = Counter(router.ring._owners)  # read-only look at the ring's point owners
    hits = Counter(router.ring.node_for(os.urandom(12).hex()) for _ in range(sample))
    total_weight = sum(router.weights.values())
    return [
        RingShare(
            name=name,
            weight=weight,
            points=points[name],
            expected=weight / total_weight,
            measured=hits[name] / sample if sample else 0.0,
        )
        for name, weight in router.weights.items()
    ]


@dataclass
class Location:
    key: str
    redis_key: str
    shard: str
    home_shard: str  # where the ring puts it; differs from ``shard`` only while ejected
    master: str | None
    replicas: list[str]
    exists: bool | None = None
    ttl_seconds: float | None = None  # None: no expiry (or unknown); see ``exists``
    error: str | None = None


def locate(key: str, alias: str = "default", version: int | None = None) -> Location:
    cache = caches[alias]
    router = router_for(alias)
    redis_key = cache.make_key(key, version=version)
    shard = router.shard_for(redis_key)
    servers, _ = servers_of(shard)
    master = next((s.address for s in servers if s.role == "master"), None)
    found = Location(
        key=key,
        redis_key=redis_key,
        shard=shard.name,
        home_shard=router.ring.node_for(redis_key),
        master=master,
        replicas=[s.address for s in servers if s.role == "replica"],
    )
    if master is None:
        found.error = "no master known"
        return found
    try:
        with _connected(shard, master) as client:
            pttl = client.pttl(redis_key)
    except (redis.RedisError, OSError) as exc:
        found.error = _message(exc)
        return found
    found.exists = pttl != -2
    found.ttl_seconds = pttl / 1000 if pttl >= 0 else None
    return found


def flush_near_everywhere(alias: str = "default") -> dict[str, str] | None:
    """Ask every process's near-cache for the alias to drop each shard's entries: one flush
    message on each shard's invalidation bus (numbered, so no subscriber sees a gap). Per
    shard, "ok" or the error that kept its message from being sent (None: no near-cache)."""
    router = router_for(alias)
    bus = router.bus
    if bus is None:
        return None
    outcome: dict[str, str] = {}
    for shard in router.every_shard():
        try:
            seq = router.run(Op([(shard, [bus.publish_command(None)])], lambda r: _ok(r[0][0])))
        except RedisError as exc:
            outcome[shard.name] = f"{type(exc).__name__}: {exc}"
        else:  # failing open, a dead shard "answers" None: not a published flush
            outcome[shard.name] = "ok" if isinstance(seq, int) else "not published (shard down)"
    return outcome


def flush_near(alias: str = "default") -> int | None:
    """Empty this process's near-cache for the alias; the entries dropped (None: no near-cache)."""
    near = router_for(alias).near
    if near is None:
        return None
    entries = len(near)
    near.flush()
    return entries
