"""High availability on a real topology: Sentinel-managed shards, each a master and a replica.

Masters are killed, hung and brought back; the tests check what callers see (which calls
succeed, which fail, that no value is ever wrong), not how long things take: the failover
report (``benchmarks/failover.py``) measures that.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis

from hacache.topology import Topology
from hacache.writes import NotReplicated, wait_for_replicas
from tests.conftest import key_on, make_cache, running
from tests.conftest import until as _until

PATIENCE = 15.0  # seconds: generous bounds on waits that normally take well under two


@pytest.fixture
def ha(request, tmp_path) -> Iterator[Topology]:
    """2 shards x (master + replica) + 3 sentinels; a fresh one per test, as tests break it.

    ``@pytest.mark.parametrize("ha", [N], indirect=True)`` asks for N replicas per shard.
    """
    replicas = getattr(request, "param", 1)
    # down-after 1000 ms: with less, a loaded two-core machine sees spurious second failovers.
    yield from running(Topology(tmp_path, shards=2, replicas=replicas, sentinels=3,
                                down_after_ms=1000, failover_timeout_ms=2000))  # fmt: skip


until = partial(_until, timeout=PATIENCE)


def ha_cache(topo: Topology, **options: Any) -> Any:
    """A cache on the Sentinel topology, every shard's master already found."""
    params = {**topo.caches_setting(**options)["default"], "KEY_PREFIX": "ha"}
    cache = make_cache(params)
    for shard in cache._router.shards.values():
        shard.discover()
    return cache


def test_shards_are_found_through_sentinel(ha):
    cache = ha_cache(ha)
    cache.set_many({f"k{i}": i for i in range(50)})
    assert cache.get_many([f"k{i}" for i in range(50)]) == {f"k{i}": i for i in range(50)}
    for name, shard in cache._router.shards.items():
        master = ha.masters()[name]
        assert shard.master.address == f"{master.host}:{master.port}"
        assert [r.address for r in shard.replicas] == [
            f"{n.host}:{n.port}" for n in ha.nodes() if n.shard == name and n.role == "replica"
        ]


class Loop(threading.Thread):
    """Writes increasing versions of one key and reads it back, recording what happens."""

    def __init__(self, cache, key: str) -> None:
        super().__init__(daemon=True)
        self.cache, self.key = cache, key
        self.stop = threading.Event()
        self.acked = 0  # newest version whose write returned
        self.reads = self.writes = 0
        self.read_errors: list[str] = []
        self.write_errors: list[str] = []
        self.wrong: list[tuple[int, int]] = []

    def run(self) -> None:
        version = 0
        while not self.stop.is_set():
            version += 1
            try:
                self.cache.set(self.key, version)
                self.acked = version
                self.writes += 1
            except redis.RedisError as exc:
                self.write_errors.append(repr(exc))
            try:
                value = self.cache.get(self.key)
                self.reads += 1
                if value is None or value < self.acked:
                    self.wrong.append((value, self.acked))
            except redis.RedisError as exc:
                self.read_errors.append(repr(exc))


@pytest.mark.parametrize("ha", [2], indirect=True)
def test_master_killed_under_load(ha):
    """Reads go on from a replica, writes wait for the promotion, no value is ever wrong.

    WAIT_REPLICAS makes every acknowledged write reach a replica first, so the promoted
    replica has them all: read-your-writes holds across the failover. (Two replicas, so that
    the new master has one to wait for once Sentinel has moved it over.)
    """
    cache = ha_cache(ha, WAIT_REPLICAS=1, WAIT_TIMEOUT=0.4, FAILOVER_TIMEOUT=10)
    key = key_on(cache, "shard0")
    shard = cache._router.shards["shard0"]
    old_master = shard.master.address
    loop = Loop(cache, key)
    loop.start()
    assert until(lambda: loop.writes > 20)
    ha.kill("shard0-master")
    killed_at_writes = loop.writes
    assert until(lambda: shard.master.address != old_master)
    assert until(lambda: loop.writes > killed_at_writes + 20)
    loop.stop.set()
    loop.join(PATIENCE)
    assert loop.wrong == []
    assert loop.read_errors == []
    assert loop.write_errors == []
    assert shard.generation >= 1  # moved once (by the event, or by the re-read it prompts)


