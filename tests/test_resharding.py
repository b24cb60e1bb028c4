"""Migration mode (PREVIOUS_LOCATION) on real Redis: a ring change without a cold cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from hacache import resharding
from hacache.mover import Mover, key_pattern
from hacache.topology import Topology, free_port
from tests.conftest import DELIVERY, REPO, make_cache, running, until

N = 600


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> Iterator[Topology]:
    yield from running(Topology(tmp_path_factory.mktemp("four"), shards=4))


@pytest.fixture
def urls(four) -> list[str]:
    for url in four.master_urls():
        redis.Redis.from_url(url.split("?")[0]).flushdb()
    return four.master_urls()


def params(location, previous=None, **options) -> dict:
    if previous is not None:
        options["PREVIOUS_LOCATION"] = previous
    return {"LOCATION": location, "KEY_PREFIX": "r", "OPTIONS": options}


def client(cache, shard) -> redis.Redis:
    return redis.Redis(**shard.spec.connection_kwargs)


def raw_on(cache, shard, key) -> bytes | None:
    return client(cache, shard).get(cache.make_key(key))


def moved_keys(cache, count=N) -> list[str]:
    router = cache._router
    return [f"k{i}" for i in range(count) if router.previous_owner(cache.make_key(f"k{i}"))]


def test_adding_a_shard_keeps_every_key_readable(urls):
    before = make_cache(params(urls[:3]))
    before.set_many({f"k{i}": i for i in range(N)}, timeout=500)
    plain = make_cache(params(urls))
    hits_without = len(plain.get_many([f"k{i}" for i in range(N)]))
    assert 0.5 * N < hits_without < 0.9 * N  # about 3/4: the quarter that moved misses
    after = make_cache(params(urls, urls[:3]))
    half = N // 2
    assert after.get_many([f"k{i}" for i in range(half)]) == {f"k{i}": i for i in range(half)}
    assert all(after.get(f"k{i}") == i for i in range(half, N))
    # Each moved key is now on its new owner too, with the lifetime it had.
    assert len(plain.get_many([f"k{i}" for i in range(N)])) == N
    moved = moved_keys(after)
    assert moved and all(490 <= plain.ttl(k) <= 500 for k in moved[:20])


def test_a_read_costs_nothing_more_for_keys_that_did_not_move(urls, monkeypatch):
    after = make_cache(params(urls, urls[:3]))
    stay = next(
        f"s{i}" for i in range(100) if not after._router.previous_owner(after.make_key(f"s{i}"))
    )
    moved = next(
        f"m{i}" for i in range(100) if after._router.previous_owner(after.make_key(f"m{i}"))
    )
    ops = []
    run = after._router.run
    monkeypatch.setattr(after, "_run", lambda op: ops.append(op) or run(op))
    assert after.get(stay) is None
    assert len(ops) == 1  # just the miss
    ops.clear()
    assert after.get(moved) is None
    assert len(ops) == 2  # the miss, then one pipeline to the previous owner


def test_a_copy_never_replaces_a_newer_value(urls):
    after = make_cache(params(urls, urls[:3]))
    key = moved_keys(after)[0]
    made = after.make_key(key)
    old_owner = after._router.previous_owner(made)
    client(after, old_owner).set(made, b"1")  # the old value, still on the previous owner
    new_owner = after._router.shard_for(made)
    client(after, new_owner).set(made, b"2")  # written there after this process missed
    assert after._drive(resharding._from_previous(after, [made])) == {made: 2}
    assert raw_on(after, new_owner, key) == b"2"


def test_writes_and_deletes_remove_the_previous_copy(urls):
    before = make_cache(params(urls[:3]))
    after = make_cache(params(urls, urls[:3]))
    keys = moved_keys(after, 200)[:6]
    before.set_many(dict.fromkeys(keys, "old"))
    a, b, c, d, e, f = keys
    after.set(a, "new")
    after.delete(b)
    after.set_many({c: "new"})
    after.delete_many([d])
    assert before.get_many(keys) == {e: "old", f: "old"}  # gone from the previous owners
    assert after.get(a) == "new" and after.get(c) == "new"
    assert after.get(b) is None and after.get(d) is None  # and never read back from there
    assert after.delete(e) is True  # existed (on the previous owner)
    assert after.get(e) is None and not after.has_key(e)


def test_calls_that_need_the_key_see_the_previous_owners(urls):
    before = make_cache(params(urls[:3]))
    after = make_cache(params(urls, urls[:3]))
    a, b, c, d, e = moved_keys(after, 200)[:5]
    before.set_many({a: 1, b: 1, c: 1, d: 1, e: 1}, timeout=100)
    assert after.add(a, 2) is False and after.get(a) == 1
    assert after.incr(b, 5) == 6
    assert after.touch(c, 50) is True and 48 <= after.ttl(c) <= 50
    assert after.incr_version(d) == 2 and after.get(d, version=2) == 1
    assert after.get(d) is None
    assert 90 <= after.ttl(e) <= 100 and after.has_key(e)
    assert after.set(e, 9, nx=True) is False


def test_get_or_set_reads_a_moved_key_through_instead_of_computing(urls):
    before = make_cache(params(urls[:3]))
    after = make_cache(params(urls, urls[:3]))
    a, b = moved_keys(after)[:2]
    before.set(a, "kept")
    computed = []
    assert after.get_or_set(a, lambda: computed.append(a) or "new") == "kept"
    assert after.get_or_set(b, lambda: computed.append(b) or "fresh") == "fresh"
    assert computed == [b] and after.get(b) == "fresh"


async def test_aget_or_set_reads_a_moved_key_through(urls):
    before = make_cache(params(urls[:3]))
    after = make_cache(params(urls, urls[:3]))
    a = moved_keys(after)[0]
    before.set(a, "kept")
    assert await after.aget_or_set(a, "new") == "kept"


def test_removing_a_shard_reads_through_and_clears_it(urls):
    before = make_cache(params(urls))
    before.set_many({f"k{i}": i for i in range(N)})
    after = make_cache(params(urls[:3], urls))
    assert after.get_many([f"k{i}" for i in range(N)]) == {f"k{i}": i for i in range(N)}
    leaving = after._router.previous_shards["shard3"]
    before.set_many({"p:1": 1, "p:2": 2})  # some of them on the leaving shard
    assert after.delete_pattern("p:*") == 2
    assert after.keys("p:*") == []
    assert after.clear() is True
    assert client(after, leaving).dbsize() == 0  # cleared too: nothing to read back


def test_an_unreachable_previous_shard_reads_as_empty(urls, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0?name=gone"
    after = make_cache(params(urls[:3], [*urls[:3], dead], SOCKET_CONNECT_TIMEOUT=0.2))
    key = next(k for k in (f"k{i}" for i in range(200))
               if after._router.previous_owner(after.make_key(k)))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hacache.resharding"):
        assert after.get(key, "dflt") == "dflt"
        after.set(key, 1)
    assert after.get(key) == 1
    assert "previous shard 'gone' unreachable" in caplog.text


def test_copies_made_here_when_the_servers_cannot_reach_each_other(urls, monkeypatch):
    before = make_cache(params(urls[:3]))
    after = make_cache(params(urls, urls[:3]))
    key = moved_keys(after)[0]
    before.set(key, "v", timeout=100)
    closed = free_port()
    monkeypatch.setattr(resharding, "_copy_command",
                        lambda target, k, t: ("MIGRATE", "127.0.0.1", closed, "", 0, t, "COPY",
                                              "KEYS", k))  # fmt: skip
    assert after.get(key) == "v"
    new_owner = after._router.shard_for(after.make_key(key))
    assert raw_on(after, new_owner, key) is not None
    assert 95 <= client(after, new_owner).ttl(after.make_key(key)) <= 100


async def test_async_twins(urls):
    before = make_cache(params(urls[:3]))
    after = make_cache(params(urls, urls[:3]))
    a, b = moved_keys(after)[:2]
    before.set_many({a: 1, b: 2})
    assert await after.aget(a) == 1
    assert await after.aget_many([a, b]) == {a: 1, b: 2}
    await after.adelete(b)
    assert before.get(b) is None and await after.aget(b) is None


def test_near_caches_stay_coherent_across_both_rings(urls, remote_factory):
    before = make_cache(params(urls[:3]))
    conf = params(urls, urls[:3], NEAR_CACHE=True)
    conf["BACKEND"] = "hacache.HACache"
    local = make_cache(conf)
    local._router.bus.listen()
    assert local._router.near.wait_trusted(DELIVERY)
    key = moved_keys(local)[0]
    before.set(key, "old")
    remote = remote_factory(conf)
    assert remote("get", key) == "old"
    local.set(key, "new")
    assert until(lambda: remote("get", key) == "new", DELIVERY)
    local.delete(key)
    assert until(lambda: remote("get", key) is None, DELIVERY)


def test_without_previous_location_nothing_is_replaced(urls):
    cache = make_cache(params(urls))
    assert "get" not in vars(cache) and cache._router.previous_ring is None


@pytest.mark.parametrize(
    ("previous", "match"),
    [
        (["redis://127.0.0.1:1"], r"PREVIOUS_LOCATION.*same shards as LOCATION"),
        (["redis://127.0.0.2:1?name=127.0.0.1:1"], r"PREVIOUS_LOCATION.*same server"),
        (["http://x"], r"PREVIOUS_LOCATION"),
        (["redis://a:1?name=x", "redis://b:1?name=x"], r"PREVIOUS_LOCATION.*given twice"),
    ],
)
def test_bad_previous_location_names_the_setting(previous, match):
    with pytest.raises(ImproperlyConfigured, match=match):
        make_cache(params(["redis://127.0.0.1:1"], previous))


# -- the mover -------------------------------------------------------------------------------


def test_the_mover_moves_every_moved_key_once_keeping_ttls_and_newer_values(urls):
    before = make_cache(params(urls[:3]))
    before.set_many({f"k{i}": i for i in range(N)}, timeout=500)
    before.hset("h", "f", "v")
    before.sadd("s", 1, 2)
    after = make_cache(params(urls, urls[:3]))
    moved = moved_keys(after)
    newer = moved[0]
    plain = make_cache(params(urls))
    plain.set(newer, "newer")  # written on the new owner since the change
    mover = Mover(after._router, key_pattern(after), batch=50)
    assert mover.left_to_move() == len(moved) + sum(
        bool(after._router.previous_owner(after.make_key(k))) for k in ("h", "s")
    )
    summary = mover.run()
    assert summary.left_to_move == 0 and summary.as_dict()["previous_location_removable"]
    assert summary.moved + sum(s.kept_newer for s in summary.shards) == mover_total(after, moved)
    # Every key readable without the previous ring now, lifetimes and the newer value kept.
    assert plain.get_many([f"k{i}" for i in range(N)]) == {
        **{f"k{i}": i for i in range(N)},
        newer: "newer",
    }
    assert all(490 <= plain.ttl(k) <= 500 for k in moved[1:20])
    assert plain.hget("h", "f") == "v" and plain.smembers("s") == {1, 2}
    for shard in after._router.previous_shards.values():  # nothing left behind
        for key in moved:
            made = after.make_key(key)
            if after._router.previous_owner(made) is shard:
                assert client(after, shard).exists(made) == 0


def mover_total(cache, moved) -> int:
    structures = sum(bool(cache._router.previous_owner(cache.make_key(k))) for k in ("h", "s"))
    return len(moved) + structures


def test_the_mover_resumes_after_an_interrupt(urls):
    before = make_cache(params(urls[:3]))
    before.set_many({f"k{i}": i for i in range(N)})
    after = make_cache(params(urls, urls[:3]))
    moved = moved_keys(after)
    mover = Mover(after._router, key_pattern(after), batch=20)
    batches = []

    def interrupt(progress, scanned):
        batches.append(progress.shard)
        if len(batches) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mover.run(on_batch=interrupt)
    copied = make_cache(params(urls)).get_many(moved)
    assert 0 < len(copied) < len(moved)  # part of the work was done
    resumed = Mover(after._router, key_pattern(after), batch=20)
    interrupted = after._router.previous_shards[batches[-1]]
    saved = resumed._load(interrupted)
    assert saved.cursor != 0 and saved.scanned > 0  # where it stopped, saved on the shard
    first = []
    summary = resumed.run(on_batch=lambda p, n: first.append(p.scanned) if not first else None)
    assert first[0] > saved.scanned  # went on from there, not from the start
    assert summary.left_to_move == 0
    assert make_cache(params(urls)).get_many(moved) == {k: int(k[1:]) for k in moved}


def test_the_mover_keeps_to_its_rate(urls):
    before = make_cache(params(urls[:3]))
    before.set_many({f"k{i}": i for i in range(300)})
    after = make_cache(params(urls, urls[:3]))
    mover = Mover(after._router, key_pattern(after), batch=50, rate=1000)
    summary = mover.run()
    scanned = sum(s.scanned for s in summary.shards)
    assert scanned >= 300
    assert summary.seconds >= (scanned - 50) / 1000  # on average at most 1000 keys/s


# -- manage.py hacache reshard ---------------------------------------------------------------


def hacache(*args: str) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("hacache", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_the_reshard_command_moves_checks_and_says_when_to_drop_the_option(urls, settings):
    make_cache(params(urls[:3])).set_many({f"k{i}": i for i in range(N)})
    settings.CACHES = {"default": {"BACKEND": "hacache.HACache", **params(urls, urls[:3])}}
    status, text = hacache("reshard", "--check")
    assert status == 1 and "still live on a previous owner" in text
    status, text = hacache("reshard", "--batch", "100")
    assert status == 0, text
    assert "keys moved" in text and "PREVIOUS_LOCATION can be removed" in text
    status, text = hacache("--json", "reshard", "--check")
    assert status == 0 and json.loads(text) == {
        "left_to_move": 0,
        "previous_location_removable": True,
    }
    first = json.loads(hacache("reshard", "--json")[1])
    again = json.loads(hacache("reshard", "--json")[1])  # done: saved totals, no new pass
    assert first["moved"] == again["moved"] == len(moved_keys(make_cache(params(urls, urls[:3]))))
    assert [s["scanned"] for s in first["shards"]] == [s["scanned"] for s in again["shards"]]
    assert again["previous_location_removable"]


def test_reshard_refuses_an_alias_without_previous_location(urls, settings):
    settings.CACHES = {"default": {"BACKEND": "hacache.HACache", **params(urls)}}
    with pytest.raises(CommandError, match="no PREVIOUS_LOCATION"):
        call_command("hacache", "reshard")


def test_a_mover_killed_midway_resumes_in_another_process(urls, tmp_path):
    make_cache(params(urls[:3])).set_many({f"k{i}": i for i in range(N)})
    caches = {"default": {"BACKEND": "hacache.HACache", **params(urls, urls[:3])}}
    (tmp_path / "caches.json").write_text(json.dumps(caches))
    env = {**os.environ, "HACACHE_CACHES_FILE": str(tmp_path / "caches.json")}
    command = [sys.executable, "manage.py", "hacache", "reshard", "--batch", "10"]
    slow = subprocess.Popen([*command, "--rate", "200"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    after = make_cache(params(urls, urls[:3]))
    mover = Mover(after._router, key_pattern(after))
    first = after._router.previous_shards["shard0"]
    try:
        assert until(lambda: mover._load(first).scanned >= 50, 30)
    finally:
        slow.kill()  # SIGKILL: no chance to clean up
        slow.wait(10)
    saved = mover._load(first)
    assert not saved.done and saved.cursor != 0
    done = subprocess.run([*command, "--json"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["previous_location_removable"] is True
    moved = moved_keys(after)
    assert make_cache(params(urls)).get_many(moved) == {k: int(k[1:]) for k in moved}


def test_a_call_that_needs_a_moved_structure_moves_it_instead_of_raising(urls):
    before = make_cache(params(urls[:3]))
    for i in range(40):
        before.hset(f"h{i}", mapping={"a": 1})
        before.expire(f"h{i}", 500)
    after = make_cache(params(urls, urls[:3]))
    router = after._router
    key = next(f"h{i}" for i in range(40) if router.previous_owner(after.make_key(f"h{i}")))
    made = after.make_key(key)
    assert 490 <= after.ttl(key) <= 500  # WRONGTYPE before: it read the hash with GET
    assert client(after, router.shard_for(made)).exists(made)  # moved to its owner...
    assert not client(after, router.previous_owner(made)).exists(made)  # ...not copied
    assert after.hgetall(key) == {"a": 1}
    assert after.hdel(key, "a") == 1 and after.hgetall(key) == {}
    assert after.ttl(key) == 0 and after.hgetall(key) == {}  # not brought back
