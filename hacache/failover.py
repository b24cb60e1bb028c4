"""The failure policy: every decision about a failing server, written once for sync and async.

Sans-I/O: the plans here are generators that yield actions (``Start`` a pipeline, ``Finish``
reading it, wait until one of several is ``Ready``, ...) and get each action's outcome back;
``driver`` carries them out with blocking sockets or with asyncio, and decides nothing.

What the plans keep:

- **A read is answered while any server of its shard answers.** It goes to the master (or a
  replica with ``READ_FROM_REPLICAS``); one that has not answered after ``HEDGE_DELAY`` is also
  sent to a replica and the first reply wins; a failed one is retried on the usable replicas,
  then on a new master. Reads never wait for a promotion.
- **A write goes only to a master that no sentinel reports down**, and is replayed only where
  that is safe: it is idempotent, never reached the server, or was refused with ``READONLY``
  (a demoted master writes nothing). It may wait up to ``FAILOVER_TIMEOUT`` for a promotion.
- **A reply from a replica is returned but never kept** in the near-cache (it may lag).
- **Breakers** open after repeated failures of a server (at once when nothing listens); local
  shortages (``PoolExhausted``) and slow replies that lost a hedge never count against one.
- **Failing open**, a failed shard answers as an empty server would, and the keys of every
  write it dropped are recorded (``dropped``) before the call returns, so this process never
  reads back an older value; the record is repaired on the shard's next successful call.
- Every shard's request of a multi-shard call is sent before any reply is awaited.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hacache import sizelimit
from hacache.actions import CloseIdle, Discard, Discover, Finish, Plan, Ready, Start, WaitFor
from hacache.endpoint import BreakerOpen, Command, Endpoint, Pending, Replies
from hacache.failopen import empty_replies, log_failure
from hacache.pool import PoolExhausted

if TYPE_CHECKING:
    from hacache.router import Op, Router
    from hacache.shard import Shard, View

logger = logging.getLogger("hacache.failover")


class MasterDown(RedisConnectionError):
    """A sentinel reports the shard's master down: writes are held back from it."""


# -- one pipeline on one endpoint -----------------------------------------------------------


def _stale(pending: Pending, error: RedisError) -> bool:
    # A connection that sat idle may have been closed by a server restart: the first use
    # fails at once with a connection error. A timeout is a live problem, not staleness.
    return (
        pending.reused
        and isinstance(error, RedisConnectionError)
        and not isinstance(error, (RedisTimeoutError, PoolExhausted))
    )


def _refused(error: BaseException) -> bool:
    """Nothing listens at the address: no point in trying it again before the cooldown."""
    return isinstance(error.__context__, ConnectionRefusedError)


def read_only(replies: Replies) -> ReadOnlyError | None:
    """A READONLY reply, wherever it stands: this server is no longer a master."""
    for reply in replies:
        if reply.__class__ is ReadOnlyError:
            return reply
    return None


def _begin(endpoint: Endpoint, commands: list[Command], idempotent: bool) -> Start | Pending:
    """The ``Start`` to send or, if the endpoint's breaker refuses, the failed ``Pending``."""
    if endpoint.breaker.allow():
        return Start(endpoint, commands, idempotent)
    error = BreakerOpen(f"{endpoint.address} failed repeatedly; retrying after a cooldown")
    return Pending(endpoint, None, False, commands, error, False)


def settled(endpoint: Endpoint, outcome: Any) -> bool:
    """Book an exchange that worked (True). False: it failed, or was refused with READONLY."""
    if outcome.__class__ is list and read_only(outcome) is None:
        endpoint.breaker.success()
        return True
    return False


def _unsettled(pending: Pending, outcome: Any, idempotent: bool) -> Plan:
    """An exchange that did not settle: one retry if its connection was stale, else its error,
    booked with the breaker (never for a local shortage or a breaker's own refusal)."""
    endpoint = pending.endpoint
    if outcome.__class__ is list:
        endpoint.breaker.failure()
        raise read_only(outcome)  # type: ignore[misc]
    instead = yield from sizelimit.refusal(pending, outcome)  # a value too large: not booked
    if instead is not None:
        raise instead
    if _stale(pending, outcome):
        yield CloseIdle(endpoint)  # its idle siblings are most likely stale too
        if idempotent:
            fresh = yield Start(endpoint, pending.commands, True)
            return (yield from finish(fresh._replace(reused=False)))
    if not isinstance(outcome, (BreakerOpen, PoolExhausted)):
        endpoint.breaker.failure(_refused(outcome))
    raise outcome


def start(endpoint: Endpoint, commands: list[Command], idempotent: bool = True) -> Plan:
    """Send, unless the endpoint's breaker refuses. Returns the ``Pending``."""
    action = _begin(endpoint, commands, idempotent)
    return (yield action) if action.__class__ is Start else action


