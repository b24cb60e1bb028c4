"""Redis ACL users: the minimal rules the README documents, and what each missing rule does.

Real users on the real test servers (``ACL SETUSER`` on every master at fixture time): writes
are never reported failed once applied, a refused invalidation is a warning (once per shard),
``incr`` works without scripts, a refused subscriber keeps the near-cache off for its shard,
and no message holds the password.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.cache import caches

from hacache import invalidation
from hacache.topology import Topology
from tests.conftest import cache_params, key_on, make_cache, until

PASSWORD = f"acl-{secrets.token_hex(8)}"
CHANNEL = "hacache:invalidate"
# What the README documents (### ACL rules), word for word.
BASIC = "+get +mget +set +mset +del +exists +expire +persist +pttl +flushdb +incrby +eval"
NEAR = f"{BASIC} +incr +publish +subscribe +ping"
NO_SCRIPTS = "+multi +exec +rpush +lrem"
RULES = {
    "hc-plain": f"~* resetchannels -@all {BASIC}",
    "hc-near": f"~* resetchannels &{CHANNEL} -@all {NEAR}",
    "hc-noscript": f"~* resetchannels -@all {BASIC} -eval {NO_SCRIPTS}",
    "hc-nopublish": f"~* resetchannels &{CHANNEL} -@all {NEAR} -publish",
    "hc-noeval": f"~* resetchannels &{CHANNEL} -@all {NEAR} -eval {NO_SCRIPTS}",
    "hc-nochannel": f"~* resetchannels -@all {NEAR}",
    "hc-noseqkey": f"~t* resetchannels &{CHANNEL} -@all {NEAR}",
    "hc-nomulti": f"~* resetchannels -@all {BASIC} -eval",
    "hc-noincrby": f"~* resetchannels -@all {BASIC} -incrby",
}


def _admin(topology: Topology) -> list[redis.Redis]:
    return [redis.Redis(node.host, node.port) for node in topology.masters().values()]


@pytest.fixture(scope="module")
def acl_users(topology: Topology) -> Iterator[None]:
    clients = _admin(topology)
    for client in clients:
        for name, rules in RULES.items():
            client.execute_command("ACL", "SETUSER", name, "reset", "on", f">{PASSWORD}",
                                   *rules.split())  # fmt: skip
    yield
    for client in clients:
        client.execute_command("ACL", "DELUSER", *RULES)
        client.close()


def _as_user(params: dict, user: str) -> dict:
    params["LOCATION"] = [
        url.replace("redis://", f"redis://{user}:{PASSWORD}@", 1) for url in params["LOCATION"]
    ]
    return params


def _cache(settings: Any, topology: Topology, user: str, scenario: str, **options: Any) -> Any:
    params = _as_user(cache_params(topology, scenario, **options), user)
    settings.CACHES = {"acl": params}  # so that logs name the alias
    return caches["acl"]


def _near_ready(cache: Any) -> None:
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(5)


def _basics(cache: Any) -> None:
    """The conformance basics, on keys of every shard."""
    for shard in cache._router.shards:
        k = key_on(cache, shard)
        cache.set(k, {"v": 1})
        assert cache.get(k) == {"v": 1}
        assert cache.get(k) == {"v": 1}
        assert cache.add(k, 2) is False
        assert cache.touch(k, 30) is True
        assert cache.touch(k, None) is True
        assert cache.delete(k) is True
        assert cache.get(k, "gone") == "gone"
        assert cache.add(k, 5) is True
        assert cache.incr(k, 3) == 8
        assert cache.decr(k) == 7
        assert cache.get(k) == 7
        with pytest.raises(ValueError):
            cache.incr(key_on(cache, shard, "missing"))
        assert not cache.has_key(key_on(cache, shard, "missing"))
    data = {f"m{i}": i for i in range(12)}
    assert cache.set_many(data) == []
    assert cache.get_many([*data, "nope"]) == data
    assert cache.set_many(data, 30) == []
    assert cache.delete_many(list(data)) == 12
    assert cache.get_many(list(data)) == {}
    cache.set("c", 1)
    assert cache.clear() is True
    assert cache.get("c") is None


def _no_secret(caplog: pytest.LogCaptureFixture, *errors: BaseException) -> None:
    assert PASSWORD not in caplog.text
    for error in errors:
        assert PASSWORD not in str(error) and PASSWORD not in repr(error)


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


@pytest.mark.usefixtures("acl_users")
@pytest.mark.parametrize(
    ("user", "scenario"),
    [("hc-plain", "sharded"), ("hc-near", "near"), ("hc-noscript", "sharded")],
)
def test_documented_minimal_rules_pass_the_basics(
    settings: Any, topology: Topology, caplog: pytest.LogCaptureFixture, user: str, scenario: str
) -> None:
    caplog.set_level(logging.WARNING)
    cache = _cache(settings, topology, user, scenario)
    if scenario == "near":
        _near_ready(cache)
    _basics(cache)
    if scenario == "near":  # served from memory
        k = key_on(cache, "shard0")
        cache.set(k, "mine")
        hits = cache._router.near.stats.hits
        assert cache.get(k) == "mine" and cache.get(k) == "mine"
        assert cache._router.near.stats.hits > hits
    allowed = "may not run scripts" if user == "hc-noscript" else "(none)"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in warned if allowed not in m] == []
    _no_secret(caplog)


@pytest.mark.usefixtures("acl_users")
def test_near_cache_invalidates_another_process_under_minimal_rules(
    settings: Any, topology: Topology, remote_factory: Any
) -> None:
    params = _as_user(cache_params(topology, "near"), "hc-near")
    settings.CACHES = {"acl": params}
    cache = caches["acl"]
    _near_ready(cache)
    remote = remote_factory(params)
    k = key_on(cache, "shard1")
    cache.set(k, "v1")
    assert remote("get", k) == "v1"
    assert remote("get", k) == "v1"  # now held in the remote's near-cache
    cache.set(k, "v2")
    assert until(lambda: remote("get", k) == "v2", 5)


@pytest.mark.usefixtures("acl_users")
@pytest.mark.parametrize("user", ["hc-nopublish", "hc-noeval"])
def test_writes_stand_when_invalidations_are_refused(
    settings: Any, topology: Topology, caplog: pytest.LogCaptureFixture, user: str
) -> None:
    """Without +publish (refused inside the script) or +eval (refused outright)."""
    caplog.set_level(logging.WARNING)
    cache = _cache(settings, topology, user, "near")
    _near_ready(cache)  # the subscriber itself is allowed
    check = make_cache(cache_params(topology, "sharded"))
    check.key_prefix = cache.key_prefix  # the default user, no near-cache: what Redis holds
    for _ in range(3):
        _basics(cache)
    k = key_on(cache, "shard2")
    cache.set(k, "stored")
    assert check.get(k) == "stored"
    cache.set(k, 10)
    assert cache.incr(k) == 11 and check.get(k) == 11
    cache.delete(k)
    assert check.get(k) is None
    refused = _warnings(caplog, "invalidations are not published")
    assert sorted(r.args[1] for r in refused) == sorted(cache._router.shards)  # once per shard
    message = refused[0].getMessage()
    assert "'acl'" in message and "stale for up to NEAR_CACHE_TTL" in message
    assert " script: " not in message  # no script SHA, Redis's reason only
    _no_secret(caplog)


@pytest.mark.usefixtures("acl_users")
def test_dropped_write_repair_completes_without_publish(settings: Any, topology: Topology) -> None:
    cache = _cache(settings, topology, "hc-nopublish", "near", FAIL_OPEN=True)
    _near_ready(cache)
    k, other = key_on(cache, "shard0"), key_on(cache, "shard0", "o")
    cache.set(k, "old")
    router = cache._router
    router.dropped.record(router.shards["shard0"], [cache.make_key(k)])
    assert cache.get(k) is None  # hidden until repaired
    cache.set(other, 1)  # carries the repair
    assert len(router.dropped) == 0 and not router.dropped.waiting
    cache.set(k, "new")
    cache.set(other, 2)  # a repair left behind would delete "new" again here
    assert cache.get(k) == "new"


@pytest.mark.usefixtures("acl_users")
def test_get_or_set_with_grace_and_no_scripts_stores_and_says_so(settings, topology) -> None:
    """Without +eval the lease is not taken (protection off) and the grace copy's script is
    refused: the value is still stored, and the call returns it rather than raising."""
    cache = _cache(settings, topology, "hc-noscript", "sharded", STAMPEDE={"GRACE": 30})
    assert cache.get_or_set("g", "computed", 100) == "computed"
    assert cache.get("g") == "computed"
    assert cache.get_or_set("g", "again", 100) == "computed"  # a hit


def test_incr_without_scripts(settings: Any, topology: Topology, caplog) -> None:
    caplog.set_level(logging.WARNING)
    cache = _cache(settings, topology, "hc-noscript", "sharded")
    admin = {n: c for n, c in zip(cache._router.shards, _admin(topology), strict=True)}
    k = key_on(cache, "shard1")
    cache.set(k, 5, 100)
    # The first call's EVAL is refused (it ran nothing): the backend sends it again as the
    # transaction, used for this shard from then on.
    assert cache.incr(k, 2) == 7
    assert any("may not run scripts" in r.getMessage() and "shard1" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert cache.incr(k, -3) == 4
    assert 95 <= admin["shard1"].ttl(cache.make_key(k)) <= 100  # the lifetime is kept
    missing = key_on(cache, "shard1", "missing")
    with pytest.raises(ValueError):
        cache.incr(missing)
    assert not admin["shard1"].exists(cache.make_key(missing))  # never created
    cache.set(k, "text")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        cache.incr(k)
    assert cache.get(k) == "text"
    listed = cache.make_key(key_on(cache, "shard1", "list"))
    admin["shard1"].rpush(listed, "a", "b")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        cache.incr(key_on(cache, "shard1", "list"))
    assert admin["shard1"].lrange(listed, 0, -1) == [b"a", b"b"]  # as it was
    cache.set(k, 0)

    def count() -> None:
        for _ in range(100):
            cache.incr(k)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get(k) == 400
    assert asyncio.run(cache.aincr(k, 5)) == 405
    warned = _warnings(caplog, "may not run scripts")
    assert len(warned) == 1 and "'shard1'" in warned[0].getMessage()
    _no_secret(caplog)


@pytest.mark.usefixtures("acl_users")
def test_a_refused_command_inside_incrs_script_names_the_shard_not_the_script(
    settings: Any, topology: Topology
) -> None:
    cache = _cache(settings, topology, "hc-noincrby", "single")
    cache.set("n", 1)
    with pytest.raises(redis.ResponseError) as raised:
        cache.incr("n")
    assert str(raised.value).startswith("shard 'shard0'") and " script: " not in str(raised.value)
    assert cache.get("n") == 1


@pytest.mark.usefixtures("acl_users")
def test_incr_learns_from_a_refused_invalidation(settings: Any, topology: Topology) -> None:
    """A near-cache user without EVAL: its first write tells incr before incr is called."""
    cache = _cache(settings, topology, "hc-noeval", "near")
    k = key_on(cache, "shard0")
    cache.set(k, 1)
    assert cache.incr(k) == 2


@pytest.mark.usefixtures("acl_users")
def test_incr_without_scripts_nor_transactions_is_refused_clearly(
    settings: Any, topology: Topology
) -> None:
    cache = _cache(settings, topology, "hc-nomulti", "single")
    cache.set("n", 1)
    assert cache.incr("n") == 2  # EVAL refused, then the steps one by one, this once
    with pytest.raises(redis.ResponseError, match="neither scripts nor MULTI") as raised:
        cache.incr("n")
    assert cache.get("n") == 2
    assert PASSWORD not in str(raised.value)


@pytest.mark.usefixtures("acl_users")
@pytest.mark.parametrize(
    ("user", "rule", "tracking"),
    [
        ("hc-nochannel", f"&{CHANNEL}", False),
        ("hc-noseqkey", f"~{CHANNEL}:seq", False),
        ("hc-near", "+client|tracking", True),  # NEAR_CACHE_TRACKING needs CLIENT too
    ],
)
def test_refused_subscriber_keeps_the_near_cache_off(
    settings: Any,
    topology: Topology,
    caplog: pytest.LogCaptureFixture,
    user: str,
    rule: str,
    tracking: bool,
) -> None:
    caplog.set_level(logging.WARNING)
    cache = _cache(settings, topology, user, "near", NEAR_CACHE_TRACKING=tracking)
    near = cache._router.near
    cache._router.bus.listen()
    assert until(lambda: len(_warnings(caplog, "invalidation subscriber")) == 3, 5)
    for record in _warnings(caplog, "invalidation subscriber"):
        message = record.getMessage()
        assert "'acl'" in message and rule in message and "near-cache stays off" in message
    _basics(cache)  # every write stands (its invalidation is refused too, and says so)
    k = key_on(cache, "shard0")
    cache.set(k, "v")
    for _ in range(5):
        assert cache.get(k) == "v"
    assert near.stats.hits == 0 and near.stats.fills == 0 and len(near) == 0
    assert not any(near.trusted(shard) for shard in cache._router.shards)
    assert len(_warnings(caplog, "invalidation subscriber")) == 3  # retries are throttled
    _no_secret(caplog)


@pytest.mark.usefixtures("acl_users")
def test_a_subscriber_allowed_later_turns_the_near_cache_back_on(
    settings: Any, topology: Topology, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(invalidation, "REFUSED_RETRY", 0.2)
    caplog.set_level(logging.INFO)
    clients = _admin(topology)
    for client in clients:
        client.execute_command("ACL", "SETUSER", "hc-later", "reset", "on", f">{PASSWORD}",
                               *RULES["hc-nochannel"].split())  # fmt: skip
    try:
        cache = _cache(settings, topology, "hc-later", "near")
        cache._router.bus.listen()
        assert until(lambda: len(_warnings(caplog, "invalidation subscriber")) == 3, 5)
        for client in clients:
            client.execute_command("ACL", "SETUSER", "hc-later", f"&{CHANNEL}")
        assert cache._router.near.wait_trusted(5)
        assert until(lambda: caplog.text.count("now allowed and listening") == 3, 5)
        k = key_on(cache, "shard0")
        cache.set(k, "v")
        assert cache.get(k) == "v" and cache.get(k) == "v"
        assert cache.near_cache_stats()["hits"] >= 1
    finally:
        for client in clients:
            client.execute_command("ACL", "DELUSER", "hc-later")
            client.close()
