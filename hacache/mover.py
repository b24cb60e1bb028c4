"""The background mover behind ``manage.py hacache reshard``: after a ring change, moves every
key whose owner changed from its previous owner to its new one, so ``PREVIOUS_LOCATION`` can go.

Invariants:

- each previous shard is walked with ``SCAN`` on its master; a key is moved only from the
  shard that owned it in the previous ring, to the shard that owns it now;
- a move is ``DUMP`` + ``PTTL`` there, then ``RESTORE`` (with the lifetime left, never
  ``REPLACE``) on the new owner: a value already on the new owner was written since the change
  and is newer, so it is kept. Any type moves (hashes, sets...);
- each shard is walked twice: the first pass only copies, the second copies what is new and
  deletes the old copies. So while the mover runs, a moved key is always on its new owner before
  its old copy goes, and a read never misses it in between (migration mode reads the new owner
  first, then the previous one);
- progress (the cursor and counts) is saved on each shard after every batch, so an interrupted
  run resumes where it stopped, from any host; a finished shard is not walked again;
- the rate limit (keys scanned per second) is kept on average, by sleeping between batches;
- this is only right once every process runs with the new ``LOCATION`` (with
  ``PREVIOUS_LOCATION``): a process still on the old ring writes only to the old owners. So
  a run ends with a check pass that moves nothing and says whether any key is left to move:
  when none is, ``PREVIOUS_LOCATION`` can be removed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hacache.extended import glob_escape
from hacache.ops import _ok
from hacache.router import Op

if TYPE_CHECKING:
    from hacache.router import Router
    from hacache.shard import Shard

STATE_PREFIX = "hacache:reshard:"


@dataclass
class ShardProgress:
    shard: str
    cursor: int = 0
    scanned: int = 0
    moved: int = 0
    kept_newer: int = 0  # the new owner already had a value: that one was kept
    deleting: bool = False  # the second pass: old copies are deleted
    done: bool = False


@dataclass
class Summary:
    shards: list[ShardProgress]
    seconds: float
    left_to_move: int | None  # from the check pass (None: not run)

    @property
    def moved(self) -> int:
        return sum(s.moved for s in self.shards)

    def as_dict(self) -> dict[str, Any]:
        rate = self.moved / self.seconds if self.seconds > 0 else 0.0
        return {"shards": [asdict(s) for s in self.shards], "moved": self.moved,
                "seconds": round(self.seconds, 3), "keys_per_second": round(rate, 1),
                "left_to_move": self.left_to_move,
                "previous_location_removable": self.left_to_move == 0}  # fmt: skip


def key_pattern(cache: Any) -> str:
    """Every key of the cache's alias, any version (its KEY_PREFIX, matched literally)."""
    return cache.key_func("*", glob_escape(cache.key_prefix), "*")


