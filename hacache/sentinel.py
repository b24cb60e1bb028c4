"""Sentinel discovery: which server is a shard's master, and which replicas may serve reads.

Each Sentinel shard has one monitor thread per sentinel, each subscribed to that sentinel's
events, so a ``+switch-master`` moves the shard to its new master within milliseconds of the
promotion (whichever sentinel says it first), not after the next error or poll. They also
re-read the topology every second and at once when a request reports a failure. Requests never
talk to Sentinel themselves, except once to find the master on first use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from hacache.shard import Shard

logger = logging.getLogger("hacache")

EVENTS = (
    "+switch-master", "+sdown", "-sdown", "+odown", "-odown", "+slave", "+convert-to-slave",
    "+slave-reconf-done", "+failover-end",
)  # fmt: skip
POLL = 0.1  # seconds between checks for a refresh request while no event arrives
REFRESH_EVERY = 1.0
HEARTBEAT = 1.0
# A replica whose link to its master has been down longer than this may be far behind.
REPLICA_LINK_GRACE_MS = 10_000

_monitors: weakref.WeakSet[SentinelMonitor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for monitor in list(_monitors):
        monitor.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def pairs(reply: Any) -> dict[str, str]:
    """Sentinel's flat ``[key, value, ...]`` replies (or a RESP3 map) as a dict of str."""
    if isinstance(reply, Mapping):
        reply = [item for kv in reply.items() for item in kv]
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


# Flags after which Sentinel no longer counts a server as up. "disconnected" is not one of
# them: Sentinel's own promotion (SLAVEOF NO ONE, then CLIENT KILL) sets it for up to a second
# on the very replica it is promoting.
DOWN_FLAGS = frozenset({"s_down", "o_down"})


def flags(info: Mapping[str, str]) -> frozenset[str]:
    """The ``flags`` field of a SENTINEL MASTER/REPLICAS entry, as a set."""
    return frozenset(info.get("flags", "").split(","))


def usable_replica(info: Mapping[str, str]) -> bool:
    """Up in Sentinel's eyes, connected, and in step with its master (or only briefly not)."""
    if flags(info) & {"s_down", "o_down", "disconnected"}:
        return False
    if info.get("master-link-status") == "ok":
        return True
    return int(info.get("master-link-down-time", "0") or 0) < REPLICA_LINK_GRACE_MS


class SentinelMonitor:
    def __init__(
        self,
        shard: Shard,
        sentinels: tuple[tuple[str, int], ...],
        service: str,
        sentinel_kwargs: Mapping[str, Any],
    ) -> None:
        self.shard = shard
        self.sentinels = list(sentinels)
        self.service = service
        self._service_bytes = service.encode()
        self._kwargs = dict(sentinel_kwargs)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        _monitors.add(self)

    # -- asking Sentinel -------------------------------------------------------------------

    def _ask(self, host: str, port: int) -> tuple[tuple[str, int] | None, list[Any]]:
        connection = Connection(host=host, port=port, **self._kwargs)
        try:
            connection.send_packed_command(
                connection.pack_commands(
                    [
                        ("SENTINEL", "get-master-addr-by-name", self.service),
                        ("SENTINEL", "replicas", self.service),
                    ]
                )
            )
            master = connection.read_response()
            replicas = connection.read_response()
        finally:
            connection.disconnect()
        address = None if master is None else (master[0].decode(), int(master[1]))
        return address, replicas

    def discover(self) -> bool:
        """Ask the sentinels in turn, the last one that answered first; apply the answer."""
        for i, (host, port) in enumerate(list(self.sentinels)):
            try:
                master, replicas = self._ask(host, port)
            except RedisError as exc:
                logger.debug("hacache: sentinel %s:%s did not answer: %s", host, port, exc)
                continue
            if master is None:
                continue  # this sentinel does not know the service (yet)
            if i:
                self.sentinels.insert(0, self.sentinels.pop(i))
            usable = []
            for reply in replicas:
                info = pairs(reply)
                if usable_replica(info):
                    usable.append((info["ip"], int(info["port"])))
            self.shard.set_servers(master, usable)
            return True
        return False

    # -- the watching thread ---------------------------------------------------------------

    def ensure_running(self) -> None:
        """One thread per sentinel: the sentinel that leads a failover announces it first,
        about a second before the others, and any of them may be the one that is down."""
        if not self._threads:
            with self._lock:
                if not self._threads:
                    stopping = self._stopping
                    self._threads = [
                        threading.Thread(
                            target=self._watch_forever,
                            args=(host, port, stopping),
                            name=f"hacache-sentinel-{self.shard.name}-{host}:{port}",
                            daemon=True,
                        )
                        for host, port in self.sentinels
                    ]
                    for thread in self._threads:
                        thread.start()

    def refresh(self) -> None:
        """Ask the threads to re-read the topology now (a request just failed)."""
        self._wake.set()

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
            self._stopping.set()
            self._stopping = threading.Event()  # may be started again (a closed router reused)
        for thread in threads:
            thread.join(POLL * 5)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._threads = []
        self._wake = threading.Event()

    def _watch_forever(self, host: str, port: int, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self._watch(host, port, stopping)
            except (RedisError, OSError, ValueError) as exc:
                logger.debug("hacache: sentinel %s:%s watch ended: %s", host, port, exc)
            stopping.wait(POLL)

    def _watch(self, host: str, port: int, stopping: threading.Event) -> None:
        connection = Connection(host=host, port=port, **{**self._kwargs, "socket_timeout": POLL})
        try:
            connection.send_command("SUBSCRIBE", *EVENTS)
            for _ in EVENTS:
                connection.read_response()
            if not self.discover():
                raise RedisConnectionError(f"no sentinel knows {self.service!r}")
            refreshed = last_heard = time.monotonic()
            pinged_at: float | None = None
            while not stopping.is_set():
                now = time.monotonic()
                if self._wake.is_set() or now - refreshed >= REFRESH_EVERY:
                    self._wake.clear()
                    self.discover()
                    refreshed = now
                try:
                    message = connection.read_response(disconnect_on_error=False)
                except RedisTimeoutError:
                    if pinged_at is not None and now - pinged_at >= HEARTBEAT:
                        raise RedisConnectionError("sentinel stopped answering") from None
                    if pinged_at is None and now - last_heard >= HEARTBEAT:
                        connection.send_command("PING")
                        pinged_at = now
                    continue
                last_heard, pinged_at = time.monotonic(), None
                if message[0] == b"message":
                    self._on_event(message[1], message[2])
        finally:
            connection.disconnect()

    def _on_event(self, channel: bytes, data: bytes) -> None:
        words = data.split()
        if self._service_bytes not in words:
            return
        if channel == b"+switch-master" and words[0] == self._service_bytes:
            # "<name> <old-ip> <old-port> <new-ip> <new-port>": act before asking anything.
            self.shard.set_servers((words[3].decode(), int(words[4])), None)
            logger.warning(
                "hacache: shard %r: Sentinel promoted %s:%s (was %s:%s)",
                self.shard.name,
                words[3].decode(),
                words[4].decode(),
                words[1].decode(),
                words[2].decode(),
            )
        self.discover()
