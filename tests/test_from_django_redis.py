"""Moving from django-redis: what its default client wrote, hacache reads, and the reverse.

Both backends point at the same server with the same KEY_PREFIX, as during a rolling deploy
that swaps one for the other."""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from decimal import Decimal

import pytest

from tests.conftest import cache_params, make_cache

VALUES = {
    "text": "unicode: ÅÄÖ ☃",
    "int": 42,
    "negative": -17,
    "big": 2**70,
    "zero": 0,
    "float": 1.5,
    "bool": True,
    "none": None,
    "bytes": b"\x00\xff",
    "decimal": Decimal("1.10"),
    "nested": {"a": [1, 2, {"b": (3, 4)}], "s": {5, 6}},
    "large": "x" * 100_000,
}


@contextmanager
def both(topology, **options):
    """(hacache, django-redis) on the first shard, same prefix, same version."""
    from django_redis.cache import RedisCache

    params = cache_params(topology, "single", **options)
    location = topology.master_urls()[0].split("?")[0]
    theirs = RedisCache(location, {"KEY_PREFIX": params["KEY_PREFIX"]})
    try:
        yield make_cache(params), theirs
    finally:
        theirs.client.get_client().connection_pool.disconnect()


@pytest.fixture
def pair(topology):
    with both(topology) as caches:
        yield caches


def test_values_written_by_django_redis_read_back_in_hacache(pair):
    hacache, theirs = pair
    for key, value in VALUES.items():
        theirs.set(key, value, timeout=None)
    assert hacache.get_many(list(VALUES)) == VALUES
    assert {k: hacache.get(k) for k in VALUES} == VALUES
    assert hacache.incr("int") == 43  # stored raw by both, so INCR works across them


def test_values_written_by_hacache_read_back_in_django_redis(pair):
    hacache, theirs = pair
    hacache.set_many(VALUES, timeout=None)
    assert {k: theirs.get(k) for k in VALUES} == VALUES
    assert theirs.incr("int") == 43


def test_lifetimes_hashes_and_sets_cross_over(pair):
    hacache, theirs = pair
    theirs.set("t", 1, timeout=100)
    assert 98 <= hacache.ttl("t") <= 100
    hacache.expire("t", 50)
    assert 48 <= theirs.ttl("t") <= 50
    theirs.hset("h", "f", {"v": 1})
    assert hacache.hget("h", "f") == {"v": 1} and hacache.hkeys("h") == theirs.hkeys("h")
    theirs.sadd("s", "a", 2, (3,))
    assert hacache.smembers("s") == {"a", 2, (3,)}
    hacache.sadd("s", "b")
    assert theirs.smembers("s") == {"a", 2, (3,), "b"}
    assert sorted(hacache.keys("*")) == sorted(theirs.keys("*"))
    assert hacache.delete_pattern("*") == 3
    assert theirs.keys("*") == []


def test_set_members_are_found_across_backends_with_the_same_pickle_protocol(topology):
    """Members are found by their bytes: with django-redis's protocol, lookups cross over."""
    with both(topology, SERIALIZER_OPTIONS={"protocol": pickle.DEFAULT_PROTOCOL}) as pair:
        hacache, theirs = pair
        theirs.sadd("s", "a", (1, 2))
        assert hacache.sismember("s", "a") and hacache.sismember("s", (1, 2))
        assert hacache.srem("s", "a") == 1
        hacache.sadd("s", "b")
        assert theirs.sismember("s", "b")
        theirs.zadd("z", {"m": 1.5})
        assert hacache.zscore("z", "m") == 1.5
