"""``OPTIONS`` (with ``LOCATION``, see ``shard_urls``) parsed and validated into frozen objects.

``SCHEMA`` is the one list of what ``OPTIONS`` may hold; each value is parsed on its own by its
parser (see ``parsing``), and the rules between values are checked here. Anything wrong raises
``ImproperlyConfigured`` naming the setting and what was expected, so a typo fails at start-up
instead of being silently ignored. The user's settings are never mutated.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from hacache import codec, parsing
from hacache.locations import NO_SETINFO, ShardSpec, split_location
from hacache.locations import fail as _fail
from hacache.ring import DEFAULT_VNODES, KETAMA_KEY_HASHES, MAX_RING_POINTS, MAX_VNODES
from hacache.serializers import Serializer
from hacache.shard_urls import parse_shard

# Connection arguments we decide, so a user's CONNECTION_OPTIONS may not override them.
_RESERVED_CONNECTION_KWARGS = frozenset(
    {"host", "port", "path", "db", "username", "password", "connection_class", "retry"}
)


@dataclass(frozen=True)
class Options:
    shards: tuple[ShardSpec, ...]
    serializer: Serializer
    values: codec.ValueOptions  # signing, compression, size limit: see ``codec``
    placement: str
    vnodes: int
    ketama_hash: str
    hash_tags: bool
    socket_connect_timeout: float
    socket_timeout: float
    max_connections: int | None
    pool_timeout: float
    near_cache: NearCacheOptions | None
    publish_invalidations: bool
    invalidation_channel: str
    fail_open: bool
    read_from_replicas: bool
    failover_timeout: float
    breaker_threshold: int
    breaker_cooldown: float
    eject_seconds: float | None
    wait_replicas: int
    wait_timeout: float
    hedge_delay: float
    dropped_writes_max: int
    metrics: bool
    stampede: Any  # hacache.stampede.StampedeOptions; None: get_or_set takes Django's steps
    # Turns a Redis key back into the caller's key (keys(), iter_keys()): None is the inverse
    # of Django's default KEY_FUNCTION, "prefix:version:key".
    reverse_key_function: Callable[[str], str] | None
    # PREVIOUS_LOCATION's shards (migration mode, see ``resharding``), or None.
    previous_shards: tuple[ShardSpec, ...] | None = None


@dataclass(frozen=True)
class NearCacheOptions:
    max_entries: int
    max_bytes: int
    ttl: float
    # Which Redis keys (with prefix and version) may be kept near: None means every key.
    covers: Callable[[str], bool] | None
    # NEAR_CACHE_TRACKING: Redis key prefixes whose changes by anyone evict near entries (CLIENT
    # TRACKING ... BCAST); () means every key; None: off. See ``invalidation``.
    tracking: tuple[str, ...] | None = None


# name -> (parser, default). The single list of what OPTIONS may hold.
SCHEMA: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    "SERIALIZER": (parsing.dotted_path, "hacache.serializers.PickleSerializer"),
    "SERIALIZER_OPTIONS": (parsing.str_dict, {}),
    "SIGN_VALUES": (parsing.boolean, False),
    "SIGNING_KEY": (codec.parse_secret, None),  # None: derived from SECRET_KEY
    "SIGNING_FALLBACK_KEYS": (codec.parse_secrets, ()),  # or SECRET_KEY_FALLBACKS
    "UNREADABLE_VALUES": (parsing.choice("miss", "raise"), "miss"),
    "COMPRESSOR": (codec.parse_compressor, None),
    "COMPRESS_MIN_BYTES": (parsing.count, 1024),
    "MAX_VALUE_BYTES": (parsing.positive_int, codec.DEFAULT_MAX_VALUE_BYTES),
    "PLACEMENT": (parsing.choice("consistent", "ketama"), "consistent"),
    "VNODES": (parsing.positive_int, DEFAULT_VNODES),
    "KETAMA_HASH": (parsing.choice(*KETAMA_KEY_HASHES), "md5"),
    "HASH_TAGS": (parsing.boolean, False),
    "SOCKET_CONNECT_TIMEOUT": (parsing.positive_seconds, 0.5),
    "SOCKET_TIMEOUT": (parsing.positive_seconds, 0.5),
    "MAX_CONNECTIONS": (parsing.optional_positive_int, None),
    "POOL_TIMEOUT": (parsing.positive_seconds, 0.5),
    "CONNECTION_OPTIONS": (parsing.str_dict, {}),
    "NEAR_CACHE": (parsing.boolean, False),
    "NEAR_CACHE_MAX_ENTRIES": (parsing.positive_int, 10_000),
    "NEAR_CACHE_MAX_BYTES": (parsing.positive_int, 64 * 1024 * 1024),
    "NEAR_CACHE_TTL": (parsing.positive_seconds, 60.0),
    "NEAR_CACHE_KEYS": (parsing.globs, None),
    "NEAR_CACHE_EXCLUDE": (parsing.globs, None),
    "NEAR_CACHE_TRACKING": (parsing.tracking, False),
    "PUBLISH_INVALIDATIONS": (parsing.optional_boolean, None),
    "INVALIDATION_CHANNEL": (parsing.non_empty_string, "hacache:invalidate"),
    "FAIL_OPEN": (parsing.boolean, False),
    "READ_FROM_REPLICAS": (parsing.boolean, False),
    "FAILOVER_TIMEOUT": (parsing.seconds_or_zero, 0.0),
    "BREAKER_THRESHOLD": (parsing.positive_int, 3),
    "BREAKER_COOLDOWN": (parsing.positive_seconds, 1.0),
    "EJECT_DEAD_SHARDS": (parsing.boolean, False),
    "EJECT_SECONDS": (parsing.positive_seconds, 30.0),
    "WAIT_REPLICAS": (parsing.count, 0),
    "WAIT_TIMEOUT": (parsing.positive_seconds, 0.1),
    "HEDGE_DELAY": (parsing.seconds_or_zero, 0.05),
    "DROPPED_WRITES_MAX": (parsing.positive_int, 100_000),
    "METRICS": (parsing.boolean, False),
    "STAMPEDE": (parsing.stampede, True),
    "REVERSE_KEY_FUNCTION": (parsing.dotted_path, None),
    "PREVIOUS_LOCATION": (lambda name, value: value, None),  # parsed with LOCATION, below
}


def _parse_values(options: Any) -> dict[str, Any]:
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise _fail("OPTIONS", f"expected a dict, got {options!r}")
    values = {}
    for key in options:
        if key not in SCHEMA:
            close = difflib.get_close_matches(str(key).upper(), SCHEMA, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise _fail(
                f"OPTIONS[{key!r}]", f"unknown option.{hint} Valid options: {', '.join(SCHEMA)}"
            )
    for key, (parse, default) in SCHEMA.items():
        values[key] = parse(key, options.get(key, default))
    return values


def _build_serializer(factory: Any, kwargs: Mapping[str, Any]) -> Serializer:
    try:
        serializer = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise _fail("OPTIONS['SERIALIZER_OPTIONS']", f"rejected by {factory!r}: {exc}") from exc
    if not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise _fail("OPTIONS['SERIALIZER']", f"{factory!r} has no dumps()/loads()")
    return serializer


def _key_filter(include: tuple[str, ...] | None, exclude: tuple[str, ...] | None):
    if include is None and not exclude:
        return None
    included = re.compile("|".join(fnmatch.translate(p) for p in include or ("*",)))
    if not exclude:
        return lambda key: included.match(key) is not None
    excluded = re.compile("|".join(fnmatch.translate(p) for p in exclude))
    return lambda key: included.match(key) is not None and excluded.match(key) is None


def _near_cache(values: dict[str, Any], given: Mapping[str, Any]) -> NearCacheOptions | None:
    if not values["NEAR_CACHE"]:
        stray = [k for k in given if k.startswith("NEAR_CACHE_")]
        if stray:
            raise _fail(f"OPTIONS['{stray[0]}']", "has no effect without 'NEAR_CACHE': True")
        return None
    return NearCacheOptions(
        max_entries=values["NEAR_CACHE_MAX_ENTRIES"],
        max_bytes=values["NEAR_CACHE_MAX_BYTES"],
        ttl=values["NEAR_CACHE_TTL"],
        covers=_key_filter(values["NEAR_CACHE_KEYS"], values["NEAR_CACHE_EXCLUDE"]),
        tracking=values["NEAR_CACHE_TRACKING"],
    )


def _check_wait_timeout(replicas: int, wait: float, shards: tuple[ShardSpec, ...]) -> None:
    """A WAIT that outlasts the socket's read timeout would end as a TimeoutError (counted
    against the server's breaker) instead of ``NotReplicated``: refuse the pair."""
    if not replicas:
        return
    for spec in shards:
        socket = spec.connection_kwargs.get("socket_timeout")
        if socket is not None and wait >= socket:
            raise _fail(
                "OPTIONS['WAIT_TIMEOUT']",
                f"{wait}s is not below shard {spec.name!r}'s socket timeout ({socket}s): "
                "a WAIT for a missing replica would time out the connection instead of "
                "raising NotReplicated; lower WAIT_TIMEOUT or raise SOCKET_TIMEOUT",
            )


