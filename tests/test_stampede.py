"""Stampede protection for get_or_set/aget_or_set and @hacache.cached, on real Redis servers."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

import hacache
from hacache import stampede
from hacache.topology import free_port
from tests import stampede_workers
from tests.conftest import _SPAWN, cache_params, make_cache, until

COMPUTE = 0.2  # seconds a slow computation takes


def _cache(topology: Any, scenario: str = "sharded", **options: Any) -> Any:
    cache = make_cache(cache_params(topology, scenario, **options))
    if cache._router.near is not None:
        cache._router.bus.listen()
        assert cache._router.near.wait_trusted(5)
    return cache


def _raw(cache: Any, key: str) -> redis.Redis:
    """A plain client on the shard of ``key`` (before prefix and version)."""
    shard = cache._router.shard_for(cache.make_key(key))
    return redis.Redis(**shard.spec.connection_kwargs)


class Counter:
    """A computation that counts its calls (across threads) and takes ``seconds``."""

    def __init__(self, seconds: float = COMPUTE, fail: bool = False, label: str = "value") -> None:
        self.calls = 0
        self.seconds, self.fail, self.label = seconds, fail, label
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("compute failed")
        return f"{self.label} {n}"


def _together(n: int, call: Any) -> list[Any]:
    """``n`` threads start ``call`` at once; their results (or exceptions), in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


class OpCounter:
    """Counts the operations (one round trip each) a backend sends, sync and async."""

    def __init__(self, cache: Any) -> None:
        self.ops: list[Any] = []
        run, arun = cache._run, cache._arun

        def counted(op: Any) -> Any:
            if op.batches:
                self.ops.append(op)
            return run(op)

        async def acounted(op: Any) -> Any:
            if op.batches:
                self.ops.append(op)
            return await arun(op)

        cache._run, cache._arun = counted, acounted

    def take(self) -> int:
        n, self.ops = len(self.ops), []
        return n


# -- one computation per expiry ---------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["single", "sharded", "near"])
def test_threads_compute_once(topology, scenario):
    cache = _cache(topology, scenario)
    compute = Counter()
    started = time.monotonic()
    results = _together(16, lambda: cache.get_or_set("hot", compute, 30))
    assert compute.calls == 1
    assert results == ["value 1"] * 16
    assert time.monotonic() - started < COMPUTE + 0.3  # the waiters woke with the value
    assert cache.get("hot") == "value 1"  # plain get reads exactly the value


