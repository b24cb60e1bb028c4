"""The failure policy without Redis: plans driven by a script that answers each action.

``failover`` is sans-I/O, so what it decides (where a read goes next, whether a write is
replayed, what a hedge does, what failing open records) is tested here action by action, with
fake servers, as redis-py tests its Sentinel code. The real-topology tests (``test_failover``)
check the same behaviour against real processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hacache import failopen, failover
from hacache.actions import CloseIdle, Discard, Discover, Finish, Ready, Start, WaitFor
from hacache.breaker import Breaker
from hacache.dropped import DroppedWrites
from hacache.endpoint import BreakerOpen, Pending
from hacache.options import parse_options
from hacache.router import Op
from hacache.sentinel import usable_replica
from hacache.shard import Shard

M, R, N = ("10.0.0.1", 6379), ("10.0.0.2", 6379), ("10.0.0.3", 6379)  # never connected


class FakeMonitor:
    def __init__(self) -> None:
        self.refreshed = 0

    def ensure_running(self) -> None:
        pass

    def refresh(self) -> None:
        self.refreshed += 1

    def discover(self) -> None:
        raise AssertionError("the script answers Discover itself")


class FakeRouter:
    def __init__(self, fail_open: bool = False) -> None:
        self.fail_open = fail_open
        self.dropped = DroppedWrites(100, lambda keys: ("PUBLISH", "chan", str(keys)), (0, 0.1))


def sentinel_shard(**options: Any) -> Shard:
    """A Sentinel shard whose view is set by hand: master M, replica R, epoch 1."""
    parsed = parse_options(["sentinel://127.0.0.1:1/svc/0?name=s"], options)
    shard = Shard(parsed.shards[0], parsed)
    shard.monitor = FakeMonitor()  # type: ignore[assignment]
    shard.apply(M, [R], 1)
    return shard


def endpoint(shard: Shard, address: tuple[str, int]) -> Any:
    return shard._endpoints[address]


def sent(action: Start, error: Exception | None = None, was_sent: bool = True) -> Pending:
    """The driver's answer to a Start: on its way, or failed before (``was_sent`` False)."""
    if error is not None:
        return Pending(action.endpoint, None, False, action.commands, error, was_sent)
    return Pending(action.endpoint, object(), False, action.commands, None, True)


def refused() -> RedisConnectionError:
    error = RedisConnectionError("refused")
    error.__context__ = ConnectionRefusedError()
    return error


def script(plan: Any, answer: Callable[[Any], Any]) -> tuple[Any, list[Any]]:
    """Drive ``plan``, answering each action with ``answer(action)``; (result, actions)."""
    actions = []
    try:
        action = next(plan)
        while True:
            actions.append(action)
            action = plan.send(answer(action))
    except StopIteration as stop:
        return stop.value, actions
    except Exception as exc:
        return exc, actions


def where(actions: list[Any]) -> list[tuple[str, str]]:
    """The actions as (kind, address) pairs, for readable assertions."""
    out = []
    for action in actions:
        if isinstance(action, Start):
            out.append(("start", action.endpoint.address))
        elif isinstance(action, (Finish, Discard)):
            out.append((type(action).__name__.lower(), action.pending.endpoint.address))
        else:
            out.append((type(action).__name__.lower(), ""))
    return out


def master_refuses(action: Any) -> Any:
    """Nothing listens at the master (M); every other server answers b"v"."""
    if isinstance(action, Start):
        down = action.endpoint.address.startswith("10.0.0.1")
        return sent(action, refused() if down else None)
    return [b"v"]


GET = Op([], lambda r: r, readonly=True)
SET = Op([], lambda r: r, writes=[["k"]])
INCR = Op([], lambda r: r, idempotent=False, writes=[["k"]])


def call(shard: Shard, op: Op, router: FakeRouter | None = None) -> Any:
    return failover.call(shard, [("GET", "k")], op, router or FakeRouter())


