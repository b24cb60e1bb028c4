"""Django's cache contract, on real Redis, for every scenario (single, sharded, ketama)."""

from __future__ import annotations

import pickle
import time
import warnings
from decimal import Decimal

import pytest
import redis
from django.core.cache import CacheKeyWarning

from tests.conftest import cache_params, make_cache


def raw(cache, key, version=None):
    """The value as stored in Redis, read from the shard the ring says owns the key."""
    made = cache.make_key(key, version=version)
    shard = cache._router.shard_for(made)
    return redis.Redis(**shard.spec.connection_kwargs).get(made)


def ttl(cache, key, version=None):
    made = cache.make_key(key, version=version)
    shard = cache._router.shard_for(made)
    return redis.Redis(**shard.spec.connection_kwargs).ttl(made)


class Unpicklable:
    def __reduce__(self):
        raise pickle.PickleError("not today")


VALUES = [
    "string",
    "unicode: ÅÄÖ ☃ 漢字",
    b"\x00\xffbytes",
    0,
    -17,
    2**70,
    1.5,
    Decimal("1.10"),
    True,
    False,
    None,
    [1, "two", {"three": 3}],
    {"nested": {"dict": [1, 2]}},
    ("tuple", 1),
    {1, 2, 3},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip(cache, value):
    cache.set("key", value)
    got = cache.get("key", "default")
    assert got == value
    assert type(got) is type(value)


def test_ints_are_stored_raw_and_bools_are_not(cache):
    cache.set("n", 42)
    cache.set("b", True)
    assert raw(cache, "n") == b"42"
    assert raw(cache, "b") != b"1"
    assert cache.get("b") is True


def test_missing_key_gives_default(cache):
    assert cache.get("nope") is None
    assert cache.get("nope", "dflt") == "dflt"


def test_stored_none_is_not_the_default(cache):
    cache.set("none", None)
    assert cache.get("none", "dflt") is None
    assert cache.has_key("none")


def test_large_value(cache):
    value = b"x" * (5 * 1024 * 1024)
    cache.set("big", value)
    assert cache.get("big") == value


def test_unicode_and_long_keys(cache):
    key = "ключ-" + "ü" * 100
    cache.set(key, "v")
    assert cache.get(key) == "v"


def test_add(cache):
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"


def test_add_with_zero_or_negative_timeout_stores_nothing(cache):
    assert cache.add("z", "v", timeout=0) is True
    assert cache.add("neg", "v", timeout=-1) is True
    assert cache.get("z") is None and cache.get("neg") is None
    cache.set("exists", 1)
    assert cache.add("exists", 2, timeout=0) is False
    assert cache.get("exists") == 1


def test_delete(cache):
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k") is None


def test_has_key(cache):
    assert cache.has_key("k") is False
    cache.set("k", 0)
    assert cache.has_key("k") is True


def test_timeouts(cache):
    cache.set("default", 1)
    cache.set("forever", 1, timeout=None)
    cache.set("ten", 1, timeout=10)
    cache.set("float", 1, timeout=10.9)
    assert 290 < ttl(cache, "default") <= 300
    assert ttl(cache, "forever") == -1
    assert 0 < ttl(cache, "ten") <= 10
    assert 0 < ttl(cache, "float") <= 10


@pytest.mark.parametrize("timeout", [0, -1, 0.4])
def test_zero_timeout_expires_at_once(cache, timeout):
    cache.set("k", "old")
    cache.set("k", "new", timeout=timeout)
    assert cache.get("k") is None


def test_default_timeout_setting(topology):
    params = cache_params(topology)
    params["TIMEOUT"] = None
    forever = make_cache(params)
    forever.set("k", 1)
    assert ttl(forever, "k") == -1
    params = cache_params(topology)
    params["TIMEOUT"] = 60
    minute = make_cache(params)
    minute.set("k", 1)
    assert 50 < ttl(minute, "k") <= 60


def test_value_really_expires(cache):
    cache.set("short", "v", timeout=1)
    assert cache.get("short") == "v"
    time.sleep(1.1)
    assert cache.get("short") is None


def test_touch(cache):
    assert cache.touch("missing") is False
    cache.set("k", 1, timeout=5)
    assert cache.touch("k", 100) is True
    assert 90 < ttl(cache, "k") <= 100
    assert cache.touch("k", None) is True
    assert ttl(cache, "k") == -1
    # Already persistent: still a successful touch (Django's RedisCache says False here).
    assert cache.touch("k", None) is True
    assert cache.touch("missing", None) is False
    assert cache.touch("k", 0) is True
    assert cache.get("k") is None


def test_incr_decr(cache):
    cache.set("n", 1)
    assert cache.incr("n") == 2
    assert cache.incr("n", 10) == 12
    assert cache.decr("n") == 11
    assert cache.decr("n", 20) == -9
    assert cache.incr("n", -1) == -10
    assert cache.get("n") == -10


def test_incr_missing_key_raises_and_creates_nothing(cache):
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    with pytest.raises(ValueError):
        cache.decr("missing")
    assert cache.has_key("missing") is False


def test_incr_keeps_the_timeout(cache):
    cache.set("n", 1, timeout=100)
    cache.incr("n")
    assert 90 < ttl(cache, "n") <= 100


def test_incr_on_a_non_integer_raises(cache):
    cache.set("s", "text")
    with pytest.raises(redis.ResponseError):
        cache.incr("s")


def test_get_or_set(cache):
    assert cache.get_or_set("k", "v") == "v"
    assert cache.get_or_set("k", "other") == "v"
    assert cache.get_or_set("c", lambda: "called") == "called"
    assert cache.get_or_set("none", None) is None
    assert cache.has_key("none") is True  # Django stores None, like any other value


def test_get_many(cache):
    keys = [f"k{i}" for i in range(50)]
    cache.set_many({k: k.upper() for k in keys})
    got = cache.get_many([*keys, "missing", "k1"])
    assert got == {k: k.upper() for k in keys}
    assert cache.get_many([]) == {}


def test_get_many_keeps_the_callers_keys(cache):
    cache.set(5, "int key")
    assert cache.get_many([5, "missing"]) == {5: "int key"}


def test_set_many(cache):
    assert cache.set_many({}) == []
    assert cache.set_many({"a": 1, "b": "two", "c": None}) == []
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": "two", "c": None}
    assert raw(cache, "a") == b"1"


def test_set_many_timeouts(cache):
    cache.set_many({"a": 1, "b": 2}, timeout=10)
    assert 0 < ttl(cache, "a") <= 10 and 0 < ttl(cache, "b") <= 10
    cache.set_many({"a": 1, "b": 2}, timeout=None)
    assert ttl(cache, "a") == -1 and ttl(cache, "b") == -1
    cache.set_many({"a": 1, "b": 2}, timeout=0)
    assert cache.get_many(["a", "b"]) == {}


def test_delete_many(cache):
    cache.set_many({f"k{i}": i for i in range(30)})
    cache.delete_many([f"k{i}" for i in range(20)] + ["missing"])
    assert sorted(cache.get_many([f"k{i}" for i in range(30)])) == sorted(
        f"k{i}" for i in range(20, 30)
    )
    cache.delete_many([])


def test_versions(cache):
    cache.set("k", "v1", version=1)
    cache.set("k", "v2", version=2)
    assert cache.get("k") == "v1"
    assert cache.get("k", version=2) == "v2"
    assert cache.get_many(["k"], version=2) == {"k": "v2"}
    cache.delete("k", version=2)
    assert cache.get("k", version=2) is None
    assert cache.get("k", version=1) == "v1"


def test_version_setting(topology):
    params = cache_params(topology)
    params["VERSION"] = 3
    c = make_cache(params)
    c.set("k", "v")
    assert c.get("k", version=3) == "v"
    assert c.get("k", version=1) is None


def test_incr_version(cache):
    cache.set("k", "v", timeout=100)
    assert cache.incr_version("k") == 2
    assert cache.get("k") is None
    assert cache.get("k", version=2) == "v"
    assert 90 < ttl(cache, "k", version=2) <= 100  # keeps the lifetime it had left
    assert cache.decr_version("k", version=2) == 1
    assert cache.get("k") == "v"
    assert cache.incr_version("k", delta=5) == 6
    assert cache.get("k", version=6) == "v"
    with pytest.raises(ValueError, match="not found"):
        cache.incr_version("missing")


def test_incr_version_keeps_raw_ints_and_persistence(cache):
    cache.set("n", 7, timeout=None)
    cache.incr_version("n")
    assert cache.incr("n", version=2) == 8
    assert ttl(cache, "n", version=2) == -1


def test_incr_version_by_zero_keeps_the_value(cache):
    cache.set("k", "v")
    assert cache.incr_version("k", delta=0) == 1
    assert cache.get("k") == "v"


def test_key_prefix_isolates_caches(topology):
    a = make_cache(cache_params(topology))
    b = make_cache(cache_params(topology))
    a.set("shared", "a")
    assert b.get("shared") is None
    assert raw(a, "shared") == pickle.dumps("a", pickle.HIGHEST_PROTOCOL)
    assert a.make_key("shared").startswith(a.key_prefix + ":1:")


def custom_key_func(key, key_prefix, version):
    return f"CUSTOM-{key_prefix}-{version}-{key}"


@pytest.mark.parametrize("key_function", [custom_key_func, "tests.test_contract.custom_key_func"])
def test_key_function(topology, key_function):
    params = cache_params(topology)
    params["KEY_FUNCTION"] = key_function
    c = make_cache(params)
    c.set("k", "v")
    assert c.get("k") == "v"
    made = f"CUSTOM-{params['KEY_PREFIX']}-1-k"
    shard = c._router.shard_for(made)
    assert redis.Redis(**shard.spec.connection_kwargs).exists(made)


@pytest.mark.parametrize(
    ("key", "message"),
    [("a" * 251, "longer than 250"), ("with space", "characters"), ("tab\there", "characters")],
)
def test_key_warnings_match_django(cache, key, message):
    with pytest.warns(CacheKeyWarning, match=message):
        cache.set(key, "v")
    with pytest.warns(CacheKeyWarning):
        assert cache.get(key) == "v"


def test_ordinary_keys_do_not_warn(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        cache.set("plain:key-with_punctuation.ok", 1)
        cache.set("ünïcödé", 1)


def test_unpicklable_value_raises_and_stores_nothing(cache):
    with pytest.raises(pickle.PickleError):
        cache.set("k", Unpicklable())
    assert cache.has_key("k") is False


def test_clear_empties_every_shard(cache):
    cache.set_many({f"k{i}": i for i in range(60)})
    assert cache.clear() is True
    assert cache.get_many([f"k{i}" for i in range(60)]) == {}
    bus = cache._router.bus
    left = {bus.seq_key.encode()} if bus else set()  # the invalidation sequence outlives it
    for shard in cache._router.shards.values():
        assert set(redis.Redis(**shard.spec.connection_kwargs).keys()) <= left


def test_close_keeps_the_cache_usable(cache):
    cache.set("k", 1)
    cache.close()
    assert cache.get("k") == 1
