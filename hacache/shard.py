"""One shard of the ring: a single Redis server, or a Sentinel service (a master and replicas).

Where a shard's requests go is one immutable ``View`` (master, usable replicas, Sentinel's
config-epoch), replaced in a single assignment, so a request reads one consistent snapshot
however the monitor thread changes it meanwhile. A view only ever moves forward: one from a
sentinel that has not yet heard of a promotion (a lower config-epoch) is refused, and so is a
master that a sentinel reports down.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from redis.connection import SSLConnection
from redis.exceptions import RedisError

from hacache.breaker import Breaker
from hacache.endpoint import Endpoint
from hacache.locations import ShardSpec
from hacache.options import Options
from hacache.sentinel import SentinelMonitor

Address = tuple[str, int]


@dataclass(frozen=True)
class View:
    master: Endpoint | None
    replicas: tuple[Endpoint, ...] = ()
    epoch: int = -1  # Sentinel's config-epoch for this master; -1: not known (accept any)
    master_down: bool = False  # a sentinel reports the master down: hold writes back
    generation: int = 0  # moves on whenever the master does


@dataclass
class ShardStats:
    """Running totals of rare events, for the metrics (plain integers, nothing else reads)."""

    replica_reads: int = 0
    hedged_reads: int = 0
    failovers: int = 0
    writes_waited: int = 0
    writes_dropped: int = 0


_shards: weakref.WeakSet[Shard] = weakref.WeakSet()


def _tls_hint(text: str, secure: bool, client_cert: bool) -> str:
    """TLS on one side only, or a client certificate missing, said plainly (redis-py's errors
    show only the symptom: a reset, a handshake timeout, an EOF)."""
    if not secure:
        reset = "reset by peer" in text  # what a TLS-only server does to a plain connection
        return "; a TLS-only server resets plain connections: rediss://?" if reset else ""
    if not client_cert and ("CERTIFICATE_REQUIRED" in text or "EOF occurred" in text):
        return "; no client certificate given (ssl_certfile, ssl_keyfile): does the server ask?"
    if "connecting" in text and "CERTIFICATE_VERIFY_FAILED" not in text:
        return "; while connecting with TLS (rediss://): is the server TLS-enabled?"
    return ""


def _after_fork_in_child() -> None:
    for shard in list(_shards):
        shard._changed = threading.Condition()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Shard:
    def __init__(self, spec: ShardSpec, options: Options) -> None:
        self.spec = spec
        self.name = spec.name
        self.cache = "?"  # the CACHES alias(es) served, for logs: set by the router
        self.options = options
        self._endpoints: dict[Address, Endpoint] = {}
        self._changed = threading.Condition()
        self.master_listeners: list[Callable[[Shard], None]] = []
        self.monitor: SentinelMonitor | None = None
        self.hedge_delay = options.hedge_delay
        self.stats = ShardStats()
        if spec.sentinels:
            self.view = View(None)  # asked of Sentinel on first use
            self.monitor = SentinelMonitor(self, spec.sentinels, spec.service, spec.sentinel_kwargs)
        else:
            self.view = View(self._new_endpoint(spec.address, spec.connection_kwargs))
        _shards.add(self)

    def __repr__(self) -> str:
        return f"<Shard {self.name} at {self.address}>"

    @property
    def master(self) -> Endpoint | None:
        return self.view.master

    @property
    def replicas(self) -> tuple[Endpoint, ...]:
        return self.view.replicas

    @property
    def generation(self) -> int:
        return self.view.generation

    @property
    def address(self) -> str:
        master = self.view.master
        return self.spec.address if master is None else master.address

    def _new_endpoint(self, address: str, kwargs: Any) -> Endpoint:
        options = self.options
        return Endpoint(
            address,
            self.spec.connection_class,
            self.spec.async_connection_class,
            kwargs,
            max_connections=options.max_connections,
            pool_timeout=options.pool_timeout,
            breaker=Breaker(options.breaker_threshold, options.breaker_cooldown),
        )

    def _endpoint(self, address: Address) -> Endpoint:
        """Under ``_changed``: one endpoint per address, for the shard's whole life."""
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            kwargs = {**self.spec.connection_kwargs, "host": address[0], "port": address[1]}
            endpoint = self._new_endpoint(f"{address[0]}:{address[1]}", kwargs)
            self._endpoints[address] = endpoint
        return endpoint

    # -- the view, as Sentinel reports it -----------------------------------------------------

    def apply(
        self,
        master: Address,
        replicas: Iterable[Address] | None,
        epoch: int | None,
        master_down: bool = False,
    ) -> bool:
        """Take a sentinel's report; False if it is older than the view in force.

        ``replicas`` None: unchanged (only the master is known). ``epoch`` None: newer than
        the view in force (a ``+switch-master`` event, which carries none)."""
        with self._changed:
            old = self.view
            endpoint = self._endpoint(master)
            moved = endpoint is not old.master
            known = epoch is not None and old.epoch >= 0
            if moved and old.master is not None:
                if master_down:
                    return False  # never move to a master reported down
                if known and epoch <= old.epoch:  # type: ignore[operator]
                    return False  # a sentinel that has not heard of the promotion yet
            elif known and epoch < old.epoch:  # type: ignore[operator]
                return False  # an older report of the same master: its replicas may be too
            if epoch is None:
                epoch = old.epoch + 1 if moved and old.epoch >= 0 else old.epoch
            if replicas is None:
                chosen = tuple(r for r in old.replicas if r is not endpoint)
            else:
                chosen = tuple(self._endpoint(r) for r in replicas if r != master)
            new = View(
                endpoint,
                chosen,
                epoch,
                master_down,
                old.generation + (moved and old.master is not None),
            )
            if new == old:
                return True
            if moved:
                endpoint.breaker.reset()  # Sentinel vouches for it: forget its old failures
            self.view = new
            self._changed.notify_all()
        if moved and old.master is not None:
            self.stats.failovers += 1
            for listener in self.master_listeners:
                listener(self)
        return True

    def master_reported_down(self, master: Address, down: bool) -> None:
        """A sentinel's ``+sdown``/``-sdown`` of ``master``: hold writes back while it is down."""
        with self._changed:
            view = self.view
            if view.master is self._endpoints.get(master) and view.master_down != down:
                self.view = replace(view, master_down=down)
                self._changed.notify_all()

    def demoted(self, endpoint: Endpoint) -> None:
        """``endpoint`` answered READONLY: whatever Sentinel says next is newer than our view."""
        with self._changed:
            if self.view.master is endpoint:
                self.view = replace(self.view, epoch=-1)

    def discover(self) -> None:
        """Ask Sentinel now (blocking); raises if no sentinel knows the master."""
        assert self.monitor is not None
        self.monitor.discover()

    def wait_for(self, until: Callable[[View], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: until(self.view), timeout)

    def error(self, exc: RedisError, endpoint: Endpoint | None = None) -> RedisError:
        """The same exception class, naming the shard: logs must show which server failed."""
        where = endpoint.address if endpoint is not None else self.address
        text = str(exc)
        secure = issubclass(self.spec.connection_class, SSLConnection)
        tls = _tls_hint(text, secure, bool(self.spec.connection_kwargs.get("ssl_certfile")))
        return type(exc)(f"shard {self.name!r} ({where}): {text}{tls}")

    def endpoints(self) -> list[Endpoint]:
        """Every server this shard has used: its master, replicas, past masters."""
        with self._changed:
            return list({*self._endpoints.values(), self.view.master} - {None})  # type: ignore[arg-type]

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        with self._changed:
            endpoints = {*self._endpoints.values(), self.view.master} - {None}
        for endpoint in endpoints:
            endpoint.close()  # type: ignore[union-attr]
