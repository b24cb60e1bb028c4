"""The demo site as an app, for one thing: registering its warm-up in ``ready()``."""

from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "testproject"
    verbose_name = "hacache demo"

    def ready(self) -> None:
        from hacache import warmup
        from testproject import views

        # ``manage.py hacache warm``: /fragments/?n=... then hits for every fragment.
        warmup.register(
            views.warm_fragments,
            name="fragments",
            timeout=views.FRAGMENT_TIMEOUT,
            total=views.MAX_FRAGMENTS,
        )
