"""A server's ``proto-max-bulk-len``, learned when it refuses a value: a value too large for
the server is the caller's ``ValueError``, never a failure of the server.

Redis refuses a bulk string longer than ``proto-max-bulk-len`` (512 MB by default, never less
than 1 MiB) by replying "Protocol error: invalid bulk length" and closing the connection,
usually while the client is still sending: the client sees a reset, as from a dying server.

Invariants:

- **Nothing is paid on the way there.** Only a request that failed with a connection error
  and carried an argument above ``FLOOR`` (1 MiB, the least the limit can be) is looked at.
- Such a failure is followed by one ``CONFIG GET proto-max-bulk-len`` to the same server. If
  the limit is below the largest argument, the request was refused for its size: the call
  raises ``ValueError`` naming the server and its limit, the breaker is not told, and nothing
  is retried. Redis runs no command from the refused one on.
- The limit is kept on the endpoint for ``RELEARN`` seconds (a server's limit can be raised):
  a value above it then raises the same ``ValueError`` before anything is sent (``Ops._dump``).
- Commands before the refused one in the same request have run: before raising, the policy
  deletes such a write's keys again and publishes their invalidation (``failover``), so the
  failed call leaves none written; a single refused command ran nothing.
- A server that answers the question but may not run ``CONFIG`` (an ACL user without
  ``+config|get``) is alive: the failure is not booked against it either, and the error says
  what to check (a reused connection is first retried once, as a stale one always is). A
  server that does not answer is failing, and is booked as always.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hacache.actions import Finish, Plan, Start
from hacache.endpoint import BreakerOpen, Command, Endpoint, Pending
from hacache.pool import PoolExhausted

if TYPE_CHECKING:
    from hacache.shard import Shard

FLOOR = 1024 * 1024  # Redis refuses a proto-max-bulk-len below 1mb
RELEARN = 600.0  # seconds a learned limit is trusted before the next refusal asks again
_ASK: list[Command] = [("CONFIG", "GET", "proto-max-bulk-len")]


def largest(commands: list[Command]) -> tuple[int, Any]:
    """The length of the longest string argument (what the bulk limit applies to), and the
    key it was sent for (MSET: the key before it; else the command's first argument)."""
    size, key = 0, None
    for command in commands:
        for i, arg in enumerate(command):
            if isinstance(arg, (bytes, str)) and len(arg) > size:
                mset = str(command[0]).upper() == "MSET"
                size, key = len(arg), command[i - 1] if mset else command[1]
    return size, key


def _limit(reply: Any) -> int | None:
    """The number in a ``CONFIG GET`` reply (RESP2: a flat list; RESP3: a map)."""
    values = list(reply.values()) if isinstance(reply, dict) else list(reply or [])[1::2]
    try:
        return int(values[0])
    except (IndexError, TypeError, ValueError):
        return None


class RefusedForSize(ValueError):
    """A server refused (or would refuse) a value above its ``proto-max-bulk-len``."""


def too_large(address: str, size: int, limit: int, key: Any) -> RefusedForSize:
    what = f"the value for key {key!r}"
    return RefusedForSize(
        f"{address} refuses {what}: {size:,} bytes, above its proto-max-bulk-len ({limit:,}); "
        "nothing from it on was stored. Lower MAX_VALUE_BYTES below the servers' limit"
    )


def check_known(shard: Shard, key: str, size: int) -> None:
    """Before sending: raise if ``key``'s master is known to refuse ``size`` bytes."""
    master = shard.view.master
    learned = None if master is None else master.bulk_limit
    if learned is not None and size > learned[0] and monotonic() - learned[1] < RELEARN:
        raise too_large(master.address, size, learned[0], key)  # type: ignore[union-attr]


def refusal(pending: Pending, error: RedisError) -> Plan:
    """After ``error``: the exception to raise *instead of booking a failure* if the server
    refused a large argument (or is alive and cannot say), else None."""
    if not isinstance(error, RedisConnectionError) or isinstance(
        error, (RedisTimeoutError, BreakerOpen, PoolExhausted)
    ):
        return None
    size, key = largest(pending.commands)
    if size <= FLOOR:
        return None
    endpoint: Endpoint = pending.endpoint
    asked = yield Start(endpoint, _ASK, True)
    replies = asked.error if asked.connection is None else (yield Finish(asked))
    if not isinstance(replies, list):
        return None  # no answer: the server is failing
    limit = None if isinstance(replies[0], ResponseError) else _limit(replies[0])
    if limit is None:
        if pending.reused:
            return None  # maybe only stale: retried once first (``failover._unsettled``)
        return type(error)(
            f"{error} (the request carried a {size:,}-byte argument and the server is alive: "
            f"if its proto-max-bulk-len is below that, lower MAX_VALUE_BYTES; CONFIG GET was "
            f"refused: {replies[0]})"
        )
    endpoint.bulk_limit = (limit, monotonic())
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    return too_large(endpoint.address, size, limit, key) if size > limit else None
