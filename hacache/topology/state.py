"""The files a running topology keeps in its run directory.

- ``topology.json``: the topology's settings and every node's port and pid, so that a later
  command (``Topology.load``: ``status``, ``kill``, ``down``...) finds the processes to act on.
- ``caches.json``: the Django ``CACHES`` setting for it, which ``testproject`` reads.

Invariants kept here: both files are written atomically (a reader never sees half a file) and
readable by their owner only (both may hold the Redis password); both go when the topology is
stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "topology.json"
CACHES_FILE = "caches.json"


def _write_private(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a leftover .tmp file
    os.replace(tmp, path)


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    _write_private(run_dir / STATE_FILE, state)


def read_state(run_dir: Path) -> dict[str, Any]:
    """The saved state; FileNotFoundError when no topology was started in ``run_dir``."""
    path = run_dir / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no topology state file at {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_caches(run_dir: Path, caches: dict[str, Any]) -> Path:
    path = run_dir / CACHES_FILE
    _write_private(path, caches)
    return path


def remove(run_dir: Path) -> None:
    for name in (STATE_FILE, CACHES_FILE):
        (run_dir / name).unlink(missing_ok=True)
