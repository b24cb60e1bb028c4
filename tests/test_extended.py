"""django-redis's extended API on real Redis: every scenario (single, sharded, ketama, near),
cross-shard rules, near-cache invalidation seen by another process, and failing open."""

from __future__ import annotations

import datetime
import random
import threading
import time

import pytest
import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from hacache import get_redis_connection
from hacache.extended import ExtendedOps
from hacache.topology import free_port
from tests.conftest import DELIVERY, cache_params, key_on, make_cache, until


def raw(cache, key, version=None) -> redis.Redis:
    """A plain client on the shard the ring says owns ``key``."""
    shard = cache._router.shard_for(cache.make_key(key, version=version))
    return redis.Redis(**shard.spec.connection_kwargs)


def redis_ttl(cache, key, version=None) -> int:
    return raw(cache, key, version).ttl(cache.make_key(key, version=version))


# -- set(nx=, xx=) and counters --------------------------------------------------------------


def test_set_nx_stores_only_if_absent(cache):
    assert cache.set("nx", 1, nx=True) is True
    assert cache.set("nx", 2, nx=True) is False
    assert cache.get("nx") == 1
    assert cache.set("plain", 1) is None  # Django's contract when neither is given


def test_set_xx_stores_only_if_present(cache):
    assert cache.set("xx", 1, xx=True) is False
    assert cache.get("xx") is None
    cache.set("xx", 1)
    assert cache.set("xx", 2, timeout=30, xx=True) is True
    assert cache.get("xx") == 2
    assert 0 < redis_ttl(cache, "xx") <= 30


def test_set_nx_xx_with_zero_timeout_store_nothing(cache):
    assert cache.set("z", 1, timeout=0, nx=True) is True  # could have been added
    assert not cache.has_key("z")
    cache.set("z", 1)
    assert cache.set("z", 1, timeout=0, nx=True) is False
    assert cache.set("z", 2, timeout=-1, xx=True) is True  # replaced by nothing: gone
    assert not cache.has_key("z")
    with pytest.raises(ValueError, match="nx and xx"):
        cache.set("z", 1, nx=True, xx=True)


def test_incr_ignore_key_check_creates_the_key(cache):
    with pytest.raises(ValueError):
        cache.incr("fresh")
    assert cache.incr("fresh", 5, ignore_key_check=True) == 5
    assert cache.incr("fresh", ignore_key_check=True) == 6
    assert cache.decr("fresh", 2) == 4
    assert cache.get("fresh") == 4


def test_delete_many_counts_what_existed(cache):
    cache.set_many({"d1": 1, "d2": 2, "d3": 3})
    assert cache.delete_many(["d1", "d2", "missing"]) == 2
    assert cache.delete_many(k for k in ["d3"]) == 1
    assert cache.delete_many([]) is None  # Django's own suite asks for None here
    assert cache.get_many(["d1", "d2", "d3"]) == {}


# -- lifetimes -------------------------------------------------------------------------------


def test_ttl_and_pttl(cache):
    assert cache.ttl("absent") == 0 and cache.pttl("absent") == 0
    cache.set("forever", 1, timeout=None)
    assert cache.ttl("forever") is None and cache.pttl("forever") is None
    cache.set("soon", 1, timeout=100)
    assert 98 <= cache.ttl("soon") <= 100
    assert 98_000 <= cache.pttl("soon") <= 100_000
    cache.set("soon", 1, timeout=50, version=2)
    assert 48 <= cache.ttl("soon", version=2) <= 50


