"""Migration mode (``PREVIOUS_LOCATION``): a ring change without a cold cache.

When shards are added or removed, a key whose owner changed (about 1/N of them) is still on its
owner in the previous ring. In migration mode (mcrouter's WarmUpRoute and MigrateRoute, in one):

- a read that misses on the key's owner, for a key that moved, asks the previous owner in one
  more round trip: a pipeline of ``GET``, ``PTTL`` and ``MIGRATE ... COPY`` there, so the
  previous owner's server copies the key to the new one itself, with its TTL, and never over a
  value already there (no ``REPLACE``: a newer write wins, and is then read instead). Where the
  servers cannot reach each other, the value is copied from here (``SET ... NX PX``);
- a write or delete of a key that moved first deletes it on its previous owner, then writes
  the new owner, so no older copy can be read back later (and a delete cannot be undone by a
  read copying the old value over in between);
- the calls that need the key present (``add``, ``incr``, ``touch``, ``incr_version``, TTLs)
  first copy it over as a read would;
- ``clear()``, ``delete_pattern``, ``iter_keys`` also cover shards that left the ring.

Keys that did not move cost nothing more: one ring lookup. A previous owner that cannot be
reached reads as empty (logged, throttled), so removing a dead shard does not fail reads.
Hashes, sets and sorted sets are not read through: ``manage.py hacache reshard`` moves them;
a call that needs its key present (``ttl``, ``expire``, ``touch``...) moves one over too.
The backend's methods are replaced per instance only in migration mode, so a cache without
``PREVIOUS_LOCATION`` runs exactly the code it always did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from redis.exceptions import RedisError, ResponseError

from hacache.counters import ScriptsRefused
from hacache.extended import beyond_64_bits
from hacache.ops import _ok
from hacache.router import Op
from hacache.shard import Shard

logger = logging.getLogger("hacache.resharding")
Plan = Any
_MISSING = object()
_LOG_EVERY = 10.0
_last_logged: dict[str, float] = {}


def install(cache: Any) -> None:
    """Replace ``cache``'s methods with migration-mode ones (sync and async twins)."""
    for name, plan in _PLANS.items():
        setattr(cache, name, _sync(cache, plan))
        setattr(cache, "a" + name, _async(cache, plan))
    backend = type(cache)

    # get_or_set looks the key up itself (its stampede protection): read a moved key through
    # first, and hand a real miss to it.
    def get_or_set(key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None,
                   **kwargs: Any) -> Any:  # fmt: skip
        found = cache._drive(_get(cache, key, _MISSING, version))
        if found is not _MISSING:
            return found
        return backend.get_or_set(cache, key, default, timeout, version, **kwargs)

    async def aget_or_set(key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT,
                          version: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        found = await cache._adrive(_get(cache, key, _MISSING, version))
        if found is not _MISSING:
            return found
        return await backend.aget_or_set(cache, key, default, timeout, version, **kwargs)

    cache.get_or_set, cache.aget_or_set = get_or_set, aget_or_set


def _sync(cache: Any, plan: Callable[..., Plan]) -> Callable[..., Any]:
    def method(*args: Any, **kwargs: Any) -> Any:
        return cache._drive(plan(cache, *args, **kwargs))

    method.__name__ = plan.__name__.lstrip("_")
    return method


def _async(cache: Any, plan: Callable[..., Plan]) -> Callable[..., Any]:
    async def method(*args: Any, **kwargs: Any) -> Any:
        return await cache._adrive(plan(cache, *args, **kwargs))

    method.__name__ = "a" + plan.__name__.lstrip("_")
    return method


# -- the two steps every method is made of ---------------------------------------------------


def _moved(cache: Any, keys: Iterable[str]) -> dict[Shard, list[str]]:
    """The keys that moved, grouped by their previous owner."""
    previous_owner = cache._router.previous_owner
    groups: dict[Shard, list[str]] = {}
    for key in keys:
        shard = previous_owner(key)
        if shard is not None:
            groups.setdefault(shard, []).append(key)
    return groups


def _unreachable(shard: Shard, error: Exception) -> None:
    now = time.monotonic()
    if now - _last_logged.get(shard.name, -_LOG_EVERY) >= _LOG_EVERY:
        _last_logged[shard.name] = now
        logger.warning(
            "hacache: cache %r, previous shard %r unreachable, read as empty: %s: %s "
            "(remove it from PREVIOUS_LOCATION once it is gone for good)",
            shard.cache, shard.name, type(error).__name__, error,
        )  # fmt: skip


def _copy_command(target: Shard, key: str, timeout_ms: int) -> tuple[Any, ...] | None:
    """MIGRATE of ``key`` to ``target``'s master, keeping it here (COPY) and never replacing."""
    master = target.master
    if master is None or "host" not in master.connection_kwargs:
        return None  # a Unix socket, or a master not found yet: copied from here instead
    kwargs = master.connection_kwargs
    auth: tuple[Any, ...] = ()
    if kwargs.get("password"):
        user = kwargs.get("username")
        auth = ("AUTH2", user, kwargs["password"]) if user else ("AUTH", kwargs["password"])
    return ("MIGRATE", kwargs["host"], kwargs["port"], "", kwargs.get("db") or 0, timeout_ms,
            "COPY", *auth, "KEYS", key)  # fmt: skip


def _from_previous(cache: Any, keys: Iterable[str]) -> Plan:
    """Read the moved ones of ``keys`` (which missed) from their previous owners, copying
    each found to its owner: {key: value}. One round trip; more only for the rare keys whose
    copy was refused (a newer value arrived: read it) or impossible (copy from here)."""
    router, ops = cache._router, cache._ops
    groups = _moved(cache, keys)
    if not groups:
        return {}
    timeout_ms = max(1, int(router.options.socket_timeout * 1000))
    found: dict[str, Any] = {}
    for shard, shard_keys in groups.items():  # one shard at a time: a dead one hides no other
        commands: list[tuple[Any, ...]] = []
        copies = []
        for key in shard_keys:
            copy = _copy_command(router.shard_for(key), key, timeout_ms)
            commands += [("GET", key), ("PTTL", key), *([copy] if copy else [])]
            copies.append(copy is not None)
        try:
            replies = iter((yield Op([(shard, commands)], lambda r: r[0])))
        except RedisError as exc:
            _unreachable(shard, exc)
            continue
        for key, has_copy in zip(shard_keys, copies, strict=True):
            got, ttl = next(replies), _ok(next(replies))
            copied = next(replies) if has_copy else None
            if isinstance(got, ResponseError) and str(got).startswith("WRONGTYPE"):
                # A hash, set or sorted set: no value to read. If MIGRATE copied it (or found
                # one there), drop the old copy, so it is moved, not kept on both owners.
                if (
                    has_copy
                    and (copied not in (b"NOKEY", "NOKEY"))
                    and (not isinstance(copied, Exception) or "BUSYKEY" in str(copied))
                ):
                    yield Op([(shard, [("DEL", key)])], lambda r: _ok(r[0][0]))
                continue
            raw = _ok(got)
            if raw is None or ttl == -2:
                continue
            if isinstance(copied, ResponseError) and "BUSYKEY" in str(copied):
                newer = yield ops.get(key, _MISSING)  # written since the miss: that one wins
                if newer is not _MISSING:
                    found[key] = newer
                continue
            value = ops._load(key, raw, _MISSING)  # unreadable: a miss (and a warning)
            if value is _MISSING:
                continue
            if copied is None or isinstance(copied, Exception):
                yield ops.restore(key, raw, ttl, if_absent=True)
            found[key] = value
    return found


def _forget_previous(cache: Any, keys: Iterable[str]) -> Plan:
    """Delete the moved ones of ``keys`` on their previous owners, before they are written."""
    for shard, shard_keys in _moved(cache, keys).items():
        try:
            yield Op([(shard, [("DEL", *shard_keys)])], lambda r: _ok(r[0][0]))
        except RedisError as exc:
            _unreachable(shard, exc)


def _copy_first(cache: Any, key: str) -> Plan:
    """Bring a moved key over if its owner lacks it, for calls that need it present."""
    exists = yield cache._ops.has_key(key)
    if not exists:
        yield from _from_previous(cache, [key])


# -- the methods -----------------------------------------------------------------------------


def _get(cache: Any, key: Any, default: Any = None, version: Any = None) -> Plan:
    made = cache._key(key, version)
    value = yield cache._ops.get(made, _MISSING)
    if value is not _MISSING:
        return value
    found = yield from _from_previous(cache, [made])
    return found.get(made, default)


def _get_many(cache: Any, keys: Any, version: Any = None) -> Plan:
    key_map = cache._keys(keys, version)
    if not key_map:
        return {}
    found = yield cache._ops.get_many(key_map)
    missing = [k for k in key_map if k not in found]
    if missing:
        found.update((yield from _from_previous(cache, missing)))
    return {key_map[k]: v for k, v in found.items()}


def _has_key(cache: Any, key: Any, version: Any = None) -> Plan:
    made = cache._key(key, version)
    if (yield cache._ops.has_key(made)):
        return True
    return made in (yield from _from_previous(cache, [made]))


def _set(cache: Any, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None,
         nx: bool = False, xx: bool = False) -> Plan:  # fmt: skip
    made, timeout = cache._key(key, version), cache.get_backend_timeout(timeout)
    if nx or xx:
        yield from _copy_first(cache, made)  # whether it exists is the previous owner's too
        return (yield cache._ops.set_if(made, value, timeout, nx, xx))
    yield from _forget_previous(cache, [made])
    yield cache._ops.set(made, value, timeout)


def _add(cache: Any, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
         version: Any = None) -> Plan:  # fmt: skip
    made = cache._key(key, version)
    yield from _copy_first(cache, made)
    return (yield cache._ops.add(made, value, cache.get_backend_timeout(timeout)))


def _delete(cache: Any, key: Any, version: Any = None) -> Plan:
    """Whether the key existed, on its owner or its previous one."""
    made = cache._key(key, version)
    was_there = False
    for shard, keys in _moved(cache, [made]).items():
        try:
            was_there = bool((yield Op([(shard, [("DEL", *keys)])], lambda r: _ok(r[0][0]))))
        except RedisError as exc:
            _unreachable(shard, exc)
    return (yield cache._ops.delete(made)) or was_there


def _set_many(cache: Any, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Plan:
    if not data:
        return []
    key_map = cache._keys(data, version)
    yield from _forget_previous(cache, key_map)
    safe = {made: data[key] for made, key in key_map.items()}
    failed = yield cache._ops.set_many(safe, cache.get_backend_timeout(timeout))
    return [key_map[k] for k in failed]


def _delete_many(cache: Any, keys: Any, version: Any = None) -> Plan:
    key_map = cache._keys(keys, version)
    if not key_map:
        return None
    yield from _forget_previous(cache, key_map)
    return (yield cache._ops.delete_many(key_map))


def _touch(cache: Any, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Plan:
    made = cache._key(key, version)
    yield from _copy_first(cache, made)
    return (yield cache._ops.touch(made, cache.get_backend_timeout(timeout)))


def _incr(cache: Any, key: Any, delta: int = 1, version: Any = None,
          ignore_key_check: bool = False) -> Plan:  # fmt: skip
    made = cache._key(key, version)
    yield from _copy_first(cache, made)
    ops = cache._ops
    op = ops.incr_or_create(made, delta) if ignore_key_check else ops.incr(made, delta)
    try:
        return (yield op)
    except ScriptsRefused:  # nothing counted; this shard takes the script-free path now
        return (yield ops.incr(made, delta))
    except ResponseError as exc:
        if not beyond_64_bits(exc):
            raise
        return (yield from cache._incr_big(made, delta, exc))


def _incr_version(cache: Any, key: Any, delta: int = 1, version: Any = None) -> Plan:
    if version is None:
        version = cache.version
    old, new = cache._key(key, version), cache._key(key, version + delta)
    yield from _copy_first(cache, old)
    found = yield cache._ops.dump(old)
    if found is None:
        raise ValueError(f"Key '{key}' not found")
    if new != old:
        yield from _forget_previous(cache, [new])
        yield cache._ops.restore(new, *found, source=old)
        yield from _forget_previous(cache, [old])
        yield cache._ops.delete(old)
    return version + delta


def _lifetime(name: str) -> Callable[..., Plan]:
    """ttl, expire, persist...: the extended API's call, once a moved key is brought over."""

    def plan(cache: Any, key: Any, *args: Any, version: Any = None) -> Plan:
        yield from _copy_first(cache, cache._key(key, version))
        return (yield getattr(type(cache), name).__wrapped__(cache, key, *args, version=version))

    plan.__name__ = "_" + name
    return plan


_PLANS: dict[str, Callable[..., Plan]] = {
    "get": _get, "get_many": _get_many, "has_key": _has_key, "set": _set, "add": _add,
    "delete": _delete, "set_many": _set_many, "delete_many": _delete_many, "touch": _touch,
    "incr": _incr, "incr_version": _incr_version,
    **{n: _lifetime(n) for n in ("ttl", "pttl", "expire", "pexpire", "expire_at",
                                 "pexpire_at", "persist")},
}  # fmt: skip
