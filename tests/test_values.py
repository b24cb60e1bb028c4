"""The value format (``codec``): signing, serializers, compression, size limits, bad bytes."""

from __future__ import annotations

import os
import pickle
import zlib
from decimal import Decimal

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from hacache.codec import MAGIC, Codec, Hmac, UnreadableValue, derive_key
from hacache.serializers import (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    is_canonical_int,
)
from tests.conftest import cache_params, make_cache

KEY = "k" * 40
ran: list[str] = []


class Exploit:
    """A pickle that runs code when read: what an attacker with write access to Redis plants."""

    def __reduce__(self):
        return (ran.append, ("pwned",))


def build(topology, scenario="sharded", **options):
    cache = make_cache(cache_params(topology, scenario, **options))
    if cache._router.near is not None:
        cache._router.bus.listen()
        assert cache._router.near.wait_trusted(5)
    return cache


def server(cache, key):
    made = cache.make_key(key)
    shard = cache._router.shard_for(made)
    return redis.Redis(**shard.spec.connection_kwargs), made, shard


def raw(cache, key):
    client, made, _ = server(cache, key)
    return client.get(made)


def plant(cache, key, data):
    """Write bytes behind the cache's back (no invalidation), as an attacker or old writer."""
    client, made, _ = server(cache, key)
    client.set(made, data)


# -- canonical integers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "canonical"),
    [(b"0", True), (b"42", True), (b"-7", True), (b" 42 ", False), (b"1_000", False),
     (b"+5", False), (b"007", False), (b"-0", False), (b"", False), (b"-", False)],
)  # fmt: skip
def test_only_canonical_decimal_bytes_are_integers(data, canonical):
    assert is_canonical_int(data) is canonical


@pytest.mark.parametrize("data", [b" 42 ", b"1_000", b"+5", b"007"])
def test_non_canonical_integers_read_as_a_miss_not_an_int(topology, caplog, data):
    cache = build(topology)
    plant(cache, "n", data)
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.get("n", "dflt") == "dflt"
    assert "unreadable" in caplog.text


# -- corrupt bytes -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["sharded", "near"])
def test_corrupt_bytes_are_a_miss_and_a_warning_naming_alias_and_shard(topology, caplog, scenario):
    cache = build(topology, scenario)
    cache.set_many({"a": 1, "b": "two", "c": [3]})
    plant(cache, "b", b"\x80\x05garbage")
    _, made, shard = server(cache, "b")
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.get("b", "dflt") == "dflt"
        assert cache.get_many(["a", "b", "c"]) == {"a": 1, "c": [3]}
        assert cache.get("b", "dflt") == "dflt"  # not kept near either
    assert f"shard {shard.name!r}" in caplog.text and repr(made) in caplog.text
    assert f"cache {shard.cache!r}" in caplog.text
    assert "UnpicklingError" in caplog.text


def test_unreadable_values_can_raise(topology):
    cache = build(topology, UNREADABLE_VALUES="raise")
    plant(cache, "b", b"\x80\x05garbage")
    with pytest.raises(UnreadableValue, match="shard"):
        cache.get("b")
    with pytest.raises(UnreadableValue):
        cache.get_many(["b"])


def test_a_serializer_error_names_the_key_and_keeps_its_type(topology):
    cache = build(topology)
    with pytest.raises(AttributeError, match=r":1:bad' \(function\)"):
        cache.set("bad", lambda: 1)
    json_cache = build(topology, SERIALIZER="hacache.serializers.JSONSerializer")
    with pytest.raises(TypeError, match=r":1:s' \(set\)"):
        json_cache.set("s", {1, 2})
    with pytest.raises(TypeError, match=r":1:s2'"):
        json_cache.set_many({"ok": 1, "s2": b"bytes"})
    assert json_cache.get("ok") is None  # nothing sent


# -- signing -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["sharded", "near"])
def test_signed_values_round_trip_and_carry_a_tag(topology, scenario):
    cache = build(topology, scenario, SIGN_VALUES=True)
    value = {"nested": [1, 2.5, "x", Decimal("1.1")], "t": (1, 2)}
    cache.set("v", value)
    stored = raw(cache, "v")
    assert stored[:2] == MAGIC + b"\x01" and len(stored) > 34
    assert cache.get("v") == value and cache.get("v") == value
    assert cache.get_many(["v", "nope"]) == {"v": value}


@pytest.mark.parametrize("scenario", ["sharded", "near"])
def test_an_unsigned_pickle_is_never_loaded(topology, caplog, scenario):
    cache = build(topology, scenario, SIGN_VALUES=True)
    ran.clear()
    plant(cache, "x", pickle.dumps(Exploit()))
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.get("x", "dflt") == "dflt"
        assert cache.get_many(["x"]) == {}
        assert cache.get("x", "dflt") == "dflt"
    assert ran == []
    assert "not signed" in caplog.text