def _shards(location: Any, common: Mapping[str, Any], setting: str) -> tuple[ShardSpec, ...]:
    try:
        shards = tuple(parse_shard(url, common) for url in split_location(location))
    except ImproperlyConfigured as exc:  # name the setting the URL came from
        exc.args = (str(exc).replace("LOCATION", setting, 1),)  # keeps its check id
        raise exc from None
    names = [s.name for s in shards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(
            setting,
            f"shard name(s) {', '.join(duplicates)} given twice; give each "
            "server a distinct name with '?name=...' in its URL",
        )
    return shards


def _check_ring_size(
    placement: str, vnodes: int, shards: tuple[ShardSpec, ...], setting: str
) -> None:
    """Every point of the ring is hashed at start-up, once per process: keep it small."""
    if vnodes > MAX_VNODES:
        raise _fail(
            "OPTIONS['VNODES']",
            f"expected at most {MAX_VNODES:,}, got {vnodes:,} "
            f"(the default, {DEFAULT_VNODES}, balances keys within a few percent)",
            "E005",
        )
    points = vnodes * sum(spec.weight for spec in shards)
    if placement == "consistent" and points > MAX_RING_POINTS:
        raise _fail(
            f"{setting} weights x OPTIONS['VNODES']",
            f"{points:,} ring points, at most {MAX_RING_POINTS:,} (building that many costs "
            "about 1.5 s and 27 MB per process): lower the '?weight=' values (only their "
            "ratios matter) or VNODES",
            "E005",
        )


def _check_previous(shards: tuple[ShardSpec, ...], previous: tuple[ShardSpec, ...]) -> None:
    """A shard is its name: one in both lists must be the same server, and the lists must
    differ (else nothing moves)."""
    now = {s.name: s for s in shards}
    for spec in previous:
        same = now.get(spec.name)
        if same is not None and same.address != spec.address:
            raise _fail(
                "OPTIONS['PREVIOUS_LOCATION']",
                f"shard {spec.name!r} is {spec.address} there but {same.address} in LOCATION; "
                "a shard keeps its name only while it is the same server",
            )
    if {(s.name, s.weight) for s in shards} == {(s.name, s.weight) for s in previous}:
        raise _fail("OPTIONS['PREVIOUS_LOCATION']", "the same shards as LOCATION: nothing moves")


def parse_options(location: Any, options: Any) -> Options:
    values = _parse_values(options)
    extra = values["CONNECTION_OPTIONS"]
    reserved = sorted(_RESERVED_CONNECTION_KWARGS.intersection(extra))
    if reserved:
        raise _fail(
            "OPTIONS['CONNECTION_OPTIONS']",
            f"{', '.join(reserved)} cannot be set here; put them in the LOCATION URLs",
        )
    if values["PLACEMENT"] == "ketama" and options and "VNODES" in options:
        raise _fail(
            "OPTIONS['VNODES']",
            "ketama placement uses a fixed 160 points per shard; "
            "drop VNODES or use PLACEMENT 'consistent'",
        )
    common = {
        # RESP2 needs no HELLO round trip on connect; hacache parses every reply itself. No
        # CLIENT SETINFO either: a connect then waits for nothing (without AUTH or SELECT), so
        # a hung server costs a hedged read its hedge delay, not a socket timeout.
        "protocol": 2,
        **NO_SETINFO,
        "socket_connect_timeout": values["SOCKET_CONNECT_TIMEOUT"],
        "socket_timeout": values["SOCKET_TIMEOUT"],
        **extra,
    }
    shards = _shards(location, common, "LOCATION")
    _check_ring_size(values["PLACEMENT"], values["VNODES"], shards, "LOCATION")
    previous = None
    if values["PREVIOUS_LOCATION"] is not None:
        previous = _shards(values["PREVIOUS_LOCATION"], common, "OPTIONS['PREVIOUS_LOCATION']")
        _check_ring_size(
            values["PLACEMENT"], values["VNODES"], previous, "OPTIONS['PREVIOUS_LOCATION']"
        )
        _check_previous(shards, previous)
    _check_wait_timeout(values["WAIT_REPLICAS"], values["WAIT_TIMEOUT"], shards)
    serializer = _build_serializer(values["SERIALIZER"], values["SERIALIZER_OPTIONS"])
    return Options(
        shards=shards,
        serializer=serializer,
        values=codec.value_options(values, serializer),
        placement=values["PLACEMENT"],
        vnodes=values["VNODES"],
        ketama_hash=values["KETAMA_HASH"],
        hash_tags=values["HASH_TAGS"],
        socket_connect_timeout=values["SOCKET_CONNECT_TIMEOUT"],
        socket_timeout=values["SOCKET_TIMEOUT"],
        max_connections=values["MAX_CONNECTIONS"],
        pool_timeout=values["POOL_TIMEOUT"],
        near_cache=_near_cache(values, options or {}),
        publish_invalidations=(
            values["NEAR_CACHE"]
            if values["PUBLISH_INVALIDATIONS"] is None
            else values["PUBLISH_INVALIDATIONS"]
        ),
        invalidation_channel=values["INVALIDATION_CHANNEL"],
        fail_open=values["FAIL_OPEN"],
        read_from_replicas=values["READ_FROM_REPLICAS"],
        failover_timeout=values["FAILOVER_TIMEOUT"],
        breaker_threshold=values["BREAKER_THRESHOLD"],
        breaker_cooldown=values["BREAKER_COOLDOWN"],
        eject_seconds=values["EJECT_SECONDS"] if values["EJECT_DEAD_SHARDS"] else None,
        wait_replicas=values["WAIT_REPLICAS"],
        wait_timeout=values["WAIT_TIMEOUT"],
        hedge_delay=values["HEDGE_DELAY"],
        dropped_writes_max=values["DROPPED_WRITES_MAX"],
        metrics=values["METRICS"],
        stampede=values["STAMPEDE"],
        reverse_key_function=parsing.function(
            "REVERSE_KEY_FUNCTION", values["REVERSE_KEY_FUNCTION"]
        ),
        previous_shards=previous,
    )
