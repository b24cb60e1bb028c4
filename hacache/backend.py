"""The Django cache backend: makes and checks keys and timeouts, and hands each call on.

It stays thin on purpose: what to send lives in ``ops``, where it goes in ``router``. Django
builds one of these per thread and calls ``close()`` after every request, so it holds nothing
that is expensive to build: the router (pools, ring) is shared by the whole process.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from redis.exceptions import RedisError, ResponseError

from hacache import stampede
from hacache.compat import DjangoRedisAPI
from hacache.compat_structures import StructuresAPI
from hacache.counters import ScriptsRefused
from hacache.extended import ExtendedOps, beyond_64_bits
from hacache.router import alias_of, get_router

# Characters memcached rejects; only keys containing one (or too long) take Django's slow check.
_SUSPECT_KEY = re.compile(r"[\x00-\x20\x7f]")
_MEMCACHE_MAX_KEY_LENGTH = 250


class HACache(DjangoRedisAPI, StructuresAPI, BaseCache):
    """Django's cache API, plus django-redis's extended one (``compat``, ``compat_structures``)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        self._router = get_router(server, params.get("OPTIONS"))  # validates OPTIONS first
        super().__init__(params)
        self._ops = ExtendedOps(self._router, self._router.options.serializer)
        self._run = self._router.run
        self._arun = self._router.arun
        alias = alias_of(server, params)
        self._router.serves(alias)
        if self._router.previous_ring is not None:
            from hacache.resharding import install

            install(self)
        if self._router.options.metrics:
            from hacache.instrument import instrument
            from hacache.metrics import meter_for

            instrument(self, meter_for(self._router, alias))

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> int | None:
        """Seconds for Redis: ``None`` never expires, ``0`` (or negative) expires at once."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else max(0, int(timeout))

    def validate_key(self, key: str) -> None:
        # Same warnings as Django's backends, without scanning every character of every key.
        if len(key) > _MEMCACHE_MAX_KEY_LENGTH or _SUSPECT_KEY.search(key):
            super().validate_key(key)

    def _key(self, key: Any, version: int | None) -> str:
        key = self.make_key(key, version=version)
        self.validate_key(key)
        return key

    def _keys(self, keys: Iterable[Any], version: int | None) -> dict[str, Any]:
        return {self._key(key, version): key for key in keys}

    # -- sync API --------------------------------------------------------------------------

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        return self._run(
            self._ops.add(self._key(key, version), value, self.get_backend_timeout(timeout))
        )

    def get(self, key, default=None, version=None) -> Any:
        return self._run(self._ops.get(self._key(key, version), default))

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False, xx=False):
        """Answers None, as Django's backends do; with ``nx`` or ``xx`` (django-redis's
        only-if-absent and only-if-present), whether the value was stored."""
        if nx or xx:
            timeout = self.get_backend_timeout(timeout)
            return self._run(self._ops.set_if(self._key(key, version), value, timeout, nx, xx))
        self._run(self._ops.set(self._key(key, version), value, self.get_backend_timeout(timeout)))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        return self._run(
            self._ops.touch(self._key(key, version), self.get_backend_timeout(timeout))
        )

    def delete(self, key, version=None) -> bool:
        return self._run(self._ops.delete(self._key(key, version)))

    def has_key(self, key, version=None) -> bool:
        return self._run(self._ops.has_key(self._key(key, version)))

    def incr(self, key, delta=1, version=None, ignore_key_check=False) -> int:
        """With ``ignore_key_check``, a missing key is created (as django-redis does). Counters
        may grow past 64 bits, as with django-redis (a slower compare-and-set path)."""
        key = self._key(key, version)
        ops = self._ops
        op = ops.incr_or_create(key, delta) if ignore_key_check else ops.incr(key, delta)
        try:
            return self._run(op)
        except ScriptsRefused:  # nothing counted; the shard is known script-free from now on
            return self._run(ops.incr(key, delta))
        except ResponseError as exc:
            if not beyond_64_bits(exc):
                raise
            return self._drive(self._incr_big(key, delta, exc))

    def get_or_set(
        self, key, default, timeout=DEFAULT_TIMEOUT, version=None, *,
        protect=None, grace=None, xfetch_beta=None,
    ) -> Any:  # fmt: skip
        """Django's ``get_or_set``, with stampede protection (see ``stampede``): on a miss one
        caller computes, the others wait for its value. ``protect``, ``grace`` and
        ``xfetch_beta`` override ``OPTIONS['STAMPEDE']`` for this call."""
        flight = stampede.flight(self, key, timeout, version, protect, grace, xfetch_beta)
        if flight is None:
            return super().get_or_set(key, default, timeout, version)
        found = self._drive(flight.lookup())
        if found is not stampede.COMPUTE:
            return found
        try:
            value = default() if callable(default) else default
        except BaseException as exc:
            self._release(flight)
            if (kept := flight.kept_after(exc)) is stampede.COMPUTE:
                raise
            return kept
        try:
            return self._run(flight.store(value))
        except BaseException:  # not stored (too large, refused...): let the others compute
            self._release(flight)
            raise

    def _release(self, flight: stampede.Flight) -> None:
        release = flight.release()
        if release is not None:
            with contextlib.suppress(RedisError):
                self._run(release)

    def get_many(self, keys, version=None) -> dict[Any, Any]:
        key_map = self._keys(keys, version)
        if not key_map:
            return {}
        found = self._run(self._ops.get_many(key_map))
        return {key_map[k]: v for k, v in found.items()}

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None) -> list[Any]:
        """Answers the keys that could not be stored (only ever non-empty failing open)."""
        if not data:
            return []
        key_map = self._keys(data, version)
        safe = {made: data[key] for made, key in key_map.items()}
        failed = self._run(self._ops.set_many(safe, self.get_backend_timeout(timeout)))
        return [key_map[k] for k in failed]

    def delete_many(self, keys, version=None) -> int | None:
        """How many of the keys existed (django-redis's answer); None for no keys (Django's)."""
        key_map = self._keys(keys, version)
        return self._run(self._ops.delete_many(key_map)) if key_map else None

    def clear(self) -> bool:
        return self._run(self._ops.clear())

    def incr_version(self, key, delta=1, version=None) -> int:
        """Unlike Django's default, the value keeps the lifetime it had left."""
        if version is None:
            version = self.version
        old, new = self._key(key, version), self._key(key, version + delta)
        found = self._run(self._ops.dump(old))
        if found is None:
            raise ValueError(f"Key '{key}' not found")
        if new != old:
            self._run(self._ops.restore(new, *found, source=old))
            self._run(self._ops.delete(old))
        return version + delta

    def near_cache_stats(self) -> dict[str, int] | None:
        """This process's near-cache counters (None without a near-cache)."""
        near = self._router.near
        if near is None:
            return None
        return {**near.stats.as_dict(), "entries": len(near), "bytes": near.size_bytes}

    def close(self, **kwargs: Any) -> None:
        """Called by Django after every request: pooled connections are kept for the next."""

    # -- async API: the same operations, awaited on redis.asyncio --------------------------

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        return await self._arun(
            self._ops.add(self._key(key, version), value, self.get_backend_timeout(timeout))
        )

    async def aget(self, key, default=None, version=None) -> Any:
        return await self._arun(self._ops.get(self._key(key, version), default))

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False, xx=False):
        if nx or xx:
            timeout = self.get_backend_timeout(timeout)
            return await self._arun(
                self._ops.set_if(self._key(key, version), value, timeout, nx, xx)
            )
        await self._arun(
            self._ops.set(self._key(key, version), value, self.get_backend_timeout(timeout))
        )

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        return await self._arun(
            self._ops.touch(self._key(key, version), self.get_backend_timeout(timeout))
        )

    async def adelete(self, key, version=None) -> bool:
        return await self._arun(self._ops.delete(self._key(key, version)))

    async def ahas_key(self, key, version=None) -> bool:
        return await self._arun(self._ops.has_key(self._key(key, version)))

    async def aincr(self, key, delta=1, version=None, ignore_key_check=False) -> int:
        key = self._key(key, version)
        ops = self._ops
        op = ops.incr_or_create(key, delta) if ignore_key_check else ops.incr(key, delta)
        try:
            return await self._arun(op)
        except ScriptsRefused:
            return await self._arun(ops.incr(key, delta))
        except ResponseError as exc:
            if not beyond_64_bits(exc):
                raise
            return await self._adrive(self._incr_big(key, delta, exc))

    async def aget_or_set(
        self, key, default, timeout=DEFAULT_TIMEOUT, version=None, *,
        protect=None, grace=None, xfetch_beta=None,
    ) -> Any:  # fmt: skip
        """See ``get_or_set``; a ``default`` that returns an awaitable is awaited."""
        flight = stampede.flight(self, key, timeout, version, protect, grace, xfetch_beta)
        if flight is None:
            found = await self.aget(key, self._missing_key, version=version)
            if found is not self._missing_key:
                return found
        else:
            found = await self._adrive(flight.lookup())
            if found is not stampede.COMPUTE:
                return found
        try:
            value = default() if callable(default) else default
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            if flight is not None:
                await self._arelease(flight)
            if flight is None or (kept := flight.kept_after(exc)) is stampede.COMPUTE:
                raise
            return kept
        if flight is None:  # Django's steps
            await self.aadd(key, value, timeout=timeout, version=version)
            return await self.aget(key, value, version=version)
        try:
            return await self._arun(flight.store(value))
        except BaseException:
            await self._arelease(flight)
            raise

    async def _arelease(self, flight: stampede.Flight) -> None:
        release = flight.release()
        if release is not None:
            with contextlib.suppress(RedisError):
                await self._arun(release)

    async def aget_many(self, keys, version=None) -> dict[Any, Any]:
        key_map = self._keys(keys, version)
        if not key_map:
            return {}
        found = await self._arun(self._ops.get_many(key_map))
        return {key_map[k]: v for k, v in found.items()}

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None) -> list[Any]:
        if not data:
            return []
        key_map = self._keys(data, version)
        safe = {made: data[key] for made, key in key_map.items()}
        failed = await self._arun(self._ops.set_many(safe, self.get_backend_timeout(timeout)))
        return [key_map[k] for k in failed]

    async def adelete_many(self, keys, version=None) -> int | None:
        key_map = self._keys(keys, version)
        return await self._arun(self._ops.delete_many(key_map)) if key_map else None

    async def aclear(self) -> bool:
        return await self._arun(self._ops.clear())

    async def aincr_version(self, key, delta=1, version=None) -> int:
        if version is None:
            version = self.version
        old, new = self._key(key, version), self._key(key, version + delta)
        found = await self._arun(self._ops.dump(old))
        if found is None:
            raise ValueError(f"Key '{key}' not found")
        if new != old:
            await self._arun(self._ops.restore(new, *found, source=old))
            await self._arun(self._ops.delete(old))
        return version + delta

    async def aclose(self, **kwargs: Any) -> None:
        """See ``close()``."""
