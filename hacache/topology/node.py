"""What a topology is made of: its nodes, how they are named and laid out, and the errors.

A ``Node`` is plain data, serialised as is into the state file (``dataclasses.asdict``), so a
later command can rebuild the topology and find its processes. Invariants: ``name`` is unique
within a topology; ``role`` is the role the node was *launched* with and never changes (the role
it holds now, after a failover, is asked from the node or from Sentinel); ``pid`` is ``None``
whenever the launcher does not believe the process to be alive; ``certs`` is set on every node of
a TLS topology (all its nodes listen on TLS only). Names are ``shardN-master``,
``shardN-replicaM`` (M from 1) and ``sentinelK``; each node lives in ``RUN_DIR/NAME/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "redis-server was not found on PATH. Install Redis 7: "
    "`apt-get install -y redis-server redis-sentinel` (Debian/Ubuntu) or `brew install redis` "
    "(macOS)."
)


class RedisNotInstalled(RuntimeError):
    """redis-server is missing, so nothing can be launched."""

    def __init__(self, message: str = INSTALL_HINT) -> None:
        super().__init__(message)


class TopologyError(RuntimeError):
    """A node failed to start, become ready, or stop."""


class TopologyRunning(TopologyError):
    """The run directory already hosts a live topology; starting a second one would clash."""


class UnknownNode(TopologyError, KeyError):
    """No node has the name asked for; the message lists the names there are."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass
class Node:
    """One Redis or Sentinel process; ``role`` is the role it was launched with."""

    name: str
    role: str
    shard: str | None
    host: str
    port: int
    pid: int | None = None
    dir: str = ""
    conf: str = ""
    log: str = ""
    certs: str | None = None  # TLS-only: the directory of the topology's certificates

    @property
    def tls(self) -> bool:
        return self.certs is not None

    @property
    def is_sentinel(self) -> bool:
        return self.role == "sentinel"


def plan(
    run_dir: Path,
    host: str,
    shards: list[str],
    replicas: int,
    sentinels: int,
    certs: str | None = None,
) -> list[Node]:
    """Every node of a topology, masters first, each shard's replicas after its master, then the
    Sentinels; ports are chosen at launch (0 until then). ``certs``: TLS-only nodes."""
    nodes = []
    for shard in shards:
        nodes.append(_new_node(run_dir, host, f"{shard}-master", "master", shard))
        for i in range(1, replicas + 1):
            nodes.append(_new_node(run_dir, host, f"{shard}-replica{i}", "replica", shard))
    for i in range(sentinels):
        nodes.append(_new_node(run_dir, host, f"sentinel{i}", "sentinel", None))
    for node in nodes:
        node.certs = certs
    return nodes


def _new_node(run_dir: Path, host: str, name: str, role: str, shard: str | None) -> Node:
    node_dir = run_dir / name
    conf = node_dir / ("sentinel.conf" if role == "sentinel" else "redis.conf")
    return Node(
        name=name,
        role=role,
        shard=shard,
        host=host,
        port=0,
        dir=str(node_dir),
        conf=str(conf),
        log=str(node_dir / f"{name}.log"),
    )
