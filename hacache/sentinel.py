"""Sentinel discovery: which server is a shard's master, and which replicas may serve reads.

Each Sentinel shard has one monitor thread per process. It keeps one subscription to every
sentinel's events (a ``+switch-master`` moves the shard within milliseconds of the promotion,
whichever sentinel says it first: the failover leader announces about a second before the
others) and one kept command connection per sentinel, on which it re-reads the topology every
second and at once when a request reports a failure. Requests never talk to Sentinel
themselves, except to find the master on first use and after a ``READONLY`` reply.

What the monitor keeps: a report is applied only if it is not older than the view in force
(Sentinel's config-epoch decides, see ``shard.View``); while any sentinel reports the master
down (``+sdown``), the view says so and writes are held back from it; a replica leaves the read
set only when a sentinel reports it down, never for being ``disconnected``.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

if TYPE_CHECKING:
    from hacache.shard import Shard

logger = logging.getLogger("hacache.sentinel")

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


def usable_replica(info: Mapping[str, str], master_down: bool = False) -> bool:
    """Not down in Sentinel's eyes, a replica by its own account, and in step with its master.

    A replica flagged only ``disconnected`` stays: it may be the one being promoted. So does
    one that already reports itself a master while its master is down (it is being promoted:
    only the failover leader flags it ``promoted``). While the master is up, a node that
    Sentinel lists as a replica but that reports itself a master (an old master that has come
    back, not yet converted) holds old data: it is left out."""
    if flags(info) & DOWN_FLAGS:
        return False
    if info.get("role-reported", "slave") != "slave" and not (
        master_down or "promoted" in flags(info)
    ):
        return False
    if info.get("master-link-status") == "ok":
        return True
    return int(info.get("master-link-down-time", "0") or 0) < REPLICA_LINK_GRACE_MS


Address = tuple[str, int]


def _master_of(info: Mapping[str, str]) -> Address:
    return info["ip"], int(info["port"])


class SentinelMonitor:
    def __init__(
        self,
        shard: Shard,
        sentinels: tuple[Address, ...],
        service: str,
        sentinel_kwargs: Mapping[str, Any],
    ) -> None:
        self.shard = shard
        self.sentinels = list(sentinels)  # the last one that answered first
        self.service = service
        self._service_bytes = service.encode()
        self._kwargs = dict(sentinel_kwargs)
        # "ssl" as redis.Redis takes it (hacache.inspection passes these to redis.Redis).
        self._class = SSLConnection if self._kwargs.pop("ssl", False) else Connection
        self._commands: dict[Address, Connection] = {}  # kept, used under _asking
        self._asking = threading.Lock()
        self._down: dict[Address, Address] = {}  # sentinel -> the master it reports down
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        _monitors.add(self)

    # -- asking Sentinel -------------------------------------------------------------------

    def _ask(self, sentinel: Address) -> tuple[dict[str, str], list[Any]]:
        connection = self._commands.get(sentinel)
        if connection is None:
            connection = self._class(host=sentinel[0], port=sentinel[1], **self._kwargs)
            self._commands[sentinel] = connection
        try:
            connection.send_packed_command(
                connection.pack_commands(
                    [("SENTINEL", "MASTER", self.service), ("SENTINEL", "REPLICAS", self.service)]
                )
            )
            replies = []
            for _ in range(2):
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:  # e.g. this sentinel does not know the service
                    replies.append(exc)
        except BaseException:
            self._commands.pop(sentinel, None)
            connection.disconnect()
            raise
        master, replicas = replies
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return pairs(master), replicas

    def discover(self, everyone: bool = False) -> None:
        """Ask the sentinels (all of them, or until one answers) and apply the newest report.

        Raises ``ConnectionError`` when no sentinel knows the service."""
        with self._asking:
            answers = []
            last_error = ""
            for sentinel in list(self.sentinels):
                try:
                    info, replicas = self._ask(sentinel)
                except (RedisError, OSError) as exc:
                    logger.debug("hacache: sentinel %s:%s did not answer: %s", *sentinel, exc)
                    last_error = f" (last error: {exc})"
                    continue
                self._note(sentinel, _master_of(info), bool(flags(info) & DOWN_FLAGS))
                answers.append((int(info.get("config-epoch", "0") or 0), sentinel, info, replicas))
                if not everyone:
                    break
            if not answers:
                raise RedisConnectionError(
                    f"no sentinel of {self.sentinels} knows the master of {self.service!r}"
                    + last_error
                )
            epoch, sentinel, info, replicas = max(answers, key=lambda a: a[0])  # ties: first
            if sentinel != self.sentinels[0]:
                self.sentinels.remove(sentinel)
                self.sentinels.insert(0, sentinel)
            master = _master_of(info)
            down = bool(flags(info) & DOWN_FLAGS)
            usable = [
                (r["ip"], int(r["port"])) for r in map(pairs, replicas) if usable_replica(r, down)
            ]
            self.shard.apply(master, usable, epoch, self._reported_down(master))

    def _note(self, sentinel: Address, master: Address, down: bool) -> None:
        if down:
            self._down[sentinel] = master
        elif self._down.get(sentinel) == master:
            del self._down[sentinel]

    def _reported_down(self, master: Address) -> bool:
        return master in self._down.values()

    # -- the watching thread ---------------------------------------------------------------

    def ensure_running(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch,
                        args=(self._stopping,),
                        name=f"hacache-sentinel-{self.shard.name}",
                        daemon=True,
                    )
                    self._thread.start()

    def refresh(self) -> None:
        """Ask the thread to re-read the topology now (a request just failed)."""
        self._wake.set()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
            self._stopping = threading.Event()  # may be started again (a closed router reused)
        if thread is not None:
            thread.join(POLL * 5)
        with self._asking:
            commands, self._commands = self._commands, {}
        for connection in commands.values():
            connection.disconnect()

    def after_fork(self) -> None:
        """Threads do not survive fork(); the parent's connections are left to the parent."""
        self._lock = threading.Lock()
        self._asking = threading.Lock()
        self._thread = None
        self._commands = {}
        self._wake = threading.Event()

    def _subscribe(self, sentinel: Address) -> Connection:
        connection = self._class(host=sentinel[0], port=sentinel[1], **self._kwargs)
        connection.send_command("SUBSCRIBE", *EVENTS)
        for _ in EVENTS:
            connection.read_response()
        return connection

    def _watch(self, stopping: threading.Event) -> None:
        subscribed: dict[Address, Connection] = {}
        retry_at: dict[Address, float] = {}
        heard: dict[Address, float] = {}
        pinged: dict[Address, float] = {}
        refreshed = 0.0

        def drop(sentinel: Address, why: BaseException | str) -> None:
            logger.debug("hacache: sentinel %s:%s watch ended: %s", *sentinel, why)
            subscribed.pop(sentinel).disconnect()
            pinged.pop(sentinel, None)
            retry_at[sentinel] = time.monotonic() + POLL * 5

        try:
            while not stopping.is_set():
                now = time.monotonic()
                for sentinel in self.sentinels:
                    if sentinel not in subscribed and now >= retry_at.get(sentinel, 0.0):
                        try:
                            subscribed[sentinel] = self._subscribe(sentinel)
                            heard[sentinel] = now
                        except (RedisError, OSError) as exc:
                            logger.debug("hacache: sentinel %s:%s: %s", *sentinel, exc)
                            retry_at[sentinel] = now + POLL * 5
                if self._wake.is_set() or now - refreshed >= REFRESH_EVERY:
                    self._wake.clear()
                    refreshed = now
                    try:
                        self.discover(everyone=True)
                    except RedisError as exc:
                        logger.debug("hacache: shard %r: %s", self.shard.name, exc)
                sockets = {c._sock: s for s, c in subscribed.items() if c._sock is not None}
                if not sockets:
                    stopping.wait(POLL)
                    continue
                readable, _, _ = select.select(list(sockets), [], [], POLL)
                for sock in readable:
                    sentinel = sockets[sock]
                    try:
                        self._read_events(sentinel, subscribed[sentinel])
                        heard[sentinel] = time.monotonic()
                        pinged.pop(sentinel, None)
                    except (RedisError, OSError, ValueError, IndexError) as exc:
                        drop(sentinel, exc)
                now = time.monotonic()
                for sentinel in list(subscribed):  # a silent sentinel is PINGed, then dropped
                    if sentinel in pinged and now - pinged[sentinel] >= HEARTBEAT:
                        drop(sentinel, "no answer to PING")
                    elif sentinel not in pinged and now - heard[sentinel] >= HEARTBEAT:
                        try:
                            subscribed[sentinel].send_command("PING")
                            pinged[sentinel] = now
                        except (RedisError, OSError) as exc:
                            drop(sentinel, exc)
        finally:
            for connection in subscribed.values():
                connection.disconnect()

    def _read_events(self, sentinel: Address, connection: Connection) -> None:
        while True:
            message = connection.read_response(disconnect_on_error=False)
            if message[0] == b"message":
                self._on_event(sentinel, message[1], message[2])
            if not connection.can_read(0):
                return

    def _on_event(self, sentinel: Address, channel: bytes, data: bytes) -> None:
        words = data.split()
        service = self._service_bytes
        if service not in words:
            return
        if channel == b"+switch-master" and words[0] == service:
            # "<name> <old-ip> <old-port> <new-ip> <new-port>": act before asking anything.
            new = (words[3].decode(), int(words[4]))
            before = self.shard.view.master
            self.shard.apply(new, None, None)
            if self.shard.view.master is not before:  # once, whichever sentinel said it first
                logger.warning(
                    "hacache: cache %r, shard %r: Sentinel promoted %s:%s (was %s:%s)",
                    self.shard.cache, self.shard.name, *new, words[1].decode(), words[2].decode(),
                )  # fmt: skip
        elif channel in (b"+sdown", b"-sdown", b"+odown") and words[:2] == [b"master", service]:
            master = (words[2].decode(), int(words[3]))
            self._note(sentinel, master, channel != b"-sdown")
            self.shard.master_reported_down(master, self._reported_down(master))
        self._wake.set()
