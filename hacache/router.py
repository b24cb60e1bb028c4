"""The ring plus one ``Shard`` per ring node: routes keys and runs operations across shards.

Running an operation is the failure policy's plan (``failover.run``) carried out by a driver
(``driver``): every shard's pipeline is sent before any reply is read, so a ``get_many`` over
three shards costs about one round trip, without threads. Routers are process-wide (one per
distinct configuration): Django builds a backend object per thread and closes it after every
request, so pools must not live on the backend.

Ejection (``EJECT_DEAD_SHARDS``) is routing, so it lives here: a dead shard's keys go to the
others while its breaker is open, at most ``EJECT_SECONDS`` at a time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from redis.exceptions import ResponseError

from hacache import driver
from hacache.dropped import DroppedWrites
from hacache.endpoint import Command, Replies
from hacache.invalidation import Bus
from hacache.nearcache import NearCache
from hacache.options import Options, parse_options
from hacache.ring import HashRing
from hacache.shard import Shard


class Op(NamedTuple):
    """What to send where, and how to turn the replies (one list per batch) into a result.

    ``cleanup`` runs once the call is over, whether it succeeded or raised (near-cache upkeep).
    ``readonly`` batches may be served by replicas; a ``fills`` one keeps its replies in the
    near-cache, so a replica's reply to it is returned but not kept. ``writes`` names, per
    batch, the keys it writes (None: every key of the shard), for the dropped-write record.
    """

    batches: list[tuple[Shard, list[Command]]]
    finish: Callable[[list[Replies]], Any]
    idempotent: bool = True
    cleanup: Callable[[], None] | None = None
    readonly: bool = False
    fills: bool = False
    writes: list[list[str] | None] | None = None


def _named(op: Op, error: ResponseError) -> ResponseError:
    """A shard's error reply (WRONGTYPE, OOM, NOPERM...), naming the shard as failures do."""
    if str(error).startswith("shard "):
        return error  # already named (``Shard.error``)
    shards = list(dict.fromkeys(shard for shard, _ in op.batches))
    if len(shards) == 1:
        return shards[0].error(error)
    names = ", ".join(repr(shard.name) for shard in shards)
    return type(error)(f"one of shards {names}: {error}")


