"""The sequential convoy: FIFO per key, parallel across keys, retries, lock loss, nothing lost."""

from __future__ import annotations

import gc
import math
import sys
import tracemalloc
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab import schedule as seqlab_schedule
from seqlab.convoy import (
    Convoy,
    DeadLetter,
    Delivery,
    Undelivered,
    UndeliveredWarning,
    open_convoy,
)
from seqlab.examples import orders

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

SEEDS = range(12)
STRATEGIES = list(seqlab_schedule.STRATEGIES)


class Log:
    """A handler that takes ``duration`` virtual seconds and checks the convoy's promises."""

    def __init__(self, duration: float = 1.0) -> None:
        self.duration = duration
        self.started: list[tuple[float, Delivery]] = []
        self.finished: list[tuple[float, Delivery]] = []
        self.busy_keys: set[Any] = set()
        self.concurrency = 0
        self.max_concurrency = 0
        # Kept here rather than asserted: the convoy would treat an AssertionError as a failure.
        self.violations: list[str] = []

    async def __call__(self, delivery: Delivery) -> None:
        if delivery.key in self.busy_keys:
            self.violations.append(f"two messages of {delivery.key!r} in flight")
        self.busy_keys.add(delivery.key)
        self.concurrency += 1
        self.max_concurrency = max(self.max_concurrency, self.concurrency)
        self.started.append((trio.current_time(), delivery))
        try:
            await trio.sleep(self.duration)
        finally:
            self.busy_keys.discard(delivery.key)
            self.concurrency -= 1
        self.finished.append((trio.current_time(), delivery))

    def order_of(self, key: Any) -> list[Any]:
        return [d.message for _, d in self.finished if d.key == key]


# --------------------------------------------------------------------------- order, parallelism


@pytest.mark.parametrize(
    ("keys", "messages", "consumers"),
    [(8, 5, 4), (4, 20, 4), (6, 40, 3), (16, 3, 4), (3, 7, 1), (2, 3, 2)],
)
@pytest.mark.parametrize("seed", SEEDS)
def test_fifo_per_key_and_parallel_across_keys(
    keys: int, messages: int, consumers: int, seed: int
) -> None:
    log = Log()

    async def main() -> float:
        async with open_convoy(log, consumers=consumers) as convoy:
            for m in range(messages):
                for k in range(keys):
                    await convoy.send(k, m)
        stats = convoy.statistics()
        assert stats.delivered == stats.sent == keys * messages
        assert stats.unsettled == stats.in_flight == 0
        return trio.current_time()

    assert seqlab.run(main, seed=seed) == keys * messages / consumers
    for k in range(keys):
        assert log.order_of(k) == list(range(messages))
        sequences = [d.sequence for _, d in log.finished if d.key == k]
        assert sequences == list(range(messages))
    assert log.max_concurrency == min(keys, consumers)
    assert log.violations == []
    assert all(d.attempt == 1 for _, d in log.finished)


def test_keys_sent_later_join_the_parallel_work() -> None:
    log = Log()

    async def main() -> None:
        async with open_convoy(log, consumers=2) as convoy:
            await convoy.send("a", 0)
            await trio.sleep(0.5)
            await convoy.send("b", 0)
            await convoy.send("a", 1)
        assert trio.current_time() == 2.0

    seqlab.run(main, seed=3)
    assert [(t, d.key, d.message) for t, d in log.started] == [
        (0.0, "a", 0),
        (0.5, "b", 0),
        (1.0, "a", 1),
    ]


def test_sync_handler_and_async_callable_object() -> None:
    seen: list[tuple[str, int]] = []

    def handler(delivery: Delivery) -> None:
        seen.append((delivery.key, delivery.message))

    async def main() -> None:
        async with open_convoy(handler, consumers=3) as convoy:
            for i in range(20):
                await convoy.send("abc"[i % 3], i)

    for seed in SEEDS:
        seen.clear()
        seqlab.run(main, seed=seed)
        for key in "abc":
            assert [m for k, m in seen if k == key] == [i for i in range(20) if "abc"[i % 3] == key]


def test_delivery_record() -> None:
    d = Delivery("k", "m", 2, 7)
    assert (d.key, d.message, d.attempt, d.sequence) == ("k", "m", 2, 7)
    with pytest.raises(AttributeError):
        d.attempt = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("seed", SEEDS)
def test_poison_message_is_retried_then_dead_lettered(seed: int) -> None:
    attempts: list[tuple[str, int, int, float]] = []
    boom = ValueError("cannot parse message 1")

    async def handler(delivery: Delivery) -> None:
        attempts.append((delivery.key, delivery.message, delivery.attempt, trio.current_time()))
        await trio.sleep(1)
        if delivery.key == "a" and delivery.message == 1:
            raise boom

    async def main() -> Convoy:
        async with open_convoy(handler, consumers=2, max_attempts=3) as convoy:
            for m in range(3):
                await convoy.send("a", m)
                await convoy.send("b", m)
        return convoy

    rec = seqlab.Recorder()
    convoy = seqlab.run(main, seed=seed, recorder=rec)
    assert convoy.dead_letters == [DeadLetter("a", 1, 3, boom)]
    assert convoy.dead_letters[0].error is boom
    a = [(m, n, t) for k, m, n, t in attempts if k == "a"]
    assert a == [(0, 1, 0.0), (1, 1, 1.0), (1, 2, 2.0), (1, 3, 3.0), (2, 1, 4.0)]
    b = [(m, n, t) for k, m, n, t in attempts if k == "b"]
    assert b == [(0, 1, 0.0), (1, 1, 1.0), (2, 1, 2.0)]
    stats = convoy.statistics()
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (5, 2, 1)
    kinds = [e.kind for e in rec.events if e.primitive == "Convoy"]
    assert kinds.count("retry") == 2
    assert kinds.count("dead_letter") == 1
    dead = next(e for e in rec.events if e.kind == "dead_letter")
    assert dead.data["key"] == "a"
    assert dead.data["sequence"] == 1
    assert dead.data["attempt"] == 3
    assert dead.data["error"] == "ValueError: cannot parse message 1"


