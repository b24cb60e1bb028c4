"""Launch a local Redis topology (sharded masters, replicas, Sentinels) for tests and development.

The same code backs the pytest fixtures and the command line, so what developers run by hand is
exactly what the test-suite exercises.

Library use::

    with Topology(tmp_path, shards=2, replicas=1, sentinels=3) as topo:
        settings.CACHES = topo.caches_setting()
        topo.kill("shard0-master")          # fault injection

Command line (processes outlive the command; state lives in ``DIR/topology.json``)::

    python -m hacache.topology up [--dir DIR] [--shards N] [--replicas R] [--sentinels S]
                                  [--down-after-ms MS] [--password PW] [--json]
    python -m hacache.topology status [--dir DIR]     # exit status 1 if any node is dead
    python -m hacache.topology down [--dir DIR]

``DIR`` defaults to ``.hacache/topology`` under the current directory; ``up`` defaults to 3 shards,
1 replica per shard and 3 Sentinels. ``up`` prints a table of nodes, then a line ``CACHES = ``
followed by the Django ``CACHES`` setting as JSON. With ``--json`` it prints only that JSON, on a
single line, so a shell script can capture it::

    CACHES_JSON="$(python -m hacache.topology up --json)"

Either way the same JSON is written to ``DIR/caches.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "Node",
    "RedisNotInstalled",
    "Topology",
    "TopologyError",
    "TopologyRunning",
    "free_port",
    "main",
]

STATE_FILE = "topology.json"
CACHES_FILE = "caches.json"
DEFAULT_DIR = Path(".hacache") / "topology"
PROBE_TIMEOUT = 0.3  # short, so a dead or paused node never stalls the launcher
POLL_INTERVAL = 0.05
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
LOG_TAIL_LINES = 20
FATAL_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT}
)
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

    @property
    def is_sentinel(self) -> bool:
        return self.role == "sentinel"


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Let the kernel pick an unused port; racy by nature, so callers retry on conflicts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _binaries() -> tuple[str, list[str]]:
    """Resolve the server binary and the Sentinel command prefix, failing before any launch."""
    server = shutil.which("redis-server")
    if server is None:
        raise RedisNotInstalled()
    sentinel = shutil.which("redis-sentinel")
    return server, ([sentinel] if sentinel else [server])


def _quote(value: str) -> str:
    """Quote a value for redis.conf so paths with spaces survive."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cmdline(pid: int) -> str | None:
    """Command line of ``pid`` (None if gone); used to avoid signalling recycled pids."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()
    result = subprocess.run(
        ["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


def _pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (orphans may never be reaped here)."""
    if Path("/proc/self").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def looks_like_node(cmdline: str, node: Node) -> bool:
    """Whether a command line belongs to ``node``: Redis retitles itself ``redis-... HOST:PORT``."""
    if "redis" not in cmdline:
        return False
    if node.conf and node.conf in cmdline:
        return True
    return re.search(rf":{node.port}(?!\d)", cmdline) is not None


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _port_conflict(path: str) -> bool:
    try:
        return "Address already in use" in Path(path).read_text(errors="replace")
    except OSError:
        return False


