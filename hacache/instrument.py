"""The backend's methods, counted and timed for the metrics (``"METRICS": True`` only).

``instrument`` sets instance attributes that shadow the class's methods, so a cache without
metrics runs exactly the code it always did. Each wrapper counts into this thread's plain
integers (``metrics.Meter``); the router's run is wrapped to time the calls that leave the
process, per shard touched, under the op the outer wrapper named (a thread-local, set before
the call and read before its first await, so concurrent tasks cannot mix it up).
"""

from __future__ import annotations

import bisect
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hacache.metrics import UPPER, Meter

if TYPE_CHECKING:
    pass

_MISSING = object()
_KEYED = ("get_many", "set_many", "delete_many")  # these count keys, not calls


def instrument(cache: Any, meter: Meter) -> None:
    """Count ``cache``'s calls, hits, misses and errors, and time its remote calls.

    Instance attributes shadow the class's methods, so an uninstrumented cache runs exactly
    the code it always did."""
    for name in ("add", "set", "touch", "delete", "has_key", "incr", "clear", "incr_version"):
        for prefix in ("", "a"):
            setattr(cache, prefix + name, _counted(meter, name, getattr(cache, prefix + name)))
    cache.get, cache.aget = _gets(meter, cache.get, cache.aget)
    for name in _KEYED:
        setattr(cache, name, _keyed(meter, name, getattr(cache, name)))
        setattr(cache, "a" + name, _keyed(meter, name, getattr(cache, "a" + name)))
    cache._run, cache._arun = _timed(meter, cache._run, cache._arun)


def _mine(meter: Meter) -> Callable[[], Any]:
    """This thread's running totals, in one attribute read once they exist."""
    local = meter.local

    def counts() -> Any:
        try:
            return local.counts
        except AttributeError:
            return meter.counts()

    return counts


def _counted(meter: Meter, op: str, method: Callable[..., Any]) -> Callable[..., Any]:
    mine, local = _mine(meter), meter.local
    if _is_async(method):

        async def acall(*args: Any, **kwargs: Any) -> Any:
            calls = mine().calls
            calls[op] = calls.get(op, 0) + 1
            local.op = op  # read by _timed before the first await: no other task runs between
            try:
                return await method(*args, **kwargs)
            except Exception as exc:
                meter.error(op, exc)
                raise

        return acall

    def call(*args: Any, **kwargs: Any) -> Any:
        calls = mine().calls
        calls[op] = calls.get(op, 0) + 1
        local.op = op  # the op the router times this call's remote work under
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            meter.error(op, exc)
            raise

    return call


def _gets(meter: Meter, get: Callable[..., Any], aget: Callable[..., Any]) -> tuple[Any, Any]:
    """get/aget in one frame each: the near-cache hit is the path that must stay cheapest."""
    mine, local = _mine(meter), meter.local

    def tally(counts: Any, value: Any) -> bool:
        table = counts.misses if value is _MISSING else counts.hits
        table["get"] = table.get("get", 0) + 1
        return value is _MISSING

    def metered_get(key: Any, default: Any = None, version: Any = None) -> Any:
        try:
            counts = local.counts
        except AttributeError:
            counts = meter.counts()
        calls = counts.calls
        calls["get"] = calls.get("get", 0) + 1
        local.op = "get"
        try:
            value = get(key, _MISSING, version)
        except Exception as exc:
            meter.error("get", exc)
            raise
        if value is _MISSING:
            misses = counts.misses
            misses["get"] = misses.get("get", 0) + 1
            return default
        hits = counts.hits
        hits["get"] = hits.get("get", 0) + 1
        return value

    async def metered_aget(key: Any, default: Any = None, version: Any = None) -> Any:
        counts = mine()
        calls = counts.calls
        calls["get"] = calls.get("get", 0) + 1
        local.op = "get"
        try:
            value = await aget(key, _MISSING, version)
        except Exception as exc:
            meter.error("get", exc)
            raise
        return default if tally(counts, value) else value

    return metered_get, metered_aget


def _keyed(meter: Meter, op: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """get_many, set_many, delete_many: count keys (and, for get_many, keys found)."""
    counted = _counted(meter, op, method)

    def after(keys: Any, result: Any) -> Any:
        calls = meter.counts().calls
        calls[op] = calls.get(op, 0) + len(keys) - 1  # the call itself was counted as one
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
    mine, local, clock = _mine(meter), meter.local, time.perf_counter

    def book(batches: Any, elapsed: float) -> None:
        latency = mine().latency
        name = getattr(local, "op", "other")
        index = bisect.bisect_left(UPPER, elapsed)
        for shard, _ in batches:
            slots = latency.get((shard.name, name))
            if slots is None:
                slots = latency[(shard.name, name)] = [0.0] * (len(UPPER) + 1)
            slots[index] += 1
            slots[-1] += elapsed

    def timed_run(op: Any) -> Any:
        if not op.batches:
            return op.finish([])  # answered by the near-cache (as router.run would)
        start = clock()
        try:
            return run(op)
        finally:
            book(op.batches, clock() - start)

    async def timed_arun(op: Any) -> Any:
        if not op.batches:
            return await arun(op)
        start = clock()
        try:
            return await arun(op)
        finally:
            book(op.batches, clock() - start)

    return timed_run, timed_arun


def _is_async(method: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(method)
