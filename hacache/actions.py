"""The actions a failure-policy plan yields, and what the driver sends back for each.

A plan (``failover``, ``sizelimit``) is a generator: it yields an action, the driver carries
it out (blocking or asyncio) and sends the outcome back. Actions are data; they decide nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from hacache.endpoint import Command, Endpoint, Pending

if TYPE_CHECKING:
    from hacache.shard import Shard, View


class Start(NamedTuple):
    """Send a pipeline. Outcome: a ``Pending`` (its ``error`` set if it could not be sent)."""

    endpoint: Endpoint
    commands: list[Command]
    idempotent: bool  # False: check a reused connection before sending (it cannot be replayed)


class Finish(NamedTuple):
    """Read a sent pipeline's replies. Outcome: ``Replies``, or the ``RedisError`` it met."""

    pending: Pending


class Ready(NamedTuple):
    """Wait until one of the pendings has a reply to read. Outcome: its index, or None."""

    pendings: tuple[Pending, ...]
    timeout: float


class Discard(NamedTuple):
    """Give up on a sent pipeline: its connection is closed unread. Outcome: None."""

    pending: Pending


class CloseIdle(NamedTuple):
    """Close the endpoint's idle connections (a stale one was found). Outcome: None."""

    endpoint: Endpoint


class Discover(NamedTuple):
    """Ask Sentinel for the shard's servers now. Outcome: None, or the error that stopped it."""

    shard: Shard


class WaitFor(NamedTuple):
    """Wait until ``until(shard.view)`` holds or ``timeout`` passes. Outcome: None."""

    shard: Shard
    until: Callable[[View], bool]
    timeout: float


Plan = Generator[Any, Any, Any]