def finish(pending: Pending, idempotent: bool = True) -> Plan:
    """Read the replies, booking the outcome with the breaker; retry once if it was stale."""
    outcome = pending.error if pending.connection is None else (yield Finish(pending))
    if settled(pending.endpoint, outcome):
        return outcome
    return (yield from _unsettled(pending, outcome, idempotent))


def exchange(endpoint: Endpoint, commands: list[Command], idempotent: bool = True) -> Plan:
    pending = yield from start(endpoint, commands, idempotent)
    return (yield from finish(pending, idempotent))


# -- one pipeline on one shard --------------------------------------------------------------


def _read_candidates(view: View, tried: list[Endpoint]) -> list[Endpoint]:
    """Where a failed read goes next: usable replicas in random order, then the master."""
    candidates = [r for r in view.replicas if r not in tried]
    random.shuffle(candidates)
    if view.master is not None and view.master not in tried:
        candidates.append(view.master)
    return candidates


def _hedged(shard: Shard, view: View, pending: Pending, delay: float) -> Plan:
    """Read ``pending``; if no reply comes within ``delay``, ask a replica too: first wins.

    Returns (replies, endpoint that answered)."""
    if (yield Ready((pending,), delay)) is None:
        spare = [r for r in view.replicas if r is not pending.endpoint]
        if spare:
            second = yield from start(random.choice(spare), pending.commands)
            shard.stats.hedged_reads += 1
            if second.connection is not None:
                index = yield Ready((pending, second), shard.options.socket_timeout)
                if index is None:
                    yield Discard(pending)
                    yield Discard(second)
                    raise RedisTimeoutError(
                        f"neither {pending.endpoint.address} nor {second.endpoint.address} "
                        f"answered within {shard.options.socket_timeout}s"
                    )
                first, other = (second, pending) if index else (pending, second)
                try:
                    replies = yield from finish(first)
                except RedisError:
                    first = other
                    replies = yield from finish(other)
                else:
                    yield Discard(other)  # slow, not failed: no breaker failure for it
                return replies, first.endpoint
    return (yield from finish(pending)), pending.endpoint


def direct(op: Op, router: Router) -> Endpoint | None:
    """Where a one-shard call goes when nothing needs deciding before it is sent: its master,
    known, not held back, breaker letting it through; no repair due, no hedge, no replica read.

    The drivers send such a call without a plan (every call's path, kept short); if it does
    not settle, ``call`` takes over with what happened (``first``) and decides as always.
    None: run the whole plan."""
    shard = op.batches[0][0]
    view = shard.view
    master = view.master
    if master is None:
        return None
    if op.readonly:
        if view.replicas and (
            shard.hedge_delay or (shard.options.read_from_replicas and not op.fills)
        ):
            return None
    elif view.master_down or router.dropped.waiting:
        return None
    if shard.monitor is not None:
        shard.monitor.ensure_running()
    return master if master.breaker.allow() else None


def call(
    shard: Shard,
    commands: list[Command],
    op: Op,
    router: Router,
    first: tuple[Pending, Any] | None = None,
) -> Plan:
    """Send one pipeline to the shard and return its replies, or raise naming the shard.

    ``first``: the driver already sent it to ``direct(op)`` and got this outcome, unsettled."""
    view = shard.view
    if view.master is None:
        error = yield Discover(shard)
        view = shard.view
        if view.master is None:
            raise shard.error(error or RedisConnectionError("no sentinel knows the master"))
    if shard.monitor is not None:
        shard.monitor.ensure_running()
    readonly = op.readonly
    if first is not None:
        endpoint = first[0].endpoint
    elif readonly and shard.options.read_from_replicas and not op.fills:
        endpoint = random.choice(view.replicas) if view.replicas else view.master
    else:
        endpoint = view.master
    dropped = router.dropped
    # Repairs ride on writes to the master: a read may be hedged to a replica, which refuses DEL.
    repair = dropped.repair(shard) if dropped.waiting and not readonly and not first else None
    pending: Pending | None = None
    try:
        if first is not None:
            pending = first[0]
            replies = yield from _unsettled(pending, first[1], op.idempotent)
        elif not readonly and view.master_down:
            raise MasterDown(f"a sentinel reports {endpoint.address} down; write held back")
        else:
            action = _begin(endpoint, commands if repair is None else [*repair.commands, *commands],
                            op.idempotent)  # fmt: skip
            pending = (yield action) if action.__class__ is Start else action
            if readonly and view.replicas and pending.connection is not None and shard.hedge_delay:
                replies, endpoint = yield from _hedged(shard, view, pending, shard.hedge_delay)
            else:
                replies = yield from finish(pending, op.idempotent)
    except RedisError as error:
        was_sent = pending is not None and pending.sent
        replies, endpoint = yield from _recover(shard, endpoint, error, commands, op, was_sent)
    else:
        if repair is not None:
            replies = dropped.repaired(repair, replies)
    if readonly and endpoint is not view.master:
        shard.stats.replica_reads += 1
        if op.fills:
            op.cleanup()  # type: ignore[misc]  # voids the leases: a replica's reply is not kept
    return replies