def test_expire_pexpire_and_persist(cache):
    assert cache.expire("absent", 10) is False
    cache.set("e", 1, timeout=None)
    assert cache.expire("e", 100) is True
    assert 98 <= redis_ttl(cache, "e") <= 100
    assert cache.expire("e", datetime.timedelta(minutes=5)) is True
    assert 298 <= redis_ttl(cache, "e") <= 300
    assert cache.pexpire("e", 20_000) is True
    assert 18 <= redis_ttl(cache, "e") <= 20
    assert cache.expire("e", DEFAULT_TIMEOUT) is True  # the alias's default: 300 s
    assert 298 <= redis_ttl(cache, "e") <= 300
    assert cache.persist("e") is True
    assert redis_ttl(cache, "e") == -1 and cache.ttl("e") is None
    assert cache.persist("e") is False  # nothing left to remove
    cache.expire("e", 100)
    assert cache.expire("e", None) is True  # None: never expires
    assert cache.ttl("e") is None
    assert cache.pexpire("e", 1) is True
    assert until(lambda: not cache.has_key("e"), DELIVERY)


def test_expire_at_and_pexpire_at(cache):
    cache.set("at", 1, timeout=None)
    when = datetime.datetime.now() + datetime.timedelta(seconds=200)
    assert cache.expire_at("at", when) is True
    assert 198 <= redis_ttl(cache, "at") <= 200
    assert cache.pexpire_at("at", int((time.time() + 100) * 1000)) is True
    assert 98 <= redis_ttl(cache, "at") <= 100
    assert cache.expire_at("at", int(time.time()) + 50) is True
    assert 48 <= redis_ttl(cache, "at") <= 50
    assert cache.expire_at("absent", int(time.time()) + 50) is False
    assert cache.expire_at("at", int(time.time()) - 5) is True  # in the past: deleted
    assert not cache.has_key("at")


# -- keys, iter_keys, delete_pattern ---------------------------------------------------------


def test_keys_and_iter_keys_scan_every_shard(cache):
    names = [f"user:{i}" for i in range(60)]
    cache.set_many(dict.fromkeys(names, 1))
    cache.set_many({"other:1": 1, "user:0": 2}, version=2)
    shards = {cache._router.shard_for(cache.make_key(n)).name for n in names}
    assert len(shards) == len(cache._router.shards)  # the keys really span every shard
    assert sorted(cache.keys("user:*")) == sorted(names)
    assert sorted(cache.iter_keys("user:*", itersize=7)) == sorted(names)
    assert cache.keys("user:*", version=2) == ["user:0"]
    assert sorted(cache.keys("user:1?")) == [f"user:{i}" for i in range(10, 20)]
    iterator = cache.iter_keys("user:*")
    assert next(iterator).startswith("user:")  # lazy: a generator, not a list


def test_patterns_match_the_prefix_literally(topology):
    """A KEY_PREFIX with glob characters matches only itself."""
    star = make_cache({**cache_params(topology), "KEY_PREFIX": "p*"})
    other = make_cache({**cache_params(topology), "KEY_PREFIX": "px"})
    star.set("k", 1)
    other.set("k", 2)
    assert star.keys("*") == ["k"]
    assert star.delete_pattern("*") == 1
    assert other.get("k") == 2


def test_reverse_key_function_for_a_custom_key_function(topology):
    params = {
        **cache_params(topology, REVERSE_KEY_FUNCTION="tests.test_extended.reverse_key"),
        "KEY_FUNCTION": "tests.test_extended.make_key",
    }
    cache = make_cache(params)
    cache.set("a", 1)
    assert cache.keys("*") == ["a"]


def make_key(key, prefix, version):
    return f"{version}|{prefix}|{key}"


def reverse_key(made):
    return made.split("|", 2)[2]


def test_delete_pattern_deletes_only_matches_on_every_shard(cache):
    names = [f"page:{i}" for i in range(200)]
    cache.set_many(dict.fromkeys(names, 1))
    cache.set_many({"keep:1": 1, "pagex": 1})
    cache.set("page:1", 1, version=2)
    assert cache.delete_pattern("page:*", itersize=13) == 200
    assert cache.keys("page:*") == []
    assert cache.get_many(names[:5]) == {}
    assert cache.get("keep:1") == 1 and cache.get("pagex") == 1
    assert cache.get("page:1", version=2) == 1
    assert cache.delete_pattern("page:*") == 0


