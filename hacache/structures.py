"""Hashes and sets, django-redis's names and return values, as operations on the ring.

Each key's hash or set lives whole on the key's shard. Values and members go through the
cache's serializer (so ``smembers`` gives back what ``sadd`` was given); hash fields stay as
they are, strings, as django-redis keeps them. None of these writes publishes a near-cache
invalidation: they cannot change a value ``get`` reads (Redis refuses them on a string key),
except the ``*store`` forms, which replace a destination of any type, so they do publish. None
of them fails open either (see ``failopen``): a made-up empty answer would be taken as true.

Across shards, the rule per operation (documented in the README):

- ``sdiff``, ``sinter``, ``sunion`` gather each key's members from its shard in one round
  trip and combine them here: they work whatever shards the keys live on;
- ``sdiffstore``, ``sinterstore``, ``sunionstore`` do the same, then replace the destination
  on its shard: they work, but are not atomic when the keys span shards;
- ``smove`` is one atomic SMOVE on one shard; across shards it is two steps, SREM from the
  source then SADD to the destination (put back in the source if that fails): the member is
  briefly in neither set, never in both, and lost only if both shards fail at that moment.
  Put both keys on one shard with hash tags for the atomic form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hacache.endpoint import Command, Replies
from hacache.ops import _BAD, _first, _ok
from hacache.router import Op

if TYPE_CHECKING:
    from hacache.shard import Shard


def _text(field: Any) -> Any:
    return field.decode() if isinstance(field, bytes) else field


def _where(key: str, field: Any) -> bytes:
    """A hash value's signing context: its key and its field, as redis-py sends the field."""
    if isinstance(field, str):
        field = field.encode()
    elif not isinstance(field, bytes):
        field = repr(field).encode()  # redis-py's encoding of an int or a float
    return b"%s\0%s" % (key.encode(), field)


def _pairs(flat: list[Any]) -> Any:
    return zip(flat[::2], flat[1::2], strict=True)


_COMBINE = {
    "SDIFF": lambda first, others: first.difference(*others),
    "SINTER": lambda first, others: first.intersection(*others),
    "SUNION": lambda first, others: first.union(*others),
}


