"""The failover benchmark's load generator: what each backend's process does.

``benchmarks/failover.py`` starts ``generate`` in one spawned process per backend and tells it
when to start; it writes every key, runs the writer and reader threads for the given seconds and
pickles what it saw: one record per call (layout in ``failover_report``), a few messages per
error class, hacache's log lines and, for hacache, its own view of each shard.

Writer thread *i* owns the keys *k* with *k* mod writers = *i*, so each key has one writer and
its versions are acknowledged in order: a read is judged against the newest version acknowledged
for its key when it started (``floor``). Reader threads read every key in turn.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import failover_report as fr

VIEW_EVERY = 0.005  # seconds between samples of hacache's view of its shards


class _Recorder:
    """Per-process outcome log; threads append tuples (atomic under the GIL, so no lock)."""

    def __init__(self) -> None:
        self.records: list[fr.Record] = []
        self.samples: dict[str, list[tuple[float, str]]] = {}  # a few messages per error class

    def error(self, start: float, op: int, thread: int, key: int, exc: BaseException) -> None:
        now = time.monotonic()
        name = type(exc).__name__
        self.records.append((start, now - start, op, thread, key, fr.ERROR, name))
        kept = self.samples.setdefault(name, [])
        if len(kept) < 5:
            kept.append((start, str(exc)[:300]))


def _get(cache: Any, name: str, key: int, floor: int, thread: int, rec: _Recorder) -> None:
    """One read, judged against ``floor``: the newest version acknowledged when it started."""
    start = time.monotonic()
    try:
        value = cache.get(name)
    except Exception as exc:
        rec.error(start, fr.GET, thread, key, exc)
        return
    status = fr.MISSING if value is None else fr.OLDER if value < floor else fr.OK
    detail = "" if status == fr.OK else f"{value}<{floor}"  # which versions went missing
    rec.records.append((start, time.monotonic() - start, fr.GET, thread, key, status, detail))


@dataclass
class _Load:
    """What every thread of one process shares: the keys, where each goes, what was acked."""

    names: list[str]
    caches_per_key: Callable[[], list[Any]]  # this thread's cache object for each key
    acked: list[int]  # per key, the newest version acknowledged (written by its one writer)
    rec: _Recorder


def _writer(load: _Load, thread: int, writers: int, stop_at: float) -> None:
    """set(key, version) then get(key) over this writer's own keys."""
    caches = load.caches_per_key()
    mine = list(range(thread, len(load.names), writers))
    version = dict.fromkeys(mine, 0)
    append, acked = load.rec.records.append, load.acked
    n = 0
    while (start := time.monotonic()) < stop_at:
        key = mine[n % len(mine)]
        n += 1
        version[key] += 1  # never reused, even after a failed set that may have landed
        try:
            caches[key].set(load.names[key], version[key], timeout=None)
        except Exception as exc:
            load.rec.error(start, fr.SET, thread, key, exc)
        else:
            append((start, time.monotonic() - start, fr.SET, thread, key, fr.OK, ""))
            acked[key] = version[key]
        _get(caches[key], load.names[key], key, acked[key], thread, load.rec)


def _reader(load: _Load, thread: int, offset: int, stop_at: float) -> None:
    """Gets only, over every key: whether reads go on while writes wait for a new master."""
    caches = load.caches_per_key()
    n = offset
    while time.monotonic() < stop_at:
        key = n % len(load.names)
        n += 1
        _get(caches[key], load.names[key], key, load.acked[key], thread, load.rec)


