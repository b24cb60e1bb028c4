"""Health of a hacache alias for load balancers and probes: every shard's master PINGed.

``check(alias)`` returns a ``Health`` (ok only if every shard's master answers); ``view`` serves
it as JSON, 200 or 503; ``HACacheHealthCheck`` is the same check for django-health-check (v4),
imported only if that package is installed. Nothing here writes a key, and every question is
bounded by the shard's socket timeouts (shards are asked at once); no result holds a password.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from hacache import inspection


@dataclass
class ShardHealth:
    name: str
    ok: bool
    master: str | None
    latency_ms: float | None
    replicas_up: list[str] = field(default_factory=list)
    replicas_down: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Health:
    alias: str
    ok: bool
    shards: list[ShardHealth]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shard_health(status: inspection.ShardStatus) -> ShardHealth:
    master = status.master
    replicas = [s for s in status.servers if s.role == "replica"]
    error = None
    if master is None or not master.reachable:
        error = (master.error if master else None) or "no master known"
    return ShardHealth(
        name=status.name,
        ok=status.ok,
        master=None if master is None else master.address,
        latency_ms=None if master is None else master.latency_ms,
        replicas_up=[s.address for s in replicas if s.reachable],
        replicas_down=[s.address for s in replicas if not s.reachable],
        error=error,
    )


def check(alias: str = "default") -> Health:
    shards = [_shard_health(s) for s in inspection.status(alias)]
    return Health(alias=alias, ok=all(s.ok for s in shards), shards=shards)


@never_cache
def view(request: HttpRequest, alias: str = "default") -> JsonResponse:
    """200 with every shard's master answering, else 503; the body says which shard failed."""
    health = check(alias)
    return JsonResponse(health.as_dict(), status=200 if health.ok else 503)


try:
    from health_check.base import HealthCheck
    from health_check.exceptions import ServiceUnavailable
except ImportError:  # the optional ``health`` extra is not installed
    pass
else:

    @dataclasses.dataclass
    class HACacheHealthCheck(HealthCheck):
        """django-health-check v4: unavailable unless every shard's master answers a PING.

        ``HealthCheckView.as_view(checks=[("hacache.health.HACacheHealthCheck",
        {"alias": "default"})])``."""

        alias: str = "default"

        def run(self) -> None:
            health = check(self.alias)
            failed = [s for s in health.shards if not s.ok]
            if failed:
                names = ", ".join(f"{s.name} ({s.error})" for s in failed)
                raise ServiceUnavailable(f"shard master unreachable: {names}")
