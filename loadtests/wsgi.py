"""testproject's WSGI application, with Django's request errors sent to stderr.

testproject logs nothing for a 500 unless DEBUG is on, so a failing view would only show up as
a status code in locust. Served through this module, every server error also leaves its
traceback in the gunicorn log of the run, where ``run.py`` counts it and the report quotes it.
"""

from __future__ import annotations

import logging

from testproject.wsgi import application

_handler = logging.StreamHandler()
_handler.setLevel(logging.ERROR)  # 5xx only: 404s of missing items are answers, not errors
_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
logging.getLogger("django.request").addHandler(_handler)

__all__ = ["application"]
