"""Prewarming: ``hacache.warmup``'s registry, ``manage.py hacache warm`` on three real Redis
shards, and the progress reporters it shares with later bulk commands."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
import redis
from django.apps import apps
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from hacache import progress, warmup
from hacache.router import Router
from tests.conftest import cache_params


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """An empty registry per test (the demo app registers its own warm-up at start-up)."""
    fresh: dict = {}
    monkeypatch.setattr(warmup, "_registry", fresh)
    return fresh


@pytest.fixture
def params(settings: Any, topology: Any) -> dict:
    params = cache_params(topology)
    settings.CACHES = {"default": params}
    return params


def warm(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("hacache", "warm", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def pairs(prefix: str, n: int) -> Iterator[tuple[str, str]]:
    for i in range(n):
        yield f"{prefix}:{i}", f"value {i}"


def redis_keys(topology: Any, prefix: str) -> dict[str, int]:
    """Keys under ``prefix`` on each shard's master, asked directly."""
    found = {}
    for name, node in topology.masters().items():
        client = redis.Redis(host="127.0.0.1", port=node.port)
        found[name] = len(client.keys(f"{prefix}:*"))
        client.close()
    return found


# -- registry --------------------------------------------------------------------------------


def test_register_as_decorator_and_call_again_is_idempotent(registry):
    @warmup.register
    def pages():
        return {}

    @warmup.register(alias="other", name="p", order=-1, timeout=5, version=2, total=3)
    def other():
        return []

    warmup.register(pages)  # a second ready(): the same function, the same name
    warmup.register(pages, order=4)  # may change its options
    assert [(w.alias, w.name, w.order) for w in warmup.registered()] == [
        ("other", "p", -1),
        ("default", "pages", 4),
    ]
    assert [w.name for w in warmup.registered("default")] == ["pages"]
    assert warmup.registered("other")[0].where.endswith("test_warmup.test_register_as_decorator"
                                                        "_and_call_again_is_idempotent.<locals>"
                                                        ".other")  # fmt: skip

    def pages2():
        return {}

    with pytest.raises(ImproperlyConfigured, match="'pages' is already registered for cache alias"):
        warmup.register(pages2, name="pages")
    warmup.register(pages2, name="pages", alias="other")  # unique per alias only
    with pytest.raises(ImproperlyConfigured, match="needs a name"):
        warmup.register(lambda: {})
    with pytest.raises(ImproperlyConfigured, match="total must be"):
        warmup.register(pages2, name="x", total=-1)
    warmup.unregister("pages")
    assert warmup.registered("default") == []

    def ready() -> None:  # a warm-up defined in ready(): a new function object each time
        @warmup.register(alias="r")
        def inner():
            return {}

    ready()
    ready()
    assert [w.name for w in warmup.registered("r")] == ["inner"]


def test_the_demo_apps_ready_registers_once(registry):
    config = apps.get_app_config("testproject")
    config.ready()
    config.ready()  # Django may run it twice (tests, autoreload): no error, one entry
    (found,) = warmup.registered()
    assert (found.alias, found.name, found.timeout, found.total) == ("default", "fragments", 60,
                                                                     1000)  # fmt: skip


def test_hacache_exports_the_registration_api():
    import hacache

    assert hacache.register_warmup is warmup.register and "register_warmup" in hacache.__all__


# -- the command on three shards -------------------------------------------------------------


def test_keys_land_on_every_shard_one_pipeline_per_shard_per_batch(params, topology, monkeypatch):
    ops: list[Any] = []
    run = Router.run

    def counting(self: Router, op: Any) -> Any:
        ops.append(op)
        return run(self, op)

    monkeypatch.setattr(Router, "run", counting)
    produced: list[int] = []  # how far the generator had gone at each batch

    def lazy() -> Iterator[tuple[str, str]]:
        for i, pair in enumerate(pairs("page", 300)):
            produced.append(i)
            yield pair

    warmup.register(lazy, name="pages", timeout=100, total=300)
    code, out, err = warm("--batch", "100")
    assert code == 0, out + err
    assert len(ops) == 3  # one set_many per batch...
    for op in ops:
        shards = [shard.name for shard, _ in op.batches]
        assert sorted(shards) == ["shard0", "shard1", "shard2"]  # ...one pipeline per shard
        assert sum(len(commands) for _, commands in op.batches) == 100
    on_redis = redis_keys(topology, f"{params['KEY_PREFIX']}:1:page")
    assert sum(on_redis.values()) == 300 and all(n > 50 for n in on_redis.values())
    cache = caches["default"]
    assert cache.get("page:7") == "value 7" and 99 < cache.ttl("page:7") <= 100
    assert "default/pages: started (300 keys)" in err and "default/pages: done, 300 keys" in err
    assert "300 keys written" in out and all(f"shard{i} {on_redis[f'shard{i}']}" in out
                                             for i in range(3))  # fmt: skip


