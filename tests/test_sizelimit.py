"""A value too large for the server (``proto-max-bulk-len``) is the caller's ``ValueError``,
never a failure of the server (``hacache.sizelimit``): real redis-servers with the limit
lowered to 1 MiB, the least Redis allows, and hacache's own MAX_VALUE_BYTES left at 256 MiB."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
import redis

from hacache import sizelimit
from hacache.topology import free_port
from tests.conftest import DELIVERY, make_cache, until

BIG = b"x" * 2_000_000  # above the server's 1 MiB, far below MAX_VALUE_BYTES
LIMIT = r"proto-max-bulk-len \(1,048,576\)"


@pytest.fixture
def bulk_server(tmp_path):
    """Start a redis-server with ``proto-max-bulk-len 1mb`` (and ``extra`` config); its URL."""
    procs = []

    def start(*extra: str) -> tuple[str, redis.Redis, subprocess.Popen]:
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
             "--proto-max-bulk-len", "1mb", "--dir", str(tmp_path), *extra],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        admin = redis.Redis(port=port)
        for _ in range(200):
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
        return f"redis://127.0.0.1:{port}/0", admin, proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)


def _cache(location: str, **options):
    options.setdefault("BREAKER_THRESHOLD", 1)  # one booked failure would open it
    return make_cache({"LOCATION": location, "KEY_PREFIX": "b", "OPTIONS": options})


def _master(cache):
    (shard,) = cache._router.shards.values()
    return shard.view.master


def _connections(admin: redis.Redis) -> int:
    return admin.info("stats")["total_connections_received"]


@pytest.mark.parametrize("fail_open", [False, True])
def test_a_value_the_server_refuses_for_its_size_is_a_value_error_not_a_failure(
    bulk_server, fail_open
):
    url, admin, _ = bulk_server()
    cache = _cache(url, FAIL_OPEN=fail_open)
    cache.set("small", 1)
    with pytest.raises(ValueError, match=rf"refuses the value for key 'b:1:big'.*{LIMIT}"):
        cache.set("big", BIG)
    assert _master(cache).bulk_limit[0] == 1024 * 1024 and not _master(cache).breaker.is_open
    before = _connections(admin)
    for _ in range(3):  # now refused before anything is sent
        with pytest.raises(ValueError, match=rf"refuses the value for key 'b:1:big'.*{LIMIT}"):
            cache.set("big", BIG)
    assert _connections(admin) == before
    assert not _master(cache).breaker.is_open
    assert not cache._router.dropped.waiting  # not recorded as a write dropped by a failure
    assert cache.get("small") == 1 and cache.get("big") is None
    cache.set("fits", b"y" * 1_000_000)
    assert cache.get("fits") == b"y" * 1_000_000


def test_async_calls_learn_the_limit_the_same_way(bulk_server):
    url, _, _ = bulk_server()
    cache = _cache(url)

    async def main():
        with pytest.raises(ValueError, match=LIMIT):
            await cache.aset("big", BIG)
        with pytest.raises(ValueError, match=LIMIT):
            await cache.aset_many({"a": 1, "big": BIG})
        await cache.aset("small", 2)
        return await cache.aget("small")

    assert asyncio.run(main()) == 2
    assert not _master(cache).breaker.is_open


def test_set_many_names_the_key_that_is_too_large(bulk_server):
    url, _, _ = bulk_server()
    cache = _cache(url)
    with pytest.raises(ValueError, match=rf"'b:1:huge'.*{LIMIT}"):
        cache.set_many({"a": 1, "huge": BIG, "c": 3}, timeout=None)  # one MSET
    assert cache.get_many(["a", "c"]) == {}  # MSET refused whole
    cache.set_many({"a": 1, "c": 3})
    assert cache.get_many(["a", "c"]) == {"a": 1, "c": 3}


def test_a_user_who_may_not_ask_the_limit_is_not_booked_and_is_told(bulk_server):
    url, _, _ = bulk_server("--user", "app", "on", ">app-pw", "~*", "&*", "+@all", "-config")
    cache = _cache(url.replace("redis://", "redis://app:app-pw@"))
    with pytest.raises(redis.ConnectionError, match=r"2,000,0\d\d-byte argument.*MAX_VALUE_BYTES"):
        cache.set("big", BIG)
    assert _master(cache).bulk_limit is None and not _master(cache).breaker.is_open
    cache.set("small", 3)
    assert cache.get("small") == 3


def test_a_dead_server_is_still_booked_whatever_the_size(bulk_server):
    url, _, proc = bulk_server()
    cache = _cache(url)
    cache.set("small", 1)
    proc.kill()
    proc.wait(10)
    with pytest.raises(redis.ConnectionError):
        cache.set("big", BIG)
    assert _master(cache).breaker.is_open


def test_max_value_bytes_below_the_server_limit_never_sends(bulk_server):
    url, admin, _ = bulk_server()
    cache = _cache(url, MAX_VALUE_BYTES=1024 * 1024 - 64)
    cache.set("small", 1)
    before = _connections(admin)
    for _ in range(3):
        with pytest.raises(ValueError, match="MAX_VALUE_BYTES"):
            cache.set("big", BIG)
    assert _connections(admin) == before and cache.get("small") == 1


def test_keys_a_refused_request_may_have_written_are_invalidated(bulk_server, remote_factory):
    """set_many with a timeout sends one SET per key: those before the refused one ran."""
    url, admin, _ = bulk_server()
    params = {"BACKEND": "hacache.HACache", "LOCATION": url, "KEY_PREFIX": "b",
              "OPTIONS": {"NEAR_CACHE": True}}  # fmt: skip
    cache = make_cache(params)
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(DELIVERY)
    reader = remote_factory(params)
    cache.set("k1", "old")
    assert until(lambda: reader("get", "k1") == "old", DELIVERY)
    assert reader("get", "k1") == "old"  # held in the reader's near-cache
    with pytest.raises(ValueError, match=LIMIT):
        cache.set_many({"k1": "new", "big": BIG}, timeout=300)
    # The SET before the refused one ran: deleted again and invalidated before the error.
    assert admin.get("b:1:k1") is None and not cache._router.dropped.waiting
    assert cache.get("k1") is None
    assert until(lambda: reader("get", "k1") is None, DELIVERY)  # never "old" again


def test_a_learned_limit_is_asked_again_after_a_while(bulk_server, monkeypatch):
    url, admin, _ = bulk_server()
    cache = _cache(url)
    with pytest.raises(ValueError, match=LIMIT):
        cache.set("big", BIG)
    admin.config_set("proto-max-bulk-len", str(4 * 1024 * 1024))  # raised by an operator
    with pytest.raises(ValueError, match=LIMIT):  # still the limit learned
        cache.set("big", BIG)
    monkeypatch.setattr(sizelimit, "RELEARN", 0.0)
    cache.set("big", BIG)
    assert cache.get("big") == BIG


def test_without_config_a_stale_connection_is_still_retried(bulk_server):
    url, admin, _ = bulk_server("--user", "app", "on", ">app-pw", "~*", "&*", "+@all", "-config")
    cache = _cache(url.replace("redis://", "redis://app:app-pw@"), BREAKER_THRESHOLD=3)
    admin.config_set("proto-max-bulk-len", str(4 * 1024 * 1024))
    cache.set("small", 1)  # a pooled connection...
    admin.client_kill_filter(_type="normal", skipme=True)  # ...that the server closed
    cache.set("fits", b"z" * 1_500_000)  # above 1 MiB, within the server's (raised) limit
    assert cache.get("fits") == b"z" * 1_500_000
