"""The dropped-write record: what failing open did not write, until it is repaired on the shard.

Failing open, a write to a failed shard is reported as not stored (or, for ``set``, not at all),
but the shard may still hold the key's previous value, and the replica Sentinel promotes
certainly does. Served later, that value would be older than a write the caller was told had
succeeded. So, as mcrouter's asynclog and Facebook's buffered deletes do:

- every key of a dropped write (or of one whose outcome is unknown: a timeout, an unreplicated
  write) is recorded before the call returns; while it is recorded, this process reads it as a
  miss without asking Redis;
- the next write this process sends to that shard's master carries, in the same pipeline, a
  ``DEL`` of the recorded keys and their invalidation (and ``WAIT`` when writes wait for
  replicas); only keys whose repair succeeded leave the record, and a key recorded again
  meanwhile stays;
- a dropped ``clear()``, or more than ``max_keys`` keys recorded for one shard, makes the shard
  *blind*: every key of it reads as a miss here, and the repair is a ``FLUSHDB`` of that shard
  (what ``clear()`` does), logged as an error. Other processes are told by the invalidation.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import ResponseError

from hacache.endpoint import Command, Replies

if TYPE_CHECKING:
    from hacache.shard import Shard

logger = logging.getLogger("hacache.dropped")


class Repair(NamedTuple):
    cache: str  # the alias(es), for the log
    shard: str
    commands: list[Command]
    keys: dict[str, int]  # the record's entries this repair deletes: key -> stamp
    flush: int  # the blinding it repairs (its stamp), or 0


class DroppedWrites:
    def __init__(
        self,
        max_keys: int,
        publish: Callable[[list[str] | None], Command] | None,
        wait: tuple[int, float],
        grace_copy: Callable[[str], str] | None = None,
    ) -> None:
        self.max_keys = max_keys
        self._grace_copy = grace_copy  # with GRACE, a repair deletes grace copies too
        self._publish = publish
        self._wait = wait
        self._lock = threading.Lock()
        self._stamps = itertools.count(1)
        self.keys: dict[str, str] = {}  # key -> shard name: the hot path's one lookup
        self._by_shard: dict[str, dict[str, int]] = {}  # shard -> {key: stamp}
        self.blind: dict[str, int] = {}  # shard -> stamp of the last blinding
        self.waiting = False  # anything recorded: the hot path's one check

    def hides(self, key: str, shard: Shard) -> bool:
        """Whether ``key`` must read as a miss here (only asked while ``waiting``)."""
        return key in self.keys or shard.name in self.blind

    def record(self, shard: Shard, keys: list[str] | None) -> None:
        """Keys whose write was dropped (None: all keys of the shard, a dropped flush)."""
        name = shard.name
        shard.stats.writes_dropped += 1
        with self._lock:
            entries = self._by_shard.setdefault(name, {})
            if keys is not None and len(entries) + len(keys) <= self.max_keys:
                stamp = next(self._stamps)
                for key in keys:
                    entries[key] = stamp
                    self.keys[key] = name
            elif name not in self.blind:
                why = "a clear() was dropped" if keys is None else "too many writes were dropped"
                logger.error(
                    "hacache: cache %r, shard %r: %s; it reads as empty in this process until it "
                    "answers again, then it is flushed (FLUSHDB), as clear() would",
                    shard.cache,
                    name,
                    why,
                )
                self.blind[name] = next(self._stamps)
            else:
                self.blind[name] = next(self._stamps)
            self.waiting = True

    def repair(self, shard: Shard) -> Repair | None:
        """The commands that undo the record for ``shard``, to send ahead of a write."""
        name = shard.name
        with self._lock:
            entries = self._by_shard.get(name)
            flush = self.blind.get(name, 0)
            if not entries and not flush:
                return None
            keys = dict(entries or {})
        if flush:
            commands: list[Command] = [("FLUSHDB",)]
        else:
            stale = map(self._grace_copy, keys) if self._grace_copy else ()
            commands = [("DEL", *keys, *stale)]
        if self._publish is not None:
            commands.append(self._publish(None if flush else list(keys)))
        replicas, timeout = self._wait
        if replicas:
            commands.append(("WAIT", replicas, max(1, int(timeout * 1000))))
        return Repair(shard.cache, name, commands, keys, flush)

    def repaired(self, repair: Repair, replies: Replies) -> Replies:
        """Strip the repair's replies; forget what it repaired if every part of it worked."""
        count = len(repair.commands)
        head, rest = replies[:count], replies[count:]
        if all(map(_worked, repair.commands, head)):
            self._forget(repair)
        return rest

    def _forget(self, repair: Repair) -> None:
        with self._lock:
            entries = self._by_shard.get(repair.shard, {})
            for key, stamp in repair.keys.items():
                if entries.get(key) == stamp:  # not recorded again since the repair was made
                    del entries[key]
                    del self.keys[key]
            if repair.flush and self.blind.get(repair.shard) == repair.flush:
                logger.warning(
                    "hacache: cache %r, shard %r flushed to repair dropped writes",
                    repair.cache, repair.shard,
                )  # fmt: skip
                del self.blind[repair.shard]
                for key in [k for k, stamp in entries.items() if stamp < repair.flush]:
                    del entries[key]
                    del self.keys[key]
            self.waiting = bool(self.keys or self.blind)

    def __len__(self) -> int:
        return len(self.keys)

    def count(self, shard: str) -> int:
        """Keys recorded for ``shard`` (for the metrics)."""
        return len(self._by_shard.get(shard, ()))


def _worked(command: Command, reply: Any) -> bool:
    if isinstance(reply, Exception):
        # A refused invalidation (ACL, OOM) does not undo the DEL or FLUSHDB before it: kept,
        # the record would hide its keys and delete them again ahead of every later write.
        return command[0] == "EVAL" and isinstance(reply, ResponseError)
    return reply >= command[1] if command[0] == "WAIT" else True
