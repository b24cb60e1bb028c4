"""The backend's methods, counted and timed for the metrics (``"METRICS": True`` only).

``instrument`` sets instance attributes that shadow the class's methods, so a cache without
metrics runs exactly the code it always did. Each wrapper counts into this thread's plain
integers (``metrics.Meter``) and names its op there; the router's run is wrapped to time the
calls that leave the process, per shard touched, under that op (read before the first await,
so concurrent tasks on one thread cannot mix it up).

Per call, with metrics on, the hottest paths read one thread-local (two for a remote call) and
write one dict slot (plus a latency bucket for a remote call); ``get`` counts its calls as hits
plus misses plus the calls that raised, so it writes one slot, not two.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from hacache.metrics import UPPER, Meter

_MISSING = object()
_KEYED = ("get_many", "set_many", "delete_many")  # these count keys, not calls


def instrument(cache: Any, meter: Meter) -> None:
    """Count ``cache``'s calls, hits, misses and errors, and time its remote calls.

    Instance attributes shadow the class's methods, so an uninstrumented cache runs exactly
    the code it always did."""
    for name in ("add", "set", "touch", "delete", "has_key", "incr", "clear", "incr_version",
                 "get_or_set", *_extended()):  # fmt: skip
        for prefix in ("", "a"):
            setattr(cache, prefix + name, _counted(meter, name, getattr(cache, prefix + name)))
    cache.get, cache.aget = _gets(meter, cache.get, cache.aget)
    for name in _KEYED:
        setattr(cache, name, _keyed(meter, name, getattr(cache, name)))
        setattr(cache, "a" + name, _keyed(meter, name, getattr(cache, "a" + name)))
    cache._run, cache._arun = _timed(meter, cache._run, cache._arun)


def _counted(meter: Meter, op: str, method: Callable[..., Any]) -> Callable[..., Any]:
    local = meter.local
    if _is_async(method):

        async def acall(*args: Any, **kwargs: Any) -> Any:
            try:
                counts = local.counts
            except AttributeError:
                counts = meter.counts()
            counts.calls[op] += 1
            counts.op = op  # read by _timed before the first await: no other task runs between
            try:
                return await method(*args, **kwargs)
            except Exception as exc:
                meter.error(op, exc)
                raise

        return acall

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            counts = local.counts
        except AttributeError:
            counts = meter.counts()
        counts.calls[op] += 1
        counts.op = op  # the op the router times this call's remote work under
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            meter.error(op, exc)
            raise

    return call


def _gets(meter: Meter, get: Callable[..., Any], aget: Callable[..., Any]) -> tuple[Any, Any]:
    """get/aget in one frame each: the near-cache hit is the path that must stay cheapest.

    A call is counted once, as a hit, a miss, or (raised) in ``calls``; the fold adds them up."""
    local = meter.local

    def failed(counts: Any, exc: BaseException) -> None:
        counts.calls["get"] += 1
        if isinstance(exc, Exception):
            meter.error("get", exc)

    def metered_get(key: Any, default: Any = None, version: Any = None) -> Any:
        try:
            counts = local.counts
        except AttributeError:
            counts = meter.counts()
        counts.op = "get"
        try:
            value = get(key, _MISSING, version)
        except BaseException as exc:
            failed(counts, exc)
            raise
        if value is _MISSING:
            counts.misses["get"] += 1
            return default
        counts.hits["get"] += 1
        return value

    async def metered_aget(key: Any, default: Any = None, version: Any = None) -> Any:
        try:
            counts = local.counts
        except AttributeError:
            counts = meter.counts()
        counts.op = "get"
        try:
            value = await aget(key, _MISSING, version)
        except BaseException as exc:
            failed(counts, exc)
            raise
        if value is _MISSING:
            counts.misses["get"] += 1
            return default
        counts.hits["get"] += 1
        return value

    return metered_get, metered_aget


def _keyed(meter: Meter, op: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """get_many, set_many, delete_many: count keys (and, for get_many, keys found)."""
    counted = _counted(meter, op, method)

    def after(keys: Any, result: Any) -> Any:
        meter.counts().calls[op] += len(keys) - 1  # the call itself was counted as one
        if op == "get_many":
            meter.hit(op, len(result), len(keys) - len(result))
        return result

    if _is_async(method):

        async def acall(keys: Any, *args: Any, **kwargs: Any) -> Any:
            keys = keys if isinstance(keys, (dict, list, tuple)) else list(keys)
            return after(keys, await counted(keys, *args, **kwargs))

        return acall

    def call(keys: Any, *args: Any, **kwargs: Any) -> Any:
        keys = keys if isinstance(keys, (dict, list, tuple)) else list(keys)
        return after(keys, counted(keys, *args, **kwargs))

    return call


def _timed(meter: Meter, run: Callable[..., Any], arun: Callable[..., Any]) -> tuple[Any, Any]:
    """The router's run/arun, timing every call that leaves the process, per shard touched."""
    local, clock, index_of = meter.local, time.perf_counter, bisect.bisect_left

    def book(latency: Any, op: str, batches: Any, elapsed: float) -> None:
        index = index_of(UPPER, elapsed)
        for shard, _ in batches:
            slots = latency[shard.name, op]
            slots[index] += 1
            slots[-1] += elapsed

    def timed_run(op: Any) -> Any:
        batches = op.batches
        if not batches:
            return op.finish([])  # answered by the near-cache (as router.run would)
        try:
            counts = local.counts
        except AttributeError:
            counts = meter.counts()
        name = counts.op
        start = clock()
        try:
            return run(op)
        finally:
            book(counts.latency, name, batches, clock() - start)

    async def timed_arun(op: Any) -> Any:
        batches = op.batches
        if not batches:
            return await arun(op)
        counts = meter.counts()
        name = counts.op  # before the first await: another task may name its op next
        start = clock()
        try:
            return await arun(op)
        finally:
            book(counts.latency, name, batches, clock() - start)

    return timed_run, timed_arun


@functools.cache
def _extended() -> tuple[str, ...]:
    """django-redis's methods (``compat``) that have an async twin: each is its own op."""
    from hacache.compat import DjangoRedisAPI
    from hacache.compat_structures import StructuresAPI

    api = {**vars(DjangoRedisAPI), **vars(StructuresAPI)}
    return tuple(sorted(n for n in api if not n.startswith("_") and "a" + n in api))


def _is_async(method: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(method)