def test_processes_compute_once_per_expiry(topology):
    """3 spawned processes x 4 threads, two rounds a value's lifetime apart: two computations."""
    params = cache_params(topology, "sharded")
    caches = {"default": params}
    rounds = [0.0, 2.0]  # timeout 1 s: the value has expired before round two
    ready, results = _SPAWN.Barrier(3), _SPAWN.Queue()
    args = (caches, "hot", 4, COMPUTE, 1, rounds, ready, results)
    workers = [_SPAWN.Process(target=stampede_workers.hammer, args=args) for _ in range(3)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
    computed = [v for o in outcomes for v in o["computed"]]
    assert len(computed) == 2, computed
    seen = [v for o in outcomes for v in o["seen"]]
    assert set(seen) == set(computed) and len(seen) == 24
    assert max(o["longest"] for o in outcomes) < COMPUTE + 0.5


def test_async_tasks_compute_once(topology):
    cache = _cache(topology)
    calls = []

    async def compute() -> str:
        calls.append(1)
        await asyncio.sleep(COMPUTE)  # the event loop keeps running the waiters
        return "async value"

    async def main() -> list[Any]:
        return await asyncio.gather(*(cache.aget_or_set("hot", compute, 30) for _ in range(10)))

    assert asyncio.run(main()) == ["async value"] * 10
    assert len(calls) == 1


# -- Django's contract --------------------------------------------------------------------------


def test_django_contract_kept(topology):
    cache = _cache(topology)
    assert cache.get_or_set("none", None) is None
    assert cache.has_key("none")  # None is stored, and then a hit
    assert cache.get_or_set("none", "other") is None
    assert cache.get_or_set("plain", "v") == "v"
    cache.set("there", [1, 2])
    assert cache.get_or_set("there", lambda: pytest.fail("must not compute")) == [1, 2]
    assert cache.get_or_set("zero", lambda: "x", timeout=0) == "x"
    assert not cache.has_key("zero")  # timeout 0 stores nothing
    assert cache.get_or_set("v", "two", version=2) == "two"
    assert cache.get("v", version=2) == "two" and cache.get("v") is None


def test_stored_value_is_exactly_what_set_stores(topology):
    cache = _cache(topology, STAMPEDE={"GRACE": 30, "XFETCH_BETA": 1})
    cache.get_or_set("k", {"a": 1}, 10)
    cache.set("ref", {"a": 1}, 10)
    raw = _raw(cache, "k")
    assert raw.get(cache.make_key("k")) == _raw(cache, "ref").get(cache.make_key("ref"))
    assert 9_000 < raw.pttl(cache.make_key("k")) <= 10_000  # the grace is not added to it
    assert cache.get("k") == {"a": 1}


def test_lost_add_race_returns_the_stored_value(topology):
    """As Django's add-then-get: a value stored meanwhile by someone else wins."""
    cache = _cache(topology)

    def compute() -> str:
        cache.set("k", "theirs")
        return "mine"

    assert cache.get_or_set("k", compute) == "theirs"


# -- bounded waits ----------------------------------------------------------------------------


def test_waiting_is_bounded_when_the_holder_never_stores(topology):
    cache = _cache(topology, STAMPEDE={"LEASE": 30, "WAIT": 0.3})
    _raw(cache, "k").set(cache.make_key("k") + ":~lease", "someone else", px=30_000)
    compute = Counter(0.0)
    started = time.monotonic()
    assert cache.get_or_set("k", compute) == "value 1"
    took = time.monotonic() - started
    assert 0.29 < took < 0.3 + 0.15
    assert compute.calls == 1


def test_a_dead_holders_lease_runs_out_and_a_waiter_takes_over(topology):
    cache = _cache(topology, STAMPEDE={"LEASE": 0.3, "WAIT": 5})
    raw = _raw(cache, "k")
    raw.set(cache.make_key("k") + ":~lease", "crashed", px=300)
    started = time.monotonic()
    results = _together(4, lambda: cache.get_or_set("k", Counter(0.1)))
    took = time.monotonic() - started
    assert len(set(results)) == 1  # one of them computed, the others got its value
    assert took < 0.3 + 0.1 + 0.2


def test_a_failed_compute_releases_the_lease(topology):
    cache = _cache(topology)
    lease = cache.make_key("k") + ":~lease"
    raw = _raw(cache, "k")
    failing = Counter(0.3, fail=True)
    outcome: list[Any] = []

    def first() -> None:
        try:
            cache.get_or_set("k", failing)
        except RuntimeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert until(lambda: raw.exists(lease), 5)
    started = time.monotonic()
    assert cache.get_or_set("k", Counter(0.0)) == "value 1"  # woken by the failure, computes
    assert time.monotonic() - started < 0.3 + 0.2  # not the 5 s lease
    thread.join(5)
    assert isinstance(outcome[0], RuntimeError)
    assert not raw.exists(lease)


def test_async_failed_compute_releases_the_lease(topology):
    cache = _cache(topology)

    async def boom() -> str:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        asyncio.run(cache.aget_or_set("k", boom))
    assert not _raw(cache, "k").exists(cache.make_key("k") + ":~lease")
    assert asyncio.run(cache.aget_or_set("k", lambda: "fine")) == "fine"


# -- grace and XFetch -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["sharded", "near"])
def test_grace_serves_the_previous_value_while_one_recomputes(topology, scenario):
    cache = _cache(topology, scenario, STAMPEDE={"GRACE": 30})
    assert cache.get_or_set("k", lambda: "old", 1) == "old"
    assert until(lambda: cache.get("k") is None, 3)  # expired
    slow = Counter(0.5)
    recomputing = threading.Thread(target=lambda: cache.get_or_set("k", slow, 1))
    recomputing.start()
    raw = _raw(cache, "k")
    assert until(lambda: raw.exists(cache.make_key("k") + ":~lease"), 5)
    started = time.monotonic()
    assert cache.get_or_set("k", lambda: pytest.fail("must not compute"), 1) == "old"
    assert time.monotonic() - started < 0.1
    recomputing.join(5)
    assert slow.calls == 1
    assert cache.get_or_set("k", lambda: pytest.fail("must not compute"), 1) == "value 1"


def test_grace_per_call_needs_grace_configured(topology):
    cache = _cache(topology)  # no GRACE: its writes would not delete grace copies
    with pytest.raises(ValueError, match=r"OPTIONS\['STAMPEDE'\]\['GRACE'\] > 0"):
        cache.get_or_set("k", "old", 1, grace=30)
    assert cache.get_or_set("k", "old", 1, grace=0) == "old"
    graced = _cache(topology, STAMPEDE={"GRACE": 1})
    graced.get_or_set("k", "old", 1, grace=30)
    assert 30_000 < _raw(graced, "k").pttl(graced.make_key("k") + ":~stale") <= 31_000


def _held_elsewhere(cache: Any, key: str) -> None:
    """Another caller holds ``key``'s lease and recomputes: a grace copy would be served."""
    made = cache.make_key(key)
    _raw(cache, key).delete(made)
    _raw(cache, key).set(made + ":~lease", "someone else", px=5000)


@pytest.mark.parametrize(
    "write",
    [
        lambda c: c.set("k", "newer", 100),
        lambda c: c.set_many({"k": "newer", "other": 1}, 100),
        lambda c: c.delete("k"),
        lambda c: c.delete_many(["k", "other"]),
        lambda c: c.add("k", "newer") or c.delete("k"),
    ],
    ids=["set", "set_many", "delete", "delete_many", "add"],
)
def test_a_write_deletes_the_grace_copy_so_no_older_value_is_served(topology, write):
    cache = _cache(topology, STAMPEDE={"GRACE": 30, "WAIT": 0.2})
    assert cache.get_or_set("k", "older", 100) == "older"
    stale = cache.make_key("k") + ":~stale"
    assert _raw(cache, "k").exists(stale)
    write(cache)
    assert not _raw(cache, "k").exists(stale)
    _held_elsewhere(cache, "k")  # the key gone, its lease held: grace would answer now
    assert cache.get_or_set("k", "computed", 100) == "computed"  # not "older"


def test_the_grace_copy_is_what_the_key_holds_when_another_write_won(topology):
    """Our SET NX lost to a plain set(B): the copy is B, never our value that was not stored."""
    cache = _cache(topology, STAMPEDE={"GRACE": 30, "WAIT": 0.2})
    flight = stampede.flight(cache, "k", 100, None, None, None, None)
    assert cache._drive(flight.lookup()) is stampede.COMPUTE  # the lease is ours
    cache.set("k", "B", 100)  # meanwhile, a plain write (it deletes any older copy)
    assert cache._run(flight.store("A")) == "B"  # add semantics: the stored value wins
    stale = _raw(cache, "k").get(cache.make_key("k") + ":~stale")
    assert stale == _raw(cache, "k").get(cache.make_key("k"))  # B's bytes, not A's
    _held_elsewhere(cache, "k")
    assert cache.get_or_set("k", "computed", 100) == "B"  # grace: the value that was there


def test_a_store_that_fails_gives_the_lease_back(topology):
    cache = _cache(topology, MAX_VALUE_BYTES=10_000, STAMPEDE={"WAIT": 3})
    lease = cache.make_key("big") + ":~lease"
    for call in (
        lambda: cache.get_or_set("big", lambda: b"x" * 20_000, 100),
        lambda: asyncio.run(cache.aget_or_set("big", lambda: b"x" * 20_000, 100)),
    ):
        with pytest.raises(ValueError, match="MAX_VALUE_BYTES"):
            call()
        assert not _raw(cache, "big").exists(lease)  # the next caller need not wait WAIT
    started = time.monotonic()
    assert cache.get_or_set("big", lambda: "small", 100) == "small"
    assert time.monotonic() - started < 1


def test_keys_lists_the_callers_keys_not_the_companions_and_delete_pattern_takes_both(topology):
    cache = _cache(topology, STAMPEDE={"GRACE": 30, "XFETCH_BETA": 1})
    cache.get_or_set("k", "v", 100)
    made = cache.make_key("k")
    assert _raw(cache, "k").exists(made + ":~stale", made + ":~delta", made + ":~done") == 3
    assert cache.keys("*") == ["k"] and list(cache.iter_keys("k*")) == ["k"]
    assert cache.delete_pattern("k*") >= 1
    assert not _raw(cache, "k").exists(made, made + ":~stale", made + ":~delta", made + ":~done")


def test_incr_and_a_repaired_dropped_write_delete_the_grace_copy_too(topology):
    cache = _cache(topology, STAMPEDE={"GRACE": 30})
    cache.get_or_set("n", 1, 100)
    stale = cache.make_key("n") + ":~stale"
    assert _raw(cache, "n").exists(stale)
    assert cache.incr("n") == 2 and not _raw(cache, "n").exists(stale)
    shard = cache._router.shard_for(cache.make_key("n"))
    cache._router.dropped.record(shard, [cache.make_key("n")])  # as failing open records
    _raw(cache, "n").set(stale, b"0")
    router = cache._router
    other = next(f"o{i}" for i in range(100) if router.shard_for(cache.make_key(f"o{i}")) is shard)
    cache.set(other, 5)  # a write to the same shard carries the repair
    assert not router.dropped.waiting and not _raw(cache, "n").exists(stale)


def test_xfetch_refreshes_early_with_probability(topology, monkeypatch):
    cache = _cache(topology, STAMPEDE={"XFETCH_BETA": 1})
    compute = Counter(0.05)  # delta about 50 ms; the value has 30 s left
    assert cache.get_or_set("k", compute, 30) == "value 1"
    monkeypatch.setattr(stampede, "random", lambda: 0.5)  # -ln(0.5) * 50 ms: far from 30 s
    assert cache.get_or_set("k", compute, 30) == "value 1"
    assert compute.calls == 1
    monkeypatch.setattr(stampede, "random", lambda: 1e-300)  # -ln(1e-300) = 690
    assert cache.get_or_set("k", compute, 30) == "value 2"  # 50 ms x 690 > 30 s: refreshed
    assert compute.calls == 2
    assert cache.get("k") == "value 2"
    assert 29_000 < _raw(cache, "k").pttl(cache.make_key("k")) <= 30_000  # a fresh lifetime


def test_xfetch_with_a_huge_beta_and_one_refresher_at_a_time(topology):
    cache = _cache(topology)
    cache.get_or_set("k", Counter(0.01, label="old"), 30, xfetch_beta=1e9)
    compute = Counter(0.3, label="new")
    results = _together(8, lambda: cache.get_or_set("k", compute, 30, xfetch_beta=1e9))
    assert compute.calls == 1  # all decided to refresh; one could, the others kept the value
    assert sorted(results) == ["new 1"] + ["old 1"] * 7


def test_a_failed_early_refresh_returns_the_still_valid_value(topology, caplog):
    cache = _cache(topology)
    cache.get_or_set("k", Counter(0.01, label="old"), 30, xfetch_beta=1e9)
    failing = Counter(0.01, fail=True)
    with caplog.at_level("WARNING", logger="hacache.stampede"):
        assert cache.get_or_set("k", failing, 30, xfetch_beta=1e9) == "old 1"
    assert failing.calls == 1 and "early refresh of key" in caplog.text
    assert "RuntimeError: compute failed" in caplog.text
    assert not _raw(cache, "k").exists(cache.make_key("k") + ":~lease")  # released
    assert asyncio.run(cache.aget_or_set("k", failing, 30, xfetch_beta=1e9)) == "old 1"
    with pytest.raises(RuntimeError):  # a miss has no value to fall back to
        cache.get_or_set("missing", failing, 30, xfetch_beta=1e9)


def test_xfetch_off_by_default_never_refreshes_early(topology, monkeypatch):
    cache = _cache(topology)
    monkeypatch.setattr(stampede, "random", lambda: 1e-300)
    compute = Counter(0.0)
    for _ in range(3):
        cache.get_or_set("k", compute, 30)
    assert compute.calls == 1


# -- cost: round trips counted, not timed ----------------------------------------------------------


@pytest.mark.parametrize("scenario", ["single", "sharded"])
def test_round_trips_on_hit_and_miss(topology, scenario):
    cache = _cache(topology, scenario)
    count = OpCounter(cache)
    cache.get_or_set("k", "v")
    assert count.take() == 3  # GET, lease, store: as Django's GET, add, GET
    cache.get_or_set("k", "v")
    assert count.take() == 1  # a hit: the GET alone
    cache.get("k")
    assert count.take() == 1
    assert asyncio.run(cache.aget_or_set("k", "v")) == "v"
    assert count.take() == 1
    asyncio.run(cache.aget_or_set("new", "v"))
    assert count.take() == 3


def test_round_trips_with_xfetch_and_grace(topology):
    cache = _cache(topology, STAMPEDE={"GRACE": 10, "XFETCH_BETA": 1})
    count = OpCounter(cache)
    cache.get_or_set("k", "v", 30)
    assert count.take() == 3
    cache.get_or_set("k", "v", 30)
    ((_, commands),) = count.ops[0].batches
    assert count.take() == 1  # PTTL and the compute time ride in the GET's batch
    assert [c[0] for c in commands] == ["GET", "GET", "PTTL"]


def test_a_near_cache_hit_stays_local(topology):
    cache = _cache(topology, "near")
    count = OpCounter(cache)
    cache.get_or_set("k", "v")
    count.take()
    cache.get("k")  # fills the near-cache (the store evicted it)
    count.take()
    assert cache.get_or_set("k", "other") == "v"
    assert count.take() == 0
    assert cache.get_or_set("k", "other", xfetch_beta=1) == "v"
    assert count.take() == 0


def test_django_path_when_off(topology):
    cache = _cache(topology, STAMPEDE=False)
    count = OpCounter(cache)
    assert cache.get_or_set("k", "v") == "v"
    assert count.take() == 3  # Django's own GET, add, GET
    assert not _raw(cache, "k").exists(cache.make_key("k") + ":~lease")
    compute = Counter()
    _together(8, lambda: cache.get_or_set("hot", compute))
    assert compute.calls > 1  # what protection is for
    assert cache.get_or_set("p", "v", protect=True) == "v"  # on for one call
    assert asyncio.run(cache.aget_or_set("a", lambda: "av")) == "av"


def test_protect_false_per_call(topology):
    cache = _cache(topology)
    compute = Counter()
    _together(6, lambda: cache.get_or_set("hot", compute, protect=False))
    assert compute.calls > 1


# -- failing open ---------------------------------------------------------------------------------


def test_redis_down_failing_open_computes_locally(topology):
    dead = f"redis://127.0.0.1:{free_port()}/0?name=dead"
    params = {"BACKEND": "hacache.HACache", "LOCATION": [dead], "KEY_PREFIX": "down",
              "OPTIONS": {"FAIL_OPEN": True}}  # fmt: skip
    cache = make_cache(params)
    for _ in range(5):  # the breaker opens on the way: every call still answers
        started = time.monotonic()
        assert cache.get_or_set("k", lambda: "local") == "local"
        assert time.monotonic() - started < 1.0
    assert asyncio.run(cache.aget_or_set("k", lambda: "alocal")) == "alocal"


def test_redis_down_failing_closed_raises_like_django(topology):
    dead = f"redis://127.0.0.1:{free_port()}/0?name=dead"
    cache = make_cache({"BACKEND": "hacache.HACache", "LOCATION": [dead], "KEY_PREFIX": "down"})
    with pytest.raises(redis.RedisError):
        cache.get_or_set("k", lambda: "x")


def _failing(cache: Any, when: Any) -> None:
    """Make every operation for which ``when(commands)`` holds raise a connection error."""
    run = cache._run

    def failing(op: Any) -> Any:
        if op.batches and when(op.batches[0][1]):
            raise redis.ConnectionError("down for this step")
        return run(op)

    cache._run = failing


def test_a_failed_lease_step_computes_without_protection(topology):
    cache = _cache(topology)
    _failing(cache, lambda commands: commands[-1][0] == "EVAL" and len(commands) == 1)
    compute = Counter(0.0)
    assert cache.get_or_set("k", compute) == "value 1"
    assert cache.get("k") == "value 1"  # stored as usual


def test_a_failed_wait_step_computes_without_waiting(topology):
    cache = _cache(topology, STAMPEDE={"WAIT": 10})
    _raw(cache, "k").set(cache.make_key("k") + ":~lease", "someone else", px=10_000)
    _failing(cache, lambda commands: commands[0][0] == "BLMOVE")
    started = time.monotonic()
    assert cache.get_or_set("k", Counter(0.0)) == "value 1"
    assert time.monotonic() - started < 0.2


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"LEASE": 0}, "OPTIONS['STAMPEDE']['LEASE']"),
        ({"GRACE": -1}, "OPTIONS['STAMPEDE']['GRACE']"),
        ({"XFETCH_BETA": "1"}, "OPTIONS['STAMPEDE']['XFETCH_BETA']"),
        ({"LEASES": 1}, "OPTIONS['STAMPEDE']['LEASES']"),
        ("yes", "OPTIONS['STAMPEDE']"),
    ],
)
def test_bad_options_name_the_setting(topology, value, named):
    with pytest.raises(ImproperlyConfigured, match=re.escape(named)):
        make_cache(cache_params(topology, STAMPEDE=value))