class Mover:
    def __init__(self, router: Router, pattern: str, batch: int = 500,
                 rate: float | None = None) -> None:  # fmt: skip
        if router.previous_ring is None:
            raise ValueError("no PREVIOUS_LOCATION: nothing to move")
        self.router, self.pattern, self.batch, self.rate = router, pattern, batch, rate
        rings = [sorted(router.weights.items()), sorted(router.previous_ring.weights.items())]
        digest = hashlib.sha1(repr((rings, pattern)).encode()).hexdigest()[:12]
        self.state_key = STATE_PREFIX + digest  # one per (ring change, pattern)

    def run(self, on_batch: Callable[[ShardProgress, int], None] | None = None,
            restart: bool = False) -> Summary:  # fmt: skip
        """Both passes over every previous shard; ``on_batch(progress, keys_scanned)`` after
        each batch (its progress already saved)."""
        started = time.monotonic()
        shards, scanned = [], 0
        for shard in self.router.previous_shards.values():
            progress = ShardProgress(shard.name) if restart else self._load(shard)
            while not progress.done:
                step = self._step(shard, progress)
                scanned += step
                self._save(shard, progress)
                if on_batch is not None:
                    on_batch(progress, step)
                self._throttle(started, scanned)
            shards.append(progress)
        return Summary(shards, time.monotonic() - started, self.left_to_move())

    def left_to_move(self) -> int:
        """A pass that moves nothing: how many keys still live on a previous owner."""
        left = 0
        for shard in self.router.previous_shards.values():
            cursor = None
            while cursor != 0:
                cursor, keys = self._scan(shard, cursor or 0)
                left += sum(len(group) for group in self._to_move(shard, keys).values())
        return left

    def estimate(self) -> int:
        """Keys on the previous shards (DBSIZE): the progress bar's total."""
        return sum(self.router.run(Op([(s, [("DBSIZE",)])], lambda r: _ok(r[0][0])))
                   for s in self.router.previous_shards.values())  # fmt: skip

    # -- one batch -----------------------------------------------------------------------------

    def _scan(self, shard: Shard, cursor: int) -> tuple[int, list[str]]:
        command = ("SCAN", cursor, "MATCH", self.pattern, "COUNT", self.batch)

        def finish(results: list[list[Any]]) -> tuple[int, list[str]]:
            next_cursor, keys = _ok(results[0][0])
            return int(next_cursor), [k.decode() for k in keys]

        return self.router.run(Op([(shard, [command])], finish))

    def _to_move(self, shard: Shard, keys: list[str]) -> dict[Shard, list[str]]:
        router, ring = self.router, self.router.previous_ring
        groups: dict[Shard, list[str]] = {}
        for key in keys:
            if key.startswith(STATE_PREFIX) or ring.node_for(key) != shard.name:  # type: ignore[union-attr]
                continue  # not this shard's in the previous ring (a copy, or ours)
            owner = router.shards[router.ring.node_for(key)]
            if owner is not shard:
                groups.setdefault(owner, []).append(key)
        return groups

    def _step(self, shard: Shard, progress: ShardProgress) -> int:
        """One SCAN batch and its moves; answers how many keys it scanned."""
        cursor, keys = self._scan(shard, progress.cursor)
        progress.scanned += len(keys)
        for target, group in self._to_move(shard, keys).items():
            if progress.deleting:  # most were copied by the first pass: only delete those
                there = self.router.run(Op([(target, [("EXISTS", k) for k in group])],
                                           lambda r: r[0]))  # fmt: skip
                copied = [k for k, n in zip(group, there, strict=True) if _ok(n)]
                if copied:
                    self.router.run(Op([(shard, [("DEL", *copied)])], lambda r: _ok(r[0][0])))
                group = [k for k, n in zip(group, there, strict=True) if not _ok(n)]
                if not group:
                    continue
            commands = [c for key in group for c in (("DUMP", key), ("PTTL", key))]
            dumps = self.router.run(Op([(shard, commands)], lambda r: r[0]))
            restores, restored = [], []
            for i, key in enumerate(group):
                payload, ttl = _ok(dumps[2 * i]), _ok(dumps[2 * i + 1])
                if payload is None or ttl == -2:
                    continue  # expired or deleted meanwhile
                restores.append(("RESTORE", key, max(ttl, 0), payload))
                restored.append(key)
            if not restores:
                continue
            replies = self.router.run(Op([(target, restores)], lambda r: r[0]))
            for reply in replies:
                if not isinstance(reply, Exception):
                    progress.moved += 1
                elif "BUSYKEY" not in str(reply):
                    raise reply
                else:
                    progress.kept_newer += 1
            if progress.deleting:
                self.router.run(Op([(shard, [("DEL", *restored)])], lambda r: _ok(r[0][0])))
        progress.cursor = cursor
        if cursor == 0:
            progress.done, progress.deleting = progress.deleting, True
        return len(keys)

    # -- saved progress, on each shard ---------------------------------------------------------

    def _load(self, shard: Shard) -> ShardProgress:
        saved = self.router.run(Op([(shard, [("HGETALL", self.state_key)])], lambda r: r[0][0]))
        fields = {saved[i].decode(): int(saved[i + 1]) for i in range(0, len(saved), 2)}
        progress = ShardProgress(shard.name)
        for name, value in asdict(progress).items():
            if name in fields:
                setattr(progress, name, type(value)(fields[name]))
        return progress

    def _save(self, shard: Shard, progress: ShardProgress) -> None:
        fields = [item for name, value in asdict(progress).items() if name != "shard"
                  for item in (name, int(value))]  # fmt: skip
        command = ("HSET", self.state_key, *fields)
        self.router.run(Op([(shard, [command, ("EXPIRE", self.state_key, 30 * 86400)])],
                           lambda r: r))  # fmt: skip

    def _throttle(self, started: float, scanned: int) -> None:
        """Sleep off any lead over ``rate`` keys scanned per second (this run's keys only)."""
        if self.rate:
            ahead = scanned / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
