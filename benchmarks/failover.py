#!/usr/bin/env python3
"""Failover report: hacache and django-redis's SentinelClient through one Sentinel failover.

Run from the repository root::

    python benchmarks/failover.py --all             # the four scenarios of issue 8, a few minutes
    python benchmarks/failover.py --scenario NAME   # one of: kill, pause, fail-open, three-shards
    python benchmarks/failover.py [options]         # a custom run (see --help)

Options (a scenario sets some of them; options given explicitly win over the scenario)::

    --mode kill|pause --pause-seconds S --shards N --replicas N --fail-open
    --writers N --readers N --keys N --seconds S --kill-at S
    --down-after-ms MS --failover-timeout-ms MS --wait-replicas N --hacache-options JSON
    --repeat N --json PATH --png PATH --ops PATH --summary PATH

Scenarios (all: three Sentinels, ``down-after-milliseconds`` 1000, one replica per master;
2 writer threads and 1 reader thread per backend on 200 keys):

- ``kill``: one shard, its master gets SIGKILL; default options.
- ``pause``: one shard, its master gets SIGSTOP for ``--pause-seconds`` (10), then SIGCONT while
  the load goes on; default options.
- ``fail-open``: as ``kill``, failing open: hacache ``FAIL_OPEN``, django-redis
  ``IGNORE_EXCEPTIONS``.
- ``three-shards``: three Sentinel shards; shard0's master gets SIGKILL; the keys on the other
  two shards are reported apart.

"Default options" are hacache's own defaults (``FAILOVER_TIMEOUT`` 0 among them) plus this
benchmark's ``SOCKET_TIMEOUT`` and ``SOCKET_CONNECT_TIMEOUT`` of 0.25 s, which django-redis gets
too. ``--all`` runs the four in turn and writes ``benchmarks/results/failover-summary.md``: one
table, hacache against django-redis, with a PASS/FAIL per target (``failover_report.judge``).

Outputs per scenario: ``benchmarks/results/failover-NAME.json`` and every node's log in
``benchmarks/results/failover-NAME-logs/`` (git-ignored); the plot in
``benchmarks/plots/failover.png`` for ``kill`` and ``benchmarks/plots/failover-NAME.png`` for the
others (committed). A custom run writes ``failover-custom.*`` under ``benchmarks/results/``.
Some failures are races that show in one run and not the next: ``--repeat N`` runs every
scenario N times (round after round), the summary lists every run's value and fails a target if
any run missed it; the committed plot is hacache's worst run, the others' plots and JSON get a
``-runK`` suffix under ``benchmarks/results/``.

How it measures: each backend runs in its own spawned process (no shared GIL, pool or Sentinel
client), both at once against the same servers, so they live through the same failover. In each
process, writer thread *i* owns the keys *k* with *k* mod writers = *i* and loops over them doing
``set(key, version)`` then ``get(key)`` (read your own write); reader threads loop over all keys
doing ``get``, so that reads are not queued behind writes waiting for a new master. Each key has
one writer, so its versions are acknowledged in order, and a read is *wrong* when it returns a
version older than the newest one this process had been acknowledged for that key when the read
started, or (except failing open, where it is a *miss*) nothing: every key is written before the
load, without expiry. Every Sentinel's events are recorded, so the report can say when the
promotion happened and how long each backend took to follow it; in the hacache process a sampler
also records hacache's own view of each shard (master, breaker, replicas) as evidence. The
numbers, tables and plots are computed by ``benchmarks/failover_report.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pickle
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import failover_load
import failover_report as fr

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PLOTS = REPO / "benchmarks" / "plots"

SHARD = fr.KILLED_SHARD  # the shard whose master is killed
SENTINELS = 3
SOCKET_TIMEOUT = 0.25
SOCKET_CONNECT_TIMEOUT = 0.25
PAUSE_TAIL = 4.0  # seconds of load after SIGCONT, unless --seconds says otherwise

DEFAULTS: dict[str, Any] = {
    "mode": "kill",
    "shards": 1,
    "replicas": 1,
    "writers": 2,
    "readers": 1,
    "keys": 200,
    "seconds": 12.0,
    "kill_at": 4.0,
    "pause_seconds": 10.0,
    "down_after_ms": 1000,
    "failover_timeout_ms": 3000,
    "fail_open": False,
    "wait_replicas": 0,
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "kill": {},
    "pause": {"mode": "pause"},
    "fail-open": {"fail_open": True},
    "three-shards": {"shards": 3},
}


@dataclass(frozen=True)
class Config:
    name: str
    mode: str
    shards: int
    replicas: int
    writers: int
    readers: int
    keys: int
    seconds: float
    kill_at: float
    pause_seconds: float
    down_after_ms: int
    failover_timeout_ms: int
    fail_open: bool
    wait_replicas: int
    extra_hacache_options: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        what = "kill -9" if self.mode == "kill" else f"SIGSTOP for {self.pause_seconds:g} s"
        where = f"{SHARD}'s master ({self.shards} shards)" if self.shards > 1 else "the master"
        options = "failing open" if self.fail_open else "default options"
        extra = " + " + json.dumps(self.extra_hacache_options) if self.extra_hacache_options else ""
        return f"{what} of {where}, {self.replicas} replica(s), {options}{extra}"

    def hacache_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "SOCKET_TIMEOUT": SOCKET_TIMEOUT,
            "SOCKET_CONNECT_TIMEOUT": SOCKET_CONNECT_TIMEOUT,
        }
        if self.fail_open:
            options["FAIL_OPEN"] = True
        if self.wait_replicas:
            options["WAIT_REPLICAS"] = self.wait_replicas
        return {**options, **self.extra_hacache_options}


# --------------------------------------------------------------------------- cache settings


def cache_settings(backend: str, topo: Any, cfg: Config) -> tuple[dict[str, Any], list[str]]:
    """The CACHES setting for one backend, and the alias each shard's keys go to (key i goes
    to ``aliases[i % len(aliases)]``). Distinct KEY_PREFIXes, so the backends never share a key.
    """
    if backend == "hacache":
        entry = {
            "BACKEND": "hacache.HACache",
            "LOCATION": topo.sentinel_urls(),  # a list: one string would be split at its commas
            "KEY_PREFIX": "failover-hacache",
            "OPTIONS": cfg.hacache_options(),
        }
        return {"default": entry}, ["default"]
    # django-redis has no sharded Sentinel client: one SentinelClient alias per shard, routed
    # here. django-redis 7.0 needs its Sentinel connection factory as well as the client class:
    # without CONNECTION_FACTORY (or the global DJANGO_REDIS_CONNECTION_FACTORY setting) the
    # plain factory builds SentinelConnectionPool with no service name or Sentinel manager, and
    # the first call fails with a TypeError.
    options: dict[str, Any] = {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "CONNECTION_POOL_CLASS": "redis.sentinel.SentinelConnectionPool",
        "SENTINELS": [list(a) for a in topo.sentinel_addresses()],
        "SOCKET_TIMEOUT": SOCKET_TIMEOUT,
        "SOCKET_CONNECT_TIMEOUT": SOCKET_CONNECT_TIMEOUT,
    }
    if cfg.fail_open:
        options["IGNORE_EXCEPTIONS"] = True
    caches = {
        shard: {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{shard}/0",
            "KEY_PREFIX": "failover-django-redis",
            "OPTIONS": dict(options),
        }
        for shard in topo.shard_names
    }
    return caches, list(caches)


# --------------------------------------------------------------------------- Sentinel events


@dataclass(frozen=True)
class SentinelEvent:
    t: float
    sentinel: str
    channel: str
    data: str


class SentinelWatch(threading.Thread):
    """Records every event one Sentinel publishes, stamped when it arrives."""

    def __init__(self, name: str, host: str, port: int, sink: list[SentinelEvent]) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        import redis

        self.sentinel = name
        self.sink = sink
        self.stopping = threading.Event()
        self.client = redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("*")  # sent now: every later event reaches us

    def run(self) -> None:
        import redis

        while not self.stopping.is_set():
            try:
                message = self.pubsub.get_message(timeout=0.05)
            except redis.RedisError as exc:  # a sentinel is not the subject here; note it
                self.sink.append(SentinelEvent(time.monotonic(), self.sentinel, "!error", str(exc)))
                self.stopping.wait(0.1)
                continue
            if message and message.get("type") == "pmessage":
                channel, data = message["channel"], message["data"]
                self.sink.append(
                    SentinelEvent(time.monotonic(), self.sentinel, channel.decode(), data.decode())
                )

    def stop(self) -> None:
        self.stopping.set()
        self.join(2)
        with contextlib.suppress(Exception):
            self.pubsub.close()
            self.client.close()


class ReplicaFlags(threading.Thread):
    """Polls every sentinel's view of shard0's replicas and records each change of a replica's
    flags, link status or reported role: Sentinel publishes no event when it flags the replica
    it is promoting ``disconnected``, yet that is what a client filtering replicas sees."""

    EVERY = 0.010  # seconds

    def __init__(self, sentinels: list[tuple[str, str, int]], sink: list[tuple[Any, ...]]):
        super().__init__(name="replica-flags", daemon=True)
        self.sentinels = sentinels
        self.sink = sink
        self.stopping = threading.Event()

    def run(self) -> None:
        import redis

        clients = [
            (name, redis.Redis(host=host, port=port, socket_timeout=0.2, decode_responses=True))
            for name, host, port in self.sentinels
        ]
        last: dict[tuple[str, str], tuple[str, ...]] = {}
        while not self.stopping.wait(self.EVERY):
            for name, client in clients:
                try:
                    replicas = client.execute_command("SENTINEL", "REPLICAS", SHARD)
                except redis.RedisError:
                    continue
                now = time.monotonic()
                listed: dict[tuple[str, str], tuple[str, ...]] = {}
                for reply in replicas:
                    info = reply
                    if not isinstance(info, dict):  # a flat RESP2 list of pairs
                        info = dict(zip(info[::2], info[1::2], strict=True))
                    listed[(name, f"{info['ip']}:{info['port']}")] = tuple(
                        str(info.get(k)) for k in ("flags", "master-link-status", "role-reported")
                    )
                for key in [k for k in last if k[0] == name and k not in listed]:
                    listed[key] = ("(not listed)", "", "")  # e.g. promoted: now the master
                for key, seen in listed.items():
                    if last.get(key) != seen:
                        last[key] = seen
                        self.sink.append((now, *key, *seen))
        for _, client in clients:
            client.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(2)


def _first(events: list[SentinelEvent], channel: str, word: str = SHARD) -> float | None:
    times = [e.t for e in events if e.channel == channel and word in e.data.split()]
    return min(times) if times else None


def _switches(events: list[SentinelEvent], kill: float) -> list[dict[str, Any]]:
    """One entry per promotion of shard0 (a spurious second failover is a second entry), with
    the time each sentinel announced it: they learn of it at different times."""
    switches: list[dict[str, Any]] = []
    for e in sorted(events, key=lambda e: e.t):
        words = e.data.split()
        if e.channel != "+switch-master" or words[0] != SHARD:
            continue
        to = f"{words[3]}:{words[4]}"
        if not switches or switches[-1]["to"] != to:
            switches.append({"from": f"{words[1]}:{words[2]}", "to": to, "per_sentinel_ms": {}})
        switches[-1]["per_sentinel_ms"].setdefault(e.sentinel, fr.ms(e.t - kill))
    for item in switches:
        item["first_ms"] = min(item["per_sentinel_ms"].values())
    return switches


# --------------------------------------------------------------------------- orchestration


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for dist in ("django", "redis", "django-redis", "hiredis"):
        try:
            out[dist] = version(dist)
        except Exception:
            out[dist] = "not installed"
    server = shutil.which("redis-server")
    if server:
        text = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        out["redis-server"] = text.split("v=")[1].split()[0] if "v=" in text else text.strip()
    return out


def _sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def _save_logs(topo: Any, logs: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        for node in topo.nodes():
            if Path(node.log).exists():
                shutil.copy(node.log, logs / Path(node.log).name)


@dataclass
class _Measured:
    """What one run observed, before any arithmetic."""

    settings: dict[str, tuple[dict[str, Any], list[str]]]  # per backend: CACHES, aliases
    results: dict[str, dict[str, Any]]  # per backend: what its process pickled
    events: list[SentinelEvent]
    replica_flags: list[tuple[Any, ...]]  # (t, sentinel, replica, flags, link, role reported)
    window: fr.Window
    victim: Any  # the topology's Node for the killed master, and for the new one
    new_master: Any
    load_average: tuple[float, float]  # 1-minute load average before and after


def measure(cfg: Config, logs: Path) -> _Measured:
    """Start the topology and both generators, kill (or pause) shard0's master, collect; every
    node's log ends up in ``logs``."""
    import multiprocessing

    from hacache.topology import Topology

    ctx = multiprocessing.get_context("spawn")
    run_dir = Path(tempfile.mkdtemp(prefix="hacache-failover-"))
    topo = Topology(
        run_dir, shards=cfg.shards, replicas=cfg.replicas, sentinels=SENTINELS,
        down_after_ms=cfg.down_after_ms, failover_timeout_ms=cfg.failover_timeout_ms,
    )  # fmt: skip
    events: list[SentinelEvent] = []
    flags: list[tuple[Any, ...]] = []
    watches: list[Any] = []  # SentinelWatch per sentinel, and one ReplicaFlags
    procs: dict[str, Any] = {}
    victim: Any = None
    paused = False
    resumed: float | None = None
    load_before = os.getloadavg()[0]
    try:
        topo.up()
        masters = topo.masters()
        settings = {b: cache_settings(b, topo, cfg) for b in fr.BACKENDS}
        sentinels = [(n.name, n.host, n.port) for n in topo.nodes() if n.is_sentinel]
        watches = [SentinelWatch(*sentinel, events) for sentinel in sentinels]
        watches.append(ReplicaFlags(sentinels, flags))
        for watch in watches:
            watch.start()
        go, start_at = ctx.Event(), ctx.Value("d", 0.0)
        readies = {b: ctx.Event() for b in fr.BACKENDS}
        outs = {b: str(run_dir / f"{b}.pickle") for b in fr.BACKENDS}
        for b in fr.BACKENDS:
            caches, aliases = settings[b]
            spec = {
                "backend": b, "caches": caches, "aliases": aliases, "seconds": cfg.seconds,
                "writers": cfg.writers, "readers": cfg.readers, "keys": cfg.keys,
                "masters": [(masters[s].host, masters[s].port) for s in topo.shard_names],
            }  # fmt: skip
            procs[b] = ctx.Process(
                target=failover_load.generate,
                args=(spec, readies[b], go, start_at, outs[b]),
                name=f"load-{b}",
            )
            procs[b].start()
        for b in fr.BACKENDS:
            if not readies[b].wait(60):
                raise RuntimeError(
                    f"the {b} generator did not get ready (exit {procs[b].exitcode})"
                )
        victim = masters[SHARD]
        start = time.monotonic() + 0.3
        start_at.value = start
        go.set()
        _sleep_until(start + cfg.kill_at)
        kill = time.monotonic()
        if cfg.mode == "kill":
            topo.kill(victim.name)
        else:
            topo.pause(victim.name)
            paused = True
            _sleep_until(kill + cfg.pause_seconds)
            topo.resume(victim.name)
            paused, resumed = False, time.monotonic()
        for b in fr.BACKENDS:
            procs[b].join(cfg.seconds + 30)
            if procs[b].exitcode != 0:
                raise RuntimeError(f"the {b} generator failed (exit {procs[b].exitcode})")
        time.sleep(0.2)  # late events (the other sentinels' +switch-master) still count
        new_master = topo.masters()[SHARD]
        results = {}
        for b in fr.BACKENDS:
            with open(outs[b], "rb") as fh:
                results[b] = pickle.load(fh)
    finally:
        for watch in watches:
            watch.stop()
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        if paused and victim is not None:
            with contextlib.suppress(Exception):
                topo.resume(victim.name)
        _save_logs(topo, logs)
        topo.down()
        shutil.rmtree(run_dir, ignore_errors=True)
    switch = _first(events, "+switch-master")
    return _Measured(
        settings=settings,
        results=results,
        events=events,
        replica_flags=flags,
        window=fr.Window(start, start + cfg.seconds, kill, switch, resumed),
        victim=victim,
        new_master=new_master,
        load_average=(load_before, os.getloadavg()[0]),
    )


