"""The drivers: carry out the failure policy's actions with blocking sockets or with asyncio.

They only send, read and wait; every decision is in ``failover``. Both keep the pools' rule: a
connection goes back to its pool only once every reply it was sent has been read, and is
discarded exactly once otherwise, also when the call is interrupted (a KeyboardInterrupt, a
cancelled task): every pipeline a plan started and did not finish is discarded on the way out.
"""

from __future__ import annotations

import asyncio
import select
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from hacache import failover
from hacache.actions import CloseIdle, Discard, Discover, Finish, Plan, Ready, Start, WaitFor
from hacache.endpoint import Command, Endpoint, Pending, Replies, ServerClosed
from hacache.failover import direct, settled

if TYPE_CHECKING:
    from hacache.router import Op, Router

_POLL = 0.005  # seconds between looks at a shard's view while an async call waits for it


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


def _reply_error(exc: ResponseError) -> ResponseError:
    """An error reply is a reply, except a protocol error: Redis closes the connection after
    it (an argument above its ``proto-max-bulk-len``, see ``sizelimit``)."""
    if str(exc).startswith("Protocol error"):
        raise ServerClosed(f"{exc}; the server closed the connection") from exc
    return exc


# -- sync ------------------------------------------------------------------------------------


def _start(endpoint: Endpoint, commands: list[Command], idempotent: bool) -> Pending:
    pool = endpoint.pool
    connection = None
    reused = sent = False
    try:
        connection, reused = pool.acquire()
        if reused and not idempotent and _closed_by_server(connection):
            # Cannot be replayed after the fact, so pay for a check up front instead.
            stale, connection = connection, None
            pool.discard(stale)
            pool.close()
            connection, reused = pool.acquire()
        if not reused:
            connection.connect()
        sent = True
        connection.send_packed_command(connection.pack_commands(commands), False)
    except RedisError as exc:
        if connection is not None:
            pool.discard(connection)
        return Pending(endpoint, None, reused, commands, exc, sent)
    except BaseException:
        if connection is not None:
            pool.discard(connection)
        raise
    return Pending(endpoint, connection, reused, commands, None, True)


def _finish(pending: Pending) -> Replies | RedisError:
    connection, pool = pending.connection, pending.endpoint.pool
    replies = []
    try:
        for _ in pending.commands:
            try:
                replies.append(connection.read_response(disconnect_on_error=False))
            except ResponseError as exc:
                replies.append(_reply_error(exc))
    except RedisError as exc:
        pool.discard(connection)
        return exc
    except BaseException:
        pool.discard(connection)
        raise
    pool.release(connection)
    return replies


def _ready(pendings: tuple[Pending, ...], timeout: float) -> int | None:
    sockets = []
    for i, pending in enumerate(pendings):
        try:
            if pending.connection.can_read(0):
                return i
        except RedisError:
            return i  # closed: reading it will say so at once
        sockets.append(pending.connection._sock)
    readable, _, _ = select.select(sockets, [], [], timeout)
    return sockets.index(readable[0]) if readable else None


def _wait_for(action: WaitFor) -> None:
    action.shard.wait_for(action.until, action.timeout)


def _discover(action: Discover) -> RedisError | None:
    try:
        action.shard.discover()
    except RedisError as exc:
        return exc
    return None


def run(op: Op, router: Router) -> Any:
    """One operation: sent straight to its shard's master when ``failover.direct`` finds
    nothing to decide, else (or when that exchange does not settle) by the whole plan."""
    if len(op.batches) == 1:
        endpoint = direct(op, router)
        if endpoint is not None:
            pending = _start(endpoint, op.batches[0][1], op.idempotent)
            outcome = pending.error if pending.connection is None else _finish(pending)
            if settled(endpoint, outcome):
                return op.finish([outcome])
            return drive(failover.run(op, router, (pending, outcome)))
    return drive(failover.run(op, router))


def drive(plan: Plan) -> Any:
    """Run a plan to its end with blocking I/O; returns its result or raises its error."""
    open_: list[Pending] = []  # started and neither finished nor discarded
    try:
        action = next(plan)
        while True:
            kind = action.__class__
            if kind is Start:
                outcome = _start(*action)
                if outcome.connection is not None:
                    open_.append(outcome)
            elif kind is Finish:
                open_.remove(action.pending)
                outcome = _finish(action.pending)
            elif kind is Ready:
                outcome = _ready(action.pendings, action.timeout)
            elif kind is Discard:
                open_.remove(action.pending)
                action.pending.endpoint.pool.discard(action.pending.connection)
                outcome = None
            elif kind is CloseIdle:
                outcome = action.endpoint.pool.close()
            elif kind is Discover:
                outcome = _discover(action)
            else:
                outcome = _wait_for(action)
            action = plan.send(outcome)
    except StopIteration as stop:
        return stop.value
    finally:
        for pending in open_:  # only left over when interrupted
            pending.endpoint.pool.discard(pending.connection)


