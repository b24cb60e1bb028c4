"""The escape hatch: plain redis-py clients on a shard's servers, for what the cache API lacks.

``get_redis_connection`` is django-redis's function for a sharded cache: it answers the client
of one shard (the key's, or one named), on its master as it is *now*. Such a client knows
nothing of hacache's failover, breakers, fail-open or near-cache: a failover leaves it pointing
at the old master (ask again), and writes through it invalidate no near-cache (publish or
delete through the cache API for that). Clients are kept per server, one pool each, so asking
again is cheap.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

if TYPE_CHECKING:
    from hacache.endpoint import Endpoint
    from hacache.router import Router
    from hacache.shard import Shard

_lock = threading.Lock()
_sync: weakref.WeakKeyDictionary[Endpoint, redis.Redis] = weakref.WeakKeyDictionary()
_async: weakref.WeakKeyDictionary[Endpoint, weakref.WeakKeyDictionary[Any, Any]] = (
    weakref.WeakKeyDictionary()
)


def get_redis_connection(
    alias: str = "default", key: Any = None, shard: str | None = None, write: bool = True
) -> redis.Redis:
    """The redis-py client of ``key``'s shard (made with the alias's prefix and version) or of
    the shard named ``shard``: its master, or with ``write=False`` a replica if it has one."""
    from django.core.cache import caches

    cache = caches[alias]
    router = getattr(cache, "_router", None)
    if router is None:
        raise TypeError(f"cache {alias!r} is not a hacache cache: {type(cache).__name__}")
    if key is not None and shard is not None:
        raise ValueError("give key= or shard=, not both")
    if key is not None:
        chosen = router.shard_for(cache.make_key(key))
    else:
        chosen = shard_named(router, shard)
    return client_for(server(chosen, write))


def shard_named(router: Router, name: str | None) -> Shard:
    if name is None:
        if len(router.shards) == 1:
            return next(iter(router.shards.values()))
        raise ValueError(
            f"this cache has {len(router.shards)} shards ({', '.join(router.shards)}): "
            "pass key= or shard="
        )
    try:
        return router.shards[name]
    except KeyError:
        raise ValueError(f"no shard {name!r}; shards: {', '.join(router.shards)}") from None


def server(shard: Shard, write: bool = True) -> Endpoint:
    """The shard's master now (asking Sentinel first if nobody has yet), or a replica."""
    if not write and shard.replicas:
        return shard.replicas[0]
    if shard.master is None:
        shard.discover()
    master = shard.master
    if master is None:
        raise redis.ConnectionError(f"shard {shard.name!r}: no master known")
    return master


def client_for(endpoint: Endpoint) -> redis.Redis:
    client = _sync.get(endpoint)
    if client is None:
        with _lock:
            client = _sync.get(endpoint)
            if client is None:
                pool = redis.ConnectionPool(
                    connection_class=endpoint.connection_class, **endpoint.connection_kwargs
                )
                client = _sync[endpoint] = redis.Redis(connection_pool=pool)
    return client


def async_client_for(endpoint: Endpoint) -> redis.asyncio.Redis:
    """A redis.asyncio client for the running loop (their connections cannot change loops)."""
    loop = asyncio.get_running_loop()
    with _lock:
        per_loop = _async.setdefault(endpoint, weakref.WeakKeyDictionary())
        client = per_loop.get(loop)
        if client is None:
            pool = redis.asyncio.ConnectionPool(
                connection_class=endpoint.async_connection_class, **endpoint.connection_kwargs
            )
            client = per_loop[loop] = redis.asyncio.Redis(connection_pool=pool)
    return client
