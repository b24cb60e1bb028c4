"""django-redis's extended cache API on ``HACache``: same names, arguments and return values.

Each method makes its keys as the Django API does (KEY_PREFIX, version, KEY_FUNCTION) and
hands an operation from ``extended``/``structures`` to the router, so failover, breakers,
fail-open and metrics apply to it as to ``get``. The ``a``-prefixed twin of each method is
native async. Methods that take several steps (scans, cross-shard stores) are written once, as
*plans*: generators that yield operations and are sent their results; ``_drive`` runs a plan
with the sync router and ``_adrive`` with the async one, so no loop is written twice.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from hacache import rawclient
from hacache.extended import glob_escape, is_decimal
from hacache.router import Op
from hacache.stampede import COMPANIONS

Plan = Generator[Any, Any, Any]  # yields an Op (sent its result) or a list of items to hand out


def _default_reverse(key: str) -> str:
    return key.split(":", 2)[2]


def _twins(build: Callable[..., Any], run: str, arun: str) -> tuple[Any, Any]:
    """A sync method and its async twin from one function that makes what they run: the
    backend's ``run`` method runs it, its ``arun`` awaits it."""

    @functools.wraps(build)
    def sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, run)(build(self, *args, **kwargs))

    @functools.wraps(build)
    async def asynchronous(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self, arun)(build(self, *args, **kwargs))

    asynchronous.__name__ = asynchronous.__qualname__ = "a" + build.__name__
    return sync, asynchronous


