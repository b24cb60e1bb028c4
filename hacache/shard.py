"""One Redis server: its pools, and sending a pipeline of commands to it.

A pipeline is sent in one write and its replies read afterwards, in two separate steps
(``start``/``finish``), so the router can send to every shard before waiting on any of them.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, NamedTuple

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hacache.options import Options, ShardSpec
from hacache.pool import AsyncPool, SyncPool

Command = tuple[Any, ...]
# Each reply is the decoded value, or the ResponseError Redis sent for that command.
Replies = list[Any]


class Pending(NamedTuple):
    connection: Any  # None once the send has failed
    reused: bool
    commands: list[Command]
    error: RedisError | None


def _with_shard(exc: RedisError, shard: Shard) -> RedisError:
    """The same exception class, naming the shard (logs must show which server failed)."""
    return type(exc)(f"shard {shard.name!r} ({shard.address}): {exc}")


def _is_stale(pending: Pending, error: RedisError | None) -> bool:
    # A connection that sat idle may have been closed by a server restart: the first use
    # fails at once with a connection error. A timeout is a live problem, not staleness.
    return (
        pending.reused
        and isinstance(error, RedisConnectionError)
        and not isinstance(error, RedisTimeoutError)
    )


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


class Shard:
    """Owns the sync pool and one async pool per event loop for one server."""

    def __init__(self, spec: ShardSpec, options: Options) -> None:
        self.spec = spec
        self.name = spec.name
        self.address = spec.address
        self._pool_args = (options.max_connections, options.pool_timeout)
        self.pool = SyncPool(spec.connection_class, spec.connection_kwargs, *self._pool_args)
        self._async_pools: weakref.WeakKeyDictionary[Any, AsyncPool] = weakref.WeakKeyDictionary()
        self._last_async: tuple[Any, AsyncPool | None] = (None, None)

    def __repr__(self) -> str:
        return f"<Shard {self.name} at {self.address}>"

    # -- sync ------------------------------------------------------------------------------

    def start(self, commands: list[Command], idempotent: bool = True) -> Pending:
        connection, reused = self.pool.acquire()
        try:
            if reused and not idempotent and _closed_by_server(connection):
                # Cannot be retried after the fact, so pay for a check up front instead.
                self.pool.discard(connection)
                self.pool.close()
                connection, reused = self.pool.acquire()
            connection.send_packed_command(connection.pack_commands(commands), False)
        except RedisError as exc:
            self.pool.discard(connection)
            return Pending(None, reused, commands, exc)
        except BaseException:
            self.pool.discard(connection)
            raise
        return Pending(connection, reused, commands, None)

    def finish(self, pending: Pending, idempotent: bool = True) -> Replies:
        """Read a started pipeline's replies; retry once on a fresh connection if it was stale."""
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
                return replies
        if _is_stale(pending, error):
            self.pool.close()  # its idle siblings are most likely stale too
            if idempotent:
                return self.finish(self.start(pending.commands)._replace(reused=False))
        assert error is not None
        raise _with_shard(error, self) from error

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
            spec = self.spec
            pool = AsyncPool(spec.async_connection_class, spec.connection_kwargs, *self._pool_args)
            self._async_pools[loop] = pool
        self._last_async = (loop, pool)
        return pool

    async def astart(self, commands: list[Command], idempotent: bool = True) -> Pending:
        pool = self.async_pool()
        connection, reused = await pool.acquire()
        try:
            if reused and not idempotent and await _aclosed_by_server(connection):
                await pool.discard(connection)
                await pool.close()
                connection, reused = await pool.acquire()
            await connection.send_packed_command(connection.pack_commands(commands), False)
        except RedisError as exc:
            await pool.discard(connection)
            return Pending(None, reused, commands, exc)
        except BaseException:
            await pool.discard(connection)
            raise
        return Pending(connection, reused, commands, None)

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
                return replies
        if _is_stale(pending, error):
            await pool.close()
            if idempotent:
                fresh = (await self.astart(pending.commands))._replace(reused=False)
                return await self.afinish(fresh)
        assert error is not None
        raise _with_shard(error, self) from error

    async def acall(self, commands: list[Command], idempotent: bool = True) -> Replies:
        return await self.afinish(await self.astart(commands, idempotent), idempotent)

    def close(self) -> None:
        self.pool.close()
