"""Configuration: every mistake fails at start-up with ImproperlyConfigured naming the setting."""

from __future__ import annotations

import copy

import pytest
from django.core.exceptions import ImproperlyConfigured

from hacache.backend import HACache
from hacache.options import parse_options
from hacache.serializers import PickleSerializer


def build(location, options=None):
    params = {"OPTIONS": options} if options is not None else {}
    return HACache(location, params)


@pytest.mark.parametrize(
    ("location", "options", "names"),
    [
        (None, None, "LOCATION"),
        ("", None, "LOCATION"),
        ([], None, "LOCATION"),
        ([1, 2], None, "LOCATION"),
        ("http://localhost:6379", None, "LOCATION"),
        ("redis://h:6379?weight=0", None, "weight"),
        ("redis://h:6379?weight=two", None, "weight"),
        ("redis://h:6379?bogus=1", None, "bogus"),
        ("redis://h:6379,redis://h:6379", None, "h:6379"),
        ("redis://a:1?name=x,redis://b:2?name=x", None, "'x'|x given twice"),
        ("redis://h", {"SOCKET_TIMEOUT": 0}, "SOCKET_TIMEOUT"),
        ("redis://h", {"SOCKET_TIMEOUT": None}, "SOCKET_TIMEOUT"),
        ("redis://h", {"SOCKET_CONNECT_TIMEOUT": "1"}, "SOCKET_CONNECT_TIMEOUT"),
        ("redis://h", {"SOCKET_TIMOUT": 1}, "Did you mean 'SOCKET_TIMEOUT'"),
        ("redis://h", {"socket_timeout": 1}, "Did you mean 'SOCKET_TIMEOUT'"),
        ("redis://h", {"VNODES": 0}, "VNODES"),
        ("redis://h", {"VNODES": True}, "VNODES"),
        ("redis://h", {"PLACEMENT": "modulo"}, "PLACEMENT"),
        ("redis://h", {"PLACEMENT": "ketama", "VNODES": 100}, "VNODES"),
        ("redis://h", {"KETAMA_HASH": "crc32"}, "KETAMA_HASH"),
        ("redis://h", {"HASH_TAGS": "yes"}, "HASH_TAGS"),
        ("redis://h", {"MAX_CONNECTIONS": -1}, "MAX_CONNECTIONS"),
        ("redis://h", {"SERIALIZER": "no.such.Serializer"}, "SERIALIZER"),
        ("redis://h", {"SERIALIZER": "builtins.object"}, "SERIALIZER"),
        ("redis://h", {"SERIALIZER_OPTIONS": {"protocol": 99}}, "SERIALIZER_OPTIONS"),
        ("redis://h", {"SERIALIZER_OPTIONS": {"nope": 1}}, "SERIALIZER_OPTIONS"),
        ("redis://h", {"CONNECTION_OPTIONS": {"not_a_kwarg": 1}}, "CONNECTION_OPTIONS"),
        ("redis://h", {"CONNECTION_OPTIONS": {"host": "x"}}, "CONNECTION_OPTIONS"),
        ("redis://h", {"CONNECTION_OPTIONS": "x"}, "CONNECTION_OPTIONS"),
        ("redis://h", ["not", "a", "dict"], "OPTIONS"),
        ("redis://h", {"WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 0.5}, "WAIT_TIMEOUT.*SOCKET_TIMEOUT"),
        ("redis://h?socket_timeout=0.1", {"WAIT_REPLICAS": 1}, "WAIT_TIMEOUT.*'h:6379'"),
        ("redis://h", {"REVERSE_KEY_FUNCTION": 3}, "REVERSE_KEY_FUNCTION"),
        ("redis://h", {"REVERSE_KEY_FUNCTION": "no.such.f"}, "REVERSE_KEY_FUNCTION"),
    ],
)
def test_bad_configuration_names_the_setting(location, options, names):
    with pytest.raises(ImproperlyConfigured, match=names):
        build(location, options)


def test_wait_timeout_is_only_checked_when_writes_wait():
    assert parse_options("redis://h?socket_timeout=0.05", None).wait_timeout == 0.1
    assert parse_options("redis://h", {"WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 0.4}).wait_replicas


def test_a_per_call_wait_must_end_before_the_socket_times_out():
    from hacache.ops import wait_for_replicas

    cache = build("redis://127.0.0.1:1")  # never reached: refused before anything is sent
    with wait_for_replicas(1, 0.5), pytest.raises(ValueError, match="SOCKET_TIMEOUT"):
        cache.set("k", 1)


def test_password_never_appears_in_errors():
    with pytest.raises(ImproperlyConfigured) as info:
        build("redis://user:s3cret@h:6379?bogus=1")
    assert "s3cret" not in str(info.value)
    assert "user:***@h:6379" in str(info.value)


def test_location_forms():
    sentinel = "sentinel://s1:26379,s2:26379/svc/1"
    both = parse_options(f"redis://a:1/2,{sentinel};{sentinel.replace('svc', 'other')}", None)
    assert [s.name for s in both.shards] == ["a:1", "svc", "other"]
    assert both.shards[1].sentinels == (("s1", 26379), ("s2", 26379))
    assert both.shards[1].connection_kwargs["db"] == 1
    one = parse_options("redis://a:1/2, redis://b:2;unix:///tmp/r.sock?db=3", None)
    assert [s.name for s in one.shards] == ["a:1", "b:2", "/tmp/r.sock"]
    assert one.shards[0].connection_kwargs["db"] == 2
    assert one.shards[2].connection_kwargs["db"] == 3
    two = parse_options(["redis://a:1", "rediss://b:2?name=main&weight=3"], None)
    assert [(s.name, s.weight) for s in two.shards] == [("a:1", 1), ("main", 3)]
    assert two.shards[1].connection_class.__name__ == "SSLConnection"
    assert two.shards[1].async_connection_class.__module__ == "redis.asyncio.connection"


def test_shard_identity_ignores_password_and_db():
    a = parse_options("redis://:old@h:6379/0", None)
    b = parse_options("redis://:new@h:6379/5", None)
    assert a.shards[0].name == b.shards[0].name == "h:6379"


def test_defaults_bound_a_dead_server():
    options = parse_options("redis://h", None)
    kwargs = options.shards[0].connection_kwargs
    assert kwargs["socket_timeout"] == options.socket_timeout == 0.5
    assert kwargs["socket_connect_timeout"] == 0.5
    assert isinstance(options.serializer, PickleSerializer)
    assert options.placement == "consistent" and options.vnodes == 160


def test_options_reach_the_connections():
    options = parse_options(
        "redis://h?socket_timeout=2",
        {
            "SOCKET_TIMEOUT": 0.25,
            "SOCKET_CONNECT_TIMEOUT": 0.1,
            "CONNECTION_OPTIONS": {"client_name": "web"},
            "SERIALIZER_OPTIONS": {"protocol": 4},
        },
    )
    kwargs = options.shards[0].connection_kwargs
    assert kwargs["socket_timeout"] == 2.0  # the URL wins for its own server
    assert kwargs["socket_connect_timeout"] == 0.1
    assert kwargs["client_name"] == "web"
    assert options.serializer.protocol == 4


def test_settings_are_not_mutated():
    location = ["redis://a:1", "redis://b:2"]
    options = {"CONNECTION_OPTIONS": {"client_name": "x"}, "SERIALIZER_OPTIONS": {}}
    before = (copy.deepcopy(location), copy.deepcopy(options))
    build(location, options)
    assert (location, options) == before


def test_the_app_refuses_a_bad_caches_setting_at_start_up(settings):
    from hacache.apps import check_caches_setting

    check_caches_setting()  # the project's own setting is fine
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shards": {"BACKEND": "hacache.HACache", "LOCATION": "redis://h", "OPTIONS": {"VNODE": 1}},
    }
    with pytest.raises(ImproperlyConfigured, match=r"CACHES\['shards'\].*VNODE.*VNODES"):
        check_caches_setting()


@pytest.mark.parametrize("timeout", ["-1", "float('nan')"])
def test_start_up_fails_under_a_real_django_setup(tmp_path, timeout):
    import subprocess
    import sys

    (tmp_path / "bad_settings.py").write_text(
        "INSTALLED_APPS = ['hacache']\n"
        "CACHES = {'default': {'BACKEND': 'hacache.HACache', 'LOCATION': 'redis://h',"
        f" 'OPTIONS': {{'SOCKET_TIMEOUT': {timeout}}}}}}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            "PYTHONPATH": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "bad_settings",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SOCKET_TIMEOUT" in result.stderr
    assert "hacache.E004" in result.stderr  # the system check's id and hint
