"""Each ``LOCATION`` URL into a ``ShardSpec``: redis://, rediss://, unix:// or sentinel://.

Every URL is checked with ``locations``' checks before it becomes a spec: only known query
parameters, each value as redis-py would parse it, connection arguments that build a
connection. An error shows the URL only with its secrets masked. A sentinel:// URL's
credentials are the Redis servers'; the Sentinels' own are ``sentinel_*`` query parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.connection as sync_connection

from hacache.locations import (
    NO_SETINFO,
    ShardSpec,
    async_class,
    check_arguments,
    check_connection_kwargs,
    db_number,
    fail,
    query_params,
    redacted,
    shard_params,
    shard_weight,
    url_boolean,
)

# A sentinel:// URL's own query parameters, besides redis-py's and hacache's.
_SENTINEL_AUTH = ("sentinel_username", "sentinel_password")
_SENTINEL_URL_PARAMS = (*_SENTINEL_AUTH, "ssl", "sentinel_ssl")


def parse_shard(url: str, common: Mapping[str, Any]) -> ShardSpec:
    """One ``LOCATION`` entry: a redis://, rediss://, unix:// or sentinel:// URL."""
    shown = redacted(url)
    if url.startswith("sentinel://"):
        return parse_sentinel_shard(url, common)
    parts = _split_url(url, shown)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise fail(
            "LOCATION", f"{shown!r}: expected a redis://, rediss://, unix:// or sentinel:// URL"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    ours = shard_params(query)
    tls = parts.scheme == "rediss"
    ssl = sorted(k for k in query if k.startswith("ssl_"))
    if ssl and not tls:
        raise fail("LOCATION", f"{shown!r}: {', '.join(ssl)} need(s) a rediss:// (TLS) URL")
    own = query_params(query, shown, tls="rediss://")
    if parts.scheme != "unix" and parts.path.strip("/"):
        own.setdefault("db", db_number(unquote(parts.path).strip("/"), shown))  # ?db= wins
    try:
        base = url.split("?", 1)[0]  # urlunsplit would drop the '//' of unix:///path
        kwargs = {**sync_connection.parse_url(base), **own}
    except ValueError as exc:
        raise fail("LOCATION", f"{shown!r}: {exc}") from None
    connection_class = kwargs.pop("connection_class", sync_connection.Connection)
    if "path" in kwargs:
        address = kwargs["path"]
    else:
        kwargs.setdefault("port", 6379)
        if not kwargs.get("host"):
            raise fail("LOCATION", f"{shown!r}: no host")
        address = f"{kwargs['host']}:{kwargs['port']}"
    merged = {**common, **kwargs}
    check_arguments(connection_class, kwargs, merged, shown)
    return ShardSpec(
        name=ours.get("name") or address,
        weight=shard_weight(ours, shown),
        address=address,
        connection_class=connection_class,
        async_connection_class=async_class(connection_class),
        connection_kwargs=MappingProxyType(merged),
    )


def _split_url(url: str, shown: str) -> Any:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises for a port that is not a number in range
    except ValueError as exc:
        ipv6 = "IPv6" in str(exc)
        hint = "; write an IPv6 address in brackets: redis://[::1]:6379/0" if ipv6 else ""
        raise fail("LOCATION", f"{shown!r}: malformed URL ({exc}){hint}") from None
    return parts


def parse_sentinel_shard(url: str, common: Mapping[str, Any]) -> ShardSpec:
    """``sentinel://[user:password@]host:port[,host:port...]/service[/db]?name=..&weight=..``.

    The credentials are the Redis servers'; Sentinel's own go in ``sentinel_username`` and
    ``sentinel_password`` query parameters. A sentinel's IPv6 address is written ``[addr]:port``.
    TLS: ``ssl=true`` for the servers, ``sentinel_ssl`` for the Sentinels (default: as ``ssl``);
    the ``ssl_*`` parameters apply to both.
    """
    shown = redacted(url)
    rest = url[len("sentinel://") :]
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = [_sentinel_address(item, shown) for item in hosts.split(",")]
    service, _, db = path.partition("/")
    if not service:
        raise fail(
            "LOCATION",
            f"{shown!r}: no Sentinel service name; expected "
            "sentinel://host:26379,host:26380/service",
        )
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    ours = shard_params(query)
    sentinel_auth = {
        k[len("sentinel_") :]: query.pop(k) for k in list(query) if k in _SENTINEL_AUTH
    }
    tls, sentinel_tls = _sentinel_tls(query, shown)
    own = query_params(query, shown, tls="TLS", also=_SENTINEL_URL_PARAMS)
    ssl_args = {k: own.pop(k) for k in list(own) if k.startswith("ssl_")}
    if ssl_args and not (tls or sentinel_tls):
        raise fail(
            "LOCATION",
            f"{shown!r}: {', '.join(sorted(ssl_args))} need(s) ssl=true (TLS to the servers and "
            "the Sentinels) or sentinel_ssl=true in a sentinel:// URL",
        )
    if tls:
        own.update(ssl_args)
    if db:
        own["db"] = db_number(db, shown)
    if userinfo:
        username, _, password = userinfo.partition(":")
        own["username"] = unquote(username) or None
        own["password"] = unquote(password) or None
    kwargs: dict[str, Any] = {**common, **own}
    connection_class = sync_connection.SSLConnection if tls else sync_connection.Connection
    check_arguments(connection_class, own, kwargs, shown)
    bounded = [t for t in (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) if t]
    timeout = min(bounded) if bounded else None
    to_sentinels = {
        "protocol": 2,
        **NO_SETINFO,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        **sentinel_auth,
    }
    if sentinel_tls:  # "ssl": what redis.Redis takes; hacache.sentinel picks SSLConnection by it
        check_connection_kwargs(
            sync_connection.SSLConnection, {**to_sentinels, **ssl_args}, shown, "LOCATION"
        )
        to_sentinels.update(ssl=True, **ssl_args)
    return ShardSpec(
        name=ours.get("name") or service,
        weight=shard_weight(ours, shown),
        address=f"sentinel:{service}",
        connection_class=connection_class,
        async_connection_class=async_class(connection_class),
        connection_kwargs=MappingProxyType(kwargs),
        sentinels=tuple(sentinels),
        service=service,
        sentinel_kwargs=MappingProxyType(to_sentinels),
    )


def _sentinel_address(item: str, shown: str) -> tuple[str, int]:
    """``host[:port]`` or ``[IPv6][:port]``; the port defaults to 26379."""
    item = item.strip()
    if item.startswith("["):
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise fail(
                "LOCATION",
                f"{shown!r}: malformed IPv6 sentinel address {item!r}; expected [addr]:port",
            )
        port = port[1:]
    else:
        host, _, port = item.partition(":")
    if not host or (port and not re.fullmatch(r"[0-9]{1,5}", port)) or int(port or 0) > 65535:
        raise fail("LOCATION", f"{shown!r}: bad sentinel address {item!r}; expected host:port")
    return host, int(port or 26379)


def _sentinel_tls(query: dict[str, str], shown: str) -> tuple[bool, bool]:
    """Pop ``ssl`` and ``sentinel_ssl`` from a sentinel:// URL's query: whether to use TLS to
    the servers, and to the Sentinels (by default, as to the servers)."""
    found = {}
    for key in ("ssl", "sentinel_ssl"):
        text = query.pop(key, None)
        if text is None:
            continue
        found[key] = url_boolean(key, text, shown)
    tls = bool(found.get("ssl", False))
    return tls, bool(found.get("sentinel_ssl", tls))
