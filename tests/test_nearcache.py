"""The near-cache and its invalidation bus, on real Redis and with real separate processes."""

from __future__ import annotations

import multiprocessing
import time
from functools import partial
from typing import Any

import pytest
import redis

from hacache import driver, failover
from hacache.nearcache import ABSENT, MISS, NearCache
from tests import near_workers
from tests.conftest import DELIVERY, cache_params, make_cache
from tests.conftest import until as _until

SPAWN = multiprocessing.get_context("spawn")


def near_params(topology, **options: Any) -> dict:
    return cache_params(topology, "sharded", NEAR_CACHE=True, **options)


until = partial(_until, timeout=DELIVERY)


def ready(cache) -> Any:
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(DELIVERY)
    return cache


def raw_client(cache, key: str) -> redis.Redis:
    shard = cache._router.shard_for(cache.make_key(key))
    return redis.Redis(**shard.spec.connection_kwargs)


# -- the data structure --------------------------------------------------------------------


def test_lru_keeps_the_most_recently_used_within_max_entries():
    near = NearCache(["s"], max_entries=3, max_bytes=10**6, max_ttl=60)
    near.trust("s")
    for key in "abcd":
        near.fill(near.lease(key, "s"), key.encode(), -1)
        if key == "b":
            assert near.get("a") == b"a"  # a becomes most recent
    assert [near.get(k) for k in "abcd"] == [b"a", MISS, b"c", b"d"]
    assert near.stats.evictions == 1


def test_max_bytes_bounds_memory_with_large_values():
    near = NearCache(["s"], max_entries=1000, max_bytes=1_000_000, max_ttl=60)
    near.trust("s")
    for i in range(20):
        near.fill(near.lease(f"k{i}", "s"), b"x" * 200_000, -1)
        assert near.size_bytes <= 1_000_000
    assert len(near) == 4
    near.fill(near.lease("huge", "s"), b"x" * 2_000_000, -1)  # larger than the budget
    assert near.get("huge") is MISS


def test_an_entry_never_outlives_its_redis_ttl_or_the_cap():
    near = NearCache(["s"], max_entries=10, max_bytes=10**6, max_ttl=60)
    near.trust("s")
    near.fill(near.lease("short", "s"), b"v", 50)  # PTTL 50 ms
    near.fill(near.lease("gone", "s"), b"v", 0)
    assert near.get("short") == b"v" and near.get("gone") is MISS
    time.sleep(0.06)
    assert near.get("short") is MISS
    capped = NearCache(["s"], max_entries=10, max_bytes=10**6, max_ttl=0.05)
    capped.trust("s")
    capped.fill(capped.lease("k", "s"), b"v", -1)  # no Redis expiry: the cap applies
    assert capped.get("k") == b"v"
    time.sleep(0.06)
    assert capped.get("k") is MISS


def test_leases_are_voided_by_invalidation_by_a_second_read_and_by_a_flush():
    near = NearCache(["s"], max_entries=10, max_bytes=10**6, max_ttl=60)
    assert near.lease("k", "s") is None  # untrusted shard: no near-caching at all
    near.trust("s")
    lease = near.lease("k", "s")
    near.evict(["k"])
    near.fill(lease, b"old", -1)
    assert near.get("k") is MISS
    first, second = near.lease("k", "s"), near.lease("k", "s")
    near.fill(second, b"2", -1)
    near.fill(first, b"1", -1)
    assert near.get("k") is MISS
    lease = near.lease("k", "s")
    near.flush("s")
    near.fill(lease, b"v", -1)
    assert near.get("k") is MISS
    lease = near.lease("k", "s")  # all earlier leases are gone: this one works
    near.fill(lease, b"v", -1)
    assert near.get("k") == b"v"
    assert near.stats.refused_fills == 4


def test_cached_misses():
    near = NearCache(["s"], max_entries=10, max_bytes=10**6, max_ttl=60)
    near.trust("s")
    near.fill(near.lease("k", "s"), ABSENT, -2)
    assert near.get("k") is ABSENT


def test_a_value_that_expired_between_get_and_pttl_is_not_kept():
    near = NearCache(["s"], max_entries=10, max_bytes=10**6, max_ttl=60)
    near.trust("s")
    near.fill(near.lease("k", "s"), b"value", -2)  # GET found it, PTTL: gone since
    assert near.get("k") is MISS
    near.fill(near.lease("k", "s"), b"value", -1)  # no expiry: kept up to max_ttl
    assert near.get("k") == b"value"


