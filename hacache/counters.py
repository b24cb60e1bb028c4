"""``incr``: one round trip, atomic, never creating a missing key, never counted twice.

By script (``EVAL`` of ``INCR_IF_EXISTS``) unless the shard's Redis user was found not to be
allowed scripts; then by a MULTI/EXEC transaction (``steps``) that needs no script. What each
shard's user may run is learned from refusals and kept per process:

- A refused ``EVAL`` ran nothing: that call raises ``ScriptsRefused`` (the backend sends it
  again at once, the script-free way), and every later one takes the transaction. Both are not
  sent together: a pipeline cannot depend on its own replies, and a user allowed scripts but
  not MULTI would count twice.
- A user allowed neither gets ``incr`` refused with the rules it lacks, rather than raced.
- Neither form is ever replayed (``idempotent=False``): a lost reply is an error, not a
  second increment.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

from redis.exceptions import NoPermissionError, ResponseError

from hacache.endpoint import Command, Replies
from hacache.router import Op, Router
from hacache.shard import Shard

# One server-side step: no EXISTS-then-INCRBY race and one round trip, not two.
INCR_IF_EXISTS = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "return redis.call('INCRBY', KEYS[1], ARGV[1]) end return false"
)
# Per shard, whether its Redis user may run scripts (absent: not known yet). Process-wide.
_scripts: weakref.WeakKeyDictionary[Shard, bool] = weakref.WeakKeyDictionary()
# Shards whose user may run neither scripts nor MULTI: incr is refused there, not raced.
_no_transactions: weakref.WeakSet[Shard] = weakref.WeakSet()
RULES = "+eval, or +multi +exec +rpush +lrem (with +incrby)"
logger = logging.getLogger("hacache.ops")


class ScriptsRefused(ResponseError):
    """``incr``'s script was refused (NOPERM) and ran nothing: the same call made again uses the
    transaction without scripts."""


def refused(reply: Any, command: str) -> bool:
    """A NOPERM reply refusing ``command`` itself (not a key or a channel): it did nothing,
    and the user may not run it at all."""
    return isinstance(reply, NoPermissionError) and f"'{command}' command" in str(reply)


def no_scripts(shard: Shard) -> None:
    """``shard``'s user was refused a script (an invalidation's, say): incr will not try one."""
    _scripts[shard] = False


def steps(key: str, token: str, delta: int) -> list[Command]:
    """``incr`` without a script: one MULTI/EXEC transaction, one round trip, that counts only
    if the key exists.

    RPUSH puts a stand-in at a missing key (a list holding a random ``token``) and fails
    (WRONGTYPE) on a counter; INCRBY then counts on the counter and fails on the stand-in,
    never creating anything; LREM takes the token out again, deleting the stand-in (a list of
    the caller's gets its elements back as they were). Atomic, so no other client ever sees
    the stand-in; sent once (``idempotent=False``, never replayed), so it never counts twice.
    """
    return [
        ("MULTI",),
        ("RPUSH", key, token),
        ("INCRBY", key, delta),
        ("LREM", key, -1, token),
        ("EXEC",),
    ]


def _raised(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


def outcome(replies: Replies) -> int | None:
    """The new value of a ``steps`` transaction, or None (no such key)."""
    multi, queued, executed = replies[0], replies[1:-1], replies[-1]
    if not isinstance(multi, Exception) and not isinstance(executed, list):
        # EXECABORT: a step was refused when queued (NOPERM, OOM), so none ran.
        why = next((r for r in queued if isinstance(r, Exception)), executed)
        raise ResponseError(
            f"incr without scripts was refused: {why}; nothing was counted "
            f"(the Redis user needs {RULES})"
        )
    pushed, counted, _ = queued if isinstance(multi, Exception) else executed
    if pushed == 1:  # the stand-in was the only element: there was no such key
        return None
    return _raised(counted)  # WRONGTYPE for a list or another non-counter, as INCRBY says


def incr(router: Router, key: str, delta: int) -> Op:
    """INCRBY ``key`` if it exists (else ``ValueError``), by script or by ``steps``."""
    shard = router.shard_for(key)

    def found(value: Any) -> int:
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return value

    if _scripts.get(shard, True):

        def finish(results: list[Replies]) -> int:
            reply = results[0][0]
            if refused(reply, "eval"):
                no_scripts(shard)
                logger.warning(
                    "hacache: cache %r, shard %r: the Redis user may not run scripts (%s): "
                    "incr uses a MULTI/EXEC transaction from now on (it needs %s)",
                    shard.cache, shard.name, reply, RULES,
                )  # fmt: skip
                raise ScriptsRefused(
                    f"incr: {reply}; nothing was counted; from now on this process uses "
                    "a transaction without scripts on this shard: retry"
                )
            if isinstance(reply, ResponseError) and " script: " in str(reply):
                # Redis's reason, without the script's SHA and line it appends.
                text = str(reply).split(" script: ", 1)[0]
                raise type(reply)(f"{text} (in incr's script)") from reply
            return found(_raised(reply))

        commands: list[Command] = [("EVAL", INCR_IF_EXISTS, 1, key, delta)]
    else:
        if shard in _no_transactions:
            raise ResponseError(
                f"shard {shard.name!r}: incr refused: the Redis user may run neither scripts "
                f"nor MULTI/EXEC, without which incr would race other clients; it needs {RULES}"
            )

        def finish(results: list[Replies]) -> int:
            replies = results[0]
            if refused(replies[0], "multi"):  # no MULTI: the steps ran one by one, this once
                _no_transactions.add(shard)
            return found(outcome(replies))

        commands = steps(key, os.urandom(8).hex(), delta)
    return Op([(shard, commands)], finish, False, None, False, False, [[key]])
