"""One shard of the ring: a single Redis server, or a Sentinel service (a master and replicas).

The shard picks the endpoint a pipeline goes to (the master; a replica for reads when asked
to) and hands failures to ``failover``, which decides whether and where to try again.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from hacache import failover
from hacache.breaker import Breaker
from hacache.endpoint import Command, Endpoint, Pending, Replies
from hacache.options import Options, ShardSpec
from hacache.sentinel import SentinelMonitor


class Shard:
    def __init__(self, spec: ShardSpec, options: Options) -> None:
        self.spec = spec
        self.name = spec.name
        self.options = options
        self._endpoints: dict[tuple[str, int], Endpoint] = {}
        self._changed = threading.Condition()
        self.generation = 0  # moves on whenever the master does
        self.replicas: list[Endpoint] = []
        self.master_listeners: list[Callable[[Shard], None]] = []
        self.monitor: SentinelMonitor | None = None
        self.master: Endpoint | None
        if spec.sentinels:
            self.master = None  # asked of Sentinel on first use
            self.monitor = SentinelMonitor(self, spec.sentinels, spec.service, spec.sentinel_kwargs)
        else:
            self.master = self._new_endpoint(spec.address, spec.connection_kwargs)

    def __repr__(self) -> str:
        return f"<Shard {self.name} at {self.address}>"

    @property
    def address(self) -> str:
        master = self.master
        return self.spec.address if master is None else master.address

    def _new_endpoint(self, address: str, kwargs: Any) -> Endpoint:
        options = self.options
        return Endpoint(
            address,
            self.spec.connection_class,
            self.spec.async_connection_class,
            kwargs,
            max_connections=options.max_connections,
            pool_timeout=options.pool_timeout,
            breaker=Breaker(options.breaker_threshold, options.breaker_cooldown),
        )

    def _endpoint(self, host: str, port: int) -> Endpoint:
        endpoint = self._endpoints.get((host, port))
        if endpoint is None:
            kwargs = {**self.spec.connection_kwargs, "host": host, "port": port}
            endpoint = self._endpoints[(host, port)] = self._new_endpoint(f"{host}:{port}", kwargs)
        return endpoint

    # -- topology, as Sentinel reports it ---------------------------------------------------

    def set_servers(self, master: tuple[str, int], replicas: list[tuple[str, int]] | None) -> None:
        """Called by the monitor. ``replicas`` None: unchanged (only the master is known)."""
        endpoint = self._endpoint(*master)
        with self._changed:
            if replicas is not None:
                self.replicas = [self._endpoint(*r) for r in replicas if r != master]
            else:
                self.replicas = [r for r in self.replicas if r is not endpoint]
            if endpoint is self.master:
                return
            old, self.master = self.master, endpoint
            endpoint.breaker.success()  # Sentinel vouches for it: forget its old failures
            self.generation += 1
            self._changed.notify_all()
        if old is not None:
            for listener in self.master_listeners:
                listener(self)

    def _discover(self) -> Endpoint:
        monitor = self.monitor
        assert monitor is not None
        if self.master is None and not monitor.discover():
            raise RedisConnectionError(
                f"shard {self.name!r}: no sentinel of {monitor.sentinels} knows the master of "
                f"{monitor.service!r}"
            )
        monitor.ensure_running()
        assert self.master is not None
        return self.master

    def wait_for_new_master(self, failed: Endpoint, timeout: float) -> Endpoint | None:
        """Block until the master is another endpoint than ``failed``, or ``timeout`` passes."""
        with self._changed:
            self._changed.wait_for(lambda: self.master is not failed, timeout)
            return None if self.master is failed else self.master

    def read_endpoints(self, exclude: Endpoint) -> list[Endpoint]:
        """Where a read may go instead: replicas in random order, then the master."""
        candidates = [r for r in self.replicas if r is not exclude]
        random.shuffle(candidates)
        if self.master is not None and self.master is not exclude:
            candidates.append(self.master)
        return candidates

    def current_master(self) -> Endpoint:
        master = self.master
        if master is None:
            return self._discover()
        if self.monitor is not None:
            self.monitor.ensure_running()
        return master

    def _pick(self, readonly: bool) -> Endpoint:
        master = self.current_master()
        if readonly and self.options.read_from_replicas and self.replicas:
            return random.choice(self.replicas)
        return master

    def error(self, exc: RedisError, endpoint: Endpoint | None = None) -> RedisError:
        """The same exception class, naming the shard: logs must show which server failed."""
        where = endpoint.address if endpoint is not None else self.address
        return type(exc)(f"shard {self.name!r} ({where}): {exc}")

    # -- sync ------------------------------------------------------------------------------

    def start(
        self, commands: list[Command], idempotent: bool = True, readonly: bool = False
    ) -> Pending:
        return self._pick(readonly).start(commands, idempotent)

    def finish(self, pending: Pending, idempotent: bool = True, readonly: bool = False) -> Replies:
        try:
            return pending.endpoint.finish(pending, idempotent)
        except RedisError as exc:
            return failover.recover(self, pending, exc, idempotent, readonly)

    def call(
        self, commands: list[Command], idempotent: bool = True, readonly: bool = False
    ) -> Replies:
        return self.finish(self.start(commands, idempotent, readonly), idempotent, readonly)

    # -- async -----------------------------------------------------------------------------

    async def astart(
        self, commands: list[Command], idempotent: bool = True, readonly: bool = False
    ) -> Pending:
        return await self._pick(readonly).astart(commands, idempotent)

    async def afinish(
        self, pending: Pending, idempotent: bool = True, readonly: bool = False
    ) -> Replies:
        try:
            return await pending.endpoint.afinish(pending, idempotent)
        except RedisError as exc:
            return await failover.arecover(self, pending, exc, idempotent, readonly)

    async def acall(
        self, commands: list[Command], idempotent: bool = True, readonly: bool = False
    ) -> Replies:
        pending = await self.astart(commands, idempotent, readonly)
        return await self.afinish(pending, idempotent, readonly)

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        for endpoint in {*self._endpoints.values(), self.master} - {None}:
            endpoint.close()  # type: ignore[union-attr]
