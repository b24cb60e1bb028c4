"""The demo's live status page (``/status/``) and its JSON (``/status/data/``), on real Redis."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import Client

from hacache import inspection
from hacache.topology import Topology
from testproject import status
from tests.conftest import cache_params, key_on, running, until


def data(client: Client) -> dict[str, Any]:
    response = client.get("/status/data/")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    return json.loads(response.content)


def addresses(topo: Topology, role: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for node in topo.nodes():
        if node.role == role:
            found.setdefault(node.shard, set()).add(f"{node.host}:{node.port}")
    return found


@pytest.fixture
def small(tmp_path) -> Iterator[Topology]:
    """Two plain shards of this test's own, as the test kills one."""
    yield from running(Topology(tmp_path, shards=2))


@pytest.fixture
def ha(tmp_path) -> Iterator[Topology]:
    """2 shards x (master + replica) + 3 sentinels (as ``tests/test_failover.py``'s)."""
    yield from running(Topology(tmp_path, shards=2, replicas=1, sentinels=3, down_after_ms=1000,
                                failover_timeout_ms=2000))  # fmt: skip


# -- the pure parts --------------------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    buckets = {0.001: 50.0, 0.002: 90.0, 0.005: 100.0, math.inf: 100.0}
    assert status.quantile(0.5, buckets) == pytest.approx(0.001)
    assert status.quantile(0.7, buckets) == pytest.approx(0.0015)
    assert status.quantile(0.99, buckets) == pytest.approx(0.0047)
    assert status.quantile(0.25, buckets) == pytest.approx(0.0005)  # first bucket from 0
    assert status.quantile(0.99, {0.001: 0.0, math.inf: 0.0}) is None
    # past the last finite bound: that bound, as histogram_quantile does
    assert status.quantile(0.99, {0.001: 10.0, math.inf: 20.0}) == pytest.approx(0.001)


def test_latency_sums_every_op_of_a_shard_and_keeps_aliases_apart():
    def hist(shard: str, op: str, alias: str, counts: list[float], total: float):
        labels = {"alias": alias, "shard": shard, "op": op}
        for le, n in zip(("0.001", "0.01", "+Inf"), counts, strict=True):
            yield status.Sample("hacache_latency_seconds_bucket", {**labels, "le": le}, n)
        yield status.Sample("hacache_latency_seconds_count", labels, counts[-1])
        yield status.Sample("hacache_latency_seconds_sum", labels, total)

    samples = [
        *hist("s0", "get", "default", [98, 100, 100], 0.05),
        *hist("s0", "set", "default", [0, 100, 100], 0.25),
        *hist("s0", "get", "other", [0, 0, 1000], 99.0),
    ]
    found = status.shard_latency(samples, "default")
    assert found["s0"]["calls"] == 200
    assert found["s0"]["mean_ms"] == pytest.approx(1.5)  # 0.3 s / 200
    assert found["s0"]["p99_ms"] == pytest.approx(
        1 + 9 * (198 - 98) / 102, abs=0.001
    )  # rounded to µs


def test_build_reports_master_down_and_metrics_off():
    up = inspection.ShardStatus("s0", 1, "server", [inspection.Server("master", "h:1", True, 0.2)])
    down = inspection.ShardStatus("s1", 1, "server", [inspection.Server("master", "h:2")])
    local = status.Local({"s1": status.LocalShard("h:2", 3, -1, 2)}, metrics_on=False)
    built = status.build("default", [up, down], [], local, "off", 0.0)
    assert [s["ok"] for s in built["shards"]] == [True, False]
    assert built["ok"] is False and built["shards_up"] == 1
    assert built["hit_rate"] is None and built["near_cache"] is None
    assert built["shards"][1]["failover"] == {
        "seen": None, "seen_here": 2, "generation": 3, "epoch": None, "master": "h:2",
    }  # fmt: skip
    json.dumps(built)  # JSON types only


# -- against real Redis ----------------------------------------------------------------------


def test_json_has_every_shard_reachable_with_its_master(settings, topology, client):
    settings.CACHES = {"default": cache_params(topology, "sharded")}
    found = data(client)
    masters = addresses(topology, "master")
    assert [s["name"] for s in found["shards"]] == sorted(masters)
    for shard in found["shards"]:
        assert shard["ok"] is True
        [server] = shard["servers"]
        assert server["role"] == "master" and server["reported_role"] == "master"
        assert {server["address"]} == masters[shard["name"]]
        assert server["reachable"] is True and server["latency_ms"] > 0
    assert found["ok"] is True and found["shards_up"] == 3


def test_a_killed_shard_shows_unreachable(settings, small, client):
    settings.CACHES = {"default": cache_params(small, "sharded")}
    assert all(s["ok"] for s in data(client)["shards"])
    small.kill("shard1-master")
    found = data(client)
    by_name = {s["name"]: s for s in found["shards"]}
    assert by_name["shard0"]["servers"][0]["reachable"] is True
    dead = by_name["shard1"]["servers"][0]
    assert dead["reachable"] is False and dead["latency_ms"] is None and dead["error"]
    assert by_name["shard1"]["ok"] is False
    assert found["ok"] is False and found["shards_up"] == 1
    page = client.get("/status/").content.decode()
    assert page.count(">unreachable<") == 1 and page.count(">reachable<") == 1
    assert "1/2 shards up" in page