# -- Sentinel's replica flags --------------------------------------------------------------


def test_a_replica_flagged_only_disconnected_stays_readable():
    """Sentinel's own promotion flags the chosen replica 'disconnected' for up to a second."""
    base = {"ip": "h", "port": "1", "master-link-status": "err", "master-link-down-time": "900"}
    assert usable_replica({**base, "flags": "slave,disconnected"})
    assert not usable_replica({**base, "flags": "slave,s_down"})
    assert not usable_replica({**base, "flags": "slave,o_down,disconnected"})
    assert not usable_replica({**base, "flags": "slave", "master-link-down-time": "60000"})
    # An old master back from the dead, listed as a replica but not yet converted: old data.
    assert not usable_replica({**base, "flags": "slave", "role-reported": "master"})
    # The replica being promoted already reports itself a master: still readable, whether
    # this sentinel leads the failover (it flags it promoted) or sees only the master down.
    assert usable_replica({**base, "flags": "slave,promoted", "role-reported": "master"})
    assert usable_replica({**base, "flags": "slave", "role-reported": "master"}, master_down=True)


# -- reads ---------------------------------------------------------------------------------


def test_a_read_refused_by_the_master_is_answered_by_the_replica():
    shard = sentinel_shard(HEDGE_DELAY=0)

    result, actions = script(call(shard, GET), master_refuses)
    assert result == [b"v"]
    assert where(actions) == [("start", "10.0.0.1:6379"), ("start", "10.0.0.2:6379"),
                              ("finish", "10.0.0.2:6379")]  # fmt: skip
    assert endpoint(shard, M).breaker.is_open  # nothing listens: opened at once
    assert shard.monitor.refreshed == 1  # and the monitor is asked to look again


def test_a_read_fails_only_when_no_server_of_the_shard_answers():
    shard = sentinel_shard(HEDGE_DELAY=0)
    result, actions = script(call(shard, GET), lambda a: sent(a, refused()))
    assert isinstance(result, RedisConnectionError) and "shard 's'" in str(result)
    assert [kind for kind, _ in where(actions)] == ["start", "start"]  # master, then replica


def test_a_silent_master_is_hedged_on_the_replica_and_the_first_reply_wins():
    shard = sentinel_shard(HEDGE_DELAY=0.05, SOCKET_TIMEOUT=0.5)

    def answer(action):
        if isinstance(action, Start):
            return sent(action)
        if isinstance(action, Ready):
            return None if len(action.pendings) == 1 else 1  # the replica answers first
        if isinstance(action, Finish):
            return [b"from replica"]
        return None

    result, actions = script(call(shard, GET), answer)
    assert result == [b"from replica"]
    assert where(actions) == [
        ("start", "10.0.0.1:6379"), ("ready", ""), ("start", "10.0.0.2:6379"), ("ready", ""),
        ("finish", "10.0.0.2:6379"), ("discard", "10.0.0.1:6379"),
    ]  # fmt: skip
    assert actions[1].timeout == 0.05 and actions[3].timeout == 0.5
    master = endpoint(shard, M).breaker
    assert (master.failures, master.is_open) == (0, False)  # slow is not failed


def test_a_master_that_answers_within_the_hedge_delay_is_read_alone():
    shard = sentinel_shard(HEDGE_DELAY=0.05)

    def answer(action):
        return (
            sent(action) if isinstance(action, Start) else 0 if isinstance(action, Ready) else [1]
        )

    result, actions = script(call(shard, GET), answer)
    assert result == [1]
    assert where(actions) == [("start", "10.0.0.1:6379"), ("ready", ""),
                              ("finish", "10.0.0.1:6379")]  # fmt: skip


