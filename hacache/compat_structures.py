"""django-redis's hash, set and sorted-set methods on ``HACache`` (see ``compat``).

Each key's structure lives whole on the key's shard (``structures``, ``sortedsets``); the
operations on several sets gather across shards where they can (see ``structures`` for the
rule per operation).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from hacache.compat import Plan, _pair, _plans
from hacache.router import Op


class StructuresAPI:
    """Mixed into ``HACache`` with ``DjangoRedisAPI`` (whose drivers run the plans here)."""

    # -- hashes --------------------------------------------------------------------------------

    def hset(self, key: Any, field: Any = None, value: Any = None, mapping: Any = None,
             version: int | None = None) -> Op:  # fmt: skip
        """Set one field (and/or a mapping of fields); answers how many fields were added."""
        return self._ops.hset(self._key(key, version), field, value, mapping)

    def hget(self, key: Any, field: Any, default: Any = None, version: int | None = None) -> Op:
        return self._ops.hget(self._key(key, version), field, default)

    def hgetall(self, key: Any, version: int | None = None) -> Op:
        return self._ops.hgetall(self._key(key, version))

    def hdel(self, key: Any, *fields: Any, version: int | None = None) -> Op:
        return self._ops.hdel(self._key(key, version), fields)

    def hlen(self, key: Any, version: int | None = None) -> Op:
        return self._ops.hlen(self._key(key, version))

    def hkeys(self, key: Any, version: int | None = None) -> Op:
        return self._ops.hkeys(self._key(key, version))

    def hexists(self, key: Any, field: Any, version: int | None = None) -> Op:
        return self._ops.hexists(self._key(key, version), field)

    hset, ahset = _pair(hset)
    hget, ahget = _pair(hget)
    hgetall, ahgetall = _pair(hgetall)
    hdel, ahdel = _pair(hdel)
    hlen, ahlen = _pair(hlen)
    hkeys, ahkeys = _pair(hkeys)
    hexists, ahexists = _pair(hexists)

    # -- sets ----------------------------------------------------------------------------------

    def sadd(self, key: Any, *values: Any, version: int | None = None) -> Op:
        return self._ops.sadd(self._key(key, version), values)

    def srem(self, key: Any, *members: Any, version: int | None = None) -> Op:
        return self._ops.srem(self._key(key, version), members)

    def smembers(self, key: Any, version: int | None = None) -> Op:
        return self._ops.smembers(self._key(key, version))

    def scard(self, key: Any, version: int | None = None) -> Op:
        return self._ops.scard(self._key(key, version))

    def sismember(self, key: Any, member: Any, version: int | None = None) -> Op:
        return self._ops.sismember(self._key(key, version), member)

    def smismember(self, key: Any, *members: Any, version: int | None = None) -> Op:
        return self._ops.smismember(self._key(key, version), members)

    def spop(self, key: Any, count: int | None = None, version: int | None = None) -> Op:
        return self._ops.spop(self._key(key, version), count)

    def srandmember(self, key: Any, count: int | None = None, version: int | None = None) -> Op:
        return self._ops.srandmember(self._key(key, version), count)

    def smove(self, source: Any, destination: Any, member: Any,
              version: int | None = None) -> Plan:  # fmt: skip
        """Atomic on one shard; across shards two steps (see ``structures``)."""
        src, dst = self._key(source, version), self._key(destination, version)
        op = self._ops.smove(src, dst, member)
        if op is not None:
            return (yield op)
        if not (yield self._ops.srem(src, [member])):
            return False
        try:
            yield self._ops.sadd(dst, [member])
        except Exception:
            yield self._ops.sadd(src, [member])  # put it back: a member is never dropped
            raise
        return True

    def sdiff(self, *keys: Any, version: int | None = None) -> Op:
        return self._ops.combine("SDIFF", [self._key(k, version) for k in keys])

    def sinter(self, *keys: Any, version: int | None = None) -> Op:
        return self._ops.combine("SINTER", [self._key(k, version) for k in keys])

    def sunion(self, *keys: Any, version: int | None = None) -> Op:
        return self._ops.combine("SUNION", [self._key(k, version) for k in keys])

    sadd, asadd = _pair(sadd)
    srem, asrem = _pair(srem)
    smembers, asmembers = _pair(smembers)
    scard, ascard = _pair(scard)
    sismember, asismember = _pair(sismember)
    smismember, asmismember = _pair(smismember)
    spop, aspop = _pair(spop)
    srandmember, asrandmember = _pair(srandmember)
    sdiff, asdiff = _pair(sdiff)
    sinter, asinter = _pair(sinter)
    sunion, asunion = _pair(sunion)

    def _store(self, name: str, destination: str, keys: list[str]) -> Plan:
        """``name``STORE: one command on one shard, else gathered here and written."""
        op = self._ops.combine_store(name, destination, keys)
        if op is not None:
            return (yield op)
        members = yield self._ops.combine(name, keys)
        return (yield self._ops.replace_set(destination, members))

    def sdiffstore(self, dest: Any, *keys: Any, version_dest: int | None = None,
                   version_keys: int | None = None) -> Plan:  # fmt: skip
        made = [self._key(k, version_keys) for k in keys]
        return (yield from self._store("SDIFF", self._key(dest, version_dest), made))

    def sinterstore(self, dest: Any, *keys: Any, version: int | None = None) -> Plan:
        made = [self._key(k, version) for k in keys]
        return (yield from self._store("SINTER", self._key(dest, version), made))

    def sunionstore(self, dest: Any, *keys: Any, version: int | None = None) -> Plan:
        made = [self._key(k, version) for k in keys]
        return (yield from self._store("SUNION", self._key(dest, version), made))

    sdiffstore, asdiffstore = _plans(sdiffstore)
    smove, asmove = _plans(smove)
    sinterstore, asinterstore = _plans(sinterstore)
    sunionstore, asunionstore = _plans(sunionstore)

    def _sscan_plan(self, key: str, match: Any, count: int | None) -> Plan:
        if match is not None:
            match = self._ops._dumps(match)  # members are stored serialized
        cursor = 0
        while True:
            cursor, members = yield self._ops.sscan(key, cursor, match, count)
            yield members
            if cursor == 0:
                return

    def sscan_iter(self, key: Any, match: Any = None, count: int | None = 10,
                   version: int | None = None) -> Iterator[Any]:  # fmt: skip
        """The set's members (matching ``match``), lazily."""
        return self._walk(self._sscan_plan(self._key(key, version), match, count))

    def asscan_iter(self, key: Any, match: Any = None, count: int | None = 10,
                    version: int | None = None) -> AsyncIterator[Any]:  # fmt: skip
        return self._awalk(self._sscan_plan(self._key(key, version), match, count))

    def sscan(self, key: Any, match: Any = None, count: int | None = 10,
              version: int | None = None) -> set[Any]:  # fmt: skip
        """Every member (matching ``match``) as a set, by SSCAN steps."""
        return set(self.sscan_iter(key, match, count, version))

    async def asscan(self, key: Any, match: Any = None, count: int | None = 10,
                     version: int | None = None) -> set[Any]:  # fmt: skip
        return {m async for m in self.asscan_iter(key, match, count, version)}

    # -- sorted sets ---------------------------------------------------------------------------

    def zadd(self, key: Any, mapping: dict[Any, float], nx: bool = False, xx: bool = False,
             ch: bool = False, incr: bool = False, gt: bool = False, lt: bool = False,
             version: int | None = None) -> Op:  # fmt: skip
        """Add members with their scores: how many were added (changed, with ``ch``); with
        ``incr``, the one member's new score."""
        given = {"NX": nx, "XX": xx, "GT": gt, "LT": lt, "CH": ch, "INCR": incr}
        flags = [flag for flag, on in given.items() if on]
        return self._ops.zadd(self._key(key, version), mapping, flags)

    def zcard(self, key: Any, version: int | None = None) -> Op:
        return self._ops.zcard(self._key(key, version))

    def zcount(self, key: Any, min: Any, max: Any, version: int | None = None) -> Op:
        return self._ops.zcount(self._key(key, version), min, max)

    def zincrby(self, key: Any, amount: float, value: Any, version: int | None = None) -> Op:
        return self._ops.zincrby(self._key(key, version), amount, value)

    def zpopmax(self, key: Any, count: int | None = None, version: int | None = None) -> Op:
        return self._ops.zpop(self._key(key, version), "ZPOPMAX", count)

    def zpopmin(self, key: Any, count: int | None = None, version: int | None = None) -> Op:
        return self._ops.zpop(self._key(key, version), "ZPOPMIN", count)

    def zrange(self, key: Any, start: int, end: int, desc: bool = False,
               withscores: bool = False, score_cast_func: Any = float,
               version: int | None = None) -> Op:  # fmt: skip
        return self._ops.zrange(self._key(key, version), start, end, desc, withscores,
                                score_cast_func)  # fmt: skip

    def zrangebyscore(self, key: Any, min: Any, max: Any, start: int | None = None,
                      num: int | None = None, withscores: bool = False,
                      score_cast_func: Any = float, version: int | None = None) -> Op:  # fmt: skip
        return self._ops.zrange_by_score(self._key(key, version), "ZRANGEBYSCORE", min, max,
                                         start, num, withscores, score_cast_func)  # fmt: skip

    def zrevrange(self, key: Any, start: int, end: int, withscores: bool = False,
                  score_cast_func: Any = float, version: int | None = None) -> Op:  # fmt: skip
        return self._ops.zrevrange(self._key(key, version), start, end, withscores,
                                   score_cast_func)  # fmt: skip

    def zrevrangebyscore(self, key: Any, max: Any, min: Any, start: int | None = None,
                         num: int | None = None, withscores: bool = False,
                         score_cast_func: Any = float,
                         version: int | None = None) -> Op:  # fmt: skip
        return self._ops.zrange_by_score(self._key(key, version), "ZREVRANGEBYSCORE", max, min,
                                         start, num, withscores, score_cast_func)  # fmt: skip

    def zrank(self, key: Any, value: Any, withscore: bool = False,
              version: int | None = None) -> Op:  # fmt: skip
        return self._ops.zrank(self._key(key, version), value, withscore)

    def zrem(self, key: Any, *values: Any, version: int | None = None) -> Op:
        return self._ops.zrem(self._key(key, version), values)

    def zremrangebyscore(self, key: Any, min: Any, max: Any,
                         version: int | None = None) -> Op:  # fmt: skip
        return self._ops.zremrangebyscore(self._key(key, version), min, max)

    def zscore(self, key: Any, value: Any, version: int | None = None) -> Op:
        return self._ops.zscore(self._key(key, version), value)

    zadd, azadd = _pair(zadd)
    zcard, azcard = _pair(zcard)
    zcount, azcount = _pair(zcount)
    zincrby, azincrby = _pair(zincrby)
    zpopmax, azpopmax = _pair(zpopmax)
    zpopmin, azpopmin = _pair(zpopmin)
    zrange, azrange = _pair(zrange)
    zrangebyscore, azrangebyscore = _pair(zrangebyscore)
    zrevrange, azrevrange = _pair(zrevrange)
    zrevrangebyscore, azrevrangebyscore = _pair(zrevrangebyscore)
    zrank, azrank = _pair(zrank)
    zrem, azrem = _pair(zrem)
    zremrangebyscore, azremrangebyscore = _pair(zremrangebyscore)
    zscore, azscore = _pair(zscore)
