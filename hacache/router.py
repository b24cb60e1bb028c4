"""The ring plus one ``Shard`` per ring node: routes keys and runs operations across shards.

Multi-shard operations send every shard's pipeline before reading any reply, so the shards work
concurrently and a ``get_many`` over three shards costs about one round trip, without threads.
Routers are process-wide (one per distinct configuration): Django builds a backend object per
thread and closes it after every request, so pools must not live on the backend.

Two failure policies apply here, to whole batches: failing open (``FAIL_OPEN``) answers for a
failed shard as an empty server would; ejection (``EJECT_DEAD_SHARDS``) routes a dead shard's
keys to the others while its breaker is open, at most ``EJECT_SECONDS`` at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from redis.exceptions import RedisError

from hacache import failover
from hacache.endpoint import Command, Pending, Replies
from hacache.invalidation import Bus
from hacache.nearcache import NearCache
from hacache.options import Options, parse_options
from hacache.ring import HashRing
from hacache.shard import Shard


class Op(NamedTuple):
    """What to send where, and how to turn the replies (one list per batch) into a result.

    ``cleanup`` runs once the call is over, whether it succeeded or raised (near-cache upkeep).
    ``readonly`` batches may be served by replicas.
    """

    batches: list[tuple[Shard, list[Command]]]
    finish: Callable[[list[Replies]], Any]
    idempotent: bool = True
    cleanup: Callable[[], None] | None = None
    readonly: bool = False


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
        self._fail_open = options.fail_open
        near = options.near_cache
        self.near = (
            NearCache(self.shards, near.max_entries, near.max_bytes, near.ttl) if near else None
        )
        self.bus = (
            Bus(self.shards.values(), self.near, options.invalidation_channel)
            if options.publish_invalidations or near
            else None
        )

    # -- routing ---------------------------------------------------------------------------

    def shard_for(self, key: str) -> Shard:
        shard = self.shards[self._node_for(key)]
        if self._eject_seconds is not None and self._ejected(shard):
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

    def _ejected(self, shard: Shard) -> bool:
        master = shard.master
        if master is None or master.breaker.opened_at is None:
            return False
        return time.monotonic() - master.breaker.opened_at < self._eject_seconds  # type: ignore[operator]

    def _survivor_for(self, key: str) -> Shard:
        dead = frozenset(s.name for s in self.shards.values() if self._ejected(s))
        ring = self._survivor_rings.get(dead)
        if ring is None:
            alive = {n: w for n, w in self.weights.items() if n not in dead}
            if not alive:
                return self.shards[self._node_for(key)]  # nowhere else to go
            ring = self._survivor_rings[dead] = HashRing(alive, **self._ring_args)
        return self.shards[ring.node_for(key)]

    # -- running operations ----------------------------------------------------------------

    def run(self, op: Op) -> Any:
        if op.cleanup is None:
            return self._run(op)
        try:
            return self._run(op)
        finally:
            op.cleanup()

    async def arun(self, op: Op) -> Any:
        if op.cleanup is None:
            return await self._arun(op)
        try:
            return await self._arun(op)
        finally:
            op.cleanup()

    def _failed_open(
        self, op: Op, shard: Shard, commands: list[Command], exc: Exception
    ) -> Replies:
        """Failing open: log, and answer for the shard as an empty server would."""
        if not (self._fail_open and isinstance(exc, RedisError)):
            raise exc
        failover.log_failure(shard, exc)
        if op.cleanup is not None:
            op.cleanup()  # voids near-cache leases, so the made-up replies are never kept
        return failover.empty_replies(commands)

    def _run(self, op: Op) -> Any:
        batches = op.batches
        if len(batches) == 1:
            shard, commands = batches[0]
            try:
                replies = shard.call(commands, op.idempotent, op.readonly)
            except Exception as exc:
                replies = self._failed_open(op, shard, commands, exc)
            return op.finish([replies])
        pending: list[tuple[Shard, Pending | None]] = [(shard, None) for shard, _ in batches]
        try:
            for i, (shard, commands) in enumerate(batches):
                try:
                    pending[i] = (shard, shard.start(commands, op.idempotent, op.readonly))
                except Exception as exc:  # e.g. no sentinel answered: no pipeline was sent
                    pending[i] = (shard, exc)  # type: ignore[assignment]
            results: list[Replies] = []
            first_error: Exception | None = None
            for i, (shard, started) in enumerate(pending):
                pending[i] = (shard, None)
                try:
                    if isinstance(started, Exception):
                        raise started
                    results.append(shard.finish(started, op.idempotent, op.readonly))  # type: ignore[arg-type]
                except Exception as exc:  # read every other shard before raising
                    first_error = first_error or exc
                    results.append(exc)  # type: ignore[arg-type]
        finally:
            for _, started in pending:  # only left over when interrupted
                if isinstance(started, Pending) and started.connection is not None:
                    started.endpoint.pool.discard(started.connection)
        if first_error is not None:
            results = [
                self._failed_open(op, shard, commands, r) if isinstance(r, Exception) else r
                for (shard, commands), r in zip(batches, results, strict=True)
            ]
        return op.finish(results)

    async def _arun(self, op: Op) -> Any:
        batches = op.batches
        if len(batches) == 1:
            shard, commands = batches[0]
            try:
                replies = await shard.acall(commands, op.idempotent, op.readonly)
            except Exception as exc:
                replies = self._failed_open(op, shard, commands, exc)
            return op.finish([replies])
        pending: list[tuple[Shard, Pending | None]] = [(shard, None) for shard, _ in batches]
        try:
            for i, (shard, commands) in enumerate(batches):
                try:
                    pending[i] = (shard, await shard.astart(commands, op.idempotent, op.readonly))
                except Exception as exc:  # e.g. no sentinel answered: no pipeline was sent
                    pending[i] = (shard, exc)  # type: ignore[assignment]
            results: list[Replies] = []
            first_error: Exception | None = None
            for i, (shard, started) in enumerate(pending):
                pending[i] = (shard, None)
                try:
                    if isinstance(started, Exception):
                        raise started
                    results.append(await shard.afinish(started, op.idempotent, op.readonly))  # type: ignore[arg-type]
                except Exception as exc:
                    first_error = first_error or exc
                    results.append(exc)  # type: ignore[arg-type]
        finally:
            for _, started in pending:
                if isinstance(started, Pending) and started.connection is not None:
                    await started.endpoint.async_pool().discard(started.connection)
        if first_error is not None:
            results = [
                self._failed_open(op, shard, commands, r) if isinstance(r, Exception) else r
                for (shard, commands), r in zip(batches, results, strict=True)
            ]
        return op.finish(results)

    def close(self) -> None:
        if self.bus is not None:
            self.bus.stop()
        for shard in self.shards.values():
            shard.close()


_routers: dict[str, Router] = {}
_routers_lock = threading.Lock()


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


def close_all_routers() -> None:
    """Close every pooled connection in this process (tests, shutdown hooks)."""
    with _routers_lock:
        for router in _routers.values():
            router.close()
        _routers.clear()
