"""The workload's shared vocabulary: key names, values and the Zipf popularity of keys.

Kept free of locust (which monkey-patches the standard library with gevent) so the prefill in
``run.py`` writes exactly the keys and value sizes the locust users will read.
"""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Any

# Defaults of the locustfile's options; run.py passes them explicitly, so a run is repeatable.
# 95/5 reads/writes over Zipf(0.99) keys is YCSB's workload B, the usual "read-heavy" mix.
DEFAULTS: dict[str, Any] = {
    "key_space": 10_000,
    "zipf_s": 0.99,
    "write_ratio": 0.05,
    "value_bytes": 512,
    "fragments": 20,
    "seed": 1,
    "warmup": 5.0,
}


def item_key(rank: int) -> str:
    """URL key of the item of popularity rank ``rank`` (the view stores it as ``item:<key>``)."""
    return f"k{rank}"


def item_value(tag: str, size: int) -> str:
    """A value of exactly ``size`` characters (at least one) that still says who wrote it."""
    return (tag + ":").ljust(size, "x")[: max(size, 1)]


class ZipfKeys:
    """Draws ranks 0..n-1 with probability proportional to 1 / (rank + 1) ** s.

    The cumulative table is built once per process and a draw is one bisect, so the load
    generator spends its CPU on requests rather than on sampling.
    """

    def __init__(self, n: int, s: float) -> None:
        if n < 1:
            raise ValueError("the key space must hold at least one key")
        self.cumulative = list(itertools.accumulate(1.0 / rank**s for rank in range(1, n + 1)))
        self.total = self.cumulative[-1]

    def draw(self, rng: random.Random) -> int:
        rank = bisect.bisect(self.cumulative, rng.random() * self.total)
        return min(rank, len(self.cumulative) - 1)

    def share_of_top(self, k: int) -> float:
        """Probability mass of the ``k`` most popular keys (for the report)."""
        return self.cumulative[min(k, len(self.cumulative)) - 1] / self.total