# -- lock ------------------------------------------------------------------------------------


def test_lock_excludes_other_holders_and_lives_on_the_keys_shard(cache):
    lock = cache.lock("job", timeout=10)
    assert lock.acquire(blocking=False)
    try:
        assert raw(cache, "job").exists(cache.make_key("job")) == 1
        assert cache.lock("job", blocking=False).acquire() is False
        assert cache.lock("job", version=2, blocking=False).acquire() is True  # another key
    finally:
        lock.release()
    assert raw(cache, "job").exists(cache.make_key("job")) == 0


def test_lock_serialises_threads(cache):
    cache.set("counter", 0)

    def bump():
        for _ in range(20):
            with cache.lock("bump", timeout=5, blocking_timeout=5):
                value = cache.get("counter")
                cache.set("counter", value + 1)  # a lost update without the lock

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert cache.get("counter") == 80


# -- hashes ----------------------------------------------------------------------------------


def test_hashes(cache):
    assert cache.hlen("h") == 0 and cache.hkeys("h") == [] and cache.hgetall("h") == {}
    assert cache.hset("h", "f1", "v1") == 1
    assert cache.hset("h", "f1", "v1b") == 0  # replaced, not added
    assert cache.hset("h", mapping={"f2": [2], "f3": {"x": 3}}) == 2
    assert cache.hget("h", "f1") == "v1b" and cache.hget("h", "nope", "dflt") == "dflt"
    assert cache.hgetall("h") == {"f1": "v1b", "f2": [2], "f3": {"x": 3}}
    assert sorted(cache.hkeys("h")) == ["f1", "f2", "f3"]
    assert cache.hexists("h", "f2") and not cache.hexists("h", "f9")
    assert cache.hdel("h", "f1", "f9") == 1
    assert cache.hlen("h") == 2
    with pytest.raises(ValueError, match="mapping"):
        cache.hset("h")


def test_hash_versions_and_raw_layout(cache):
    cache.hset("user", "email", "a@example.com", version=2)
    cache.hset("user", "email", "b@example.com")
    assert cache.hget("user", "email", version=2) == "a@example.com"
    assert cache.hget("user", "email") == "b@example.com"
    made = cache.make_key("user", version=2)
    client = raw(cache, "user", version=2)
    assert client.type(made) == b"hash" and client.hkeys(made) == [b"email"]


# -- sets ------------------------------------------------------------------------------------


def test_sets(cache):
    assert cache.sadd("s", "a", "b", 3) == 3
    assert cache.sadd("s", "a") == 0
    assert cache.smembers("s") == {"a", "b", 3}
    assert cache.scard("s") == 3
    assert cache.sismember("s", 3) and not cache.sismember("s", "z")
    assert cache.smismember("s", "a", "z") == [True, False]
    assert cache.srandmember("s") in {"a", "b", 3}
    assert set(cache.srandmember("s", 2)) <= {"a", "b", 3}
    assert cache.srem("s", "b", "z") == 1
    popped = cache.spop("s")
    assert popped in {"a", 3} and cache.scard("s") == 1
    assert cache.spop("s", 5) == {"a", 3} - {popped}
    assert cache.spop("s") is None and cache.smembers("s") == set()


def test_sscan_walks_the_whole_set(cache):
    members = {f"m{i}" for i in range(500)}
    cache.sadd("big", *members)
    assert cache.sscan("big", count=20) == members
    assert set(cache.sscan_iter("big", count=50)) == members
    cache.sadd("small", "ab", "ac", "bc")
    assert cache.sscan("small", match="a*") == {"ab", "ac"}  # matched on stored bytes


