"""Small views that each exercise one part of the Django cache API through hacache.

Every view keeps its state in the default cache only, so the integration tests and the
locust load tests observe the cache backend and nothing else.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import cache_page, never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

logger = logging.getLogger(__name__)

COUNTER_KEY = "counter:hits"  # shared by the sync and async counters
SLOW_KEY = "slow:value"
SLOW_COMPUTE_SECONDS = 0.05
FRAGMENT_TIMEOUT = 60
MAX_FRAGMENTS = 1000
MAX_ITEM_KEY_LENGTH = 200
# Whitespace and control characters are rejected: memcached-style key validation warns on them.
_BAD_KEY_CHARS = re.compile(r"[\x00-\x20\x7f]")


class Sidebar:
    """Expensive-ish sidebar data, computed only if the template fragment cache misses.

    The template reads it inside ``{% cache %}``, so ``rendered`` tells whether it was needed.
    """

    @cached_property
    def entries(self) -> list[dict[str, Any]]:
        time.sleep(0.02)
        primes = [n for n in range(2, 3000) if all(n % d for d in range(2, int(n**0.5) + 1))]
        return [{"label": f"Prime #{i + 1}", "value": p} for i, p in enumerate(primes[-10:])]

    @cached_property
    def token(self) -> str:
        return uuid.uuid4().hex

    @property
    def rendered(self) -> bool:
        return "entries" in self.__dict__


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Home page; the sidebar sits in a template fragment cache (``{% cache 30 sidebar %}``)."""
    sidebar = Sidebar()
    response = render(request, "home.html", {"sidebar": sidebar, "now": timezone.now()})
    response["X-Sidebar-Rendered"] = "1" if sidebar.rendered else "0"
    return response


@require_GET
@cache_page(30)
def cached(request: HttpRequest) -> JsonResponse:
    """Whole-page cache: a repeat request gets the same timestamp and token until expiry."""
    return JsonResponse({"generated_at": timezone.now().isoformat(), "token": uuid.uuid4().hex})


@require_GET
@never_cache
def counter(request: HttpRequest) -> JsonResponse:
    """Hit counter with atomic server-side increments (add creates it, incr bumps it)."""
    cache.add(COUNTER_KEY, 0, timeout=None)
    try:
        return JsonResponse({"count": cache.incr(COUNTER_KEY)})
    except ValueError:  # gone again (evicted, or its shard failing open): not counted
        return JsonResponse({"count": None})


async def async_counter(request: HttpRequest) -> HttpResponse:
    """Same counter as ``counter`` through the async cache API, to check both paths agree.

    No decorators: ``require_GET``/``never_cache`` only accept async views from Django 5.0.
    """
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    await cache.aadd(COUNTER_KEY, 0, timeout=None)
    try:
        count = await cache.aincr(COUNTER_KEY)
    except ValueError:  # see counter()
        count = None
    response = JsonResponse({"count": count})
    add_never_cache_headers(response)
    return response


@require_GET
@never_cache
def slow(request: HttpRequest) -> JsonResponse:
    """Read-through caching: the slow computation runs only when the key is missing."""
    computed = False

    def compute() -> dict[str, Any]:
        nonlocal computed
        computed = True
        time.sleep(SLOW_COMPUTE_SECONDS)
        return {"answer": 42, "computed_at": timezone.now().isoformat()}

    value = cache.get_or_set(SLOW_KEY, compute, timeout=60)
    return JsonResponse({"value": value, "computed": computed})


def fragment_key(i: int) -> str:
    return f"fragment:{i}"


def render_fragment(key: str) -> str:
    return f"<section>{key} rendered at {time.time():.6f}</section>"


def warm_fragments() -> Iterator[tuple[str, str]]:
    """Every fragment ``/fragments/`` can ask for, rendered ahead (``manage.py hacache warm``;
    registered in ``testproject.apps``)."""
    for i in range(MAX_FRAGMENTS):
        key = fragment_key(i)
        yield key, render_fragment(key)


