"""The near-cache: a bounded, thread-safe LRU of raw Redis values inside the process.

Coherence rests on three rules, enforced here and fed by ``invalidation``:

- A value read from Redis is stored only through a *lease* taken before the read was sent. Any
  invalidation of the key, or a second lease on it, voids the lease, so a reply that raced a
  write is never stored (the reply may be older than the invalidation that overtook it).
- A shard whose subscriber may have missed messages is *untrusted*: its entries are dropped,
  its epoch moves on (voiding its leases) and no lease is granted until the subscriber is back.
- No entry outlives its Redis TTL or ``NEAR_CACHE_TTL``, the last line of defence against
  changes that publish nothing (eviction or expiry inside Redis, writers without hacache).

Values are kept as the raw bytes Redis returned, so every hit deserializes a fresh copy, as
Django's LocMemCache does.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from time import monotonic
from typing import Any

MISS = object()  # not in the near-cache: ask Redis
ABSENT = object()  # known not to exist in Redis (a cached miss)

_ENTRY_OVERHEAD = 120  # bytes per entry beyond key and value: dict slot, list, floats


@dataclass
class NearStats:
    hits: int = 0
    misses: int = 0
    fills: int = 0
    evictions: int = 0  # dropped to respect MAX_ENTRIES / MAX_BYTES
    expirations: int = 0
    invalidations: int = 0  # keys named by invalidation messages from other processes
    gap_flushes: int = 0  # a shard's sequence skipped: its messages were lost
    resubscribe_flushes: int = 0  # the subscriber lost its connection and came back
    refused_fills: int = 0  # a read raced a write (lease voided)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Lease:
    """Permission to store the reply of one read, if nothing changed the key meanwhile."""

    __slots__ = ("done", "epoch", "key", "shard", "token")

    def __init__(self, key: str, shard: str, token: int, epoch: int) -> None:
        self.key, self.shard, self.token, self.epoch = key, shard, token, epoch
        self.done = False


class NearCache:
    def __init__(
        self, shards: Iterable[str], max_entries: int, max_bytes: int, max_ttl: float
    ) -> None:
        self.max_entries, self.max_bytes, self.max_ttl = max_entries, max_bytes, max_ttl
        self.stats = NearStats()
        self._lock = threading.Lock()
        # key -> [value, expires_at, size, shard]
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        self._bytes = 0
        # key -> [token (0 once voided), outstanding leases]
        self._leases: dict[str, list[int]] = {}
        self._tokens = itertools.count(1)
        self._epochs = dict.fromkeys(shards, 0)
        self._trusted = dict.fromkeys(shards, False)
        self._ready = threading.Condition(self._lock)
        # Keys of writes of ours that failed after being sent (a timeout): the server may
        # still run them, later than a read of ours. Not kept near until our own
        # invalidation of them arrives, or for ``max_ttl`` at most.
        self._doubted: dict[str, float] = {}

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The raw value, ``ABSENT`` for a cached miss, or ``MISS``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return MISS
            if entry[1] <= monotonic():
                self._drop(key)
                self.stats.expirations += 1
                self.stats.misses += 1
                return MISS
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry[0]

    def lease(self, key: str, shard: str) -> Lease | None:
        with self._lock:
            if not self._trusted[shard]:
                return None
            if self._doubted and key in self._doubted:
                if self._doubted[key] > monotonic():
                    return None  # a write of ours may still land: keep nothing meanwhile
                del self._doubted[key]
            token = next(self._tokens)
            held = self._leases.get(key)
            if held is None:
                self._leases[key] = [token, 1]
            else:  # two reads in flight: neither can tell which reply is newer
                held[0] = 0
                held[1] += 1
            return Lease(key, shard, token, self._epochs[shard])

    def fill(self, lease: Lease, value: Any, ttl_ms: int) -> None:
        """Store a read's reply: ``value`` is the raw bytes or ``ABSENT``; ``ttl_ms`` is PTTL."""
        with self._lock:
            if not self._release(lease):
                self.stats.refused_fills += 1
                return
            if ttl_ms >= 0:
                ttl = min(self.max_ttl, ttl_ms / 1000)
            elif ttl_ms == -1 or value is ABSENT:  # no expiry, or a miss (PTTL -2)
                ttl = self.max_ttl
            else:
                return  # the value expired between the GET and the PTTL: nothing to keep
            if ttl <= 0:
                return
            size = _ENTRY_OVERHEAD + len(lease.key) + (len(value) if value is not ABSENT else 0)
            if size > self.max_bytes:
                return
            if lease.key in self._entries:
                self._drop(lease.key)
            self._entries[lease.key] = [value, monotonic() + ttl, size, lease.shard]
            self._bytes += size
            self.stats.fills += 1
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
                self.stats.evictions += 1

    def release(self, lease: Lease) -> None:
        """Give back a lease whose read failed or was not stored."""
        if not lease.done:
            with self._lock:
                self._release(lease)

    def _release(self, lease: Lease) -> bool:
        """Under the lock: give the lease back; True if it is still valid to store under."""
        if lease.done:
            return False
        lease.done = True
        held = self._leases.get(lease.key)
        if held is None:
            return False
        valid = held[0] == lease.token and self._epochs[lease.shard] == lease.epoch
        held[1] -= 1
        if held[1] == 0:
            del self._leases[lease.key]
        return valid and self._trusted[lease.shard]

    # -- invalidation ----------------------------------------------------------------------

    def evict(self, keys: Iterable[str], *, remote: bool = False) -> None:
        with self._lock:
            for key in keys:
                if key in self._entries:
                    self._drop(key)
                held = self._leases.get(key)
                if held is not None:
                    held[0] = 0
                if remote:
                    self.stats.invalidations += 1

    def doubt(self, keys: Iterable[str]) -> None:
        """Our write of these keys failed after it was sent: it may still run."""
        until = monotonic() + self.max_ttl
        with self._lock:
            for key in keys:
                self._doubted[key] = until

    def own_invalidation(self, keys: Iterable[str]) -> None:
        """Our own invalidation came back: it only matters for keys in doubt."""
        if self._doubted:
            with self._lock:
                doubted = [key for key in keys if self._doubted.pop(key, None) is not None]
            self.evict(doubted)

    def flush(self, shard: str | None = None) -> None:
        """Drop one shard's entries (all shards: ``None``) and void their leases."""
        with self._lock:
            self._flush(shard)

    def _flush(self, shard: str | None) -> None:
        shards = list(self._epochs) if shard is None else [shard]
        for name in shards:
            self._epochs[name] += 1
        if shard is None:
            self._entries.clear()
            self._bytes = 0
        else:
            for key in [k for k, e in self._entries.items() if e[3] == shard]:
                self._drop(key)

    def untrust(self, shard: str) -> None:
        """The shard's subscriber may have missed messages: stop serving and storing its keys."""
        with self._lock:
            self._trusted[shard] = False
            self._flush(shard)

    def trust(self, shard: str) -> None:
        """The subscriber is listening again: start afresh for this shard."""
        with self._lock:
            self._flush(shard)
            self._trusted[shard] = True
            self._ready.notify_all()

    def trusted(self, shard: str) -> bool:
        return self._trusted[shard]

    def wait_trusted(self, timeout: float) -> bool:
        """Until every shard's subscriber is listening (tests, warm-up); False on timeout."""
        with self._ready:
            return self._ready.wait_for(lambda: all(self._trusted.values()), timeout)

    def reset(self) -> None:
        """After fork: nothing inherited can be trusted, no subscriber runs yet."""
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._entries.clear()
        self._leases.clear()
        self._doubted.clear()
        self._bytes = 0
        for shard in self._epochs:
            self._epochs[shard] += 1
            self._trusted[shard] = False

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry[2]

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes
