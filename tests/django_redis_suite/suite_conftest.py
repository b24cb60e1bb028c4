"""Copied as ``conftest.py`` next to django-redis's own ``test_backend.py`` (extracted from its
sdist at test time by ``tests/test_django_redis_suite.py``); never collected in this repo.

It stands in for django-redis's conftest: its ``cache`` fixture hands their tests hacache, built
by Django from ``CACHES["default"]`` (JSON in ``HACACHE_SUITE_CACHE``), not a django-redis cache.

Their tests also ask ``cache.client`` about the configuration: is it a ``ShardClient`` or a
``HerdClient`` (to skip), which serializer, is compression on. ``cache.client`` answers only
those, truthfully, for hacache (it is neither client; hacache has no compressor); it runs no
command, so a test that drives django-redis's client (``get_client()``, ``make_key``, mocks of
its methods) fails here and is on the excluded list instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    import django
    from django.conf import settings

    settings.configure(
        CACHES={"default": json.loads(os.environ["HACACHE_SUITE_CACHE"])},
        SECRET_KEY="django-redis-suite",
        USE_TZ=False,  # as django-redis's test settings: their expire_at tests pass naive times
    )
    django.setup()


class ClientFacts:
    """What the tests ask ``cache.client`` about hacache's configuration, and nothing else."""

    def __init__(self, backend: Any) -> None:
        self._serializer = backend._router.options.serializer

    def _has_compression_enabled(self) -> bool:
        return False  # hacache has no compression option


class Presented:
    """hacache as the tests see it: every attribute is the backend's, but ``client``."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.client = ClientFacts(backend)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


@pytest.fixture(scope="session")
def backend_ready() -> None:
    """Empty shards and, with a near-cache, one that serves from the first call."""
    from django.core.cache import caches

    backend = caches["default"]
    near = backend._router.near
    if near is not None:
        backend._router.bus.listen()
        assert near.wait_trusted(5), "the near-cache never became trusted"
    backend.clear()


@pytest.fixture
def cache(backend_ready: None) -> Iterator[Presented]:
    from django.core.cache import caches

    backend = caches["default"]
    yield Presented(backend)
    backend.clear()


@pytest.fixture
def settings() -> Iterator[Any]:
    """Django settings; assignments are undone after the test (their ``settings`` fixture)."""
    from django.conf import settings as django_settings
    from django.test import override_settings

    overrides: list[override_settings] = []

    class Settings:
        def __setattr__(self, name: str, value: Any) -> None:
            override = override_settings(**{name: value})
            override.enable()
            overrides.append(override)

        def __getattr__(self, name: str) -> Any:
            return getattr(django_settings, name)

    yield Settings()
    for override in reversed(overrides):
        override.disable()
