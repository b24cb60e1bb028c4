"""The consistent-hash ring that maps a cache key to a shard name.

Placement depends only on shard *names* and weights, never on their order or addresses, so
reordering ``LOCATION`` or changing a password or db number moves no keys. Two placements:

- ``consistent`` (default): ``vnodes * weight`` points per shard, each the first 8 bytes of
  ``md5("name-i")``; keys hash to the first 8 bytes of ``md5(key)``. 64-bit points make
  collisions negligible and the vnode count tunes balance against ring size.
- ``ketama``: the continuum twemproxy and libmemcached build (160 points per shard scaled by
  weight, four little-endian 32-bit points per md5 digest of ``"name-i"``), with md5 or
  twemproxy's ``fnv1a_64`` as the key hash, so a mixed fleet agrees on where a key lives.

With hash tags on, only the part between the first ``{`` and the next ``}`` is hashed when it is
not empty (Redis Cluster's rule), so related keys can share a shard.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from hashlib import md5

DEFAULT_VNODES = 160
# Bounds that keep the ring small: building it hashes every point once per process, about
# 1.5 s and 27 MB for MAX_RING_POINTS on a slow 2-core machine (1,000,000 points: 4-11 s, 130 MB).
MAX_RING_POINTS = 200_000
MAX_VNODES = 10_000
MAX_WEIGHT = 1_000  # only the ratios of weights matter
MEMO_SIZE = 16_384  # keys whose placement is remembered (about 2 MB at most)
KETAMA_POINTS_PER_SHARD = 160

_UINT64 = struct.Struct(">Q")
_FOUR_UINT32_LE = struct.Struct("<4I")


def md5_64(data: bytes) -> int:
    return _UINT64.unpack_from(md5(data).digest())[0]


def md5_32(data: bytes) -> int:
    """Ketama's key hash: the first four digest bytes, little-endian."""
    return _FOUR_UINT32_LE.unpack(md5(data).digest())[0]


def fnv1a_64(data: bytes) -> int:
    """twemproxy's ``fnv1a_64``: really a 32-bit FNV-1a with the 64-bit constants truncated.

    twemproxy reads key bytes as signed ``char``, so bytes >= 0x80 are sign-extended first.
    """
    h = 0x84222325
    for byte in data:
        h ^= byte if byte < 0x80 else byte | 0xFFFFFF00
        h = (h * 0x1B3) & 0xFFFFFFFF
    return h


KETAMA_KEY_HASHES: dict[str, Callable[[bytes], int]] = {"md5": md5_32, "fnv1a_64": fnv1a_64}


def _float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _ketama_points(name: str, weight: int, total_weight: int, shard_count: int) -> list[int]:
    # Reproduce the C code's single-precision arithmetic so the point count matches exactly.
    pct = _float32(_float32(weight) / _float32(total_weight))
    scaled = _float32(_float32(_float32(pct * KETAMA_POINTS_PER_SHARD) / 4) * shard_count)
    digests = int(scaled + 0.0000000001)
    points = []
    for i in range(digests):
        points.extend(_FOUR_UINT32_LE.unpack(md5(f"{name}-{i}".encode()).digest()))
    return points


def _consistent_points(name: str, weight: int, vnodes: int) -> list[int]:
    return [md5_64(f"{name}-{i}".encode()) for i in range(vnodes * weight)]


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster would hash: the first non-empty ``{...}``, else all."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


class HashRing:
    """An immutable ring: build a new one to add or remove shards."""

    __slots__ = ("_hash", "_hash_tags", "_memo", "_owners", "_points", "weights")

    def __init__(
        self,
        weights: Mapping[str, int] | Iterable[str],
        *,
        placement: str = "consistent",
        vnodes: int = DEFAULT_VNODES,
        key_hash: str = "md5",
        hash_tags: bool = False,
    ) -> None:
        if not isinstance(weights, Mapping):
            weights = dict.fromkeys(weights, 1)
        if not weights:
            raise ValueError("a hash ring needs at least one shard")
        if any(not 1 <= w <= MAX_WEIGHT for w in weights.values()):
            raise ValueError(f"shard weights must be integers from 1 to {MAX_WEIGHT}")
        self.weights = dict(weights)
        total = sum(self.weights.values())
        pairs: list[tuple[int, str]] = []
        if placement == "consistent":
            if not 1 <= vnodes <= MAX_VNODES:
                raise ValueError(f"vnodes must be an integer from 1 to {MAX_VNODES}")
            if vnodes * total > MAX_RING_POINTS:
                raise ValueError(f"{vnodes * total:,} ring points, at most {MAX_RING_POINTS:,}")
            self._hash = md5_64
            for name, weight in self.weights.items():
                pairs.extend((p, name) for p in _consistent_points(name, weight, vnodes))
        elif placement == "ketama":
            hash_bytes = KETAMA_KEY_HASHES[key_hash]
            # twemproxy sends an empty key to hash 0 without hashing it.
            self._hash = lambda data: hash_bytes(data) if data else 0
            for name, weight in self.weights.items():
                points = _ketama_points(name, weight, total, len(self.weights))
                pairs.extend((p, name) for p in points)
        else:
            raise ValueError(f"unknown placement {placement!r}")
        # Ties (rare) are broken by name so every process builds the same ring.
        pairs.sort()
        self._points = [p for p, _ in pairs]
        self._owners = [n for _, n in pairs]
        self._hash_tags = hash_tags
        # Hashing costs most of a lookup; hot keys repeat. Emptied when full: no LRU upkeep.
        self._memo: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.weights)

    def key_hash(self, key: str) -> int:
        if self._hash_tags:
            key = hash_tag(key)
        return self._hash(key.encode())

    def node_for(self, key: str) -> str:
        """The shard that owns ``key``: the first point at or after its hash, wrapping round."""
        node = self._memo.get(key)
        if node is None:
            i = bisect_left(self._points, self.key_hash(key))
            node = self._owners[i if i < len(self._points) else 0]
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = node
        return node