def test_a_tampered_or_foreign_key_signed_value_does_not_verify(topology, caplog):
    cache = build(topology, SIGN_VALUES=True)
    other = build(topology, SIGN_VALUES=True, SIGNING_KEY="another key")
    ran.clear()
    other.set("x", Exploit.__new__(Exploit))  # pickling it records nothing
    plant(cache, "x", raw(other, "x").replace(b"\x80", b"\x80", 1))
    assert raw(other, "x") and cache.get("x", "dflt") == "dflt"
    cache.set("y", "honest")
    stored = bytearray(raw(cache, "y"))
    stored[5] ^= 1
    plant(cache, "y", bytes(stored))
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.get("y", "dflt") == "dflt"
    assert "signature does not verify" in caplog.text
    assert ran == []


def test_counters_stay_raw_unsigned_and_incr_works(topology):
    cache = build(topology, "near", SIGN_VALUES=True)
    cache.set("n", 41)
    assert raw(cache, "n") == b"41"
    assert cache.incr("n") == 42 and cache.get("n") == 42
    assert cache.get("n") == 42  # a near hit
    plant(cache, "m", b"7")  # an attacker may change a number: it still reads as a number
    assert cache.get("m") == 7


def test_key_rotation_reads_values_signed_with_an_old_key(topology):
    old = build(topology, SIGN_VALUES=True, SIGNING_KEY="old")
    old.set("v", "signed long ago")
    new_params = cache_params(
        topology, "sharded", SIGN_VALUES=True, SIGNING_KEY="new", SIGNING_FALLBACK_KEYS=["old"]
    )
    new_params["KEY_PREFIX"] = old.key_prefix
    new = make_cache(new_params)
    assert new.get("v") == "signed long ago"
    new.set("w", "fresh")
    assert old.get("w") is None  # the old key does not verify the new one's tag


@pytest.mark.parametrize("key", [b"k", b"k" * 64, b"k" * 65])
@pytest.mark.parametrize("size", [0, 1, 100, 100_000])
@pytest.mark.parametrize("context", [b"", b":1:some-key"])
def test_hmac_is_hmac_sha256_over_the_context_and_the_data(key, size, context):
    import hmac

    data = os.urandom(size)
    message = len(context).to_bytes(4, "big") + context + data if context else data
    assert Hmac(key)(data, context) == hmac.digest(key, message, "sha256")


def test_signing_key_defaults_to_secret_key(topology, settings):
    settings.SECRET_KEY = "s" * 50
    settings.SECRET_KEY_FALLBACKS = ["f" * 50]
    cache = build(topology, SIGN_VALUES=True)
    assert cache._router.options.values.codec.keys == (derive_key("s" * 50), derive_key("f" * 50))


def test_signing_options_are_checked():
    from hacache.options import parse_options

    with pytest.raises(ImproperlyConfigured, match="SIGNING_KEY"):
        parse_options("redis://h", {"SIGNING_KEY": "x"})
    with pytest.raises(ImproperlyConfigured, match="SIGNING_FALLBACK_KEYS"):
        parse_options("redis://h", {"SIGN_VALUES": True, "SIGNING_FALLBACK_KEYS": "x"})
    with pytest.raises(ImproperlyConfigured, match="COMPRESSOR"):
        parse_options("redis://h", {"COMPRESSOR": "gzip"})
    with pytest.raises(ImproperlyConfigured, match="MAX_VALUE_BYTES"):
        parse_options("redis://h", {"MAX_VALUE_BYTES": 0})
    assert parse_options("redis://h", {}).values.codec is None  # the fast path


def test_the_near_cache_keeps_verified_payload_not_the_frame(topology):
    cache = build(topology, "near", SIGN_VALUES=True, COMPRESSOR="zlib", COMPRESS_MIN_BYTES=10)
    cache.set("v", "x" * 1000)
    assert cache.get("v") == "x" * 1000
    entry = cache._router.near._entries[cache.make_key("v")][0]
    assert entry[:1] == b"\x80"  # the pickle itself: a hit only unpickles, verified at fill
    assert cache.get("v") == "x" * 1000
    assert cache.near_cache_stats()["hits"] >= 1


# -- serializers ---------------------------------------------------------------------------


@pytest.mark.parametrize("serializer", ["JSONSerializer", "OrjsonSerializer", "MsgpackSerializer"])
@pytest.mark.parametrize("sign", [False, True])
def test_json_and_msgpack_round_trip_their_types(topology, serializer, sign):
    serializer = f"hacache.serializers.{serializer}"
    cache = build(topology, "near", SERIALIZER=serializer, SIGN_VALUES=sign)
    values = {"d": {"a": [1, 2.5, None, True, "é"]}, "s": "str", "f": 1.5, "b": False, "n": None}
    cache.set_many(values)
    assert cache.get_many(list(values)) == values
    cache.set("c", 5)
    assert raw(cache, "c") == b"5" and cache.incr("c", 2) == 7 and cache.get("c") == 7
    cache.set("t", (1, 2))
    assert cache.get("t") == [1, 2]


def test_msgpack_keeps_bytes_and_integer_keys():
    s = MsgpackSerializer()
    assert s.loads(s.dumps({1: b"\x00\xff", "s": "x"})) == {1: b"\x00\xff", "s": "x"}
    assert s.dumps(52) == 52 and s.loads(b"52") == 52
    j = JSONSerializer()
    assert j.loads(j.dumps({"a": "é"})) == {"a": "é"} and j.dumps({"a": 1}) == b'{"a":1}'


