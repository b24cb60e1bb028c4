"""What to do when a shard's server fails: retry where it is safe, within bounds, or give up.

- A read is retried on the shard's usable replicas, then on the master if it has changed. It never
  waits: if no server answers, it fails at once (or, failing open, becomes a miss).
- A write goes only to a master. After a failure it may wait up to ``FAILOVER_TIMEOUT`` for
  Sentinel to promote a new master (a plain shard has none to wait for), then is retried there
  once, but only if replaying it is safe: the command is idempotent, never reached the server,
  or was refused with ``READONLY`` (a demoted master writes nothing).
- Every server has a circuit breaker (``breaker``), so a dead one costs a fast failure.
- Failing open (``FAIL_OPEN``), a failed shard's replies are replaced by the replies of an empty
  server, so reads miss and writes report that nothing was stored; each outage is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import ReadOnlyError, RedisError

from hacache.endpoint import Command, Pending, Replies

if TYPE_CHECKING:
    from hacache.shard import Shard

logger = logging.getLogger("hacache")

# What each command answers on a server that holds nothing: a failed shard's replies when
# failing open. SET's None reads as "not stored"; FLUSHDB's None as "not cleared".
_EMPTY_REPLY: dict[str, Any] = {
    "GET": None, "EXISTS": 0, "DEL": 0, "SET": None, "MSET": None, "EXPIRE": 0, "PERSIST": 0,
    "PTTL": -2, "EVAL": None, "FLUSHDB": None,
}  # fmt: skip
_LOG_EVERY = 10.0  # seconds between repeated warnings about the same shard
_last_logged: dict[str, float] = {}


def empty_replies(commands: list[Command]) -> Replies:
    replies = []
    for command in commands:
        if command[0] == "MGET":
            replies.append([None] * (len(command) - 1))
        elif command[0] == "WAIT":
            replies.append(command[1])  # the write itself already reads as not stored
        else:
            replies.append(_EMPTY_REPLY[command[0]])
    return replies


def log_failure(shard: Shard, error: BaseException) -> None:
    """Warn about a shard failing open: once per outage, then every ``_LOG_EVERY`` seconds."""
    now = time.monotonic()
    if now - _last_logged.get(shard.name, -_LOG_EVERY) >= _LOG_EVERY:
        _last_logged[shard.name] = now
        logger.warning("hacache: shard %r unavailable, failing open: %s", shard.name, error)


def _replayable(pending: Pending, error: RedisError, idempotent: bool) -> bool:
    return idempotent or not pending.sent or isinstance(error, ReadOnlyError)


def recover(
    shard: Shard, pending: Pending, error: RedisError, idempotent: bool, readonly: bool
) -> Replies:
    failed = pending.endpoint
    if shard.monitor is not None:
        shard.monitor.refresh()
    if readonly:
        for endpoint in shard.read_endpoints(exclude=failed):
            try:
                return endpoint.call(pending.commands)
            except RedisError as exc:
                error = exc
    elif shard.monitor is not None and _replayable(pending, error, idempotent):
        master = shard.wait_for_new_master(failed, shard.options.failover_timeout)
        if master is not None:
            try:
                return master.call(pending.commands, idempotent)
            except RedisError as exc:
                error = exc
    raise shard.error(error, failed) from error


async def arecover(
    shard: Shard, pending: Pending, error: RedisError, idempotent: bool, readonly: bool
) -> Replies:
    failed = pending.endpoint
    if shard.monitor is not None:
        shard.monitor.refresh()
    if readonly:
        for endpoint in shard.read_endpoints(exclude=failed):
            try:
                return await endpoint.acall(pending.commands)
            except RedisError as exc:
                error = exc
    elif shard.monitor is not None and _replayable(pending, error, idempotent):
        deadline = time.monotonic() + shard.options.failover_timeout
        while shard.master is failed and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # the monitor thread moves the master; poll for it
        master = shard.master
        if master is not None and master is not failed:
            try:
                return await master.acall(pending.commands, idempotent)
            except RedisError as exc:
                error = exc
    raise shard.error(error, failed) from error
