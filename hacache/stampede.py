"""Stampede protection for ``get_or_set``/``aget_or_set`` (and so for ``@hacache.cached``).

When a value is missing, one caller across every process and host takes a short *lease* in
Redis and computes it; the others wait for its value (at most ``WAIT`` seconds, then compute
themselves), or, with ``GRACE``, get the previous value at once. With ``XFETCH_BETA``, a caller
may recompute a value shortly before it expires (XFetch, Vattani et al., VLDB 2015).

Invariants:

- **A hit costs what ``get`` costs.** The first step is ``Ops.get`` itself: a near-cache hit
  stays local, a Redis hit is one round trip. XFetch adds ``PTTL`` and one ``GET`` to that same
  batch (never a round trip).
- **A miss costs what Django's ``get_or_set`` costs: three round trips.** ``GET``; one script
  that reads the key again, takes the lease and reads the grace copy; after the computation,
  one batch that stores (``SET NX`` + ``GET``, as Django's ``add`` + ``get``), keeps the grace
  copy and compute time, gives the lease back and wakes the waiters.
- **The value lives under the key exactly as ``set`` stores it**, with exactly ``timeout``:
  plain ``get`` reads it, no envelope. What protection needs lives in companion keys
  ``<key>:~lease``, ``<key>:~done``, ``<key>:~stale`` (GRACE) and ``<key>:~delta`` (XFetch),
  always sent in the batch of the *key's* shard (never routed by their own names).
- **A lease is released only by its holder** (token compared in Lua), and always: after a
  store, and after a computation that raised. Each release wakes the waiters.
- **No caller waits longer than ``WAIT``.** Waiting blocks in Redis on ``<key>:~done`` (no
  polling), each block below the socket timeout; when the block ends, the same batch re-reads
  the key and may take the lease (the holder failed, or its lease ran out).
- **Protection never fails a call by itself.** If the lease or the wait step fails (a Redis
  error, or failing open), the caller computes without it; storing the value then follows the
  failure policy like any write (raises failing closed, reports nothing stored failing open).
- Plain ``get``/``set``/``add`` are untouched; ``timeout=0`` stores nothing, so it takes
  Django's own path.
"""

from __future__ import annotations

import logging
import math
import os
import random as _random_module
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from hacache.locations import fail as _fail
from hacache.router import Op

if TYPE_CHECKING:
    from hacache.compat import Plan

__all__ = ["COMPUTE", "StampedeOptions", "flight", "parse_option"]

random = _random_module.random  # the XFetch draw; tests replace it
logger = logging.getLogger("hacache.stampede")

# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StampedeOptions:
    lease: float = 5.0  # seconds a caller's claim to compute lasts (a crashed holder: at most this)
    wait: float = 5.0  # seconds a caller waits for another's value before computing itself
    grace: float = 0.0  # seconds past expiry the previous value is served while one recomputes
    xfetch_beta: float = 0.0  # XFetch's beta: 0 is off, 1 is the paper's choice


_FIELDS = {"LEASE": "lease", "WAIT": "wait", "GRACE": "grace", "XFETCH_BETA": "xfetch_beta"}


