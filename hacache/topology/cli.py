"""The command line: ``python -m hacache.topology COMMAND [--dir DIR] ...``.

::

    up [--shards N] [--replicas R] [--sentinels S] [--down-after-ms MS] [--password PW]
       [--tls [--tls-auth-clients yes|optional|no]]
       [--options JSON] [--json]          start a topology; print its nodes and CACHES setting
    status [--json]                       every node: process, answers?, role (own and Sentinel's)
    down                                  stop exactly what ``up`` started
    kill NODE [--signal SIG]              send SIG (default KILL); waits for a fatal one to land
    pause NODE / resume NODE              SIGSTOP / SIGCONT: the node hangs but keeps its port
    start NODE                            restart a stopped or killed node on its old port

``DIR`` defaults to ``.hacache/topology`` under the current directory; ``up`` defaults to 3 shards,
1 replica per shard and 3 Sentinels. ``up`` prints a table of nodes, then a line ``CACHES = ``
followed by the Django ``CACHES`` setting as JSON. With ``--json`` it prints only that JSON, on a
single line, so a shell script can capture it::

    CACHES_JSON="$(python -m hacache.topology up --json)"

Either way the same JSON is written to ``DIR/caches.json``.

Invariants kept here: the processes outlive the command (each command reads ``DIR/topology.json``
afresh); results go to stdout and errors to stderr, as ``error: ...``; exit status 0 on success,
1 when there is no topology in ``DIR`` (``status``: also when a node is dead), 2 for a usage error,
an unknown node, a node not running or a node that failed (and when Redis is not installed),
3 when ``up`` finds a topology already running in ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hacache.topology import process, state
from hacache.topology.launcher import Topology
from hacache.topology.node import RedisNotInstalled, TopologyError, TopologyRunning

DEFAULT_DIR = Path(".hacache") / "topology"
NODE_COLUMNS = ["name", "role", "shard", "host", "port", "pid"]
STATUS_COLUMNS = [
    "name", "role", "sentinel_role", "sentinel_flags", "shard", "port", "pid", "process", "alive",
    "master_link_status",
]  # fmt: skip
NO_TOPOLOGY = 1
FAILED = 2
ALREADY_RUNNING = 3


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _signal_arg(text: str) -> signal.Signals:
    try:
        return process.parse_signal(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown signal {text!r} (try KILL, TERM, INT, QUIT, HUP, STOP, CONT or a number)"
        ) from None


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
    up.add_argument(
        "--tls", action="store_true",
        help="TLS-only nodes, with a CA and certificates made in DIR/tls; rediss:// URLs",
    )  # fmt: skip
    up.add_argument(
        "--tls-auth-clients", choices=["yes", "optional", "no"], default="yes",
        help="whether nodes require a client certificate (default: yes)",
    )  # fmt: skip
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
    status = sub.add_parser("status", parents=[common], help="show nodes; exit 1 if any is dead")
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    kill = sub.add_parser("kill", parents=[common], help="send a signal to a node (default KILL)")
    kill.add_argument("node", help="node name, e.g. shard0-master (see `status`)")
    kill.add_argument(
        "--signal", type=_signal_arg, default=signal.SIGKILL, metavar="SIG",
        help="KILL (default), TERM, INT, QUIT, HUP, ... or a number",
    )  # fmt: skip
    for name, text in (
        ("pause", "freeze a node (SIGSTOP): it keeps its port and answers nothing"),
        ("resume", "let a paused node carry on (SIGCONT)"),
        ("start", "restart a stopped or killed node on its old port"),
    ):
        sub.add_parser(name, parents=[common], help=text).add_argument("node", help="node name")
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
        tls=args.tls,
        tls_auth_clients=args.tls_auth_clients,
    )
    topo.up(timeout=args.timeout)
    caches = topo.caches_setting(**args.options)
    state.write_caches(topo.run_dir, caches)
    if args.json:
        print(json.dumps(caches))
        return 0
    rows = [asdict(n) for n in topo.nodes()]
    print(format_table(rows, NODE_COLUMNS))
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


def _cmd_status(args: argparse.Namespace, topo: Topology) -> int:
    rows = topo.status()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, STATUS_COLUMNS))
    dead = [r["name"] for r in rows if not r["alive"]]
    if dead:
        print(f"dead: {', '.join(dead)}", file=sys.stderr)
        return 1
    return 0


def _cmd_kill(args: argparse.Namespace, topo: Topology) -> int:
    node = topo.node(args.node)
    pid, sig = node.pid, args.signal
    was_master = topo.sentinels > 0 and node in topo.masters().values()
    topo.kill(node.name, sig)
    if sig not in process.FATAL_SIGNALS:
        print(f"sent {sig.name} to {node.name} (pid {pid})")
        return 0
    print(f"{node.name} (pid {pid}) ended by {sig.name}; `start {node.name}` brings it back")
    if was_master:
        print(
            f"it was {node.shard}'s master: Sentinel marks it down after {topo.down_after_ms} ms, "
            "then promotes a replica (watch `status`)"
        )
    return 0


NODE_ACTIONS: dict[str, tuple[Callable[[Topology, str], None], str]] = {
    "pause": (
        Topology.pause,
        "paused {name} (pid {pid}): it answers nothing until `resume {name}`",
    ),
    "resume": (Topology.resume, "resumed {name} (pid {pid})"),
    "start": (Topology.start, "started {name} on {host}:{port} (pid {pid})"),
}


def _cmd_node_action(args: argparse.Namespace, topo: Topology) -> int:
    """pause, resume or start the node, then say what it is now."""
    action, done = NODE_ACTIONS[args.command]
    action(topo, args.node)
    print(done.format(**asdict(topo.node(args.node))))
    return 0


def _on_loaded(command: Callable[[argparse.Namespace, Topology], int]) -> Callable[..., int]:
    """Run ``command`` on the topology saved in ``--dir``, or say there is none (exit 1)."""

    def run(args: argparse.Namespace) -> int:
        try:
            topo = Topology.load(args.dir)
        except FileNotFoundError as exc:
            print(f"error: {exc} (start one with `python -m hacache.topology up`)", file=sys.stderr)
            return NO_TOPOLOGY
        return command(args, topo)

    return run


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _on_loaded(_cmd_status),
    "kill": _on_loaded(_cmd_kill),
    **dict.fromkeys(NODE_ACTIONS, _on_loaded(_cmd_node_action)),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m hacache.topology``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except TopologyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ALREADY_RUNNING
    except (RedisNotInstalled, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED
