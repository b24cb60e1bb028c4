"""Lean per-endpoint connection pools over redis-py's connection classes.

redis-py's own pool polls every connection it hands out and records metrics on each checkout;
measured here that doubles the cost of a loopback GET. These pools keep idle connections in a
LIFO deque (atomic under the GIL, so no lock on the hot path) and rely on the drivers' rule
instead: a connection goes back only after every reply it was sent has been read, and is
discarded (exactly once) on any error. After ``fork()`` the child drops the connections it
inherited and starts with all of ``MAX_CONNECTIONS`` free: permits held by the parent's other
threads would otherwise be lost for good.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

_live_pools: weakref.WeakSet[SyncPool] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for pool in list(_live_pools):
        pool.forget()


os.register_at_fork(after_in_child=_forget_connections_after_fork)


class PoolExhausted(RedisConnectionError):
    """All ``MAX_CONNECTIONS`` connections stayed busy for ``POOL_TIMEOUT`` seconds.

    A local shortage, not a sign that the server failed: it never counts against a breaker.
    """


def _pop_all(free: deque[Any]) -> list[Any]:
    """Empty a deque other threads may be popping from too."""
    taken = []
    while True:
        try:
            taken.append(free.pop())
        except IndexError:
            return taken


class SyncPool:
    __slots__ = (
        "__weakref__", "_closed", "_free", "_kwargs", "_limit", "_max", "_opened", "_pool_timeout",
        "_timeouts", "connection_class",
    )  # fmt: skip

    def __init__(
        self,
        connection_class: type,
        kwargs: Mapping[str, Any],
        max_connections: int | None = None,
        pool_timeout: float = 0.5,
    ) -> None:
        self.connection_class = connection_class
        self._kwargs = dict(kwargs)
        self._free: deque[Any] = deque()
        self._max = max_connections
        self._limit = threading.BoundedSemaphore(max_connections) if max_connections else None
        self._pool_timeout = pool_timeout
        # Running totals for the metrics, moved only off the fast path (new, closed, refused).
        self._opened = self._closed = self._timeouts = 0
        _live_pools.add(self)

    def acquire(self) -> tuple[Any, bool]:
        """A connection and whether it was used before (a reused one may have gone stale)."""
        limit = self._limit
        if limit is not None and not limit.acquire(timeout=self._pool_timeout):
            self._timeouts += 1
            raise PoolExhausted(f"no free connection within {self._pool_timeout}s")
        try:
            return self._free.pop(), True
        except IndexError:
            self._opened += 1
            return self.connection_class(**self._kwargs), False

    def release(self, connection: Any) -> None:
        self._free.append(connection)
        if self._limit is not None:
            self._limit.release()

    def discard(self, connection: Any) -> None:
        self._closed += 1
        try:
            connection.disconnect()
        finally:
            if self._limit is not None:
                self._limit.release()

    def forget(self) -> None:
        """After fork: drop idle connections unclosed (the parent's) and every held permit."""
        self._free = deque()
        self._opened = self._closed = 0
        if self._max:
            self._limit = threading.BoundedSemaphore(self._max)

    def close(self) -> None:
        for connection in _pop_all(self._free):
            self._closed += 1
            connection.disconnect()

    def usage(self) -> tuple[int, int, int]:
        """(idle, in use, timeouts so far): for the metrics; racy by a connection or two."""
        idle = len(self._free)
        return idle, max(0, self._opened - self._closed - idle), self._timeouts


class AsyncPool:
    """One per event loop: redis.asyncio connections cannot move between loops."""

    __slots__ = ("_free", "_kwargs", "_limit", "_pool_timeout", "connection_class")

    def __init__(
        self,
        connection_class: type,
        kwargs: Mapping[str, Any],
        max_connections: int | None = None,
        pool_timeout: float = 0.5,
    ) -> None:
        self.connection_class = connection_class
        self._kwargs = dict(kwargs)
        self._free: deque[Any] = deque()
        self._limit = asyncio.BoundedSemaphore(max_connections) if max_connections else None
        self._pool_timeout = pool_timeout

    async def acquire(self) -> tuple[Any, bool]:
        if self._limit is not None:
            try:
                await asyncio.wait_for(self._limit.acquire(), self._pool_timeout)
            except asyncio.TimeoutError:
                raise PoolExhausted(f"no free connection within {self._pool_timeout}s") from None
        try:
            return self._free.pop(), True
        except IndexError:
            return self.connection_class(**self._kwargs), False

    def release(self, connection: Any) -> None:
        self._free.append(connection)
        if self._limit is not None:
            self._limit.release()

    async def discard(self, connection: Any) -> None:
        try:
            await connection.disconnect(nowait=True)
        finally:
            if self._limit is not None:
                self._limit.release()

    async def close(self) -> None:
        for connection in _pop_all(self._free):
            await connection.disconnect()

    def abandon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the idle connections from outside ``loop`` (closed, or another thread's)."""
        for connection in _pop_all(self._free):
            transport = getattr(getattr(connection, "_writer", None), "transport", None)
            if transport is None:
                continue
            if loop.is_closed():
                sock = getattr(transport, "_sock", None)  # the loop can no longer close it
                if sock is not None:
                    sock.close()
            else:
                loop.call_soon_threadsafe(transport.close)
