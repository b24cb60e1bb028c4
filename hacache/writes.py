"""What every write carries besides its own commands, added in the same pipeline: its
``WAIT`` for replicas and the invalidation of the keys it writes; and, once the call is over,
the local eviction of those keys from the near-cache.

Invariants:

- **Nothing is added when nothing is asked**: no near-cache, no publishing and no ``WAIT``
  give back the operation as it was (the common write costs one comparison).
- The added commands' replies are checked and stripped before the operation's own ``finish``
  sees them: it reads exactly the replies of what it sent.
- **A refused invalidation never undoes a write**: a ``PUBLISH`` (or its script) refused by an
  ACL or OOM leaves the write stored and reported as stored; the bus warns once per shard.
- A ``WAIT`` that too few replicas answer raises ``NotReplicated`` (failing open: reports
  nothing stored and records the keys as dropped, since replicas still hold the old value).
- The near-cache evicts the written keys whether the call succeeded or not, and *doubts* them
  when it did not (nothing kept for them until this process's own invalidation comes back, or
  the near-cache's TTL passes): a write that may still land never leaves an older value near.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from redis.exceptions import RedisError, ResponseError

from hacache import counters, failopen
from hacache.endpoint import Command, Replies
from hacache.router import Op, Router
from hacache.stampede import grace_copy


class NotReplicated(RedisError):
    """``WAIT`` timed out: the write reached the master but not enough replicas."""


# Per-call override of WAIT_REPLICAS / WAIT_TIMEOUT: (replicas, timeout in seconds).
_replication: ContextVar[tuple[int, float] | None] = ContextVar("hacache_replication", default=None)


@contextmanager
def wait_for_replicas(replicas: int = 1, timeout: float = 0.1) -> Iterator[None]:
    """Within this block, each write returns only once ``replicas`` replicas have it.

    A write that no enough replicas confirm within ``timeout`` seconds raises ``NotReplicated``
    (or, failing open, reports that nothing was stored). ``replicas=0`` turns it off.
    """
    token = _replication.set((replicas, timeout))
    try:
        yield
    finally:
        _replication.reset(token)


def _deletion(keys: list[str]) -> Command:
    """The deletion of the keys' grace copies (``stampede``)."""
    return ("DEL", *map(grace_copy, keys))


