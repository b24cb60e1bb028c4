"""NEAR_CACHE_TRACKING on real Redis: changes made behind hacache's back reach the near-cache."""

from __future__ import annotations

import time

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from tests.conftest import DELIVERY, cache_params, make_cache, until


def tracked_cache(topology, tracking=True, **options):
    cache = make_cache(cache_params(topology, "near", NEAR_CACHE_TRACKING=tracking, **options))
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(DELIVERY)
    return cache


def raw(cache, key) -> tuple[redis.Redis, str]:
    made = cache.make_key(key)
    shard = cache._router.shard_for(made)
    return redis.Redis(**shard.spec.connection_kwargs), made


def served_near(cache, key, value) -> None:
    """Write ``key`` and wait until reads of it are near hits (the echo of our own write
    through tracking may evict it once first)."""
    cache.set(key, value)

    def near_hit() -> bool:
        hits = cache.near_cache_stats()["hits"]
        return cache.get(key) == value and cache.near_cache_stats()["hits"] == hits + 1

    assert until(near_hit, DELIVERY)


@pytest.mark.parametrize(
    "change",
    [
        lambda r, k: r.set(k, b"2"),
        lambda r, k: r.delete(k),
        lambda r, k: r.pexpire(k, 1),  # expired inside Redis: Redis reports it too
        lambda r, k: r.flushdb(),
    ],
    ids=["set", "delete", "expire", "flushdb"],
)
def test_a_change_by_another_client_stops_the_near_copy(topology, change):
    cache = tracked_cache(topology)
    served_near(cache, "k", 1)
    client, made = raw(cache, "k")
    change(client, made)
    assert until(lambda: cache.get("k") != 1, DELIVERY)
    assert cache.get("k") in (None, 2)


def test_without_tracking_the_near_copy_outlives_a_foreign_write(topology):
    cache = tracked_cache(topology, tracking=False)
    served_near(cache, "k", 1)
    client, made = raw(cache, "k")
    client.set(made, b"2")
    time.sleep(0.2)
    assert cache.get("k") == 1  # what the option is for: served until NEAR_CACHE_TTL


def test_only_the_given_prefixes_are_tracked(topology):
    params = cache_params(topology, "near")
    params["OPTIONS"]["NEAR_CACHE_TRACKING"] = [f"{params['KEY_PREFIX']}:1:t:"]  # Redis keys
    cache = make_cache(params)
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(DELIVERY)
    served_near(cache, "t:1", 1)
    served_near(cache, "u:1", 1)
    for key in ("t:1", "u:1"):
        client, made = raw(cache, key)
        client.set(made, b"2")
    assert until(lambda: cache.get("t:1") == 2, DELIVERY)
    assert cache.get("u:1") == 1  # not tracked: only its TTL bounds it


def test_tracking_is_armed_again_when_its_connection_dies(topology):
    cache = tracked_cache(topology)
    served_near(cache, "k", 1)
    client, made = raw(cache, "k")
    shard = cache._router.shard_for(made).name
    arming = [c for c in client.client_list() if c.get("redir", "-1") not in ("-1", "0")]
    assert arming, "no connection with CLIENT TRACKING ... REDIRECT"
    subscriber = cache._router.bus.subscriber(shard)
    before = subscriber.subscriptions
    for c in arming:
        client.client_kill_filter(_id=c["id"])
    # Noticed within a heartbeat: the shard is untrusted, then armed and trusted again.
    assert until(lambda: subscriber.subscriptions > before, 10)
    assert until(lambda: cache._router.near.trusted(shard), 10)
    served_near(cache, "k", 1)
    client.set(made, b"3")
    assert until(lambda: cache.get("k") == 3, DELIVERY)


@pytest.mark.parametrize("value", ["yes", [], [""], "site:", 1])
def test_bad_tracking_values_name_the_option(topology, value):
    with pytest.raises(ImproperlyConfigured, match="NEAR_CACHE_TRACKING"):
        make_cache(cache_params(topology, "near", NEAR_CACHE_TRACKING=value))


def test_tracking_needs_the_near_cache(topology):
    with pytest.raises(ImproperlyConfigured, match=r"NEAR_CACHE_TRACKING.*NEAR_CACHE"):
        make_cache(cache_params(topology, NEAR_CACHE_TRACKING=True))
