"""Code that runs in other processes (spawned, so nothing is inherited) for the near-cache tests."""

from __future__ import annotations

import random
from multiprocessing.connection import Connection
from typing import Any


def _cache(caches: dict) -> Any:
    import django
    from django.conf import settings

    settings.configure(CACHES=caches, USE_TZ=True)
    django.setup()
    from django.core.cache import cache

    return cache


def serve(conn: Connection, caches: dict) -> None:
    """Answer calls from the test process: ("get", key), ("set", key, value), ("stats",) ..."""
    cache = _cache(caches)
    near, bus = cache._router.near, cache._router.bus
    handlers = {
        "get": cache.get,
        "set": cache.set,
        "delete": cache.delete,
        "incr": cache.incr,
        "stats": cache.near_cache_stats,
        "wait_trusted": lambda timeout: near.wait_trusted(timeout),
        "listen": bus.listen,
        "trusted": lambda shard: near.trusted(shard),
        "last_seq": lambda shard: bus.subscriber(shard).last_seq,
        "subscriptions": lambda shard: bus.subscriber(shard).subscriptions,
        "shard_for": lambda key: cache._router.shard_for(cache.make_key(key)).name,
    }
    while True:
        name, *args = conn.recv()
        if name == "stop":
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", handlers[name](*args)))
        except Exception as exc:
            conn.send(("raised", repr(exc)))


def write_versions(caches: dict, keys: list[str], rounds: int, seed: int) -> int:
    """Write increasing versions; after each write is acknowledged, record it as acked."""
    cache = _cache(caches)
    rng = random.Random(seed)
    writes = 0
    for version in range(1, rounds + 1):
        key = rng.choice(keys)
        if rng.random() < 0.1:
            cache.delete(key)
            cache.set(key, version)
        else:
            cache.set(key, version)
        cache.set(f"acked:{key}", version)  # only written once the write above returned
        writes += 1
    return writes


def read_and_check(caches: dict, keys: list[str], reads: int, seed: int) -> dict[str, int]:
    """Read through the near-cache; whenever every invalidation published so far has been
    delivered to this process, no read may return a version older than one acknowledged before.
    """
    import redis

    cache = _cache(caches)
    router = cache._router
    near, bus = router.near, router.bus
    rng = random.Random(seed)
    stale = checked = hits_before = 0
    bus.listen()
    near.wait_trusted(10)
    hits_before = near.stats.hits
    raw = {name: redis.Redis(**s.spec.connection_kwargs) for name, s in router.shards.items()}
    for i in range(reads):
        key = rng.choice(keys)
        if i % 5:
            cache.get(key)  # plain traffic, keeps the near-cache busy
            continue
        made = cache.make_key(key)
        shard = router.shard_for(made).name
        acked = cache.get(f"acked:{key}") or 0  # excluded from the near-cache
        published = int(raw[shard].get(bus.seq_key) or 0)
        subscriber = bus.subscriber(shard)
        for _ in range(2000):  # wait (bounded) until this process has seen them all
            if subscriber.last_seq >= published or not near.trusted(shard):
                break
            subscriber.join(0.001)
        value = cache.get(key)
        checked += 1
        if value is not None and value < acked:
            stale += 1
    return {"stale": stale, "checked": checked, "near_hits": near.stats.hits - hits_before}