class StructureOps:
    """Mixed into ``Ops``: uses its serializer, router and write helpers."""

    __slots__ = ()

    # -- hashes ------------------------------------------------------------------------------

    def hset(self, key: str, field: Any, value: Any, mapping: Mapping[Any, Any] | None) -> Op:
        dump = self._dump  # a hash's values are signed for its key and their field
        pairs: list[Any] = [] if field is None else [field, dump(key, value, _where(key, field))]
        for name, item in (mapping or {}).items():
            pairs += (name, dump(key, item, _where(key, name)))
        if not pairs:
            raise ValueError("hset needs a field and value, or a mapping")
        return self._structure_write(key, [("HSET", key, *pairs)], lambda r: int(_first(r)))

    def hget(self, key: str, field: Any, default: Any) -> Op:
        def finish(results: list[Replies]) -> Any:
            value = _first(results)
            return default if value is None else self._load(key, value, default, where)

        where = _where(key, field)
        return self._read_one(key, [("HGET", key, field)], finish)

    def hgetall(self, key: str) -> Op:
        """Every field, but those whose value is unreadable (see ``Ops._load``)."""

        def finish(results: list[Replies]) -> dict[str, Any]:
            flat = _first(results)
            pairs = ((f, self._load(key, v, _BAD, _where(key, f))) for f, v in _pairs(flat))
            return {_text(f): v for f, v in pairs if v is not _BAD}

        return self._read_one(key, [("HGETALL", key)], finish)

    def hdel(self, key: str, fields: tuple[Any, ...]) -> Op:
        return self._structure_write(key, [("HDEL", key, *fields)], lambda r: int(_first(r)))

    def hlen(self, key: str) -> Op:
        return self._read_one(key, [("HLEN", key)], lambda r: int(_first(r)))

    def hkeys(self, key: str) -> Op:
        return self._read_one(key, [("HKEYS", key)], lambda r: [_text(f) for f in _first(r)])

    def hexists(self, key: str, field: Any) -> Op:
        return self._read_one(key, [("HEXISTS", key, field)], lambda r: bool(_first(r)))

    # -- sets --------------------------------------------------------------------------------

    def sadd(self, key: str, members: Iterable[Any]) -> Op:
        command = ("SADD", key, *map(self._dumps, members))
        return self._structure_write(key, [command], lambda r: int(_first(r)))

    def srem(self, key: str, members: Iterable[Any]) -> Op:
        command = ("SREM", key, *self._all_forms(members))
        return self._structure_write(key, [command], lambda r: int(_first(r)))

    def smembers(self, key: str) -> Op:
        return self._read_one(key, [("SMEMBERS", key)], lambda r: self._members(key, _first(r)))

    def scard(self, key: str) -> Op:
        return self._read_one(key, [("SCARD", key)], lambda r: int(_first(r)))

    def sismember(self, key: str, member: Any) -> Op:
        if self._forms is not None:
            command = ("SMISMEMBER", key, *self._forms(member))
            return self._read_one(key, [command], lambda r: any(_first(r)))
        command = ("SISMEMBER", key, self._dumps(member))
        return self._read_one(key, [command], lambda r: bool(_first(r)))

    def smismember(self, key: str, members: Iterable[Any]) -> Op:
        if self._forms is None:
            command = ("SMISMEMBER", key, *map(self._dumps, members))
            return self._read_one(key, [command], lambda r: [bool(v) for v in _first(r)])
        forms = [self._forms(member) for member in members]  # an integer has only one
        command = ("SMISMEMBER", key, *(form for each in forms for form in each))

        def finish(results: list[Replies]) -> list[bool]:
            found = iter(_first(results))
            return [any([next(found) for _ in each]) for each in forms]

        return self._read_one(key, [command], finish)

    def spop(self, key: str, count: int | None) -> Op:
        command: Command = ("SPOP", key) if count is None else ("SPOP", key, count)

        def finish(results: list[Replies]) -> Any:
            reply = _first(results)
            if count is not None:
                return self._members(key, reply or [])
            return None if reply is None else self._member(key, reply, None)

        return self._structure_write(key, [command], finish, idempotent=False)

    def srandmember(self, key: str, count: int | None) -> Op:
        command: Command = ("SRANDMEMBER", key) if count is None else ("SRANDMEMBER", key, count)

        def finish(results: list[Replies]) -> Any:
            reply = _first(results)
            if count is not None:
                return self._loaded(key, reply or [])
            return None if reply is None else self._member(key, reply, None)

        return self._read_one(key, [command], finish)

    def sscan(self, key: str, cursor: int, match: Any, count: int | None) -> Op:
        """One step: (next cursor, members). The cursor belongs to the master it came from."""
        command: list[Any] = ["SSCAN", key, cursor]
        if match is not None:
            command += ("MATCH", match)
        if count is not None:
            command += ("COUNT", count)

        def finish(results: list[Replies]) -> tuple[int, set[Any]]:
            next_cursor, members = _first(results)
            return int(next_cursor), self._members(key, members)

        # Not readonly: a cursor is only meaningful to the server that made it.
        return Op([(self._router.shard_for(key), [tuple(command)])], finish)

    def smove(self, source: str, destination: str, member: Any) -> Op | None:
        """SMOVE when both sets live on one shard; None when they do not (see the module)."""
        shard = self._router.shard_for(source)
        if self._router.shard_for(destination) is not shard:
            return None
        forms = self._forms(member) if self._forms is not None else [self._dumps(member)]
        commands: list[Command] = [("SMOVE", source, destination, form) for form in forms]
        return self._structure_write(source, commands, lambda r: any(r[0]), idempotent=False)

    def combine(self, name: str, keys: list[str]) -> Op:
        """SDIFF, SINTER or SUNION of ``keys`` wherever they live, as a Python set."""
        groups = self._router.group(keys)
        if len(groups) == 1:
            ((shard, _),) = groups.items()

            def members(results: list[Replies]) -> set[Any]:
                return self._members(keys[0], _first(results))

            return Op([(shard, [(name, *keys)])], members, readonly=True)
        return self._gather(keys, groups, lambda sets: _COMBINE[name](sets[0], sets[1:]))

    def combine_store(self, name: str, destination: str, keys: list[str]) -> Op | None:
        """``name``STORE on one shard as one command; None when the keys span shards (the
        caller then runs ``combine`` and ``replace_set``)."""
        groups = self._router.group([destination, *keys])
        if len(groups) > 1:
            return None
        command = (name + "STORE", destination, *keys)
        return self._structure_write(destination, [command], lambda r: int(_first(r)), True)

    def replace_set(self, destination: str, members: set[Any]) -> Op:
        """The destination becomes exactly ``members`` (one MULTI on its shard)."""
        commands: list[Command] = [("MULTI",), ("DEL", destination)]
        if members:
            commands.append(("SADD", destination, *map(self._dumps, members)))
        commands.append(("EXEC",))
        return self._structure_write(destination, commands, lambda r: len(members), True)

    # -- helpers -----------------------------------------------------------------------------

    def _all_forms(self, members: Iterable[Any]) -> list[Any]:
        """Each member as stored, under every signing key while keys rotate (``variants``):
        what removes a member or finds it by value whichever key signed it."""
        if self._forms is None:
            return list(map(self._dumps, members))
        return [form for member in members for form in self._forms(member)]

    def _member(self, key: str, data: bytes, default: Any) -> Any:
        """A member of ``key``'s set or sorted set, or ``default`` if it is unreadable (a
        warning, or raises: see ``Ops._unreadable``); members are signed with no context."""
        try:
            return self._loads(data)
        except Exception as exc:
            return self._unreadable(key, data, exc, default, member=True)

    def _loaded(self, key: str, raw: Iterable[bytes]) -> list[Any]:
        """The readable ones of ``raw``, in order."""
        return [v for v in (self._member(key, data, _BAD) for data in raw) if v is not _BAD]

    def _members(self, key: str, raw: Iterable[bytes]) -> set[Any]:
        return set(self._loaded(key, raw))

    def _gather(self, keys: list[str], groups: dict[Shard, list[str]], combine: Any) -> Op:
        """Every key's members in one round trip (SMEMBERS per key, per shard's pipeline)."""
        batches = [(shard, [("SMEMBERS", key) for key in group]) for shard, group in groups.items()]

        def finish(results: list[Replies]) -> set[Any]:
            found: dict[str, set[Any]] = {}
            for (_, group), replies in zip(groups.items(), results, strict=True):
                for key, reply in zip(group, replies, strict=True):
                    found[key] = self._members(key, _ok(reply))
            return combine([found[key] for key in keys])

        return Op(batches, finish, readonly=True)

    def _structure_write(
        self, key: str, commands: list[Command], finish: Any, publish: bool = False,
        idempotent: bool = True,
    ) -> Op:  # fmt: skip
        """A write to ``key``'s shard; with ``publish``, it also invalidates the key (it may
        have replaced a value the near-cache holds)."""
        if publish:
            return self._write_one(key, commands, finish, idempotent)
        return Op([(self._router.shard_for(key), commands)], finish, idempotent)
