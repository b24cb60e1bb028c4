"""The invalidation bus: Redis pub/sub on every shard, numbered so that lost messages are seen.

A write publishes, in the same pipeline and so the same round trip, one message on the shard
that owns the keys. A Lua script increments the shard's sequence and publishes atomically, so
every subscriber sees one strictly increasing sequence per shard: a jump means messages were
lost (a slow subscriber cut off by ``client-output-buffer-limit``, a reconnect) and that
shard's near-cache entries are dropped. Each process keeps one subscriber thread per shard; the
thread serves the sync and async APIs alike. A subscriber that loses its connection, or whose
heartbeat ``PING`` goes unanswered, marks its shard untrusted until it has subscribed again.

Message: ``"<seq> <origin> <json list of keys>"``, or ``"<seq> <origin> *"`` for ``clear()``;
with metrics on, ``<origin>`` is ``<id>@<unix time sent>`` (older readers just see a stranger).

With ``NEAR_CACHE_TRACKING``, a second transport sees the changes that publish nothing (other
clients, ``redis-cli``, expiry and eviction inside Redis): Redis's own ``CLIENT TRACKING`` in
``BCAST`` mode, armed on a kept *arming* connection that redirects its invalidations to the
subscriber's connection (on ``__redis__:invalidate``). Tracking lives only as long as the arming
connection does and says nothing when it dies (redis #11767), so the subscriber checks it every
``HEARTBEAT`` and, when it is gone, treats it as a lost subscription: untrust, re-arm, flush.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import NoPermissionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hacache.driver import drive
from hacache.endpoint import Command, Endpoint
from hacache.failover import exchange
from hacache.nearcache import NearCache
from hacache.shard import Shard

logger = logging.getLogger("hacache.invalidation")

PUBLISH = (
    "local seq = redis.call('INCR', KEYS[1]) "
    "redis.call('PUBLISH', ARGV[1], seq .. ' ' .. ARGV[2]) return seq"
)
HEARTBEAT = 1.0  # seconds of silence before the subscriber PINGs; no PONG within as long: lost
TRACKING_CHANNEL = "__redis__:invalidate"  # where Redis sends CLIENT TRACKING's invalidations
TRACKING_CHANNEL_BYTES = TRACKING_CHANNEL.encode()
RECONNECT_DELAY = (0.05, 1.0)  # first and longest wait between attempts (with jitter)
REFUSED_RETRY = 30.0  # seconds between attempts of a subscriber that Redis's ACL refused
REFUSED_LOG_EVERY = 600.0  # seconds between repeated warnings about the same refusal

_buses: weakref.WeakSet[Bus] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for bus in list(_buses):
        bus.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Bus:
    """Publishes this process's invalidations and runs its subscribers, one per shard."""

    def __init__(self, shards: Iterable[Shard], near: NearCache | None, channel: str,
                 tracking: tuple[str, ...] | None = None) -> None:  # fmt: skip
        self.shards = list(shards)
        self.near = near
        self.channel = channel
        self.tracking = tracking  # key prefixes for CLIENT TRACKING (() = all), or None
        self.seq_key = f"{channel}:seq"
        self.origin = uuid.uuid4().hex[:16]
        # With metrics: each message carries its send time ("origin@time"), and the
        # subscribers report publish-to-eviction lag here (shard name, seconds).
        self.lag_sink: Callable[[str, float], None] | None = None
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._refusals: dict[str, float] = {}  # shard -> when its refused publish was logged
        if near is not None:
            for shard in self.shards:
                shard.master_listeners.append(self._master_moved)
        _buses.add(self)

    def _master_moved(self, shard: Shard) -> None:
        """A failover: the new master may lack the last writes, and we listen on the old one."""
        self.near.untrust(shard.name)  # type: ignore[union-attr]
        for subscriber in self._subscribers:
            if subscriber.shard is shard:
                subscriber.reconnect()

    def publish_command(self, keys: list[str] | None) -> Command:
        payload = "*" if keys is None else json.dumps(keys, ensure_ascii=False)
        origin = self.origin if self.lag_sink is None else f"{self.origin}@{time.time():.6f}"
        return ("EVAL", PUBLISH, 1, self.seq_key, self.channel, f"{origin} {payload}")

    def publish_refused(self, shard: Shard, error: ResponseError) -> None:
        """A write was stored but its invalidation refused (ACL: no EVAL, PUBLISH or channel
        access; or OOM): the write stands. Warned once per shard, then every
        ``REFUSED_LOG_EVERY`` seconds."""
        now = time.monotonic()
        last = self._refusals.get(shard.name)
        if last is not None and now - last < REFUSED_LOG_EVERY:
            return
        self._refusals[shard.name] = now
        ttl = f"{self.near.max_ttl:g}s" if self.near is not None else "NEAR_CACHE_TTL"
        logger.warning(
            "hacache: cache %r, shard %r (%s): writes are stored but their invalidations are "
            "not published: %s (the Redis user needs +eval +incr +publish, channel &%s and key "
            "~%s). Other processes' near-caches are not told: their copies of keys written "
            "here may stay stale for up to NEAR_CACHE_TTL (%s); this process's own near-cache "
            "is still evicted locally",
            shard.cache, shard.name, shard.address, _reason(error), self.channel, self.seq_key,
            ttl,
        )  # fmt: skip

    def listen(self) -> None:
        """Start the subscribers on first use (after fork too); cheap once they run."""
        if self._subscribers or self.near is None:
            return
        with self._lock:
            if not self._subscribers:
                self._subscribers = [Subscriber(self, shard) for shard in self.shards]
                for subscriber in self._subscribers:
                    subscriber.start()

    def stop(self) -> None:
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber.stop()
        for subscriber in subscribers:
            subscriber.join(HEARTBEAT * 3)

    def after_fork(self) -> None:
        """Threads do not survive fork(): the child starts over, with its own identity."""
        self._lock = threading.Lock()
        self._subscribers = []
        self.origin = uuid.uuid4().hex[:16]
        if self.near is not None:
            self.near.reset()

    def subscriber(self, shard: str) -> Subscriber:
        return next(s for s in self._subscribers if s.shard.name == shard)