def test_reads_are_served_by_the_replica_while_the_master_is_down(ha):
    cache = ha_cache(ha, FAILOVER_TIMEOUT=0)
    key = key_on(cache, "shard1")
    with wait_for_replicas(1, 0.4):
        cache.set(key, "durable")
    ha.kill("shard1-master")
    # Before Sentinel has even noticed: the master refuses, the replica answers.
    assert cache.get(key) == "durable"
    assert cache.get_many([key]) == {key: "durable"}
    with pytest.raises(redis.ConnectionError, match="shard1"):
        cache.set(key, "nowhere to write")  # FAILOVER_TIMEOUT 0: no waiting for a promotion
    shard = cache._router.shards["shard1"]
    assert shard.master.breaker.is_open  # the dead master now costs one fast failure
    assert cache.get(key) == "durable"


def test_writes_resume_on_the_promoted_master_and_the_old_one_returns_as_replica(ha):
    cache = ha_cache(ha, FAILOVER_TIMEOUT=10)
    key = key_on(cache, "shard0")
    shard = cache._router.shards["shard0"]
    old = shard.master.address
    cache.set(key, 1)
    ha.kill("shard0-master")
    cache.set(key, 2)  # waits for the promotion, then lands on the new master
    assert shard.master.address != old
    assert cache.get(key) == 2
    # Let every sentinel settle on the new master first: Sentinel can mistake a master it
    # has only just switched to for a dead one and fail over again, here to the empty node.
    new = tuple(shard.master.address.rsplit(":", 1))
    sentinels = [redis.Redis(host=h, port=p, decode_responses=True)
                 for h, p in ha.sentinel_addresses()]  # fmt: skip
    assert until(lambda: all(
        tuple(s.sentinel_get_master_addr_by_name("shard0")) == (new[0], int(new[1]))
        for s in sentinels
    ))  # fmt: skip
    time.sleep(2.5)  # two down-after periods of pings answered by the new master
    ha.start("shard0-master")  # comes back, empty; Sentinel turns it into a replica
    old_client = redis.Redis(host=old.split(":")[0], port=int(old.split(":")[1]))
    # Sentinel notices the returning node at its next INFO refresh (about ten seconds).
    assert until(lambda: old_client.info("replication")["role"] == "slave", timeout=40)
    for i in range(3, 50):
        cache.set(key, i)
    master = ha.masters()["shard0"]
    assert shard.master.address == f"{master.host}:{master.port}" != old
    assert cache.get(key) == 49
    assert until(lambda: old_client.get(cache.make_key(key)) == b"49")


def test_a_demoted_master_answering_readonly_triggers_rediscovery(ha):
    """Point the client at the replica, as a client that missed the failover would be."""
    cache = ha_cache(ha, FAILOVER_TIMEOUT=5)
    key = key_on(cache, "shard1")
    shard = cache._router.shards["shard1"]
    real_master = shard.master
    replica = shard.replicas[0]
    shard.apply(tuple(replica.connection_kwargs[k] for k in ("host", "port")), [], None)
    assert shard.master is replica
    cache.set(key, "written")  # READONLY from the replica; Sentinel is asked; retried
    assert shard.master is real_master
    assert cache.get(key) == "written"
    assert cache.incr(cache.set(key, 1) or key) == 2  # non-idempotent: READONLY wrote nothing


def test_hung_master_costs_reads_a_hedge_and_writes_a_timeout_then_the_breaker_answers(ha):
    cache = ha_cache(ha, SOCKET_TIMEOUT=0.2, FAILOVER_TIMEOUT=0, BREAKER_THRESHOLD=2)
    key = key_on(cache, "shard0")
    cache.set(key, "v")
    shard = cache._router.shards["shard0"]
    master = shard.master
    ha.pause("shard0-master")
    try:
        assert cache.get(key) == "v"  # no reply within HEDGE_DELAY: the replica answered
        assert cache.get(key) == "v"
        assert not master.breaker.is_open  # slow is not failed: a lost hedge books nothing
        for _ in range(2):
            with pytest.raises(redis.TimeoutError, match="shard0"):
                cache.set(key, "w")
        assert master.breaker.is_open
        with pytest.raises(redis.ConnectionError, match="failed repeatedly"):
            cache.set(key, "w")  # fails fast: no connect, no timeout
        assert cache.get(key) == "v"  # straight to the replica while the breaker is open
    finally:
        ha.resume("shard0-master")


