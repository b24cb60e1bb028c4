"""Django system checks for hacache's ``CACHES`` entries (``manage.py check``, and at start-up).

Every check reads settings only: nothing connects, no router or ring is built. Errors
(``hacache.E00x``) are settings the backend refuses or cannot serve; warnings (``hacache.W00x``)
are settings it accepts that lose data, availability or bounded waits. Each message names the
alias; none shows a password (URLs are masked the way ``locations`` masks them).

``guard_django_cache_checks`` keeps Django's own cache checks (which build every backend, so a
bad hacache entry made them crash with a traceback) from hiding these checks' messages.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from hacache.locations import NO_SETINFO, ShardSpec, check_id, split_location
from hacache.options import Options, parse_options
from hacache.ring import MAX_RING_POINTS, MAX_VNODES, MAX_WEIGHT
from hacache.shard_urls import parse_shard

# OPTIONS that are seconds, each checked here so every bad one is named (options.py stops at the
# first).
TIMEOUT_OPTIONS = (
    "SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT", "POOL_TIMEOUT", "NEAR_CACHE_TTL",
    "FAILOVER_TIMEOUT", "BREAKER_COOLDOWN", "EJECT_SECONDS", "WAIT_TIMEOUT", "HEDGE_DELAY",
)  # fmt: skip
SOCKET_TIMEOUT_KWARGS = ("socket_timeout", "socket_connect_timeout")
# A read or connect allowed to wait longer than this is, for a web cache, no timeout at all.
LONGEST_SENSIBLE_TIMEOUT = 10.0
_PARSE_DEFAULTS = {
    "protocol": 2,
    **NO_SETINFO,
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
}

HINTS = {
    "E001": "Fix the setting named in the message; hacache refuses to start with it.",
    "E002": "Give each server a distinct name with '?name=...' in its URL.",
    "E003": "Use redis://[user:pass@]host:port/db, rediss://, unix:///path or "
    "sentinel://host:port[,host:port]/service[/db], with the URL parameters the message lists.",
    "E004": "Use a finite number of seconds >= 0 (positive for socket timeouts), e.g. 0.5.",
    "E005": f"Use small integers for '?weight=' (1 to {MAX_WEIGHT}: only their ratios matter) "
    f"and VNODES (at most {MAX_VNODES:,}), for at most {MAX_RING_POINTS:,} ring points "
    "(weights x VNODES): every process builds the ring at start-up.",
    "W001": "Set PUBLISH_INVALIDATIONS to True (the default with NEAR_CACHE), or other "
    "processes serve stale values from memory for up to NEAR_CACHE_TTL.",
    "W002": "List every sentinel of the service (usually 3), so discovery and failover "
    "survive one sentinel being down.",
    "W003": "Set FAIL_OPEN to True for a web cache: while Sentinel promotes a replica, "
    "writes then report a miss instead of raising.",
    "W004": f"Set SOCKET_TIMEOUT/SOCKET_CONNECT_TIMEOUT to a bound under "
    f"{LONGEST_SENSIBLE_TIMEOUT:g} s (default 0.5), so a hung server cannot hold a request.",
}


def _error(n: str, alias: str, msg: str) -> checks.Error:
    return checks.Error(f"CACHES[{alias!r}]: {msg}", hint=HINTS[n], id=f"hacache.{n}")


def _warning(n: str, alias: str, msg: str) -> checks.Warning:
    return checks.Warning(f"CACHES[{alias!r}]: {msg}", hint=HINTS[n], id=f"hacache.{n}")


def hacache_aliases() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The ``CACHES`` entries whose backend is hacache's (or a subclass)."""
    from hacache.backend import HACache

    for alias, params in settings.CACHES.items():
        try:
            backend = import_string(params.get("BACKEND", ""))
        except ImportError:
            continue  # Django reports a missing backend itself
        if isinstance(backend, type) and issubclass(backend, HACache):
            yield alias, params


def _bad_seconds(value: Any, positive: bool) -> bool:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False  # a type error: options.py reports it (E001)
    return not math.isfinite(value) or value < 0 or (positive and value == 0)


