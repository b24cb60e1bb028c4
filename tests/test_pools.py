"""Connection pools and drivers: every connection discarded exactly once, nothing leaked.

Covers what a review found: a stale connection discarded twice (semaphore over-released),
permits lost across fork(), async pools of finished event loops never freed, pools closed
while other threads pop from them, and the locks a forked child inherits held.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from typing import Any

import pytest
import redis

from hacache import driver
from hacache.breaker import Breaker
from hacache.endpoint import Endpoint
from hacache.pool import PoolExhausted, SyncPool
from hacache.router import _routers_lock, get_router
from tests.conftest import cache_params, make_cache, until

FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


class ClosedByServer:
    """A fake connection that reads as closed by the server once it has been used."""

    disconnects = 0

    def __init__(self, **kwargs: Any) -> None:
        self.on_disconnect: Any = None

    def can_read(self, timeout: float = 0) -> bool:
        return True  # something to read on an idle connection: the server closed it

    def disconnect(self) -> None:
        ClosedByServer.disconnects += 1
        if self.on_disconnect is not None:
            self.on_disconnect()


class BusyNeighbour(SyncPool):
    """Another thread takes the permit a discarded connection frees, the moment it is free."""

    steal = False

    def discard(self, connection: Any) -> None:
        super().discard(connection)
        if self.steal:
            self.steal = False
            assert self._limit.acquire(timeout=1)


def test_a_stale_connection_is_discarded_once_even_when_no_other_is_free():
    """MAX_CONNECTIONS=1: while the stale one is discarded, another thread takes the permit."""
    pool = BusyNeighbour(ClosedByServer, {}, max_connections=1, pool_timeout=0.05)
    stale, _ = pool.acquire()
    pool.release(stale)
    endpoint = Endpoint("fake:1", ClosedByServer, ClosedByServer, {}, max_connections=1,
                        pool_timeout=0.05, breaker=Breaker(3, 1))  # fmt: skip
    endpoint.pool = pool
    ClosedByServer.disconnects = 0
    pool.steal = True
    pending = driver._start(endpoint, [("INCR", "k")], False)  # not idempotent
    assert isinstance(pending.error, PoolExhausted) and pending.connection is None
    assert ClosedByServer.disconnects == 1
    pool._limit.release()  # the neighbour gives its permit back: balanced, no ValueError
    with pytest.raises(ValueError):
        pool._limit.release()  # one more would be an over-release


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_forked_child_gets_every_permit_and_no_inherited_lock():
    pool = SyncPool(ClosedByServer, {}, max_connections=1, pool_timeout=0.2)
    held, _ = pool.acquire()  # the parent's other thread is busy with it at fork time
    _routers_lock.acquire()  # and another holds the routers' lock
    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()

    def in_child() -> None:
        report = {}
        try:
            pool.acquire()
            report["acquired"] = True
        except PoolExhausted:
            report["acquired"] = False
        done = threading.Event()
        threading.Thread(
            target=lambda: (get_router(["redis://127.0.0.1:1/0"], {"VNODES": 7}), done.set()),
            daemon=True,
        ).start()
        report["router"] = done.wait(5)
        child.send(report)

    try:
        process = fork.Process(target=in_child)
        process.start()
        assert parent.poll(30)
        report = parent.recv()
        process.join(10)
    finally:
        _routers_lock.release()
        pool.release(held)
    assert report == {"acquired": True, "router": True}


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_forked_child_does_not_inherit_a_held_shard_condition(topology):
    cache = make_cache(cache_params(topology, "single"))
    shard = next(iter(cache._router.shards.values()))
    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()

    def in_child() -> None:
        child.send(shard.wait_for(lambda view: view.master is not None, 1))

    with shard._changed:  # held by another thread (here: this one) at fork time
        process = fork.Process(target=in_child)
        process.start()
        assert parent.poll(30)
    assert parent.recv() is True
    process.join(10)


def test_closing_a_pool_while_other_threads_pop_from_it():
    pool = SyncPool(ClosedByServer, {})
    connections = [ClosedByServer() for _ in range(20_000)]
    pool._free.extend(connections)
    ClosedByServer.disconnects = 0
    errors: list[BaseException] = []

    def close() -> None:
        try:
            pool.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ClosedByServer.disconnects == len(connections)  # each one exactly once


def _our_clients(raw: redis.Redis, name: str) -> int:
    return sum(1 for c in raw.client_list() if c.get("name") == name)


def test_async_pools_of_finished_event_loops_are_freed(topology):
    """asyncio.run() per call (as some scripts and async_to_sync do) must not leak sockets."""
    url = topology.master_urls()[0].replace("?", "?client_name=loops&")
    cache = make_cache({"BACKEND": "hacache.HACache", "LOCATION": [url], "KEY_PREFIX": "loops"})
    node = topology.nodes()[0]
    raw = redis.Redis(host=node.host, port=node.port)
    for i in range(6):
        asyncio.run(cache.aset(f"k{i}", i))
    assert until(lambda: _our_clients(raw, "loops") <= 1, 5)  # only the last loop's pool
    endpoint = cache._router.shards[next(iter(cache._router.shards))].master
    assert len(endpoint._async_pools) == 1
    cache._router.close()  # close() reaches the async pools too
    assert until(lambda: _our_clients(raw, "loops") == 0, 5)