def test_a_hedge_whose_winner_fails_reads_the_other():
    shard = sentinel_shard(HEDGE_DELAY=0.05)

    def answer(action):
        if isinstance(action, Start):
            return sent(action)
        if isinstance(action, Ready):
            return None if len(action.pendings) == 1 else 1
        if isinstance(action, Finish):
            replica = action.pending.endpoint.address.startswith("10.0.0.2")
            return RedisConnectionError("reset") if replica else [b"master, late"]
        return None

    result, _ = script(call(shard, GET), answer)
    assert result == [b"master, late"]


def test_plain_shards_are_never_hedged():
    options = parse_options(["redis://10.0.0.1:6379/0"], {"HEDGE_DELAY": 0.05})
    shard = Shard(options.shards[0], options)
    result, actions = script(call(shard, GET), lambda a: sent(a) if isinstance(a, Start) else [1])
    assert result == [1] and [type(a) for a in actions] == [Start, Finish]


def test_a_replica_reply_to_a_near_cache_fill_is_returned_but_not_kept():
    shard = sentinel_shard(HEDGE_DELAY=0)
    voided = []
    fill = Op([], lambda r: r, cleanup=lambda: voided.append(True), readonly=True, fills=True)

    result, _ = script(call(shard, fill), master_refuses)
    assert result == [b"v"] and voided == [True]


def test_near_cache_fills_ignore_read_from_replicas():
    shard = sentinel_shard(HEDGE_DELAY=0, READ_FROM_REPLICAS=True)
    fill = Op([], lambda r: r, cleanup=lambda: None, readonly=True, fills=True)
    _, actions = script(call(shard, fill), lambda a: sent(a) if isinstance(a, Start) else [1])
    assert where(actions)[0] == ("start", "10.0.0.1:6379")
    _, actions = script(call(shard, GET), lambda a: sent(a) if isinstance(a, Start) else [1])
    assert where(actions)[0] == ("start", "10.0.0.2:6379")


# -- writes --------------------------------------------------------------------------------


def test_a_failed_write_waits_for_the_promotion_then_goes_to_the_new_master():
    shard = sentinel_shard(FAILOVER_TIMEOUT=3)

    def answer(action):
        if isinstance(action, Start):
            down = action.endpoint.address.startswith("10.0.0.1")
            return sent(action, refused(), was_sent=False) if down else sent(action)
        if isinstance(action, WaitFor):
            shard.apply(N, [], 2)  # the monitor hears +switch-master meanwhile
            assert action.until(shard.view)
            return None
        return ["OK"]

    result, actions = script(call(shard, SET), answer)
    assert result == ["OK"]
    assert where(actions) == [("start", "10.0.0.1:6379"), ("waitfor", ""),
                              ("start", "10.0.0.3:6379"), ("finish", "10.0.0.3:6379")]  # fmt: skip
    assert actions[1].timeout == 3


def test_a_write_never_waits_with_the_default_failover_timeout():
    shard = sentinel_shard()
    result, actions = script(call(shard, SET), lambda a: sent(a, refused(), was_sent=False))
    assert isinstance(result, RedisConnectionError)
    assert [type(a) for a in actions] == [Start]


def test_a_non_idempotent_write_that_reached_the_server_is_never_replayed():
    shard = sentinel_shard(FAILOVER_TIMEOUT=3)

    def answer(action):
        return sent(action) if isinstance(action, Start) else RedisTimeoutError("timed out")

    result, actions = script(call(shard, INCR), answer)
    assert isinstance(result, RedisTimeoutError)
    assert [type(a) for a in actions] == [Start, Finish]  # no WaitFor, no second Start


def test_readonly_anywhere_in_the_replies_makes_the_shard_ask_sentinel_and_replay():
    """touch(k, None) on a demoted master: PERSIST is refused, the EXISTS after it is not."""
    shard = sentinel_shard()
    touch = Op([], lambda r: r, writes=[["k"]])

    def answer(action):
        if isinstance(action, Start):
            return sent(action)
        if isinstance(action, Discover):
            shard.apply(N, [M], 1)  # same epoch as ours: accepted because M said READONLY
            return None
        if action.pending.endpoint.address.startswith("10.0.0.1"):
            return [ReadOnlyError("READONLY You can't write against a read only replica."), 1]
        return [1, 1]

    plan = failover.call(shard, [("PERSIST", "k"), ("EXISTS", "k")], touch, FakeRouter())
    result, actions = script(plan, answer)
    assert result == [1, 1]
    assert [type(a) for a in actions] == [Start, Finish, Discover, Start, Finish]
    assert shard.view.master.address == "10.0.0.3:6379"