def test_a_sentinel_down_changes_nothing(ha):
    cache = ha_cache(ha, FAILOVER_TIMEOUT=10)
    key = key_on(cache, "shard1")
    cache.set(key, 1)
    shard = cache._router.shards["shard1"]
    watched = shard.monitor.sentinels[0]
    ha.kill(next(n.name for n in ha.nodes() if (n.host, n.port) == watched))
    old = shard.master.address
    ha.kill("shard1-master")  # two sentinels are still a quorum
    cache.set(key, 2)
    assert shard.master.address != old
    assert cache.get(key) == 2


def test_failover_drops_the_near_cache_of_that_shard(ha):
    cache = ha_cache(ha, NEAR_CACHE=True, FAILOVER_TIMEOUT=10)
    key = key_on(cache, "shard0")
    other = key_on(cache, "shard1")
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(5)
    cache.set_many({key: "a", other: "b"})
    cache.get_many([key, other])
    near = cache._router.near
    assert near.get(cache.make_key(key)) is not None
    ha.kill("shard0-master")
    cache.set(key, "after")  # waits for the promotion
    assert near.get(cache.make_key(other)) == near.get(cache.make_key(other))  # untouched
    assert cache.get(key) == "after"
    assert until(lambda: near.trusted("shard0"))  # listening on the new master
    assert near.stats.resubscribe_flushes >= 1


def test_wait_for_replicas(ha):
    cache = ha_cache(ha, WAIT_REPLICAS=1, WAIT_TIMEOUT=0.2)
    key = key_on(cache, "shard0")
    cache.set(key, "replicated")
    ha.stop("shard0-replica1")
    with pytest.raises(NotReplicated, match="0 of 1"):
        cache.set(key, "not replicated")
    with wait_for_replicas(0):
        cache.set(key, "fine without")
    assert cache.get(key) == "fine without"


def test_fail_open_reports_unreplicated_writes_as_not_stored(ha):
    cache = ha_cache(ha, FAIL_OPEN=True, WAIT_REPLICAS=1, WAIT_TIMEOUT=0.1)
    key = key_on(cache, "shard1")
    assert cache.add(key, "replicated") is True
    ha.stop("shard1-replica1")
    assert cache.add(key_on(cache, "shard1", "other"), "not replicated") is False
    assert cache.set_many({key: 1}) == [key]
    cache.set(key, 2)  # no error reaches the caller


def test_fail_open_whole_shard_down(ha):
    cache = ha_cache(ha, FAIL_OPEN=True, FAILOVER_TIMEOUT=0)
    down, up = key_on(cache, "shard0"), key_on(cache, "shard1")
    cache.set_many({down: 1, up: 2})
    ha.kill("shard0-replica1")
    ha.kill("shard0-master")
    assert cache.get(down, "default") == "default"
    assert cache.get_many([down, up]) == {up: 2}
    assert cache.has_key(down) is False
    assert cache.set(down, 3) is None
    assert cache.add(down, 3) is False
    assert cache.delete(down) is False
    assert cache.touch(down) is False
    assert cache.set_many({down: 4, up: 5}) == [down]
    assert cache.get(up) == 5
    with pytest.raises(ValueError):
        cache.incr(down)
    assert cache.clear() is False


# -- one replica per master: the commonest topology, under the load ----------------


