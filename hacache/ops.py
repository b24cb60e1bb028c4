"""Each cache operation as data: the commands per shard and how to read the replies.

Nothing here does I/O, so the sync and async APIs share every operation and differ only in
``router.run(op)`` versus ``await router.arun(op)``. Timeouts arrive already converted by the
backend: ``None`` means no expiry and ``0`` means expire at once.

With a near-cache, reads of covered keys are answered from it or fetched with their TTL under a
lease (see ``nearcache``), and every write of covered keys carries its invalidation in the same
pipeline and evicts the keys locally once the call is over, whether it succeeded or not
(``writes``). ``incr`` is in ``counters``; the value format (signing, compression) in ``codec``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from hacache import counters
from hacache.codec import UnreadableValue, recognized, too_large, unreadable, unstorable
from hacache.endpoint import Command, Replies
from hacache.nearcache import ABSENT, MISS, Lease
from hacache.router import Op, Router
from hacache.serializers import Serializer
from hacache.shard import Shard
from hacache.sizelimit import FLOOR, check_known
from hacache.writes import Upkeep


def _ok(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


def _first(results: list[Replies]) -> Any:
    return _ok(results[0][0])


def _check_all(results: list[Replies]) -> None:
    for replies in results:
        for reply in replies:
            _ok(reply)


def _set_command(key: str, value: Any, timeout: int | None) -> Command:
    if timeout is None:
        return ("SET", key, value)
    return ("SET", key, value, "EX", timeout)


def _done(value: Any) -> Op:
    """An answer the near-cache already has: nothing to send."""
    return Op([], lambda _: value)


_BAD = object()  # a stored value that would not load


class Ops:
    __slots__ = (
        "_bus", "_codec", "_covers", "_dropped", "_dumps", "_fallback", "_forms", "_hit_loads",
        "_loads", "_max_bytes", "_near", "_open", "_raise_unreadable", "_router", "_unchecked",
        "_write",
    )  # fmt: skip

    def __init__(self, router: Router, serializer: Serializer) -> None:
        self._router = router
        # Values go through the codec (signing, compression) only if one is configured: the
        # near-cache keeps what ``codec.open`` gives, verified and decompressed, and a hit
        # only deserializes it (``_hit_loads``). Without one, values are the serializer's.
        values = router.options.values
        codec = values.codec if serializer is router.options.serializer else None
        # ``_dumps``/``_loads`` are for set and sorted-set members (empty signing context);
        # a value stored under a key goes through ``_dump``/``_load``, signed for that key.
        self._codec = codec
        self._dumps = codec.dumps if codec else serializer.dumps
        self._forms = codec.variants if codec and len(codec.keys) > 1 else None  # key rotation
        self._loads = codec.loads if codec else serializer.loads
        self._open = codec.open if codec else None
        self._hit_loads = serializer.loads
        self._fallback = values.fallback if codec is None else None
        self._max_bytes = values.max_bytes if codec is None else sys.maxsize  # codec checks
        self._unchecked = min(self._max_bytes, FLOOR)  # a value up to this size needs no check
        self._raise_unreadable = values.raise_unreadable
        self._near, self._bus = router.near, router.bus
        self._covers = router.options.near_cache.covers if router.options.near_cache else None
        # Adds to a write its WAIT, its invalidation and the near-cache's eviction (``writes``).
        self._write = Upkeep(router).add
        self._dropped = router.dropped

    def _dump(self, key: str, value: Any, context: bytes | None = None) -> Any:
        """The value as stored; its serializer's error names the key; a value above
        MAX_VALUE_BYTES raises ValueError before anything is sent."""
        codec = self._codec
        try:
            if codec is None:
                data = self._dumps(value)
            else:  # signed for where it is stored: the key (or a hash's key and field)
                data = codec.dumps(value, key.encode() if context is None else context)
        except Exception as exc:
            raise unstorable(key, value, exc) from exc
        if type(data) is not int and len(data) > self._unchecked:
            if len(data) > self._max_bytes:
                raise too_large(key, len(data), self._max_bytes)
            if len(data) > FLOOR:
                check_known(self._router.shard_for(key), key, len(data))  # the server's limit
        return data

    def _load(self, key: str, data: bytes, default: Any, context: bytes | None = None) -> Any:
        """A value stored under ``key`` (verified for it, or for ``context``), or ``default``
        if unreadable."""
        codec = self._codec
        try:
            if codec is None:
                return self._loads(data)
            return codec.loads(data, key.encode() if context is None else context)
        except Exception as exc:
            return self._unreadable(key, data, exc, default)

    def _kept(self, key: str, data: bytes) -> tuple[bytes, Any]:
        """What the near-cache keeps of a stored value (verified and decompressed: a hit only
        deserializes it), and the value. Raises if it is unreadable."""
        kept = data if self._open is None else self._open(data, key.encode())
        return kept, self._hit_loads(kept)

    def _unreadable(
        self, key: str, data: bytes, exc: Exception, default: Any, member: bool = False
    ) -> Any:
        """A stored value that would not load: the fallback's reading (a frame or django-redis
        compression, met by a cache without a codec), else a miss with a warning, or raise."""
        if self._fallback is not None and recognized(data):
            try:
                return self._fallback.loads(data)
            except Exception as again:
                exc = again
        shard = self._router.shard_for(key)
        unreadable(shard.cache, shard.name, key, exc, self._raise_unreadable, member)
        return default

    def _read_one(self, key: str, commands: list[Command], finish: Any) -> Op:
        return Op([(self._router.shard_for(key), commands)], finish, readonly=True)

    def _hidden(self, key: str) -> bool:
        """Recorded as dropped by a write that failed open: a miss until repaired."""
        return self._dropped.hides(key, self._router.shard_for(key))

    def _near_lookup(self, key: str) -> Any:
        """The near-cache's answer for ``key``: raw bytes, ``ABSENT``, or ``MISS``."""
        if self._near is None or (self._covers is not None and not self._covers(key)):
            return None
        return self._near.get(key)

    def _lease(self, key: str, shard: Shard) -> Lease | None:
        self._bus.listen()  # type: ignore[union-attr]
        return self._near.lease(key, shard.name)  # type: ignore[union-attr]

    def _write_one(
        self, key: str, commands: list[Command], finish: Any, idempotent: bool = True
    ) -> Op:
        keys = [[key]]
        op = Op(
            [(self._router.shard_for(key), commands)], finish, idempotent, None, False, False, keys
        )
        return self._write(op, keys)

    def get(self, key: str, default: Any) -> Op:
        if self._dropped.waiting and self._hidden(key):
            return _done(default)
        hit = self._near_lookup(key)
        if hit is not None:
            if hit is ABSENT:
                return _done(default)
            if hit is not MISS:
                try:
                    return _done(self._hit_loads(hit))
                except Exception as exc:
                    return _done(self._unreadable(key, hit, exc, default))
            shard = self._router.shard_for(key)
            lease = self._lease(key, shard)
            if lease is not None:
                near = self._near

                def fill(results: list[Replies]) -> Any:
                    value, ttl = (_ok(reply) for reply in results[0])
                    if value is None:
                        near.fill(lease, ABSENT, ttl)
                        return default
                    try:  # kept near only once verified and loaded
                        kept, found = self._kept(key, value)
                    except Exception as exc:
                        return self._unreadable(key, value, exc, default)
                    near.fill(lease, kept, ttl)
                    return found

                # Kept only if the master answers: a replica may not yet have a write whose
                # invalidation has already arrived (failover.call voids the lease otherwise).
                return Op(
                    [(shard, [("GET", key), ("PTTL", key)])],
                    fill,
                    cleanup=lambda: near.release(lease),
                    readonly=True,
                    fills=True,
                )

        def finish(results: list[Replies]) -> Any:
            value = _first(results)
            return default if value is None else self._load(key, value, default)

        return self._read_one(key, [("GET", key)], finish)

    def set(self, key: str, value: Any, timeout: int | None) -> Op:
        if timeout == 0:
            return self._write_one(key, [("DEL", key)], _check_all)
        command = _set_command(key, self._dump(key, value), timeout)
        return self._write_one(key, [command], _check_all)

    def add(self, key: str, value: Any, timeout: int | None) -> Op:
        if timeout == 0:  # would expire at once: report whether it could have been added
            return self._read_one(key, [("EXISTS", key)], lambda r: not _first(r))
        command = (*_set_command(key, self._dump(key, value), timeout), "NX")
        return self._write_one(key, [command], lambda r: _first(r) is not None)

    def touch(self, key: str, timeout: int | None) -> Op:
        if timeout is None:
            # PERSIST answers 0 for a key that exists without expiry: ask EXISTS instead.
            return self._write_one(
                key, [("PERSIST", key), ("EXISTS", key)], lambda r: _check_all(r) or bool(r[0][1])
            )
        return self._write_one(key, [("EXPIRE", key, timeout)], lambda r: bool(_first(r)))

    def delete(self, key: str) -> Op:
        return self._write_one(key, [("DEL", key)], lambda r: bool(_first(r)))

    def has_key(self, key: str) -> Op:
        if self._dropped.waiting and self._hidden(key):
            return _done(False)
        hit = self._near_lookup(key)
        if hit is not None and hit is not MISS:
            return _done(hit is not ABSENT)
        return self._read_one(key, [("EXISTS", key)], lambda r: bool(_first(r)))

    def incr(self, key: str, delta: int) -> Op:
        """INCRBY if the key exists, in one round trip (see ``counters``)."""
        op = counters.incr(self._router, key, delta)
        return self._write(op, op.writes)  # type: ignore[arg-type]

    def get_many(self, keys: Iterable[str]) -> Op:
        hit_loads = self._hit_loads
        found: dict[str, Any] = {}
        if self._dropped.waiting:
            keys = [key for key in keys if not self._hidden(key)]
        leasable: set[str] = set()
        if self._near is not None:
            remote = []
            for key in keys:
                hit = self._near_lookup(key)
                if hit is None or hit is MISS:
                    remote.append(key)
                    if hit is MISS:
                        leasable.add(key)
                elif hit is not ABSENT:
                    try:
                        found[key] = hit_loads(hit)
                    except Exception as exc:
                        if (value := self._unreadable(key, hit, exc, _BAD)) is not _BAD:
                            found[key] = value
            if not remote:
                return _done(found)
            keys = remote
        groups = list(self._router.group(keys).items())
        leases: list[list[Lease | None]] = [[] for _ in groups]
        batches = []
        for (shard, shard_keys), shard_leases in zip(groups, leases, strict=True):
            commands: list[Command] = [("MGET", *shard_keys)]
            if self._near is not None:
                for key in shard_keys:
                    lease = self._lease(key, shard) if key in leasable else None
                    shard_leases.append(lease)
                    if lease is not None:
                        commands.append(("PTTL", key))
            batches.append((shard, commands))
        near = self._near

        def finish(results: list[Replies]) -> dict[str, Any]:
            for (_, shard_keys), replies, shard_leases in zip(groups, results, leases, strict=True):
                ttls = iter(replies[1:])
                for i, (key, value) in enumerate(zip(shard_keys, _ok(replies[0]), strict=True)):
                    lease = shard_leases[i] if shard_leases else None
                    ttl = None if lease is None else _ok(next(ttls))
                    if value is None:
                        if lease is not None:
                            near.fill(lease, ABSENT, ttl)
                        continue
                    try:  # one unreadable value is a miss, not the whole call's failure
                        kept, found[key] = self._kept(key, value)
                    except Exception as exc:
                        if (loaded := self._unreadable(key, value, exc, _BAD)) is not _BAD:
                            found[key] = loaded
                        continue  # its lease, if any, is released by cleanup
                    if lease is not None:
                        near.fill(lease, kept, ttl)
            return found

        if near is None:
            return Op(batches, finish, readonly=True)

        def cleanup() -> None:
            for shard_leases in leases:
                for lease in shard_leases:
                    if lease is not None:
                        near.release(lease)

        leased = any(lease is not None for shard_leases in leases for lease in shard_leases)
        return Op(batches, finish, cleanup=cleanup, readonly=True, fills=leased)

    def set_many(self, data: Mapping[str, Any], timeout: int | None) -> Op:
        """Answers the keys not stored (their shard failed, failing open)."""
        dump = self._dump
        batches = []
        keys_per_batch: list[list[str] | None] = []
        keys_per_command: list[list[list[str]]] = []  # which keys each command stores
        for shard, keys in self._router.group(data).items():
            if timeout == 0:
                commands: list[Command] = [("DEL", *keys)]
                stores: list[list[str]] = [[]]
            elif timeout is None:
                pairs = [item for key in keys for item in (key, dump(key, data[key]))]
                commands, stores = [("MSET", *pairs)], [keys]
            else:
                commands = [("SET", key, dump(key, data[key]), "EX", timeout) for key in keys]
                stores = [[key] for key in keys]
            batches.append((shard, commands))
            keys_per_batch.append(keys)
            keys_per_command.append(stores)

        def finish(results: list[Replies]) -> list[str]:
            _check_all(results)
            return [
                key
                for stores, replies in zip(keys_per_command, results, strict=True)
                for stored, reply in zip(stores, replies, strict=True)
                if reply is None
                for key in stored
            ]

        return self._write(Op(batches, finish, writes=keys_per_batch), keys_per_batch)

    def delete_many(self, keys: Iterable[str]) -> Op:
        """Answers how many of the keys existed (what django-redis answers)."""
        groups = self._router.group(keys)
        written: list[list[str] | None] = list(groups.values())
        op = Op(
            [(shard, [("DEL", *shard_keys)]) for shard, shard_keys in groups.items()],
            lambda r: _check_all(r) or sum(replies[0] for replies in r),
            writes=written,
        )
        return self._write(op, written)

    def clear(self) -> Op:
        shards = self._router.every_shard()
        everything: list[list[str] | None] = [None] * len(shards)
        op = Op(
            [(shard, [("FLUSHDB",)]) for shard in shards],
            lambda r: _check_all(r) or all(replies[0] is not None for replies in r),
            writes=everything,
        )
        return self._write(op, everything)

    def dump(self, key: str) -> Op:
        """The raw stored value and its remaining lifetime in ms (-1: none), or None if absent
        (or, with a codec, if it does not verify: a warning, as ``_load`` gives)."""
        codec = self._codec

        def finish(results: list[Replies]) -> tuple[bytes, int] | None:
            value, ttl = (_ok(reply) for reply in results[0])
            if value is None or ttl == -2:
                return None
            if codec is not None:  # verified (never deserialized): ``restore`` re-signs it
                try:
                    codec.open(value, key.encode())
                except UnreadableValue as exc:
                    return self._unreadable(key, value, exc, None)
            return value, ttl

        return self._read_one(key, [("GET", key), ("PTTL", key)], finish)

    def restore(
        self, key: str, raw: bytes, ttl_ms: int, if_absent: bool = False, source: str | None = None
    ) -> Op:
        """Store a value read by ``dump`` (of ``source``, if not ``key``) under ``key``, with
        the lifetime it had left (with ``if_absent``, only if the key has no value); answers
        whether it was stored. A signed value is signed again for its new key."""
        if source is not None and source != key and self._codec is not None:
            raw = self._codec.rebind(raw, source.encode(), key.encode())
        command = ("SET", key, raw) if ttl_ms < 0 else ("SET", key, raw, "PX", max(ttl_ms, 1))
        if if_absent:
            command = (*command, "NX")
        return self._write_one(key, [command], lambda r: _first(r) is not None)