class Router:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.shards = {spec.name: Shard(spec, options) for spec in options.shards}
        self._ring_args = {
            "placement": options.placement,
            "vnodes": options.vnodes,
            "key_hash": options.ketama_hash,
            "hash_tags": options.hash_tags,
        }
        self.weights = {spec.name: spec.weight for spec in options.shards}
        self.ring = HashRing(self.weights, **self._ring_args)
        self._node_for = self.ring.node_for
        self._eject_seconds = options.eject_seconds
        self._survivor_rings: dict[frozenset[str], HashRing] = {}
        self.fail_open = options.fail_open
        near = options.near_cache
        self.near = (
            NearCache(self.shards, near.max_entries, near.max_bytes, near.ttl) if near else None
        )
        self.bus = (
            Bus(
                self.shards.values(),
                self.near,
                options.invalidation_channel,
                near.tracking if near else None,
            )
            if options.publish_invalidations or near
            else None
        )
        publish = self.bus.publish_command if self.bus and options.publish_invalidations else None
        wait = (options.wait_replicas, options.wait_timeout)
        from hacache.stampede import grace_copy  # late: stampede builds on the router

        graced = options.stampede is not None and options.stampede.grace > 0
        self.dropped = DroppedWrites(
            options.dropped_writes_max, publish, wait, grace_copy if graced else None
        )
        self.aliases: list[str] = []
        self.closed = False
        # Migration mode (PREVIOUS_LOCATION): the ring before the change, and its shards (the
        # same objects where a shard is in both). See ``resharding``.
        self.previous_ring: HashRing | None = None
        self.previous_shards: dict[str, Shard] = {}
        if options.previous_shards:
            weights = {spec.name: spec.weight for spec in options.previous_shards}
            self.previous_ring = HashRing(weights, **self._ring_args)
            self.previous_shards = {
                spec.name: self.shards.get(spec.name) or Shard(spec, options)
                for spec in options.previous_shards
            }

    # -- routing ---------------------------------------------------------------------------

    def shard_for(self, key: str) -> Shard:
        shard = self.shards[self._node_for(key)]
        if self._eject_seconds is not None and self.is_ejected(shard):
            return self._survivor_for(key)
        return shard

    def group(self, keys: Iterable[str]) -> dict[Shard, list[str]]:
        groups: dict[Shard, list[str]] = {}
        if self._eject_seconds is None:
            shards, node_for = self.shards, self._node_for
            for key in keys:
                shard = shards[node_for(key)]
                if shard in groups:
                    groups[shard].append(key)
                else:
                    groups[shard] = [key]
        else:
            for key in keys:
                groups.setdefault(self.shard_for(key), []).append(key)
        return groups

    def previous_owner(self, key: str) -> Shard | None:
        """Where ``key`` lived in the previous ring, if that is not where it lives now."""
        name = self.previous_ring.node_for(key)  # type: ignore[union-attr]
        return None if name == self._node_for(key) else self.previous_shards[name]

    def every_shard(self) -> list[Shard]:
        """The shards of the ring, and those of the previous ring that left it."""
        extra = [s for n, s in self.previous_shards.items() if n not in self.shards]
        return [*self.shards.values(), *extra]

    def is_ejected(self, shard: Shard) -> bool:
        if self._eject_seconds is None:
            return False
        master = shard.master
        if master is None or master.breaker.opened_at is None:
            return False
        return time.monotonic() - master.breaker.opened_at < self._eject_seconds  # type: ignore[operator]

    def _survivor_for(self, key: str) -> Shard:
        dead = frozenset(s.name for s in self.shards.values() if self.is_ejected(s))
        ring = self._survivor_rings.get(dead)
        if ring is None:
            alive = {n: w for n, w in self.weights.items() if n not in dead}
            if not alive:
                return self.shards[self._node_for(key)]  # nowhere else to go
            ring = self._survivor_rings[dead] = HashRing(alive, **self._ring_args)
        return self.shards[ring.node_for(key)]

    # -- running operations ----------------------------------------------------------------

    def run(self, op: Op) -> Any:
        if not op.batches:
            return op.finish([])  # answered by the near-cache
        try:
            return driver.run(op, self)
        except ResponseError as exc:
            raise _named(op, exc) from exc
        finally:
            if op.cleanup is not None:
                op.cleanup()

    async def arun(self, op: Op) -> Any:
        if not op.batches:
            return op.finish([])
        try:
            return await driver.arun(op, self)
        except ResponseError as exc:
            raise _named(op, exc) from exc
        finally:
            if op.cleanup is not None:
                op.cleanup()

    def serves(self, alias: str) -> None:
        """A backend for ``alias`` uses this router: its shards name it in their logs."""
        if alias not in self.aliases:
            self.aliases = sorted({*self.aliases, alias})
            for shard in self.every_shard():
                shard.cache = "|".join(self.aliases)

    def close(self) -> None:
        self.closed = True
        if self.options.metrics:
            from hacache.metrics import forget

            forget(self)
        if self.bus is not None:
            self.bus.stop()
        for shard in self.every_shard():
            shard.close()


_routers: dict[str, Router] = {}
_routers_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _routers_lock
    _routers_lock = threading.Lock()  # another thread may have held it at fork time


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_router(location: Any, options: Any) -> Router:
    """The process-wide router for this configuration, built (and validated) on first use."""
    fingerprint = repr((location, options))
    router = _routers.get(fingerprint)
    if router is None:
        with _routers_lock:
            router = _routers.get(fingerprint)
            if router is None:
                router = _routers[fingerprint] = Router(parse_options(location, options))
    return router


_aliases: dict[str, str] = {}


def alias_of(location: Any, params: dict[str, Any]) -> str:
    """The ``CACHES`` alias a backend was built for (Django does not tell it): for logs and
    metrics. Several aliases with the same settings read as one, "a|b"."""
    fingerprint = repr((location, params))
    alias = _aliases.get(fingerprint)
    if alias is None:
        from django.conf import settings

        found = [
            name
            for name, conf in getattr(settings, "CACHES", {}).items()
            if conf.get("LOCATION") == location
            and {k: v for k, v in conf.items() if k not in ("BACKEND", "LOCATION")} == params
        ]
        alias = _aliases[fingerprint] = "|".join(sorted(found)) or "unnamed"
    return alias


def close_all_routers() -> None:
    """Close every pooled connection in this process (tests, shutdown hooks)."""
    with _routers_lock:
        for router in _routers.values():
            router.close()
        _routers.clear()
