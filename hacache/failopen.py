"""Failing open: what a failed shard answers (an empty server's replies), and how it is logged.

The decision to fail open is ``failover``'s; this is only its vocabulary. Warnings name the
cache alias, the shard and the exception class, once per outage per alias and shard, then every
``_LOG_EVERY`` seconds, and never hold a key, a value or a password.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from hacache.endpoint import Command, Replies
from hacache.pool import PoolExhausted

if TYPE_CHECKING:
    from hacache.shard import Shard

logger = logging.getLogger("hacache.failover")

# What each command answers on a server that holds nothing. SET's None reads as "not stored";
# FLUSHDB's None as "not cleared". A command missing here does not fail open: hashes and sets
# hold data their callers manage, and an empty answer made up for them would be taken as true.
_EMPTY_REPLY: dict[str, Any] = {
    "GET": None, "EXISTS": 0, "DEL": 0, "UNLINK": 0, "SET": None, "MSET": None, "EXPIRE": 0,
    "PEXPIRE": 0, "EXPIREAT": 0, "PEXPIREAT": 0, "PERSIST": 0, "TTL": -2, "PTTL": -2,
    "EVAL": None, "EVALSHA": None, "INCRBY": None, "FLUSHDB": None, "SCAN": [b"0", []],
}  # fmt: skip
_LOG_EVERY = 10.0  # seconds between repeated warnings about the same shard
_last_logged: dict[tuple[str, str], float] = {}  # (alias, shard) -> when last logged


def empty_replies(commands: list[Command]) -> Replies | None:
    """What an empty server would answer; None if a command may not fail open."""
    replies = []
    for command in commands:
        if command[0] not in _EMPTY_REPLY and command[0] not in ("MGET", "WAIT"):
            return None
        if command[0] == "MGET":
            replies.append([None] * (len(command) - 1))
        elif command[0] == "WAIT":
            replies.append(command[1])  # the write itself already reads as not stored
        else:
            reply = _EMPTY_REPLY[command[0]]
            replies.append(list(reply) if isinstance(reply, list) else reply)
    return replies


def log_failure(shard: Shard, error: BaseException) -> None:
    """Warn about a shard failing open: once per outage, then every ``_LOG_EVERY`` seconds."""
    now, key = time.monotonic(), (shard.cache, shard.name)
    if now - _last_logged.get(key, -_LOG_EVERY) >= _LOG_EVERY:
        _last_logged[key] = now
        what = "no free connection" if isinstance(error, PoolExhausted) else "unavailable"
        logger.warning(
            "hacache: cache %r, shard %r %s, failing open: %s: %s",
            shard.cache, shard.name, what, type(error).__name__, error,
        )  # fmt: skip
