"""``manage.py hacache`` and the health checks, on real Redis and Sentinel processes."""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, RequestFactory

from hacache import health
from hacache.topology import Topology
from tests.conftest import cache_params, key_on, running, until

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def sentinel_topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """3 shards x (master + replica) + 3 sentinels, password-protected. Not broken by tests."""
    yield from running(
        Topology(tmp_path_factory.mktemp("ops"), shards=3, replicas=1, sentinels=3,
                 password=PASSWORD)
    )  # fmt: skip


@pytest.fixture
def sentinel_caches(settings: Any, sentinel_topo: Topology) -> dict:
    caches = sentinel_topo.caches_setting(NEAR_CACHE=True, FAIL_OPEN=True)
    caches["default"]["KEY_PREFIX"] = "ops"
    settings.CACHES = caches
    return caches


def hacache(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("hacache", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_status_shows_every_sentinel_shard_and_no_password(sentinel_caches, sentinel_topo):
    code, text = hacache("status")
    assert code == 0, text
    assert PASSWORD not in text
    masters = sentinel_topo.masters()
    for name in ("shard0", "shard1", "shard2"):
        assert f"shard {name} (sentinel, weight 1): ok  near-cache:" in text
        assert f"127.0.0.1:{masters[name].port}" in text
    assert text.count("3/3 sentinels answered") == 3
    assert "3/3 shards have a reachable master" in text

    code, raw = hacache("--json", "status")
    assert code == 0 and PASSWORD not in raw
    shards = json.loads(raw)
    assert [s["name"] for s in shards] == ["shard0", "shard1", "shard2"]
    for shard in shards:
        master, replica = shard["servers"]
        assert (master["role"], master["reported_role"]) == ("master", "master")
        assert (replica["role"], replica["reported_role"]) == ("replica", "replica")
        assert master["reachable"] and master["latency_ms"] > 0 and master["redis_version"]
        assert master["breaker"] == "closed" and "master" in master["sentinel_flags"]
        assert shard["sentinel"]["answered"] == 3 and shard["near_cache_trusted"] is False


def test_locate_and_ring_on_a_password_protected_sentinel_topology(sentinel_caches):
    from django.core.cache import cache

    cache.set("user:42", "x", timeout=100)
    code, raw = hacache("--json", "locate", "user:42")
    assert code == 0
    found = json.loads(raw)
    assert found["redis_key"] == "ops:1:user:42" and found["exists"] is True
    assert 99 < found["ttl_seconds"] <= 100 and len(found["replicas"]) == 1
    code, text = hacache("locate", "user:42", "--version", "2")
    assert "ops:2:user:42" in text and "exists     no" in text and PASSWORD not in text
    code, text = hacache("ring", "--sample", "3000")
    assert code == 0 and text.count("160") >= 3 and "3000 random keys sampled" in text


def test_status_exits_1_when_a_master_is_unreachable(settings, topology):
    params = cache_params(topology)
    params["LOCATION"] = [*params["LOCATION"], "redis://127.0.0.1:1/0?name=gone"]
    settings.CACHES = {"default": params}
    code, text = hacache("status")
    assert code == 1
    assert "shard gone (server, weight 1): MASTER UNREACHABLE" in text
    assert "127.0.0.1:1: ConnectionError" in text and "; unreachable: gone" in text
    result = health.check()
    assert not result.ok
    assert [s.name for s in result.shards if not s.ok] == ["gone"]


def test_ring_reports_weights_points_and_measured_share(settings, topology):
    urls = topology.master_urls()
    urls[0] += "&weight=2" if "?" in urls[0] else "?weight=2"
    settings.CACHES = {"default": {"BACKEND": "hacache.HACache", "LOCATION": urls}}
    code, raw = hacache("--json", "ring", "--sample", "20000")
    assert code == 0
    shards = json.loads(raw)["shards"]
    assert [s["points"] for s in shards] == [320, 160, 160]
    assert shards[0]["expected"] == 0.5
    for share in shards:
        assert abs(share["measured"] - share["expected"]) < 0.06
    assert sum(s["measured"] for s in shards) == pytest.approx(1)


def test_locate_names_the_shard_the_ring_chooses(settings, topology):
    settings.CACHES = {"default": cache_params(topology)}
    from django.core.cache import cache

    key = key_on(cache, "shard2")
    code, raw = hacache("--json", "locate", key)
    assert code == 0
    found = json.loads(raw)
    assert (found["shard"], found["exists"], found["ttl_seconds"]) == ("shard2", False, None)
    cache.set(key, 1, timeout=None)
    found = json.loads(hacache("--json", "locate", key)[1])
    assert (found["exists"], found["ttl_seconds"]) == (True, None)


def test_flush_near_empties_this_process_only(settings, topology):
    settings.CACHES = {"default": cache_params(topology, "near")}
    from django.core.cache import cache

    router = health.inspection.router_for("default")
    router.bus.listen()
    assert router.near.wait_trusted(5)
    cache.set("a", 1)
    assert cache.get("a") == 1 and len(router.near) == 1
    code, text = hacache("flush-near")
    assert code == 0 and len(router.near) == 0
    assert "(1 entries)" in text and "Other processes are not affected" in text
    settings.CACHES = {"default": cache_params(topology)}
    assert "has no near-cache" in hacache("flush-near")[1]


def test_flush_near_all_processes_empties_every_near_cache(settings, topology, remote_factory):
    params = cache_params(topology, "near")
    settings.CACHES = {"default": params}
    from django.core.cache import cache

    router = health.inspection.router_for("default")
    router.bus.listen()
    assert router.near.wait_trusted(5)
    reader = remote_factory(params)
    cache.set("a", "old")
    assert until(lambda: reader("get", "a") == "old" and reader("get", "a") == "old", 5)
    assert cache.get("a") == "old"  # held here too
    made = cache.make_key("a")
    raw = redis.Redis(**router.shard_for(made).spec.connection_kwargs)
    raw.set(made, pickle.dumps("changed behind its back"))  # no invalidation: both keep "old"
    assert reader("get", "a") == "old" and cache.get("a") == "old"
    code, text = hacache("flush-near", "--all-processes")
    assert code == 0 and text.count("flush published") == len(router.shards), text
    assert until(lambda: reader("get", "a") == "changed behind its back", 5)
    assert until(lambda: cache.get("a") == "changed behind its back", 5)
    shards = json.loads(hacache("--json", "flush-near", "--all-processes")[1])["shards"]
    assert set(shards.values()) == {"ok"} and set(shards) == set(router.shards)


def test_flush_near_all_processes_says_which_shard_it_could_not_reach(settings):
    dead = "redis://127.0.0.1:1/0?name=dead"  # nothing listens: refused at once
    for fail_open in (False, True):
        options = {"NEAR_CACHE": True, "FAIL_OPEN": fail_open, "SOCKET_CONNECT_TIMEOUT": 0.2}
        params = {"BACKEND": "hacache.HACache", "LOCATION": [dead], "OPTIONS": options}
        settings.CACHES = {"default": {**params, "KEY_PREFIX": f"fo{fail_open}"}}
        code, text = hacache("flush-near", "--all-processes")
        assert code == 1 and "shard dead:" in text and "flush published" not in text, text


def test_the_command_refuses_other_aliases(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with pytest.raises(CommandError, match="not a hacache backend"):
        call_command("hacache", "status")
    with pytest.raises(CommandError, match="no cache alias 'nope'"):
        call_command("hacache", "--alias", "nope", "status")


def test_healthz_200_then_503(settings, topology):
    settings.CACHES = {"default": cache_params(topology)}
    response = Client().get("/healthz/")
    assert response.status_code == 200 and response["Cache-Control"].startswith("max-age=0")
    body = response.json()
    assert body["ok"] and [s["name"] for s in body["shards"]] == ["shard0", "shard1", "shard2"]
    assert all(s["latency_ms"] > 0 for s in body["shards"])
    params = cache_params(topology)
    params["LOCATION"] = [*params["LOCATION"], "redis://127.0.0.1:1/0?name=gone"]
    settings.CACHES = {"default": params}
    response = health.view(RequestFactory().get("/healthz/"))
    assert response.status_code == 503
    assert json.loads(response.content)["shards"][3]["error"].startswith("ConnectionError")


def test_health_names_the_replicas_that_answer(sentinel_caches, sentinel_topo):
    result = health.check()
    assert result.ok and len(result.shards) == 3
    for shard in result.shards:
        assert len(shard.replicas_up) == 1 and shard.replicas_down == []
    assert PASSWORD not in json.dumps(result.as_dict())


def test_django_health_check_plugin_covers_every_shard(settings, topology):
    from health_check.views import HealthCheckView

    settings.CACHES = {"default": cache_params(topology)}
    view = HealthCheckView.as_view(checks=[("hacache.health.HACacheHealthCheck", {})])
    response = asyncio.run(view(RequestFactory().get("/ht/", {"format": "json"})))
    assert response.status_code == 200
    assert json.loads(response.content) == {"HACacheHealthCheck(alias='default')": "OK"}

    params = cache_params(topology)
    params["LOCATION"] = [*params["LOCATION"], "redis://127.0.0.1:1/0?name=gone"]
    settings.CACHES = {"default": params}
    result = asyncio.run(health.HACacheHealthCheck().get_result())
    assert result.error is not None and "gone" in str(result.error)
    assert "shard0" not in str(result.error)  # only the failing shard is named
