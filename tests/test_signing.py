"""Signed values are bound to their key, and every path that stores or reads a value signs
and verifies: stampede's ``get_or_set`` and its grace copy, ``incr_version``, hashes,
migration mode. Real Redis; the attacker writes with a plain redis-py client."""

from __future__ import annotations

import pickle

import pytest
import redis

from hacache.codec import UnreadableValue
from tests.conftest import cache_params, make_cache, until
from tests.test_values import Exploit, build, plant, ran, raw, server

SIGNED = {"SIGN_VALUES": True}


@pytest.fixture(autouse=True)
def _nothing_ran():
    ran.clear()
    yield
    assert ran == [], "a planted pickle was loaded"


@pytest.mark.parametrize("scenario", ["sharded", "near"])
def test_a_signed_value_copied_to_another_key_does_not_verify(topology, caplog, scenario):
    """The attack signing alone would let through: a session of an admin, copied by someone
    who can write Redis onto the key of their own session."""
    cache = build(topology, scenario, **SIGNED)
    admin = "django.contrib.sessions.cacheadmin-session"
    mine = "django.contrib.sessions.cachemy-session"
    cache.set(admin, {"_auth_user_id": "1"})
    cache.set(mine, {"_auth_user_id": "42"})
    plant(cache, mine, raw(cache, admin))
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.get(mine) is None
        assert cache.get_many([admin, mine]) == {admin: {"_auth_user_id": "1"}}
    assert "signature does not verify" in caplog.text and repr(cache.make_key(mine)) in caplog.text
    cache.set(mine, {"_auth_user_id": "42"})  # the honest value under its own key verifies
    assert cache.get(mine) == {"_auth_user_id": "42"}


def test_a_value_signed_for_a_key_is_no_set_member_and_the_reverse(topology):
    cache = build(topology, **SIGNED)
    cache.set("v", "a value")
    cache.sadd("s", "a member")
    client, made_set, _ = server(cache, "s")
    client.sadd(made_set, raw(cache, "v"))  # a key's value planted as a member
    assert cache.smembers("s") == {"a member"}
    (member,) = client.smembers(made_set) - {raw(cache, "v")}
    plant(cache, "v", member)  # and a member planted as a key's value
    assert cache.get("v", "dflt") == "dflt"


def _stored(cache, made):
    """The bytes under the Redis key ``made``, from its shard."""
    return redis.Redis(**cache._router.shard_for(made).spec.connection_kwargs).get(made)


def test_incr_version_signs_the_value_again_for_its_new_key(topology):
    cache = build(topology, **SIGNED)
    cache.set("v", [1, 2, 3], timeout=100)
    v1, v2 = cache.make_key("v"), cache.make_key("v", version=2)
    old_bytes = _stored(cache, v1)
    assert cache.incr_version("v") == 2
    assert cache.get("v", version=2) == [1, 2, 3] and cache.get("v") is None
    new_bytes = _stored(cache, v2)
    assert new_bytes[:-32] == old_bytes[:-32] and new_bytes[-32:] != old_bytes[-32:]
    assert 90 <= cache.ttl("v", version=2) <= 100
    cache.set("w", "x")
    plant(cache, "w", pickle.dumps(Exploit()))
    with pytest.raises(ValueError, match="not found"):  # unreadable: as if absent
        cache.incr_version("w")


def test_a_hash_value_copied_to_another_hash_is_skipped_with_a_warning(topology, caplog):
    cache = build(topology, **SIGNED)
    cache.hset("h1", "role", "admin")
    cache.hset("h2", mapping={"role": "user", "name": "me"})
    c1, made1, _ = server(cache, "h1")
    c2, made2, _ = server(cache, "h2")
    c2.hset(made2, "role", c1.hget(made1, "role"))
    c2.hset(made2, "evil", pickle.dumps(Exploit()))
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.hget("h2", "role", "none") == "none"
        assert cache.hgetall("h2") == {"name": "me"}
    assert "signature does not verify" in caplog.text and "not signed" in caplog.text
    assert cache.hget("h1", "role") == "admin" and cache.hgetall("h1") == {"role": "admin"}


def test_a_hash_value_moved_to_another_field_does_not_verify(topology):
    """In one hash: a flag that may be true (``newsletter``) copied onto one that must not be."""
    cache = build(topology, **SIGNED)
    cache.hset("user", mapping={"newsletter": True, "is_admin": False, 7: "int field"})
    client, made, _ = server(cache, "user")
    client.hset(made, "is_admin", client.hget(made, "newsletter"))
    assert cache.hget("user", "is_admin", "refused") == "refused"
    assert cache.hgetall("user") == {"newsletter": True, "7": "int field"}
    assert cache.hget("user", 7) == "int field" and cache.hget("user", "7") == "int field"


@pytest.mark.parametrize("scenario", ["sharded", "near"])
def test_get_or_set_stores_what_set_stores_signed_and_compressed(topology, scenario):
    options = {**SIGNED, "COMPRESSOR": "zlib", "STAMPEDE": {"GRACE": 30}}
    cache = build(topology, scenario, **options)
    value = "compressible " * 500
    assert cache.get_or_set("k", lambda: value, 100) == value
    stored = raw(cache, "k")
    assert stored[:2] == b"\xc1\x11" and len(stored) < len(value) // 4  # signed, zlib
    assert cache.get("k") == value
    client, made, _ = server(cache, "k")
    assert client.get(made + ":~stale") == stored  # the grace copy: the same signed bytes