def test_a_generator_is_read_lazily(params, monkeypatch):
    seen: list[int] = []
    produced = 0

    def gen() -> Iterator[tuple[str, int]]:
        nonlocal produced
        for i in range(250):
            produced += 1
            yield f"lazy:{i}", i

    set_many = type(caches["default"]).set_many

    def spy(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(produced)
        return set_many(self, data, *args, **kwargs)

    monkeypatch.setattr(type(caches["default"]), "set_many", spy)
    warmup.register(gen)
    assert warm("--batch", "100")[0] == 0
    assert seen == [100, 200, 250]


def test_only_dry_run_list_and_json(params, topology):
    @warmup.register(order=2)
    def first():
        return {f"a:{i}": i for i in range(40)}  # a dict: counted without total=

    @warmup.register(order=1, version=3)
    def second():
        return [(f"b:{i}", i) for i in range(30)]

    code, out, _ = warm("--list")
    assert code == 0 and out.index("second") < out.index("first")

    code, raw, err = warm("--dry-run", "--json")
    assert code == 0 and err == ""  # no progress with --json
    summary = json.loads(raw)
    assert summary["dry_run"] and summary["ok"] and summary["keys"] == 70
    assert [f["name"] for f in summary["functions"]] == ["second", "first"]
    assert sum(summary["functions"][1]["shards"].values()) == 40
    prefix = params["KEY_PREFIX"]
    assert sum(redis_keys(topology, prefix).values()) == 0  # dry run: nothing written

    code, raw, _ = warm("--only", "second", "--json")
    summary = json.loads(raw)
    assert code == 0 and [f["name"] for f in summary["functions"]] == ["second"]
    assert set(summary) == {"ok", "dry_run", "interrupted", "keys", "failed", "seconds",
                            "functions"}  # fmt: skip
    assert set(summary["functions"][0]) == {"alias", "name", "status", "keys", "failed",
                                            "failed_keys", "seconds", "rate", "shards",
                                            "error"}  # fmt: skip
    assert summary["functions"][0]["status"] == "ok" and summary["functions"][0]["keys"] == 30
    assert sum(redis_keys(topology, f"{prefix}:3:b").values()) == 30  # its version
    assert sum(redis_keys(topology, f"{prefix}:1:a").values()) == 0
    assert caches["default"].get("b:4", version=3) == 4

    with pytest.raises(CommandError, match=r"no warm-up named 'nope'.*registered: first, second"):
        warm("--only", "nope")
    with pytest.raises(CommandError, match="no cache alias 'elsewhere'"):
        warmup.register(first, alias="elsewhere")
        warm()
    with pytest.raises(CommandError, match="--batch must be at least 1"):
        warm("--alias", "default", "--batch", "0")


def test_a_function_that_raises_is_reported_and_the_others_run(params):
    @warmup.register(order=0)
    def broken():
        yield "ok:0", 0
        raise RuntimeError("database is down")

    @warmup.register(order=1)
    def bad_shape():
        return [("k", 1, 2, 3)]

    @warmup.register(order=2)
    def fine():
        return pairs("fine", 10)

    code, out, err = warm()
    assert code == 1
    assert "default/broken stopped: RuntimeError: database is down" in out
    assert "not a (key, value) pair" in out
    assert "default/broken: done, 1 keys in" in err and "ERROR RuntimeError" in err
    code, raw, _ = warm("--json")
    summary = json.loads(raw)
    assert code == 1 and not summary["ok"]
    assert [(f["name"], f["status"], f["keys"]) for f in summary["functions"]] == [
        ("broken", "error", 1),
        ("bad_shape", "error", 0),
        ("fine", "ok", 10),
    ]
    assert caches["default"].get("fine:9") == "value 9"


def test_keys_a_failing_open_shard_did_not_store_are_reported(settings, topology):
    params = cache_params(topology, FAIL_OPEN=True)
    params["LOCATION"] = [*params["LOCATION"], "redis://127.0.0.1:1/0?name=gone"]
    settings.CACHES = {"default": params}
    warmup.register(lambda: pairs("k", 200), name="some")
    code, raw, _ = warm("--json")
    (result,) = json.loads(raw)["functions"]
    assert code == 1 and result["status"] == "failed"
    assert result["failed"] > 0 and result["keys"] == 200 - result["failed"]
    assert "gone" not in result["shards"] and sum(result["shards"].values()) == result["keys"]
    assert len(result["failed_keys"]) == min(20, result["failed"])
    assert all(caches["default"]._router.shard_for(
        caches["default"].make_key(k)).name == "gone" for k in result["failed_keys"])  # fmt: skip
    code, out, _ = warm()
    assert code == 1 and f"default/some: {result['failed']:,} keys not stored: k:" in out


def test_ctrl_c_stops_with_a_summary(params):
    def interrupted():
        yield from pairs("int", 5)
        raise KeyboardInterrupt

    warmup.register(interrupted, order=0)
    warmup.register(lambda: pairs("later", 5), name="later", order=1)
    code, out, _ = warm("--batch", "2")
    assert code == 130
    assert re.search(r"interrupted +4 +0 .* interrupted\n", out)
    assert re.search(r"later +- +- +- +- +not run\n", out) and "interrupted (Ctrl-C)" in out
    assert caches["default"].get("int:3") == "value 3"  # written batches stay written
    assert caches["default"].get("later:0") is None


def test_the_rate_limit_holds(params, monkeypatch):
    sizes: list[int] = []
    set_many = type(caches["default"]).set_many

    def spy(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(data))
        return set_many(self, data, *args, **kwargs)

    monkeypatch.setattr(type(caches["default"]), "set_many", spy)
    warmup.register(lambda: pairs("slow", 600), name="slow")
    code, raw, _ = warm("--rate", "1000", "--json")
    summary = json.loads(raw)
    assert code == 0 and summary["keys"] == 600
    assert max(sizes) <= 100  # bursts of at most a tenth of a second's worth
    # Counts over time, not a tight timing: 600 keys at 1000/s take at least 0.6 s.
    assert summary["seconds"] >= 0.6 * 0.95
    assert summary["functions"][0]["rate"] <= 1000 * 1.05


def test_the_demo_warm_up_makes_fragments_hits(hacache_caches):
    apps.get_app_config("testproject").ready()
    code, out, _ = warm("--only", "fragments")
    assert code == 0 and "1,000 keys written" in out
    body = Client().get("/fragments/?n=50").json()
    assert (body["hits"], body["misses"]) == (50, 0)


def test_no_warm_ups_is_not_an_error(params):
    code, out, _ = warm()
    assert code == 0 and "No warm-ups registered" in out


# -- progress reporters ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    clock, out = Clock(), StringIO()
    shown = progress.for_stream(out, interval=5, clock=clock)
    assert type(shown) is progress.Lines
    shown.start("default/pages", 1000)
    for _ in range(10):
        clock.now += 1
        shown.advance(50)
    shown.finish("3 failed")
    assert out.getvalue().splitlines() == [
        "default/pages: started (1,000 keys)",
        "default/pages: 250/1,000 keys, 50 keys/s, ETA 0:15 (25%)",
        "default/pages: 500/1,000 keys, 50 keys/s, ETA 0:10 (50%)",
        "default/pages: done, 500 keys in 10.0 s (50 keys/s), 3 failed",
    ]


def test_a_bar_with_rate_and_eta_on_a_terminal_and_nothing_for_json(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    clock, out = Clock(), Terminal()
    bar = progress.for_stream(out, clock=clock, unit="keys moved")
    assert type(bar) is progress.Bar
    bar.start("reshard", 200)
    clock.now += 2
    bar.advance(50)
    bar.finish()
    text = out.getvalue()
    assert "\r" in text and text.endswith("\n") and "\n" not in text[:-1]
    assert "reshard [" + "#" * 8 + "-" * 22 + "]  25%" in text
    assert "50/200 keys moved, 25 keys moved/s, ETA 0:06" in text

    spinner, out = progress.Bar(Terminal(), clock=clock), None
    spinner.start("count")
    clock.now += 1
    spinner.advance(7)
    assert "7 keys, " in spinner.stream.getvalue() and "ETA" not in spinner.stream.getvalue()

    quiet = progress.for_stream(Terminal(), quiet=True)
    assert type(quiet) is progress.Progress
    quiet.start("x", 1)
    quiet.advance()
    quiet.finish()
    assert quiet.done == 1
    assert progress.duration(3725) == "1:02:05" and progress.duration(65) == "1:05"