def test_set_algebra_matches_python_wherever_the_keys_live(cache):
    rng = random.Random(7)
    universe = [f"e{i}" for i in range(30)]
    names = [f"set{i}" for i in range(6)]
    contents = {name: set(rng.sample(universe, rng.randrange(1, 20))) for name in names}
    for name, members in contents.items():
        cache.sadd(name, *members)
    for _ in range(20):
        keys = rng.sample(names, rng.randrange(1, 5))
        first, *others = (contents[k] for k in keys)
        assert cache.sunion(*keys) == first.union(*others)
        assert cache.sinter(*keys) == first.intersection(*others)
        assert cache.sdiff(*keys) == first.difference(*others)
        dest = rng.choice(["d1", "d2", "d3"])
        cache.set(dest, "a plain value first")  # stores replace any type
        assert cache.sunionstore(dest, *keys) == len(first.union(*others))
        assert cache.smembers(dest) == first.union(*others)
        assert cache.sinterstore(dest, *keys) == len(first.intersection(*others))
        assert cache.smembers(dest) == first.intersection(*others)
        assert cache.sdiffstore(dest, *keys) == len(first.difference(*others))
        assert cache.smembers(dest) == first.difference(*others)


def test_sdiffstore_versions(cache):
    cache.sadd("v1", "a", "b", version=2)
    cache.sadd("v2", "b", version=2)
    assert cache.sdiffstore("vd", "v1", "v2", version_keys=2) == 1
    assert cache.smembers("vd") == {"a"}
    assert cache.sdiffstore("vd", "v1", "v2", version_dest=3, version_keys=1) == 0


def test_smove_on_one_shard_and_across_shards(topology):
    cache = make_cache(cache_params(topology, HASH_TAGS=True))
    cache.sadd("{u1}:a", "x", "y")
    assert cache.smove("{u1}:a", "{u1}:b", "x") is True
    assert cache.smove("{u1}:a", "{u1}:b", "nope") is False
    assert cache.smembers("{u1}:a") == {"y"} and cache.smembers("{u1}:b") == {"x"}
    src, dst = key_on(cache, "shard0", "src"), key_on(cache, "shard1", "dst")
    cache.sadd(src, "x", "y")
    assert cache.smove(src, dst, "x") is True
    assert cache.smove(src, dst, "nope") is False
    assert cache.smembers(src) == {"y"} and cache.smembers(dst) == {"x"}


def test_smove_across_shards_puts_the_member_back_when_the_destination_fails(topology):
    cache = make_cache(cache_params(topology))
    src, dst = key_on(cache, "shard0", "src"), key_on(cache, "shard1", "dst")
    cache.sadd(src, "x")
    cache.set(dst, "a string: SADD refuses it")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        cache.smove(src, dst, "x")
    assert cache.smembers(src) == {"x"}


# -- get_redis_connection --------------------------------------------------------------------


def test_get_redis_connection(settings, topology):
    params = cache_params(topology)
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    settings.CACHES = {"default": params, "local": locmem}
    from django.core.cache import caches

    cache = caches["default"]
    cache.set("k", 41)
    client = get_redis_connection("default", key="k")
    assert client.get(cache.make_key("k")) == b"41"
    name = cache._router.shard_for(cache.make_key("k")).name
    assert get_redis_connection(shard=name).connection_pool is client.connection_pool
    assert get_redis_connection(shard=name, write=False).ping()  # no replicas: the master
    with pytest.raises(ValueError, match=r"shards.*key= or shard="):
        get_redis_connection()
    with pytest.raises(ValueError, match="no shard 'nope'"):
        get_redis_connection(shard="nope")
    with pytest.raises(TypeError, match="not a hacache cache"):
        get_redis_connection("local")


# -- near-cache coherence across processes ---------------------------------------------------


