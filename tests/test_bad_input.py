"""Bad input, each tested: secrets never shown, bad keys warned about, a wrong password, a shard
answering errors, a rediss:// URL to a plain server. Real Redis wherever a server is involved."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.cache import CacheKeyWarning
from django.core.exceptions import ImproperlyConfigured

from hacache.checks import check_alias
from hacache.options import parse_options
from hacache.topology import Topology
from tests.conftest import cache_params, key_on, make_cache, running
from tests.test_checks import _manage
from tests.test_operations import hacache

SECRET = "Xyzzy42plugh"  # distinctive: found in no message by chance

# Each a setting hacache refuses, with a secret somewhere in it.
LEAKY_SETTINGS: list[tuple[Any, Any]] = [
    (f"redis://user:{SECRET}@h:6379?bogus=1", None),
    (f"redis://{SECRET}@h:6379?bogus=1", None),  # no colon: still masked
    (f"redis://:{SECRET}@h:6379/abc", None),
    (f"redis://:{SECRET}@[::1:6379", None),
    (f"redis://h:6379?password={SECRET}", None),
    (f"redis://h:6379?weight=0&auth_token={SECRET}", None),
    (f"rediss://h:6379?ssl_password={SECRET}&ssl_bogus=1", None),
    (f"rediss://h:6379?ssl_password={SECRET}&ssl_cert_reqs=bogus", None),
    (f"redis://h:6379?ssl_password={SECRET}", None),
    (f"sentinel://:{SECRET}@s:26379/svc?sentinel_password={SECRET}&bogus=1", None),
    (f"sentinel://s:26379/svc?sentinel_password={SECRET}&socket_timeout=-1", None),
    ([f"redis://:{SECRET}@h:6379", 1], None),
    ("redis://h", {"CONNECTION_OPTIONS": {"password": SECRET}}),
    ("redis://h", {"CONNECTION_OPTIONS": {"ssl_password": SECRET}}),
    ("rediss://h", {"CONNECTION_OPTIONS": {"ssl_password": SECRET, "socket_timeout": math.nan}}),
    ("rediss://h", {"CONNECTION_OPTIONS": {"ssl_password": SECRET, "nope": 1}}),
    (f"redis://:{SECRET}@h", {"VNODES": 10**6}),
    (f"redis://:{SECRET}@h?weight=1000,redis://:{SECRET}@i?weight=1000", None),
]


@pytest.mark.parametrize(("location", "options"), LEAKY_SETTINGS)
def test_no_secret_in_errors_or_check_messages(location, options):
    with pytest.raises(ImproperlyConfigured) as info:
        parse_options(location, options)
    assert SECRET not in str(info.value)
    params = {"BACKEND": "hacache.HACache", "LOCATION": location, "OPTIONS": options}
    messages = check_alias("default", params)
    assert messages and all(m.id.startswith("hacache.E") for m in messages)
    for message in messages:
        assert SECRET not in message.msg and SECRET not in (message.hint or "")


def test_no_secret_in_reprs():
    options = parse_options(
        [
            f"redis://user:{SECRET}@h:6379/1",
            f"rediss://:{SECRET}@t:6380?ssl_password={SECRET}&ssl_cert_reqs=none",
            f"sentinel://:{SECRET}@s:26379/svc?sentinel_password={SECRET}",
        ],
        {"CONNECTION_OPTIONS": {"client_name": "web"}},
    )
    assert SECRET not in repr(options)
    for spec in options.shards:
        assert SECRET not in repr(spec) and SECRET not in spec.address
    tls = parse_options("rediss://t", {"CONNECTION_OPTIONS": {"ssl_password": SECRET}})
    assert SECRET not in repr(tls)


def test_manage_py_check_shows_no_secret(tmp_path):
    caches = {
        "default": {
            "BACKEND": "hacache.HACache",
            "LOCATION": [
                f"redis://:{SECRET}@h:1?bogus=1",
                f"rediss://h:2?ssl_password={SECRET}&ssl_bogus=1",
                f"sentinel://s:3/svc?sentinel_password={SECRET}&db=-1",
            ],
            "OPTIONS": {"CONNECTION_OPTIONS": {"ssl_password": SECRET, "socket_timeout": -1}},
        }
    }
    result = _manage(tmp_path, repr(caches), "check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("hacache.E003") == 3 and "hacache.E004" in result.stderr
    assert SECRET not in result.stdout + result.stderr


# -- a password-protected server ----------------------------------------------------------


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from running(Topology(tmp_path_factory.mktemp("auth"), shards=2, password=SECRET))


def _wrong_password(topo: Topology) -> list[str]:
    return [url.replace(SECRET, "Wrong0pass") for url in topo.master_urls()]


def test_a_wrong_password_names_the_shard_and_shows_no_password(protected, caplog):
    params = {"BACKEND": "hacache.HACache", "LOCATION": _wrong_password(protected)}
    cache = make_cache(params)
    with pytest.raises(redis.AuthenticationError) as info:
        cache.get(key_on(cache, "shard1"))
    text = str(info.value)
    assert text.startswith("shard 'shard1' (127.0.0.1:") and "Wrong0pass" not in text

    async def aget() -> None:
        await cache.aget(key_on(cache, "shard0"))

    with pytest.raises(redis.AuthenticationError, match=r"^shard 'shard0'") as info:
        asyncio.run(aget())
    assert "Wrong0pass" not in str(info.value)

    params["OPTIONS"] = {"FAIL_OPEN": True}
    with caplog.at_level(logging.DEBUG, logger="hacache"):
        assert make_cache(params).get("k", "missed") == "missed"
    assert caplog.records and "AuthenticationError" in caplog.text
    assert "Wrong0pass" not in caplog.text and SECRET not in caplog.text


def test_hacache_status_shows_no_password(settings, protected):
    settings.CACHES = {
        "default": {"BACKEND": "hacache.HACache", "LOCATION": protected.master_urls()}
    }
    code, text = hacache("status")
    assert code == 0 and SECRET not in text
    code, raw = hacache("--json", "status")
    assert code == 0 and SECRET not in raw and len(json.loads(raw)) == 2
    settings.CACHES["default"]["LOCATION"] = _wrong_password(protected)
    code, raw = hacache("--json", "status")
    assert code == 1 and "Wrong0pass" not in raw and SECRET not in raw
    assert "AuthenticationError" in raw


# -- keys Django warns about --------------------------------------------------------------

BAD_KEYS = ["k" * 251, "has space", "ctrl\x01char", "new\nline"]
ENTRY_POINTS = {
    "get": lambda c, k: c.get(k),
    "set": lambda c, k: c.set(k, 1),
    "add": lambda c, k: c.add(k, 1),
    "delete": lambda c, k: c.delete(k),
    "has_key": lambda c, k: c.has_key(k),
    "touch": lambda c, k: c.touch(k),
    "get_many": lambda c, k: c.get_many(["fine", k]),
    "set_many": lambda c, k: c.set_many({"fine": 1, k: 2}),
    "delete_many": lambda c, k: c.delete_many(["fine", k]),
    "incr": lambda c, k: c.incr(k, ignore_key_check=True),
    "ttl": lambda c, k: c.ttl(k),
    "expire": lambda c, k: c.expire(k, 10),
    "persist": lambda c, k: c.persist(k),
    "hset": lambda c, k: c.hset(k, "f", 1),
    "hget": lambda c, k: c.hget(k, "f"),
    "sadd": lambda c, k: c.sadd(k, 1),
    "zadd": lambda c, k: c.zadd(k, {"m": 1}),
}


@pytest.mark.parametrize("key", BAD_KEYS, ids=["long", "space", "control", "newline"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_bad_keys_warn_at_every_entry_point(topology, entry, key):
    cache = make_cache(cache_params(topology))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ENTRY_POINTS[entry](cache, key)
    assert any(issubclass(w.category, CacheKeyWarning) for w in caught), entry


def test_bad_keys_warn_in_the_async_api(topology):
    cache = make_cache(cache_params(topology))

    async def calls() -> None:
        await cache.aset("ctrl\x01", 1)
        await cache.aget("k" * 300)
        await cache.aget_many(["fine", "has space"])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(calls())
    assert sum(issubclass(w.category, CacheKeyWarning) for w in caught) == 3


# -- a shard answering errors -------------------------------------------------------------


def test_an_error_reply_names_the_shard(topology):
    cache = make_cache(cache_params(topology))
    key = key_on(cache, "shard2")
    cache.hset(key, "f", 1)  # a hash: GET and INCR answer WRONGTYPE
    with pytest.raises(redis.ResponseError, match=r"^shard 'shard2' \(127\.0\.0\.1:\d+\): WRONG"):
        cache.get(key)
    with pytest.raises(redis.ResponseError, match=r"^shard 'shard2' .*WRONGTYPE"):
        cache.incr(key)

    async def aget() -> None:
        await cache.aget(key)

    with pytest.raises(redis.ResponseError, match=r"^shard 'shard2' .*WRONGTYPE"):
        asyncio.run(aget())
    assert cache.get(key_on(cache, "shard0")) is None  # the other shards still answer


# -- rediss:// to a plain server ----------------------------------------------------------


def test_tls_to_a_plain_server_says_tls(topology):
    plain = topology.master_urls()[0].replace("redis://", "rediss://", 1)
    cache = make_cache(
        {
            "BACKEND": "hacache.HACache",
            "LOCATION": f"{plain}&ssl_cert_reqs=none",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    )
    with pytest.raises(redis.RedisError, match=r"with TLS \(rediss://\): is the server TLS-enab"):
        cache.get("k")

    async def aget() -> None:
        await cache.aget("k")

    with pytest.raises(redis.RedisError, match="TLS"):
        asyncio.run(aget())


def test_a_plain_url_never_mentions_tls(topology):
    params = cache_params(topology)
    params["LOCATION"] = ["redis://127.0.0.1:1/0?name=gone"]
    with pytest.raises(redis.ConnectionError) as info:
        make_cache(params).get("k")
    assert "TLS" not in str(info.value)
