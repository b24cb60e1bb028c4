"""Each cache operation as data: the commands per shard and how to read the replies.

Nothing here does I/O, so the sync and async APIs share every operation and differ only in
``router.run(op)`` versus ``await router.arun(op)``. Timeouts arrive already converted by the
backend: ``None`` means no expiry and ``0`` means expire at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hacache.router import Op, Router
from hacache.serializers import Serializer
from hacache.shard import Command, Replies

# One server-side step: no EXISTS-then-INCRBY race and one round trip, not two.
INCR_IF_EXISTS = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "return redis.call('INCRBY', KEYS[1], ARGV[1]) end return false"
)


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


class Ops:
    __slots__ = ("_dumps", "_loads", "_router")

    def __init__(self, router: Router, serializer: Serializer) -> None:
        self._router = router
        self._dumps = serializer.dumps
        self._loads = serializer.loads

    def _one(self, key: str, commands: list[Command], finish: Any, idempotent: bool = True) -> Op:
        return Op([(self._router.shard_for(key), commands)], finish, idempotent)

    def get(self, key: str, default: Any) -> Op:
        loads = self._loads

        def finish(results: list[Replies]) -> Any:
            value = _first(results)
            return default if value is None else loads(value)

        return self._one(key, [("GET", key)], finish)

    def set(self, key: str, value: Any, timeout: int | None) -> Op:
        if timeout == 0:
            return self._one(key, [("DEL", key)], _check_all)
        return self._one(key, [_set_command(key, self._dumps(value), timeout)], _check_all)

    def add(self, key: str, value: Any, timeout: int | None) -> Op:
        if timeout == 0:  # would expire at once: report whether it could have been added
            return self._one(key, [("EXISTS", key)], lambda r: not _first(r))
        command = (*_set_command(key, self._dumps(value), timeout), "NX")
        return self._one(key, [command], lambda r: _first(r) is not None)

    def touch(self, key: str, timeout: int | None) -> Op:
        if timeout is None:
            # PERSIST answers 0 for a key that exists without expiry: ask EXISTS instead.
            return self._one(
                key, [("PERSIST", key), ("EXISTS", key)], lambda r: _check_all(r) or bool(r[0][1])
            )
        return self._one(key, [("EXPIRE", key, timeout)], lambda r: bool(_first(r)))

    def delete(self, key: str) -> Op:
        return self._one(key, [("DEL", key)], lambda r: bool(_first(r)))

    def has_key(self, key: str) -> Op:
        return self._one(key, [("EXISTS", key)], lambda r: bool(_first(r)))

    def incr(self, key: str, delta: int) -> Op:
        def finish(results: list[Replies]) -> int:
            value = _first(results)
            if value is None:
                raise ValueError(f"Key '{key}' not found.")
            return value

        command = ("EVAL", INCR_IF_EXISTS, 1, key, delta)
        return self._one(key, [command], finish, idempotent=False)

    def get_many(self, keys: Iterable[str]) -> Op:
        groups = list(self._router.group(keys).items())
        loads = self._loads

        def finish(results: list[Replies]) -> dict[str, Any]:
            found = {}
            for (_, shard_keys), replies in zip(groups, results, strict=True):
                for key, value in zip(shard_keys, _ok(replies[0]), strict=True):
                    if value is not None:
                        found[key] = loads(value)
            return found

        return Op([(shard, [("MGET", *shard_keys)]) for shard, shard_keys in groups], finish)

    def set_many(self, data: Mapping[str, Any], timeout: int | None) -> Op:
        dumps = self._dumps
        batches = []
        for shard, keys in self._router.group(data).items():
            if timeout == 0:
                commands: list[Command] = [("DEL", *keys)]
            elif timeout is None:
                pairs = [item for key in keys for item in (key, dumps(data[key]))]
                commands = [("MSET", *pairs)]
            else:
                commands = [("SET", key, dumps(data[key]), "EX", timeout) for key in keys]
            batches.append((shard, commands))
        return Op(batches, _check_all)

    def delete_many(self, keys: Iterable[str]) -> Op:
        groups = self._router.group(keys)
        return Op(
            [(shard, [("DEL", *shard_keys)]) for shard, shard_keys in groups.items()], _check_all
        )

    def clear(self) -> Op:
        return Op(
            [(shard, [("FLUSHDB",)]) for shard in self._router.shards.values()],
            lambda results: _check_all(results) or True,
        )

    def dump(self, key: str) -> Op:
        """The raw stored value and its remaining lifetime in ms (-1: none), or None if absent."""

        def finish(results: list[Replies]) -> tuple[bytes, int] | None:
            value, ttl = (_ok(reply) for reply in results[0])
            return None if value is None or ttl == -2 else (value, ttl)

        return self._one(key, [("GET", key), ("PTTL", key)], finish)

    def restore(self, key: str, raw: bytes, ttl_ms: int) -> Op:
        """Store a value read by ``dump`` under ``key``, with the lifetime it had left."""
        command = ("SET", key, raw) if ttl_ms < 0 else ("SET", key, raw, "PX", max(ttl_ms, 1))
        return self._one(key, [command], _check_all)
