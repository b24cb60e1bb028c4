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

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacache.topology import Topology

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

    def topology(self, run_dir: Path) -> Topology:
        return Topology(run_dir, shards=SHARDS)

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


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (Scenario(),)}