def test_get_or_set_never_loads_a_planted_value_or_grace_copy(topology, caplog):
    cache = build(topology, **SIGNED, STAMPEDE={"GRACE": 30, "WAIT": 0.3})
    client, made, _ = server(cache, "k")
    plant(cache, "k", pickle.dumps(Exploit()))  # the key itself: read, then read by the lease
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.get_or_set("k", lambda: "computed", 100) == "computed"
    assert cache.get("k") == "computed"
    # Someone else holds the lease; the grace copy is planted: not served, computed after WAIT.
    client.delete(made)
    client.set(made + ":~lease", "someone else", px=5000)
    client.set(made + ":~stale", pickle.dumps(Exploit()), px=5000)
    assert cache.get_or_set("k", lambda: "again", 100) == "again"
    # A grace copy copied from another key's signed value does not verify either.
    cache.set("other", "other's value")
    client.delete(made)
    client.set(made + ":~stale", raw(cache, "other"), px=5000)
    assert cache.get_or_set("k", lambda: "third", 100) == "third"


def test_get_or_set_refuses_a_value_above_max_value_bytes(topology):
    cache = build(topology, MAX_VALUE_BYTES=10_000, STAMPEDE=True)
    with pytest.raises(ValueError, match="MAX_VALUE_BYTES"):
        cache.get_or_set("big", lambda: b"x" * 20_000, 100)
    assert raw(cache, "big") is None


def test_migration_mode_reads_an_unreadable_moved_value_as_a_miss(topology, caplog):
    params = cache_params(topology, "sharded", **SIGNED)
    urls = params["LOCATION"]
    before = make_cache({**params, "LOCATION": urls[:1]})
    options = {**params["OPTIONS"], "PREVIOUS_LOCATION": urls[:1]}
    after = make_cache({**params, "OPTIONS": options})
    moved = [f"m{i}" for i in range(200) if after._router.previous_owner(after.make_key(f"m{i}"))]
    moved = moved[:2]
    assert len(moved) == 2
    before.set(moved[0], "good")
    plant(before, moved[1], pickle.dumps(Exploit()))
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert after.get_many(moved) == {moved[0]: "good"}
        assert after.get(moved[1], "dflt") == "dflt"
    assert "not signed" in caplog.text
    assert _stored(after, after.make_key(moved[0])) is not None  # copied to its new owner
    assert until(lambda: after.get(moved[0]) == "good", 1)


def test_an_unreadable_member_is_left_out_with_a_warning(topology, caplog):
    cache = build(topology, **SIGNED)
    cache.sadd("s", "one", (2, 3))
    cache.zadd("z", {"a": 1.0, "b": 2.0})
    client, made, _ = server(cache, "s")
    client.sadd(made, pickle.dumps(Exploit()))
    zclient, zmade, _ = server(cache, "z")
    zclient.zadd(zmade, {pickle.dumps(Exploit()): 1.5})
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.smembers("s") == {"one", (2, 3)}
        assert sorted(map(str, cache.srandmember("s", 10))) == ["(2, 3)", "one"]
        assert cache.zrange("z", 0, -1) == ["a", "b"]
        assert cache.zrange("z", 0, -1, withscores=True) == [("a", 1.0), ("b", 2.0)]
        assert cache.scard("s") == 3  # Redis counts it: the member is there, unread
    assert f"a member of key {made!r} is unreadable" in caplog.text and "left out" in caplog.text
    strict = build(topology, **SIGNED, UNREADABLE_VALUES="raise")
    strict_client, strict_made, _ = server(strict, "s")
    strict_client.sadd(strict_made, pickle.dumps(Exploit()))
    with pytest.raises(UnreadableValue, match="a member of key"):
        strict.smembers("s")


def test_members_signed_before_a_key_rotation_are_found_by_value(topology):
    old = build(topology, SIGN_VALUES=True, SIGNING_KEY="old key")
    params = cache_params(topology, SIGN_VALUES=True, SIGNING_KEY="new key",
                          SIGNING_FALLBACK_KEYS=["old key"])  # fmt: skip
    params["KEY_PREFIX"] = old.key_prefix
    new = make_cache(params)
    old.sadd("s", "kept", "removed", "moved", 7)
    old.zadd("z", {"a": 1.0, "b": 0.0})
    assert new.smembers("s") == {"kept", "removed", "moved", 7}
    assert new.sismember("s", "kept") and not new.sismember("s", "absent")
    assert new.smismember("s", "kept", 7, "absent", "moved") == [True, True, False, True]
    assert new.srem("s", "removed") == 1 and old.smembers("s") == {"kept", "moved", 7}
    assert new.smove("s", "s", "moved")  # same key: one shard
    assert new.zscore("z", "a") == 1.0 and new.zscore("z", "b") == 0.0
    assert new.zscore("z", "c") is None
    assert new.zrank("z", "a") == 1 and new.zrank("z", "b") == 0 and new.zrank("z", "c") is None
    assert new.zrem("z", "a") == 1 and new.zrange("z", 0, -1) == ["b"]
    new.sadd("s", "fresh")  # written with the new key: the old one cannot read it
    assert new.sismember("s", "fresh") and not old.sismember("s", "fresh")
