"""The Sentinel monitor: newest report wins, one thread per shard on kept connections.

The discovery logic is tested with scripted sentinel replies; the thread and connection
counts against a real topology.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from hacache.options import parse_options
from hacache.shard import Shard
from hacache.topology import Topology
from tests.conftest import cache_params, make_cache, running, until


def reply(ip: str, port: int, epoch: int, flags: str = "master") -> dict[str, str]:
    return {"ip": ip, "port": str(port), "config-epoch": str(epoch), "flags": flags}


def scripted(answers: dict[tuple[str, int], Any]) -> Shard:
    """A Sentinel shard whose sentinels answer from ``answers`` (an exception: no answer)."""
    urls = ["sentinel://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/svc/0?name=s"]
    options = parse_options(urls, {})
    shard = Shard(options.shards[0], options)

    def ask(sentinel):
        answer = answers[sentinel]
        if isinstance(answer, Exception):
            raise answer
        return answer

    shard.monitor._ask = ask  # type: ignore[union-attr, method-assign]
    return shard


S1, S2, S3 = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)
REPLICA = [[b"ip", b"10.0.0.2", b"port", b"6379", b"flags", b"slave,disconnected",
            b"master-link-status", b"err", b"master-link-down-time", b"800"]]  # fmt: skip


def test_the_newest_report_wins_and_a_lagging_sentinel_never_flips_it_back():
    answers = {
        S1: (reply("10.0.0.1", 6379, 4), []),  # has not heard of the promotion
        S2: (reply("10.0.0.2", 6379, 5), []),  # the failover leader
        S3: redis.ConnectionError("down"),
    }
    shard = scripted(answers)
    shard.monitor.discover(everyone=True)
    assert shard.view.master.address == "10.0.0.2:6379" and shard.view.epoch == 5
    assert shard.monitor.sentinels[0] == S2  # asked first from now on
    answers[S2] = redis.ConnectionError("now S2 is down")
    shard.monitor.discover()  # only the lagging one answers
    assert shard.view.master.address == "10.0.0.2:6379"


def test_a_replica_that_sentinel_flags_disconnected_is_still_read_from():
    shard = scripted({S1: (reply("10.0.0.1", 6379, 1), REPLICA), S2: None, S3: None})
    shard.monitor.discover()
    assert [r.address for r in shard.view.replicas] == ["10.0.0.2:6379"]


def test_a_master_reported_down_holds_writes_until_it_is_up_again():
    answers = {S1: (reply("10.0.0.1", 6379, 1, "master,s_down"), []), S2: None, S3: None}
    shard = scripted(answers)
    shard.monitor.discover()
    assert shard.view.master_down
    shard.monitor._on_event(S1, b"-sdown", b"master svc 10.0.0.1 6379")
    assert not shard.view.master_down
    shard.monitor._on_event(S2, b"+sdown", b"master svc 10.0.0.1 6379")
    assert shard.view.master_down  # any sentinel's report is enough
    shard.monitor._on_event(S2, b"+switch-master", b"svc 10.0.0.1 6379 10.0.0.2 6379")
    assert shard.view.master.address == "10.0.0.2:6379" and not shard.view.master_down


def test_no_sentinel_knowing_the_service_is_a_clear_error():
    shard = scripted({S: redis.ResponseError("No such master") for S in (S1, S2, S3)})
    with pytest.raises(redis.ConnectionError, match="knows the master of 'svc'"):
        shard.monitor.discover(everyone=True)


@pytest.fixture
def sentinels(tmp_path):
    yield from running(Topology(tmp_path, shards=2, replicas=1, sentinels=2, down_after_ms=1000))


def _connections_received(node) -> int:
    return redis.Redis(host=node.host, port=node.port).info("stats")["total_connections_received"]


def test_one_monitor_thread_per_shard_on_kept_connections(sentinels):
    cache = make_cache({**sentinels.caches_setting()["default"], "KEY_PREFIX": "mon"})
    cache.set_many({f"k{i}": i for i in range(20)})  # both shards found and watched
    names = lambda: [t.name for t in threading.enumerate() if t.name.startswith("hacache-sentinel")]  # noqa: E731
    assert until(lambda: len(names()) == 2, 5)
    assert sorted(names()) == ["hacache-sentinel-shard0", "hacache-sentinel-shard1"]
    sentinel = next(n for n in sentinels.nodes() if n.is_sentinel)
    time.sleep(1.5)  # settled: subscribed, first refreshes done
    before = _connections_received(sentinel)
    for shard in cache._router.shards.values():
        for _ in range(5):
            shard.monitor.refresh()  # as a failing request does
            time.sleep(0.05)
    time.sleep(2.2)  # two periodic refreshes too
    assert _connections_received(sentinel) - before <= 1  # the probe's own connection


async def test_first_async_use_finds_the_master_off_the_event_loop(topology):
    """Asking Sentinel blocks: it runs in a worker thread, never in the event loop."""
    plain = topology.nodes()[0]
    options = parse_options(["sentinel://127.0.0.1:1/svc/0?name=s"], {})
    params = cache_params(topology, "single")
    cache = make_cache(params)
    shard = Shard(options.shards[0], options)
    cache._router.shards = {"s": shard}
    cache._router.ring = type(cache._router.ring)({"s": 1})
    cache._router._node_for = cache._router.ring.node_for
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def discover() -> None:
        seen.append(threading.get_ident())
        shard.apply((plain.host, plain.port), [], 1)

    shard.discover = discover  # type: ignore[method-assign]
    shard.monitor.ensure_running = lambda: None  # type: ignore[union-attr, method-assign]
    await cache.aset("k", "v")
    assert await cache.aget("k") == "v"
    assert seen and loop_thread not in seen