class Load:
    """Two writer threads and one reader thread doing set/get on 200 keys of one shard.

    Each writer owns half the keys and writes increasing versions of them, reading each one
    back; the reader reads any key. A read is *wrong* when it returns a version older than
    the newest one acknowledged for that key when the read began (failing open, a miss is
    allowed, as from an empty cache; otherwise every key always exists, without expiry).
    """

    def __init__(self, cache, keys: list[str], misses_allowed: bool = False) -> None:
        self.cache, self.keys, self.misses_allowed = cache, keys, misses_allowed
        self.acked = dict.fromkeys(keys, 0)
        self.stop = threading.Event()
        self.reads = self.writes = 0
        self.read_errors: list[str] = []
        self.write_errors: list[str] = []
        self.wrong: list[tuple[str, Any, int]] = []
        cache.set_many(dict.fromkeys(keys, 0), timeout=None)
        halves = [keys[0::2], keys[1::2]]
        self.threads = [
            threading.Thread(target=self._write, args=(h,), daemon=True) for h in halves
        ]
        self.threads.append(threading.Thread(target=self._read, daemon=True))

    def _check(self, key: str, floor: int) -> None:
        try:
            value = self.cache.get(key)
        except redis.RedisError as exc:
            self.read_errors.append(repr(exc))
            return
        self.reads += 1
        if (value is None and not self.misses_allowed) or (value is not None and value < floor):
            self.wrong.append((key, value, floor))

    def _write(self, keys: list[str]) -> None:
        versions = dict.fromkeys(keys, 0)
        while not self.stop.is_set():
            for key in keys:
                versions[key] += 1
                try:
                    self.cache.set(key, versions[key], timeout=None)
                    self.acked[key] = versions[key]
                    self.writes += 1
                except redis.RedisError as exc:
                    self.write_errors.append(repr(exc))
                self._check(key, self.acked[key])

    def _read(self) -> None:
        for key in itertools.cycle(self.keys):
            if self.stop.is_set():
                return
            self._check(key, self.acked[key])

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(PATIENCE)

    def progress(self, more: int) -> bool:
        """Wait until ``more`` further writes and reads have succeeded."""
        writes, reads = self.writes, self.reads
        return until(lambda: self.writes >= writes + more and self.reads >= reads + more)


def shard0_keys(cache, count: int = 200) -> list[str]:
    ring = cache._router.ring
    keys = (f"load{i}" for i in itertools.count())
    return list(
        itertools.islice((k for k in keys if ring.node_for(cache.make_key(k)) == "shard0"), count)
    )


def fail_over(ha: Topology, cache, load: Load, how: str = "kill") -> None:
    """Kill (or pause) shard0's master under the load; return once writes flow again."""
    shard = cache._router.shards["shard0"]
    old = shard.master
    assert load.progress(200)
    if how == "kill":
        ha.kill("shard0-master")
    else:
        ha.pause("shard0-master")
    assert until(lambda: shard.master is not old)
    assert load.progress(200)


def test_one_replica_master_killed_no_read_error_no_wrong_value(ha):
    cache = ha_cache(ha)
    with Load(cache, shard0_keys(cache)) as load:
        fail_over(ha, cache, load)
    assert load.read_errors == []
    assert load.wrong == []
    assert load.write_errors  # failing closed with FAILOVER_TIMEOUT 0: the dead master's


def test_one_replica_master_hung_no_read_error_no_wrong_value(ha):
    cache = ha_cache(ha, SOCKET_TIMEOUT=0.25)
    try:
        with Load(cache, shard0_keys(cache)) as load:
            fail_over(ha, cache, load, how="pause")
    finally:
        ha.resume("shard0-master")
    assert load.read_errors == []
    assert load.wrong == []


def test_one_replica_fail_open_no_error_and_nothing_older_than_an_acknowledged_write(ha):
    cache = ha_cache(ha, FAIL_OPEN=True)
    with Load(cache, shard0_keys(cache), misses_allowed=True) as load:
        fail_over(ha, cache, load)
    assert load.read_errors == [] and load.write_errors == []
    assert load.wrong == []
    assert not cache._router.dropped.waiting  # repaired on the promoted master
    for key in load.keys:  # and what the promoted replica held of the dropped writes is gone
        assert cache.get(key) in (None, load.acked[key])


def test_one_replica_near_cache_master_killed(ha):
    cache = ha_cache(ha, NEAR_CACHE=True)
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(5)
    with Load(cache, shard0_keys(cache)) as load:
        fail_over(ha, cache, load)
    assert load.read_errors == []
    assert load.wrong == []
    assert until(lambda: cache._router.near.trusted("shard0"))  # listening on the new master