@require_GET
@never_cache
def fragments(request: HttpRequest) -> JsonResponse:
    """Build a page from N fragments with one get_many and at most one set_many."""
    try:
        n = int(request.GET.get("n", "20"))
    except ValueError:
        return JsonResponse({"error": "n must be an integer"}, status=400)
    if not 1 <= n <= MAX_FRAGMENTS:
        return JsonResponse({"error": f"n must be between 1 and {MAX_FRAGMENTS}"}, status=400)

    keys = [fragment_key(i) for i in range(n)]
    found = cache.get_many(keys)
    missing = {key: render_fragment(key) for key in keys if key not in found}
    failed = cache.set_many(missing, timeout=FRAGMENT_TIMEOUT) if missing else []
    parts = {**found, **missing}
    return JsonResponse(
        {
            "n": n,
            "hits": len(found),
            "misses": len(missing),
            "failed": len(failed),
            "html": "".join(parts[key] for key in keys),
        }
    )


@require_GET
@never_cache
def session(request: HttpRequest) -> JsonResponse:
    """Per-visitor counter kept in the cache-backed session."""
    count = request.session.get("count", 0) + 1
    request.session["count"] = count
    return JsonResponse({"count": count})


def item_cache_key(key: str) -> str:
    """Cache key for ``/item/<key>/`` (shared with the tests)."""
    return f"item:{key}"


@csrf_exempt
@require_http_methods(["GET", "POST", "DELETE"])
@never_cache
def item(request: HttpRequest, key: str) -> JsonResponse:
    """Raw get/set/delete of one key, for load tests that need arbitrary key traffic."""
    if len(key) > MAX_ITEM_KEY_LENGTH or _BAD_KEY_CHARS.search(key):
        return JsonResponse(
            {"error": f"key must be 1-{MAX_ITEM_KEY_LENGTH} chars without whitespace"}, status=400
        )
    cache_key = item_cache_key(key)
    if request.method == "POST":
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            value = request.POST.get("value")
            if value is None:
                return JsonResponse({"error": "missing 'value' form field"}, status=400)
        else:
            try:
                value = request.body.decode(request.encoding or "utf-8")
            except UnicodeDecodeError:
                return JsonResponse({"error": "body is not valid text"}, status=400)
        cache.set(cache_key, value)
        return JsonResponse({"stored": True, "key": key}, status=201)
    if request.method == "DELETE":
        return JsonResponse({"deleted": bool(cache.delete(cache_key))})
    value = cache.get(cache_key)
    if value is None:
        return JsonResponse({"hit": False}, status=404)
    return JsonResponse({"hit": True, "value": value})


@require_GET
@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """Liveness through the cache: 503 instead of 500 when the backend is unusable."""
    probe = uuid.uuid4().hex
    try:
        cache.set("health:probe", probe, timeout=10)
        ok = cache.get("health:probe") == probe
    except Exception as exc:
        logger.warning("health check failed: %r", exc)
        return JsonResponse({"ok": False, "error": type(exc).__name__}, status=503)
    if not ok:
        return JsonResponse({"ok": False, "error": "probe value not read back"}, status=503)
    return JsonResponse({"ok": True})


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape endpoint (hacache's metrics, with ``"METRICS": True``)."""
    from hacache.metrics import view

    return view(request)


def _percent(ratio: float | None) -> str:
    return "\u2013" if ratio is None else f"{ratio * 100:.1f}%"


@require_GET
@never_cache
def status_page(request: HttpRequest) -> HttpResponse:
    """Live status of the default alias: shards, servers, hit rates, latency, failovers.

    Rendered whole on the server (a meta refresh without JavaScript); a small script then
    re-renders it from ``status_data`` every 2 s."""
    from testproject.status import gather

    data = gather()
    context = {
        "data": data,
        "updated": time.strftime("%H:%M:%S", time.localtime(data["generated_at"])),
        "hit_pct": _percent((data["hit_rate"] or {}).get("ratio")),
        "near_pct": _percent((data["near_cache"] or {}).get("ratio")),
    }
    return render(request, "status.html", context)


@require_GET
@never_cache
def status_data(request: HttpRequest) -> JsonResponse:
    """The status page's data as JSON (always 200: ``/healthz/`` is the one for probes)."""
    from testproject.status import gather

    return JsonResponse(gather())
