"""hacache: a sharded, highly-available Redis cache backend for Django.

Use ``"BACKEND": "hacache.HACache"`` in ``CACHES``; ``hacache.register_warmup`` (that is,
``hacache.warmup.register``) registers a function for ``manage.py hacache warm``. Both are
imported lazily so that the topology launcher (``python -m hacache.topology``) works without
Django configured.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HACache", "cached", "get_redis_connection", "register_warmup", "wait_for_replicas"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "HACache":
        from hacache.backend import HACache

        return HACache
    if name == "cached":
        from hacache.decorator import cached

        return cached
    if name == "get_redis_connection":
        from hacache.rawclient import get_redis_connection

        return get_redis_connection
    if name == "register_warmup":
        from hacache.warmup import register

        return register
    if name == "wait_for_replicas":
        from hacache.writes import wait_for_replicas

        return wait_for_replicas
    raise AttributeError(f"module 'hacache' has no attribute {name!r}")
