"""django-redis's extended operations, as data like ``ops``: lifetimes, conditional writes,
counters that create their key, and pattern scans over every shard.

Invariants kept here:

- every operation that changes a key's value or lifetime (``set`` with nx/xx, ``expire*``,
  ``persist``, ``delete_pattern``) carries the key's near-cache invalidation, as ``ops``'s
  writes do, so no process keeps serving a value past its new lifetime;
- scans are sent to each shard's master, never a replica: a ``SCAN`` cursor only means
  something to the server that made it. A shard whose master changes mid-scan is scanned again
  from the start, so every key present for the whole scan is seen at least once (SCAN's own
  promise; a key may be seen twice);
- ``delete_pattern`` scans every shard at once: each round trip carries, per shard, the
  ``UNLINK`` of the keys the previous step found and the next ``SCAN`` step. Failing open, a
  shard that cannot be scanned is recorded as dropped whole (its keys read as misses here until
  it is flushed when back: see ``dropped``), since which of its keys matched cannot be known.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from hacache.endpoint import Command, Replies
from hacache.ops import Ops, _first, _ok, _set_command
from hacache.router import Op
from hacache.sortedsets import SortedSetOps
from hacache.structures import StructureOps

if TYPE_CHECKING:
    from hacache.shard import Shard

_GLOB_SPECIAL = re.compile(r"([*?[])")
_DECIMAL = re.compile(rb"-?[0-9]+")
# Replace the value only if it is still the one read: a counter beyond 64 bits, one step.
COMPARE_AND_SET = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1 end return 0"
)


def glob_escape(text: str) -> str:
    """``text`` matched literally inside a Redis glob pattern."""
    return _GLOB_SPECIAL.sub(r"[\1]", text)


def _lifetime(reply: int) -> int | None:
    """django-redis's reading of TTL/PTTL: 0 if absent, None if it never expires."""
    if reply == -2:
        return 0
    return None if reply == -1 else reply


class ExtendedOps(StructureOps, SortedSetOps, Ops):
    __slots__ = ()

    def set_if(self, key: str, value: Any, timeout: int | None, nx: bool, xx: bool) -> Op:
        """SET with NX and/or XX: whether it was stored."""
        if nx and xx:
            raise ValueError("set(): nx and xx cannot both be true")
        if nx:
            return self.add(key, value, timeout)
        if timeout == 0:  # expires at once: delete what exists, as a plain set does
            return self._write_one(key, [("DEL", key)], lambda r: bool(_first(r)))
        command = (*_set_command(key, self._dump(key, value), timeout), "XX")
        return self._write_one(key, [command], lambda r: _first(r) is not None)

    def incr_or_create(self, key: str, delta: int) -> Op:
        def finish(results: list[Replies]) -> int:
            value = _first(results)
            if value is None:  # failing open: nothing was counted
                raise ValueError(f"Key '{key}' could not be incremented.")
            return value

        return self._write_one(key, [("INCRBY", key, delta)], finish, idempotent=False)

    def raw_from_master(self, key: str) -> Op:
        """The stored bytes, from the master (what a compare-and-set will compare with)."""
        return Op([(self._router.shard_for(key), [("GET", key)])], _first)

    def compare_and_set(self, key: str, old: bytes, new: int) -> Op:
        command = ("EVAL", COMPARE_AND_SET, 1, key, old, new)
        return self._write_one(key, [command], lambda r: bool(_first(r)), idempotent=False)

    def lifetime(self, key: str, unit: str) -> Op:
        """TTL (seconds) or PTTL (ms), read the django-redis way (see ``_lifetime``)."""
        if self._dropped.waiting and self._hidden(key):
            return Op([], lambda _: 0)
        return self._read_one(key, [(unit, key)], lambda r: _lifetime(_first(r)))

    def expire(self, key: str, command: str, when: int | None) -> Op:
        """EXPIRE, PEXPIRE, EXPIREAT or PEXPIREAT (``when`` None: PERSIST): whether it applied."""
        sent: Command = ("PERSIST", key) if when is None else (command, key, when)
        return self._write_one(key, [sent], lambda r: bool(_first(r)))

    # -- pattern scans -----------------------------------------------------------------------

    def scan_step(self, shard: Shard, cursor: int, pattern: str, count: int | None) -> Op:
        """One ``SCAN`` step on ``shard``'s master: (next cursor, keys as text)."""

        def finish(results: list[Replies]) -> tuple[int, list[str]]:
            next_cursor, keys = _first(results)
            return int(next_cursor), [k.decode() for k in keys]

        return Op([(shard, [_scan(cursor, pattern, count)])], finish)

    def unlink_step(
        self, steps: dict[Shard, tuple[int, list[str]]], pattern: str, count: int | None
    ) -> Op:
        """Per shard: UNLINK the keys found last step, and scan on if its cursor is not done.
        Answers {shard: (next cursor or None when done, keys found, keys unlinked)}."""
        shards = list(steps)
        batches = []
        for shard in shards:
            cursor, found = steps[shard]
            commands: list[Command] = [("UNLINK", *found)] if found else []
            if cursor is not None:
                commands.append(_scan(cursor, pattern, count))
            batches.append((shard, commands))

        def finish(results: list[Replies]) -> dict[Shard, tuple[int | None, list[str], int]]:
            out = {}
            for shard, replies in zip(shards, results, strict=True):
                cursor, found = steps[shard]
                unlinked = _ok(replies[0]) if found else 0
                next_cursor, keys = None, []
                if cursor is not None:
                    reply = _ok(replies[-1])
                    next_cursor = int(reply[0]) or None
                    keys = [k.decode() for k in reply[1]]
                out[shard] = (next_cursor, keys, unlinked)
            return out

        unlinked: list[list[str] | None] = [steps[shard][1] for shard in shards]
        # Failing open, a shard that could not be scanned is dropped whole (see the module).
        op = Op(batches, finish, writes=[None] * len(shards))
        return self._write(op, unlinked)


def beyond_64_bits(error: Exception) -> bool:
    """INCRBY's refusals of a value or result outside 64 bits (also sent for non-counters,
    which the compare-and-set path tells apart)."""
    text = str(error)
    return "out of range" in text or "overflow" in text


def is_decimal(raw: bytes) -> bool:
    return _DECIMAL.fullmatch(raw) is not None


def _scan(cursor: int, pattern: str, count: int | None) -> Command:
    if count is None:
        return ("SCAN", cursor, "MATCH", pattern)
    return ("SCAN", cursor, "MATCH", pattern, "COUNT", count)
