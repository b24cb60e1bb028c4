"""Launch a local Redis topology (sharded masters, replicas, Sentinels) for tests and development.

The same code backs the pytest fixtures, the benchmarks, the load tests and the command line, so
what developers run by hand is exactly what the test-suite exercises. It is not part of the cache
backend: nothing in the runtime imports it, and it needs no Django settings.

Library use::

    with Topology(tmp_path, shards=2, replicas=1, sentinels=3) as topo:
        settings.CACHES = topo.caches_setting()
        topo.kill("shard0-master")          # fault injection: also pause/resume, stop/start

Command line (processes outlive the command; state lives in ``DIR/topology.json``)::

    python -m hacache.topology up [--dir DIR] [--shards N] [--replicas R] [--sentinels S] [--tls]
    python -m hacache.topology status [--dir DIR]     # exit status 1 if any node is dead
    python -m hacache.topology kill shard0-master     # also pause, resume, start NODE
    python -m hacache.topology down [--dir DIR]

Modules: ``launcher`` (the ``Topology`` class), ``process`` (spawning, signalling, reaping),
``config`` (redis.conf/sentinel.conf and client URLs), ``probes`` (bounded questions to nodes),
``state`` (the run directory's files), ``node`` (``Node`` and the errors), ``tls`` (a throw-away
CA and certificates for ``tls=True``: TLS-only nodes, ``rediss://`` URLs), ``cli``.

Invariants: only processes a topology started are ever signalled; every probe is bounded by a
short timeout; the public names below stay importable from ``hacache.topology``.
"""

from __future__ import annotations

from hacache.topology.cli import main
from hacache.topology.launcher import Topology
from hacache.topology.node import (
    Node,
    RedisNotInstalled,
    TopologyError,
    TopologyRunning,
    UnknownNode,
)
from hacache.topology.process import free_port, looks_like_node

__all__ = [
    "Node",
    "RedisNotInstalled",
    "Topology",
    "TopologyError",
    "TopologyRunning",
    "UnknownNode",
    "free_port",
    "looks_like_node",
    "main",
]
