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


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("location", "options", "message"),
    [
        # Timeouts: finite and positive wherever they are given.
        ("redis://h", {"SOCKET_TIMEOUT": NAN}, r"OPTIONS\['SOCKET_TIMEOUT'\]: expected a finite"),
        ("redis://h", {"SOCKET_CONNECT_TIMEOUT": INF}, r"'SOCKET_CONNECT_TIMEOUT'.*finite"),
        ("redis://h", {"SOCKET_TIMEOUT": -1}, r"'SOCKET_TIMEOUT'.*positive number of seconds"),
        ("redis://h", {"POOL_TIMEOUT": INF}, r"'POOL_TIMEOUT'.*finite"),
        ("redis://h", {"HEDGE_DELAY": NAN}, r"'HEDGE_DELAY'.*finite number of seconds >= 0"),
        ("redis://h", {"FAILOVER_TIMEOUT": -0.5}, r"'FAILOVER_TIMEOUT'.*>= 0"),
        ("redis://h", {"NEAR_CACHE": True, "NEAR_CACHE_TTL": INF}, r"'NEAR_CACHE_TTL'.*finite"),
        ("redis://h", {"CONNECTION_OPTIONS": {"socket_timeout": NAN}},
         r"CONNECTION_OPTIONS'\]\['socket_timeout'\]: expected None or a finite"),
        ("redis://h", {"CONNECTION_OPTIONS": {"socket_connect_timeout": -1}},
         r"\['socket_connect_timeout'\]: expected None or a finite number of seconds > 0"),
        ("redis://h?socket_timeout=-1", None, r"LOCATION: .*socket_timeout: expected a finite"),
        ("redis://h?socket_timeout=nan", None, r"socket_timeout: expected a finite.*'nan'"),
        ("redis://h?socket_connect_timeout=inf", None, r"socket_connect_timeout: .*'inf'"),
        ("sentinel://s/svc?socket_timeout=-1", None, r"LOCATION: .*socket_timeout: expected a"),
        # db: an integer >= 0, in the path or the query.
        ("redis://h/-1", None, r"LOCATION: 'redis://h/-1': db must be an integer >= 0, got '-1'"),
        ("redis://h/abc", None, r"db must be an integer >= 0, got 'abc'"),
        ("redis://h/1/2", None, r"db must be an integer >= 0, got '1/2'"),
        ("redis://h/abc?db=1", None, r"db must be an integer >= 0, got 'abc'"),
        ("redis://h?db=-1", None, r"URL parameter db: expected an integer >= 0, got '-1'"),
        ("sentinel://s/svc/x", None, r"db must be an integer >= 0, got 'x'"),
        ("sentinel://s/svc?db=x", None, r"URL parameter db: expected an integer >= 0"),
        # Every URL parameter checked against what it takes, sentinel:// too.
        ("sentinel://s/svc?socket_timeout=abc", None, r"socket_timeout: expected .* got 'abc'"),
        ("sentinel://s/svc?health_check_interval=x", None, r"health_check_interval: expected"),
        ("sentinel://s/svc?protocol=9", None, r"protocol: expected 2 or 3, got '9'"),
        ("sentinel://s/svc?socket_keepalive=maybe", None, r"socket_keepalive: expected true or"),
        ("sentinel://s/svc?bogus=1", None, r"unknown URL parameter\(s\) bogus"),
        ("sentinel://s:x/svc", None, r"bad sentinel address 's:x'; expected host:port"),
        ("sentinel://s:99999/svc", None, r"bad sentinel address"),
        ("sentinel://[::1:26379/svc", None, r"malformed IPv6 sentinel address '\[::1:26379'"),
        ("redis://h?protocol=9", None, r"URL parameter protocol: expected 2 or 3"),
        ("redis://h?socket_read_size=0", None, r"socket_read_size: expected an integer >= 1"),
        ("redis://h?health_check_interval=-1", None, r"health_check_interval: expected an int"),
        ("redis://h?socket_keepalive=maybe", None, r"socket_keepalive: expected true or false"),
        # Malformed IPv6 and ports.
        ("redis://[::1:6379", None, r"LOCATION: .*malformed URL \(Invalid IPv6 URL\); write an"),
        ("redis://[::1]:abc", None, r"malformed URL \(Port could not be cast"),
        ("redis://h:99999", None, r"malformed URL \(Port out of range"),
        # TLS parameters: known to redis-py's SSLConnection (sync and async), rediss:// only.
        ("rediss://h?ssl_bogus=1", None, r"LOCATION: .*unknown URL parameter\(s\) ssl_bogus;.*"
         r"with rediss://: ssl_ca_certs"),
        ("rediss://h?ssl_validate_ocsp=1", None, r"unknown URL parameter\(s\) ssl_validate_ocsp"),
        ("redis://h?ssl_cert_reqs=none", None, r"ssl_cert_reqs need\(s\) a rediss:// \(TLS\)"),
        ("rediss://h?ssl_cert_reqs=bogus", None,
         r"^hacache: LOCATION: 'rediss://h\?ssl_cert_reqs=bogus': Invalid SSL Certificate"),
        ("rediss://h?ssl_check_hostname=maybe", None, r"ssl_check_hostname: expected true or"),
        ("rediss://h", {"CONNECTION_OPTIONS": {"ssl_bogus": 1}}, r"^hacache: OPTIONS\['CONNE"),
        # Bounds that keep the ring small.
        ("redis://h?weight=1001", None, r"weight must be an integer from 1 to 1000, got '1001'"),
        ("redis://h?weight=10000000", None, r"weight must be an integer from 1 to 1000"),
        ("redis://h", {"VNODES": 10_001}, r"OPTIONS\['VNODES'\]: expected at most 10,000"),
        ("redis://h", {"VNODES": 10**9}, r"OPTIONS\['VNODES'\]: expected at most 10,000"),
        (["redis://a?weight=1000", "redis://b?weight=300"], None,
         r"LOCATION weights x OPTIONS\['VNODES'\]: 208,000 ring points, at most 200,000"),
        ("redis://a", {"VNODES": 10_000, "PREVIOUS_LOCATION": ["redis://a", *[
            f"redis://b{i}" for i in range(20)]]}, r"^hacache: OPTIONS\['PREVIOUS_LOCATION'\] wei"),
        (["redis://h", 3], None, r"LOCATION: expected a list .* got a list holding int, str"),
        # Containers of the wrong kind: named, not a raw TypeError.
        ("redis://h", {"NEAR_CACHE": True, "NEAR_CACHE_KEYS": 1}, r"'NEAR_CACHE_KEYS'.*got 1"),
        ("redis://h", {"NEAR_CACHE": True, "NEAR_CACHE_EXCLUDE": True}, r"'NEAR_CACHE_EXCLUDE'"),
        ("redis://h", {"COMPRESSOR": ["zlib"]}, r"OPTIONS\['COMPRESSOR'\]: expected None, 'zlib'"),
        ("redis://h", {"COMPRESSOR": {}}, r"OPTIONS\['COMPRESSOR'\]: expected None"),
    ],
)  # fmt: skip
def test_every_bad_value_fails_at_start_up(location, options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        build(location, options)


def test_good_values_still_pass():
    options = parse_options(
        [
            "redis://h/0?socket_timeout=1.5&socket_keepalive=true&health_check_interval=0",
            "rediss://t:6380/3?ssl_cert_reqs=none&ssl_check_hostname=false&name=tls&weight=1000",
            "redis://[::1]:6379/2",
            "sentinel://[::1]:26379,s2/svc/4?socket_timeout=0.2&client_name=web",
        ],
        {"VNODES": 40, "CONNECTION_OPTIONS": {"socket_connect_timeout": None}},
    )
    one, tls, six, sentinel = options.shards
    assert one.connection_kwargs["socket_keepalive"] is True and one.connection_kwargs["db"] == 0
    assert tls.connection_kwargs["ssl_check_hostname"] is False and tls.weight == 1000
    assert six.name == "::1:6379" and six.connection_kwargs["db"] == 2  # names as before
    assert sentinel.sentinels == (("::1", 26379), ("s2", 26379))
    assert sentinel.connection_kwargs["db"] == 4
    assert sentinel.connection_kwargs["client_name"] == "web"  # was silently dropped
    assert sentinel.sentinel_kwargs["socket_timeout"] == 0.2
    assert parse_options("redis://h?weight=1000", {"VNODES": 200}).vnodes == 200  # 200,000


def test_the_ring_enforces_the_bounds_too():
    from hacache.ring import MAX_RING_POINTS, HashRing

    with pytest.raises(ValueError, match="from 1 to 1000"):
        HashRing({"a": 1001})
    with pytest.raises(ValueError, match="ring points"):
        HashRing({f"s{i}": 1000 for i in range(2)})
    assert len(HashRing({"a": 1000}, vnodes=200)._points) == MAX_RING_POINTS


def test_wait_timeout_is_only_checked_when_writes_wait():
    assert parse_options("redis://h?socket_timeout=0.05", None).wait_timeout == 0.1
    assert parse_options("redis://h", {"WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 0.4}).wait_replicas


def test_a_per_call_wait_must_end_before_the_socket_times_out():
    from hacache.writes import wait_for_replicas

    cache = build("redis://127.0.0.1:1")  # never reached: refused before anything is sent
    with wait_for_replicas(1, 0.5), pytest.raises(ValueError, match="SOCKET_TIMEOUT"):
        cache.set("k", 1)


def test_password_never_appears_in_errors():
    with pytest.raises(ImproperlyConfigured) as info:
        build("redis://user:s3cret@h:6379?bogus=1")
    assert "s3cret" not in str(info.value)
    assert "user:***@h:6379" in str(info.value)


@pytest.mark.parametrize(
    ("word", "meant"),
    [("off", False), ("no", False), ("0", False), ("on", True), ("yes", True), ("TRUE", True)],
)
def test_url_booleans_mean_what_they_say(word, meant):
    """redis-py alone reads "off" as true: the URL's word is parsed here."""
    (spec,) = parse_options(f"redis://h?socket_keepalive={word}", {}).shards
    assert spec.connection_kwargs["socket_keepalive"] is meant
    (tls,) = parse_options(f"rediss://h?ssl_check_hostname={word}", {}).shards
    assert tls.connection_kwargs["ssl_check_hostname"] is meant


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