def test_keys_of_our_failed_writes_are_not_kept_until_our_own_invalidation_arrives():
    """A write that timed out may still run later: a read meanwhile must keep nothing."""
    near = NearCache(["s"], max_entries=10, max_bytes=10**6, max_ttl=60)
    near.trust("s")
    near.doubt(["k"])
    assert near.lease("k", "s") is None
    near.own_invalidation(["k"])  # the write ran after all: its message names k
    lease = near.lease("k", "s")
    assert lease is not None
    near.fill(lease, b"new", -1)
    assert near.get("k") == b"new"


def test_a_failed_write_puts_its_keys_in_doubt(topology):
    cache = ready(make_cache(near_params(topology)))
    key = cache.make_key("k")
    op = cache._ops.set(key, "v", None)
    op.cleanup()  # the call raised (or failed open) before its replies came back
    assert cache._router.near.lease(key, cache._router.shard_for(key).name) is None
    done = cache._ops.set(key, "v", None)
    cache._router.run(done)  # a write that returns clears nothing: only our echo does
    assert until(lambda: cache._router.near.lease(key, cache._router.shard_for(key).name))


# -- one process ---------------------------------------------------------------------------


def test_hits_are_served_from_memory(topology):
    cache = ready(make_cache(near_params(topology)))
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}  # fills
    raw_client(cache, "k").set(cache.make_key("k"), b"changed behind hacache's back")
    assert cache.get("k") == {"v": 1}  # a hit: Redis was not asked
    stats = cache.near_cache_stats()
    assert stats["hits"] >= 1 and stats["fills"] >= 1 and stats["entries"] >= 1
    first, second = cache.get("k"), cache.get("k")
    assert first == second and first is not second  # every hit is a fresh copy


def test_own_writes_are_read_back_at_once(topology):
    cache = ready(make_cache(near_params(topology)))
    cache.set("k", 1)
    assert cache.get("k") == 1
    cache.set("k", 2)
    assert cache.get("k") == 2
    assert cache.incr("k") == 3
    assert cache.get("k") == 3
    cache.touch("k", 100)
    assert cache.get("k") == 3
    cache.set_many({"k": 4, "j": 5})
    assert cache.get_many(["k", "j"]) == {"k": 4, "j": 5}
    assert cache.delete("k") is True
    assert cache.get("k") is None
    assert cache.has_key("k") is False
    cache.add("k", 6)
    assert cache.get("k") == 6 and cache.has_key("k") is True
    cache.delete_many(["k", "j"])
    assert cache.get_many(["k", "j"]) == {}
    cache.set("v", "x")
    cache.get("v")
    cache.incr_version("v")
    assert cache.get("v") is None and cache.get("v", version=2) == "x"


def test_cached_misses_are_invalidated_too(topology):
    cache = ready(make_cache(near_params(topology)))
    assert cache.get("later") is None
    assert cache.get("later") is None
    assert cache.near_cache_stats()["hits"] >= 1
    cache.set("later", "now")
    assert cache.get("later") == "now"


def test_redis_expiry_is_honoured_without_any_message(topology):
    cache = ready(make_cache(near_params(topology)))
    cache.set("short", "v", timeout=1)
    assert cache.get("short") == "v"
    assert cache.get("short") == "v"
    time.sleep(1.05)
    assert cache.get("short") is None


def test_ttl_cap(topology):
    cache = ready(make_cache(near_params(topology, NEAR_CACHE_TTL=0.2)))
    cache.set("k", "v", timeout=None)
    cache.get("k")
    raw_client(cache, "k").set(cache.make_key("k"), b"77")  # a writer that publishes nothing
    assert cache.get("k") == "v"
    time.sleep(0.25)
    assert cache.get("k") == 77


def test_selected_keys_only(topology):
    cache = ready(make_cache(near_params(
        topology, NEAR_CACHE_KEYS=["*:page:*", "*:user:*"], NEAR_CACHE_EXCLUDE=["*:user:*:counter"],
    )))  # fmt: skip
    for key in ("page:1", "user:7", "user:7:counter", "other"):
        cache.set(key, 1)
        cache.get(key)
    near = cache._router.near
    assert near.get(cache.make_key("page:1")) == b"1"
    assert near.get(cache.make_key("user:7")) == b"1"
    assert near.get(cache.make_key("user:7:counter")) is MISS
    assert near.get(cache.make_key("other")) is MISS