# -- compression ---------------------------------------------------------------------------

DOC = {"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(200)]}


@pytest.mark.parametrize("compressor", ["zlib", "zstd", "lz4"])
def test_compressed_and_plain_values_read_back_transparently(topology, compressor):
    cache = build(topology, "near", COMPRESSOR=compressor, COMPRESS_MIN_BYTES=256)
    cache.set_many({"big": DOC, "small": "tiny", "noise": os.urandom(5000)})
    big = raw(cache, "big")
    assert big[:1] == MAGIC and big[1] >> 4 in (1, 2, 3) and len(big) < len(pickle.dumps(DOC)) / 3
    assert raw(cache, "small")[:1] == b"\x80"  # below the threshold: Django's format
    assert raw(cache, "noise")[:1] == b"\x80"  # did not shrink: stored as it was
    plain = build(topology)  # no codec at all: still reads compressed values
    plain.key_prefix = cache.key_prefix
    for c in (cache, plain):
        assert c.get("big") == DOC and c.get("small") == "tiny" and len(c.get("noise")) == 5000
        assert c.get_many(["big", "small"]) == {"big": DOC, "small": "tiny"}


@pytest.mark.parametrize("sign", [False, True])
def test_signed_and_compressed(topology, sign):
    cache = build(topology, SIGN_VALUES=sign, COMPRESSOR="zstd")
    cache.set("big", DOC)
    assert raw(cache, "big")[1] == (0x21 if sign else 0x20)
    assert cache.get("big") == DOC


def test_django_redis_zlib_compressed_values_still_read(topology):
    data = zlib.compress(pickle.dumps(DOC))  # django-redis's ZlibCompressor: no marker
    for options in ({}, {"COMPRESSOR": "zlib"}):
        cache = build(topology, **options)
        plant(cache, "dr", data)
        assert cache.get("dr") == DOC


def test_a_decompression_bomb_is_refused(topology, caplog):
    cache = build(topology, COMPRESSOR="zlib", MAX_VALUE_BYTES=1_000_000)
    plant(cache, "bomb", MAGIC + b"\x10" + zlib.compress(b"\x00" * 50_000_000))
    with caplog.at_level("WARNING", logger="hacache.codec"):
        assert cache.get("bomb", "dflt") == "dflt"
    assert "MAX_VALUE_BYTES" in caplog.text


def test_a_signing_cache_verifies_before_decompressing():
    codec = Codec(PickleSerializer(), (derive_key("k"),), "zlib", 10)
    frame = MAGIC + b"\x11" + zlib.compress(b"\x00" * 50_000_000) + b"\x00" * 32
    with pytest.raises(UnreadableValue, match="signature"):
        codec.open(frame)


# -- size limits ---------------------------------------------------------------------------


def test_a_value_above_max_value_bytes_is_refused_before_sending(topology):
    cache = build(topology, MAX_VALUE_BYTES=10_000)
    with pytest.raises(ValueError, match=r":1:big' is 20,0\d\d bytes.*MAX_VALUE_BYTES"):
        cache.set("big", b"x" * 20_000)
    with pytest.raises(ValueError, match=":1:big'"):
        cache.set_many({"small": 1, "big": b"x" * 20_000})
    with pytest.raises(ValueError, match=":1:big'"):
        cache.add("big", b"x" * 20_000)
    assert cache.get_many(["small", "big"]) == {}
    # The serialized size counts, before compression (a reader decompresses that much).
    zipped = build(topology, MAX_VALUE_BYTES=10_000, COMPRESSOR="zlib", SIGN_VALUES=True)
    with pytest.raises(ValueError, match=r":1:big' is 20,0\d\d bytes.*MAX_VALUE_BYTES"):
        zipped.set("big", b"x" * 20_000)
    zipped.set("fits", b"x" * 9_900)
    assert zipped.get("fits") == b"x" * 9_900 and len(raw(zipped, "fits")) < 1000


@pytest.mark.parametrize("compressor", ["zstd", "lz4"])
def test_django_redis_zstd_and_lz4_compressed_values_still_read(topology, compressor):
    if compressor == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(pickle.dumps(DOC))
    else:
        import lz4.frame

        data = lz4.frame.compress(pickle.dumps(DOC))
    for options in ({}, {"COMPRESSOR": compressor}):
        cache = build(topology, **options)
        plant(cache, "dr", data)
        assert cache.get("dr") == DOC


async def test_async_calls_share_the_format(topology):
    cache = build(topology, SIGN_VALUES=True, COMPRESSOR="lz4", COMPRESS_MIN_BYTES=100)
    await cache.aset("v", DOC)
    await cache.aset_many({"w": "x" * 500, "n": 3})
    assert raw(cache, "v")[:2] == MAGIC + b"\x31"
    assert await cache.aget("v") == DOC
    assert await cache.aget_many(["v", "w", "n"]) == {"v": DOC, "w": "x" * 500, "n": 3}
    plant(cache, "bad", b"\x80\x05junk")
    assert await cache.aget("bad", "dflt") == "dflt"
