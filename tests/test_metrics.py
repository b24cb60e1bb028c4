"""Metrics: exact counts, nothing at all when off, and correct sums under gunicorn workers."""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.test import Client

from hacache.metrics import fold_all
from tests.conftest import cache_params, demo_site, http_status, make_cache


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in an exposition text (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape() -> str:
    fold_all()
    import prometheus_client

    return prometheus_client.generate_latest().decode()


@pytest.fixture
def metered(settings, topology):
    params = cache_params(topology, "sharded", METRICS=True)
    settings.CACHES = {
        "default": params,
        "other": {**params, "KEY_PREFIX": params["KEY_PREFIX"] + "o"},
    }
    from django.core.cache import caches

    return caches["default"]


def test_off_means_the_class_methods_untouched(topology):
    cache = make_cache(cache_params(topology))
    for name in ("get", "set", "get_many", "aget", "incr", "aset_many"):
        assert name not in vars(cache)
    assert cache._run == cache._router.run  # no timing wrapper either


def test_calls_hits_misses_errors_and_latency_are_counted_exactly(metered):
    before = scrape()
    metered.set("a", 1)
    assert metered.get("a") == 1 and metered.get("missing", "d") == "d"
    assert metered.get_many(["a", "b", "c"]) == {"a": 1}
    metered.set_many({"x": 1, "y": 2})
    with pytest.raises(ValueError):
        metered.incr("no-such-counter")
    after = scrape()

    def grew(name, **labels):
        return sample(after, name, alias="default", **labels) - sample(
            before, name, alias="default", **labels
        )

    assert grew("hacache_calls_total", op="get") == 2
    assert grew("hacache_calls_total", op="get_many") == 3  # keys
    assert grew("hacache_calls_total", op="set_many") == 2
    assert grew("hacache_hits_total", op="get") == 1 and grew("hacache_misses_total", op="get") == 1
    assert grew("hacache_hits_total", op="get_many") == 1
    assert grew("hacache_misses_total", op="get_many") == 2
    assert grew("hacache_errors_total", op="incr", error="ValueError") == 1
    assert grew("hacache_latency_seconds_count", op="get") == 2  # one shard each
    assert grew("hacache_latency_seconds_count", op="set_many") >= 1
    assert sample(after, "hacache_shard_up", alias="default") == 3  # three shards, all up
    assert "password" not in after


async def test_the_extended_api_is_counted_and_timed_under_its_own_ops(metered):
    before = scrape()
    metered.set("e", 1)
    assert metered.ttl("e") == 300 and metered.expire("e", 10)
    metered.hset("h", "f", 1)
    assert metered.delete_pattern("h*") == 1
    assert await metered.asadd("s", 1) == 1
    with pytest.raises(redis.ResponseError):
        metered.hget("e", "f")  # a plain value read as a hash
    after = scrape()

    def grew(name, **labels):
        return sample(after, name, alias="default", **labels) - sample(
            before, name, alias="default", **labels
        )

    for op in ("ttl", "expire", "hset", "delete_pattern", "sadd", "hget"):
        assert grew("hacache_calls_total", op=op) == 1, op
    assert grew("hacache_latency_seconds_count", op="ttl") == 1
    assert grew("hacache_latency_seconds_count", op="delete_pattern") >= 3  # every shard
    assert grew("hacache_errors_total", op="hget", error="ResponseError") == 1


def test_aliases_are_labelled_apart(metered, settings):
    from django.core.cache import caches

    before = scrape()
    caches["other"].get("k")
    after = scrape()
    assert (
        sample(after, "hacache_calls_total", alias="other", op="get")
        - sample(before, "hacache_calls_total", alias="other", op="get")
        == 1
    )


async def test_async_calls_are_counted(metered):
    before = scrape()
    await metered.aset("k", 1)
    assert await metered.aget("k") == 1
    assert await metered.aget_many(["k", "z"]) == {"k": 1}
    after = scrape()
    assert sample(after, "hacache_calls_total", alias="default", op="get") - sample(
        before, "hacache_calls_total", alias="default", op="get") == 1  # fmt: skip
    assert sample(after, "hacache_misses_total", alias="default", op="get_many") - sample(
        before, "hacache_misses_total", alias="default", op="get_many") == 1  # fmt: skip


def test_no_count_is_lost_between_threads_and_folds(metered):
    before = sample(scrape(), "hacache_calls_total", alias="default", op="get")
    stop = threading.Event()
    folder = threading.Thread(target=lambda: [fold_all() for _ in iter(stop.is_set, True)])
    folder.start()

    def work() -> None:
        for _ in range(500):
            metered.get("k")

    workers = [threading.Thread(target=work) for _ in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    folder.join()
    assert sample(scrape(), "hacache_calls_total", alias="default", op="get") - before == 2000


# gunicorn's preload: a cache already counting in the parent when the worker is forked.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_counts_its_own_calls(metered):
    metered.get("k")
    before = sample(scrape(), "hacache_calls_total", alias="default", op="get")
    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()

    def in_child() -> None:
        metered.get("k")
        metered.set("k", 1)
        text = scrape()
        child.send(
            [sample(text, "hacache_calls_total", alias="default", op=op) for op in ("get", "set")]
        )

    process = fork.Process(target=in_child)
    process.start()
    assert parent.poll(30)
    got = parent.recv()
    process.join(10)
    assert got[0] == before + 1 and got[1] >= 1


def test_near_cache_counters_and_gauges(topology, settings):
    params = cache_params(topology, "near", METRICS=True)
    settings.CACHES = {"default": params}
    from django.core.cache import caches

    cache = caches["default"]
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(5)
    cache.set("k", "v")
    cache.get("k")
    cache.get("k")
    text = scrape()
    assert sample(text, "hacache_near_hits_total", alias="default") >= 1
    assert sample(text, "hacache_near_entries", alias="default") >= 1
    assert sample(text, "hacache_near_untrusted_shards", alias="default") == 0


def test_the_scrape_view(metered):
    metered.get("k")
    response = Client().get("/metrics/")
    assert response.status_code == 200
    assert b"hacache_calls_total" in response.content


def test_gunicorn_workers_scrape_sums_every_call(topology, tmp_path):
    """Three sync workers, prometheus-client's multiprocess mode: totals equal the calls made."""
    params = cache_params(topology, "sharded", METRICS=True)
    with demo_site({"default": params}, tmp_path) as base:
        requests = 60
        # Concurrent, so that one sync worker cannot take them all: several must serve.
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: http_status(base + "/counter/"), range(requests)))
        assert statuses == [200] * requests
        time.sleep(2.5)  # every worker folds within a second
        with urllib.request.urlopen(base + "/metrics/", timeout=5) as response:
            text = response.read().decode()
    assert sample(text, "hacache_calls_total", op="incr") == requests
    assert sample(text, "hacache_calls_total", op="add") == requests
    pids = {p.name.split("_")[-1].split(".")[0] for p in (tmp_path / "prom").iterdir()}
    assert len(pids) >= 2  # the requests really were spread over several workers
