"""Short questions to running nodes: do they answer, are they ready, what does Sentinel see.

Invariants kept here:

- A TLS-only node (``node.certs`` set) is probed over TLS with the topology's CA and client
  certificate.
- Every probe is bounded: one connection with ``PROBE_TIMEOUT`` for connect and read, and no
  retries, so a dead or paused node costs at most a fraction of a second and never a hang.
- Probes report, they do not raise: a node that does not answer gives ``False``, ``None`` or a
  reason string, never a ``redis`` exception.
- Sentinel replies are read with the runtime's own helpers (``hacache.sentinel.pairs``/``flags``),
  so the launcher and the backend agree on what Sentinel said.
- Of several Sentinels, the view with the highest config-epoch wins: during a failover the leader
  announces the new master about a second before the others, and a lagging Sentinel's older
  answer must not undo that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hacache.sentinel import DOWN_FLAGS, flags, pairs
from hacache.topology.node import Node
from hacache.topology.tls import Certificates

PROBE_TIMEOUT = 0.3  # short, so a dead or paused node never stalls the launcher
# At start-up nothing is being promoted, so a replica Sentinel flags "disconnected" is simply not
# attached yet: readiness waits for it too (the runtime tolerates it during a promotion).
NOT_READY_FLAGS = DOWN_FLAGS | {"disconnected"}
ROLE_FLAGS = {"master": "master", "slave": "replica"}
PROBE_ERRORS = (redis.RedisError, OSError)


@contextlib.contextmanager
def probe(node: Node, password: str | None) -> Iterator[redis.Redis]:
    """A client with short timeouts and no retries (Sentinels are asked without a password)."""
    tls = Certificates(node.certs).probe_kwargs() if node.certs else {}
    client = redis.Redis(
        **tls,
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


def node_status(
    node: Node,
    process: str,
    by_sentinel: tuple[str, frozenset[str]] | None,
    password: str | None,
) -> dict[str, Any]:
    """One row of ``Topology.status()``. ``process`` is ``running``, ``paused`` or ``stopped``
    (only a running node is asked anything); ``by_sentinel`` is Sentinel's (role, flags)."""
    sentinel_role, sentinel_flags = None, None
    if by_sentinel is not None and not node.is_sentinel:
        sentinel_role = by_sentinel[0]
        sentinel_flags = ",".join(sorted(by_sentinel[1])) or None
    row: dict[str, Any] = {
        "name": node.name,
        "shard": node.shard,
        "host": node.host,
        "port": node.port,
        "pid": node.pid,
        "running": process != "stopped",
        "process": process,
        "alive": False,
        "role": None,
        "sentinel_role": sentinel_role,
        "sentinel_flags": sentinel_flags,
        "master_link_status": None,
    }
    if process != "running":
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


@dataclass(frozen=True)
class SentinelView:
    """One Sentinel's picture of a shard: its master, and every server's role and flags."""

    epoch: int
    master: tuple[str, int]
    # port -> (role, flags other than the role): ports are unique on the launcher's one host.
    roles: dict[int, tuple[str, frozenset[str]]] = field(default_factory=dict)


def _entry(info: dict[str, str]) -> tuple[int, tuple[str, frozenset[str]]]:
    found = flags(info)
    role = next((ROLE_FLAGS[f] for f in ROLE_FLAGS if f in found), "unknown")
    return int(info["port"]), (role, found - set(ROLE_FLAGS) - {""})


def sentinel_view(sentinel_nodes: Iterable[Node], shard: str) -> SentinelView | None:
    """The most recent view of ``shard`` among the Sentinels that answer (None if none does)."""
    best: SentinelView | None = None
    for node in sentinel_nodes:
        try:
            with probe(node, None) as client:
                master = pairs(client.execute_command("SENTINEL", "MASTER", shard))
                replicas = [pairs(r) for r in client.execute_command("SENTINEL", "REPLICAS", shard)]
        except PROBE_ERRORS:
            continue
        view = SentinelView(
            epoch=int(master.get("config-epoch", 0) or 0),
            master=(master["ip"], int(master["port"])),
            roles=dict(map(_entry, [master, *replicas])),
        )
        if best is None or view.epoch > best.epoch:
            best = view
    return best