def _timeout_errors(alias: str, options: Mapping[str, Any]) -> tuple[list[Any], set[str]]:
    errors, flagged = [], set()
    for name in TIMEOUT_OPTIONS:
        value = options.get(name)
        if _bad_seconds(value, positive=name.startswith("SOCKET")):
            errors.append(_error("E004", alias, f"OPTIONS[{name!r}] is {value!r}"))
            flagged.add(f"OPTIONS['{name}']")
    extra = options.get("CONNECTION_OPTIONS")
    if isinstance(extra, Mapping):
        for name in SOCKET_TIMEOUT_KWARGS:
            if _bad_seconds(extra.get(name), positive=True):
                value = extra[name]
                errors.append(
                    _error("E004", alias, f"OPTIONS['CONNECTION_OPTIONS'][{name!r}] is {value!r}")
                )
                flagged.add("OPTIONS['CONNECTION_OPTIONS']")
    return errors, flagged


def _location_errors(alias: str, location: Any) -> list[Any]:
    """Each URL on its own, so every bad one is named (options.py stops at the first)."""
    try:
        urls = split_location(location)
    except ImproperlyConfigured as exc:
        return [_error("E003", alias, str(exc))]
    errors: list[Any] = []
    specs: list[ShardSpec] = []
    for url in urls:
        try:
            specs.append(parse_shard(url, _PARSE_DEFAULTS))
        except ImproperlyConfigured as exc:
            errors.append(_error(check_id(exc, "E003"), alias, str(exc)))
    names = [spec.name for spec in specs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(_error("E002", alias, f"shard name {name!r} is given to several servers"))
    return errors


def _warnings(alias: str, options: Options) -> list[Any]:
    found: list[Any] = []
    if options.near_cache is not None and not options.publish_invalidations:
        found.append(_warning("W001", alias, "NEAR_CACHE is on but PUBLISH_INVALIDATIONS is False"))
    sentinel_shards = [s for s in options.shards if s.sentinels]
    for spec in sentinel_shards:
        if len(spec.sentinels) == 1:
            found.append(_warning("W002", alias, f"shard {spec.name!r} lists a single sentinel"))
    if sentinel_shards and not options.fail_open:
        found.append(_warning("W003", alias, "Sentinel shards with FAIL_OPEN off"))
    for spec in options.shards:
        for key in SOCKET_TIMEOUT_KWARGS:
            value = spec.connection_kwargs.get(key)
            if value is None or value > LONGEST_SENSIBLE_TIMEOUT:
                found.append(_warning("W004", alias, f"shard {spec.name!r}: {key} is {value!r}"))
    return found


def check_alias(alias: str, params: Mapping[str, Any]) -> list[Any]:
    """Every error and warning for one hacache ``CACHES`` entry."""
    location, options = params.get("LOCATION"), params.get("OPTIONS")
    raw = options if isinstance(options, Mapping) else {}
    found, flagged = _timeout_errors(alias, raw)
    location_errors = _location_errors(alias, location)
    found += location_errors
    # With LOCATION broken, OPTIONS are still checked, against one harmless URL.
    try:
        parsed = parse_options("redis://localhost" if location_errors else location, options)
    except ImproperlyConfigured as exc:
        message = str(exc)
        if not any(setting in message for setting in flagged):
            found.append(_error(check_id(exc, "E001"), alias, message.removeprefix("hacache: ")))
        return found
    if found:
        return found
    return _warnings(alias, parsed)


@checks.register("caches")
def check_caches(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The system check: every hacache entry of ``CACHES``."""
    return [
        message for alias, params in hacache_aliases() for message in check_alias(alias, params)
    ]


def startup_errors() -> list[Any]:
    return [m for m in check_caches() if m.level >= checks.ERROR]


def _guarded(check: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    @functools.wraps(check)
    def guarded(app_configs: Any = None, **kwargs: Any) -> list[Any]:
        try:
            return check(app_configs, **kwargs)
        except ImproperlyConfigured:
            if startup_errors():
                return []  # building a broken hacache entry failed: hacache.E00x says why
            raise

    guarded.hacache_guarded = True  # type: ignore[attr-defined]
    return guarded


def guard_django_cache_checks() -> None:
    """Wrap Django's own cache checks, which build every backend (``caches[alias]``): a bad
    hacache entry then yields its ``hacache.E00x`` message instead of a traceback."""
    registry = checks.registry.registry
    for checks_set in (registry.registered_checks, registry.deployment_checks):
        for check in list(checks_set):
            module = getattr(check, "__module__", "")
            if module == "django.core.checks.caches" and not getattr(check, "hacache_guarded", 0):
                checks_set.discard(check)
                guarded = _guarded(check)
                guarded.tags = getattr(check, "tags", ())  # type: ignore[attr-defined]
                checks_set.add(guarded)
