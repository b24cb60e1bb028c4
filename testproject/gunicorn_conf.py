"""gunicorn settings for the demo: prometheus-client's multiprocess mode needs these hooks.

With ``PROMETHEUS_MULTIPROC_DIR`` set (scripts/demo.sh does), every worker writes its metrics to
files in that directory and ``/metrics/`` serves their sum; a worker that exits must be marked
dead, or its live gauges would be summed forever.
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