def test_writes_are_held_back_while_a_sentinel_reports_the_master_down():
    shard = sentinel_shard()
    shard.master_reported_down(M, True)
    result, actions = script(call(shard, SET), lambda a: sent(a))
    assert isinstance(result, failover.MasterDown) and actions == []  # nothing was sent
    _, actions = script(call(shard, GET), lambda a: sent(a) if isinstance(a, Start) else [1])
    assert where(actions)[0] == ("start", "10.0.0.1:6379")  # reads still go there
    shard.master_reported_down(M, False)
    result, _ = script(call(shard, SET), lambda a: sent(a) if isinstance(a, Start) else ["OK"])
    assert result == ["OK"]


def test_a_held_write_goes_to_the_same_master_once_sentinel_sees_it_up_again():
    shard = sentinel_shard(FAILOVER_TIMEOUT=3)
    shard.master_reported_down(M, True)

    def answer(action):
        if isinstance(action, WaitFor):
            shard.master_reported_down(M, False)  # -sdown: it was only slow to answer
            assert action.until(shard.view)
            return None
        return sent(action) if isinstance(action, Start) else ["OK"]

    result, actions = script(call(shard, SET), answer)
    assert result == ["OK"]
    assert where(actions) == [("waitfor", ""), ("start", "10.0.0.1:6379"),
                              ("finish", "10.0.0.1:6379")]  # fmt: skip


def test_a_stale_connection_is_retried_once_on_a_fresh_one():
    shard = sentinel_shard()
    starts = []

    def answer(action):
        if isinstance(action, Start):
            starts.append(action)
            return Pending(action.endpoint, object(), len(starts) == 1, action.commands, None, True)
        if isinstance(action, Finish):
            return RedisConnectionError("reset") if action.pending.reused else ["OK"]
        return None

    result, actions = script(call(shard, SET), answer)
    assert result == ["OK"]
    assert [type(a) for a in actions] == [Start, Finish, CloseIdle, Start, Finish]


def test_pool_exhaustion_never_counts_against_the_breaker():
    from hacache.pool import PoolExhausted

    shard = sentinel_shard(BREAKER_THRESHOLD=1)
    result, _ = script(call(shard, SET), lambda a: sent(a, PoolExhausted("busy"), False))
    assert isinstance(result, PoolExhausted)
    assert not endpoint(shard, M).breaker.is_open


# -- failing open: the dropped-write record ------------------------------------------------


def test_a_dropped_write_is_recorded_then_repaired_by_the_next_write():
    router = FakeRouter(fail_open=True)
    shard = sentinel_shard()
    op = Op([(shard, [("SET", "k", b"v")])], lambda r: r, writes=[["k"]])
    result, _ = script(failover.run(op, router), lambda a: sent(a, refused(), False))
    assert result == [[None]]  # reads as "not stored"
    assert router.dropped.waiting and router.dropped.hides("k", shard)
    endpoint(shard, M).breaker.reset()  # the shard answers again

    other = Op([(shard, [("SET", "other", b"w")])], lambda r: r, writes=[["other"]])
    seen = []

    def answer(action):
        if isinstance(action, Start):
            seen.append(action.commands)
            return sent(action)
        return [1, 1, "OK"]  # the repair's DEL and its invalidation, then the write itself

    result, _ = script(failover.run(other, router), answer)
    assert seen == [[("DEL", "k"), ("PUBLISH", "chan", "['k']"), ("SET", "other", b"w")]]
    assert result == [["OK"]]  # the repair's replies are not the caller's
    assert not router.dropped.waiting and not router.dropped.hides("k", shard)


