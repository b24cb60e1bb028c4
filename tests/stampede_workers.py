"""Code that runs in other processes (spawned, so nothing is inherited) for the stampede tests."""

from __future__ import annotations

import threading
import time
from typing import Any


def hammer(
    caches: dict,
    key: str,
    threads: int,
    compute: float,
    timeout: int,
    rounds: list[float],
    ready: Any,
    results: Any,
) -> None:
    """Once every process is ``ready`` (a barrier), ``threads`` threads call
    ``get_or_set(key)`` together at each of the times ``rounds`` (seconds from then); the
    computation sleeps ``compute`` seconds. Puts on ``results`` how often this process
    computed, the values its callers got and the longest call."""
    import django
    from django.conf import settings

    settings.configure(CACHES=caches, USE_TZ=True)
    django.setup()
    from django.core.cache import cache

    computed: list[str] = []
    seen: list[Any] = []
    longest = [0.0]
    lock = threading.Lock()

    def compute_it() -> str:
        time.sleep(compute)
        value = f"{threading.get_native_id()}@{time.time()}"
        with lock:
            computed.append(value)
        return value

    def caller() -> None:
        for start in rounds:
            time.sleep(max(0.0, start - time.time()))
            began = time.monotonic()
            value = cache.get_or_set(key, compute_it, timeout)
            took = time.monotonic() - began
            with lock:
                seen.append(value)
                longest[0] = max(longest[0], took)

    cache.get("warm-up")  # the first call builds the router and connects: not measured
    ready.wait(60)
    began = time.time() + 0.1
    rounds = [began + offset for offset in rounds]
    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put({"computed": computed, "seen": seen, "longest": longest[0]})
