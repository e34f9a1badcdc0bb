"""Sequence, SequenceBarrier, RingBuffer and Pipeline: the Disruptor-style primitives."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.sequence import (
    AlertError,
    InsufficientCapacity,
    Pipeline,
    RingBuffer,
    Sequence,
    SequenceBarrier,
    StageError,
)

SEEDS = range(30)


# --------------------------------------------------------------------------- Sequence


def test_sequence_starts_at_initial_and_sets_forward() -> None:
    seq = Sequence()
    assert seq.value == -1
    seq.set(3)
    seq.set(3)  # the same value is not "backwards"
    assert seq.value == 3
    assert Sequence(10).value == 10


def test_sequence_rejects_going_backwards() -> None:
    seq = Sequence(5, name="persist")
    with pytest.raises(ValueError, match="cannot go backwards from 5 to 4"):
        seq.set(4)
    assert seq.value == 5


def test_sequence_rejects_bad_types() -> None:
    with pytest.raises(TypeError, match="initial must be an int"):
        Sequence("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be an int"):
        Sequence().set(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be an int"):
        Sequence().complete(True)
    with pytest.raises(TypeError, match="name must be"):
        Sequence(name=3)  # type: ignore[arg-type]


def test_complete_out_of_order_advances_to_contiguous_prefix() -> None:
    seq = Sequence()
    seq.complete(2)
    seq.complete(1)
    assert seq.value == -1
    assert seq.statistics() == seqlab_stats(value=-1, pending=2)
    seq.complete(0)
    assert seq.value == 2
    seq.complete(4)
    assert seq.value == 2
    seq.complete(3)
    assert seq.value == 4
    assert seq.statistics().pending == 0


def seqlab_stats(value: int, pending: int) -> Any:
    from seqlab.sequence import SequenceStatistics

    return SequenceStatistics(value=value, pending=pending)


def test_complete_twice_is_an_error() -> None:
    seq = Sequence()
    seq.complete(0)
    seq.complete(5)
    with pytest.raises(ValueError, match="already completed"):
        seq.complete(0)
    with pytest.raises(ValueError, match="already completed"):
        seq.complete(5)


def test_set_absorbs_pending_completions() -> None:
    seq = Sequence()
    for n in (2, 4, 5, 7):
        seq.complete(n)
    seq.set(3)  # 2 is covered; 4 and 5 follow contiguously
    assert seq.value == 5
    assert seq.statistics().pending == 1
    seq.complete(6)
    assert seq.value == 7


def test_statistics_are_frozen() -> None:
    stats = Sequence().statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.value = 3  # type: ignore[misc]


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(30))), st.integers(1, 30))
def test_complete_watermark_property(order: list[int], count: int) -> None:
    seq = Sequence()
    done: set[int] = set()
    for n in order[:count]:
        seq.complete(n)
        done.add(n)
        watermark = -1
        while watermark + 1 in done:
            watermark += 1
        assert seq.value == watermark
        assert seq.statistics().pending == len(done) - (watermark + 1)


# --------------------------------------------------------------------------- SequenceBarrier


def test_barrier_needs_sequences() -> None:
    with pytest.raises(TypeError, match="at least one dependency"):
        SequenceBarrier()
    with pytest.raises(TypeError, match=r"dependencies\[1\] must be a Sequence"):
        SequenceBarrier(Sequence(), 3)  # type: ignore[arg-type]


def test_wait_for_returns_highest_available_in_all_dependencies() -> None:
    async def main() -> list[tuple[float, int]]:
        a, b = Sequence(), Sequence()
        barrier = SequenceBarrier(a, b)
        got = []

        async def consumer() -> None:
            first = await barrier.wait_for(0)
            got.append((trio.current_time(), first))
            second = await barrier.wait_for(4)
            got.append((trio.current_time(), second))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.sleep(1)
            a.set(5)  # b still at -1: nothing yet
            await trio.sleep(1)
            b.complete(0)
            await trio.sleep(1)
            b.set(3)
            a.set(9)
            await trio.sleep(1)
            b.set(7)
        return got

    for seed in SEEDS:
        assert seqlab.run(main, seed=seed) == [(2.0, 0), (4.0, 7)]


def test_wait_for_is_a_checkpoint_even_when_available() -> None:
    async def main() -> None:
        seq = Sequence(10)
        barrier = SequenceBarrier(seq)
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await barrier.wait_for(3)
        assert await barrier.wait_for(3) == 10

    seqlab.run(main, seed=1)


def test_cancelled_wait_leaves_barrier_usable() -> None:
    async def main() -> int:
        seq = Sequence()
        barrier = SequenceBarrier(seq)
        with trio.move_on_after(1):
            await barrier.wait_for(0)
        assert barrier.statistics().tasks_waiting == 0
        seq.set(2)
        return await barrier.wait_for(0)

    assert seqlab.run(main, seed=3) == 2


def test_alert_wakes_current_and_future_waiters_until_cleared() -> None:
    async def main() -> list[str]:
        seq = Sequence()
        barrier = SequenceBarrier(seq)
        log = []

        async def waiter(i: int) -> None:
            try:
                await barrier.wait_for(0)
            except AlertError:
                log.append(f"alerted {i} at {trio.current_time()}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, 1)
            nursery.start_soon(waiter, 2)
            await trio.sleep(5)
            assert barrier.statistics().tasks_waiting == 2
            barrier.alert()
        with pytest.raises(AlertError):
            await barrier.wait_for(0)
        assert barrier.alerted
        barrier.clear_alert()
        seq.set(0)
        assert await barrier.wait_for(0) == 0
        return sorted(log)

    for seed in SEEDS:
        assert seqlab.run(main, seed=seed) == ["alerted 1 at 5.0", "alerted 2 at 5.0"]


def test_barrier_statistics_and_deadlock_description() -> None:
    a, b = Sequence(3, name="persist"), Sequence(1, name="moderate")
    barrier = SequenceBarrier(a, b, name="deliver")
    stats = barrier.statistics()
    assert (stats.available, stats.dependencies, stats.alerted) == (1, (3, 1), False)

    async def main() -> None:
        await barrier.wait_for(2)

    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=0)
    assert (
        "main waits at SequenceBarrier 'deliver' (wants 2; available 1: "
        "Sequence 'persist' at 3, Sequence 'moderate' at 1)" in str(info.value)
    )


# --------------------------------------------------------------------------- RingBuffer


@pytest.mark.parametrize("size", [0, -4, 3, 6, 100])
def test_ring_size_must_be_a_power_of_two(size: int) -> None:
    with pytest.raises(ValueError, match="size must be a power of two"):
        RingBuffer(size)
    with pytest.raises(ValueError, match="size must be a power of two"):
        Pipeline(size)


@pytest.mark.parametrize("size", [4.0, "4", True, None])
def test_ring_size_must_be_an_int(size: Any) -> None:
    with pytest.raises(TypeError, match="size must be an int"):
        RingBuffer(size)


def test_factory_preallocates_slots() -> None:
    ring = RingBuffer(4, factory=list)
    seq = ring.try_next()
    ring[seq].append("x")
    assert ring[seq] == ["x"]
    with pytest.raises(TypeError, match="factory must be a callable"):
        RingBuffer(4, factory=3)  # type: ignore[arg-type]


def test_try_next_raises_when_full() -> None:
    ring = RingBuffer(4)
    consumer = Sequence()
    ring.add_gating(consumer)
    assert [ring.try_next() for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(InsufficientCapacity, match="is full"):
        ring.try_next()
    with pytest.raises(trio.WouldBlock):  # InsufficientCapacity is a WouldBlock
        ring.try_next()
    assert ring.statistics().remaining_capacity == 0
    consumer.set(1)  # slots of 0 and 1 are free again
    assert ring.try_next(2) == 5
    with pytest.raises(InsufficientCapacity):
        ring.try_next()
    with pytest.raises(ValueError, match="n must be between 1 and the ring size 4"):
        ring.try_next(5)


def test_ring_indexing_and_publish_checks() -> None:
    ring = RingBuffer(2)
    with pytest.raises(IndexError, match="not in RingBuffer"):
        ring[0]
    lo = ring.try_next()
    ring[lo] = "a"
    ring.publish(lo)
    with pytest.raises(ValueError, match="already published"):
        ring[lo] = "b"
    with pytest.raises(ValueError, match="already published"):
        ring.publish(lo)
    with pytest.raises(IndexError):
        ring.publish(7)
    assert ring.cursor == 0 and ring[0] == "a"


def test_out_of_order_publish_moves_cursor_over_contiguous_prefix() -> None:
    ring = RingBuffer(8)
    a, b, c = ring.try_next(), ring.try_next(), ring.try_next(2)
    assert (a, b, c) == (0, 1, 3)
    ring.publish(c - 1, c)
    assert ring.cursor == -1
    ring.publish(b)
    assert ring.cursor == -1
    ring.publish(a)
    assert ring.cursor == 3


async def _slow_consumer_scenario(count: int, size: int) -> tuple[list[int], float]:
    ring = RingBuffer(size, name="small")
    consumed = Sequence(name="consumer")
    ring.add_gating(consumed)
    barrier = SequenceBarrier(ring)
    received: list[int] = []

    async def consumer() -> None:
        nxt = 0
        while nxt < count:
            available = await barrier.wait_for(nxt)
            for s in range(nxt, available + 1):
                await trio.sleep(1)  # slow: the producer will find the ring full
                received.append(ring[s])
            consumed.set(available)
            nxt = available + 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        for i in range(count):
            seq = await ring.next()
            ring[seq] = i
            ring.publish(seq)
            assert ring.cursor - consumed.value <= size
    return received, trio.current_time()


def test_small_ring_slow_consumer_delivers_everything_in_order() -> None:
    for seed in SEEDS:
        received, elapsed = seqlab.run(_slow_consumer_scenario, 100, 4, seed=seed)
        assert received == list(range(100))
        assert elapsed == 100.0  # one virtual second per event, no overlap lost


def test_ring_next_waits_and_describes_itself_in_deadlock() -> None:
    async def main() -> None:
        ring = RingBuffer(2, name="r")
        ring.add_gating(Sequence(name="stuck"))
        await ring.next(2)
        await ring.next()

    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=0)
    assert "main waits at RingBuffer 'r' (full: size 2, claimed 1" in str(info.value)


def test_cancelled_next_claims_nothing() -> None:
    async def main() -> None:
        ring = RingBuffer(2)
        ring.add_gating(Sequence())
        ring.try_next(2)
        with trio.move_on_after(3):
            await ring.next()
        assert ring.statistics().claimed == 1
        assert trio.current_time() == 3

    seqlab.run(main, seed=0)


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from([1, 2, 4, 8]),
    st.lists(st.integers(1, 8), min_size=1, max_size=20),
    st.integers(0, 10_000),
)
def test_ring_ordering_property(size: int, claims: list[int], seed: int) -> None:
    claims = [min(n, size) for n in claims]
    total = sum(claims)

    async def main() -> list[int]:
        ring = RingBuffer(size)
        consumed = Sequence()
        ring.add_gating(consumed)
        barrier = SequenceBarrier(ring)
        out: list[int] = []

        async def consumer() -> None:
            nxt = 0
            while nxt < total:
                available = await barrier.wait_for(nxt)
                out.extend(ring[s] for s in range(nxt, available + 1))
                consumed.set(available)
                nxt = available + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            value = 0
            for n in claims:
                hi = await ring.next(n)
                for s in range(hi - n + 1, hi + 1):
                    ring[s] = value
                    value += 1
                ring.publish(hi - n + 1, hi)
        return out

    assert seqlab.run(main, seed=seed) == list(range(total))


# --------------------------------------------------------------------------- Pipeline: building


def _noop(event: Any, sequence: int, end_of_batch: bool) -> None:
    pass


def test_stage_dependencies_must_exist_already() -> None:
    pipe = Pipeline(8)
    pipe.stage("persist", _noop)
    with pytest.raises(ValueError, match="unknown stage 'moderate'.*dependency order"):
        pipe.stage("deliver", _noop, after=("persist", "moderate"))
    with pytest.raises(ValueError, match="cannot depend on itself"):
        pipe.stage("loop", _noop, after="loop")
    with pytest.raises(ValueError, match="already has a stage named 'persist'"):
        pipe.stage("persist", _noop)
    assert [s.name for s in pipe.stages] == ["persist"]


def test_stage_of_another_pipeline_is_rejected() -> None:
    other = Pipeline(4, name="other").stage("x", _noop)
    pipe = Pipeline(4, name="mine")
    with pytest.raises(ValueError, match="belongs to Pipeline 'other', not Pipeline 'mine'"):
        pipe.stage("y", _noop, after=(other,))


def test_stage_argument_errors() -> None:
    pipe = Pipeline(4)
    with pytest.raises(TypeError, match="handler must be callable"):
        pipe.stage("a", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error must be"):
        pipe.stage("a", _noop, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        pipe.stage("", _noop)
    with pytest.raises(TypeError, match="after must hold Stage objects or stage names"):
        pipe.stage("a", _noop, after=(3,))  # type: ignore[arg-type]


def test_run_without_stages_and_publish_outside_run() -> None:
    async def main() -> None:
        pipe = Pipeline(4)
        with pytest.raises(RuntimeError, match="has no stages"):
            async with pipe.run():
                pass
        pipe.stage("a", _noop)
        with pytest.raises(trio.ClosedResourceError, match="not running"):
            await pipe.publish(1)
        async with pipe.run() as publish:
            await publish(1)
            with pytest.raises(RuntimeError, match="cannot add stage"):
                pipe.stage("b", _noop)
        with pytest.raises(trio.ClosedResourceError):
            await publish(2)

    seqlab.run(main, seed=0)


# --------------------------------------------------------------------------- Pipeline: running


def test_single_stage_small_ring_slow_handler() -> None:
    async def main() -> tuple[list[int], float, int]:
        pipe = Pipeline(4, name="slow")
        seen: list[int] = []

        async def slow(event: int, sequence: int, end_of_batch: bool) -> None:
            await trio.sleep(1)
            assert event == sequence  # never overwritten before it was handled
            seen.append(event)

        stage = pipe.stage("slow", slow)
        async with pipe.run() as publish:
            for i in range(100):
                await publish(i)
                assert pipe.cursor - stage.sequence.value <= 4
        return seen, trio.current_time(), stage.statistics().largest_batch

    for seed in SEEDS:
        seen, elapsed, largest = seqlab.run(main, seed=seed)
        assert seen == list(range(100))
        assert elapsed == 100.0
        assert largest == 4


@dataclasses.dataclass
class _Event:
    n: int
    persisted: bool = False
    moderated: bool = False


async def _diamond(count: int, size: int) -> dict[str, Any]:
    pipe = Pipeline(size, name="chat")
    delivered: list[int] = []
    flags: list[tuple[int, bool]] = []

    async def persist(e: _Event, s: int, end: bool) -> None:
        await trio.lowlevel.checkpoint()
        e.persisted = True

    def moderate(e: _Event, s: int, end: bool) -> None:
        e.moderated = True

    async def deliver(e: _Event, s: int, end: bool) -> None:
        assert e.persisted and e.moderated, f"event {s} delivered before both were done"
        delivered.append(e.n)
        flags.append((s, end))
        await trio.sleep(0.5)  # deliver lags, so it finds several events at once

    p = pipe.stage("persist", persist)
    m = pipe.stage("moderate", moderate)
    d = pipe.stage("deliver", deliver, after=(p, m))
    async with pipe.run() as publish:
        for i in range(count):
            await publish(_Event(i))
    return {
        "delivered": delivered,
        "flags": flags,
        "stats": d.statistics(),
        "pipe": pipe.statistics(),
        "time": trio.current_time(),
    }


def test_diamond_deliver_sees_both_done_in_order_and_batches() -> None:
    for seed in range(60):
        result = seqlab.run(_diamond, 40, 8, seed=seed)
        assert result["delivered"] == list(range(40))
        stats = result["stats"]
        assert stats.events == 40 and stats.sequence == 39
        assert stats.largest_batch > 1
        assert stats.batches < 40
        # end_of_batch is true exactly once per batch, on its last event.
        assert sum(end for _, end in result["flags"]) == stats.batches
        assert result["flags"][-1] == (39, True)
        assert result["time"] == 20.0
        assert [s.sequence for s in result["pipe"].stages] == [39, 39, 39]


def test_final_stages_gate_the_producer() -> None:
    async def main() -> list[tuple[int, int]]:
        pipe = Pipeline(2)
        fast = pipe.stage("fast", _noop)
        gaps = []

        async def slow(e: int, s: int, end: bool) -> None:
            await trio.sleep(1)

        slow_stage = pipe.stage("slow", slow)  # nothing depends on it: it gates too
        async with pipe.run() as publish:
            for i in range(10):
                await publish(i)
                gaps.append((pipe.cursor - slow_stage.sequence.value, fast.sequence.value))
        return gaps

    gaps = seqlab.run(main, seed=5)
    assert max(g for g, _ in gaps) <= 2


def test_run_exit_drains_every_stage() -> None:
    async def main() -> list[list[int]]:
        pipe = Pipeline(16)
        seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}

        def make(name: str, delay: float) -> Any:
            async def handler(e: int, s: int, end: bool) -> None:
                await trio.sleep(delay)
                seen[name].append(e)

            return handler

        a = pipe.stage("a", make("a", 0.1))
        b = pipe.stage("b", make("b", 0.3), after=a)
        pipe.stage("c", make("c", 0.2), after="a")
        assert [s.name for s in b.after] == ["a"]
        async with pipe.run() as publish:
            for i in range(10):
                await publish(i)
        return [seen["a"], seen["b"], seen["c"]]

    for seed in SEEDS:
        assert seqlab.run(main, seed=seed) == [list(range(10))] * 3


def test_publish_many_and_sync_producer_checkpoint_rule() -> None:
    async def main() -> tuple[list[int], int, int]:
        pipe = Pipeline(8)
        out: list[int] = []
        stage = pipe.stage("s", lambda e, s, end: out.append(e))
        async with pipe.run() as publish:
            assert await pipe.publish_many(range(20)) == 20
            for i in range(20, 40):
                await publish(i)  # a loop that never blocks elsewhere still lets stages run
        stats = stage.statistics()
        return out, stats.largest_batch, stats.batches

    out, largest, batches = seqlab.run(main, seed=2)
    assert out == list(range(40))
    assert largest <= 8
    assert batches >= 5


def test_publish_always_checkpoints_and_publish_nowait_never_does() -> None:
    import trio.testing
    from trio.testing import assert_checkpoints, assert_no_checkpoints

    async def main() -> list[int]:
        pipe = Pipeline(4)
        batch_ends: list[int] = []
        pipe.stage("s", lambda e, s, end: batch_ends.append(s) if end else None)
        async with pipe.run() as publish:
            with assert_checkpoints():
                await publish(0)  # room in the ring: still a checkpoint
            await trio.testing.wait_all_tasks_blocked()  # the stage has taken event 0
            with assert_no_checkpoints():
                for i in range(1, 5):
                    pipe.publish_nowait(i)
                # Full (4 published since the stage last ran): nowait refuses, never waits.
                with pytest.raises(trio.WouldBlock, match="is full"):
                    pipe.publish_nowait(5)
            assert pipe.cursor == 4
            with assert_checkpoints():
                await publish(5)  # waits for room
        return batch_ends

    # The stage ran after the first publish (a batch ending at 0), took the burst 1..4 whole,
    # then the last event.
    assert seqlab.run(main, seed=0) == [0, 4, 5]


def test_a_cancelled_publish_publishes_nothing() -> None:
    async def main() -> tuple[int, list[Any]]:
        pipe = Pipeline(4)
        out: list[Any] = []
        pipe.stage("s", lambda e, s, end: out.append(e))
        async with pipe.run() as publish:
            with trio.CancelScope() as scope:
                scope.cancel()
                await publish("never")
            await publish(1)
        return pipe.cursor, out

    assert seqlab.run(main, seed=0) == (0, [1])


def test_publish_nowait_outside_run() -> None:
    pipe = Pipeline(4)
    pipe.stage("s", _noop)
    with pytest.raises(trio.ClosedResourceError, match="not running"):
        pipe.publish_nowait(1)


def test_second_run_continues_sequences() -> None:
    async def main() -> list[int]:
        pipe = Pipeline(4)
        out: list[int] = []
        pipe.stage("s", lambda e, s, end: out.append(s))
        for start in (0, 5):
            async with pipe.run() as publish:
                for i in range(start, start + 5):
                    await publish(i)
        return out

    assert seqlab.run(main, seed=0) == list(range(10))


def test_stage_added_between_runs_sees_only_new_events() -> None:
    async def main() -> list[tuple[int, int]]:
        pipe = Pipeline(4)
        pipe.stage("a", _noop)
        async with pipe.run() as publish:
            for i in range(10):
                await publish(i)
        seen: list[tuple[int, int]] = []
        late = pipe.stage("late", lambda e, s, end: seen.append((s, e)))
        assert late.sequence.value == 9
        async with pipe.run() as publish:
            await publish(10)
        return seen

    # The ring only holds events 6..9 by now: replaying 0..9 would read overwritten slots.
    assert seqlab.run(main, seed=0) == [(10, 10)]


# --------------------------------------------------------------------------- Pipeline: errors


class Boom(Exception):
    pass


def test_default_error_policy_stops_pipeline_and_raises_bare() -> None:
    async def main() -> None:
        pipe = Pipeline(4)
        handled: list[int] = []

        def fragile(e: int, s: int, end: bool) -> None:
            if e == 7:
                raise Boom("bad event 7")
            handled.append(e)

        pipe.stage("fragile", fragile)
        pipe.stage("after", _noop, after="fragile")
        try:
            async with pipe.run() as publish:
                for i in range(1000):
                    await publish(i)
                raise AssertionError("the producer should have been stopped")
        except Boom as exc:
            assert "stage 'fragile' handling sequence 7" in "".join(exc.__notes__)
            assert handled == list(range(7))
            assert not pipe.statistics().running
        else:
            raise AssertionError("Boom did not come out of run()")

    for seed in SEEDS:
        seqlab.run(main, seed=seed)


def test_stage_failure_wakes_an_outside_producer() -> None:
    async def main() -> list[str]:
        pipe = Pipeline(2)
        log: list[str] = []

        async def fail_late(e: int, s: int, end: bool) -> None:
            await trio.sleep(1)
            raise Boom

        pipe.stage("x", fail_late)

        async def runner() -> None:
            try:
                async with pipe.run():
                    await trio.sleep(10)
            except Boom:
                log.append(f"run raised Boom at {trio.current_time()}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner)
            await trio.sleep(0.5)
            try:
                for i in range(10):  # from another task: the third publish waits for room
                    await pipe.publish(i)
            except trio.ClosedResourceError as exc:
                log.append(f"producer woken at {trio.current_time()}: {exc}")
        return log

    for seed in SEEDS:
        assert sorted(seqlab.run(main, seed=seed)) == [
            "producer woken at 1.5: Pipeline stopped: a stage failed",
            "run raised Boom at 1.5",
        ]


def test_skip_policy_records_and_continues() -> None:
    async def main() -> tuple[list[int], list[StageError], list[int]]:
        pipe = Pipeline(4)
        out: list[int] = []

        def odd_fails(e: int, s: int, end: bool) -> None:
            if e % 3 == 0:
                raise Boom(e)

        skipper = pipe.stage("check", odd_fails, on_error="skip")
        pipe.stage("deliver", lambda e, s, end: out.append(e), after=skipper)
        async with pipe.run() as publish:
            for i in range(10):
                await publish(i)
        return out, skipper.errors, [skipper.statistics().errors]

    out, errors, count = seqlab.run(main, seed=1)
    assert out == list(range(10))  # skipping means "this stage gave up", the event flows on
    assert [(e.stage, e.sequence, e.event) for e in errors] == [
        ("check", 0, 0),
        ("check", 3, 3),
        ("check", 6, 6),
        ("check", 9, 9),
    ]
    assert count == [4]


def test_skip_policy_with_an_async_handler_skips_several_errors_in_one_batch() -> None:
    async def main() -> tuple[list[int], list[int], int]:
        pipe = Pipeline(16)
        handled: list[int] = []

        async def even_fails(e: int, s: int, end: bool) -> None:
            await trio.lowlevel.checkpoint()
            if e % 2 == 0:
                raise Boom(e)
            handled.append(e)

        stage = pipe.stage("check", even_fails, on_error="skip")
        async with pipe.run():
            for i in range(8):
                pipe.publish_nowait(i)  # no yield in between: the stage takes one batch of 8
        return handled, [e.sequence for e in stage.errors], stage.statistics().batches

    assert seqlab.run(main, seed=0) == ([1, 3, 5, 7], [0, 2, 4, 6], 1)


def test_callable_error_policy_and_failing_policy() -> None:
    async def main() -> list[tuple[str, int]]:
        logged: list[tuple[str, int]] = []
        pipe = Pipeline(4)

        def fail(e: int, s: int, end: bool) -> None:
            raise Boom("x")

        pipe.stage("a", fail, on_error=lambda exc, e, s: logged.append((type(exc).__name__, s)))
        async with pipe.run() as publish:
            await publish(0)
            await publish(1)

        def bad_policy(exc: BaseException, e: Any, s: int) -> None:
            raise KeyError("policy broke")

        pipe2 = Pipeline(4)
        pipe2.stage("b", fail, on_error=bad_policy)
        with pytest.raises(KeyError):
            async with pipe2.run() as publish:
                await publish(0)
                await trio.sleep(1)
        return logged

    assert seqlab.run(main, seed=0) == [("Boom", 0), ("Boom", 1)]


def test_body_error_cancels_stages_and_propagates_bare() -> None:
    async def main() -> None:
        pipe = Pipeline(4)

        async def forever(e: int, s: int, end: bool) -> None:
            await trio.sleep_forever()

        pipe.stage("stuck", forever)
        with pytest.raises(Boom):
            async with pipe.run() as publish:
                await publish(1)
                await trio.sleep(1)
                raise Boom
        assert trio.current_time() == 1

    seqlab.run(main, seed=0)


def test_outer_cancellation_while_producer_waits_for_room() -> None:
    async def main() -> float:
        pipe = Pipeline(2)

        async def forever(e: int, s: int, end: bool) -> None:
            await trio.sleep_forever()

        pipe.stage("stuck", forever)
        with trio.move_on_after(5):
            async with pipe.run() as publish:
                for i in range(10):
                    await publish(i)
        assert pipe.statistics().producers_waiting == 0
        return trio.current_time()

    assert seqlab.run(main, seed=0) == 5.0


def test_pipeline_deadlock_names_the_stage() -> None:
    async def main() -> None:
        pipe = Pipeline(4, name="chat")
        never = trio.Event()

        async def waits(e: int, s: int, end: bool) -> None:
            await never.wait()

        pipe.stage("persist", waits)
        pipe.stage("deliver", _noop, after="persist")
        async with pipe.run() as publish:
            await publish("m")

    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=0)
    text = str(info.value)
    assert "Pipeline 'chat' stage 'persist' at -1 (in its handler, batch 0..0)" in text
    assert "Pipeline 'chat' stage 'deliver' at -1 (waits for 0: persist at -1)" in text


# --------------------------------------------------------------------------- tracing


def test_trace_events_and_determinism() -> None:
    def traced(seed: int) -> seqlab.Recorder:
        rec = seqlab.Recorder()
        seqlab.run(_diamond, 6, 4, seed=seed, recorder=rec)
        return rec

    rec = traced(4)
    kinds = {(e.primitive, e.kind) for e in rec.events}
    assert {
        ("Pipeline 'chat'", "claim"),
        ("Pipeline 'chat'", "publish"),
        ("Pipeline 'chat'", "advance"),
        ("Pipeline 'chat'", "wait"),
    } <= kinds
    advances = [e.data for e in rec.events if e.kind == "advance"]
    assert set(advances[0]) == {"stage", "sequence", "batch"}
    delivered = [a for a in advances if a["stage"] == "deliver"]
    assert sum(a["batch"] for a in delivered) == 6
    assert delivered[-1]["sequence"] == 5
    waits = [e.data for e in rec.events if e.kind == "wait" and "stage" in e.data]
    assert all(set(w) == {"stage", "wanted", "available"} for w in waits)
    # Publishes between two yields of the producer are traced as one range, before any stage
    # sees them; together the ranges cover every event once, in order.
    covered = [
        s
        for e in rec.events
        if e.kind == "publish"
        for s in range(e.data.get("lo", e.data["sequence"]), e.data["sequence"] + 1)
    ]
    assert covered == list(range(6))
    first_publish = next(i for i, e in enumerate(rec.events) if e.kind == "publish")
    first_advance = next(i for i, e in enumerate(rec.events) if e.kind == "advance")
    assert first_publish < first_advance
    graph = {e.data["stage"]: e.data["after"] for e in rec.events if e.kind == "stage"}
    assert graph == {"persist": [], "moderate": [], "deliver": ["persist", "moderate"]}
    assert rec.to_text() == traced(4).to_text()


def test_standalone_primitives_trace() -> None:
    async def main() -> None:
        ring = RingBuffer(4, name="r")
        seq = ring.try_next()
        ring.publish(seq)
        s = Sequence(name="s")
        s.set(0)
        s.complete(2)
        s.complete(1)

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    events = [(e.primitive, e.kind, dict(e.data)) for e in rec.events if e.primitive != "task"]
    assert events == [
        ("RingBuffer 'r'", "claim", {"sequence": 0}),
        ("RingBuffer 'r'", "publish", {"sequence": 0, "cursor": 0}),
        ("Sequence 's'", "advance", {"sequence": 0}),
        ("Sequence 's'", "advance", {"sequence": 2}),
    ]


def test_cancelled_mid_batch_then_run_again_resumes_at_the_batch_start() -> None:
    async def main() -> tuple[list[int], list[int], float]:
        pipe = Pipeline(8)
        first: list[int] = []
        slow_mode = [True]

        async def handler(e: int, s: int, end: bool) -> None:
            if slow_mode[0]:
                await trio.sleep(1)
            first.append(e)

        stage = pipe.stage("h", handler)
        with trio.move_on_after(2.5):  # cancels the drain, in the middle of the batch 0..5
            async with pipe.run():
                for i in range(6):
                    pipe.publish_nowait(i)  # one batch 0..5
        assert stage.sequence.value == -1  # the batch did not finish, so it did not count
        assert pipe.cursor == 5
        handled_before = list(first)
        first.clear()
        slow_mode[0] = False
        async with pipe.run():
            pass  # nothing new published: leaving drains what is still in the ring
        return handled_before, first, trio.current_time()

    before, after, now = seqlab.run(main, seed=0)
    assert before == [0, 1]
    assert after == [0, 1, 2, 3, 4, 5]  # at-least-once: the interrupted batch is redone
    assert now == 2.5


@pytest.mark.parametrize("size, count", [(2, 5), (4, 4), (4, 9), (8, 3)])
def test_publish_many_takes_no_event_beyond_the_free_slots(size: int, count: int) -> None:
    """publish_many fills the ring up to its free slots and waits; an event drawn from the
    iterator while the ring is full would be lost."""
    seen: list[int] = []
    drawn: list[int] = []

    async def slow(event: int, sequence: int, end_of_batch: bool) -> None:
        await trio.sleep(1)
        seen.append(event)

    def events():
        for i in range(count):
            drawn.append(i)
            yield i

    async def main() -> int:
        pipe = Pipeline(size)
        pipe.stage("slow", slow)
        async with pipe.run():
            return await pipe.publish_many(events())

    assert seqlab.run(main, seed=0) == count
    assert seen == drawn == list(range(count))
