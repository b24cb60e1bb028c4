"""``@hacache.cached``: a function's result cached through ``get_or_set``, with its stampede
protection (``stampede``): one caller across all processes computes a missing value.

Keys are made once per call from the arguments: a format string, a function, or by default
the function's dotted name and an MD5 of its bound arguments' reprs (Django's key check warns
about the spaces reprs hold). A coroutine function is cached through ``aget_or_set``; with a
cache that is not hacache's, Django's own steps are taken (``get``, then ``add`` and ``get``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

_MISSING = object()


def _key_maker(func: Callable[..., Any], key: Any) -> Callable[..., str]:
    signature = inspect.signature(func)
    name = f"{func.__module__}.{func.__qualname__}"

    def bound(args: tuple, kwargs: dict) -> dict[str, Any]:
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        return arguments.arguments

    if key is None:  # hashed: reprs hold spaces, which Django's key check warns about

        def default(args: tuple, kwargs: dict) -> str:
            arguments = repr(sorted(bound(args, kwargs).items())).encode()
            return f"{name}:{hashlib.md5(arguments, usedforsecurity=False).hexdigest()}"

        return default
    if isinstance(key, str):
        return lambda args, kwargs: key.format(*args, **bound(args, kwargs))
    if callable(key):
        return lambda args, kwargs: str(key(*args, **kwargs))
    raise TypeError(f"cached(key=...): expected a format string or a function, got {key!r}")


def cached(
    timeout: Any = DEFAULT_TIMEOUT,
    key: str | Callable[..., Any] | None = None,
    alias: str = "default",
    version: int | None = None,
    **overrides: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache a function's result through ``get_or_set`` (``aget_or_set`` for a coroutine
    function), with the same stampede protection.

    ``key`` is a format string filled from the arguments by name (``"user:{user_id}"``) or
    position (``"{0}"``), or a function of the arguments; by default the function's dotted name
    and its arguments' reprs. ``overrides`` (``protect``, ``grace``, ``xfetch_beta``) are passed
    to ``get_or_set``; only hacache backends take them.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        make_key = _key_maker(func, key)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def asynchronous(*args: Any, **kwargs: Any) -> Any:
                from django.core.cache import caches

                cache = caches[alias]
                made = make_key(args, kwargs)
                if hasattr(cache, "_router"):
                    return await cache.aget_or_set(
                        made, lambda: func(*args, **kwargs), timeout, version, **overrides
                    )
                found = await cache.aget(made, _MISSING, version=version)
                if found is _MISSING:  # another backend: Django's steps, awaited
                    found = await func(*args, **kwargs)
                    await cache.aadd(made, found, timeout, version)
                    found = await cache.aget(made, found, version=version)
                return found

            return asynchronous

        @functools.wraps(func)
        def sync(*args: Any, **kwargs: Any) -> Any:
            from django.core.cache import caches

            cache = caches[alias]
            made = make_key(args, kwargs)
            return cache.get_or_set(
                made, lambda: func(*args, **kwargs), timeout, version, **overrides
            )

        return sync

    return decorate