CHANGES = {
    "expire": (lambda c: c.expire("k", 0), None),
    "pexpire": (lambda c: c.pexpire("k", 1), None),
    "expire_at": (lambda c: c.expire_at("k", int(time.time()) - 1), None),
    "set_xx": (lambda c: c.set("k", "new", xx=True), "new"),
    "delete_pattern": (lambda c: c.delete_pattern("k*"), None),
    "delete_many": (lambda c: c.delete_many(["k", "other"]), None),
    "store": (lambda c: c.sunionstore("k", "some-set"), None),  # k becomes a set
}


@pytest.mark.parametrize("change", CHANGES)
def test_changes_reach_another_processs_near_cache(topology, remote_factory, change):
    params = cache_params(topology, "near")
    local = make_cache(params)
    local._router.bus.listen()
    assert local._router.near.wait_trusted(DELIVERY)
    local.set("k", "old", timeout=None)
    local.sadd("some-set", "m")
    remote = remote_factory(params)
    assert remote("get", "k") == "old"
    assert remote("stats")["hits"] == 0
    assert remote("get", "k") == "old"
    assert remote("stats")["hits"] == 1  # now served from its near-cache
    apply, expected = CHANGES[change]
    apply(local)
    if change == "store":  # get() on a set is an error: its entry must simply be gone
        assert until(lambda: "remote get raised" in remote_error(remote), DELIVERY)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            local.get("k")
    else:
        assert until(lambda: remote("get", "k") == expected, DELIVERY)


def remote_error(remote) -> str:
    try:
        remote("get", "k")
    except AssertionError as exc:
        return str(exc)
    return ""


def test_lifetime_changes_evict_the_local_near_cache_at_once(topology):
    cache = make_cache(cache_params(topology, "near"))
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(DELIVERY)
    cache.set("k", 1, timeout=None)
    assert cache.get("k") == 1 and cache.get("k") == 1  # filled, then a near hit
    cache.pexpire("k", 1)
    time.sleep(0.01)
    assert cache.get("k") is None


# -- failing open ----------------------------------------------------------------------------


def test_failing_open_lifetimes_answer_empty_but_structures_raise(topology):
    dead = f"redis://127.0.0.1:{free_port()}/0?name=dead"
    params = cache_params(topology, FAIL_OPEN=True, SOCKET_CONNECT_TIMEOUT=0.2)
    params["LOCATION"] = [dead]
    cache = make_cache(params)
    assert cache.get("k") is None and cache.ttl("k") == 0 and cache.expire("k", 5) is False
    assert cache.set("k", 1, nx=True) is False and cache.delete_pattern("*") == 0
    assert cache.keys("*") == []
    for call in (lambda: cache.hset("h", "f", 1), lambda: cache.sadd("s", 1),
                 lambda: cache.smembers("s"), lambda: cache.hget("h", "f")):  # fmt: skip
        with pytest.raises(redis.ConnectionError, match="dead"):
            call()
    assert cache._router.dropped.blind  # the unscanned shard must be flushed when back


# -- async twins -----------------------------------------------------------------------------


async def test_async_twins(cache):
    assert await cache.aset("a", 1, nx=True) is True
    assert await cache.aset("a", 2, nx=True) is False
    assert await cache.aset("a", 3, xx=True) is True and await cache.aget("a") == 3
    assert await cache.aincr("ac", 2, ignore_key_check=True) == 2
    assert await cache.attl("a") == 300 and await cache.aexpire("a", 50) is True
    assert await cache.apttl("a") <= 50_000 and await cache.apersist("a") is True
    assert await cache.adelete_many(["a", "ac", "zz"]) == 2
    await cache.aset_many({f"q:{i}": i for i in range(30)})
    assert sorted([k async for k in cache.aiter_keys("q:*", itersize=4)]) == sorted(
        f"q:{i}" for i in range(30)
    )
    assert len(await cache.akeys("q:*")) == 30
    assert await cache.adelete_pattern("q:*") == 30
    assert await cache.ahset("h", "f", [1]) == 1 and await cache.ahget("h", "f") == [1]
    assert await cache.ahgetall("h") == {"f": [1]} and await cache.ahkeys("h") == ["f"]
    assert await cache.asadd("s1", 1, 2) == 2 and await cache.asadd("s2", 2, 3) == 2
    assert await cache.asunion("s1", "s2") == {1, 2, 3}
    assert await cache.asinterstore("s3", "s1", "s2") == 1
    assert await cache.asmembers("s3") == {2}
    assert await cache.asscan("s1") == {1, 2}
    lock = cache.alock("ajob", timeout=5)
    assert await lock.acquire(blocking=False)
    assert await cache.alock("ajob").acquire(blocking=False) is False
    await lock.release()


