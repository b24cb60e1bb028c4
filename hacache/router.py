"""The ring plus one ``Shard`` per server: routes keys and runs operations across shards.

Multi-shard operations send every shard's pipeline before reading any reply, so the shards work
concurrently and a ``get_many`` over three shards costs about one round trip, without threads.
Routers are process-wide (one per distinct configuration): Django builds a backend object per
thread and closes it after every request, so pools must not live on the backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from hacache.invalidation import Bus
from hacache.nearcache import NearCache
from hacache.options import Options, parse_options
from hacache.ring import HashRing
from hacache.shard import Command, Pending, Replies, Shard


class Op(NamedTuple):
    """What to send where, and how to turn the replies (one list per batch) into a result.

    ``cleanup`` runs once the call is over, whether it succeeded or raised (near-cache upkeep).
    """

    batches: list[tuple[Shard, list[Command]]]
    finish: Callable[[list[Replies]], Any]
    idempotent: bool = True
    cleanup: Callable[[], None] | None = None


class Router:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.shards = {spec.name: Shard(spec, options) for spec in options.shards}
        self.ring = HashRing(
            {spec.name: spec.weight for spec in options.shards},
            placement=options.placement,
            vnodes=options.vnodes,
            key_hash=options.ketama_hash,
            hash_tags=options.hash_tags,
        )
        self._node_for = self.ring.node_for
        near = options.near_cache
        self.near = (
            NearCache(self.shards, near.max_entries, near.max_bytes, near.ttl) if near else None
        )
        self.bus = (
            Bus(self.shards.values(), self.near, options.invalidation_channel)
            if options.publish_invalidations or near
            else None
        )

    def shard_for(self, key: str) -> Shard:
        return self.shards[self._node_for(key)]

    def group(self, keys: Iterable[str]) -> dict[Shard, list[str]]:
        groups: dict[Shard, list[str]] = {}
        shards, node_for = self.shards, self._node_for
        for key in keys:
            shard = shards[node_for(key)]
            if shard in groups:
                groups[shard].append(key)
            else:
                groups[shard] = [key]
        return groups

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

    def _run(self, op: Op) -> Any:
        batches = op.batches
        if len(batches) == 1:
            shard, commands = batches[0]
            return op.finish([shard.call(commands, op.idempotent)])
        pending: list[tuple[Shard, Pending | None]] = [(shard, None) for shard, _ in batches]
        try:
            for i, (shard, commands) in enumerate(batches):
                pending[i] = (shard, shard.start(commands, op.idempotent))
            results: list[Replies] = []
            first_error: Exception | None = None
            for i, (shard, started) in enumerate(pending):
                pending[i] = (shard, None)
                try:
                    results.append(shard.finish(started, op.idempotent))
                except Exception as exc:  # read every other shard before raising
                    first_error = first_error or exc
        finally:
            for shard, started in pending:  # only left over when interrupted
                if started is not None and started.connection is not None:
                    shard.pool.discard(started.connection)
        if first_error is not None:
            raise first_error
        return op.finish(results)

    async def _arun(self, op: Op) -> Any:
        batches = op.batches
        if len(batches) == 1:
            shard, commands = batches[0]
            return op.finish([await shard.acall(commands, op.idempotent)])
        pending: list[tuple[Shard, Pending | None]] = [(shard, None) for shard, _ in batches]
        try:
            for i, (shard, commands) in enumerate(batches):
                pending[i] = (shard, await shard.astart(commands, op.idempotent))
            results: list[Replies] = []
            first_error: Exception | None = None
            for i, (shard, started) in enumerate(pending):
                pending[i] = (shard, None)
                try:
                    results.append(await shard.afinish(started, op.idempotent))
                except Exception as exc:
                    first_error = first_error or exc
        finally:
            for shard, started in pending:
                if started is not None and started.connection is not None:
                    await shard.async_pool().discard(started.connection)
        if first_error is not None:
            raise first_error
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
