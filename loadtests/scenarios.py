"""What happens to the Redis servers while locust runs: the hook for fault scenarios.

``run.py --scenario NAME`` picks one of ``SCENARIOS``. A scenario decides four things, and the
runner asks it at fixed points of every back-end's run:

* ``topology``: which servers to launch (a failover scenario adds replicas and Sentinels);
* ``shard_urls``: the URLs every back-end's ``CACHES`` is built from (a failover scenario would
  point hacache at the Sentinels);
* ``during``: what to do to them while the load runs, in its own thread, with the measured
  window's timing (kill a master a third of the way in, say); it returns a timeline of what it
  did, stored with the results;
* ``problems``: which outcomes make the run a failure (steady state tolerates no failed request;
  a failover scenario would instead bound the errors to the failover window).

A new scenario subclasses ``Scenario``, overrides what differs and registers in ``SCENARIOS``.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from hacache.topology import Topology, TopologyError

SHARDS = 3


@dataclass(frozen=True)
class Window:
    """Timing of one back-end's load, in ``time.time()`` seconds."""

    load_started: float  # locust launched
    measure_from: float  # planned end of the warm-up
    measure_to: float  # planned end of the run


class Scenario:
    """Steady state: every server stays up for the whole run."""

    name = "steady"
    description = f"steady state: {SHARDS} Redis shards, no replicas, all up for the whole run"

    # Back-ends a plain ``--scenario`` run compares; None: the runner's usual set.
    backends: tuple[str, ...] | None = None
    results_suffix = ""  # appended to the results directory's name

    def topology(self, run_dir: Path) -> Topology:
        return Topology(run_dir, shards=SHARDS)

    def prepare(self, topology: Topology) -> None:
        """Bring the servers back to the scenario's starting state before a back-end's run."""

    def shard_urls(self, topology: Topology) -> list[str]:
        """One URL per shard, ``?name=`` included; back-ends that refuse it strip it."""
        return topology.master_urls()

    def during(
        self, topology: Topology, window: Window, stop: threading.Event
    ) -> list[dict[str, Any]]:
        """Act on the servers while the load runs; return what was done, with timestamps."""
        return []

    def problems(self, result: dict[str, Any]) -> list[str]:
        """Reasons this back-end's run failed (empty when it passed)."""
        found = []
        total = result["total"]
        if total["requests"] == 0:
            found.append("served no requests")
        if total["failures"]:
            found.append(f"{total['failures']} failed requests")
        if result.get("warmup_failures"):
            found.append(f"{result['warmup_failures']} failed requests during the warm-up")
        if result["server_errors"]:
            found.append(f"{len(result['server_errors'])} error lines in the gunicorn log")
        if result.get("warmup_server_errors"):
            count = len(result["warmup_server_errors"])
            found.append(f"{count} error lines in the gunicorn log during the warm-up")
        return found


KILL_AT = 0.4  # share of the measured window after which the failover scenario kills a master
KILL_SHARD = "shard0"
PROMOTION_WAIT = 30.0  # seconds to wait for Sentinel to announce the new master
ERROR_GRACE = 5.0  # seconds after the promotion in which errors are still the failover's
REJOIN_TIMEOUT = 60.0  # seconds a restarted master may take to rejoin as an in-sync replica


class Failover(Scenario):
    """Kill shard0's master mid-run; Sentinel promotes its replica while the load goes on."""

    name = "failover"
    description = (
        f"failover: {SHARDS} shards of a master and 1 replica, 3 Sentinels (down-after 1 s); "
        f"{KILL_SHARD}'s master is SIGKILLed {100 * KILL_AT:.0f}% into the measured window"
    )
    backends = (
        "hacache-sentinel",
        "hacache-near-sentinel",
        "hacache-open-sentinel",
        "django-redis-sentinel",
    )
    results_suffix = "-failover"

    def topology(self, run_dir: Path) -> Topology:
        return Topology(run_dir, shards=SHARDS, replicas=1, sentinels=3, down_after_ms=1000)

    def shard_urls(self, topology: Topology) -> list[str]:
        return topology.sentinel_urls()

    def prepare(self, topology: Topology) -> None:
        """Restart the master a previous run killed and wait until every shard is replicated.

        Otherwise the next back-end would start with a shard that has no replica to promote.
        """
        for node in topology.nodes():
            if not node.is_sentinel and node.pid is None:
                topology.start(node.name)
        deadline = time.monotonic() + REJOIN_TIMEOUT
        while not self._replicated(topology):
            if time.monotonic() > deadline:
                raise TopologyError("a restarted master did not rejoin as an in-sync replica")
            time.sleep(0.5)

    @staticmethod
    def _replicated(topology: Topology) -> bool:
        """Every current master has all its replicas online (Sentinel's view of the master)."""
        for node in topology.masters().values():
            client = redis.Redis(
                host=node.host, port=node.port, password=topology.password, socket_timeout=1
            )
            try:
                info = client.info("replication")
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()
            online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if info.get("role") != "master" or len(online) < topology.replicas:
                return False
            if any(v.get("state") != "online" for v in online):
                return False
        return True

    def during(
        self, topology: Topology, window: Window, stop: threading.Event
    ) -> list[dict[str, Any]]:
        """SIGKILL shard0's master at ``KILL_AT`` of the window; time Sentinel's promotion."""
        kill_at = window.measure_from + KILL_AT * (window.measure_to - window.measure_from)
        if stop.wait(max(0.0, kill_at - time.time())):
            return []
        victim = topology.masters()[KILL_SHARD]
        killed_at = time.time()
        topology.kill(victim.name, signal.SIGKILL)
        timeline: list[dict[str, Any]] = [
            {"event": "kill", "time": killed_at, "node": victim.name, "port": victim.port}
        ]
        deadline = killed_at + PROMOTION_WAIT
        while not stop.is_set() and time.time() < deadline:
            current = topology.masters()[KILL_SHARD]  # asks the Sentinels
            if current.port != victim.port:
                timeline.append(
                    {"event": "promoted", "time": time.time(), "node": current.name,
                     "port": current.port}
                )  # fmt: skip
                break
            stop.wait(0.05)
        return timeline

    def problems(self, result: dict[str, Any]) -> list[str]:
        """Errors are expected between the kill and shortly after the promotion, nowhere else."""
        found = []
        if result["total"]["requests"] == 0:
            found.append("served no requests")
        events = {e["event"]: e["time"] for e in result.get("scenario_timeline", [])}
        if "kill" not in events:
            found.append("the master was never killed")
            return found
        if "promoted" not in events:
            found.append(f"Sentinel promoted no new master within {PROMOTION_WAIT:g} s")
        end = events.get("promoted", events["kill"] + PROMOTION_WAIT) + ERROR_GRACE
        start = result["measured_from"]
        outside = sum(
            b["failures"]
            for b in result.get("bins", [])
            if not events["kill"] - 1 <= start + b["t"] <= end
        )
        if outside:
            found.append(f"{outside} failed requests outside the failover window")
        if result.get("warmup_failures"):
            found.append(f"{result['warmup_failures']} failed requests during the warm-up")
        return found


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (Scenario(), Failover())}