@pytest.mark.parametrize("create", [False, True])
def test_counters_grow_past_64_bits_keeping_their_ttl(cache, create):
    cache.set("big", 2**63 - 1, timeout=100)
    assert cache.incr("big", ignore_key_check=create) == 2**63
    assert cache.incr("big", 2, ignore_key_check=create) == 2**63 + 2
    assert cache.decr("big", 3) == 2**63 - 1
    assert cache.incr("big") == 2**63  # back on Redis's own INCRBY, then beyond again
    assert cache.get("big") == 2**63 and 98 <= cache.ttl("big") <= 100
    cache.set("neg", -(2**63))
    assert cache.decr("neg") == -(2**63) - 1
    cache.set("text", "not a number")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        cache.incr("text", ignore_key_check=create)


def test_big_counter_increments_are_never_lost(cache):
    cache.set("race", 2**64)

    def bump():
        for _ in range(25):
            cache.incr("race")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert cache.get("race") == 2**64 + 100


async def test_async_counters_grow_past_64_bits(cache):
    await cache.aset("abig", 2**63 - 1)
    assert await cache.aincr("abig") == 2**63
    assert await cache.adecr("abig", 2) == 2**63 - 2


def _one_shard_cache_whose_master_moves(topology, monkeypatch, step: str, cursor_of):
    """A one-shard cache holding 100 keys, and the cursors each ``ExtendedOps.<step>`` call
    was given; between the first and the second call, the shard's master changes (a new
    generation, as a failover makes)."""
    import dataclasses

    cache = make_cache(cache_params(topology, "single"))
    names = [f"r:{i}" for i in range(100)]
    cache.set_many(dict.fromkeys(names, 1))
    shard = next(iter(cache._router.shards.values()))
    cursors: list[int] = []
    original = getattr(ExtendedOps, step)

    def spied(self, *args):
        cursors.append(cursor_of(shard, *args))
        if len(cursors) == 2:
            shard.view = dataclasses.replace(shard.view, generation=shard.view.generation + 1)
        return original(self, *args)

    monkeypatch.setattr(ExtendedOps, step, spied)
    return cache, names, cursors


def test_a_scan_starts_again_when_the_shards_master_changes(topology, monkeypatch):
    """A cursor means nothing to a new master: the shard is scanned again from 0, and every
    key is still returned (SCAN's at-least-once promise)."""
    cache, names, cursors = _one_shard_cache_whose_master_moves(
        topology, monkeypatch, "scan_step", lambda shard, _, cursor, *rest: cursor
    )
    found = list(cache.iter_keys("r:*", itersize=10))
    assert set(found) == set(names)
    assert cursors[0] == 0 and cursors[1] != 0 and cursors[2] == 0  # started again


def test_delete_pattern_starts_a_shard_again_when_its_master_changes(topology, monkeypatch):
    cache, _, cursors = _one_shard_cache_whose_master_moves(
        topology, monkeypatch, "unlink_step", lambda shard, steps, *rest: steps[shard][0]
    )
    assert cache.delete_pattern("r:*", itersize=10) == 100
    assert cursors[:2] == [0, cursors[1]] and cursors[1] != 0 and cursors[2] == 0
    assert cache.keys("r:*") == []
