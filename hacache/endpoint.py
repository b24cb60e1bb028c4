"""One Redis server address: its connection pools and its circuit breaker. Data, no policy.

What to do with an endpoint (send, read, retry, give up) is decided in ``failover`` and carried
out by ``driver``. An endpoint has one sync pool for the process and one async pool per event
loop (redis.asyncio connections cannot move between loops); pools of loops that have been
closed are dropped, with their sockets, the next time a new loop asks for a pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from hacache.breaker import Breaker
from hacache.pool import AsyncPool, SyncPool

Command = tuple[Any, ...]
# Each reply is the decoded value, or the ResponseError Redis sent for that command.
Replies = list[Any]


class BreakerOpen(RedisConnectionError):
    """The endpoint failed repeatedly: calls fail at once until its cooldown has passed."""


class ServerClosed(RedisConnectionError):
    """The server answered a protocol error, and closes the connection after one."""


class Pending(NamedTuple):
    """A pipeline on its way to one endpoint (or one that could not be sent)."""

    endpoint: Endpoint
    connection: Any  # None once the send has failed
    reused: bool  # the connection had been used before: it may have gone stale
    commands: list[Command]
    error: RedisError | None
    sent: bool  # False: the commands certainly never reached the server


class Endpoint:
    __slots__ = (
        "__weakref__", "_async_lock", "_async_pools", "_last_async", "_pool_args", "address",
        "async_connection_class", "breaker", "bulk_limit", "connection_class",
        "connection_kwargs", "pool",
    )  # fmt: skip

    def __init__(
        self,
        address: str,
        connection_class: type,
        async_connection_class: type,
        kwargs: Mapping[str, Any],
        *,
        max_connections: int | None,
        pool_timeout: float,
        breaker: Breaker,
    ) -> None:
        self.address = address
        # proto-max-bulk-len and when it was learned (``sizelimit``), once it has been.
        self.bulk_limit: tuple[int, float] | None = None
        self.connection_class = connection_class
        self.async_connection_class = async_connection_class
        self.connection_kwargs = kwargs
        self._pool_args = (max_connections, pool_timeout)
        self.pool = SyncPool(connection_class, kwargs, max_connections, pool_timeout)
        self.breaker = breaker
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncPool] = {}
        self._async_lock = threading.Lock()
        self._last_async: tuple[Any, AsyncPool | None] = (None, None)

    def __repr__(self) -> str:
        return f"<Endpoint {self.address}>"

    def async_pool(self) -> AsyncPool:
        loop = asyncio.get_running_loop()
        last_loop, pool = self._last_async  # one tuple read: safe against other threads' loops
        if last_loop is loop and pool is not None:
            return pool
        with self._async_lock:
            pool = self._async_pools.get(loop)
            if pool is None:
                for old in [old for old in self._async_pools if old.is_closed()]:
                    self._async_pools.pop(old).abandon(old)  # asyncio.run() per call: no leak
                pool = AsyncPool(self.async_connection_class, self.connection_kwargs,
                                 *self._pool_args)  # fmt: skip
                self._async_pools[loop] = pool
        self._last_async = (loop, pool)
        return pool

    def close(self) -> None:
        """Close every idle connection, sync and async (those of running loops included)."""
        self.pool.close()
        with self._async_lock:
            pools, self._async_pools = self._async_pools, {}
            self._last_async = (None, None)
        for loop, pool in pools.items():
            pool.abandon(loop)