def _pair(build: Callable[..., Op]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """For a function that makes one operation."""
    return _twins(build, "_run", "_arun")


def _plans(plan: Callable[..., Plan]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """For a method written as a plan that returns one result."""
    return _twins(plan, "_drive", "_adrive")


def _seconds(timeout: Any) -> Any:
    return timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout


def _unix(when: Any, scale: int) -> int:
    if isinstance(when, datetime.datetime):
        return int(when.timestamp() * scale)
    return int(when)


def _locking(client_for: Callable[[Any], Any]) -> Callable[..., Any]:
    """``lock`` (redis-py's ``Lock``) or ``alock`` (redis.asyncio's), on the key's shard."""

    def lock(
        self: Any,
        key: Any,
        version: int | None = None,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
    ) -> Any:
        """A lock held on the key's shard's master now: a failover loses it (see README)."""
        made = self._key(key, version)
        client = client_for(rawclient.server(self._router.shard_for(made)))
        return client.lock(
            made, timeout=timeout, sleep=sleep, blocking=blocking,
            blocking_timeout=blocking_timeout, thread_local=thread_local,
        )  # fmt: skip

    return lock


class DjangoRedisAPI:
    """Mixed into ``HACache``; see the README's "Extended API" for the cross-shard rules."""

    # -- running plans -----------------------------------------------------------------------

    def _drive(self, plan: Plan) -> Any:
        """Run a plan to its result; an operation's error is raised inside the plan."""
        result: Any = None
        error: Exception | None = None
        try:
            while True:
                op = plan.send(result) if error is None else plan.throw(error)
                try:
                    result, error = self._run(op), None
                except Exception as exc:
                    result, error = None, exc
        except StopIteration as stop:
            return stop.value

    async def _adrive(self, plan: Plan) -> Any:
        result: Any = None
        error: Exception | None = None
        try:
            while True:
                op = plan.send(result) if error is None else plan.throw(error)
                try:
                    result, error = await self._arun(op), None
                except Exception as exc:
                    result, error = None, exc
        except StopIteration as stop:
            return stop.value

    def _walk(self, plan: Plan) -> Iterator[Any]:
        result = None
        while True:
            try:
                step = plan.send(result)
            except StopIteration:
                return
            if isinstance(step, Op):
                result = self._run(step)
            else:
                result = None
                yield from step

    async def _awalk(self, plan: Plan) -> AsyncIterator[Any]:
        result = None
        while True:
            try:
                step = plan.send(result)
            except StopIteration:
                return
            if isinstance(step, Op):
                result = await self._arun(step)
            else:
                result = None
                for item in step:
                    yield item

    def _incr_big(self, key: str, delta: int, error: Exception) -> Plan:
        """``incr`` past Redis's 64-bit counters (django-redis allows it): read the digits,
        add in Python, write back only if unchanged (else read again), keeping the TTL."""
        while True:
            raw = yield self._ops.raw_from_master(key)
            if raw is None:
                raise ValueError(f"Key '{key}' not found.")
            if not is_decimal(raw):
                raise error  # not a counter at all: Redis's own complaint
            new = int(raw) + delta
            if (yield self._ops.compare_and_set(key, raw, new)):
                return new

    # -- lifetimes -----------------------------------------------------------------------------

    def ttl(self, key: Any, version: int | None = None) -> Op:
        """Seconds left; None if it never expires; 0 if there is no such key."""
        return self._ops.lifetime(self._key(key, version), "TTL")

    def pttl(self, key: Any, version: int | None = None) -> Op:
        """Milliseconds left; None if it never expires; 0 if there is no such key."""
        return self._ops.lifetime(self._key(key, version), "PTTL")

    def expire(self, key: Any, timeout: Any, version: int | None = None) -> Op:
        """Expire in ``timeout`` seconds (a number or a timedelta; None: never). Whether the
        key exists."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        seconds = None if timeout is None else int(_seconds(timeout))
        return self._ops.expire(self._key(key, version), "EXPIRE", seconds)

    def pexpire(self, key: Any, timeout: Any, version: int | None = None) -> Op:
        """Expire in ``timeout`` milliseconds (or a timedelta; None: never)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if isinstance(timeout, datetime.timedelta):
            timeout = timeout.total_seconds() * 1000
        ms = None if timeout is None else int(timeout)
        return self._ops.expire(self._key(key, version), "PEXPIRE", ms)

    def expire_at(self, key: Any, when: Any, version: int | None = None) -> Op:
        """Expire at ``when``: a datetime or a Unix time in seconds."""
        return self._ops.expire(self._key(key, version), "EXPIREAT", _unix(when, 1))

    def pexpire_at(self, key: Any, when: Any, version: int | None = None) -> Op:
        """Expire at ``when``: a datetime or a Unix time in milliseconds."""
        return self._ops.expire(self._key(key, version), "PEXPIREAT", _unix(when, 1000))

    def persist(self, key: Any, version: int | None = None) -> Op:
        """Never expire; whether the key had a lifetime to remove."""
        return self._ops.expire(self._key(key, version), "PERSIST", None)

    ttl, attl = _pair(ttl)
    pttl, apttl = _pair(pttl)
    expire, aexpire = _pair(expire)
    pexpire, apexpire = _pair(pexpire)
    expire_at, aexpire_at = _pair(expire_at)
    pexpire_at, apexpire_at = _pair(pexpire_at)
    persist, apersist = _pair(persist)

    # -- keys by pattern: SCAN on every shard's master -------------------------------------------

    def _pattern(self, pattern: str, version: int | None, prefix: str | None = None) -> str:
        prefix = self.key_prefix if prefix is None else prefix
        version = self.version if version is None else version
        return self.key_func(pattern, glob_escape(prefix), glob_escape(str(version)))

    def _scan_plan(self, pattern: str, count: int | None) -> Plan:
        """Every shard in turn; a shard whose master changes mid-scan starts again."""
        reverse = self._router.options.reverse_key_function or _default_reverse
        for shard in self._router.every_shard():
            cursor, generation = 0, shard.generation
            while True:
                cursor, keys = yield self._ops.scan_step(shard, cursor, pattern, count)
                # Stampede protection's companion keys are its own, not the caller's.
                yield [reverse(key) for key in keys if not key.endswith(COMPANIONS)]
                if shard.generation != generation:
                    cursor, generation = 0, shard.generation
                elif cursor == 0:
                    break

    def iter_keys(
        self, search: str, itersize: int | None = None, version: int | None = None
    ) -> Iterator[Any]:
        """The caller's keys matching the glob ``search``, lazily, shard by shard (SCAN)."""
        return self._walk(self._scan_plan(self._pattern(search, version), itersize))

    def aiter_keys(
        self, search: str, itersize: int | None = None, version: int | None = None
    ) -> AsyncIterator[Any]:
        return self._awalk(self._scan_plan(self._pattern(search, version), itersize))

    def keys(self, search: str, version: int | None = None) -> list[Any]:
        """Every matching key, as a list: SCAN, never KEYS (which blocks the server)."""
        return list(self.iter_keys(search, version=version))

    async def akeys(self, search: str, version: int | None = None) -> list[Any]:
        return [key async for key in self.aiter_keys(search, version=version)]

    def delete_pattern(
        self,
        pattern: str,
        version: int | None = None,
        prefix: str | None = None,
        itersize: int | None = None,
    ) -> Plan:
        """Delete every key matching ``pattern``; answers how many were deleted. All shards
        are scanned at once, each step's UNLINK riding with the next SCAN."""
        glob = self._pattern(pattern, version, prefix)
        steps = {shard: (0, []) for shard in self._router.every_shard()}
        generations = {shard: shard.generation for shard in steps}
        deleted = 0
        while steps:
            answers = yield self._ops.unlink_step(steps, glob, itersize)
            steps = {}
            for shard, (cursor, found, unlinked) in answers.items():
                deleted += unlinked
                if shard.generation != generations[shard]:  # a new master: start it again
                    generations[shard] = shard.generation
                    cursor = 0
                if cursor is not None or found:
                    steps[shard] = (cursor, found)
        return deleted

    delete_pattern, adelete_pattern = _plans(delete_pattern)

    # -- locks ---------------------------------------------------------------------------------

    lock = _locking(rawclient.client_for)
    alock = _locking(rawclient.async_client_for)  # async with cache.alock("job"): ...
