"""The ``Topology`` class: start, inspect, break and stop a local Redis topology.

One master per shard, ``replicas`` replicas of each, and optionally Sentinels monitoring every
shard, all on free loopback ports. The pytest fixtures, the benchmarks, the load tests and the
command line all use this class, so what developers run by hand is what the tests exercise.

Invariants kept here:

- ``up()`` starts masters, then replicas, then Sentinels, and returns only when every phase is
  ready (replicas linked to their master, each Sentinel aware of every master, replica and peer);
  if anything fails, it stops whatever it had started before raising.
- Only processes this topology started are ever signalled (see ``process.looks_like_node``), and
  ``down()`` stops all of them, paused ones included, before deleting the state file.
- While a topology runs, ``DIR/topology.json`` (mode 0600: it may hold the password) records every
  node's port and pid, so another process (``Topology.load``) can inspect or stop it; it is
  rewritten after every kill and start.
- A node keeps its port for the topology's lifetime, so a restarted node comes back where clients
  and Sentinels expect it.
- With ``tls=True`` every node, Sentinels included, listens on TLS only, with certificates made
  once in ``DIR/tls/`` (see ``tls.make_certificates``); the URLs it gives out are ``rediss://``
  (and ``sentinel://...?ssl=true``) with the CA and the client certificate, and its own probes
  use them too.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

from hacache.topology import config, probes, process, state, tls
from hacache.topology.node import Node, TopologyError, TopologyRunning, UnknownNode, plan

PORT_ATTEMPTS = 5


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
        tls: bool = False,
        tls_auth_clients: str = "yes",
    ) -> None:
        if shards < 1 or replicas < 0 or sentinels < 0:
            raise ValueError("need shards >= 1, replicas >= 0 and sentinels >= 0")
        if password is not None and (not password or re.search(r"[\s\"']", password)):
            # Sentinel's CONFIG REWRITE writes auth-pass unquoted; such a password breaks restarts.
            raise ValueError("password must be non-empty, without whitespace or quotes")
        if tls_auth_clients not in config.AUTH_CLIENTS:
            raise ValueError(f"tls_auth_clients must be one of {', '.join(config.AUTH_CLIENTS)}")
        self.run_dir = Path(run_dir).resolve()  # absolute: Redis chdirs into its own dir
        self.shards = shards
        self.replicas = replicas
        self.sentinels = sentinels
        self.host = host
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password = password
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        certs = str(self.run_dir / "tls") if tls else None
        planned = plan(self.run_dir, host, self.shard_names, replicas, sentinels, certs)
        self._nodes: dict[str, Node] = {n.name: n for n in planned}
        self._processes = process.Supervisor()
        self._started = False

    # ----------------------------------------------------------------- layout

    @property
    def shard_names(self) -> list[str]:
        return [f"shard{i}" for i in range(self.shards)]

    @property
    def state_path(self) -> Path:
        return self.run_dir / state.STATE_FILE

    @property
    def quorum(self) -> int:
        """Majority of Sentinels, so one partitioned Sentinel cannot trigger a failover."""
        return max(1, self.sentinels // 2 + 1)

    @property
    def certificates(self) -> tls.Certificates | None:
        """The CA, server and client certificates of a TLS topology (made by ``up()``)."""
        return tls.Certificates(str(self.run_dir / "tls")) if self.tls else None

    @property
    def _tls(self) -> config.TLS | None:
        certs = self.certificates
        return None if certs is None else config.TLS(certs, self.tls_auth_clients)

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def node(self, name: str) -> Node:
        """The node called ``name``; ``UnknownNode`` (a KeyError) lists the valid names."""
        try:
            return self._nodes[name]
        except KeyError:
            valid = ", ".join(self._nodes)
            raise UnknownNode(f"no node named {name!r}; valid nodes: {valid}") from None

    def _by_role(self, role: str) -> list[Node]:
        return [n for n in self._nodes.values() if n.role == role]

    def _launched_master(self, shard: str) -> Node:
        return self._nodes[f"{shard}-master"]

    def _launched_masters(self) -> dict[str, Node]:
        return {shard: self._launched_master(shard) for shard in self.shard_names}

    # ----------------------------------------------------------------- config files

    def _redis_conf(self, node: Node) -> list[str]:
        master = None
        if node.role == "replica":
            assert node.shard is not None
            master = self._launched_master(node.shard)
        return config.redis_lines(node, password=self.password, master=master, tls=self._tls)

    def _sentinel_conf(self, node: Node) -> list[str]:
        return config.sentinel_lines(
            node,
            masters=self._launched_masters(),
            quorum=self.quorum,
            down_after_ms=self.down_after_ms,
            failover_timeout_ms=self.failover_timeout_ms,
            password=self.password,
            tls=self._tls,
        )

    def _write_conf(self, node: Node) -> None:
        lines = self._sentinel_conf(node) if node.is_sentinel else self._redis_conf(node)
        config.write(node, lines)

    # ----------------------------------------------------------------- launching

    def _spawn(self, node: Node, *, fresh_log: bool) -> None:
        self._processes.spawn(node, fresh_log=fresh_log)

    def _wait_ping(self, node: Node, deadline: float) -> bool:
        """True once the node answers PING; False if its process exited first."""
        return self._processes.wait_until(node, deadline, self._ping, "did not answer PING")

    def _ping(self, node: Node) -> str | None:
        return None if probes.ping(node, self.password) else "no answer to PING"

    def _replica_reason(self, node: Node) -> str | None:
        return probes.replica_reason(node, self.password)

    def _sentinel_reason(self, node: Node) -> str | None:
        return probes.sentinel_reason(node, self._launched_masters(), self.replicas, self.sentinels)

    def _launch(self, node: Node, deadline: float, used: set[int]) -> None:
        """Start one node on a fresh port, moving to another port if someone grabbed it."""
        for _attempt in range(PORT_ATTEMPTS):
            node.port = self._pick_port(used)
            self._write_conf(node)
            self._spawn(node, fresh_log=True)
            if self._wait_ping(node, deadline):
                return
            code = self._processes.returncode(node)
            if not process.port_conflict(node.log):
                raise self._processes.fail(node, f"exited with code {code} during startup")
            self._processes.forget(node)
        problem = f"could not get a free port after {PORT_ATTEMPTS} attempts"
        raise self._processes.fail(node, problem)

    def _pick_port(self, used: set[int]) -> int:
        while True:
            port = process.free_port(self.host)
            if port not in used:
                used.add(port)
                return port

    # ----------------------------------------------------------------- lifecycle

    def up(self, timeout: float = 15.0) -> Topology:
        """Start masters, then replicas, then Sentinels, each phase waiting until ready."""
        if self._started:
            return self
        process.binaries()
        self._refuse_if_running()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            tls.make_certificates(self.run_dir / "tls", self.host)
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
                    self._processes.wait_ready(phase, deadline, check)
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
        live = [n.name for n in other.nodes() if other._processes.owns(n)]
        if live:
            raise TopologyRunning(
                f"a topology is already running in {self.run_dir} ({', '.join(live)}); "
                "stop it first with `python -m hacache.topology down`"
            )
        other.down()  # stale state from a crashed run

    def down(self) -> None:
        """Stop exactly the processes this topology started; safe to call repeatedly."""
        order = [*self._by_role("sentinel"), *self._by_role("replica"), *self._by_role("master")]
        still = self._processes.stop(order)
        if still:  # keep the state file so a later `down` can retry
            names = ", ".join(f"{n.name} (pid {n.pid})" for n in still)
            raise TopologyError(f"could not stop {names}")
        self._started = False
        state.remove(self.run_dir)

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
                "tls": self.tls,
                "tls_auth_clients": self.tls_auth_clients,
            },
            "nodes": [asdict(n) for n in self._nodes.values()],
        }

    def _save_state(self) -> None:
        if self._started:
            state.write_state(self.run_dir, self._state())

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> Topology:
        """Rebuild a running topology from its state file (raises FileNotFoundError if none)."""
        saved = state.read_state(Path(run_dir).resolve())
        topo = cls(run_dir, **saved["config"])
        topo._nodes = {d["name"]: Node(**d) for d in saved["nodes"]}
        topo._started = True
        return topo

    # ----------------------------------------------------------------- inspection

    def status(self) -> list[dict[str, Any]]:
        """Live view of every node: its process, whether it answers, and the role it holds now,
        by its own account (``role``) and by Sentinel's (``sentinel_role``, ``sentinel_flags``:
        the most recent view among the Sentinels that answer; None without Sentinels)."""
        seen: dict[int, tuple[str, frozenset[str]]] = {}
        for view in self._sentinel_views().values():
            seen.update(view.roles)
        rows = []
        for node in self._nodes.values():
            state = "running" if self._processes.is_running(node) else "stopped"
            if state == "running" and self._processes.is_paused(node):
                state = "paused"
            rows.append(probes.node_status(node, state, seen.get(node.port), self.password))
        return rows

    def _sentinel_views(self) -> dict[str, probes.SentinelView]:
        """Per shard, the most recent view among the running Sentinels that answer."""
        running = [n for n in self._by_role("sentinel") if self._processes.is_running(n)]
        if not running:
            return {}
        views = {shard: probes.sentinel_view(running, shard) for shard in self.shard_names}
        return {shard: view for shard, view in views.items() if view is not None}

    def masters(self) -> dict[str, Node]:
        """Current master per shard: Sentinel's view when there are Sentinels, else as launched.

        Falls back to the launched master for a shard when no Sentinel answers.
        """
        views = self._sentinel_views()
        return {
            shard: self._node_at(shard, views[shard].master)
            if shard in views
            else self._launched_master(shard)
            for shard in self.shard_names
        }

    def _node_at(self, shard: str, addr: tuple[str, int]) -> Node:
        host, port = addr
        for node in self._nodes.values():
            if not node.is_sentinel and node.port == port:
                return node
        return Node(name=f"{shard}@{host}:{port}", role="master", shard=shard, host=host, port=port)

    def master_urls(self) -> list[str]:
        """One URL per shard; ``name=`` is the shard's stable identity for key hashing."""
        return [
            config.redis_url(node, shard, self.password, self._tls)
            for shard, node in self.masters().items()
        ]

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self._by_role("sentinel")]

    def sentinel_urls(self) -> list[str]:
        """One ``sentinel://`` URL per shard: hacache finds each master through Sentinel."""
        addresses = self.sentinel_addresses()
        return [
            config.sentinel_url(addresses, shard, self.password, self._tls)
            for shard in self.shard_names
        ]

    def caches_setting(self, **options: Any) -> dict[str, Any]:
        """A ready-to-use Django ``CACHES`` dict: through Sentinel when there are sentinels."""
        urls = self.sentinel_urls() if self._by_role("sentinel") else self.master_urls()
        default: dict[str, Any] = {"BACKEND": "hacache.HACache", "LOCATION": urls}
        if options:
            default["OPTIONS"] = options
        return {"default": default}

    # ----------------------------------------------------------------- fault injection

    def _running_node(self, name: str) -> Node:
        node = self.node(name)
        if not self._processes.owns(node):
            raise TopologyError(f"{node.name} is not running")
        return node

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; for fatal signals also wait until the process is gone."""
        node = self._running_node(name)
        self._processes.send(node, sig)
        if sig not in process.FATAL_SIGNALS:
            return
        if sig != signal.SIGKILL:
            self._processes.send(node, signal.SIGCONT)  # a paused process cannot act on TERM
        if self._processes.wait_dead([node], process.STOP_TIMEOUT * 2):
            raise TopologyError(f"{name} (pid {node.pid}) did not exit after signal {sig}")
        self._processes.forget(node)
        self._save_state()

    def pause(self, name: str) -> None:
        """Freeze the process (SIGSTOP): it keeps its port but stops answering. Returns once the
        process is frozen."""
        self._signal_and_wait(self._running_node(name), signal.SIGSTOP, paused=True)

    def resume(self, name: str) -> None:
        """Let a paused process carry on (SIGCONT); harmless on one that is not paused."""
        self._signal_and_wait(self._running_node(name), signal.SIGCONT, paused=False)

    def _signal_and_wait(self, node: Node, sig: int, *, paused: bool) -> None:
        self._processes.send(node, sig)
        if not self._processes.wait_paused(node, paused):
            done = "frozen" if paused else "thawed"
            raise TopologyError(f"{node.name} (pid {node.pid}) was not {done} by signal {sig}")

    def stop(self, name: str) -> None:
        """Graceful shutdown (SIGTERM), waiting for the exit."""
        self.kill(name, signal.SIGTERM)

    def start(self, name: str, timeout: float = 10.0) -> None:
        """Restart a stopped node on its old port with its (possibly Sentinel-rewritten) config."""
        node = self.node(name)
        if self._processes.owns(node):
            raise TopologyError(f"{name} is already running (pid {node.pid})")
        self._processes.forget(node)
        self._spawn(node, fresh_log=False)
        try:
            if not self._wait_ping(node, time.monotonic() + timeout):
                code = self._processes.returncode(node)
                raise self._processes.fail(node, f"exited with code {code} on restart")
        except TopologyError:
            self._processes.stop([node], first=signal.SIGKILL)
            self._processes.forget(node)
            raise
        finally:
            self._save_state()
