"""End-to-end tests of the demo site (``testproject``) against real Redis through hacache.

Every request goes through the full Django stack (middleware, sessions, cache_page, template
fragment cache) so these catch integration gaps the backend's unit tests cannot see.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.backends.cache import KEY_PREFIX as SESSION_KEY_PREFIX
from django.core.cache import cache
from django.core.cache.backends.base import default_key_func
from django.core.cache.utils import make_template_fragment_key
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse

from hacache.options import parse_options
from hacache.topology import Topology
from testproject import settings as project_settings
from testproject import views
from tests.conftest import cache_params

pytestmark = pytest.mark.usefixtures("hacache_caches")

SIDEBAR_TOKEN = re.compile(r"sidebar ([0-9a-f]{32})")
REPO = Path(__file__).resolve().parent.parent


def demo_options() -> dict[str, Any]:
    """The OPTIONS ``scripts/demo.sh`` serves the site with unless told otherwise."""
    match = re.search(r"^default_options='(.*)'$", (REPO / "scripts/demo.sh").read_text(), re.M)
    assert match, "scripts/demo.sh no longer sets default_options"
    options: dict[str, Any] = json.loads(match.group(1))
    return options


@pytest.fixture(params=["plain", "demo"])
def hacache_caches(request: pytest.FixtureRequest, settings: Any, topology: Topology) -> dict:
    """Every view is tested with the backend's defaults and with the demo's OPTIONS."""
    options = demo_options() if request.param == "demo" else {}
    caches = {"default": cache_params(topology, "sharded", **options)}
    settings.CACHES = caches
    return caches


def _json(response: Any) -> Any:
    return json.loads(response.content)


def _sidebar_token(response: Any) -> str:
    match = SIDEBAR_TOKEN.search(response.content.decode())
    assert match, "sidebar fragment missing from the home page"
    return match.group(1)


def test_home_links_every_page(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    for name in ("cached", "counter", "async-counter", "slow", "fragments", "session", "health"):
        assert f'href="{reverse(name)}' in body
    assert f'href="{reverse("item", args=["example"])}"' in body


def test_home_sidebar_fragment_is_cached(client: Client) -> None:
    first = client.get("/")
    assert first["X-Sidebar-Rendered"] == "1"
    token = _sidebar_token(first)
    stored = cache.get(make_template_fragment_key("sidebar"))
    assert stored is not None
    assert token in stored

    second = client.get("/")
    assert second["X-Sidebar-Rendered"] == "0"  # fragment came from the cache
    assert _sidebar_token(second) == token

    cache.delete(make_template_fragment_key("sidebar"))
    third = client.get("/")
    assert third["X-Sidebar-Rendered"] == "1"
    assert _sidebar_token(third) != token


def test_cached_page_is_reused_until_cleared(client: Client) -> None:
    first = client.get("/cached/")
    assert first.status_code == 200
    assert "max-age=30" in first["Cache-Control"]
    second = client.get("/cached/")
    assert _json(second) == _json(first)

    cache.clear()
    third = client.get("/cached/")
    assert _json(third)["token"] != _json(first)["token"]
    assert _json(client.get("/cached/")) == _json(third)


def test_counter_increments(client: Client) -> None:
    counts = [_json(client.get("/counter/"))["count"] for _ in range(3)]
    assert counts == [1, 2, 3]
    assert cache.get(views.COUNTER_KEY) == 3


def test_async_counter_increments(client: Client) -> None:
    counts = [_json(client.get("/async/counter/"))["count"] for _ in range(3)]
    assert counts == [1, 2, 3]
    assert cache.get(views.COUNTER_KEY) == 3


def test_sync_and_async_counters_share_the_key(client: Client) -> None:
    paths = ["/counter/", "/async/counter/", "/counter/", "/async/counter/"]
    assert [_json(client.get(path))["count"] for path in paths] == [1, 2, 3, 4]


def test_async_counter_rejects_post(client: Client) -> None:
    assert client.post("/async/counter/").status_code == 405
    assert cache.get(views.COUNTER_KEY) is None


async def test_async_counter_under_asgi(async_client: Any) -> None:
    """Runs the view natively in an event loop (ASGI handler), not through async_to_sync."""
    counts = []
    for _ in range(3):
        response = await async_client.get("/async/counter/")
        assert response.status_code == 200
        counts.append(_json(response)["count"])
    assert counts == [1, 2, 3]
    assert await cache.aget(views.COUNTER_KEY) == 3


def test_slow_is_computed_once(client: Client) -> None:
    started = time.monotonic()
    first = _json(client.get("/slow/"))
    assert time.monotonic() - started >= views.SLOW_COMPUTE_SECONDS
    assert first["computed"] is True
    assert first["value"]["answer"] == 42

    second = _json(client.get("/slow/"))
    assert second == {"value": first["value"], "computed": False}
    assert cache.get(views.SLOW_KEY) == first["value"]


def test_fragments_hits_and_misses(client: Client) -> None:
    first = _json(client.get("/fragments/?n=5"))
    assert (first["hits"], first["misses"], first["failed"]) == (0, 5, 0)
    assert first["html"].count("<section>") == 5

    second = _json(client.get("/fragments/?n=5"))
    assert (second["hits"], second["misses"]) == (5, 0)
    assert second["html"] == first["html"]

    third = _json(client.get("/fragments/?n=8"))
    assert (third["hits"], third["misses"]) == (5, 3)
    assert third["html"].startswith(first["html"])
    assert len(cache.get_many([f"fragment:{i}" for i in range(8)])) == 8


def test_fragments_default_and_bad_n(client: Client) -> None:
    assert _json(client.get("/fragments/"))["n"] == 20
    assert client.get("/fragments/?n=abc").status_code == 400
    assert client.get("/fragments/?n=0").status_code == 400
    assert client.get(f"/fragments/?n={views.MAX_FRAGMENTS + 1}").status_code == 400


def test_session_persists_in_the_cache(client: Client) -> None:
    assert [_json(client.get("/session/"))["count"] for _ in range(3)] == [1, 2, 3]
    session_key = client.cookies["sessionid"].value
    assert cache.get(SESSION_KEY_PREFIX + session_key) == {"count": 3}

    assert _json(Client().get("/session/"))["count"] == 1  # another visitor, another session

    cache.delete(SESSION_KEY_PREFIX + session_key)  # the cache is the only session store
    assert _json(client.get("/session/"))["count"] == 1


def test_item_get_post_delete(client: Client) -> None:
    url = "/item/greeting/"
    assert client.get(url).status_code == 404
    assert _json(client.get(url)) == {"hit": False}

    stored = client.post(url, data="hello, world", content_type="text/plain")
    assert stored.status_code == 201
    assert _json(client.get(url)) == {"hit": True, "value": "hello, world"}
    assert cache.get(views.item_cache_key("greeting")) == "hello, world"

    assert client.post(url, {"value": "from a form"}).status_code == 201
    assert _json(client.get(url))["value"] == "from a form"
    assert client.post(url, {"other": "x"}).status_code == 400

    assert _json(client.delete(url)) == {"deleted": True}
    assert client.get(url).status_code == 404
    assert _json(client.delete(url)) == {"deleted": False}
    assert client.put(url, data="x").status_code == 405


def test_item_key_is_bounded(client: Client) -> None:
    longest = "k" * views.MAX_ITEM_KEY_LENGTH
    assert client.post(f"/item/{longest}/", data="v", content_type="text/plain").status_code == 201
    assert _json(client.get(f"/item/{longest}/"))["value"] == "v"

    too_long = longest + "k"
    assert client.post(f"/item/{too_long}/", data="v", content_type="text/plain").status_code == 400
    assert client.get(f"/item/{too_long}/").status_code == 400
    assert client.get("/item/with%20space/").status_code == 400


def test_health_ok(client: Client) -> None:
    response = client.get("/health/")
    assert response.status_code == 200
    assert _json(response) == {"ok": True}


def test_health_reports_503_when_redis_is_down(
    client: Client, settings: Any, hacache_caches: dict[str, Any]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the socket is closed
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    broken = copy.deepcopy(hacache_caches)
    broken["default"]["LOCATION"] = [f"redis://127.0.0.1:{dead_port}/0"]
    settings.CACHES = broken

    response = client.get("/health/")
    assert response.status_code == 503
    assert _json(response)["ok"] is False


def test_load_caches_prefers_the_named_file(tmp_path: Path) -> None:
    wanted = {"default": {"BACKEND": "hacache.HACache", "LOCATION": ["redis://10.0.0.1:6379/0"]}}
    path = tmp_path / "caches.json"
    path.write_text(json.dumps(wanted))
    assert project_settings.load_caches({"HACACHE_CACHES_FILE": str(path)}) == wanted


def test_load_caches_topology_file_then_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = tmp_path / "caches.json"
    monkeypatch.setattr(project_settings, "TOPOLOGY_CACHES_FILE", topology)
    assert project_settings.load_caches({}) == project_settings.FALLBACK_CACHES
    assert project_settings.FALLBACK_CACHES["default"]["BACKEND"] == "hacache.HACache"

    written = {"default": {"BACKEND": "hacache.HACache", "LOCATION": ["redis://a:1/0"]}}
    topology.write_text(json.dumps(written))
    assert project_settings.load_caches({}) == written


def test_load_caches_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured):
        project_settings.load_caches({"HACACHE_CACHES_FILE": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text('{"other": {}}')
    with pytest.raises(ImproperlyConfigured):
        project_settings.load_caches({"HACACHE_CACHES_FILE": str(bad)})


def test_demo_runs_the_recommended_ha_options() -> None:
    options = demo_options()
    parsed = parse_options(["redis://127.0.0.1:6379/0"], options)
    assert parsed.fail_open is True
    assert parsed.near_cache is not None and parsed.near_cache.covers is not None
    session_key = default_key_func(SESSION_KEY_PREFIX + "abc", "", 1)  # the demo's KEY_PREFIX
    assert session_key == ":1:django.contrib.sessions.cacheabc"
    assert not parsed.near_cache.covers(session_key)  # sessions stay remote-only
    assert parsed.near_cache.covers(":1:views.decorators.cache.cache_page.x")


BOOM = """
import logging, sys, types
import django
django.setup()
from django.test import Client
from django.test.utils import override_settings
from django.urls import path

def boom(request):
    raise RuntimeError("boom from a view")

urls = types.ModuleType("boom_urls")
urls.urlpatterns = [path("boom/", boom)]
sys.modules["boom_urls"] = urls
with override_settings(ROOT_URLCONF="boom_urls"):
    response = Client(raise_request_exception=False).get("/boom/")
print(response.status_code)
logging.getLogger("hacache").warning("hacache: shard 'shard1' unavailable, failing open")
logging.getLogger("hacache").debug("not shown")
"""


def test_server_errors_and_hacache_warnings_reach_stderr(tmp_path: Path) -> None:
    """The demo's terminal shows a 500 with its traceback, and hacache's warnings."""
    caches = tmp_path / "caches.json"
    caches.write_text(json.dumps(project_settings.FALLBACK_CACHES))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "HACACHE_CACHES_FILE": str(caches),
        "DJANGO_DEBUG": "",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", BOOM], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "500"
    assert "ERROR django.request: Internal Server Error: /boom/" in run.stderr
    assert "Traceback (most recent call last)" in run.stderr
    assert "RuntimeError: boom from a view" in run.stderr
    assert "WARNING hacache: hacache: shard 'shard1' unavailable, failing open" in run.stderr
    assert "not shown" not in run.stderr
