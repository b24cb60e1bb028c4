"""The ``ShardSpec`` a ``LOCATION`` URL becomes, and the checks every URL passes (any scheme).

``split_location`` cuts ``LOCATION`` into URLs; ``shard_urls`` parses each scheme's URL with
these checks. Only redis-py's own URL parameters and hacache's ``name``/``weight`` are accepted;
anything else raises ``ImproperlyConfigured`` naming the URL, with its password masked.
Connection arguments are checked by building (not connecting) a connection, so a bad one fails
at start-up. ``fail`` makes the error for any bad setting (``OPTIONS`` too).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis.asyncio.connection as async_connection
import redis.connection as sync_connection
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError

from hacache.ring import MAX_WEIGHT

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
# What each of those takes, for the error: checked here, not at the first connection.
_EXPECTED = {
    "db": "an integer >= 0",
    "socket_timeout": "a finite number of seconds > 0",
    "socket_connect_timeout": "a finite number of seconds > 0",
    "socket_read_size": "an integer >= 1",
    "socket_keepalive": "true or false",
    "health_check_interval": "an integer number of seconds >= 0",
    "protocol": "2 or 3",
    "ssl_check_hostname": "true or false",
    "ssl_min_version": "an integer (an ssl.TLSVersion value)",
}
# The words a URL boolean may be (redis-py reads any other one, "maybe" too, as true).
_TRUE = frozenset({"1", "t", "y", "yes", "true", "on"})
_BOOLEANS = _TRUE | {"0", "f", "n", "no", "false", "off"}
_VALID: dict[str, Any] = {
    "db": lambda v: v >= 0,
    "socket_timeout": lambda v: math.isfinite(v) and v > 0,
    "socket_connect_timeout": lambda v: math.isfinite(v) and v > 0,
    "socket_read_size": lambda v: v >= 1,
    "health_check_interval": lambda v: v >= 0,
    "protocol": lambda v: v in (2, 3),
}


def _ssl_params(cls: type, async_cls: type) -> frozenset[str]:
    """The ``ssl_*`` arguments both redis-py SSL connection classes take (a shard serves sync
    and async calls, so one only the sync class knows would fail at the first async call)."""
    names = [set(inspect.signature(c.__init__).parameters) for c in (cls, async_cls)]
    return frozenset(n for n in names[0] & names[1] if n.startswith("ssl_"))


_SSL_URL_PARAMS = _ssl_params(sync_connection.SSLConnection, async_connection.SSLConnection)
# Query parameters whose values are never shown (the userinfo's password is masked too).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|credential", re.IGNORECASE)

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


def async_class(connection_class: type) -> type:
    """The asyncio twin of a redis-py connection class (one it does not know serves both)."""
    return _ASYNC_CLASS.get(connection_class, connection_class)


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


def fail(setting: str, problem: str, check: str | None = None) -> ImproperlyConfigured:
    """The error for a bad setting. ``check``: the system check id it belongs to (see
    ``hacache.checks``), read back with ``check_id``; None: E001 for OPTIONS, E003 for a URL."""
    error = ImproperlyConfigured(f"hacache: {setting}: {problem}")
    error.hacache_check = check  # type: ignore[attr-defined]
    return error


def check_id(error: ImproperlyConfigured, default: str) -> str:
    return getattr(error, "hacache_check", None) or default


def split_location(location: Any) -> list[str]:
    if isinstance(location, str):
        # Split where the next URL starts: a sentinel:// URL lists its hosts with commas.
        urls = [u.strip() for u in re.split(r"[;,]\s*(?=[a-z]+://)", location)]
    elif isinstance(location, (list, tuple)) and all(isinstance(u, str) for u in location):
        urls = [u.strip() for u in location]
    else:
        # Not its repr: a list with one bad item may hold URLs with passwords.
        got = type(location).__name__
        if isinstance(location, (list, tuple)):
            got += " holding " + ", ".join(sorted({type(u).__name__ for u in location}))
        raise fail(
            "LOCATION", f"expected a list of Redis URLs or a comma-separated string, got a {got}"
        )
    urls = [u for u in urls if u]
    if not urls:
        raise fail("LOCATION", "no Redis server given; expected e.g. 'redis://127.0.0.1:6379/0'")
    return urls


def _redacted_query(query: str) -> str:
    items = re.split(r"([&;])", query)
    for i in range(0, len(items), 2):
        key, eq, _ = items[i].partition("=")
        if eq and _SECRET_PARAM.search(unquote(key)):
            items[i] = f"{key}=***"
    return "".join(items)


def redacted(url: str) -> str:
    """``url`` as errors and logs may show it: the userinfo's password and the value of every
    password-, secret- or token-like query parameter are ``***``. Works on malformed URLs
    too (no parsing that could fail), which are the ones errors show."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    head, q, query = rest.partition("?")
    if not head.startswith("/"):  # unix:///path has no userinfo
        userinfo, at, hosts = head.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")  # no colon: taken as a password
            head = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    return f"{scheme}{sep}{head}{q}{_redacted_query(query) if q else ''}"


