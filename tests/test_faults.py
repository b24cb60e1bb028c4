"""A dead, hung or restarted shard: bounded errors, never a hang, never a wrong value.

These tests stop and pause real servers, so they get a topology of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from hacache.topology import Topology
from tests.conftest import cache_params, key_on, make_cache, running

# A call that has not returned within this long is hung: far beyond any configured timeout.
HANG = 10.0


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from running(Topology(tmp_path_factory.mktemp("faults"), shards=2))


@pytest.fixture
def faulty(two_shards):
    return make_cache(cache_params(two_shards, SOCKET_TIMEOUT=0.3, SOCKET_CONNECT_TIMEOUT=0.3))


def outcome(fn, *args) -> tuple[str, Any]:
    """Run ``fn`` in a thread; report ("hung", None), ("ok", result) or ("raised", exc)."""
    box: list[tuple[str, Any]] = []

    def run() -> None:
        try:
            box.append(("ok", fn(*args)))
        except Exception as exc:
            box.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    return box[0] if box else ("hung", None)


def test_dead_shard_fails_fast_and_names_itself(two_shards, faulty):
    dead, alive = "shard0", "shard1"
    on_dead, on_alive = key_on(faulty, dead), key_on(faulty, alive)
    faulty.set(on_dead, "before")
    two_shards.kill(f"{dead}-master")
    try:
        kind, exc = outcome(faulty.get, on_dead)
        assert kind == "raised"
        assert isinstance(exc, redis.ConnectionError)
        assert dead in str(exc)
        assert outcome(faulty.set, on_alive, "still works") == ("ok", None)
        assert faulty.get(on_alive) == "still works"
        # Multi-key calls fail closed, after reading the live shard's replies.
        kind, exc = outcome(faulty.get_many, [on_dead, on_alive])
        assert kind == "raised" and isinstance(exc, redis.ConnectionError)
        kind, exc = outcome(faulty.set_many, {on_dead: 1, on_alive: 2})
        assert kind == "raised" and isinstance(exc, redis.ConnectionError)
        assert faulty.get(on_alive) == 2  # the live shard's connection stayed in step
    finally:
        two_shards.start(f"{dead}-master")


def test_hung_shard_times_out(two_shards, faulty):
    on_hung = key_on(faulty, "shard1")
    faulty.set(on_hung, "v")
    two_shards.pause("shard1-master")
    try:
        kind, exc = outcome(faulty.get, on_hung)
        assert kind == "raised"
        assert isinstance(exc, redis.TimeoutError)
        kind, exc = outcome(faulty.incr, on_hung)
        assert kind == "raised" and isinstance(exc, redis.TimeoutError)
    finally:
        two_shards.resume("shard1-master")
    assert faulty.get(on_hung) == "v"  # the timed-out connections were not reused out of step


async def test_hung_shard_times_out_async(two_shards, faulty):
    on_hung = key_on(faulty, "shard0")
    await faulty.aset(on_hung, "v")
    two_shards.pause("shard0-master")
    try:
        with pytest.raises(redis.TimeoutError):
            await faulty.aget(on_hung)
    finally:
        two_shards.resume("shard0-master")
    assert await faulty.aget(on_hung) == "v"


def test_refused_connection_is_an_error(two_shards):
    # Nothing listens on port 1: the connection is refused, and that must surface as an error.
    params = cache_params(two_shards, SOCKET_CONNECT_TIMEOUT=0.2)
    params["LOCATION"] = ["redis://127.0.0.1:1/0"]
    kind, exc = outcome(make_cache(params).get, "k")
    assert kind == "raised" and isinstance(exc, redis.ConnectionError)


def test_restarted_shard_is_used_again_without_an_error(two_shards, faulty):
    """Pooled connections to the old process are stale: reads retry once on a fresh one."""
    key = key_on(faulty, "shard0")
    for i in range(5):
        faulty.set(f"{key}", i)
    two_shards.kill("shard0-master")
    two_shards.start("shard0-master")
    assert faulty.get(key) is None  # a new, empty server: a miss, not an error
    faulty.set(key, 10)
    assert faulty.incr(key) == 11


def test_incr_is_never_replayed(two_shards, faulty):
    """A non-idempotent call on a stale connection is checked before sending, not retried."""
    key = key_on(faulty, "shard1", "n")
    faulty.set(key, 1)
    faulty.incr(key)
    two_shards.stop("shard1-master")
    two_shards.start("shard1-master")
    # The pooled connection is stale; the call must reach the new, empty server.
    with pytest.raises(ValueError, match="not found"):
        faulty.incr(key)
    faulty.set(key, 100)
    assert faulty.incr(key) == 101
    assert faulty.get(key) == 101


async def test_restarted_shard_async(two_shards, faulty):
    key = key_on(faulty, "shard1", "a")
    await faulty.aset(key, 1)
    two_shards.kill("shard1-master")
    two_shards.start("shard1-master")
    assert await faulty.aget(key) is None
    await faulty.aset(key, 5)
    assert await faulty.aincr(key) == 6


def test_ejected_shard_keys_move_to_the_others_and_come_back(two_shards):
    cache = make_cache(
        cache_params(
            two_shards,
            EJECT_DEAD_SHARDS=True,
            EJECT_SECONDS=1,
            BREAKER_THRESHOLD=1,
            SOCKET_TIMEOUT=0.3,
        )
    )
    key = key_on(cache, "shard0", "e")
    cache.set(key, "on shard0")
    two_shards.kill("shard0-master")
    try:
        with pytest.raises(redis.ConnectionError):
            cache.get(key)  # the failure that opens the breaker and ejects the shard
        assert cache._router.shard_for(cache.make_key(key)).name == "shard1"
        assert cache.get(key) is None  # served by shard1 now: a miss, not an error
        cache.set(key, "on shard1")
        assert cache.get(key) == "on shard1"
        assert cache.get_many([key]) == {key: "on shard1"}
    finally:
        two_shards.start("shard0-master")
    time.sleep(1.1)  # EJECT_SECONDS over: the shard is tried again, and answers
    cache.set(key, "back")
    assert cache._router.shard_for(cache.make_key(key)).name == "shard0"
    assert cache.get(key) == "back"


def test_a_write_that_finds_no_free_connection_is_not_silently_dropped(topology, caplog):
    """Failing open, PoolExhausted on a healthy shard: recorded, logged, repaired next write."""
    cache = make_cache(
        cache_params(topology, "single", FAIL_OPEN=True, MAX_CONNECTIONS=1, POOL_TIMEOUT=0.05)
    )
    cache.set("k", "old")
    shard = next(iter(cache._router.shards.values()))
    held, _ = shard.master.pool.acquire()  # a busy neighbour holds the only connection
    try:
        with caplog.at_level("WARNING", logger="hacache"):
            assert cache.delete("k") is False  # not done, and reported so
        assert "no free connection" in caplog.text and "PoolExhausted" in caplog.text
        assert cache.get("k") is None  # this process never reads the older value back
    finally:
        shard.master.pool.release(held)
    raw = redis.Redis(**shard.spec.connection_kwargs)
    assert raw.get(cache.make_key("k")) is not None  # still there: nothing was sent
    cache.set("other", 1)  # the next write carries the repair
    assert raw.get(cache.make_key("k")) is None
    assert not cache._router.dropped.waiting