def test_dead_letter_is_frozen() -> None:
    letter = DeadLetter("k", "m", 3, ValueError("x"))
    with pytest.raises(AttributeError):
        letter.attempts = 4  # type: ignore[misc]


def test_base_exceptions_are_not_handler_failures() -> None:
    class Stop(BaseException):
        pass

    async def handler(delivery: Delivery) -> None:
        raise Stop

    async def main() -> None:
        async with open_convoy(handler, consumers=1) as convoy:
            await convoy.send("a", 1)

    with pytest.warns(UndeliveredWarning), pytest.raises(BaseExceptionGroup) as info:
        seqlab.run(main, seed=0)
    assert info.group_contains(Stop)


# --------------------------------------------------------------------------- hot keys


@pytest.mark.parametrize(("batch", "expected_start"), [(16, 16.0), (4, 12.0), (1, 11.0)])
@pytest.mark.parametrize("seed", SEEDS)
def test_hot_key_does_not_starve_a_new_key(batch: int, expected_start: float, seed: int) -> None:
    log = Log()

    async def main() -> None:
        async with open_convoy(log, consumers=1, session_batch=batch) as convoy:
            for m in range(100):
                await convoy.send("hot", m)
            await trio.sleep(10.5)
            stats = convoy.statistics()
            assert stats.hottest_key == "hot"
            assert stats.locked_keys == ("hot",)
            assert stats.backlog == {"hot": 89}
            await convoy.send("cold", 0)

    seqlab.run(main, seed=seed)
    start = next(t for t, d in log.started if d.key == "cold")
    assert start == expected_start
    hot_between = [d for t, d in log.started if d.key == "hot" and 10.5 <= t < start]
    assert len(hot_between) <= batch
    assert log.order_of("hot") == list(range(100))


def test_two_hot_keys_and_cold_keys_share_consumers_round_robin() -> None:
    log = Log()

    async def main() -> None:
        async with open_convoy(log, consumers=2, session_batch=2) as convoy:
            for m in range(10):
                await convoy.send("h1", m)
                await convoy.send("h2", m)
                await convoy.send("h3", m)
            await trio.sleep(0.5)
            await convoy.send("cold", 0)

    for seed in SEEDS:
        log.started.clear()
        log.finished.clear()
        seqlab.run(main, seed=seed)
        # Waiting line at 0.5: h3 (since 0), then cold; h1 and h2 go behind them at t=2.
        assert next(t for t, d in log.started if d.key == "cold") == 2.0


# --------------------------------------------------------------------------- session hand-offs