def _scrubbed(text: str, kwargs: Mapping[str, Any]) -> str:
    """An exception's text, with any secret argument's value masked (should it echo one)."""
    for key, value in kwargs.items():
        if isinstance(value, str) and value and _SECRET_PARAM.search(key):
            text = text.replace(value, "***")
    return text


def shard_params(query: dict[str, str]) -> dict[str, str]:
    """Pop hacache's own parameters (``name``, ``weight``) from a URL's query."""
    return {k: query.pop(k) for k in list(query) if k in _SHARD_URL_PARAMS}


def url_boolean(name: str, text: str, shown: str) -> bool:
    """A URL parameter's true or false; any other word is refused."""
    if text.lower() not in _BOOLEANS:
        raise fail("LOCATION", f"{shown!r}: URL parameter {name}: expected true or false, "
                   f"got {text!r}")  # fmt: skip
    return text.lower() in _TRUE


def query_params(
    query: Mapping[str, str], shown: str, tls: str, also: tuple[str, ...] = ()
) -> dict[str, Any]:
    """URL query values parsed the way redis-py parses them, each checked against what it
    accepts (redis-py would take ``db=-1``, ``socket_timeout=nan`` or ``protocol=9`` and fail
    at the first connection, or read ``socket_keepalive=maybe`` as true). A name it does not
    know is refused; the error lists those it does, the scheme's own (``also``) among them, and
    the ``ssl_*`` ones with where they apply (``tls``)."""
    unknown = [k for k in query if k not in _REDIS_URL_PARAMS and k not in _SSL_URL_PARAMS]
    if unknown:
        allowed = ", ".join([*sorted(_REDIS_URL_PARAMS | _SHARD_URL_PARAMS), *also])
        raise fail(
            "LOCATION",
            f"{shown!r}: unknown URL parameter(s) {', '.join(unknown)}; allowed: {allowed}; "
            f"with {tls}: {', '.join(sorted(_SSL_URL_PARAMS))}",
        )
    params: dict[str, Any] = {}
    for name, text in query.items():
        parse = sync_connection.URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parse is None:
            params[name] = text
            continue
        expected = _EXPECTED.get(name, "a valid value")
        if expected == "true or false":  # ours: redis-py reads "off" as true
            params[name] = url_boolean(name, text, shown)
            continue
        try:
            value = parse(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not _VALID.get(name, lambda v: True)(value):
            check = "E004" if name in ("socket_timeout", "socket_connect_timeout") else None
            raise fail(
                "LOCATION", f"{shown!r}: URL parameter {name}: expected {expected}, got {text!r}",
                check,
            )  # fmt: skip
        params[name] = value
    return params


def _check_timeouts(kwargs: Mapping[str, Any], shown: str) -> None:
    """Socket timeouts that reach here came from OPTIONS['CONNECTION_OPTIONS'] (the URL's and
    SOCKET_TIMEOUT's are checked before): None (no timeout) or a finite number > 0."""
    for key in ("socket_timeout", "socket_connect_timeout"):
        value = kwargs.get(key)
        if value is None:
            continue
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if not (number and math.isfinite(value) and value > 0):
            raise fail(
                f"OPTIONS['CONNECTION_OPTIONS'][{key!r}]",
                f"expected None or a finite number of seconds > 0, got {value!r} (for {shown!r})",
                "E004",
            )


def check_connection_kwargs(
    connection_class: type, kwargs: Mapping[str, Any], shown: str, setting: str
) -> None:
    # Building one of each (neither connects) is the surest check of the arguments.
    try:
        connection_class(**kwargs)
        async_class(connection_class)(**kwargs)
    except (TypeError, ValueError, RedisError) as exc:
        problem = _scrubbed(str(exc), kwargs)
        if setting == "LOCATION":
            raise fail(setting, f"{shown!r}: {problem}") from None
        raise fail(setting, f"rejected for {shown!r}: {problem}") from None


def check_arguments(
    connection_class: type, own: Mapping[str, Any], merged: Mapping[str, Any], shown: str
) -> None:
    """The URL's own arguments first, so a bad one is blamed on LOCATION, not on
    CONNECTION_OPTIONS; then everything together."""
    check_connection_kwargs(connection_class, {**_PLAIN, **own}, shown, "LOCATION")
    _check_timeouts(merged, shown)
    check_connection_kwargs(connection_class, merged, shown, "OPTIONS['CONNECTION_OPTIONS']")


_PLAIN = {"protocol": 2, **NO_SETINFO}


def shard_weight(ours: Mapping[str, str], shown: str) -> int:
    weight = ours.get("weight", "1")
    if not re.fullmatch(r"[0-9]{1,9}", weight) or not 1 <= int(weight) <= MAX_WEIGHT:
        raise fail(
            "LOCATION",
            f"{shown!r}: weight must be an integer from 1 to {MAX_WEIGHT}, got {weight!r} "
            "(only the ratios of weights matter)",
            "E005",
        )
    return int(weight)


def db_number(text: str, shown: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise fail("LOCATION", f"{shown!r}: db must be an integer >= 0, got {text!r}")
    return int(text)
