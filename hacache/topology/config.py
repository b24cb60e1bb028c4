"""What the launcher writes for others: config files for its processes, URLs for Django.

Invariants kept here:

- Every path in a config file is absolute and quoted, since Redis chdirs into the node's own
  directory and a run directory may contain spaces.
- Nothing is persisted to disk: a server loses its data when it stops (``save ""``, no AOF), so a
  restarted node starts empty, as a cache server would.
- Sentinels use a majority quorum (computed by the caller) and monitor every shard by its shard
  name, which is also the Sentinel service name in the ``sentinel://`` URLs.
- A password is percent-encoded wherever it goes into a URL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote as url_quote

from hacache.topology.node import Node


def quote(value: str) -> str:
    """Quote a value for redis.conf so paths with spaces survive."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def common_lines(node: Node) -> list[str]:
    return [
        f"port {node.port}",
        f"bind {node.host}",
        f"dir {quote(node.dir)}",
        f"logfile {quote(node.log)}",
        f"pidfile {quote(str(Path(node.dir) / (node.name + '.pid')))}",
        "daemonize no",
        "protected-mode no",
    ]


def redis_lines(node: Node, *, password: str | None, master: Node | None) -> list[str]:
    """redis.conf for a master (``master`` None) or a replica of ``master``."""
    lines = [
        *common_lines(node),
        'save ""',
        "appendonly no",
        # Fast tests: no 5 s diskless-sync delay, no 10 s wait for replicas on SIGTERM.
        "repl-diskless-sync-delay 0",
        "shutdown-timeout 0",
    ]
    if password:
        lines += [f"requirepass {quote(password)}", f"masterauth {quote(password)}"]
    if master is not None:
        lines.append(f"replicaof {master.host} {master.port}")
    return lines


def sentinel_lines(
    node: Node,
    *,
    masters: dict[str, Node],
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
    password: str | None,
) -> list[str]:
    """sentinel.conf monitoring each shard's launched master under the shard's name."""
    lines = common_lines(node)
    if not is_ip(node.host):
        lines.append("sentinel resolve-hostnames yes")
    for shard, master in masters.items():
        lines += [
            f"sentinel monitor {shard} {master.host} {master.port} {quorum}",
            f"sentinel down-after-milliseconds {shard} {down_after_ms}",
            f"sentinel failover-timeout {shard} {failover_timeout_ms}",
            f"sentinel parallel-syncs {shard} 1",
        ]
        if password:
            lines.append(f"sentinel auth-pass {shard} {quote(password)}")
    return lines


def write(node: Node, lines: list[str]) -> None:
    Path(node.dir).mkdir(parents=True, exist_ok=True)
    Path(node.conf).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- client URLs


def _auth(password: str | None) -> str:
    return f":{url_quote(password, safe='')}@" if password else ""


def redis_url(node: Node, shard: str, password: str | None) -> str:
    """``redis://`` URL of one server; ``name=`` is the shard's stable identity for hashing."""
    host = f"[{node.host}]" if ":" in node.host else node.host
    return f"redis://{_auth(password)}{host}:{node.port}/0?name={shard}"


def sentinel_url(sentinels: Iterable[tuple[str, int]], shard: str, password: str | None) -> str:
    """``sentinel://`` URL through which hacache finds the shard's master. ``password`` is the
    servers'; the launcher's Sentinels have none, so the URL gives them none."""
    hosts = ",".join(f"{host}:{port}" for host, port in sentinels)
    return f"sentinel://{_auth(password)}{hosts}/{shard}/0?name={shard}"