def test_options_defaults():
    assert stampede.parse_option("STAMPEDE", True) == stampede.StampedeOptions(5.0, 5.0, 0.0, 0.0)
    assert stampede.parse_option("STAMPEDE", False) is None
    assert stampede.parse_option("STAMPEDE", {"LEASE": 2}).wait == 2.0  # WAIT follows LEASE
    with pytest.raises(ValueError):
        stampede.resolve(stampede.StampedeOptions(), None, -1, None)


# -- the decorator ------------------------------------------------------------------------------


def test_cached_decorator_sync(settings, topology):
    settings.CACHES = {"default": cache_params(topology)}
    compute = Counter()

    @hacache.cached(timeout=30, key="user:{user_id}:{kind}")
    def profile(user_id: int, kind: str = "full") -> str:
        return f"{compute()} for {user_id}/{kind}"

    results = _together(8, lambda: profile(7))
    assert results == ["value 1 for 7/full"] * 8 and compute.calls == 1
    assert profile(user_id=7) == "value 1 for 7/full"  # same key by name or position
    assert profile(8, "short") == "value 2 for 8/short"
    from django.core.cache import cache

    assert cache.get("user:7:full") == "value 1 for 7/full"

    @hacache.cached(key=lambda a, b: f"sum:{a}:{b}")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3 and cache.get("sum:1:2") == 3

    @hacache.cached()
    def square(x: int) -> int:
        compute()
        return x * x

    calls = compute.calls
    assert square(3) == 9 and square(3) == 9 and square(4) == 16
    assert compute.calls == calls + 2


def test_cached_decorator_async(settings, topology):
    settings.CACHES = {"default": cache_params(topology)}
    calls = []

    @hacache.cached(timeout=30, key="{0}")
    async def fetch(name: str) -> str:
        calls.append(name)
        await asyncio.sleep(COMPUTE)
        return name.upper()

    async def main() -> list[str]:
        return await asyncio.gather(*(fetch("abc") for _ in range(8)))

    assert asyncio.run(main()) == ["ABC"] * 8
    assert calls == ["abc"]
    assert asyncio.iscoroutinefunction(fetch)


def test_cached_decorator_on_another_backend(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

    @hacache.cached(key="k{0}")
    def f(x: int) -> int:
        return x + 1

    @hacache.cached(key="a{0}")
    async def g(x: int) -> int:
        return x + 2

    assert f(1) == 2 and f(1) == 2
    assert asyncio.run(g(1)) == 3 and asyncio.run(g(1)) == 3