def _reason(error: ResponseError) -> str:
    """Redis's refusal without the script SHA and line it ends with inside a script."""
    return str(error).split(" script: ", 1)[0]


class Refused(Exception):
    """Redis's ACL refused the subscriber a command, a channel or a key: retrying at once
    will not help."""

    def __init__(self, what: str, rule: str, error: ResponseError) -> None:
        super().__init__(f"{what} refused: {error} (the Redis user needs {rule})")


class Subscriber(threading.Thread):
    def __init__(self, bus: Bus, shard: Shard) -> None:
        super().__init__(name=f"hacache-invalidation-{shard.name}", daemon=True)
        self.bus, self.shard = bus, shard
        self.near: NearCache = bus.near  # type: ignore[assignment]
        self._stopping = threading.Event()
        self._connection: Any = None
        self._arming: Any = None  # the connection CLIENT TRACKING is armed on
        self.subscriptions = 0  # successful (re)subscriptions
        self.last_seq = 0  # the newest invalidation applied: lets tests wait for delivery
        self.refused = False  # Redis's ACL refused the last attempt (see ``Refused``)

    def stop(self) -> None:
        self._stopping.set()
        self.reconnect()

    def reconnect(self) -> None:
        connection = self._connection
        if connection is not None:
            connection.disconnect()  # wakes the blocked read; the loop connects again

    def run(self) -> None:
        delay = RECONNECT_DELAY[0]
        refused_at: dict[str, float] = {}  # refusal -> when last logged
        while not self._stopping.is_set():
            try:
                self._listen()
            except Refused as exc:
                now, reason = time.monotonic(), str(exc)
                if now - refused_at.get(reason, -REFUSED_LOG_EVERY) >= REFUSED_LOG_EVERY:
                    refused_at[reason] = now
                    logger.warning(
                        "hacache: cache %r, shard %r (%s): invalidation subscriber %s; the "
                        "near-cache stays off for this shard's keys (read from Redis every "
                        "time) until it may subscribe; next attempt in %gs",
                        self.shard.cache, self.shard.name, self.shard.address, exc,
                        REFUSED_RETRY,
                    )  # fmt: skip
                self.refused = True
                self.near.untrust(self.shard.name)
                self._stopping.wait(REFUSED_RETRY * random.uniform(0.9, 1.1))
                continue
            except Exception as exc:
                was_listening = self.near.trusted(self.shard.name)
                if not self._stopping.is_set():
                    # Once per outage, not once per reconnection attempt.
                    logger.log(
                        logging.WARNING if was_listening else logging.DEBUG,
                        "hacache: cache %r, shard %r (%s): invalidation subscriber lost: %s: %s; "
                        "its near-cache entries are dropped until it has subscribed again",
                        self.shard.cache,
                        self.shard.name,
                        self.shard.address,
                        type(exc).__name__,
                        exc,
                    )
            if self.near.trusted(self.shard.name):
                self.near.stats.resubscribe_flushes += 1
                delay = RECONNECT_DELAY[0]
            self.near.untrust(self.shard.name)
            self._stopping.wait(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, RECONNECT_DELAY[1])

    def _current_master(self) -> Endpoint:
        shard = self.shard
        if shard.view.master is None:
            shard.discover()
        if shard.monitor is not None:
            shard.monitor.ensure_running()
        return shard.view.master  # type: ignore[return-value]

    def _listen(self) -> None:
        master = self._current_master()
        kwargs = {**master.connection_kwargs, "socket_timeout": HEARTBEAT}
        self._connection = connection = master.connection_class(**kwargs)
        if self._stopping.is_set():
            return
        channel, seq_key = self.bus.channel, self.bus.seq_key
        tracking = self.bus.tracking
        try:
            if tracking is not None:
                try:
                    connection.send_command("CLIENT", "ID")
                    self._arm(master, kwargs, connection.read_response(), tracking)
                except NoPermissionError as exc:
                    rule = "+client|id and +client|tracking"
                    raise Refused("CLIENT TRACKING (NEAR_CACHE_TRACKING)", rule, exc) from None
                connection.send_command("SUBSCRIBE", channel, TRACKING_CHANNEL)
                channels, rule = 2, f"+subscribe, &{channel} and &{TRACKING_CHANNEL}"
            else:
                connection.send_command("SUBSCRIBE", channel)
                channels, rule = 1, f"+subscribe and &{channel}"
            try:
                for _ in range(channels):  # one reply per channel, or one refusal for all
                    connection.read_response()
            except NoPermissionError as exc:
                raise Refused(f"SUBSCRIBE to {channel!r}", rule, exc) from None
            # Sent on another connection after the subscription took effect: every message
            # with a higher number will reach us.
            seq = drive(exchange(master, [("GET", seq_key)]))[0]
            if isinstance(seq, NoPermissionError):
                raise Refused(f"GET of {seq_key!r}", f"+get and %R~{seq_key}", seq)
            baseline = int(seq or 0)
            last = self.last_seq = baseline
            self.near.trust(self.shard.name)
            if self.refused:
                self.refused = False
                logger.info(
                    "hacache: cache %r, shard %r: invalidation subscriber now allowed and "
                    "listening; the near-cache serves this shard's keys again",
                    self.shard.cache, self.shard.name,
                )  # fmt: skip
            self.subscriptions += 1
            awaiting_pong = False
            checked = time.monotonic()
            while not self._stopping.is_set():
                if tracking is not None and time.monotonic() - checked >= HEARTBEAT:
                    self._check_arming()
                    checked = time.monotonic()
                try:
                    message = connection.read_response(disconnect_on_error=False)
                except RedisTimeoutError:
                    if awaiting_pong:
                        raise
                    connection.send_command("PING")
                    awaiting_pong = True
                    continue
                except NoPermissionError as exc:  # only our PING can be refused
                    raise Refused("heartbeat PING", "+ping", exc) from None
                awaiting_pong = False
                if message[0] != b"message":
                    continue
                if message[1] == TRACKING_CHANNEL_BYTES:
                    self._tracked(message[2])
                else:
                    last = self.last_seq = self._apply(message[2], last, baseline)
        finally:
            self._connection = None
            connection.disconnect()
            if self._arming is not None:
                self._arming.disconnect()
                self._arming = None

    def _arm(self, master: Endpoint, kwargs: dict[str, Any], client_id: int,
             prefixes: tuple[str, ...]) -> None:  # fmt: skip
        """CLIENT TRACKING on a kept connection, its invalidations sent to ours."""
        self._arming = arming = master.connection_class(**kwargs)
        command = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
        for prefix in prefixes:
            command += ("PREFIX", prefix)
        arming.send_command(*command)
        arming.read_response()

    def _check_arming(self) -> None:
        """Tracking dies with its connection, silently: a PING that fails ends the session."""
        self._arming.send_command("PING")
        self._arming.read_response()

    def _tracked(self, keys: list[bytes] | None) -> None:
        """Redis says these keys changed (None: the whole db was flushed)."""
        if keys is None:
            self.near.flush(self.shard.name)
            return
        seq_key = self.bus.seq_key
        changed = [k for k in (key.decode() for key in keys) if k != seq_key]
        if changed:
            self.near.evict(changed, remote=True)

    def _apply(self, data: bytes, last: int, baseline: int) -> int:
        seq_text, origin, payload = data.split(b" ", 2)
        seq = int(seq_text)
        shard = self.shard.name
        if seq > last + 1:
            self.near.stats.gap_flushes += 1
            self.near.flush(shard)
            logger.warning(
                "hacache: cache %r, shard %r: invalidations %d to %d were lost; near-cache "
                "entries of that shard dropped",
                self.shard.cache,
                shard,
                last + 1,
                seq - 1,
            )
        elif seq <= last and last > baseline:
            self.near.flush(shard)  # the sequence started over: FLUSHDB or a new server
        last = max(last, seq) if last == baseline and seq <= baseline else seq
        origin, _, sent_at = origin.partition(b"@")  # "@time": the sender meters lag
        if payload == b"*":
            self.near.flush(shard)
        elif origin.decode() != self.bus.origin:
            self.near.evict(json.loads(payload), remote=True)
            sink = self.bus.lag_sink
            if sent_at and sink is not None:
                sink(shard, max(0.0, time.time() - float(sent_at)))
        else:  # ours: already evicted when the write returned, unless it failed (in doubt)
            self.near.own_invalidation(json.loads(payload))
        return last