def _client(node: Node, password: str | None) -> redis.Redis:
    """A probe client: short timeouts and no retries, so dead nodes fail fast."""
    return redis.Redis(
        host=node.host,
        port=node.port,
        password=None if node.is_sentinel else password,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


@contextlib.contextmanager
def _probe(node: Node, password: str | None) -> Iterator[redis.Redis]:
    client = _client(node, password)
    try:
        yield client
    finally:
        client.close()


def _pairs(reply: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """Normalise a RESP3 map or a RESP2 flat ``[k, v, k, v]`` reply into a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=False))


def _format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------- topology


class Topology:
    """A set of local Redis masters (one per shard), their replicas and optional Sentinels."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        shards: int = 3,
        replicas: int = 0,
        sentinels: int = 0,
        host: str = "127.0.0.1",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
    ) -> None:
        if shards < 1 or replicas < 0 or sentinels < 0:
            raise ValueError("need shards >= 1, replicas >= 0 and sentinels >= 0")
        if password is not None and (not password or re.search(r"[\s\"']", password)):
            # Sentinel's CONFIG REWRITE writes auth-pass unquoted; such a password breaks restarts.
            raise ValueError("password must be non-empty, without whitespace or quotes")
        self.run_dir = Path(run_dir).resolve()  # absolute: Redis chdirs into its own dir
        self.shards = shards
        self.replicas = replicas
        self.sentinels = sentinels
        self.host = host
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password = password
        self._nodes: dict[str, Node] = {n.name: n for n in self._plan()}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started = False

    # ----------------------------------------------------------------- layout

    @property
    def shard_names(self) -> list[str]:
        return [f"shard{i}" for i in range(self.shards)]

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def quorum(self) -> int:
        """Majority of Sentinels, so one partitioned Sentinel cannot trigger a failover."""
        return max(1, self.sentinels // 2 + 1)

    def _plan(self) -> list[Node]:
        nodes = []
        for shard in self.shard_names:
            nodes.append(self._new_node(f"{shard}-master", "master", shard))
            for i in range(1, self.replicas + 1):
                nodes.append(self._new_node(f"{shard}-replica{i}", "replica", shard))
        for i in range(self.sentinels):
            nodes.append(self._new_node(f"sentinel{i}", "sentinel", None))
        return nodes

    def _new_node(self, name: str, role: str, shard: str | None) -> Node:
        node_dir = self.run_dir / name
        conf = node_dir / ("sentinel.conf" if role == "sentinel" else "redis.conf")
        return Node(
            name=name,
            role=role,
            shard=shard,
            host=self.host,
            port=0,
            dir=str(node_dir),
            conf=str(conf),
            log=str(node_dir / f"{name}.log"),
        )

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node named {name!r}; have {sorted(self._nodes)}") from None

    def _by_role(self, role: str) -> list[Node]:
        return [n for n in self._nodes.values() if n.role == role]

    def _launched_master(self, shard: str) -> Node:
        return self._nodes[f"{shard}-master"]

    # ----------------------------------------------------------------- config files

    def _common_conf(self, node: Node) -> list[str]:
        return [
            f"port {node.port}",
            f"bind {node.host}",
            f"dir {_quote(node.dir)}",
            f"logfile {_quote(node.log)}",
            f"pidfile {_quote(str(Path(node.dir) / (node.name + '.pid')))}",
            "daemonize no",
            "protected-mode no",
        ]

    def _redis_conf(self, node: Node) -> list[str]:
        lines = [
            *self._common_conf(node),
            'save ""',
            "appendonly no",
            # Fast tests: no 5 s diskless-sync delay, no 10 s wait for replicas on SIGTERM.
            "repl-diskless-sync-delay 0",
            "shutdown-timeout 0",
        ]
        if self.password:
            lines += [f"requirepass {_quote(self.password)}", f"masterauth {_quote(self.password)}"]
        if node.role == "replica":
            assert node.shard is not None
            master = self._launched_master(node.shard)
            lines.append(f"replicaof {master.host} {master.port}")
        return lines

    def _sentinel_conf(self, node: Node) -> list[str]:
        lines = self._common_conf(node)
        if not _is_ip(self.host):
            lines.append("sentinel resolve-hostnames yes")
        for shard in self.shard_names:
            master = self._launched_master(shard)
            lines += [
                f"sentinel monitor {shard} {master.host} {master.port} {self.quorum}",
                f"sentinel down-after-milliseconds {shard} {self.down_after_ms}",
                f"sentinel failover-timeout {shard} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {shard} 1",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {shard} {_quote(self.password)}")
        return lines

    def _write_conf(self, node: Node) -> None:
        lines = self._sentinel_conf(node) if node.is_sentinel else self._redis_conf(node)
        Path(node.dir).mkdir(parents=True, exist_ok=True)
        Path(node.conf).write_text("\n".join(lines) + "\n")

    # ----------------------------------------------------------------- process control

    def _command(self, node: Node) -> list[str]:
        server, sentinel = _binaries()
        if not node.is_sentinel:
            return [server, node.conf]
        extra = ["--sentinel"] if sentinel == [server] else []
        return [*sentinel, node.conf, *extra]

    def _spawn(self, node: Node, *, fresh_log: bool) -> None:
        """Start the node in its own session so it outlives the launching process."""
        command = self._command(node)
        with open(node.log, "wb" if fresh_log else "ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node.dir,
                start_new_session=True,
            )
        self._procs[node.name] = proc
        node.pid = proc.pid

    def _is_running(self, node: Node) -> bool:
        if node.pid is None:
            return False
        proc = self._procs.get(node.name)
        if proc is not None and proc.pid == node.pid:
            return proc.poll() is None
        return _pid_running(node.pid)

    def _owns(self, node: Node) -> bool:
        """True only if node.pid is still our process, never a recycled pid."""
        if not self._is_running(node):
            return False
        assert node.pid is not None
        proc = self._procs.get(node.name)
        if proc is not None and proc.pid == node.pid:
            return True
        cmdline = _cmdline(node.pid)
        return cmdline is not None and looks_like_node(cmdline, node)

    def _signal(self, node: Node, sig: int) -> None:
        assert node.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, sig)

    def _wait_dead(self, nodes: Iterable[Node], timeout: float) -> list[Node]:
        """Wait for nodes to exit; return those still running at the deadline."""
        pending = list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            pending = [n for n in pending if self._is_running(n)]
            if not pending or time.monotonic() >= deadline:
                return pending
            time.sleep(POLL_INTERVAL)

    def _forget(self, node: Node) -> None:
        node.pid = None
        self._procs.pop(node.name, None)

    # ----------------------------------------------------------------- probes

    def _ping(self, node: Node) -> bool:
        try:
            with _probe(node, self.password) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def _replica_reason(self, node: Node) -> str | None:
        """None when the replica's link to its master is up, else why not."""
        try:
            with _probe(node, self.password) as client:
                info = client.info("replication")
        except (redis.RedisError, OSError) as exc:
            return f"INFO replication failed: {exc}"
        link = info.get("master_link_status")
        return None if link == "up" else f"master_link_status is {link!r}"

    def _sentinel_reason(self, node: Node) -> str | None:
        """None once the Sentinel knows every master, its replicas and its peer Sentinels."""
        try:
            with _probe(node, None) as client:
                for shard in self.shard_names:
                    reason = self._sentinel_shard_reason(client, shard)
                    if reason:
                        return reason
        except (redis.RedisError, OSError) as exc:
            return f"SENTINEL query failed: {exc}"
        return None

    def _sentinel_shard_reason(self, client: redis.Redis, shard: str) -> str | None:
        master = self._launched_master(shard)
        addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", shard)
        if not addr or int(addr[1]) != master.port:
            return f"does not know {shard} master {master.host}:{master.port} (has {addr})"
        replicas = client.execute_command("SENTINEL", "REPLICAS", shard)
        healthy = [r for r in map(_pairs, replicas) if not _bad_flags(r.get("flags", ""))]
        if len(healthy) < self.replicas:
            return f"sees {len(healthy)}/{self.replicas} healthy replicas of {shard}"
        peers = client.execute_command("SENTINEL", "SENTINELS", shard)
        if len(peers) < self.sentinels - 1:
            return f"sees {len(peers)}/{self.sentinels - 1} peer Sentinels for {shard}"
        return None

    def _ask_sentinels(self, shard: str) -> tuple[str, int] | None:
        for sentinel in self._by_role("sentinel"):
            if not self._is_running(sentinel):
                continue
            try:
                with _probe(sentinel, None) as client:
                    addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", shard)
            except (redis.RedisError, OSError):
                continue
            if addr:
                return str(addr[0]), int(addr[1])
        return None

    # ----------------------------------------------------------------- readiness

    def _fail(self, node: Node, problem: str) -> TopologyError:
        return TopologyError(
            f"{node.name} ({node.host}:{node.port}) {problem}\n"
            f"--- last lines of {node.log} ---\n{_log_tail(node.log)}"
        )

    def _wait_ping(self, node: Node, deadline: float) -> bool:
        """True once the node answers PING; False if its process exited first."""
        while True:
            if not self._is_running(node):
                return False
            if self._ping(node):
                return True
            if time.monotonic() >= deadline:
                raise self._fail(node, "did not answer PING in time")
            time.sleep(POLL_INTERVAL)

    def _wait_ready(
        self, nodes: list[Node], deadline: float, check: Callable[[Node], str | None]
    ) -> None:
        """Poll ``check`` on every node until all pass, or fail naming the laggard."""
        pending = list(nodes)
        while pending:
            reasons = {n.name: check(n) for n in pending}
            pending = [n for n in pending if reasons[n.name] is not None]
            for node in pending:
                if not self._is_running(node):
                    raise self._fail(node, "exited while waiting to become ready")
            if pending and time.monotonic() >= deadline:
                node = pending[0]
                raise self._fail(node, f"not ready in time: {reasons[node.name]}")
            if pending:
                time.sleep(POLL_INTERVAL)

    def _launch(self, node: Node, deadline: float, used: set[int]) -> None:
        """Start one node on a fresh port, moving to another port if someone grabbed it."""
        for _attempt in range(PORT_ATTEMPTS):
            node.port = self._pick_port(used)
            self._write_conf(node)
            self._spawn(node, fresh_log=True)
            if self._wait_ping(node, deadline):
                return
            code = self._procs[node.name].returncode
            if not _port_conflict(node.log):
                raise self._fail(node, f"exited with code {code} during startup")
            self._forget(node)
        raise self._fail(node, f"could not get a free port after {PORT_ATTEMPTS} attempts")

    def _pick_port(self, used: set[int]) -> int:
        while True:
            port = free_port(self.host)
            if port not in used:
                used.add(port)
                return port

    # ----------------------------------------------------------------- lifecycle

    def up(self, timeout: float = 15.0) -> Topology:
        """Start masters, then replicas, then Sentinels, each phase waiting until ready."""
        if self._started:
            return self
        _binaries()
        self._refuse_if_running()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        used: set[int] = set()
        try:
            for role, check in (
                ("master", None),
                ("replica", self._replica_reason),
                ("sentinel", self._sentinel_reason),
            ):
                phase = self._by_role(role)
                for node in phase:
                    self._launch(node, deadline, used)
                if check is not None:
                    self._wait_ready(phase, deadline, check)
        except BaseException:
            self.down()
            raise
        self._started = True
        self._save_state()
        return self

    def _refuse_if_running(self) -> None:
        if not self.state_path.exists():
            return
        try:
            other = Topology.load(self.run_dir)
        except (OSError, ValueError, KeyError, TypeError):
            return  # unreadable state: nothing we could safely stop anyway
        live = [n.name for n in other.nodes() if other._owns(n)]
        if live:
            raise TopologyRunning(
                f"a topology is already running in {self.run_dir} ({', '.join(live)}); "
                "stop it first with `python -m hacache.topology down`"
            )
        other.down()  # stale state from a crashed run

    def down(self) -> None:
        """Stop exactly the processes this topology started; safe to call repeatedly."""
        order = [*self._by_role("sentinel"), *self._by_role("replica"), *self._by_role("master")]
        targets = []
        for node in order:
            if node.pid is not None and self._owns(node):
                self._signal(node, signal.SIGTERM)
                self._signal(node, signal.SIGCONT)  # a paused process only handles TERM later
                targets.append(node)
        stubborn = self._wait_dead(targets, STOP_TIMEOUT)
        for node in stubborn:
            if self._owns(node):
                self._signal(node, signal.SIGKILL)
        still = self._wait_dead(stubborn, STOP_TIMEOUT)
        if still:  # keep the state file so a later `down` can retry
            names = ", ".join(f"{n.name} (pid {n.pid})" for n in still)
            raise TopologyError(f"could not stop {names}")
        for node in order:
            self._forget(node)
        self._started = False
        for name in (STATE_FILE, CACHES_FILE):
            (self.run_dir / name).unlink(missing_ok=True)

    def __enter__(self) -> Topology:
        return self if self._started else self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # ----------------------------------------------------------------- state file

    def _state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "config": {
                "shards": self.shards,
                "replicas": self.replicas,
                "sentinels": self.sentinels,
                "host": self.host,
                "down_after_ms": self.down_after_ms,
                "failover_timeout_ms": self.failover_timeout_ms,
                "password": self.password,
            },
            "nodes": [asdict(n) for n in self._nodes.values()],
        }

    def _save_state(self) -> None:
        """Write atomically and privately: the file may hold the password."""
        if not self._started:
            return
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._state(), fh, indent=2)
        os.replace(tmp, self.state_path)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> Topology:
        """Rebuild a running topology from its state file (raises FileNotFoundError if none)."""
        path = Path(run_dir).resolve() / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no topology state file at {path}")
        state = json.loads(path.read_text())
        topo = cls(run_dir, **state["config"])
        topo._nodes = {d["name"]: Node(**d) for d in state["nodes"]}
        topo._started = True
        return topo

    # ----------------------------------------------------------------- inspection

    def status(self) -> list[dict[str, Any]]:
        """Live view of every node: does it answer, and what role does it hold now."""
        return [self._node_status(n) for n in self._nodes.values()]

    def _node_status(self, node: Node) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": node.name,
            "shard": node.shard,
            "host": node.host,
            "port": node.port,
            "pid": node.pid,
            "running": self._is_running(node),
            "alive": False,
            "role": None,
            "master_link_status": None,
        }
        if not row["running"]:
            return row
        try:
            with _probe(node, self.password) as client:
                row["alive"] = bool(client.ping())
                if node.is_sentinel:
                    row["role"] = "sentinel"
                else:
                    info = client.info("replication")
                    row["role"] = "replica" if info.get("role") == "slave" else info.get("role")
                    row["master_link_status"] = info.get("master_link_status")
        except (redis.RedisError, OSError):
            pass
        return row

    def masters(self) -> dict[str, Node]:
        """Current master per shard: Sentinel's view when there are Sentinels, else as launched.

        Falls back to the launched master for a shard when no Sentinel answers.
        """
        result = {}
        for shard in self.shard_names:
            addr = self._ask_sentinels(shard) if self.sentinels else None
            result[shard] = self._node_at(shard, addr) if addr else self._launched_master(shard)
        return result

    def _node_at(self, shard: str, addr: tuple[str, int]) -> Node:
        host, port = addr
        for node in self._nodes.values():
            if not node.is_sentinel and node.port == port:
                return node
        return Node(name=f"{shard}@{host}:{port}", role="master", shard=shard, host=host, port=port)

    def master_urls(self) -> list[str]:
        """One URL per shard; ``name=`` is the shard's stable identity for key hashing."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        urls = []
        for shard, node in self.masters().items():
            host = f"[{node.host}]" if ":" in node.host else node.host
            urls.append(f"redis://{auth}{host}:{node.port}/0?name={shard}")
        return urls

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self._by_role("sentinel")]

    def sentinel_urls(self) -> list[str]:
        """One ``sentinel://`` URL per shard: hacache finds each master through Sentinel."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        query = f"&sentinel_password={quote(self.password, safe='')}" if self.password else ""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses())
        return [
            f"sentinel://{auth}{hosts}/{shard}/0?name={shard}{query}" for shard in self.shard_names
        ]

    def caches_setting(self, **options: Any) -> dict[str, Any]:
        """A ready-to-use Django ``CACHES`` dict: through Sentinel when there are sentinels."""
        urls = self.sentinel_urls() if self._by_role("sentinel") else self.master_urls()
        default: dict[str, Any] = {"BACKEND": "hacache.HACache", "LOCATION": urls}
        if options:
            default["OPTIONS"] = options
        return {"default": default}

    # ----------------------------------------------------------------- fault injection

    def _require_running(self, node: Node) -> None:
        if not self._owns(node):
            raise TopologyError(f"{node.name} is not running")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; for fatal signals also wait until the process is gone."""
        node = self.node(name)
        self._require_running(node)
        self._signal(node, sig)
        if sig not in FATAL_SIGNALS:
            return
        if sig != signal.SIGKILL:
            self._signal(node, signal.SIGCONT)  # a paused process cannot act on TERM/INT
        if self._wait_dead([node], STOP_TIMEOUT * 2):
            raise TopologyError(f"{name} (pid {node.pid}) did not exit after signal {sig}")
        self._forget(node)
        self._save_state()

    def pause(self, name: str) -> None:
        """Freeze the process (SIGSTOP): it keeps its port but stops answering."""
        node = self.node(name)
        self._require_running(node)
        self._signal(node, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        node = self.node(name)
        self._require_running(node)
        self._signal(node, signal.SIGCONT)

    def stop(self, name: str) -> None:
        """Graceful shutdown (SIGTERM), waiting for the exit."""
        self.kill(name, signal.SIGTERM)

    def start(self, name: str, timeout: float = 10.0) -> None:
        """Restart a stopped node on its old port with its (possibly Sentinel-rewritten) config."""
        node = self.node(name)
        if self._owns(node):
            raise TopologyError(f"{name} is already running (pid {node.pid})")
        self._forget(node)
        self._spawn(node, fresh_log=False)
        try:
            if not self._wait_ping(node, time.monotonic() + timeout):
                code = self._procs[name].returncode
                raise self._fail(node, f"exited with code {code} on restart")
        except TopologyError:
            self._kill_quietly(node)
            raise
        self._save_state()

    def _kill_quietly(self, node: Node) -> None:
        if node.pid is not None and self._owns(node):
            self._signal(node, signal.SIGKILL)
            self._wait_dead([node], STOP_TIMEOUT)
        self._forget(node)
        self._save_state()


def _bad_flags(flags: str) -> bool:
    return bool({"s_down", "o_down", "disconnected"} & set(flags.split(",")))


# --------------------------------------------------------------------------- CLI

NODE_COLUMNS = ["name", "role", "shard", "host", "port", "pid"]
STATUS_COLUMNS = ["name", "role", "shard", "port", "pid", "alive", "master_link_status"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"run directory (default: {DEFAULT_DIR})"
    )
    parser = argparse.ArgumentParser(
        prog="python -m hacache.topology", description="Run a local sharded Redis topology."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start a topology")
    up.add_argument("--shards", type=int, default=3)
    up.add_argument("--replicas", type=int, default=1, help="replicas per shard")
    up.add_argument("--sentinels", type=int, default=3)
    up.add_argument("--down-after-ms", type=int, default=1000)
    up.add_argument("--failover-timeout-ms", type=int, default=3000)
    up.add_argument("--password", default=None)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for readiness")
    up.add_argument("--json", action="store_true", help="print only the CACHES JSON")
    up.add_argument(
        "--options",
        type=json.loads,
        default={},
        metavar="JSON",
        help="OPTIONS for the printed CACHES setting, e.g. '{\"NEAR_CACHE\": true}'",
    )
    sub.add_parser("down", parents=[common], help="stop the topology")
    sub.add_parser("status", parents=[common], help="show nodes; exit 1 if any is dead")
    return parser


def _cmd_up(args: argparse.Namespace) -> int:
    topo = Topology(
        args.dir,
        shards=args.shards,
        replicas=args.replicas,
        sentinels=args.sentinels,
        host=args.host,
        down_after_ms=args.down_after_ms,
        failover_timeout_ms=args.failover_timeout_ms,
        password=args.password,
    )
    topo.up(timeout=args.timeout)
    caches = topo.caches_setting(**args.options)
    (topo.run_dir / CACHES_FILE).write_text(json.dumps(caches, indent=2) + "\n")
    if args.json:
        print(json.dumps(caches))
        return 0
    rows = [asdict(n) for n in topo.nodes()]
    print(_format_table(rows, NODE_COLUMNS))
    print(f"\nstate: {topo.state_path}")
    print("CACHES = ")
    print(json.dumps(caches, indent=2))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        topo = Topology.load(args.dir)
    except FileNotFoundError:
        print(f"no topology running in {args.dir}")
        return 0
    topo.down()
    print(f"stopped topology in {args.dir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        topo = Topology.load(args.dir)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    rows = topo.status()
    print(_format_table(rows, STATUS_COLUMNS))
    dead = [r["name"] for r in rows if not r["alive"]]
    if dead:
        print(f"dead: {', '.join(dead)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m hacache.topology``; returns the exit status."""
    args = _parser().parse_args(argv)
    handlers = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}
    try:
        return handlers[args.command](args)
    except TopologyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (RedisNotInstalled, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