def build_report(cfg: Config, m: _Measured) -> dict[str, Any]:
    events, kill = m.events, m.window.kill
    timeline = {
        "sdown": _first(events, "+sdown", "master"),
        "odown": _first(events, "+odown"),
        "elected_leader": _first(events, "+elected-leader"),
        "selected_replica": _first(events, "+selected-slave"),
        "promoted": _first(events, "+promoted-slave"),
        "switch_master": m.window.switch,
        "failover_end": _first(events, "+failover-end"),
        "resumed": m.window.resume,
        "converted_old_master": _first(events, "+convert-to-slave"),
        "read_gaps_judged_until": m.window.settled,
    }
    load = (
        f"{cfg.writers} writer thread(s) (set then get of the same key, each on its own keys) "
        f"and {cfg.readers} reader thread(s) (get) on {cfg.keys} keys, in a loop"
    )
    report: dict[str, Any] = {
        "scenario": cfg.name,
        "title": cfg.title,
        "command": " ".join(["python", "benchmarks/failover.py", *sys.argv[1:]]),
        "config": {
            **asdict(cfg),
            "topology": f"{cfg.shards} shard(s), each a master + {cfg.replicas} replica(s); "
            f"{SENTINELS} sentinels, quorum {SENTINELS // 2 + 1}",
            "load": load,
            "killed": f"{m.victim.name} ({m.victim.host}:{m.victim.port})",
            "new_master": f"{m.new_master.name} ({m.new_master.host}:{m.new_master.port})",
            # Other work on the machine shows here: each backend keeps about one CPU busy.
            "load_average_before_after": [round(x, 2) for x in m.load_average],
        },
        "hacache": m.settings["hacache"][0]["default"],
        "django_redis": m.settings["django_redis"][0][SHARD],
        "versions": _versions(),
        "timeline_ms": {k: fr.ms(None if v is None else v - kill) for k, v in timeline.items()},
        "switches": _switches(events, kill),
        "sentinel_events": [
            {"ms": fr.ms(e.t - kill), "sentinel": e.sentinel, "channel": e.channel, "data": e.data}
            for e in sorted(events, key=lambda e: e.t)
        ],
        "sentinel_replica_flags": [(fr.ms(t - kill), *rest) for t, *rest in m.replica_flags],
        "backends": {},
        "series": {},
    }
    for b, result in m.results.items():
        report["backends"][b], report["series"][b] = fr.backend_report(
            result, m.window, cfg.shards, cfg.fail_open
        )
    report["targets"] = {b: fr.judge(report, b) for b in fr.BACKENDS}
    return report


