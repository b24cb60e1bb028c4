"""One Redis server address: its pools, its circuit breaker, and sending a pipeline to it.

A pipeline is sent in one write and its replies read afterwards, in two separate steps
(``start``/``finish``), so the router can send to every shard before waiting on any of them.
A shard (``shard``) is one endpoint, or with Sentinel a master endpoint and replica endpoints.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hacache.breaker import Breaker
from hacache.pool import AsyncPool, SyncPool

Command = tuple[Any, ...]
# Each reply is the decoded value, or the ResponseError Redis sent for that command.
Replies = list[Any]


class BreakerOpen(RedisConnectionError):
    """The endpoint failed repeatedly: calls fail at once until its cooldown has passed."""


class Pending(NamedTuple):
    endpoint: Endpoint
    connection: Any  # None once the send has failed
    reused: bool
    commands: list[Command]
    error: RedisError | None
    sent: bool  # False: the commands certainly never reached the server


def _is_stale(pending: Pending, error: RedisError | None) -> bool:
    # A connection that sat idle may have been closed by a server restart: the first use
    # fails at once with a connection error. A timeout is a live problem, not staleness.
    return (
        pending.reused
        and isinstance(error, RedisConnectionError)
        and not isinstance(error, RedisTimeoutError)
    )


def _refused(error: BaseException) -> bool:
    """Nothing listens at the address: no point in trying it again before the cooldown."""
    return isinstance(error.__context__, ConnectionRefusedError)


def _read_only(replies: Replies) -> RedisError | None:
    """A READONLY reply: this server is no longer the master and wrote nothing."""
    if replies and isinstance(replies[-1], ResponseError):
        for reply in replies:
            if isinstance(reply, ReadOnlyError):
                return reply
    return None


def _closed_by_server(connection: Any) -> bool:
    """An idle connection with something to read has been closed (or is out of step)."""
    try:
        return connection.can_read()
    except RedisError:
        return True


async def _aclosed_by_server(connection: Any) -> bool:
    try:
        return await connection.can_read()
    except (RedisError, OSError):
        return True


class Endpoint:
    """One address: the sync pool, one async pool per event loop, and a circuit breaker."""

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
        self.connection_class = connection_class
        self.async_connection_class = async_connection_class
        self.connection_kwargs = kwargs
        self._pool_args = (max_connections, pool_timeout)
        self.pool = SyncPool(connection_class, kwargs, max_connections, pool_timeout)
        self.breaker = breaker
        self._async_pools: weakref.WeakKeyDictionary[Any, AsyncPool] = weakref.WeakKeyDictionary()
        self._last_async: tuple[Any, AsyncPool | None] = (None, None)

    def __repr__(self) -> str:
        return f"<Endpoint {self.address}>"

    def _refused(self, commands: list[Command]) -> Pending:
        error = BreakerOpen(f"{self.address} failed repeatedly; retrying after a cooldown")
        return Pending(self, None, False, commands, error, False)

    def _settle(self, replies: Replies) -> RedisError | None:
        """Book a finished exchange with the breaker; a READONLY reply counts as a failure."""
        error = _read_only(replies)
        if error is None:
            self.breaker.success()
        else:
            self.breaker.failure()
        return error

    # -- sync ------------------------------------------------------------------------------

    def start(self, commands: list[Command], idempotent: bool = True) -> Pending:
        if not self.breaker.allow():
            return self._refused(commands)
        connection, reused = self.pool.acquire()
        sent = False
        try:
            if reused and not idempotent and _closed_by_server(connection):
                # Cannot be retried after the fact, so pay for a check up front instead.
                self.pool.discard(connection)
                self.pool.close()
                connection, reused = self.pool.acquire()
            if not reused:
                connection.connect()
            sent = True
            connection.send_packed_command(connection.pack_commands(commands), False)
        except RedisError as exc:
            self.pool.discard(connection)
            return Pending(self, None, reused, commands, exc, sent)
        except BaseException:
            self.pool.discard(connection)
            raise
        return Pending(self, connection, reused, commands, None, True)

    def finish(self, pending: Pending, idempotent: bool = True) -> Replies:
        """Read a started pipeline's replies; retry once on a fresh connection if it was stale.

        Raises the endpoint's error as it is; the shard decides what to do about it.
        """
        connection, error = pending.connection, pending.error
        if connection is not None:
            try:
                replies = []
                for _ in pending.commands:
                    try:
                        replies.append(connection.read_response(disconnect_on_error=False))
                    except ResponseError as exc:
                        replies.append(exc)
            except RedisError as exc:
                self.pool.discard(connection)
                error = exc
            except BaseException:
                self.pool.discard(connection)
                raise
            else:
                self.pool.release(connection)
                error = self._settle(replies)
                if error is None:
                    return replies
                raise error
        if _is_stale(pending, error):
            self.pool.close()  # its idle siblings are most likely stale too
            if idempotent:
                return self.finish(self.start(pending.commands)._replace(reused=False))
        assert error is not None
        if not isinstance(error, BreakerOpen):
            self.breaker.failure(_refused(error))
        raise error

    def call(self, commands: list[Command], idempotent: bool = True) -> Replies:
        return self.finish(self.start(commands, idempotent), idempotent)

    # -- async -----------------------------------------------------------------------------

    def async_pool(self) -> AsyncPool:
        loop = asyncio.get_running_loop()
        last_loop, pool = self._last_async  # one tuple read: safe against other threads' loops
        if last_loop is loop and pool is not None:
            return pool
        pool = self._async_pools.get(loop)
        if pool is None:
            kwargs = self.connection_kwargs
            pool = AsyncPool(self.async_connection_class, kwargs, *self._pool_args)
            self._async_pools[loop] = pool
        self._last_async = (loop, pool)
        return pool

    async def astart(self, commands: list[Command], idempotent: bool = True) -> Pending:
        if not self.breaker.allow():
            return self._refused(commands)
        pool = self.async_pool()
        connection, reused = await pool.acquire()
        sent = False
        try:
            if reused and not idempotent and await _aclosed_by_server(connection):
                await pool.discard(connection)
                await pool.close()
                connection, reused = await pool.acquire()
            if not reused:
                await connection.connect()
            sent = True
            await connection.send_packed_command(connection.pack_commands(commands), False)
        except RedisError as exc:
            await pool.discard(connection)
            return Pending(self, None, reused, commands, exc, sent)
        except BaseException:
            await pool.discard(connection)
            raise
        return Pending(self, connection, reused, commands, None, True)

    async def afinish(self, pending: Pending, idempotent: bool = True) -> Replies:
        pool = self.async_pool()
        connection, error = pending.connection, pending.error
        if connection is not None:
            try:
                replies = []
                for _ in pending.commands:
                    try:
                        replies.append(await connection.read_response(disconnect_on_error=False))
                    except ResponseError as exc:
                        replies.append(exc)
            except RedisError as exc:
                await pool.discard(connection)
                error = exc
            except BaseException:
                await pool.discard(connection)
                raise
            else:
                pool.release(connection)
                error = self._settle(replies)
                if error is None:
                    return replies
                raise error
        if _is_stale(pending, error):
            await pool.close()
            if idempotent:
                fresh = (await self.astart(pending.commands))._replace(reused=False)
                return await self.afinish(fresh)
        assert error is not None
        if not isinstance(error, BreakerOpen):
            self.breaker.failure(_refused(error))
        raise error

    async def acall(self, commands: list[Command], idempotent: bool = True) -> Replies:
        return await self.afinish(await self.astart(commands, idempotent), idempotent)

    def close(self) -> None:
        self.pool.close()