class Upkeep:
    """``ops._write`` is its ``add`` (a bound method: cheaper to call than ``__call__``)."""

    __slots__ = (
        "_bus", "_covers", "_dropped", "_fail_open", "_grace", "_near", "_publish",
        "_socket_timeout", "_wait",
    )  # fmt: skip

    def __init__(self, router: Router) -> None:
        options = router.options
        self._near, self._bus, self._dropped = router.near, router.bus, router.dropped
        self._publish = options.publish_invalidations
        self._covers = options.near_cache.covers if options.near_cache else None
        self._wait = (options.wait_replicas, options.wait_timeout)
        self._fail_open, self._socket_timeout = options.fail_open, options.socket_timeout
        # With GRACE, a write also deletes the key's grace copy (``stampede``): a value it
        # replaced or deleted is never served as the "previous value" afterwards.
        self._grace = options.stampede is not None and options.stampede.grace > 0

    @staticmethod
    def _graced(op: Op, keys_per_batch: list[list[str] | None]) -> Op:
        """Only the grace copies' deletion to add (the lean case): its reply is cut, unread (a
        failed deletion is no reason to fail the write)."""
        batches, graced = [], []
        for (shard, commands), keys in zip(op.batches, keys_per_batch, strict=True):
            if keys:
                commands = [*commands, _deletion(keys)]
            batches.append((shard, commands))
            graced.append(bool(keys))
        finish = op.finish

        def cut(results: list[Replies]) -> Any:
            return finish([r[:-1] if g else r for r, g in zip(results, graced, strict=True)])

        return Op(batches, cut, op.idempotent, op.cleanup, writes=op.writes)

    def add(self, op: Op, keys_per_batch: list[list[str] | None], keep_grace: bool = False) -> Op:
        """Add to each batch the deletion of its keys' grace copies (with GRACE, unless
        ``keep_grace``: stampede's own store), its ``WAIT`` for replicas and the invalidation of
        its keys (None: all keys), checked and stripped before ``op.finish`` sees the replies;
        and the local eviction of those keys once the call is over."""
        override = _replication.get()
        replicas, timeout = override or self._wait
        if override is not None and replicas and timeout >= self._socket_timeout:
            raise ValueError(
                f"wait_for_replicas: timeout {timeout}s is not below SOCKET_TIMEOUT "
                f"({self._socket_timeout}s); the WAIT would time out the socket"
            )
        near, covers = self._near, self._covers
        grace = self._grace and not keep_grace
        if near is None and not self._publish and not replicas:
            return self._graced(op, keys_per_batch) if grace else op
        covered = keys_per_batch  # the keys the near-cache holds: evicted and invalidated
        if covers is not None:
            covered = [keys if keys is None else [k for k in keys if covers(k)] for keys in covered]
        publish = self._bus.publish_command if self._publish else None  # type: ignore[union-attr]
        wait = ("WAIT", replicas, max(1, int(timeout * 1000))) if replicas else None
        writes = op.writes or [None] * len(op.batches)
        batches = []
        checks = []  # (index, shard, commands, extra, written): the batches given extras
        for i, ((shard, commands), keys, near_keys) in enumerate(
            zip(op.batches, keys_per_batch, covered, strict=True)
        ):
            extra: list[Command] = []
            if grace and keys:
                extra.append(_deletion(keys))
            if wait is not None:
                extra.append(wait)
            if publish is not None and (near_keys is None or near_keys):
                extra.append(publish(near_keys))
            if extra:
                checks.append((i, shard, commands, extra, writes[i]))
                commands = [*commands, *extra]
            batches.append((shard, commands))
        if not checks:
            return op
        finish = op.finish
        fail_open, dropped, bus = self._fail_open, self._dropped, self._bus

        def checked(results: list[Replies]) -> Any:
            outcome[0] = True
            results = list(results)
            for i, shard, commands, extra, written in checks:
                replies = results[i]
                cut = len(replies) - len(extra)
                replies, tail = replies[:cut], replies[cut:]
                for command, reply in zip(extra, tail, strict=True):
                    name = command[0]
                    if isinstance(reply, Exception):
                        if name == "DEL":
                            continue  # the grace copy's deletion: no reason to fail the write
                        # A refused invalidation (ACL, OOM) does not undo the write.
                        if name != "EVAL" or not isinstance(reply, ResponseError):
                            raise reply
                        bus.publish_refused(shard, reply)  # type: ignore[union-attr]
                        if counters.refused(reply, "eval"):  # nor will incr have it
                            counters.no_scripts(shard)
                    elif name == "WAIT" and reply < replicas:
                        error = NotReplicated(
                            f"shard {shard.name!r}: {reply} of {replicas} replica(s) "
                            f"confirmed the write within {timeout}s"
                        )
                        empty = failopen.empty_replies(commands) if fail_open else None
                        if empty is None:
                            raise error
                        failopen.log_failure(shard, error)  # reported as not stored
                        dropped.record(shard, written)  # the old value lives on replicas
                        replies = empty
                results[i] = replies
            return finish(results)

        outcome = [False]  # the replies came back (True), or the call raised or failed open
        cleanup = None
        if near is not None:
            if None in covered:
                cleanup = near.flush
            else:
                evicted = [k for keys in covered if keys for k in keys]

                def cleanup() -> None:
                    near.evict(evicted)
                    if not outcome[0]:
                        near.doubt(evicted)

        return Op(batches, checked, op.idempotent, cleanup, writes=op.writes)