class _ListHandler(logging.Handler):
    """Keeps hacache's own log lines with a monotonic timestamp: evidence of what it saw."""

    def __init__(self, sink: list[tuple[float, str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append((time.monotonic(), record.levelname, record.getMessage()))


def _watch_hacache(
    cache: Any, moves: list[Any], view: list[Any], stopping: threading.Event
) -> None:
    """Evidence from inside hacache: when each shard moved to a new master, and every change
    of (master, whether its breaker is open, the replicas reads may fall back to).

    This reads hacache internals, which may change: whatever is not there is not recorded.
    """
    shards = getattr(getattr(cache, "_router", None), "shards", None)
    if not isinstance(shards, dict):
        return
    for shard in shards.values():
        listeners = getattr(shard, "master_listeners", None)
        if isinstance(listeners, list):
            listeners.append(lambda s: moves.append((time.monotonic(), s.name, s.master.address)))

    def state(shard: Any) -> tuple[Any, ...]:
        master = shard.master
        return (
            None if master is None else master.address,
            master is not None and master.breaker.is_open,
            tuple(r.address for r in shard.replicas),
        )

    def sample() -> None:
        last: dict[str, tuple[Any, ...]] = {}
        while not stopping.wait(VIEW_EVERY):
            now = time.monotonic()
            for name, shard in shards.items():
                try:
                    seen = state(shard)
                except AttributeError:
                    return
                if last.get(name) != seen:
                    last[name] = seen
                    view.append((now, name, *seen))

    threading.Thread(target=sample, name="hacache-view", daemon=True).start()


def _placement(made_keys: Sequence[str], masters: Sequence[tuple[str, int]]) -> list[int]:
    """The shard each key was written to, asked of the masters themselves (EXISTS)."""
    import redis

    found: list[list[int]] = [[] for _ in made_keys]
    for shard, (host, port) in enumerate(masters):
        client = redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)
        try:
            pipe = client.pipeline(transaction=False)
            for key in made_keys:
                pipe.exists(key)
            for key, hit in enumerate(pipe.execute()):
                if hit:
                    found[key].append(shard)
        finally:
            client.close()
    bad = [(made_keys[k], f) for k, f in enumerate(found) if len(f) != 1]
    if bad:
        raise RuntimeError(f"keys not on exactly one shard (key, shards): {bad[:5]}")
    return [f[0] for f in found]


def generate(spec: dict[str, Any], ready: Any, go: Any, start_at: Any, out: str) -> None:
    """Child process: configure Django, write every key, run the threads, save the records."""
    import django
    from django.conf import settings

    settings.configure(CACHES=spec["caches"], USE_TZ=True)
    django.setup()
    from django.core.cache import caches

    log: list[tuple[float, str, str]] = []
    hacache_logger = logging.getLogger("hacache")
    hacache_logger.addHandler(_ListHandler(log))
    hacache_logger.setLevel(logging.DEBUG)
    hacache_logger.propagate = False

    writers, readers, keys = spec["writers"], spec["readers"], spec["keys"]
    routes = [spec["aliases"][i % len(spec["aliases"])] for i in range(keys)]
    names = [f"k{i}" for i in range(keys)]
    for name, alias in zip(names, routes, strict=True):
        caches[alias].set(name, 0, timeout=None)
    made = [caches[alias].make_key(name) for name, alias in zip(names, routes, strict=True)]
    placement = _placement(made, spec["masters"])
    moves: list[Any] = []
    view: list[Any] = []
    stopping = threading.Event()
    if spec["backend"] == "hacache":
        _watch_hacache(caches["default"], moves, view, stopping)
    load = _Load(
        names=names,
        caches_per_key=lambda: [caches[alias] for alias in routes],  # Django's are per thread
        acked=[0] * keys,
        rec=_Recorder(),
    )
    warm = threading.Barrier(writers + readers + 1)

    def run(thread: int) -> None:
        for cache, name in zip(load.caches_per_key(), names, strict=True):
            cache.get(name)  # warm this thread's connections up; not recorded
        warm.wait()
        go.wait(60)
        start = start_at.value
        time.sleep(max(0.0, start - time.monotonic()))
        stop = start + spec["seconds"]
        if thread < writers:
            _writer(load, thread, writers, stop)
        else:
            _reader(load, thread, (thread - writers) * keys // readers, stop)

    threads = [
        threading.Thread(target=run, args=(i,), name=f"load-{i}", daemon=True)
        for i in range(writers + readers)
    ]
    for thread in threads:
        thread.start()
    warm.wait()
    ready.set()
    for thread in threads:
        thread.join()
    stopping.set()
    result = {
        "backend": spec["backend"],
        "writers": writers,
        "readers": readers,
        "placement": placement,
        "records": load.rec.records,
        "samples": load.rec.samples,
        "log": log,
        "master_moves": moves,
        "hacache_view": view,
    }
    with open(out, "wb") as fh:
        pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
