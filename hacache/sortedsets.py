"""Sorted sets, with django-redis's names and return values, as operations on the key's shard.

As for sets (``structures``): members go through the cache's serializer (plain integers stay
raw, as everywhere in hacache; django-redis pickles integer members, which hacache reads but
will not find by value), scores are floats, nothing here publishes a near-cache invalidation
(Redis refuses these commands on a string key) and nothing fails open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hacache.endpoint import Command, Replies
from hacache.ops import _BAD, _first, _ok
from hacache.router import Op


def _score(reply: Any) -> float | None:
    return None if reply is None else float(reply)


class SortedSetOps:
    """Mixed into ``Ops`` with ``StructureOps`` (whose writes it sends): uses its serializer
    and router."""

    __slots__ = ()

    def _zread(self, key: str, command: Command, finish: Callable[[Any], Any]) -> Op:
        return self._read_one(key, [command], lambda r: finish(_first(r)))

    def _zwrite(self, key: str, command: Command, finish: Callable[[Any], Any],
                idempotent: bool = True) -> Op:  # fmt: skip
        return self._structure_write(key, [command], lambda r: finish(_first(r)),
                                     idempotent=idempotent)  # fmt: skip

    def _scored(self, key: str, flat: list[bytes], cast: Callable[[bytes], Any]) -> list[Any]:
        """(member, score) pairs, but those whose member is unreadable (``_member``)."""
        pairs = ((self._member(key, flat[i], _BAD), flat[i + 1]) for i in range(0, len(flat), 2))
        return [(member, cast(score)) for member, score in pairs if member is not _BAD]

    def _ranged(self, key: str, command: Command, withscores: bool, cast: Any) -> Op:
        if withscores:
            return self._zread(key, (*command, "WITHSCORES"), lambda r: self._scored(key, r, cast))
        return self._zread(key, command, lambda r: self._loaded(key, r))

    def zadd(self, key: str, mapping: Mapping[Any, float], flags: Iterable[str]) -> Op:
        flags = tuple(flags)
        pairs = [item for member, score in mapping.items() for item in (score, self._dumps(member))]
        command = ("ZADD", key, *flags, *pairs)
        if "INCR" in flags:
            return self._zwrite(key, command, _score, idempotent=False)
        return self._zwrite(key, command, int)

    def zcard(self, key: str) -> Op:
        return self._zread(key, ("ZCARD", key), int)

    def zcount(self, key: str, low: Any, high: Any) -> Op:
        return self._zread(key, ("ZCOUNT", key, low, high), int)

    def zincrby(self, key: str, amount: float, member: Any) -> Op:
        command = ("ZINCRBY", key, amount, self._dumps(member))
        return self._zwrite(key, command, _score, idempotent=False)

    def zpop(self, key: str, side: str, count: int | None) -> Op:
        """ZPOPMAX or ZPOPMIN: one (member, score) or None; with ``count``, a list."""
        command: Command = (side, key) if count is None else (side, key, count)

        def finish(flat: list[bytes]) -> Any:
            pairs = self._scored(key, flat, float)
            if count is None:
                return pairs[0] if pairs else None
            return pairs

        return self._zwrite(key, command, finish, idempotent=False)

    def zrange(self, key: str, start: int, end: int, desc: bool, withscores: bool,
               cast: Any) -> Op:  # fmt: skip
        command: Command = ("ZRANGE", key, start, end, *(("REV",) if desc else ()))
        return self._ranged(key, command, withscores, cast)

    def zrange_by_score(self, key: str, name: str, low: Any, high: Any, start: int | None,
                        num: int | None, withscores: bool, cast: Any) -> Op:  # fmt: skip
        """ZRANGEBYSCORE (``low``, ``high``) or ZREVRANGEBYSCORE (``high`` first, as Redis)."""
        if (start is None) != (num is None):
            raise ValueError("give both start and num, or neither")
        limit = () if start is None else ("LIMIT", start, num)
        command = (name, key, low, high)
        if withscores:  # WITHSCORES must come before LIMIT
            command = (*command, "WITHSCORES")
            return self._zread(key, (*command, *limit), lambda r: self._scored(key, r, cast))
        return self._ranged(key, (*command, *limit), False, cast)

    def zrevrange(self, key: str, start: int, end: int, withscores: bool, cast: Any) -> Op:
        return self._ranged(key, ("ZREVRANGE", key, start, end), withscores, cast)

    def zrank(self, key: str, member: Any, withscore: bool) -> Op:
        """ZRANK (WITHSCORE: Redis 7.2 and later); while keys rotate, one per signed form."""
        score = ("WITHSCORE",) if withscore else ()
        commands: list[Command] = [("ZRANK", key, f, *score) for f in self._all_forms([member])]

        def finish(results: list[Replies]) -> Any:
            replies = [_ok(reply) for reply in results[0]]
            reply = next((r for r in replies if r is not None), None)
            return [reply[0], float(reply[1])] if withscore and reply is not None else reply

        return self._read_one(key, commands, finish)

    def zrem(self, key: str, members: Iterable[Any]) -> Op:
        return self._zwrite(key, ("ZREM", key, *self._all_forms(members)), int)

    def zremrangebyscore(self, key: str, low: Any, high: Any) -> Op:
        return self._zwrite(key, ("ZREMRANGEBYSCORE", key, low, high), int)

    def zscore(self, key: str, member: Any) -> Op:
        if self._forms is None:
            return self._zread(key, ("ZSCORE", key, self._dumps(member)), _score)
        command = ("ZMSCORE", key, *self._forms(member))  # one score per signed form

        def first(scores: list[Any]) -> float | None:
            return _score(next((score for score in scores if score is not None), None))

        return self._zread(key, command, first)
