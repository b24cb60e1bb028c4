"""Short questions to running nodes: do they answer, are they ready, what does Sentinel see.

Invariants kept here:

- Every probe is bounded: one connection with ``PROBE_TIMEOUT`` for connect and read, and no
  retries, so a dead or paused node costs at most a fraction of a second and never a hang.
- Probes report, they do not raise: a node that does not answer gives ``False``, ``None`` or a
  reason string, never a ``redis`` exception.
- Sentinel replies are read with the runtime's own helpers (``hacache.sentinel.pairs``/``flags``),
  so the launcher and the backend agree on what Sentinel said.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hacache.sentinel import DOWN_FLAGS, flags, pairs
from hacache.topology.node import Node

PROBE_TIMEOUT = 0.3  # short, so a dead or paused node never stalls the launcher
# At start-up nothing is being promoted, so a replica Sentinel flags "disconnected" is simply not
# attached yet: readiness waits for it too (the runtime tolerates it during a promotion).
NOT_READY_FLAGS = DOWN_FLAGS | {"disconnected"}
PROBE_ERRORS = (redis.RedisError, OSError)


@contextlib.contextmanager
def probe(node: Node, password: str | None) -> Iterator[redis.Redis]:
    """A client with short timeouts and no retries (Sentinels are asked without a password)."""
    client = redis.Redis(
        host=node.host,
        port=node.port,
        password=None if node.is_sentinel else password,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    try:
        yield client
    finally:
        client.close()


def ping(node: Node, password: str | None) -> bool:
    try:
        with probe(node, password) as client:
            return bool(client.ping())
    except PROBE_ERRORS:
        return False


def replication(node: Node, password: str | None) -> dict[str, Any] | None:
    """``INFO replication`` of a Redis node, or None if it does not answer."""
    try:
        with probe(node, password) as client:
            return dict(client.info("replication"))
    except PROBE_ERRORS:
        return None


def node_status(node: Node, running: bool, password: str | None) -> dict[str, Any]:
    """One row of ``Topology.status()``: only a running node is asked anything."""
    row: dict[str, Any] = {
        "name": node.name,
        "shard": node.shard,
        "host": node.host,
        "port": node.port,
        "pid": node.pid,
        "running": running,
        "alive": False,
        "role": None,
        "master_link_status": None,
    }
    if not running:
        return row
    if node.is_sentinel:
        row["alive"] = ping(node, None)
        row["role"] = "sentinel" if row["alive"] else None
        return row
    info = replication(node, password)
    if info is not None:
        row["alive"] = True
        row["role"] = "replica" if info.get("role") == "slave" else info.get("role")
        row["master_link_status"] = info.get("master_link_status")
    return row


def replica_reason(node: Node, password: str | None) -> str | None:
    """None when the replica's link to its master is up, else why not."""
    try:
        with probe(node, password) as client:
            info = client.info("replication")
    except PROBE_ERRORS as exc:
        return f"INFO replication failed: {exc}"
    link = info.get("master_link_status")
    return None if link == "up" else f"master_link_status is {link!r}"


def sentinel_reason(
    node: Node, masters: dict[str, Node], replicas: int, sentinels: int
) -> str | None:
    """None once the Sentinel knows every launched master, its replicas and its peers."""
    try:
        with probe(node, None) as client:
            for shard, master in masters.items():
                reason = _shard_reason(client, shard, master, replicas, sentinels)
                if reason:
                    return reason
    except PROBE_ERRORS as exc:
        return f"SENTINEL query failed: {exc}"
    return None


def _shard_reason(
    client: redis.Redis, shard: str, master: Node, replicas: int, sentinels: int
) -> str | None:
    addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", shard)
    if not addr or int(addr[1]) != master.port:
        return f"does not know {shard} master {master.host}:{master.port} (has {addr})"
    known = client.execute_command("SENTINEL", "REPLICAS", shard)
    healthy = [r for r in map(pairs, known) if not flags(r) & NOT_READY_FLAGS]
    if len(healthy) < replicas:
        return f"sees {len(healthy)}/{replicas} healthy replicas of {shard}"
    peers = client.execute_command("SENTINEL", "SENTINELS", shard)
    if len(peers) < sentinels - 1:
        return f"sees {len(peers)}/{sentinels - 1} peer Sentinels for {shard}"
    return None


def ask_master(sentinel_nodes: Iterable[Node], shard: str) -> tuple[str, int] | None:
    """The shard's master according to the first Sentinel that answers (None if none does)."""
    for node in sentinel_nodes:
        try:
            with probe(node, None) as client:
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", shard)
        except PROBE_ERRORS:
            continue
        if addr:
            return str(addr[0]), int(addr[1])
    return None