def test_uncovered_writes_publish_nothing(topology):
    cache = ready(make_cache(near_params(topology, NEAR_CACHE_KEYS=["*:page:*"])))
    seq_key = cache._router.bus.seq_key
    client = raw_client(cache, "counter")
    before = int(client.get(seq_key) or 0)
    cache.set("counter", 1)
    cache.incr("counter")
    assert int(client.get(seq_key) or 0) == before
    cache.set("page:x", 1)
    page_client = raw_client(cache, "page:x")
    assert int(page_client.get(seq_key) or 0) >= 1


def test_clear_flushes_the_near_cache(topology):
    cache = ready(make_cache(near_params(topology)))
    cache.set_many({f"k{i}": i for i in range(20)})
    cache.get_many([f"k{i}" for i in range(20)])
    assert cache.near_cache_stats()["entries"] >= 20
    cache.clear()
    assert cache.near_cache_stats()["entries"] == 0
    assert cache.get_many([f"k{i}" for i in range(20)]) == {}


def test_a_read_that_races_a_write_is_not_stored(topology, remote_factory):
    """The reply left Redis before the write; the invalidation overtakes it. Not stored."""
    params = near_params(topology)
    cache = ready(make_cache(params))
    writer = remote_factory(params)
    cache.set("k", "old")
    key = cache.make_key("k")
    op = cache._ops.get(key, None)  # takes the lease
    plan = failover.run(op, cache._router)
    start = next(plan)
    # The GET is on its way; its reply will say "old".
    read = plan.send(driver._start(*start))
    stats = cache._router.near.stats
    invalidations = stats.invalidations
    writer("set", "k", "new")
    assert until(lambda: stats.invalidations > invalidations)  # invalidation delivered
    with pytest.raises(StopIteration) as done:
        plan.send(driver._finish(read.pending))
    value = done.value.value
    op.cleanup()
    assert value == "old"  # a read linearized before the write may say so
    assert cache._router.near.get(key) is MISS  # but it must not be kept
    assert cache.get("k") == "new"


async def test_async_api_uses_the_near_cache(topology):
    cache = ready(make_cache(near_params(topology)))
    await cache.aset("k", "v")
    assert await cache.aget("k") == "v"
    hits = cache.near_cache_stats()["hits"]
    assert await cache.aget("k") == "v"
    assert await cache.aget_many(["k"]) == {"k": "v"}
    assert cache.near_cache_stats()["hits"] == hits + 2
    await cache.aset("k", "w")
    assert await cache.aget("k") == "w"


# -- several processes ---------------------------------------------------------------------


def test_a_write_in_one_process_evicts_in_another(topology, remote_factory):
    params = near_params(topology)
    cache = ready(make_cache(params))
    reader = remote_factory(params)
    cache.set("k", "v1")
    # Let the invalidation of that write arrive first, or it may evict what the reads fill.
    assert until(lambda: reader("stats")["invalidations"] >= 1)
    assert reader("get", "k") == "v1"
    assert reader("get", "k") == "v1"
    hits = reader("stats")["hits"]
    assert hits >= 1
    cache.set("k", "v2")
    assert until(lambda: reader("get", "k") == "v2")
    cache.delete("k")
    assert until(lambda: reader("get", "k") is None)
    cache.set_many({"a": 0, "b": 0})
    assert until(lambda: reader("stats")["invalidations"] >= 4)  # k twice, k's delete, a and b
    assert reader("get", "a") == 0 and reader("get", "a") == 0  # a is now held near
    cache.set_many({"a": 1, "b": 2})
    assert until(lambda: reader("get", "a") == 1 and reader("get", "b") == 2)


