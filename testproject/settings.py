"""Settings for the hacache demo site.

The site deliberately has no database: every piece of state (pages, fragments, counters,
sessions) lives in the cache, so the demo and the load tests measure the cache backend only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent  # the repository root

# Written by ``python -m hacache.topology up``; read here so the demo follows the running topology.
TOPOLOGY_CACHES_FILE = BASE_DIR / ".hacache" / "topology" / "caches.json"
FALLBACK_CACHES: dict[str, Any] = {
    "default": {"BACKEND": "hacache.HACache", "LOCATION": "redis://127.0.0.1:6379/0"},
}


def load_caches(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Return the CACHES dict: $HACACHE_CACHES_FILE, else the topology file, else localhost.

    Only reads JSON; the backend connects lazily, so importing settings never touches Redis.
    An explicitly named file that is missing is an error rather than a silent fallback, so a
    load test cannot quietly run against the wrong servers.
    """
    named = environ.get("HACACHE_CACHES_FILE")
    path = Path(named) if named else TOPOLOGY_CACHES_FILE
    if not named and not path.is_file():
        return FALLBACK_CACHES
    try:
        caches = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"cannot load CACHES from {path}: {exc}") from exc
    if not isinstance(caches, dict) or "default" not in caches:
        raise ImproperlyConfigured(f"{path} must hold a CACHES dict with a 'default' alias")
    return caches


CACHES = load_caches()

# DEMO ONLY: override DJANGO_SECRET_KEY anywhere this site is reachable by others.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-insecure-hacache-testproject-secret-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in {"1", "true", "yes", "on"}
ALLOWED_HOSTS = ["*"]

# The cache session engine, {% load cache %} and JSON views need no contrib apps at all;
# the hacache app makes a bad CACHES entry fail at start-up rather than on the first request;
# the demo's own app registers its warm-up (``manage.py hacache warm``).
INSTALLED_APPS: list[str] = ["hacache", "testproject.apps.DemoConfig"]
DATABASES: dict[str, Any] = {}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"
ASGI_APPLICATION = "testproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "testproject" / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    },
]

SESSION_ENGINE = "django.contrib.sessions.backends.cache"
SESSION_CACHE_ALIAS = "default"

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False

# Everything goes to stderr, so the demo's terminal (gunicorn) shows what went wrong and when.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        },
    },
    "loggers": {
        # Unhandled exceptions (HTTP 500), with their tracebacks: Django only prints these
        # itself with DEBUG on, and mails them to ADMINS (there are none) otherwise.
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        # hacache's warnings: a shard failing open, a Sentinel promotion, lost invalidations.
        "hacache": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "testproject": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