# -- async -----------------------------------------------------------------------------------


async def _astart(endpoint: Endpoint, commands: list[Command], idempotent: bool) -> Pending:
    pool = endpoint.async_pool()
    connection = None
    reused = sent = False
    try:
        connection, reused = await pool.acquire()
        if reused and not idempotent and await _aclosed_by_server(connection):
            stale, connection = connection, None
            await pool.discard(stale)
            await pool.close()
            connection, reused = await pool.acquire()
        if not reused:
            await connection.connect()
        sent = True
        await connection.send_packed_command(connection.pack_commands(commands), False)
    except RedisError as exc:
        if connection is not None:
            await pool.discard(connection)
        return Pending(endpoint, None, reused, commands, exc, sent)
    except BaseException:
        if connection is not None:
            await pool.discard(connection)
        raise
    return Pending(endpoint, connection, reused, commands, None, True)


async def _read_one(connection: Any) -> Any:
    try:
        return await connection.read_response(disconnect_on_error=False)
    except ResponseError as exc:
        return _reply_error(exc)


async def _afinish(pending: Pending, first: asyncio.Task | None) -> Replies | RedisError:
    """``first``: a task that is reading (or has read) the first reply, started by ``Ready``."""
    connection, pool = pending.connection, pending.endpoint.async_pool()
    replies = []
    try:
        count = len(pending.commands)
        if first is not None:
            replies.append(await first)
            count -= 1
        for _ in range(count):
            replies.append(await _read_one(connection))
    except RedisError as exc:
        await pool.discard(connection)
        return exc
    except BaseException:
        await pool.discard(connection)
        raise
    pool.release(connection)
    return replies


async def _aready(
    pendings: tuple[Pending, ...], timeout: float, readers: dict[Any, asyncio.Task]
) -> int | None:
    for pending in pendings:  # keyed by connection: a Pending (it holds a list) is unhashable
        if pending.connection not in readers:
            readers[pending.connection] = asyncio.ensure_future(_read_one(pending.connection))
    tasks = [readers[p.connection] for p in pendings]
    done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    return next((i for i, task in enumerate(tasks) if task in done), None)


async def _adiscard(pending: Pending, readers: dict[Any, asyncio.Task]) -> None:
    reader = readers.pop(pending.connection, None)
    if reader is not None:
        reader.cancel()
    await pending.endpoint.async_pool().discard(pending.connection)


async def _await_view(action: WaitFor) -> None:
    deadline = time.monotonic() + action.timeout
    shard, until = action.shard, action.until
    while not until(shard.view) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL)  # the monitor thread moves the view; look again soon


async def _adiscover(action: Discover) -> RedisError | None:
    # Sentinel's replies are awaited in a thread: the event loop must not block on them.
    return await asyncio.to_thread(_discover, action)


async def arun(op: Op, router: Router) -> Any:
    """See ``run``."""
    if len(op.batches) == 1:
        endpoint = direct(op, router)
        if endpoint is not None:
            pending = await _astart(endpoint, op.batches[0][1], op.idempotent)
            if pending.connection is None:
                outcome: Any = pending.error
            else:
                outcome = await _afinish(pending, None)
            if settled(endpoint, outcome):
                return op.finish([outcome])
            return await adrive(failover.run(op, router, (pending, outcome)))
    return await adrive(failover.run(op, router))


async def adrive(plan: Plan) -> Any:
    """Run a plan to its end on the running event loop."""
    open_: list[Pending] = []
    readers: dict[Any, asyncio.Task] = {}  # first replies being read (hedged reads)
    try:
        action = next(plan)
        while True:
            kind = action.__class__
            if kind is Start:
                outcome = await _astart(*action)
                if outcome.connection is not None:
                    open_.append(outcome)
            elif kind is Finish:
                open_.remove(action.pending)
                outcome = await _afinish(
                    action.pending, readers.pop(action.pending.connection, None)
                )
            elif kind is Ready:
                outcome = await _aready(action.pendings, action.timeout, readers)
            elif kind is Discard:
                open_.remove(action.pending)
                outcome = await _adiscard(action.pending, readers)
            elif kind is CloseIdle:
                outcome = await action.endpoint.async_pool().close()
            elif kind is Discover:
                outcome = await _adiscover(action)
            else:
                outcome = await _await_view(action)
            action = plan.send(outcome)
    except StopIteration as stop:
        return stop.value
    finally:
        for pending in open_:
            await _adiscard(pending, readers)
