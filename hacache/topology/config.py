"""What the launcher writes for others: config files for its processes, URLs for Django.

Invariants kept here:

- Every path in a config file is absolute and quoted, since Redis chdirs into the node's own
  directory and a run directory may contain spaces.
- Nothing is persisted to disk: a server loses its data when it stops (``save ""``, no AOF), so a
  restarted node starts empty, as a cache server would.
- Sentinels use a majority quorum (computed by the caller) and monitor every shard by its shard
  name, which is also the Sentinel service name in the ``sentinel://`` URLs.
- A password is percent-encoded wherever it goes into a URL.
- With TLS, a node listens on ``tls-port`` only (``port 0``): a plain client cannot reach it, so
  a URL that forgets TLS fails instead of quietly working. Its own links (replica to master,
  Sentinel to every node) use TLS too (``tls-replication yes``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote as url_quote

from hacache.topology.node import Node
from hacache.topology.tls import Certificates

AUTH_CLIENTS = ("yes", "optional", "no")  # redis.conf's tls-auth-clients


@dataclass(frozen=True)
class TLS:
    """A topology's TLS settings: its certificates, and whether nodes ask clients for one
    (``tls-auth-clients``: yes, optional or no)."""

    certs: Certificates
    auth_clients: str = "yes"


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


def tls_lines(tls: TLS) -> list[str]:
    return [
        f"tls-cert-file {quote(tls.certs.server_cert)}",
        f"tls-key-file {quote(tls.certs.server_key)}",
        f"tls-ca-cert-file {quote(tls.certs.ca)}",
        f"tls-auth-clients {tls.auth_clients}",
        "tls-replication yes",
    ]


def common_lines(node: Node, tls: TLS | None = None) -> list[str]:
    ports = [f"port {node.port}"] if tls is None else ["port 0", f"tls-port {node.port}"]
    return [
        *ports,
        *(tls_lines(tls) if tls is not None else []),
        f"bind {node.host}",
        f"dir {quote(node.dir)}",
        f"logfile {quote(node.log)}",
        f"pidfile {quote(str(Path(node.dir) / (node.name + '.pid')))}",
        "daemonize no",
        "protected-mode no",
    ]


def redis_lines(
    node: Node, *, password: str | None, master: Node | None, tls: TLS | None = None
) -> list[str]:
    """redis.conf for a master (``master`` None) or a replica of ``master``."""
    lines = [
        *common_lines(node, tls),
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
    tls: TLS | None = None,
) -> list[str]:
    """sentinel.conf monitoring each shard's launched master under the shard's name."""
    lines = common_lines(node, tls)
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


def _tls_query(tls: TLS | None, *, sentinel: bool) -> str:
    if tls is None:
        return ""
    params = {"ssl": "true"} if sentinel else {}
    params.update(tls.certs.client_params())
    return "".join(f"&{k}={url_quote(v, safe='/')}" for k, v in params.items())


def redis_url(node: Node, shard: str, password: str | None, tls: TLS | None = None) -> str:
    """``redis://`` URL of one server (``rediss://`` with TLS: the CA and the client
    certificate as ``ssl_*`` parameters); ``name=`` is the shard's stable identity for hashing."""
    host = f"[{node.host}]" if ":" in node.host else node.host
    scheme = "redis" if tls is None else "rediss"
    query = _tls_query(tls, sentinel=False)
    return f"{scheme}://{_auth(password)}{host}:{node.port}/0?name={shard}{query}"


def sentinel_url(
    sentinels: Iterable[tuple[str, int]], shard: str, password: str | None, tls: TLS | None = None
) -> str:
    """``sentinel://`` URL through which hacache finds the shard's master. ``password`` is the
    servers'; the launcher's Sentinels have none, so the URL gives them none. With TLS,
    ``ssl=true`` and the ``ssl_*`` parameters apply to the Sentinels and to the servers."""
    hosts = ",".join(f"{host}:{port}" for host, port in sentinels)
    query = _tls_query(tls, sentinel=True)
    return f"sentinel://{_auth(password)}{hosts}/{shard}/0?name={shard}{query}"
