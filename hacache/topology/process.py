"""The launcher's processes: ports, binaries, spawning, signalling and reaping.

Invariants kept here:

- A node is spawned in its own session (``start_new_session``), so it outlives the command that
  started it and a Ctrl-C in that terminal does not reach it.
- Nothing is signalled on the strength of a pid alone: ``looks_like_node`` checks that the pid's
  command line is still that node's Redis (a pid recorded in a state file may have been recycled).
- A zombie or exited process never counts as running; a node's ``pid`` is set when it is
  spawned and cleared (``Supervisor.forget``) once it is known to be gone.
- Stopping escalates: SIGTERM (with SIGCONT, so a paused process can act on it), then SIGKILL
  for whatever is still there after ``STOP_TIMEOUT``.

Works on Linux (``/proc``) and falls back to ``ps`` elsewhere (macOS).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hacache.topology.node import Node, RedisNotInstalled, TopologyError

Check = Callable[[Node], str | None]  # None when the node is ready, else the reason it is not

LOG_TAIL_LINES = 20
POLL_INTERVAL = 0.05
STOP_TIMEOUT = 5.0
# Signals after which a process is expected to exit (the launcher then waits for it).
FATAL_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT}
)
PAUSED_STATES = frozenset({"T", "t"})  # stopped by a signal, or by a tracer
_HAVE_PROC = Path("/proc/self").exists()


def free_port(host: str = "127.0.0.1") -> int:
    """Let the kernel pick an unused port; racy by nature, so callers retry on conflicts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def binaries() -> tuple[str, list[str]]:
    """Resolve the server binary and the Sentinel command prefix, failing before any launch."""
    server = shutil.which("redis-server")
    if server is None:
        raise RedisNotInstalled()
    sentinel = shutil.which("redis-sentinel")
    return server, ([sentinel] if sentinel else [server])


def command(node: Node) -> list[str]:
    """The command line that starts ``node`` from its config file."""
    server, sentinel = binaries()
    if not node.is_sentinel:
        return [server, node.conf]
    extra = ["--sentinel"] if sentinel == [server] else []
    return [*sentinel, node.conf, *extra]


def spawn(node: Node, *, fresh_log: bool) -> subprocess.Popen[bytes]:
    """Start the node in its own session, output appended to (or replacing) its log."""
    with open(node.log, "wb" if fresh_log else "ab") as log:
        return subprocess.Popen(
            command(node),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node.dir,
            start_new_session=True,
        )


def send_signal(pid: int, sig: int) -> None:
    """Signal ``pid``; a process that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def parse_signal(text: str) -> signal.Signals:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` -> ``signal.SIGKILL``; ValueError otherwise."""
    name = text.strip().upper()
    if name.isdigit():
        return signal.Signals(int(name))
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


def cmdline(pid: int) -> str | None:
    """Command line of ``pid`` (None if gone); used to avoid signalling recycled pids."""
    if not _HAVE_PROC:
        return _ps(pid, "command=") or None
    raw = _proc(pid, "cmdline")
    return None if raw is None else raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pid_state(pid: int) -> str | None:
    """The process's one-letter state (``R``, ``S``, ``T`` when paused, ``Z``...), None if gone."""
    if not _HAVE_PROC:
        return _ps(pid, "stat=")[:1] or None
    raw = _proc(pid, "stat")  # "pid (comm) state ...": comm may hold spaces and parentheses
    return None if raw is None else raw.decode(errors="replace").rsplit(")", 1)[-1].split()[0]


def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (orphans may never be reaped here)."""
    state = pid_state(pid)
    return state is not None and state not in ("Z", "X")


def _proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _ps(pid: int, field: str) -> str:
    result = subprocess.run(
        ["ps", "-p", str(pid), "-o", field], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def looks_like_node(cmdline: str, node: Node) -> bool:
    """Whether a command line belongs to ``node``: Redis retitles itself ``redis-... HOST:PORT``."""
    if "redis" not in cmdline:
        return False
    if node.conf and node.conf in cmdline:
        return True
    return re.search(rf":{node.port}(?!\d)", cmdline) is not None


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def port_conflict(path: str) -> bool:
    """Whether the node's log says it could not bind its port (someone took it meanwhile)."""
    try:
        return "Address already in use" in Path(path).read_text(errors="replace")
    except OSError:
        return False


# --------------------------------------------------------------------------- supervisor