def _replayable(sent: bool, error: RedisError, idempotent: bool) -> bool:
    return idempotent or not sent or isinstance(error, ReadOnlyError)


def _recover(
    shard: Shard, failed: Endpoint, error: RedisError, commands: list[Command], op: Op, sent: bool
) -> Plan:
    """After a failure: returns (replies, endpoint that answered), or raises naming the shard."""
    monitor = shard.monitor
    if monitor is not None:
        if isinstance(error, ReadOnlyError):
            shard.demoted(failed)
            yield Discover(shard)  # a demoted master: ask Sentinel now, not in a second
        else:
            monitor.refresh()
    if op.readonly:
        tried = [failed]
        for endpoint in _read_candidates(shard.view, tried):
            tried.append(endpoint)
            try:
                return (yield from exchange(endpoint, commands)), endpoint
            except RedisError as exc:
                error = exc
    elif monitor is not None and _replayable(sent, error, op.idempotent):
        held = isinstance(error, MasterDown)  # the master is alive: it may come back up

        def writable(view: View) -> bool:
            master = view.master
            return master is not None and not view.master_down and (held or master is not failed)

        timeout = shard.options.failover_timeout
        if timeout and not writable(shard.view):
            shard.stats.writes_waited += 1
            yield WaitFor(shard, writable, timeout)
        view = shard.view
        if writable(view):
            try:
                return (yield from exchange(view.master, commands, op.idempotent)), view.master
            except RedisError as exc:
                error = exc
    raise shard.error(error, failed) from error


# -- a whole operation, over one or more shards ---------------------------------------------


def _partly_run(router: Router, op: Op, index: int, error: Exception) -> Plan:
    """A write refused for a value's size ran the commands before it (``sizelimit``): its keys
    are recorded as dropped and repaired at once (deleted, invalidated), so the call's error
    leaves none of them written; if the repair fails, the shard's next write makes it."""
    if not isinstance(error, sizelimit.RefusedForSize) or op.writes is None:
        return
    written = op.writes[index]
    if written is not None and len(written) < 2:
        return  # one command, refused: it ran nothing
    shard = op.batches[index][0]
    router.dropped.record(shard, written)
    repair, master = router.dropped.repair(shard), shard.view.master
    if repair is not None and master is not None:
        with contextlib.suppress(RedisError):  # else it stays recorded (misses here)
            router.dropped.repaired(repair, (yield from exchange(master, repair.commands)))


def _failed_open(router: Router, op: Op, index: int, error: Exception) -> Replies:
    """Failing open: answer for the shard as an empty server would, and record the drop."""
    shard, commands = op.batches[index]
    replies = empty_replies(commands) if router.fail_open else None
    if replies is None or not isinstance(error, RedisError):
        raise error
    log_failure(shard, error)
    if op.cleanup is not None:
        op.cleanup()  # voids near-cache leases, so the made-up replies are never kept
    if op.writes is not None:
        router.dropped.record(shard, op.writes[index])
    return replies


def run(op: Op, router: Router, first: tuple[Pending, Any] | None = None) -> Plan:
    """The whole operation; ``first``: see ``call`` (one-shard operations only)."""
    batches = op.batches
    if len(batches) == 1:
        shard, commands = batches[0]
        try:
            replies = yield from call(shard, commands, op, router, first)
        except Exception as exc:
            yield from _partly_run(router, op, 0, exc)
            replies = _failed_open(router, op, 0, exc)
        return op.finish([replies])
    plans = [call(shard, commands, op, router) for shard, commands in batches]
    results: list[Any] = [None] * len(plans)
    parked: list[Any] = [None] * len(plans)
    for i, plan in enumerate(plans):  # send everything first: the shards work concurrently
        try:
            action = next(plan)
            while action.__class__ is Start:
                action = plan.send((yield action))
            parked[i] = action
        except StopIteration as stop:
            results[i], plans[i] = stop.value, None  # type: ignore[call-overload]
        except Exception as exc:
            results[i], plans[i] = exc, None  # type: ignore[call-overload]
    for i, plan in enumerate(plans):
        if plan is None:
            continue
        action = parked[i]
        try:
            while True:
                action = plan.send((yield action))
        except StopIteration as stop:
            results[i] = stop.value
        except Exception as exc:  # read every other shard before raising
            results[i] = exc
    errors = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    for i in errors:
        yield from _partly_run(router, op, i, results[i])
    if errors and not router.fail_open:
        raise results[errors[0]]
    for i in errors:
        results[i] = _failed_open(router, op, i, results[i])
    return op.finish(results)
