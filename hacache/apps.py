"""Optional Django app: with ``"hacache"`` in ``INSTALLED_APPS``, a bad ``CACHES`` entry fails at
start-up (``django.setup()``, so under gunicorn too), not at the first cache call."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from hacache.options import parse_options


def check_caches_setting() -> None:
    """Parse every hacache entry in ``CACHES`` (nothing connects); raise on the first error."""
    from hacache.backend import HACache

    for alias, params in settings.CACHES.items():
        try:
            backend = import_string(params.get("BACKEND", ""))
        except ImportError:
            continue  # Django reports a missing backend itself
        if isinstance(backend, type) and issubclass(backend, HACache):
            try:
                parse_options(params.get("LOCATION"), params.get("OPTIONS"))
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"CACHES[{alias!r}]: {exc}") from exc


class HACacheConfig(AppConfig):
    name = "hacache"
    verbose_name = "hacache"

    def ready(self) -> None:
        check_caches_setting()
