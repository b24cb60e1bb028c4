"""Keys really spread over the real shards, and multi-key calls cost one round trip per shard."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from hacache import driver
from tests.conftest import cache_params, make_cache


def clients(cache) -> dict[str, redis.Redis]:
    return {
        name: redis.Redis(**shard.spec.connection_kwargs)
        for name, shard in cache._router.shards.items()
    }


def command_calls(client: redis.Redis, command: str) -> int:
    return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


@pytest.fixture
def sharded(topology):
    return make_cache(cache_params(topology, "sharded"))


def test_keys_spread_over_every_shard_where_the_ring_says(sharded):
    keys = [f"user:{i}" for i in range(3000)]
    sharded.set_many({k: 1 for k in keys})
    per_shard = Counter()
    for name, client in clients(sharded).items():
        found = client.keys(f"{sharded.key_prefix}:*")
        per_shard[name] = len(found)
        for made in found:
            assert sharded._router.ring.node_for(made.decode()) == name
    assert sum(per_shard.values()) == len(keys)
    assert len(per_shard) == 3
    assert min(per_shard.values()) > 0.75 * len(keys) / 3


def test_each_key_lives_on_exactly_one_shard(sharded):
    sharded.set("only-once", "v")
    made = sharded.make_key("only-once")
    holders = [name for name, c in clients(sharded).items() if c.exists(made)]
    assert holders == [sharded._router.ring.node_for(made)]


def test_reordering_location_moves_no_keys(topology):
    params = cache_params(topology)
    forward = make_cache(params)
    forward.set_many({f"k{i}": i for i in range(200)})
    params = {**params, "LOCATION": list(reversed(params["LOCATION"]))}
    backward = make_cache(params)
    assert backward.get_many([f"k{i}" for i in range(200)]) == {f"k{i}": i for i in range(200)}


def test_get_many_sends_one_mget_per_shard(sharded):
    keys = [f"k{i}" for i in range(100)]
    sharded.set_many({k: k for k in keys})
    by_name = clients(sharded)
    before = {n: command_calls(c, "mget") for n, c in by_name.items()}
    assert len(sharded.get_many(keys)) == 100
    after = {n: command_calls(c, "mget") for n, c in by_name.items()}
    assert {n: after[n] - before[n] for n in by_name} == dict.fromkeys(by_name, 1)


def test_multi_key_calls_write_once_to_every_shard_before_reading(sharded, monkeypatch):
    """Concurrency without threads: every pipeline goes out before any reply is awaited."""
    events = []
    real_start, real_finish = driver._start, driver._finish

    def start(endpoint, commands, idempotent):
        events.append(("send", endpoint.address, len(commands)))
        return real_start(endpoint, commands, idempotent)

    def finish(pending):
        events.append(("read", pending.endpoint.address, len(pending.commands)))
        return real_finish(pending)

    monkeypatch.setattr(driver, "_start", start)
    monkeypatch.setattr(driver, "_finish", finish)
    data = {f"k{i}": i for i in range(100)}
    sharded.set_many(data, timeout=60)
    kinds = [kind for kind, _, _ in events]
    assert kinds == ["send"] * 3 + ["read"] * 3
    assert sum(n for kind, _, n in events if kind == "send") == 100  # one SET EX per key
    events.clear()
    sharded.get_many(list(data))
    sharded.delete_many(list(data))
    assert [kind for kind, _, _ in events] == (["send"] * 3 + ["read"] * 3) * 2


def test_hash_tags_keep_related_keys_together(topology):
    tagged = make_cache(cache_params(topology, HASH_TAGS=True))
    keys = [f"{{cart:17}}:item{i}" for i in range(40)]
    tagged.set_many(dict.fromkeys(keys, 1))
    holders = {
        name for name, c in clients(tagged).items() for k in keys if c.exists(tagged.make_key(k))
    }
    assert len(holders) == 1


def test_weights_on_real_shards(topology):
    urls = topology.master_urls()
    urls[0] += "&weight=4"
    params = {**cache_params(topology), "LOCATION": urls}
    weighted = make_cache(params)
    keys = [f"w{i}" for i in range(3000)]
    weighted.set_many(dict.fromkeys(keys, 1))
    pattern = f"{weighted.key_prefix}:*"
    counts = {name: len(c.keys(pattern)) for name, c in clients(weighted).items()}
    heavy = weighted._router.options.shards[0].name
    assert counts[heavy] > 1.5 * max(v for n, v in counts.items() if n != heavy)
