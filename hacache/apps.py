"""Optional Django app: with ``"hacache"`` in ``INSTALLED_APPS``, hacache's system checks
(``hacache.checks``) run with ``manage.py check``, and a bad ``CACHES`` entry fails at start-up.

Start-up: under a server (gunicorn, uWSGI, ASGI: anything calling ``django.setup()`` that is not
``manage.py``), an entry with a ``hacache.E00x`` error raises ``ImproperlyConfigured`` from
``django.setup()``, so a bad setting never serves its first request. Under ``manage.py`` /
``django-admin`` the error is left to the check framework, which prints it with its id and hint
(commands that run checks, ``check``, ``runserver``, ``hacache``, stop on it) instead of a
traceback.
"""

from __future__ import annotations

import sys

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


def check_caches_setting() -> None:
    """Run hacache's checks (nothing connects); raise if any entry has an error."""
    from hacache.checks import startup_errors

    errors = startup_errors()
    if errors:
        raise ImproperlyConfigured("\n".join(f"{e.msg} ({e.id}; {e.hint})" for e in errors))


def _under_management_command() -> bool:
    """True while ``ManagementUtility.execute`` (manage.py, django-admin) is on the stack."""
    from django.core.management import ManagementUtility

    code = ManagementUtility.execute.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


class HACacheConfig(AppConfig):
    name = "hacache"
    verbose_name = "hacache"

    def ready(self) -> None:
        from hacache.checks import guard_django_cache_checks

        guard_django_cache_checks()
        if not _under_management_command():
            check_caches_setting()
