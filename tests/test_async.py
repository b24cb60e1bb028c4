"""The async API: the same contract, natively on redis.asyncio (no threads)."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest
from django.core.cache.backends.base import BaseCache

from hacache import driver
from hacache.backend import HACache

ASYNC_METHODS = [
    "aadd", "aget", "aset", "atouch", "adelete", "ahas_key", "aincr", "aget_many",
    "aset_many", "adelete_many", "aclear", "aincr_version", "aclose",
]  # fmt: skip


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_async_methods_are_native(name):
    method = getattr(HACache, name)
    assert method is not getattr(BaseCache, name)
    assert inspect.iscoroutinefunction(method)


async def test_async_runs_on_the_event_loop_thread(cache, monkeypatch):
    """No call may be handed to a worker thread (what BaseCache's sync_to_async would do)."""
    loop_thread = threading.get_ident()
    seen = set()
    real_astart = driver._astart

    async def spy(*args):
        seen.add(threading.get_ident())
        return await real_astart(*args)

    monkeypatch.setattr(driver, "_astart", spy)
    await cache.aset("k", "v")
    assert await cache.aget("k") == "v"
    await cache.aset_many({f"m{i}": i for i in range(20)})
    assert seen == {loop_thread}


async def test_async_contract(cache):
    assert await cache.aget("missing", "dflt") == "dflt"
    assert await cache.aadd("k", 1) is True
    assert await cache.aadd("k", 2) is False
    assert await cache.aget("k") == 1
    assert await cache.aincr("k", 4) == 5
    assert await cache.adecr("k") == 4
    with pytest.raises(ValueError):
        await cache.aincr("missing")
    assert await cache.ahas_key("k") is True
    assert await cache.atouch("k", None) is True
    assert await cache.atouch("missing", 10) is False
    await cache.aset("zero", "v", timeout=0)
    assert await cache.ahas_key("zero") is False
    assert await cache.adelete("k") is True
    assert await cache.adelete("k") is False
    assert await cache.aget_or_set("gos", lambda: "made") == "made"
    assert await cache.aget_or_set("gos", "other") == "made"


async def test_async_many(cache):
    data = {f"k{i}": {"i": i} for i in range(60)}
    assert await cache.aset_many(data, timeout=30) == []
    assert await cache.aget_many([*data, "missing"]) == data
    await cache.adelete_many(list(data)[:30])
    assert len(await cache.aget_many(data)) == 30
    assert await cache.aget_many([]) == {}
    assert await cache.aclear() is True
    assert await cache.aget_many(data) == {}


async def test_async_versions(cache):
    await cache.aset("k", "v")
    assert await cache.aincr_version("k") == 2
    assert await cache.aget("k", version=2) == "v"
    assert await cache.adecr_version("k", version=2) == 1
    assert await cache.aget("k") == "v"
    with pytest.raises(ValueError):
        await cache.aincr_version("missing")


async def test_sync_and_async_see_the_same_data(cache):
    cache.set("s", "from sync")
    await cache.aset("a", "from async")
    assert await cache.aget("s") == "from sync"
    assert await asyncio.to_thread(cache.get, "a") == "from async"


async def test_concurrent_tasks_share_the_loops_pool(cache):
    async def worker(i: int) -> int:
        await cache.aset(f"c{i}", i)
        return await cache.aget(f"c{i}")

    assert await asyncio.gather(*(worker(i) for i in range(50))) == list(range(50))


def test_each_event_loop_gets_its_own_connections(cache):
    """redis.asyncio connections are bound to one loop: a second loop must not reuse them."""
    asyncio.run(cache.aset("k", 1))
    assert asyncio.run(cache.aget("k")) == 1
    assert asyncio.run(cache.aincr("k")) == 2
