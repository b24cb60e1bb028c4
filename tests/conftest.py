"""Fixtures: real redis-server processes, started once per session by the project's launcher.

Scenario settings come from one function (``cache_params``), so the conformance suite runs
unchanged over a single server, the sharded ring, the ketama ring and the near-cache.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hacache.router import close_all_routers
from hacache.topology import Topology, free_port
from tests import near_workers

REPO = Path(__file__).resolve().parent.parent

SCENARIOS = ("single", "sharded", "ketama", "near")
DELIVERY = 5.0  # seconds: far beyond any expected delay, only there so a failure cannot hang
_SPAWN = multiprocessing.get_context("spawn")
_prefixes = itertools.count()


@contextmanager
def demo_site(caches: dict, work: Path, workers: int = 3) -> Iterator[str]:
    """The demo site under gunicorn with ``caches``, metrics in multiprocess mode (files in
    ``work/prom``), as scripts/demo.sh serves it; yields its base URL, stops it afterwards."""
    (work / "caches.json").write_text(json.dumps(caches))
    (work / "prom").mkdir()
    port = free_port()
    env = {**os.environ, "HACACHE_CACHES_FILE": str(work / "caches.json"),
           "PROMETHEUS_MULTIPROC_DIR": str(work / "prom")}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "testproject.wsgi", "-b", f"127.0.0.1:{port}",
         "-w", str(workers), "-c", str(REPO / "testproject" / "gunicorn_conf.py")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        assert until(lambda: http_status(base + "/health/") == 200, 30)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def http_status(url: str) -> int:
    """The status of a GET (0: no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def running(topo: Topology) -> Iterator[Topology]:
    """For fixtures: start ``topo``, yield it, then close every router and stop it."""
    topo.up()
    try:
        yield topo
    finally:
        close_all_routers()
        topo.down()


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Three plain shards (no replicas): the sharded backend's test bed."""
    yield from running(Topology(tmp_path_factory.mktemp("shards"), shards=3))


@pytest.fixture(autouse=True)
def fresh_routers() -> Iterator[None]:
    """Routers are process-wide: close them after each test so no breaker state, subscriber
    or pooled connection leaks into the next one."""
    yield
    close_all_routers()


def cache_params(topology: Topology, scenario: str = "sharded", **options: Any) -> dict:
    """A ``CACHES`` entry for one scenario, with a KEY_PREFIX no other test uses."""
    urls = topology.master_urls()
    if scenario == "single":
        urls = urls[:1]
    elif scenario == "ketama":
        options.setdefault("PLACEMENT", "ketama")
    elif scenario == "near":
        options.setdefault("NEAR_CACHE", True)
    params: dict[str, Any] = {
        "BACKEND": "hacache.HACache",
        "LOCATION": urls,
        "KEY_PREFIX": f"t{next(_prefixes)}",
    }
    if options:
        params["OPTIONS"] = options
    return params


def make_cache(params: dict) -> Any:
    from hacache.backend import HACache

    return HACache(params["LOCATION"], params)


@pytest.fixture(params=SCENARIOS)
def cache(request: pytest.FixtureRequest, topology: Topology) -> Any:
    """A backend built straight from its params, once per scenario."""
    cache = make_cache(cache_params(topology, request.param))
    if cache._router.near is not None:  # serve from the near-cache from the first call
        cache._router.bus.listen()
        assert cache._router.near.wait_trusted(5)
    return cache


@pytest.fixture
def hacache_caches(settings: Any, topology: Topology) -> dict:
    """Point Django's default cache at the sharded test topology, fresh prefix per test."""
    caches = {"default": cache_params(topology, "sharded")}
    settings.CACHES = caches
    return caches


def key_on(cache: Any, shard: str, prefix: str = "k") -> str:
    """A key (before prefix and version) that the ring puts on the given shard."""
    return next(
        f"{prefix}{i}"
        for i in range(10_000)
        if cache._router.ring.node_for(cache.make_key(f"{prefix}{i}")) == shard
    )


def until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll until ``predicate`` holds; ``timeout`` only keeps a failing test from hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class Remote:
    """Another process using the same cache settings, driven through a pipe."""

    def __init__(self, params: dict) -> None:
        self._conn, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(target=near_workers.serve, args=(child, {"default": params}))
        self.process.start()

    def __call__(self, name: str, *args: Any) -> Any:
        self._conn.send((name, *args))
        if not self._conn.poll(30):
            raise TimeoutError(f"remote {name} did not answer")
        kind, value = self._conn.recv()
        if kind == "raised":
            raise AssertionError(f"remote {name} raised {value}")
        return value

    def stop(self) -> None:
        try:
            self("stop")
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()


@pytest.fixture
def remote_factory() -> Iterator[Any]:
    started: list[Remote] = []

    def start(params: dict) -> Remote:
        remote = Remote(params)
        started.append(remote)
        remote("listen")
        assert remote("wait_trusted", DELIVERY)
        return remote

    yield start
    for remote in started:
        remote.stop()