class ConsumerSteps(trio.abc.Instrument):
    """Counts how often the task named ``consumer-0`` is resumed by the scheduler."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == "consumer-0":
            self.steps += 1


async def _no_yield(delivery: Delivery) -> None:
    pass


async def _cancel_point_only(delivery: Delivery) -> None:
    await trio.lowlevel.checkpoint_if_cancelled()  # may raise Cancelled, never yields


@pytest.mark.parametrize(
    "handler",
    [lambda delivery: None, _no_yield, _cancel_point_only],
    ids=["function", "async-no-await", "cancel-point-only"],
)
def test_a_consumer_whose_handler_never_yields_yields_between_sessions(handler: Any) -> None:
    # Two keys of 12 messages, one consumer, sessions of 4: six sessions, and while the other
    # key waits the consumer must give the scheduler a turn between two of them (five times).
    # The handler never yields, so those turns are the consumer's own: with the last
    # session's park and the final wake, 1 + 5 + 1 steps; a consumer that wrongly trusts the
    # handler to have checkpointed runs all 24 messages in its first step.
    steps = ConsumerSteps()

    async def main() -> None:
        async with open_convoy(handler, consumers=1, session_batch=4) as convoy:
            for m in range(12):
                convoy.send_nowait("a", m)
                convoy.send_nowait("b", m)

    trio.run(main, instruments=[steps])
    assert steps.steps == 7


def test_a_consumer_whose_handler_checkpointed_moves_to_the_next_key_without_a_round_trip() -> None:
    # The handler's checkpoint already let everyone run and could have delivered a
    # cancellation, so the consumer takes the next waiting key in the same step: the first
    # step, one per delivery and the final wake (a consumer that checkpoints again between
    # sessions takes five more).
    steps = ConsumerSteps()

    async def main() -> None:
        async with open_convoy(_checkpoint_once, consumers=1, session_batch=1) as convoy:
            for m in range(3):
                convoy.send_nowait("a", m)
                convoy.send_nowait("b", m)

    trio.run(main, instruments=[steps])
    assert steps.steps == 1 + 6 + 1


async def _checkpoint_once(delivery: Delivery) -> None:
    await trio.lowlevel.checkpoint()


async def _shielded_sleep(delivery: Delivery) -> None:
    # "Finish the commit even if cancelled": a schedule point and a cancel point trio counts,
    # which the convoy's cancellation cannot reach.
    with trio.CancelScope(shield=True):
        await trio.sleep(1)


async def _swallowing_sleep(delivery: Delivery) -> None:
    try:
        await trio.sleep(1)
    except trio.Cancelled:
        pass  # wrong, but a handler may do it: the convoy must still stop


@pytest.mark.parametrize(
    "handler", [_shielded_sleep, _swallowing_sleep], ids=["shielded", "swallows-cancelled"]
)
def test_a_cancelled_convoy_stops_after_the_session_whatever_the_handler_did(
    handler: Any,
) -> None:
    # One consumer, sessions of one message, three keys; the block is cancelled at t=0.5,
    # during the first delivery. That delivery finishes (shielded or swallowed) and no other
    # may start. A consumer that takes the handler's shielded or swallowed cancel point for
    # its own checkpoint delivers all 12 (the shielded one until t=12).
    async def main() -> tuple[list[Any], int, float]:
        started: list[Any] = []

        async def recorded(delivery: Delivery) -> None:
            started.append(delivery.message)
            await handler(delivery)

        with trio.move_on_after(0.5):
            async with open_convoy(recorded, consumers=1, session_batch=1) as convoy:
                for m in range(4):
                    for key in "abc":
                        convoy.send_nowait(key, (key, m))
        return started, len(convoy.undelivered), trio.current_time()

    with pytest.warns(UndeliveredWarning):
        started, undelivered, ended = seqlab.run(main, seed=0)
    assert started == [("a", 0)]
    assert undelivered == 11
    assert ended == (1.0 if handler is _shielded_sleep else 0.5)


async def _stopped_between_sessions(strategy_name: str) -> None:
    # The handler yields but is never a cancel point (a cancel-shielded yield), so the only
    # cancel point between two deliveries is the consumer's own, between sessions: once the
    # block is cancelled, no further delivery may start. (A consumer that counted the
    # handler's yield as a full checkpoint would deliver all 12 messages.)
    # (A consumer's very first step is not a cancel point, like any task's: the cancel
    # comes once both have delivered something.)
    delivered: list[Any] = []
    stopped_at: list[int] = []
    consumers: set[str] = set()

    going = trio.Event()

    async def handler(delivery: Delivery) -> None:
        delivered.append(delivery.message)
        consumers.add(trio.lowlevel.current_task().name)
        if (len(delivered) >= 4 and len(consumers) == 2) or len(delivered) == 12:
            going.set()  # (a schedule may leave one consumer idle all along)
        await trio.lowlevel.cancel_shielded_checkpoint()

    with trio.CancelScope() as outer:
        async with open_convoy(handler, consumers=2, session_batch=1) as convoy:
            for m in range(4):
                for key in "abc":
                    convoy.send_nowait(key, (key, m))
            await going.wait()
            stopped_at.append(len(delivered))
            outer.cancel()
            await trio.lowlevel.checkpoint()
    assert len(delivered) == stopped_at[0], strategy_name
    assert len(convoy.undelivered) == 12 - len(delivered)
    assert all(u.attempts == 0 for u in convoy.undelivered)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_cancelled_convoy_starts_no_delivery_after_the_cancel(strategy: str) -> None:
    with pytest.warns(UndeliveredWarning):
        result = seqlab.explore(
            _stopped_between_sessions, strategy, seeds=range(12), strategy=strategy
        )
    assert result.ok, str(result)


async def _counts_while_sessions_run(strategy_name: str) -> None:
    # A session settles several messages between its turns; what statistics() and join()
    # say must be exact whenever another task looks, under any schedule.
    handled: list[tuple[str, int]] = []
    sent: list[tuple[str, int]] = []

    async def handler(delivery: Delivery) -> None:
        await trio.lowlevel.checkpoint()
        handled.append((delivery.key, delivery.message))  # settles right after, same step

    async with open_convoy(handler, consumers=2, session_batch=3) as convoy:
        for round_ in range(3):
            for key in "abc":
                for m in range(2):
                    convoy.send_nowait(key, 2 * round_ + m)
                    sent.append((key, 2 * round_ + m))
            await trio.lowlevel.checkpoint()
            stats = convoy.statistics()
            assert (stats.sent, stats.delivered) == (len(sent), len(handled)), strategy_name
            assert stats.unsettled == len(sent) - len(handled), strategy_name
            await convoy.join()
            assert set(sent) <= set(handled), strategy_name
            assert convoy.statistics().unsettled == len(sent) - len(handled) == 0
    assert len(handled) == 18 and convoy.statistics().unsettled == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_counts_and_join_are_exact_while_sessions_run(strategy: str) -> None:
    result = seqlab.explore(
        _counts_while_sessions_run, strategy, seeds=range(12), strategy=strategy
    )
    assert result.ok, str(result)


# --------------------------------------------------------------------------- lock timeout


@pytest.mark.parametrize("seed", SEEDS)
def test_lock_timeout_cancels_redelivers_and_keeps_order(seed: int) -> None:
    cancelled: list[Delivery] = []
    log = Log()

    async def handler(delivery: Delivery) -> None:
        if delivery.message == "slow" and delivery.attempt == 1:
            try:
                await trio.sleep(100)
            except trio.Cancelled:
                cancelled.append(delivery)
                raise
        await log(delivery)

    async def main() -> Convoy:
        async with open_convoy(handler, consumers=2, lock_timeout=5) as convoy:
            for m in (0, "slow", 2):
                await convoy.send("a", m)
            await convoy.send("b", 0)
        assert trio.current_time() == 8.0
        return convoy

    rec = seqlab.Recorder()
    convoy = seqlab.run(main, seed=seed, recorder=rec)
    assert cancelled == [Delivery("a", "slow", 1, 1)]
    assert log.order_of("a") == [0, "slow", 2]
    assert [(t, d.attempt) for t, d in log.finished if d.key == "a"] == [
        (1.0, 1),
        (7.0, 2),
        (8.0, 1),
    ]
    stats = convoy.statistics()
    assert stats.lock_losses == 1
    assert stats.retried == 0
    assert convoy.dead_letters == []
    lost = [e for e in rec.events if e.kind == "lock_lost"]
    assert len(lost) == 1
    assert lost[0].time == 6.0
    assert lost[0].data["key"] == "a"
    assert lost[0].data["attempt"] == 1


def test_lock_losses_count_toward_max_attempts() -> None:
    async def handler(delivery: Delivery) -> None:
        await trio.sleep(10)

    async def main() -> Convoy:
        async with open_convoy(handler, consumers=1, lock_timeout=1.5, max_attempts=2) as convoy:
            await convoy.send("a", "stuck")
        assert trio.current_time() == 3.0
        return convoy

    convoy = seqlab.run(main, seed=1)
    (letter,) = convoy.dead_letters
    assert (letter.key, letter.message, letter.attempts) == ("a", "stuck", 2)
    assert isinstance(letter.error, trio.TooSlowError)
    assert "lock_timeout=1.5" in str(letter.error)
    assert convoy.statistics().lock_losses == 2


def test_handler_that_swallows_the_cancellation_still_loses_the_lock() -> None:
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            with trio.CancelScope():
                try:
                    await trio.sleep(10)
                except trio.Cancelled:
                    return  # pretends it finished; the lock is gone all the same

    async def main() -> Convoy:
        async with open_convoy(handler, consumers=1, lock_timeout=1) as convoy:
            await convoy.send("a", 0)
        return convoy

    convoy = seqlab.run(main, seed=0)
    assert attempts == [1, 2]
    stats = convoy.statistics()
    assert (stats.lock_losses, stats.delivered) == (1, 1)


def test_lost_lock_gives_the_session_to_a_waiting_key() -> None:
    log = Log()

    async def handler(delivery: Delivery) -> None:
        if delivery.key == "a" and delivery.attempt == 1:
            await trio.sleep(100)
        await log(delivery)

    async def main() -> None:
        async with open_convoy(handler, consumers=1, lock_timeout=2) as convoy:
            await convoy.send("a", 0)
            await convoy.send("b", 0)

    seqlab.run(main, seed=0)
    assert [(t, d.key, d.attempt) for t, d in log.started] == [(2.0, "b", 1), (3.0, "a", 2)]


# --------------------------------------------------------------------------- property


message_spec = st.tuples(
    st.integers(0, 4),  # key
    st.integers(0, 3),  # attempts that raise
    st.integers(0, 3),  # seconds the handler takes
    st.sampled_from([0, 0, 0.5, 1]),  # pause before sending
)


@settings(max_examples=50, deadline=None)
@given(
    specs=st.lists(message_spec, max_size=30),
    consumers=st.integers(1, 4),
    max_attempts=st.integers(1, 3),
    session_batch=st.integers(1, 4),
    lock_timeout=st.sampled_from([None, 2.5]),
    seed=st.integers(0, 2**16),
)
def test_every_message_is_delivered_once_or_dead_lettered(
    specs: list[tuple[int, int, int, float]],
    consumers: int,
    max_attempts: int,
    session_batch: int,
    lock_timeout: float | None,
    seed: int,
) -> None:
    successes: list[Delivery] = []
    violations: list[Delivery] = []
    busy: set[int] = set()
    in_flight = [0, 0]

    convoys: list[Convoy] = []

    async def handler(delivery: Delivery) -> None:
        index = delivery.message
        _, failing, seconds, _ = specs[index]
        if delivery.key in busy:
            violations.append(delivery)
        # What statistics() says from inside a handler adds up: every unsettled message is
        # waiting or in a handler, and this one's key is held.
        stats = convoys[0].statistics()
        if sum(stats.backlog.values()) + stats.in_flight != stats.unsettled:
            violations.append(delivery)
        if delivery.key not in stats.locked_keys or stats.backlog.get(delivery.key) == 0:
            violations.append(delivery)
        busy.add(delivery.key)
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            await trio.sleep(seconds)
            if delivery.attempt <= failing:
                raise RuntimeError(f"attempt {delivery.attempt} of {index}")
        finally:
            busy.discard(delivery.key)
            in_flight[0] -= 1
        successes.append(delivery)

    async def main() -> Convoy:
        async with open_convoy(
            handler,
            consumers=consumers,
            max_attempts=max_attempts,
            session_batch=session_batch,
            lock_timeout=lock_timeout,
        ) as convoy:
            convoys.append(convoy)
            for index, (key, _, _, pause) in enumerate(specs):
                await trio.sleep(pause)
                assert await convoy.send(key, index)
        return convoy

    convoy = seqlab.run(main, seed=seed)
    assert violations == []
    assert in_flight[1] <= consumers
    delivered = [d.message for d in successes]
    assert len(delivered) == len(set(delivered))
    dead = {letter.message: letter for letter in convoy.dead_letters}
    assert set(delivered).isdisjoint(dead)
    assert set(delivered) | set(dead) == set(range(len(specs)))
    for index, (key, failing, seconds, _) in enumerate(specs):
        too_slow = lock_timeout is not None and seconds > lock_timeout
        if too_slow or failing >= max_attempts:
            assert dead[index].attempts == max_attempts
            assert dead[index].key == key
            assert isinstance(dead[index].error, trio.TooSlowError if too_slow else RuntimeError)
        else:
            assert index in delivered
    for key in range(5):
        mine = [d for d in successes if d.key == key]
        assert [d.message for d in mine] == sorted(d.message for d in mine)
        assert [d.sequence for d in mine] == sorted(d.sequence for d in mine)
    stats = convoy.statistics()
    assert stats.delivered == len(delivered)
    assert stats.dead_lettered == len(dead)
    assert stats.sent == len(specs)
    assert stats.unsettled == 0
    assert convoy.undelivered == []


# --------------------------------------------------------------------------- dedup, join


def test_deduplication_window() -> None:
    log = Log(0)

    async def main() -> Convoy:
        async with open_convoy(log, dedup_window=10) as convoy:
            assert await convoy.send("a", 1, dedup_id="x")
            assert await convoy.send("a", 2, dedup_id="y")
            await trio.sleep(5)
            assert not await convoy.send("a", 1, dedup_id="x")
            assert not await convoy.send("b", 1, dedup_id="x")  # ids are per convoy
            assert await convoy.send("a", 3)  # no id: never deduplicated
            await trio.sleep(5)
            assert await convoy.send("a", 4, dedup_id="x")  # the window has passed
            await trio.sleep(5)
            assert not await convoy.send("a", 5, dedup_id="x")
        return convoy

    rec = seqlab.Recorder()
    convoy = seqlab.run(main, seed=0, recorder=rec)
    assert log.order_of("a") == [1, 2, 3, 4]
    assert [d.sequence for _, d in log.finished] == [0, 1, 2, 3]
    assert log.order_of("b") == []
    stats = convoy.statistics()
    assert (stats.sent, stats.deduplicated, stats.keys) == (4, 3, 1)
    dedups = [e for e in rec.events if e.kind == "dedup"]
    assert [(e.time, e.data["key"], e.data["dedup_id"]) for e in dedups] == [
        (5.0, "a", "x"),
        (5.0, "b", "x"),
        (15.0, "a", "x"),
    ]


def test_infinite_dedup_window_remembers_forever() -> None:
    async def main() -> None:
        async with open_convoy(lambda d: None, dedup_window=math.inf) as convoy:
            assert await convoy.send("a", 1, dedup_id=1)
            await trio.sleep(1e9)
            assert not await convoy.send("a", 1, dedup_id=1)

    seqlab.run(main, seed=0)


def test_join_waits_for_what_was_sent_before_it() -> None:
    log = Log()

    async def main() -> None:
        async with open_convoy(log, consumers=1) as convoy:
            for m in range(3):
                await convoy.send("a", m)

            async def keep_sending() -> None:
                await trio.sleep(0.25)
                for m in range(3, 20):
                    await convoy.send("a", m)  # at 0.25, 0.75, ..., 8.25
                    await trio.sleep(0.5)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_sending)
                await convoy.join()
                assert trio.current_time() == 3.0
                await convoy.join()  # now also waits for messages 3 to 8, sent meanwhile
                assert trio.current_time() == 9.0
            await convoy.join()
            assert trio.current_time() == 20.0
            await convoy.join()  # nothing pending: returns at once
            assert trio.current_time() == 20.0

    for seed in SEEDS:
        log.finished.clear()
        seqlab.run(main, seed=seed)
        assert log.order_of("a") == list(range(20))


def test_cancelled_join_leaves_the_convoy_intact() -> None:
    log = Log()

    async def main() -> None:
        async with open_convoy(log, consumers=1) as convoy:
            for m in range(3):
                await convoy.send("a", m)
            with trio.move_on_after(1.5):
                await convoy.join()
            assert trio.current_time() == 1.5
            await convoy.send("a", 3)
            await convoy.join()
            assert trio.current_time() == 4.0

    for seed in SEEDS:
        log.finished.clear()
        seqlab.run(main, seed=seed)
        assert log.order_of("a") == [0, 1, 2, 3]


def test_exit_waits_for_messages_handlers_send() -> None:
    seen: list[tuple[str, int]] = []

    async def main() -> None:
        convoy: Convoy

        async def handler(delivery: Delivery) -> None:
            await trio.sleep(1)
            seen.append((delivery.key, delivery.message))
            if delivery.message < 3:
                await convoy.send(delivery.key + "'", delivery.message + 1)

        async with open_convoy(handler) as convoy:
            await convoy.send("a", 0)
        assert trio.current_time() == 4.0
        with pytest.raises(trio.ClosedResourceError, match="closed"):
            await convoy.send("a", 9)
        assert convoy.closed

    seqlab.run(main, seed=0)
    assert seen == [("a", 0), ("a'", 1), ("a''", 2), ("a'''", 3)]


# --------------------------------------------------------------------------- early exit


@pytest.mark.parametrize("seed", SEEDS)
def test_cancelled_block_reports_undelivered_messages(seed: int) -> None:
    log = Log()

    async def main() -> Convoy:
        with trio.move_on_after(1.5):
            async with open_convoy(log, consumers=1) as convoy:
                for m in range(5):
                    await convoy.send("a", m)
                await convoy.send("b", 0)
                await convoy.send("b", 1)
        assert trio.current_time() == 1.5
        return convoy

    rec = seqlab.Recorder()
    with pytest.warns(UndeliveredWarning, match="6 message"):
        convoy = seqlab.run(main, seed=seed, recorder=rec)
    (event,) = [e for e in rec.events if e.kind == "undelivered"]
    assert (event.time, event.task, event.data["count"]) == (1.5, "main", 6)
    assert log.order_of("a") == [0]
    assert convoy.undelivered == [
        Undelivered("a", 1, 1, 1),
        Undelivered("a", 2, 2, 0),
        Undelivered("a", 3, 3, 0),
        Undelivered("a", 4, 4, 0),
        Undelivered("b", 0, 0, 0),
        Undelivered("b", 1, 1, 0),
    ]
    stats = convoy.statistics()
    assert (stats.delivered, stats.unsettled, stats.in_flight) == (1, 0, 0)
    assert convoy.closed


def test_block_error_propagates_bare_and_reports_undelivered() -> None:
    async def main() -> Convoy:
        convoy = None
        with pytest.raises(KeyError, match="oops"):
            async with open_convoy(Log(), consumers=2) as convoy:
                await convoy.send("a", 0)
                await convoy.send("a", 1)
                raise KeyError("oops")
        assert convoy is not None
        return convoy

    with pytest.warns(UndeliveredWarning, match="KeyError"):
        convoy = seqlab.run(main, seed=0)
    assert [u.message for u in convoy.undelivered] == [0, 1]


def test_cancelled_exit_drain_reports_undelivered() -> None:
    log = Log()

    async def main() -> Convoy:
        with trio.move_on_after(2.5):
            async with open_convoy(log, consumers=1) as convoy:
                for m in range(4):
                    await convoy.send("a", m)
        return convoy

    with pytest.warns(UndeliveredWarning):
        convoy = seqlab.run(main, seed=0)
    assert log.order_of("a") == [0, 1]
    assert [(u.message, u.attempts) for u in convoy.undelivered] == [(2, 1), (3, 0)]


def test_join_after_an_early_exit_raises_instead_of_hanging() -> None:
    errors: list[tuple[str, float, str]] = []

    async def join(convoy: Convoy, who: str) -> None:
        try:
            await convoy.join()
        except trio.ClosedResourceError as exc:
            errors.append((who, trio.current_time(), str(exc)))

    async def main() -> None:
        async with trio.open_nursery() as outer:
            with trio.move_on_after(1.5):
                async with open_convoy(Log(), consumers=1) as convoy:
                    for m in range(3):
                        await convoy.send("a", m)
                    outer.start_soon(join, convoy, "waiting")
                    await trio.sleep(10)
            await join(convoy, "after")

    with pytest.warns(UndeliveredWarning):
        seqlab.run(main, seed=0)
    assert sorted((who, t) for who, t, _ in errors) == [("after", 1.5), ("waiting", 1.5)]
    assert all("key 'a' sequence 1 and later will never be delivered" in e for *_, e in errors)


def test_clean_exit_has_nothing_undelivered_and_no_warning() -> None:
    async def main() -> Convoy:
        async with open_convoy(Log()) as convoy:
            await convoy.send("a", 0)
        return convoy

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convoy = seqlab.run(main, seed=0)
    assert convoy.undelivered == []


def test_cancelled_send_queues_nothing() -> None:
    async def main() -> None:
        async with open_convoy(Log()) as convoy:
            with trio.CancelScope() as scope:
                scope.cancel()
                await convoy.send("a", 0)
            assert convoy.statistics().sent == 0

    seqlab.run(main, seed=0)


# --------------------------------------------------------------------------- observability


def test_trace_is_deterministic_and_names_the_events() -> None:
    async def handler(delivery: Delivery) -> None:
        await trio.sleep(1)
        if delivery.message == "bad" and delivery.attempt == 1:
            raise ValueError("once")

    async def main() -> None:
        async with open_convoy(handler, consumers=2, dedup_window=60, name="pay") as convoy:
            await convoy.send("a", 1, dedup_id=1)
            await convoy.send("a", 1, dedup_id=1)
            await convoy.send("a", "bad")
            await convoy.send("b", 2)

    texts = []
    for _ in range(2):
        rec = seqlab.Recorder()
        seqlab.run(main, seed=5, recorder=rec)
        texts.append(rec.to_text())
    assert texts[0] == texts[1]
    kinds = {e.kind for e in rec.events if e.primitive == "Convoy 'pay'"}
    assert kinds == {"send", "dedup", "lock", "deliver", "done", "retry", "unlock"}
    deliver = next(e for e in rec.events if e.kind == "deliver")
    assert set(deliver.data) == {"key", "sequence", "attempt", "consumer"}
    assert deliver.task.startswith("pay-consumer-")
    # Each delivery ends in done, retry or lock_lost with its own attempt number.
    ends = [
        (e.kind, e.data["key"], e.data["sequence"], e.data["attempt"])
        for e in rec.events
        if e.kind in ("done", "retry")
    ]
    assert ends in (
        [("done", "a", 0, 1), ("done", "b", 0, 1), ("retry", "a", 1, 1), ("done", "a", 1, 2)],
        [("done", "b", 0, 1), ("done", "a", 0, 1), ("retry", "a", 1, 1), ("done", "a", 1, 2)],
    )


def test_statistics_while_running() -> None:
    async def main() -> None:
        async with open_convoy(Log(), consumers=2) as convoy:
            for m in range(4):
                await convoy.send("a", m)
            for m in range(2):
                await convoy.send("b", m)
            await convoy.send("c", 0)
            await trio.sleep(0.5)
            stats = convoy.statistics()
            assert stats.in_flight == 2
            assert set(stats.locked_keys) == {"a", "b"}
            assert dict(stats.backlog) == {"a": 3, "b": 1, "c": 1}
            assert stats.hottest_key == "a"
            assert stats.unsettled == 7
            assert stats.keys == 3
            with pytest.raises(TypeError):
                stats.backlog["a"] = 0  # type: ignore[index]
        stats = convoy.statistics()
        assert stats.max_wait == 3.0  # a's last message, sent at 0, started at 3
        assert stats.hottest_key is None
        assert stats.backlog == {}

    seqlab.run(main, seed=0)


@pytest.mark.parametrize("sync", [False, True])
def test_statistics_seen_from_inside_handlers(sync: bool) -> None:
    # in_flight, the backlog (the message in the handler excluded) and delivered are counted
    # from the sessions and the other counts; a handler sees them as they stand, retries and
    # a dead letter included.
    seen = []
    convoys: list[Convoy] = []

    def look(delivery: Delivery) -> None:
        s = convoys[0].statistics()
        row = (delivery.message, delivery.attempt, delivery.sequence, s.in_flight)
        seen.append((*row, dict(s.backlog), s.delivered, s.retried, s.dead_lettered))
        if delivery.message == "bad":
            raise ValueError("bad")

    async def slow(delivery: Delivery) -> None:
        await trio.sleep(1)
        look(delivery)

    async def main() -> None:
        async with open_convoy(look if sync else slow, consumers=1, max_attempts=2) as convoy:
            convoys.append(convoy)
            for m in ("x", "bad", "y"):
                convoy.send_nowait("a", m)
            convoy.send_nowait("b", "z")  # waits for the one consumer: not in flight
        stats = convoy.statistics()
        assert (stats.sent, stats.delivered, stats.in_flight, stats.unsettled) == (4, 3, 0, 0)

    seqlab.run(main, seed=0)
    assert seen == [
        ("x", 1, 0, 1, {"a": 2, "b": 1}, 0, 0, 0),
        ("bad", 1, 1, 1, {"a": 1, "b": 1}, 1, 0, 0),
        ("bad", 2, 1, 1, {"a": 1, "b": 1}, 1, 1, 0),
        ("y", 1, 2, 1, {"b": 1}, 1, 1, 1),
        ("z", 1, 0, 1, {}, 2, 1, 1),
    ]


def test_deadlock_report_names_the_convoy() -> None:
    async def handler(delivery: Delivery) -> None:
        await trio.Event().wait()

    async def main() -> None:
        async with open_convoy(handler, consumers=2, name="stuck") as convoy:
            await convoy.send("a", 0)

    with pytest.warns(UndeliveredWarning), pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=0)
    text = str(info.value)
    assert "Convoy 'stuck' (1 unsettled, 1 in flight" in text
    assert "1 of 2 consumers idle" in text


# --------------------------------------------------------------------------- bad input


async def _handler(delivery: Delivery) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"consumers": 0}, ValueError, "consumers"),
        ({"consumers": 2.0}, TypeError, "consumers"),
        ({"consumers": True}, TypeError, "consumers"),
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"session_batch": 0}, ValueError, "session_batch"),
        ({"session_batch": "4"}, TypeError, "session_batch"),
        ({"lock_timeout": -1}, ValueError, "lock_timeout"),
        ({"lock_timeout": 0}, ValueError, "lock_timeout"),
        ({"lock_timeout": math.nan}, ValueError, "lock_timeout"),
        ({"lock_timeout": "5"}, TypeError, "lock_timeout"),
        ({"dedup_window": -0.5}, ValueError, "dedup_window"),
        ({"dedup_window": math.nan}, ValueError, "dedup_window"),
        ({"name": 3}, TypeError, "name"),
    ],
)
def test_bad_arguments_fail_at_call_time(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        open_convoy(_handler, **kwargs)


def test_handler_must_be_callable() -> None:
    with pytest.raises(TypeError, match="handler"):
        open_convoy("not a function")  # type: ignore[arg-type]


def test_bad_send_arguments() -> None:
    async def main() -> None:
        async with open_convoy(_handler) as convoy:
            with pytest.raises(TypeError, match="key must be hashable"):
                await convoy.send(["a"], 1)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="dedup_window"):
                await convoy.send("a", 1, dedup_id="x")
        async with open_convoy(_handler, dedup_window=1) as convoy:
            with pytest.raises(TypeError, match="dedup_id must be hashable"):
                await convoy.send("a", 1, dedup_id=["x"])  # type: ignore[arg-type]
            assert convoy.statistics().sent == 0

    seqlab.run(main, seed=0)


# --------------------------------------------------------------------------- the example


def test_competing_consumers_misorder_and_the_convoy_does_not() -> None:
    pool = seqlab.explore(orders.checked_competing_consumers, seeds=range(40))
    assert not pool.ok
    failure = pool.failures[0]
    assert isinstance(failure.error, AssertionError)
    assert "arrived while it was" in str(failure.error)
    with pytest.raises(AssertionError):
        seqlab.run(orders.checked_competing_consumers, seed=failure.seed)
    assert seqlab.explore(orders.checked_convoy_consumers, seeds=range(100)).ok
    for orders_count, consumers in [(2, 1), (4, 2), (5, 8)]:
        result = seqlab.explore(
            orders.checked_convoy_consumers, orders_count, consumers, seeds=range(30)
        )
        assert result.ok, result


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_convoy_keeps_each_order_in_sequence_under_every_strategy(strategy: str) -> None:
    for orders_count, consumers in [(3, 2), (5, 2)]:
        result = seqlab.explore(
            orders.checked_convoy_consumers,
            orders_count,
            consumers,
            seeds=range(15),
            strategy=strategy,
        )
        assert result.ok, str(result)


def test_example_events_are_per_order_in_lifecycle_order() -> None:
    stream = orders.events(4)
    assert len(stream) == 12
    for i in range(4):
        assert [e for o, e in stream if o == f"order-{i}"] == list(orders.LIFECYCLE)
    book = seqlab.run(orders.convoy_consumers, 4, 2, seed=1)
    assert book.status == {f"order-{i}": "shipped" for i in range(4)}
    assert book.violations == []


def test_a_key_that_goes_idle_and_comes_back_keeps_numbering_its_messages() -> None:
    log = Log(duration=0.5)

    async def main() -> Convoy:
        async with open_convoy(log, consumers=2) as convoy:
            for round_ in range(3):
                await convoy.send("a", f"a{round_}")
                await convoy.send("b", f"b{round_}")
                # sent is counted per key (idle keys' numbers and pending keys' next ones)
                stats = convoy.statistics()
                assert (stats.sent, stats.unsettled) == (2 * round_ + 2, 2)
                await convoy.join()  # both keys idle now: the convoy drops them
                assert convoy.statistics().backlog == {}
        return convoy

    convoy = seqlab.run(main, seed=3)
    assert [(d.message, d.sequence) for _, d in log.finished if d.key == "a"] == [
        ("a0", 0),
        ("a1", 1),
        ("a2", 2),
    ]
    assert [d.sequence for _, d in log.finished if d.key == "b"] == [0, 1, 2]
    stats = convoy.statistics()
    assert (stats.keys, stats.sent, stats.delivered) == (2, 6, 6)
    assert not log.violations


def test_idle_keys_are_dropped_and_only_their_sequence_number_is_kept() -> None:
    """100k keys used once cost the convoy a few dozen bytes each once delivered (a key's
    backlog and state used to stay for the convoy's life, about a kilobyte per key)."""
    n = 20_000
    held = 0

    async def handler(delivery: Delivery) -> None:
        await trio.lowlevel.checkpoint()

    async def main() -> Convoy:
        nonlocal held
        async with open_convoy(handler, consumers=4) as convoy:
            keys = [f"key-{i}" for i in range(n)]  # alive before and after: not counted
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for key in keys:
                convoy.send_nowait(key, None)
            await convoy.join()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
            assert convoy.statistics().keys == n
            # The numbering goes on for a key that was dropped.
            convoy.send_nowait("key-7", "again")
        return convoy

    tracemalloc.start()
    try:
        convoy = trio.run(main)
    finally:
        tracemalloc.stop()
    assert held / n < 120, f"{held / n:.0f} bytes kept per idle key"
    assert convoy.statistics().delivered == n + 1


def test_a_key_that_never_runs_dry_keeps_its_backlog_short() -> None:
    # Two messages of "a" always wait (each delivery sends the next but one), so the key's
    # backlog never empties: the settled messages at its front must still be cut off (when
    # they are at least half of it), or it would hold all 2,000 messages sent.
    sizes: list[int] = []
    convoys: list[Convoy] = []

    async def handler(delivery: Delivery) -> None:
        convoy = convoys[0]
        if delivery.message < 2_000:
            convoy.send_nowait("a", delivery.message + 2)
        sizes.append(len(convoy._keys["a"].backlog))
        await trio.lowlevel.checkpoint()

    async def main() -> Convoy:
        async with open_convoy(handler, consumers=1) as convoy:
            convoys.append(convoy)
            convoy.send_nowait("a", 0)
            convoy.send_nowait("a", 1)
        return convoy

    convoy = trio.run(main)
    assert convoy.statistics().delivered == 2_002
    assert max(sizes) < 200  # message and send time per entry: under 100 messages


def test_join_on_an_idle_convoy_returns_at_once_and_is_still_a_checkpoint() -> None:
    async def main() -> None:
        async with open_convoy(Log(duration=0.1)) as convoy:
            for i in range(50):
                await convoy.send(i, i)
            await convoy.join()
            start = trio.current_time()
            await convoy.join()  # idle: returns at once
            assert trio.current_time() == start
            with trio.CancelScope() as scope:
                scope.cancel()
                await convoy.join()  # a checkpoint: the cancellation is delivered
            assert scope.cancelled_caught

    seqlab.run(main, seed=0)