class Supervisor:
    """The processes one topology started: spawns them, tells whether each is still running and
    still ours, signals them and waits for them to exit."""

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, node: Node, *, fresh_log: bool) -> None:
        proc = spawn(node, fresh_log=fresh_log)
        self._procs[node.name] = proc
        node.pid = proc.pid

    def returncode(self, node: Node) -> int | None:
        proc = self._procs.get(node.name)
        return None if proc is None else proc.poll()

    def _child(self, node: Node) -> subprocess.Popen[bytes] | None:
        """Our own Popen handle for the node's current pid (None if started by another process)."""
        proc = self._procs.get(node.name)
        return proc if proc is not None and proc.pid == node.pid else None

    def is_running(self, node: Node) -> bool:
        if node.pid is None:
            return False
        proc = self._child(node)
        return proc.poll() is None if proc is not None else pid_running(node.pid)

    def owns(self, node: Node) -> bool:
        """True only if node.pid is still the node's process, never a recycled pid."""
        if not self.is_running(node):
            return False
        assert node.pid is not None
        if self._child(node) is not None:
            return True
        line = cmdline(node.pid)
        return line is not None and looks_like_node(line, node)

    def is_paused(self, node: Node) -> bool:
        return (
            node.pid is not None and self.is_running(node) and pid_state(node.pid) in PAUSED_STATES
        )

    def fail(self, node: Node, problem: str) -> TopologyError:
        """An error naming the node, with the end of its log (which usually says why)."""
        return TopologyError(
            f"{node.name} ({node.host}:{node.port}) {problem}\n"
            f"--- last lines of {node.log} ---\n{log_tail(node.log)}"
        )

    def wait_until(self, node: Node, deadline: float, check: Check, what: str) -> bool:
        """Poll ``check`` until it passes (True) or the process exits (False); raise at the
        deadline."""
        while True:
            if not self.is_running(node):
                return False
            if check(node) is None:
                return True
            if time.monotonic() >= deadline:
                raise self.fail(node, f"{what} in time")
            time.sleep(POLL_INTERVAL)

    def wait_ready(self, nodes: Iterable[Node], deadline: float, check: Check) -> None:
        """Poll ``check`` (None: ready, else why not) on every node until all pass, or fail
        naming the first laggard; a node whose process exits meanwhile fails at once."""
        pending = list(nodes)
        while pending:
            reasons = {n.name: check(n) for n in pending}
            pending = [n for n in pending if reasons[n.name] is not None]
            for node in pending:
                if not self.is_running(node):
                    raise self.fail(node, "exited while waiting to become ready")
            if pending and time.monotonic() >= deadline:
                node = pending[0]
                raise self.fail(node, f"not ready in time: {reasons[node.name]}")
            if pending:
                time.sleep(POLL_INTERVAL)

    def wait_paused(self, node: Node, paused: bool, timeout: float = STOP_TIMEOUT) -> bool:
        """Wait until the kernel has frozen (or thawed) the process: signals land asynchronously.
        False if it did not happen in time, or the process is gone."""
        deadline = time.monotonic() + timeout
        while self.is_paused(node) != paused:
            if not self.is_running(node) or time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL / 10)
        return True

    def send(self, node: Node, sig: int) -> None:
        assert node.pid is not None
        send_signal(node.pid, sig)

    def wait_dead(self, nodes: Iterable[Node], timeout: float) -> list[Node]:
        """Wait for nodes to exit; return those still running at the deadline."""
        pending = list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            pending = [n for n in pending if self.is_running(n)]
            if not pending or time.monotonic() >= deadline:
                return pending
            time.sleep(POLL_INTERVAL)

    def forget(self, node: Node) -> None:
        node.pid = None
        self._procs.pop(node.name, None)

    def stop(
        self, nodes: Iterable[Node], timeout: float = STOP_TIMEOUT, first: int = signal.SIGTERM
    ) -> list[Node]:
        """Send ``first`` to each node that is ours (SIGKILL if it lingers); forget those gone.

        Returns the nodes that survived even SIGKILL (their pids are kept, to retry later).
        """
        nodes = list(nodes)
        targets = [n for n in nodes if n.pid is not None and self.owns(n)]
        for node in targets:
            self.send(node, first)
            self.send(node, signal.SIGCONT)  # a paused process only handles TERM once resumed
        stubborn = self.wait_dead(targets, timeout)
        for node in stubborn:
            if self.owns(node):
                self.send(node, signal.SIGKILL)
        still = self.wait_dead(stubborn, timeout)
        for node in nodes:
            if node not in still:
                self.forget(node)
        return still