def test_one_replica_async_master_killed(ha):
    cache = ha_cache(ha)
    keys = shard0_keys(cache)
    errors: list[str] = []
    wrong: list[tuple[str, Any, int]] = []
    acked = dict.fromkeys(keys, 0)
    cache.set_many(dict.fromkeys(keys, 0), timeout=None)
    stop = threading.Event()
    done = {"reads": 0, "writes": 0}

    async def writer(own: list[str]) -> None:
        version = 0
        while not stop.is_set():
            version += 1
            for key in own:
                with contextlib.suppress(redis.RedisError):
                    await cache.aset(key, version, timeout=None)
                    acked[key] = version
                    done["writes"] += 1
                await reader_once(key)

    async def reader_once(key: str) -> None:
        floor = acked[key]
        try:
            value = await cache.aget(key)
        except redis.RedisError as exc:
            errors.append(repr(exc))
            return
        done["reads"] += 1
        if value is None or value < floor:
            wrong.append((key, value, floor))

    async def reader() -> None:
        for key in itertools.cycle(keys):
            if stop.is_set():
                return
            await reader_once(key)
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(writer(keys[0::2]), writer(keys[1::2]), reader())

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    shard = cache._router.shards["shard0"]
    old = shard.master
    assert until(lambda: done["writes"] > 200)
    ha.kill("shard0-master")
    assert until(lambda: shard.master is not old)
    writes = done["writes"]
    assert until(lambda: done["writes"] > writes + 200)
    stop.set()
    thread.join(PATIENCE)
    assert errors == []
    assert wrong == []


DEMO_PAGES = ("/", "/cached/", "/counter/", "/async/counter/", "/slow/", "/fragments/",
              "/session/", "/item/example/", "/health/")  # fmt: skip


def test_the_demo_serves_no_error_while_a_master_dies(ha, settings):
    """The demo's recommended options (FAIL_OPEN, near-cache): browsing sees no HTTP 500."""
    from django.test import Client

    from tests.test_testproject import demo_options

    entry = {**ha.caches_setting(**demo_options())["default"], "KEY_PREFIX": "demo"}
    settings.CACHES = {"default": entry}
    client = Client(raise_request_exception=False)
    statuses: list[tuple[str, int]] = []

    def browse() -> None:
        for page in DEMO_PAGES:
            statuses.append((page, client.get(page).status_code))

    browse()
    from django.core.cache import cache

    from testproject.views import COUNTER_KEY

    shard = cache._router.shard_for(cache.make_key(COUNTER_KEY))  # the page most at risk
    old = shard.master
    ha.kill(f"{shard.name}-master")
    assert until(lambda: browse() or shard.master is not old)
    for _ in range(3):
        browse()
    # /health/ is the one page meant to say so (503) while its probe key's shard is down.
    assert [s for s in statuses if s[1] >= 500 and s != ("/health/", 503)] == []
    assert len(statuses) > 3 * len(DEMO_PAGES)


def test_the_extended_api_follows_a_failover(ha, settings):
    """django-redis's calls go where the plain ones go: the replica for the escape hatch's
    reads, the promoted master after a failover, with nothing acknowledged lost."""
    from django.core.cache import caches

    from hacache import get_redis_connection

    params = ha.caches_setting(FAILOVER_TIMEOUT=10)["default"]
    settings.CACHES = {"default": {**params, "KEY_PREFIX": "x"}}
    cache = caches["default"]
    for each in cache._router.shards.values():
        each.discover()
    key = key_on(cache, "shard0")
    shard = cache._router.shards["shard0"]
    with wait_for_replicas(1, 0.3):  # the promoted replica must have them
        cache.set_many({f"{key}:{i}": i for i in range(20)})
    cache.hset(key, "f", "v")  # replicated too: waited for below
    reader = get_redis_connection(shard="shard0", write=False)
    assert reader.info("replication")["role"] == "slave"
    assert get_redis_connection(shard="shard0").info("replication")["role"] == "master"
    assert until(lambda: reader.hget(cache.make_key(key), "f") is not None)
    old = shard.master.address
    ha.kill("shard0-master")
    assert cache.expire(f"{key}:0", 60) is True  # a write: waits for the promotion
    assert shard.master.address != old
    assert 0 < cache.ttl(f"{key}:0") <= 60 and cache.hget(key, "f") == "v"
    assert sorted(cache.keys(f"{key}:*")) == sorted(f"{key}:{i}" for i in range(20))
    assert cache.delete_pattern(f"{key}:*") == 20
    assert get_redis_connection(shard="shard0").info("replication")["role"] == "master"
    with cache.lock("job", timeout=5):
        assert not cache.lock("job", blocking=False).acquire()