def write_ops(path: Path, m: _Measured) -> None:
    """Every operation, ms relative to the kill: for digging into one stall or one error."""
    kill = m.window.kill
    raw = {
        b: [
            (round((r[0] - kill) * 1000, 3), round(r[1] * 1000, 3), *r[2:])
            for r in result["records"]
        ]
        for b, result in m.results.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fields": fr.RECORD_FIELDS, **raw}) + "\n")


def print_report(report: dict[str, Any]) -> None:
    c, t = report["config"], report["timeline_ms"]
    print(f"\n=== {report['scenario']}: {report['title']}")
    print(
        f"{c['topology']}; down-after {c['down_after_ms']} ms; {c['seconds']:g} s of load "
        f"({c['load']}); {c['killed']} {'killed' if c['mode'] == 'kill' else 'paused'} at "
        f"{c['kill_at']:g} s"
    )
    print(f"hacache OPTIONS: {json.dumps(report['hacache']['OPTIONS'])}")
    shown = {k: v for k, v in report["django_redis"]["OPTIONS"].items() if k != "SENTINELS"}
    print(f"django-redis OPTIONS: {json.dumps(shown)} + SENTINELS")
    print("Sentinel, ms after the kill: " + ", ".join(f"{k} {v}" for k, v in t.items()))
    for n, item in enumerate(report["switches"], 1):
        per = ", ".join(f"{k} {v}" for k, v in sorted(item["per_sentinel_ms"].items()))
        print(f"promotion {n}: {item['from']} -> {item['to']}; +switch-master, ms: {per}")
    if len(report["switches"]) > 1:
        print(f"NOTE: Sentinel failed over {len(report['switches'])} times in this run.")
    moves = report["backends"]["hacache"]["client_moved_master_ms"]
    print(f"hacache moved to a new master at, ms: {moves or 'never'}")
    for line in fr.evidence(report):
        print(line)
    for group in fr.plotted_groups(c["shards"]):
        print(f"\n{group}:" if c["shards"] > 1 else "")
        print(fr.table(report, group))
    print()
    for b in fr.BACKENDS:
        g = report["backends"][b]["groups"][fr.ALL]
        for kind in ("read", "write"):
            if g[f"{kind}_errors_by_class"]:
                print(f"{fr.LABELS[b]} {kind} errors: {g[f'{kind}_errors_by_class']}")
    for b in fr.BACKENDS:
        print(f"\n{fr.LABELS[b]} against the targets:")
        for item in report["targets"][b]:
            mark = {True: "PASS", False: "FAIL", None: "    "}[item["met"]]
            print(f"  [{mark}] {item['measure']}: {item['measured']} (target {item['target']})")


# --------------------------------------------------------------------------- command line


def _config(name: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    """The scenario's settings, with every option given on the command line on top."""
    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    values = {**DEFAULTS, **SCENARIOS.get(name, {}), **given}
    if values["mode"] == "pause" and "seconds" not in given:
        values["seconds"] = values["kill_at"] + values["pause_seconds"] + PAUSE_TAIL
    cfg = Config(name=name, extra_hacache_options=json.loads(args.hacache_options), **values)
    if not 0 < cfg.kill_at < cfg.seconds:
        parser.error(f"{name}: --kill-at must fall inside --seconds")
    if cfg.mode == "pause" and cfg.kill_at + cfg.pause_seconds >= cfg.seconds:
        parser.error(f"{name}: SIGCONT (--kill-at + --pause-seconds) must fall inside --seconds")
    if min(cfg.shards, cfg.replicas, cfg.writers, cfg.readers) < 1 or cfg.keys < cfg.writers:
        parser.error("need at least one shard, replica, writer and reader, and a key per writer")
    return cfg


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}{suffix}{path.suffix}") if suffix else path


class _Outputs(NamedTuple):
    json: Path  # this run's report
    png: Path  # this run's plot (the scenario's own path if it is hacache's worst run)
    logs: Path  # this run's node logs
    ops: Path | None  # this run's every operation, if asked for


def _outputs(cfg: Config, args: argparse.Namespace, run: int, worst: bool = True) -> _Outputs:
    again = f"-run{run}" if run > 1 else ""
    if args.png:
        png = args.png
    elif cfg.name == "kill":
        png = PLOTS / "failover.png"
    elif cfg.name in SCENARIOS:
        png = PLOTS / f"failover-{cfg.name}.png"
    else:
        png = RESULTS / f"failover-{cfg.name}.png"
    if not worst:  # the scenario's plot shows hacache's worst run; the others go beside the JSON
        stem = args.png.stem if args.png else f"failover-{cfg.name}"
        png = RESULTS / f"{stem}{again or '-run1'}.png"
    return _Outputs(
        json=_with_suffix(args.json or RESULTS / f"failover-{cfg.name}.json", again),
        png=png,
        logs=RESULTS / f"failover-{cfg.name}{again}-logs",
        ops=args.ops and _with_suffix(args.ops, (f"-{cfg.name}" if args.all else "") + again),
    )


def _write_json(report: dict[str, Any]) -> None:
    path = REPO / report["json"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def _meta() -> dict[str, Any]:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    v = _versions()
    return {
        "command": " ".join(["python", "benchmarks/failover.py", *sys.argv[1:]]),
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "hacache")),
        "machine": f"{v['cpus']} CPUs, Python {v['python']}, Redis {v.get('redis-server')}, "
        f"redis-py {v['redis']}, django-redis {v['django-redis']}, Django {v['django']}",
    }


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--scenario", choices=SCENARIOS, help="one of the issue's scenarios")
    which.add_argument("--all", action="store_true", help="every scenario, then the summary")
    parser.add_argument("--mode", choices=("kill", "pause"), help="SIGKILL, or SIGSTOP+SIGCONT")
    parser.add_argument("--pause-seconds", type=float, help="SIGSTOP lasts this long (10)")
    parser.add_argument("--shards", type=int, help="Sentinel shards; shard0 is killed (1)")
    parser.add_argument("--replicas", type=int, help="replicas per master (1)")
    parser.add_argument("--writers", type=int, help="writer threads per backend (2)")
    parser.add_argument("--readers", type=int, help="reader threads per backend (1)")
    parser.add_argument("--keys", type=int, help="keys (200)")
    parser.add_argument("--seconds", type=float, help="seconds of load (12; pause: 18)")
    parser.add_argument("--kill-at", type=float, help="seconds into the load (4)")
    parser.add_argument("--down-after-ms", type=int, help="Sentinel down-after (1000)")
    parser.add_argument("--failover-timeout-ms", type=int, help="Sentinel failover-timeout (3000)")
    parser.add_argument(
        "--fail-open", action=argparse.BooleanOptionalAction,
        help="hacache FAIL_OPEN and django-redis IGNORE_EXCEPTIONS",
    )  # fmt: skip
    parser.add_argument("--wait-replicas", type=int, help="hacache WAIT_REPLICAS (0)")
    parser.add_argument(
        "--hacache-options", default="{}", help="JSON merged into hacache's OPTIONS"
    )
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/failover-NAME.json")
    parser.add_argument("--png", type=Path, help="default: see the module's docstring")
    parser.add_argument("--ops", type=Path, help="also write every operation to this JSON file")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="run each scenario this many times (a race may show in one run and not the next)",
    )  # fmt: skip
    parser.add_argument(
        "--summary", type=Path,
        help="markdown summary (--all: default benchmarks/results/failover-summary.md)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.all and (args.json or args.png):
        parser.error("--json and --png name one run's files; --all writes the default ones")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    names = list(SCENARIOS) if args.all else [args.scenario or "custom"]
    configs = [_config(name, args, parser) for name in names]  # check all before running any
    runs: dict[str, list[dict[str, Any]]] = {cfg.name: [] for cfg in configs}
    for run in range(1, args.repeat + 1):  # round after round: machine noise spreads evenly
        for cfg in configs:
            out = _outputs(cfg, args, run)
            measured = measure(cfg, out.logs)
            report = build_report(cfg, measured)
            report["run"], report["json"] = run, _relative(out.json)
            if out.ops is not None:
                write_ops(out.ops, measured)
            print_report(report)
            _write_json(report)
            runs[cfg.name].append(report)
    for cfg in configs:
        worst = max(runs[cfg.name], key=fr.severity)  # the first of equals
        for report in runs[cfg.name]:
            png = _outputs(cfg, args, report["run"], report is worst).png
            report["png"] = _relative(png)
            report["worst_of_several"] = report is worst and args.repeat > 1
            fr.plot(report, png)
            _write_json(report)
            print(f"{cfg.name} run {report['run']}: JSON {report['json']}, PNG {report['png']}")
    summary = args.summary or (RESULTS / "failover-summary.md" if args.all else None)
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(fr.summary_markdown([runs[c.name] for c in configs], _meta()))
        print(f"\nsummary: {summary}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # Ctrl-C and TERM: clean up
    sys.exit(main())
