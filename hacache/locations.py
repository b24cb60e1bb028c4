"""``LOCATION`` parsed: each Redis, TLS, Unix-socket or Sentinel URL into a frozen ``ShardSpec``.

Only redis-py's own URL parameters and hacache's ``name``/``weight`` are accepted; anything else
raises ``ImproperlyConfigured`` naming the URL, with its password masked. Connection arguments
are checked by building (not connecting) a connection, so a bad one fails at start-up.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio.connection as async_connection
import redis.connection as sync_connection
from django.core.exceptions import ImproperlyConfigured

# URL query parameters that redis-py turns into connection arguments.
_REDIS_URL_PARAMS = frozenset(
    {
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_read_size",
        "socket_keepalive",
        "health_check_interval",
        "protocol",
        "client_name",
    }
)
# Our own URL query parameters: a shard's identity on the ring and its share of keys.
_SHARD_URL_PARAMS = frozenset({"name", "weight"})

# How this redis-py says "send no CLIENT SETINFO on connect" (driver_info since 7.1).
NO_SETINFO: dict[str, None] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(sync_connection.AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)

_ASYNC_CLASS = {
    sync_connection.Connection: async_connection.Connection,
    sync_connection.SSLConnection: async_connection.SSLConnection,
    sync_connection.UnixDomainSocketConnection: async_connection.UnixDomainSocketConnection,
}


@dataclass(frozen=True)
class ShardSpec:
    """One shard: its stable name on the ring, weight, and how to reach its server(s).

    A plain shard is one server at ``connection_kwargs``. A Sentinel shard names its
    ``sentinels`` and ``service``; its servers' addresses come from Sentinel, and
    ``connection_kwargs`` then holds everything but host and port.
    """

    name: str
    weight: int
    address: str  # host:port, socket path or sentinel:service; never holds a password
    connection_class: type
    async_connection_class: type
    connection_kwargs: Mapping[str, Any] = field(repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict, repr=False)


def fail(setting: str, problem: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"hacache: {setting}: {problem}")


def split_location(location: Any) -> list[str]:
    if isinstance(location, str):
        # Split where the next URL starts: a sentinel:// URL lists its hosts with commas.
        urls = [u.strip() for u in re.split(r"[;,]\s*(?=[a-z]+://)", location)]
    elif isinstance(location, (list, tuple)) and all(isinstance(u, str) for u in location):
        urls = [u.strip() for u in location]
    else:
        raise fail(
            "LOCATION",
            f"expected a list of Redis URLs or a comma-separated string, got {location!r}",
        )
    urls = [u for u in urls if u]
    if not urls:
        raise fail("LOCATION", "no Redis server given; expected e.g. 'redis://127.0.0.1:6379/0'")
    return urls


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _check_connection_kwargs(connection_class: type, kwargs: Mapping[str, Any], shown: str) -> None:
    try:  # Building one (it does not connect) is the surest check of the arguments.
        connection_class(**kwargs)
    except (TypeError, ValueError) as exc:
        raise fail("OPTIONS['CONNECTION_OPTIONS']", f"rejected for {shown!r}: {exc}") from exc


def _weight(ours: Mapping[str, str], shown: str) -> int:
    weight = ours.get("weight", "1")
    if not weight.isdigit() or int(weight) < 1:
        raise fail("LOCATION", f"{shown!r}: weight must be a positive integer, got {weight!r}")
    return int(weight)


def parse_sentinel_shard(url: str, common: Mapping[str, Any]) -> ShardSpec:
    """``sentinel://[user:password@]host:port[,host:port...]/service[/db]?name=..&weight=..``.

    The credentials are the Redis servers'; Sentinel's own go in ``sentinel_username`` and
    ``sentinel_password`` query parameters.
    """
    shown = _redacted(url)
    rest = url[len("sentinel://") :]
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().partition(":")
        if not host or (port and not port.isdigit()):
            raise fail("LOCATION", f"{shown!r}: bad sentinel address {item!r}")
        sentinels.append((host, int(port or 26379)))
    service, _, db = path.partition("/")
    if not service:
        raise fail(
            "LOCATION",
            f"{shown!r}: no Sentinel service name; expected "
            "sentinel://host:26379,host:26380/service",
        )
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    ours = {k: query.pop(k) for k in list(query) if k in _SHARD_URL_PARAMS}
    sentinel_auth = {
        k[len("sentinel_") :]: query.pop(k)
        for k in list(query)
        if k in ("sentinel_username", "sentinel_password")
    }
    unknown = [k for k in query if k not in _REDIS_URL_PARAMS]
    if unknown:
        raise fail("LOCATION", f"{shown!r}: unknown URL parameter(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {**common}
    if db or "db" in query:
        value = db or query["db"]
        if not value.isdigit():
            raise fail("LOCATION", f"{shown!r}: db must be a number, got {value!r}")
        kwargs["db"] = int(value)
    if userinfo:
        username, _, password = userinfo.partition(":")
        kwargs["username"] = unquote(username) or None
        kwargs["password"] = unquote(password) or None
    for key in ("socket_timeout", "socket_connect_timeout"):
        if key in query:
            kwargs[key] = float(query[key])
    _check_connection_kwargs(sync_connection.Connection, kwargs, shown)
    timeout = min(kwargs["socket_connect_timeout"], kwargs["socket_timeout"])
    return ShardSpec(
        name=ours.get("name") or service,
        weight=_weight(ours, shown),
        address=f"sentinel:{service}",
        connection_class=sync_connection.Connection,
        async_connection_class=async_connection.Connection,
        connection_kwargs=MappingProxyType(kwargs),
        sentinels=tuple(sentinels),
        service=service,
        sentinel_kwargs=MappingProxyType(
            {
                "protocol": 2,
                **NO_SETINFO,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                **sentinel_auth,
            }
        ),
    )


def parse_shard(url: str, common: Mapping[str, Any]) -> ShardSpec:
    """One ``LOCATION`` entry: a redis://, rediss://, unix:// or sentinel:// URL."""
    shown = _redacted(url)
    parts = urlsplit(url)
    if parts.scheme == "sentinel":
        return parse_sentinel_shard(url, common)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise fail(
            "LOCATION", f"{shown!r}: expected a redis://, rediss://, unix:// or sentinel:// URL"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    ours = {k: query.pop(k) for k in list(query) if k in _SHARD_URL_PARAMS}
    unknown = [k for k in query if k not in _REDIS_URL_PARAMS and not k.startswith("ssl_")]
    if unknown:
        allowed = ", ".join(sorted(_REDIS_URL_PARAMS | _SHARD_URL_PARAMS))
        raise fail(
            "LOCATION",
            f"{shown!r}: unknown URL parameter(s) {', '.join(unknown)}; "
            f"allowed: {allowed} and ssl_*",
        )
    try:
        base = url.split("?", 1)[0]  # urlunsplit would drop the '//' of unix:///path
        kwargs = sync_connection.parse_url(f"{base}?{urlencode(query)}" if query else base)
    except ValueError as exc:
        raise fail("LOCATION", f"{shown!r}: {exc}") from exc
    connection_class = kwargs.pop("connection_class", sync_connection.Connection)
    if "path" in kwargs:
        address = kwargs["path"]
    else:
        kwargs.setdefault("port", 6379)
        if not kwargs.get("host"):
            raise fail("LOCATION", f"{shown!r}: no host")
        address = f"{kwargs['host']}:{kwargs['port']}"
    merged = {**common, **kwargs}
    _check_connection_kwargs(connection_class, merged, shown)
    return ShardSpec(
        name=ours.get("name") or address,
        weight=_weight(ours, shown),
        address=address,
        connection_class=connection_class,
        async_connection_class=_ASYNC_CLASS.get(connection_class, connection_class),
        connection_kwargs=MappingProxyType(merged),
    )
