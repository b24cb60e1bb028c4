"""A per-endpoint circuit breaker: a server that keeps failing costs callers one fast failure.

Closed: every call goes through. After ``threshold`` consecutive failures it opens: calls fail
at once, without a connect or a timeout. Every ``cooldown`` seconds one call is let through as a
trial; its success closes the breaker. Races between threads only shift a count by one, which
a breaker can afford, so there is no lock on the hot path.
"""

from __future__ import annotations

from time import monotonic


class Breaker:
    __slots__ = ("cooldown", "failures", "opened_at", "threshold")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        opened_at = self.opened_at
        if opened_at is None:
            return True
        now = monotonic()
        if now - opened_at >= self.cooldown:
            self.opened_at = now  # one trial per cooldown
            return True
        return False

    def success(self) -> None:
        # Both fields: a failure racing a success can leave failures at 0 with opened_at set.
        if self.failures or self.opened_at is not None:
            self.failures = 0
            self.opened_at = None

    def reset(self) -> None:
        """Forget past failures (Sentinel vouches for the server)."""
        self.failures = 0
        self.opened_at = None

    def failure(self, certain: bool = False) -> None:
        """``certain``: the failure leaves no doubt (nothing listens): open at once."""
        self.failures = self.threshold if certain else self.failures + 1
        if self.failures >= self.threshold:
            self.opened_at = monotonic()