def test_a_killed_subscriber_flushes_and_comes_back(topology, remote_factory):
    params = near_params(topology)
    cache = ready(make_cache(params))
    reader = remote_factory(params)
    cache.set("k", "v1")
    shard = reader("shard_for", "k")
    reader("get", "k")
    assert reader("get", "k") == "v1"
    subscriptions = reader("subscriptions", shard)
    client = raw_client(cache, "k")
    killed = client.client_kill_filter(_type="pubsub")
    assert killed >= 1
    # Redis dropped it: while away, the reader must not serve its near copy...
    raw_client(cache, "k").set(cache.make_key("k"), b"99")  # an unpublished change
    assert until(lambda: reader("subscriptions", shard) > subscriptions)
    assert reader("stats")["resubscribe_flushes"] >= 1
    assert reader("get", "k") == 99  # ...and it refilled from Redis, not from before
    cache.set("k", "v3")
    assert until(lambda: reader("get", "k") == "v3")  # and it hears invalidations again


def test_a_silent_link_is_caught_by_the_heartbeat(topology, remote_factory):
    """A hung server sends no FIN: only the unanswered PING shows the link is gone."""
    params = near_params(topology, SOCKET_TIMEOUT=0.2)
    cache = ready(make_cache(params))
    reader = remote_factory(params)
    cache.set("k", "v1")
    reader("get", "k")
    assert reader("get", "k") == "v1"
    shard = reader("shard_for", "k")
    node = f"{shard}-master"
    topology.pause(node)
    try:
        assert until(lambda: not reader("trusted", shard), timeout=10)
        # The near copy is no longer served: the read goes to the (hung) server and fails.
        with pytest.raises(AssertionError, match="TimeoutError"):
            reader("get", "k")
    finally:
        topology.resume(node)
    assert until(lambda: reader("trusted", shard), timeout=10)
    assert reader("get", "k") == "v1"
    assert reader("stats")["resubscribe_flushes"] >= 1


def test_lost_messages_are_detected_by_the_sequence(topology, remote_factory):
    params = near_params(topology)
    cache = ready(make_cache(params))
    reader = remote_factory(params)
    cache.set("k", "v1")
    reader("get", "k")
    assert reader("get", "k") == "v1"
    shard = reader("shard_for", "k")
    client = raw_client(cache, "k")
    # Five invalidations published elsewhere never reach the reader: only their numbers do.
    client.incrby(cache._router.bus.seq_key, 5)
    client.set(cache.make_key("k"), b"42")  # the change those lost messages announced
    gaps = reader("stats")["gap_flushes"]
    cache.set("other-key-on-any-shard", 1)
    cache.set_many({f"n{i}": i for i in range(30)})  # some message reaches that shard next
    assert until(lambda: reader("stats")["gap_flushes"] > gaps)
    assert reader("get", "k") == 42
    assert reader("subscriptions", shard) == 1  # detected without any reconnection


def test_no_stale_read_after_delivery_under_mixed_load(topology):
    """Two readers and a writer in separate processes: at least 10,000 operations in all."""
    params = near_params(topology, NEAR_CACHE_EXCLUDE=["*:acked:*"])
    caches = {"default": params}
    keys = [f"hot{i}" for i in range(8)]
    with SPAWN.Pool(3) as pool:
        writer = pool.apply_async(near_workers.write_versions, (caches, keys, 2500, 1))
        readers = [
            pool.apply_async(near_workers.read_and_check, (caches, keys, 3000, seed))
            for seed in (2, 3)
        ]
        results = [r.get(180) for r in readers]
        writes = writer.get(180)
    assert writes == 2500
    assert sum(r["checked"] for r in results) >= 1000
    assert all(r["stale"] == 0 for r in results), results
    assert all(r["near_hits"] > 0 for r in results), results


# The point of this test is fork() in a threaded process, as gunicorn's preload does.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_with_an_empty_untrusted_near_cache(topology):
    cache = ready(make_cache(near_params(topology)))
    cache.set("k", "v")
    cache.get("k")
    assert cache.near_cache_stats()["entries"] >= 1
    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()

    def in_child() -> None:
        near = cache._router.near
        report = {
            "entries": len(near),
            "trusted": near.trusted(cache._router.shard_for(cache.make_key("k")).name),
        }
        report["value"] = cache.get("k")
        cache._router.bus.listen()
        report["listening"] = near.wait_trusted(DELIVERY)
        child.send(report)

    process = fork.Process(target=in_child)
    process.start()
    assert parent.poll(30)
    report = parent.recv()
    process.join(10)
    assert report == {"entries": 0, "trusted": False, "value": "v", "listening": True}