def test_a_failed_repair_keeps_the_record():
    router = FakeRouter(fail_open=True)
    shard = sentinel_shard()
    router.dropped.record(shard, ["k"])
    op = Op([(shard, [("SET", "x", b"v")])], lambda r: r, writes=[["x"]])
    answer = lambda a: sent(a) if isinstance(a, Start) else [ResponseError("NOPERM"), 1, "OK"]  # noqa: E731
    result, _ = script(failover.run(op, router), answer)
    assert result == [["OK"]] and router.dropped.hides("k", shard)


def test_reads_carry_no_repair_and_a_key_recorded_again_meanwhile_stays():
    router = FakeRouter(fail_open=True)
    shard = sentinel_shard()
    router.dropped.record(shard, ["k"])
    repair = router.dropped.repair(shard)
    router.dropped.record(shard, ["k"])  # dropped again while the repair was on its way
    router.dropped.repaired(repair, [1, 1])
    assert router.dropped.hides("k", shard)
    _, actions = script(
        call(shard, GET, router), lambda a: sent(a) if isinstance(a, Start) else [1]
    )
    assert actions[0].commands == [("GET", "k")]


def test_an_overflowing_record_blinds_the_shard_until_a_flush_repairs_it():
    router = FakeRouter(fail_open=True)
    router.dropped.max_keys = 2
    shard = sentinel_shard()
    router.dropped.record(shard, ["a", "b", "c"])
    assert router.dropped.hides("never-written", shard)  # the whole shard reads as empty
    repair = router.dropped.repair(shard)
    assert repair.commands == [("FLUSHDB",), ("PUBLISH", "chan", "None")]  # None: every key
    router.dropped.repaired(repair, ["OK", 1])
    assert not router.dropped.waiting


def test_failing_closed_records_nothing():
    router = FakeRouter(fail_open=False)
    shard = sentinel_shard()
    op = Op([(shard, [("SET", "k", b"v")])], lambda r: r, writes=[["k"]])
    result, _ = script(failover.run(op, router), lambda a: sent(a, refused(), False))
    assert isinstance(result, RedisConnectionError) and not router.dropped.waiting


def test_every_shard_is_sent_to_before_any_reply_is_read():
    options = parse_options(["redis://10.0.0.1:1/0", "redis://10.0.0.2:1/0"], {})
    shards = [Shard(spec, options) for spec in options.shards]
    op = Op([(s, [("GET", "k")]) for s in shards], lambda r: r, readonly=True)
    answer = lambda a: sent(a) if isinstance(a, Start) else [1]  # noqa: E731
    result, actions = script(failover.run(op, FakeRouter()), answer)
    assert result == [[1], [1]]
    assert [type(a) for a in actions] == [Start, Start, Finish, Finish]


# -- the breaker and the view --------------------------------------------------------------


def test_a_success_racing_a_certain_failure_still_closes_the_breaker():
    breaker = Breaker(threshold=3, cooldown=60)
    breaker.failure(certain=True)
    breaker.failures = 0  # what a success() landing between its two assignments leaves
    breaker.success()
    assert not breaker.is_open and breaker.allow()


def test_the_view_never_goes_back_to_an_older_epoch():
    shard = sentinel_shard()
    shard.apply(N, None, None)  # +switch-master: no epoch, so newer than ours
    assert shard.view.master.address == "10.0.0.3:6379" and shard.view.epoch == 2
    assert not shard.apply(M, [R], 1)  # a sentinel that has not heard of it yet
    assert not shard.apply(M, [R], 2)  # same epoch, another master: keep ours
    assert shard.view.master.address == "10.0.0.3:6379"
    assert shard.apply(N, [M], 5) and shard.view.epoch == 5  # the real epoch, later
    assert not shard.apply(R, [], 6, master_down=True)  # never move to a master reported down
    assert shard.view.generation == 1