def test_sentinel_roles_and_flags(settings, ha, client):
    settings.CACHES = ha.caches_setting()
    found = data(client)
    masters, replicas = addresses(ha, "master"), addresses(ha, "replica")
    assert [s["name"] for s in found["shards"]] == sorted(masters)
    for shard in found["shards"]:
        assert shard["kind"] == "sentinel" and shard["ok"] is True
        roles = {s["address"]: s for s in shard["servers"]}
        assert set(roles) == masters[shard["name"]] | replicas[shard["name"]]
        for address, server in roles.items():
            expected = "master" if address in masters[shard["name"]] else "replica"
            assert server["role"] == expected and server["reported_role"] == expected
            assert server["reachable"] is True
            assert ("master" if expected == "master" else "slave") in server["sentinel_flags"]
        assert shard["sentinel"]["answered"] == 3
        assert shard["failover"]["master"] in masters[shard["name"]]
        assert shard["failover"]["epoch"] is not None


def test_html_page_renders_every_shard_and_refreshes_itself(settings, topology, client):
    settings.CACHES = {"default": cache_params(topology, "sharded", NEAR_CACHE=True)}
    response = client.get("/status/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for name, found in addresses(topology, "master").items():
        assert f"<strong>{name}</strong>" in page
        assert all(address in page for address in found)
    assert page.count(">reachable<") == 3
    assert "3/3 shards up" in page and "Near-cache" in page
    assert '<noscript><meta http-equiv="refresh"' in page
    assert "fetch(URL_" in page and 'const URL_ = "/status/data/"' in page
    assert "setInterval(refresh, 2000)" in page


def test_hit_rate_near_cache_and_latency_come_from_the_metrics(settings, topology, client):
    settings.CACHES = {"default": cache_params(topology, "sharded", METRICS=True, NEAR_CACHE=True)}
    cache = caches["default"]
    near = cache._router.near
    cache._router.bus.listen()
    assert near.wait_trusted(5)
    before, fills = data(client), near.stats.fills
    key = key_on(cache, "shard2")
    cache.set(key, "v")
    assert cache.get(key) == "v"  # a remote hit, then kept near
    assert cache.get(key) == "v"  # a near hit
    assert cache.get("missing") is None
    after = data(client)
    assert after["metrics"] == {"enabled": True, "source": "this process"}
    grew = {n: after["hit_rate"][n] - before["hit_rate"][n] for n in ("hits", "misses")}
    assert grew == {"hits": 2, "misses": 1}
    near_grew = {n: after["near_cache"][n] - before["near_cache"][n] for n in ("hits", "fills")}
    assert near_grew == {"hits": 1, "fills": near.stats.fills - fills} and near_grew["fills"] >= 1
    assert after["near_cache"]["entries"] >= 1 and after["near_cache"]["untrusted_shards"] == 0
    latency = {s["name"]: s["latency"] for s in after["shards"]}
    calls_before = (before["shards"][2]["latency"] or {}).get("calls", 0)
    assert latency["shard2"]["calls"] - calls_before >= 2  # the set and the remote get
    assert 0 < latency["shard2"]["mean_ms"] < 1000 and latency["shard2"]["p99_ms"] > 0


def test_multiprocess_metrics_are_read_from_the_directory(settings, topology, client, tmp_path,
                                                          monkeypatch):  # fmt: skip
    """Under gunicorn the page sums the workers' files, not this process's registry."""
    settings.CACHES = {"default": cache_params(topology, "sharded", METRICS=True)}
    caches["default"].get("x")
    assert data(client)["hit_rate"]["misses"] >= 1  # this process's registry
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # no worker wrote any file
    found = data(client)
    assert found["metrics"]["source"] == "every worker (multiprocess)"
    assert found["hit_rate"] == {"hits": 0, "misses": 0, "ratio": None}


def test_no_password_appears(settings, tmp_path, client):
    with_password = Topology(tmp_path, shards=2, password="s3cret")
    for topo in running(with_password):
        options = {"METRICS": True, "NEAR_CACHE": True}
        settings.CACHES = {"default": cache_params(topo, "sharded", **options)}
        assert all("s3cret" in url for url in settings.CACHES["default"]["LOCATION"])
        caches["default"].set("k", 1)
        found = data(client)
        assert found["ok"] is True  # the password was used to connect
        topo.kill("shard1-master")  # and an error message is shown too
        assert until(lambda: not data(client)["shards"][1]["ok"], 5)
        bodies = [client.get(u).content.decode() for u in ("/status/", "/status/data/")]
        assert "unreachable" in bodies[0] and '"error": "' in bodies[1]
        for body in bodies:
            assert "s3cret" not in body
        assert "s3cret" not in json.dumps(found)