def _number(where: str, value: Any, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _fail(where, f"expected a number >= 0, got {value!r}")
    if positive and value == 0:
        raise _fail(where, f"expected a positive number of seconds, got {value!r}")
    return float(value)


def parse_option(name: str, value: Any) -> StampedeOptions | None:
    """``OPTIONS['STAMPEDE']``: True (the defaults), False (off), or a dict of LEASE, WAIT
    (defaults to LEASE), GRACE, XFETCH_BETA."""
    if value is True:
        return StampedeOptions()
    if value is False or value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(f"OPTIONS['{name}']", f"expected True, False or a dict, got {value!r}")
    unknown = [k for k in value if k not in _FIELDS]
    if unknown:
        raise _fail(
            f"OPTIONS['{name}'][{unknown[0]!r}]",
            f"unknown setting; expected some of {', '.join(_FIELDS)}",
        )
    parsed = {
        _FIELDS[k]: _number(f"OPTIONS['{name}']['{k}']", v, k in ("LEASE", "WAIT"))
        for k, v in value.items()
    }
    parsed.setdefault("wait", parsed.get("lease", StampedeOptions.lease))
    return StampedeOptions(**parsed)


def resolve(
    configured: StampedeOptions | None,
    protect: bool | None,
    grace: float | None,
    xfetch_beta: float | None,
) -> StampedeOptions | None:
    """The settings of one call: the cache's, with the call's keyword overrides."""
    if protect is False or (configured is None and protect is None):
        return None
    settings = configured or StampedeOptions()
    changes = {}
    for name, value in (("grace", grace), ("xfetch_beta", xfetch_beta)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"get_or_set({name}=...): expected a number >= 0, got {value!r}")
            changes[name] = float(value)
    if changes.get("grace") and not settings.grace:
        # Only then do the cache's writes delete grace copies (``writes.Upkeep``).
        raise ValueError(
            "get_or_set(grace=...) needs OPTIONS['STAMPEDE']['GRACE'] > 0, so that every write "
            "deletes the grace copy of the value it replaces (else an older value could be "
            "served); set GRACE there, and grace= changes it per call"
        )
    return replace(settings, **changes) if changes else settings


# -- the Redis side -----------------------------------------------------------------------

# KEYS: key, lease, stale, done. ARGV: token, lease ms, read the grace copy (0/1), early (0/1).
# Answers {1, value}: the value is there; {2}: the lease is ours (compute); {3, grace copy or
# nil, lease PTTL}: another caller holds it. Taking the lease empties the done list, so that
# a wake-up left from an earlier round wakes nobody in this one.
_LEASE = """
if ARGV[4] == '0' then
  local value = redis.call('GET', KEYS[1])
  if value then return {1, value} end
end
local held = redis.call('GET', KEYS[2])
if held == ARGV[1] then return {2} end
if not held then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[4])
  return {2}
end
local stale = false
if ARGV[3] == '1' then stale = redis.call('GET', KEYS[3]) end
return {3, stale, redis.call('PTTL', KEYS[2])}
"""

# KEYS: lease, done. ARGV: token, done lifetime ms. Give the lease back if still ours; wake all.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: key, stale. ARGV: the grace copy's lifetime (ms). Answers the key's value, and keeps
# it as the grace copy: the value stored, or the one that won over our SET NX.
_KEEP_GRACE = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('SET', KEYS[2], value, 'PX', ARGV[1]) end
return value
"""

_PARTS = ("lease", "done", "stale", "delta")
COMPANIONS = tuple(f":~{part}" for part in _PARTS)  # what ends a companion key's name


def grace_copy(key: str) -> str:
    """Where GRACE keeps ``key``'s previous value; every write of the key deletes it."""
    return f"{key}:~stale"


_HIT, _OURS, _HELD = 1, 2, 3
_MIN_BLOCK = 0.01  # seconds: the shortest wait worth a blocking call
_MISSING = object()


class _Compute:
    def __repr__(self) -> str:
        return "COMPUTE"


COMPUTE = _Compute()  # what ``Flight.lookup`` answers when this caller must compute


def _early(ttl_ms: Any, delta: Any, beta: float) -> bool:
    """XFetch: recompute now if ``now - delta * beta * ln(random()) >= expiry``."""
    if not isinstance(ttl_ms, int) or ttl_ms < 0 or delta is None:
        return False
    return -float(delta) * beta * math.log(random() or 1e-300) >= ttl_ms


class Flight:
    """One ``get_or_set`` call: ``lookup()`` is a plan answering the value or ``COMPUTE``;
    then ``store(value)`` or, if computing raised, ``release()`` (both single operations)."""

    __slots__ = ("_cache", "_held", "_key", "_names", "_overwrite", "_settings", "_started",
                 "_timeout", "_valid")  # fmt: skip

    def __init__(self, cache: Any, key: str, timeout: int | None, settings: StampedeOptions):
        self._cache, self._key, self._timeout, self._settings = cache, key, timeout, settings
        self._names = {part: f"{key}:~{part}" for part in _PARTS}
        self._held: str | None = None  # our lease's token, while we hold one
        self._overwrite = False  # an early refresh replaces a live value
        self._valid: Any = _MISSING  # the live value an early refresh is replacing
        self._started = 0.0

    # -- step 1: read, and on a miss take the lease or wait -----------------------------------

    def lookup(self) -> Plan:
        cache, settings = self._cache, self._settings
        xfetch = settings.xfetch_beta > 0 and self._timeout is not None
        read = cache._ops.get(self._key, _MISSING)
        xfetch = xfetch and bool(read.batches)  # a near-cache hit stays local: no XFetch
        if xfetch:
            read = self._with_expiry(read)
        found = yield read
        if xfetch:
            found, ttl_ms, delta = found
            if found is not _MISSING and _early(ttl_ms, delta, settings.xfetch_beta):
                try:
                    reply = yield self._lease(early=True)
                except RedisError:
                    return found
                if reply and reply[0] == _OURS:
                    self._overwrite, self._valid = True, found
                    return self._compute()
                return found
        if found is not _MISSING:
            return found
        deadline = time.monotonic() + settings.wait
        try:
            reply = yield self._lease()
            while reply and reply[0] == _HELD:
                if reply[1] is not None:  # GRACE: the previous value, while one recomputes
                    stale = cache._ops._load(self._key, reply[1], _MISSING)
                    if stale is not _MISSING:
                        return stale
                left = deadline - time.monotonic()
                if left < _MIN_BLOCK:
                    break
                lease_left = reply[2] / 1000 if reply[2] > 0 else 0.0
                reply = yield self._wait(min(left, max(lease_left, _MIN_BLOCK)))
        except RedisError:
            reply = None  # the protection failed: compute without it
        if reply and reply[0] == _HIT:
            hit = cache._ops._load(self._key, reply[1], _MISSING)
            if hit is not _MISSING:
                return hit
            self._overwrite, reply = True, None  # unreadable: computed again, and replaced
        if not (reply and reply[0] == _OURS):
            self._held = None
        return self._compute()

    def _compute(self) -> Any:
        self._started = time.monotonic()
        return COMPUTE

    def _with_expiry(self, read: Op) -> Op:
        """The same read, also asking the key's PTTL (unless it does) and its compute time."""
        ((shard, commands),) = read.batches
        extra: list[Any] = [("GET", self._names["delta"])]
        has_ttl = ("PTTL", self._key) in commands
        if not has_ttl:
            extra.append(("PTTL", self._key))
        n, finish = len(commands), read.finish

        def finished(results: list[Any]) -> tuple[Any, Any, Any]:
            replies = results[0]
            delta, ttl = replies[n], replies[1] if has_ttl else replies[n + 1]
            value = finish([replies[:n]])
            return value, ttl, None if isinstance(delta, Exception) else delta

        return read._replace(batches=[(shard, [*commands, *extra])], finish=finished)

    def _script(self, *commands: Any) -> Op:
        shard = self._cache._router.shard_for(self._key)

        def last(results: list[Any]) -> Any:
            for reply in results[0]:  # e.g. BLMOVE refused by a Redis older than 6.2
                if isinstance(reply, Exception):
                    raise reply
            return results[0][-1]

        return Op([(shard, list(commands))], last)

    def _lease_command(self, early: bool) -> tuple[Any, ...]:
        if self._held is None:
            self._held = os.urandom(12).hex()
        names = self._names
        return (
            "EVAL", _LEASE, 4, self._key, names["lease"], names["stale"], names["done"],
            self._held, max(1, int(self._settings.lease * 1000)),
            int(self._settings.grace > 0), int(early),
        )  # fmt: skip

    def _lease(self, early: bool = False) -> Op:
        return self._script(self._lease_command(early))

    def _wait(self, seconds: float) -> Op:
        """Block until the holder is done (or ``seconds``), then look again, in one batch."""
        router = self._cache._router
        shard = router.shard_for(self._key)
        socket = shard.spec.connection_kwargs.get("socket_timeout") or router.options.socket_timeout
        seconds = round(max(_MIN_BLOCK, min(seconds, socket / 2)), 3)
        done = self._names["done"]
        blocking = ("BLMOVE", done, done, "RIGHT", "LEFT", seconds)  # wakes all, takes none
        return self._script(blocking, self._lease_command(False))

    # -- step 2: store the value, or give the lease back ------------------------------------

    def store(self, value: Any) -> Op:
        """Store as Django's ``add`` then ``get`` would (an early refresh overwrites), with the
        grace copy and compute time, release and wake; answers what the key then holds."""
        cache, key, timeout, settings = self._cache, self._key, self._timeout, self._settings
        raw = cache._ops._dump(key, value)  # signed for the key, also as the grace copy
        set_value: tuple[Any, ...] = ("SET", key, raw)
        if timeout is not None:
            set_value += ("EX", timeout)
        read: tuple[Any, ...] = ("GET", key)
        if timeout is not None and settings.grace > 0:  # the copy of what the key then holds
            life = int((timeout + settings.grace) * 1000)
            read = ("EVAL", _KEEP_GRACE, 2, key, self._names["stale"], life)
        commands: list[Any] = [set_value if self._overwrite else (*set_value, "NX"), read]
        if timeout is not None and settings.xfetch_beta > 0:
            delta = max(1, int((time.monotonic() - self._started) * 1000))
            commands.append(("SET", self._names["delta"], delta, "EX", timeout))
        if self._held is not None:
            commands.append(self._release_command())
        load = cache._ops._load

        def finish(results: list[Any]) -> Any:
            stored, held = results[0][0], results[0][1]  # the SET, then what the key holds
            if isinstance(stored, Exception):
                raise stored  # nothing stored
            if isinstance(held, Exception):  # the grace script refused (ACL: no +eval)...
                if stored is None:
                    raise held  # ...and another value won, which it could not read
                return value  # ...but ours is stored: protection never fails a call itself
            # The compute time's SET and the release are upkeep: a failure leaves a lease to
            # run out or a missing XFetch hint, never a stored value reported as failed.
            return value if held is None else load(key, held, value)

        shard = cache._router.shard_for(key)
        op = Op([(shard, commands)], finish, writes=[[key]])
        return cache._ops._write(op, [[key]], keep_grace=True)

    def _release_command(self) -> tuple[Any, ...]:
        names = self._names
        life = max(1, int(self._settings.lease * 1000))
        return ("EVAL", _RELEASE, 2, names["lease"], names["done"], self._held, life)

    def release(self) -> Op | None:
        """After a computation that raised: give the lease back (if ours) so others can try."""
        return None if self._held is None else self._script(self._release_command())

    def kept_after(self, error: BaseException) -> Any:
        """After a computation that raised: the still-valid value an early (XFetch) refresh was
        to replace, with a warning (the refresh was optional); else ``COMPUTE``: re-raise."""
        if self._valid is _MISSING or not isinstance(error, Exception):
            return COMPUTE
        shard = self._cache._router.shard_for(self._key)
        logger.warning(
            "hacache: cache %r: the early refresh of key %r raised %s: %s; the value it was to "
            "replace is still valid and is returned",
            shard.cache, self._key, type(error).__name__, error,
        )  # fmt: skip
        return self._valid


def flight(
    cache: Any,
    key: Any,
    timeout: Any,
    version: int | None,
    protect: bool | None,
    grace: float | None,
    xfetch_beta: float | None,
) -> Flight | None:
    """The protected call for these arguments, or None: Django's own path (protection off, or
    ``timeout`` 0, which stores nothing)."""
    settings = resolve(cache._router.options.stampede, protect, grace, xfetch_beta)
    backend_timeout = cache.get_backend_timeout(timeout)
    if settings is None or backend_timeout == 0:
        return None
    return Flight(cache, cache._key(key, version), backend_timeout, settings)