def test_one_endpoint_per_address_whoever_asks():
    import threading

    shard = sentinel_shard()
    barrier = threading.Barrier(8)

    def apply() -> None:
        barrier.wait()
        shard.apply(M, [R, N], 1)

    threads = [threading.Thread(target=apply) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(shard._endpoints) == 3 and shard.view.generation == 0


def test_a_breaker_open_master_read_goes_to_the_replica_without_a_start():
    shard = sentinel_shard(HEDGE_DELAY=0, BREAKER_THRESHOLD=1)
    endpoint(shard, M).breaker.failure(certain=True)
    result, actions = script(call(shard, GET), lambda a: sent(a) if isinstance(a, Start) else [1])
    assert result == [1] and where(actions) == [("start", "10.0.0.2:6379"),
                                                ("finish", "10.0.0.2:6379")]  # fmt: skip


@pytest.mark.parametrize("error", [BreakerOpen("open"), refused()])
def test_shard_errors_name_the_shard_and_keep_their_class(error):
    shard = sentinel_shard()
    named = shard.error(error)
    assert type(named) is type(error) and "shard 's'" in str(named)


# -- the drivers' direct path --------------------------------------------------------------


def test_the_direct_path_is_taken_only_when_there_is_nothing_to_decide():
    shard = sentinel_shard(HEDGE_DELAY=0.05)
    router = FakeRouter()
    write = Op([(shard, [("SET", "k", b"v")])], lambda r: r, writes=[["k"]])
    read = Op([(shard, [("GET", "k")])], lambda r: r, readonly=True)
    assert failover.direct(write, router) is endpoint(shard, M)
    assert failover.direct(read, router) is None  # it may need a hedge: the plan decides
    shard.master_reported_down(M, True)
    assert failover.direct(write, router) is None  # held back
    shard.master_reported_down(M, False)
    router.dropped.record(shard, ["x"])
    assert failover.direct(write, router) is None  # a repair is due
    plain = parse_options(["redis://10.0.0.9:1/0"], {})
    solo = Shard(plain.shards[0], plain)
    solo_read = Op([(solo, [("GET", "k")])], lambda r: r, readonly=True)
    assert failover.direct(solo_read, FakeRouter()) is solo.view.master
    solo.view.master.breaker.failure(certain=True)
    assert failover.direct(solo_read, FakeRouter()) is None  # the plan says why


def test_an_unsettled_direct_exchange_continues_in_the_plan():
    """The driver sent it and the reused connection turned out stale: one retry, as always."""
    options = parse_options(["redis://10.0.0.9:1/0"], {})
    shard = Shard(options.shards[0], options)
    op = Op([(shard, [("SET", "k", b"v")])], lambda r: r, writes=[["k"]])
    master = shard.view.master
    stale = Pending(master, None, True, op.batches[0][1], RedisConnectionError("reset"), True)

    def answer(action):
        if isinstance(action, Start):
            return sent(action)
        return None if isinstance(action, CloseIdle) else ["OK"]

    result, actions = script(failover.run(op, FakeRouter(), (stale, stale.error)), answer)
    assert result == [["OK"]]
    assert [type(a) for a in actions] == [CloseIdle, Start, Finish]


def test_fail_open_warnings_name_alias_shard_and_error_once_per_outage(caplog):
    shard = sentinel_shard()
    shard.cache = "default"
    failopen._last_logged.clear()
    with caplog.at_level("WARNING", logger="hacache.failover"):
        failopen.log_failure(shard, refused())
        failopen.log_failure(shard, refused())  # the same outage: once
        shard.cache = "other"  # another alias on the same shard name: its own throttle
        failopen.log_failure(shard, refused())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "cache 'default', shard 's'" in lines[0] and "ConnectionError" in lines[0]
    assert "cache 'other'" in lines[1]
