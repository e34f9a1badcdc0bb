"""Barrier: ideas from CPython's asyncio Barrier tests and threading.Barrier's action rules.

Every scenario runs under seqlab.run over several seeds, on virtual time, so the times
asserted below are exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter, defaultdict
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.barrier import Barrier, BarrierStatistics, BrokenBarrierError

SEEDS = range(6)


def run_seeds(fn: Any, seeds: Any = SEEDS) -> list[Any]:
    return [seqlab.run(fn, seed=seed) for seed in seeds]


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("parties", [0, -1, -100])
def test_parties_below_one_is_a_value_error(parties: int) -> None:
    with pytest.raises(ValueError, match="parties must be at least 1"):
        Barrier(parties)


@pytest.mark.parametrize("parties", [True, False, 2.0, "3", None, [2]])
def test_non_int_parties_is_a_type_error(parties: Any) -> None:
    with pytest.raises(TypeError, match="parties must be an int"):
        Barrier(parties)


def test_non_callable_action_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="action must be a plain function"):
        Barrier(2, action=42)  # type: ignore[arg-type]


def test_async_action_is_a_type_error() -> None:
    async def merge() -> None:
        pass

    with pytest.raises(TypeError, match="action must be a plain \\(non-async\\) function"):
        Barrier(2, action=merge)


def test_non_str_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        Barrier(2, name=7)  # type: ignore[arg-type]


def test_fresh_barrier_state_and_statistics() -> None:
    b = Barrier(3, name="phase")
    assert (b.parties, b.n_waiting, b.broken, b.generation) == (3, 0, False, 0)
    stats = b.statistics()
    assert stats == BarrierStatistics(parties=3, n_waiting=0, broken=False, generation=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.n_waiting = 1  # type: ignore[misc]
    assert repr(b) == "<Barrier 'phase': generation 0, 0 of 3 arrived>"
    assert repr(Barrier(2)) == "<Barrier: generation 0, 0 of 2 arrived>"


# --------------------------------------------------------------------------- filling


def test_one_party_never_blocks_and_runs_the_action_every_time() -> None:
    async def main() -> tuple[list[int], list[int], float]:
        calls: list[int] = []
        b = Barrier(1, action=lambda: calls.append(b.generation))
        got = [await b.wait() for _ in range(3)]
        return got, calls, trio.current_time()

    for got, calls, now in run_seeds(main):
        assert got == [0, 0, 0]
        assert calls == [0, 1, 2]
        assert now == 0.0


def test_filling_task_by_task() -> None:
    async def main() -> None:
        b = Barrier(3)
        returned: list[tuple[int, int, float]] = []

        async def worker(i: int) -> None:
            await trio.sleep(i)
            index = await b.wait()
            returned.append((i, index, trio.current_time()))

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(worker, i)
            for expected in (1, 2):
                await trio.sleep(expected - 0.5 - trio.current_time())
                assert b.n_waiting == expected
                assert returned == []
        assert sorted(returned) == [(0, 0, 2.0), (1, 1, 2.0), (2, 2, 2.0)]
        assert b.n_waiting == 0
        assert b.generation == 1

    run_seeds(main)


def test_simultaneous_arrivals_get_indexes_in_arrival_order() -> None:
    async def main() -> tuple[list[str], dict[str, int]]:
        b = Barrier(5)
        arrival: list[str] = []
        index: dict[str, int] = {}

        async def worker(name: str) -> None:
            await trio.lowlevel.checkpoint()
            arrival.append(name)  # no checkpoint between this and the arrival in wait()
            index[name] = await b.wait()

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(worker, f"w{i}")
        return arrival, index

    orders = set()
    for arrival, index in run_seeds(main, range(20)):
        assert [index[name] for name in arrival] == [0, 1, 2, 3, 4]
        orders.add(tuple(arrival))
    assert len(orders) > 1, "the seeds should produce different arrival orders"


def test_tasks_waiting_several_times_get_a_permutation_each_generation() -> None:
    parties, rounds = 4, 5

    async def main() -> None:
        b = Barrier(parties)
        by_round: dict[int, list[int]] = defaultdict(list)

        async def worker(i: int) -> None:
            for r in range(rounds):
                await trio.sleep((i * 7 + r * 3) % 5)
                by_round[r].append(await b.wait())

        async with trio.open_nursery() as nursery:
            for i in range(parties):
                nursery.start_soon(worker, i)
        assert b.generation == rounds
        for r in range(rounds):
            assert sorted(by_round[r]) == list(range(parties))

    run_seeds(main)


def test_extra_arrivals_wait_for_the_next_generation() -> None:
    async def main() -> None:
        b = Barrier(2)
        done: dict[str, tuple[int, float]] = {}

        async def worker(name: str, delay: float) -> None:
            await trio.sleep(delay)
            done[name] = (await b.wait(), trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "a", 0)
            nursery.start_soon(worker, "b", 1)
            nursery.start_soon(worker, "c", 2)
            nursery.start_soon(worker, "d", 10)
        assert done == {"a": (0, 1.0), "b": (1, 1.0), "c": (0, 10.0), "d": (1, 10.0)}
        assert b.generation == 2

    run_seeds(main)


def test_back_to_back_generations_need_no_draining() -> None:
    # asyncio's barrier has a "draining" state that holds newcomers back until every
    # released task has resumed. Here release is instantaneous: a released task that waits
    # again joins the next generation at once, whether or not the others have resumed.
    async def main() -> None:
        b = Barrier(2)
        got: list[list[int]] = [[], []]

        async def worker(i: int) -> None:
            for _ in range(3):
                got[i].append(await b.wait())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 1)
        assert trio.current_time() == 0.0
        assert b.generation == 3
        assert [sorted(pair) for pair in zip(*got, strict=True)] == [[0, 1]] * 3

    run_seeds(main)


def test_async_with_gives_the_index() -> None:
    async def main() -> list[int]:
        b = Barrier(3)
        got: list[int] = []

        async def worker(i: int) -> None:
            await trio.sleep(i)
            async with b as index:
                got.append(index)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(worker, i)
        return got

    for got in run_seeds(main):
        assert sorted(got) == [0, 1, 2]


# --------------------------------------------------------------------------- action


def test_action_runs_once_in_the_last_arriver_before_anyone_is_released() -> None:
    async def main() -> None:
        returned: list[int] = []
        action_log: list[tuple[int, int, trio.lowlevel.Task]] = []
        b = Barrier(
            3,
            action=lambda: action_log.append(
                (b.generation, len(returned), trio.lowlevel.current_task())
            ),
        )
        last_task: dict[int, trio.lowlevel.Task] = {}

        async def worker(i: int) -> None:
            for r in range(4):
                await trio.sleep((i + r) % 3)
                index = await b.wait()
                if index == b.parties - 1:
                    last_task[r] = trio.lowlevel.current_task()
                returned.append(index)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(worker, i)
        assert [g for g, _, _ in action_log] == [0, 1, 2, 3]
        # Before each action, exactly the earlier generations had returned.
        assert [n for _, n, _ in action_log] == [0, 3, 6, 9]
        assert [t for _, _, t in action_log] == [last_task[r] for r in range(4)]

    run_seeds(main)


def test_failing_action_breaks_the_barrier() -> None:
    async def main() -> None:
        def action() -> None:
            raise ZeroDivisionError("merge failed")

        b = Barrier(3, action=action, name="merge")
        outcome: dict[int, BaseException] = {}

        async def worker(i: int) -> None:
            await trio.sleep(i)
            try:
                await b.wait()
            except (ZeroDivisionError, BrokenBarrierError) as exc:
                outcome[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(worker, i)
        assert isinstance(outcome[2], ZeroDivisionError)
        assert isinstance(outcome[0], BrokenBarrierError)
        assert isinstance(outcome[1], BrokenBarrierError)
        assert "action raised ZeroDivisionError: merge failed" in str(outcome[0])
        assert b.broken and b.n_waiting == 0 and b.generation == 0
        with pytest.raises(BrokenBarrierError, match="call reset"):
            await b.wait()

    run_seeds(main)


def test_failing_action_then_reset_makes_the_barrier_usable() -> None:
    async def main() -> None:
        fail = [True]

        def action() -> None:
            if fail[0]:
                fail[0] = False
                raise RuntimeError("once")

        b = Barrier(2, action=action)
        errors: list[type[BaseException]] = []
        got: list[int] = []

        async def worker(delay: float) -> None:
            await trio.sleep(delay)
            try:
                await b.wait()
            except (RuntimeError, BrokenBarrierError) as exc:
                errors.append(type(exc))
            await trio.sleep(10 - trio.current_time())
            got.append(await b.wait())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 1)
            await trio.sleep(5)
            assert b.broken
            b.reset()
            assert not b.broken
        assert sorted(errors, key=str) == sorted([BrokenBarrierError, RuntimeError], key=str)
        assert sorted(got) == [0, 1]
        assert b.generation == 2  # one reset, one release

    run_seeds(main)


def test_action_returning_an_awaitable_breaks_the_barrier() -> None:
    async def later() -> None:
        pass

    async def main() -> None:
        b = Barrier(1, action=lambda: later())
        with pytest.raises(TypeError, match="returned an awaitable"):
            await b.wait()
        assert b.broken

    run_seeds(main, range(1))


def test_action_that_aborts_the_barrier_releases_nobody() -> None:
    async def main() -> None:
        b = Barrier(2, action=lambda: b.abort())
        errors: list[BaseException] = []

        async def worker(delay: float) -> None:
            await trio.sleep(delay)
            try:
                await b.wait()
            except BrokenBarrierError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 1)
        assert len(errors) == 2
        assert b.broken

    run_seeds(main)


# --------------------------------------------------------------------------- cancellation


def test_cancelled_waiter_leaves_and_later_indexes_move_up() -> None:
    # The scenario behind CPython issue 155233: with asyncio.Barrier, "b" and "c" below
    # both get index 1.
    async def main() -> None:
        b = Barrier(3)
        got: dict[str, tuple[int, float]] = {}
        timed_out: list[str] = []

        async def worker(name: str, delay: float, patience: float) -> None:
            await trio.sleep(delay)
            try:
                with trio.fail_after(patience):
                    got[name] = (await b.wait(), trio.current_time())
            except trio.TooSlowError:
                timed_out.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "a", 0, 1.5)  # leaves at t=1.5
            nursery.start_soon(worker, "b", 1, 100)
            nursery.start_soon(worker, "c", 2, 100)
            nursery.start_soon(worker, "d", 3, 100)
            await trio.sleep(1.75)
            assert b.n_waiting == 1
        assert timed_out == ["a"]
        assert got == {"b": (0, 3.0), "c": (1, 3.0), "d": (2, 3.0)}
        assert not b.broken

    run_seeds(main)


def test_a_party_cancelled_in_a_later_generation_still_leaves_cleanly() -> None:
    # After its first wait a party parks with a kept message and abort function
    # (Barrier._park_message); cancelling it then must work as on its first wait.
    async def main() -> None:
        b = Barrier(3)
        got: list[tuple[str, int, int]] = []

        async def steady(name: str) -> None:
            for generation in range(3):
                if generation == 2:
                    await trio.sleep(2)  # the quitter waits alone, and gives up at t=1
                got.append((name, generation, await b.wait()))

        async def quitter() -> None:
            for generation in range(2):
                got.append(("q", generation, await b.wait()))
            with trio.move_on_after(1):
                await b.wait()  # its third wait: it gives up
            got.append(("q", 2, -1))
            await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady, "a")
            nursery.start_soon(steady, "b")
            nursery.start_soon(quitter)
            await trio.sleep(1.5)
            assert b.n_waiting == 0 and b.generation == 2 and not b.broken
            await trio.sleep(1)
            assert b.n_waiting == 2
            got.append(("late", 2, await b.wait()))
        assert sorted(i for name, g, i in got if g == 2) == [-1, 0, 1, 2]
        assert [name for name, g, i in got if g == 2 and i == 2] == ["late"]

    run_seeds(main)


def test_the_kept_park_messages_stay_bounded_as_tasks_come_and_go() -> None:
    # Each new task that waits gets a kept message; tasks that come, time out and go must
    # not make the store grow without end.
    async def main() -> None:
        b = Barrier(3)
        sizes = []

        async def visitor() -> None:
            with trio.move_on_after(1):
                await b.wait()

        for _ in range(50):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(visitor)
                nursery.start_soon(visitor)
            sizes.append(len(b._parked))
        assert max(sizes) <= 2 * b.parties
        assert b.n_waiting == 0 and b.generation == 0 and not b.broken
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(b.wait)
        assert b.generation == 1

    run_seeds(main)


def test_cancelling_a_middle_waiter_leaves_no_gap() -> None:
    async def main() -> None:
        b = Barrier(3)
        got: dict[str, int] = {}
        scopes: dict[str, trio.CancelScope] = {}

        async def worker(name: str, delay: float) -> None:
            await trio.sleep(delay)
            with trio.CancelScope() as scopes[name]:
                got[name] = await b.wait()

        async with trio.open_nursery() as nursery:
            for i, name in enumerate("abcd"):
                nursery.start_soon(worker, name, i)
            await trio.sleep(1.5)
            scopes["b"].cancel()
        assert got == {"a": 0, "c": 1, "d": 2}

    run_seeds(main)


def test_cancellation_updates_the_count_at_once() -> None:
    # A task that arrives in the same tick as another waiter is cancelled must not be
    # released on the strength of the departed waiter.
    async def same_tick() -> None:
        b = Barrier(2)
        got: dict[str, tuple[int, float]] = {}
        leaver_scope = trio.CancelScope()

        async def leaver() -> None:
            with leaver_scope:
                await b.wait()
            got["leaver"] = (-1, trio.current_time())

        async def stayer(name: str, delay: float) -> None:
            await trio.sleep(delay)
            got[name] = (await b.wait(), trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(leaver)
            await trio.sleep(1)
            leaver_scope.cancel()
            assert b.n_waiting == 0  # counted out before the leaver even runs again
            nursery.start_soon(stayer, "b", 0)
            nursery.start_soon(stayer, "c", 1)
        assert got == {"leaver": (-1, 1.0), "b": (0, 2.0), "c": (1, 2.0)}

    run_seeds(same_tick)


def test_released_task_keeps_its_index_even_if_cancelled_before_it_runs() -> None:
    async def main() -> None:
        b = Barrier(2)
        scope = trio.CancelScope()
        result: list[Any] = []

        async def first() -> None:
            with scope:
                result.append(await b.wait())
                await trio.lowlevel.checkpoint()  # the pending cancellation lands here
                result.append("not reached")

        async def second() -> None:
            await trio.sleep(1)
            await b.wait()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            nursery.start_soon(second)
        assert result[0] == 0
        assert len(result) in (1, 2)  # whether "first" ran before the cancel is up to the seed
        assert not b.broken

    run_seeds(main, range(12))


def test_already_cancelled_caller_does_not_arrive() -> None:
    async def main() -> None:
        b = Barrier(2)
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.wait()
        assert scope.cancelled_caught
        assert b.n_waiting == 0

    run_seeds(main, range(2))


# --------------------------------------------------------------------------- abort, reset


def test_abort_breaks_waiting_and_future_callers_until_reset() -> None:
    async def main() -> None:
        b = Barrier(3, name="gate")
        errors: list[tuple[str, float]] = []

        async def worker(i: int) -> None:
            try:
                await b.wait()
            except BrokenBarrierError as exc:
                errors.append((str(exc), trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 1)
            await trio.sleep(4)
            b.abort()
            assert b.broken and b.n_waiting == 0
            b.abort()  # aborting twice changes nothing
        assert [t for _, t in errors] == [4.0, 4.0]
        assert all("broke while this task waited: abort() was called" in m for m, _ in errors)
        with pytest.raises(BrokenBarrierError, match="Barrier 'gate' is broken"):
            await b.wait()
        b.reset()
        assert not b.broken and b.generation == 1
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(b.wait)
        assert b.generation == 2

    run_seeds(main)


def test_reset_breaks_current_waiters_out_and_starts_a_new_generation() -> None:
    async def main() -> None:
        b = Barrier(3)
        outcome: list[str] = []

        async def worker() -> None:
            try:
                await b.wait()
                outcome.append("released")
            except BrokenBarrierError as exc:
                assert "was reset while this task waited" in str(exc)
                outcome.append("broken")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            nursery.start_soon(worker)
            await trio.sleep(1)
            assert b.n_waiting == 2
            b.reset()
            assert b.n_waiting == 0 and not b.broken and b.generation == 1
        assert outcome == ["broken", "broken"]

    run_seeds(main)


def test_reset_while_waiting_then_waiting_again() -> None:
    async def main() -> None:
        b = Barrier(3)
        got: list[int] = []

        async def worker(rejoin: bool) -> None:
            try:
                got.append(await b.wait())
            except BrokenBarrierError:
                if rejoin:
                    got.append(await b.wait())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, True)
            nursery.start_soon(worker, True)
            await trio.sleep(1)
            b.reset()
            await trio.sleep(1)
            nursery.start_soon(worker, False)
        assert sorted(got) == [0, 1, 2]
        assert b.generation == 2

    run_seeds(main)


def test_reset_with_nobody_waiting_repairs_and_counts_a_generation() -> None:
    b = Barrier(2)
    b.reset()
    assert b.generation == 1 and not b.broken and b.n_waiting == 0


def test_first_to_time_out_aborts_the_barrier() -> None:
    async def main() -> None:
        b = Barrier(3, name="meet")
        log: list[tuple[str, str, float]] = []

        async def worker(name: str, delay: float) -> None:
            await trio.sleep(delay)
            try:
                with trio.fail_after(5):
                    await b.wait()
            except trio.TooSlowError:
                b.abort()
                log.append((name, "timed out", trio.current_time()))
            except BrokenBarrierError:
                log.append((name, "broken", trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "early", 0)
            nursery.start_soon(worker, "late", 2)
        assert log == [("early", "timed out", 5.0), ("late", "broken", 5.0)]

    run_seeds(main)


# --------------------------------------------------------------------------- deadlock, trace


def test_wrong_party_count_is_a_deadlock_naming_the_waiters() -> None:
    async def main() -> None:
        b = Barrier(4, name="phase")
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(b.wait, name=f"worker-{i}")

    for seed in SEEDS:
        with pytest.raises(seqlab.Deadlock) as info:
            seqlab.run(main, seed=seed)
        waiting = {t.name: t.waits_on for t in info.value.tasks if t.name.startswith("worker")}
        assert waiting == {f"worker-{i}": "at Barrier 'phase' (3 of 4 arrived)" for i in range(3)}
        assert "worker-0 waits at Barrier 'phase' (3 of 4 arrived)" in str(info.value)


def test_trace_shows_arrivals_actions_releases_and_is_deterministic() -> None:
    async def main() -> None:
        b = Barrier(2, name="phase", action=lambda: None)

        async def worker(delay: float) -> None:
            await trio.sleep(delay)
            await b.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0, name="w0")
            nursery.start_soon(worker, 3, name="w1")
        with trio.CancelScope() as scope:
            scope.deadline = trio.current_time() + 1
            await b.wait()
        b.abort()
        b.reset()

    texts = []
    for _ in range(2):
        rec = seqlab.Recorder()
        seqlab.run(main, seed=4, recorder=rec)
        texts.append(rec.to_text())
        barrier_events = [
            (e.task, e.kind, dict(e.data)) for e in rec if e.primitive.startswith("Barrier")
        ]
        assert barrier_events == [
            ("w0", "arrive", {"generation": 0, "index": 0, "n_waiting": 1, "parties": 2}),
            ("w1", "arrive", {"generation": 0, "index": 1, "n_waiting": 2, "parties": 2}),
            ("w1", "action", {"generation": 0}),
            ("w0", "release", {"generation": 0, "index": 0, "waited": 3.0, "by": "w1"}),
            ("w1", "release", {"generation": 0, "index": 1, "waited": 0.0, "by": "w1"}),
            ("main", "arrive", {"generation": 1, "index": 0, "n_waiting": 1, "parties": 2}),
            ("main", "leave", {"generation": 1, "n_waiting": 0}),
            ("main", "broken", {"generation": 1, "reason": "abort() was called"}),
            ("main", "reset", {"generation": 2, "broken_out": 0}),
        ]
        assert {e.primitive for e in rec if e.primitive != "task"} == {"Barrier 'phase'"}
        waits = [(e.task, e.data["what"]) for e in rec if e.kind == "block"]
        assert ("w0", "at Barrier 'phase' (1 of 2 arrived)") in waits
    assert texts[0] == texts[1]


def test_describe_wait_when_broken() -> None:
    b = Barrier(2, name="x")
    assert b._describe_wait() == "Barrier 'x' (0 of 2 arrived)"
    b._broken = True
    assert b._describe_wait() == "Barrier 'x' (broken)"


# --------------------------------------------------------------------------- property


@dataclasses.dataclass
class Arrival:
    task: int
    generation: int
    seq: int
    index: int | None = None
    error: str | None = None


@settings(max_examples=50, deadline=None)
@given(
    parties=st.integers(1, 4),
    tasks=st.lists(
        st.lists(  # (delay before a wait, patience: None means no timeout) for each wait
            st.tuples(st.integers(0, 4), st.sampled_from([None] * 5 + [1, 2, 3, 5, 8])),
            min_size=1,
            max_size=8,
        ),
        min_size=1,
        max_size=8,
    ),
    aborts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), max_size=2),
    traced=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_indexes_actions_and_progress(
    parties: int,
    tasks: list[list[tuple[int, int | None]]],
    aborts: list[tuple[int, int]],
    traced: bool,
    seed: int,
) -> None:
    arrivals: list[Arrival] = []
    actions: list[int] = []
    counts_seen: list[int] = []

    async def main() -> tuple[int, int]:
        b = Barrier(parties, action=lambda: actions.append(b.generation))
        counter = [0]

        def watch(event: seqlab.TraceEvent) -> None:
            counts_seen.append(b.n_waiting)

        rec = seqlab.Recorder()
        if traced:
            rec.subscribe(watch)  # check the count at every event

        async def worker(i: int, waits: list[tuple[int, int | None]]) -> None:
            for delay, limit in waits:
                await trio.sleep(delay)
                arrival = Arrival(i, b.generation, counter[0])
                counter[0] += 1
                arrivals.append(arrival)
                counts_seen.append(b.n_waiting)
                try:
                    with trio.move_on_after(limit if limit is not None else float("inf")):
                        arrival.index = await b.wait()
                except BrokenBarrierError:
                    arrival.error = "broken"
                counts_seen.append(b.n_waiting)

        async def chaos(at: int, repair_after: int) -> None:
            await trio.sleep(at)
            b.abort()
            await trio.sleep(repair_after)
            b.reset()

        with seqlab.recording(rec) if traced else contextlib.nullcontext(rec):
            async with trio.open_nursery() as nursery:
                for i, waits in enumerate(tasks):
                    nursery.start_soon(worker, i, waits)
                for at, repair_after in aborts:
                    nursery.start_soon(chaos, at, repair_after)
                # Far beyond every delay and timeout: whoever still waits is stuck for good.
                await trio.sleep(1000)
                stuck = b.n_waiting
                b.abort()  # let the stragglers finish
        return stuck, b.parties

    stuck, n = seqlab.run(main, seed=seed)
    # No task waits forever once enough parties have arrived.
    assert 0 <= stuck < n
    assert all(0 <= c < parties for c in counts_seen)

    released: dict[int, list[Arrival]] = defaultdict(list)
    for a in arrivals:
        if a.index is not None:
            released[a.generation].append(a)
    for generation, group in released.items():
        # Indexes are exactly 0..parties-1 once each, in arrival order.
        group.sort(key=lambda a: a.seq)
        assert [a.index for a in group] == list(range(parties)), generation
        assert len({a.task for a in group}) == parties
    # The action ran exactly once per completed generation, and for no other.
    assert Counter(actions) == Counter(released.keys())


def test_a_traced_barrier_keeps_no_recorder_alive_and_leaves_are_still_recorded() -> None:
    """Traced parties park with kept messages, like untraced ones; what a kept message holds
    of its recorder is a weak reference: the barrier outlives the trace without keeping it."""
    import gc
    import weakref

    barrier = seqlab.Barrier(3, name="b")
    rec = seqlab.Recorder()
    rec_ref = weakref.ref(rec)

    async def main(rec: seqlab.Recorder) -> None:
        with seqlab.recording(rec):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(barrier.wait)
            with trio.move_on_after(1):  # one party alone: it leaves when cancelled
                await barrier.wait()

    seqlab.run(main, rec, seed=0)
    assert [e.kind for e in rec.events if e.primitive == "Barrier 'b'"][-2:] == ["arrive", "leave"]
    del rec
    gc.collect()
    assert rec_ref() is None
    assert barrier.n_waiting == 0
