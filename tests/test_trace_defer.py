"""Deferred events (Recorder.defer): a recorder that lets primitives defer records exactly the
trace of one that sees every event as it happens (strict, or with a listener).

Under ``seqlab.run`` with ``Recorder(waits=False)`` nothing but the primitives' own events is
recorded between two steps, so deferred events really stay pending across tasks and steps
(with waits, every block event would flush them at once); the runs are deterministic, so the
same program and seed must give the same events, in the same order, with the same times,
labels and values, whatever the recorder.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab import Barrier, BrokenBarrierError, Recorder, emit
from seqlab.trace import _RECORDER, DeferredRun, current_recorder, row_shape, shape

# ---------------------------------------------------------------- the barrier


def barrier_program(
    parties: int,
    plans: list[list[int]],
    untraced: int,
    cancels: list[tuple[int, int]],
    aborts: list[tuple[int, int]],
    noise: bool,
    action: bool,
) -> Any:
    """Tasks wait at one barrier after delays, some of them untraced; canceller tasks cancel
    the wait of a given party at a given time (it leaves); a chaos task aborts and resets the
    barrier; a noise task emits events of its own.

    Waits are cancelled by tasks, not by timeouts: trio expires deadlines that fall at the
    same instant in an order that depends on object addresses, which differ between a strict
    and a plain recorder, so simultaneous timeouts would make the runs differ by themselves.
    """

    async def main() -> None:
        barrier = Barrier(parties, action=(lambda: emit("bank", "act")) if action else None)
        scopes: dict[int, trio.CancelScope] = {}

        async def party(i: int, delays: list[int]) -> None:
            for delay in delays:
                await trio.sleep(delay)
                try:
                    with trio.CancelScope() as scopes[i]:
                        await barrier.wait()
                except BrokenBarrierError:
                    pass
                del scopes[i]

        async def canceller(at: int, i: int) -> None:
            await trio.sleep(at)
            if i in scopes:
                scopes[i].cancel()

        async def chaos(at: int, repair_after: int) -> None:
            await trio.sleep(at)
            barrier.abort()
            await trio.sleep(repair_after)
            barrier.reset()

        async def chatter() -> None:
            for i in range(12):
                emit("bank", "tick", i=i)
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            recorder = current_recorder()
            token = _RECORDER.set(None)  # the first parties arrive untraced
            try:
                for i, delays in enumerate(plans[:untraced]):
                    nursery.start_soon(party, i, delays, name="worker")
            finally:
                _RECORDER.reset(token)
            assert current_recorder() is recorder
            for i, delays in enumerate(plans[untraced:], untraced):
                nursery.start_soon(party, i, delays, name="worker")
            for at, i in cancels:
                nursery.start_soon(canceller, at, i)
            for at, repair_after in aborts:
                nursery.start_soon(chaos, at, repair_after)
            if noise:
                nursery.start_soon(chatter)
            await trio.sleep(100)
            barrier.abort()  # stragglers

    return main


def traces(main: Any, seed: int) -> dict[str, list[seqlab.TraceEvent]]:
    """The events of one seeded run, recorded by a deferring recorder, a strict one and one
    with a listener (and what that listener saw)."""
    out: dict[str, list[seqlab.TraceEvent]] = {}
    for how in ("deferring", "strict", "listener"):
        rec = Recorder(waits=False, strict=how == "strict")
        seen: list[seqlab.TraceEvent] = []
        if how == "listener":
            rec.subscribe(seen.append)
        try:
            seqlab.run(main, seed=seed, recorder=rec)
        except seqlab.Deadlock:
            pass
        out[how] = list(rec.events)
        if how == "listener":
            out["seen"] = seen
    return out


def assert_same(found: dict[str, list[seqlab.TraceEvent]]) -> None:
    reference = found["strict"]
    assert reference
    for how, events in found.items():
        assert events == reference, how
    assert found["seen"] == found["listener"]


plan = st.lists(st.integers(0, 3), min_size=1, max_size=5)  # the delay before each wait


@settings(max_examples=40, deadline=None)
@given(
    main=st.builds(
        barrier_program,
        parties=st.integers(1, 4),
        plans=st.lists(plan, min_size=1, max_size=6),
        untraced=st.integers(0, 2),
        cancels=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 5)), max_size=4),
        aborts=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 4)), max_size=2),
        noise=st.booleans(),
        action=st.booleans(),
    ),
    seed=st.integers(0, 2**16),
)
def test_barrier_deferred_trace_is_the_trace_seen_event_by_event(main: Any, seed: int) -> None:
    assert_same(traces(main, seed))


def test_barrier_arrivals_are_deferred_until_the_trace_needs_them() -> None:
    # The test above is only worth something if arrivals really wait: check that they do,
    # and that reading the trace in the middle stages them, in place.
    async def main() -> None:
        rec = current_recorder()
        assert rec is not None
        barrier = Barrier(4, name="b")
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(barrier.wait, name="worker")
            await trio.sleep(1)
            assert rec._pending is barrier
            staged = rec._sealed + len(rec._raw) // 4
            kinds = [e.kind for e in rec.events]  # reading flushes
            assert rec._pending is None
            assert kinds[-3:] == ["arrive"] * 3
            assert len(kinds) == staged + 3
            assert [e.data["index"] for e in rec.events[-3:]] == [0, 1, 2]
            await barrier.wait()

    rec = Recorder(waits=False)
    seqlab.run(main, seed=1, recorder=rec)
    arrivals = [e for e in rec.events if e.kind == "arrive"]
    assert [e.data["index"] for e in arrivals] == [0, 1, 2, 3]
    assert arrivals[-1].task == "main"


def test_deferred_arrivals_take_their_labels_before_a_later_task() -> None:
    # Labels are numbered in order of first appearance. Parties that start recording only
    # around their wait first appear with their (deferred) arrival: a fourth task named
    # "worker" that gets its label before arriving comes after them, "worker#4".
    rec = Recorder()

    async def main() -> None:
        barrier = Barrier(4)

        async def worker() -> None:
            with seqlab.recording(rec):
                await barrier.wait()

        async def late() -> None:
            rec.label(trio.lowlevel.current_task())  # a label made before any event
            with seqlab.recording(rec):
                await barrier.wait()

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(worker, name="worker")
            await trio.sleep(1)
            assert rec._pending is barrier
            nursery.start_soon(late, name="worker")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [e.task for e in rec.events if e.kind == "arrive"] == [
        "worker",
        "worker#2",
        "worker#3",
        "worker#4",
    ]


def test_recording_end_stages_deferred_arrivals_and_lets_the_barrier_go() -> None:
    rec = Recorder()
    barrier_ref: list[weakref.ref[Barrier]] = []

    async def main() -> None:
        barrier = Barrier(3)
        barrier_ref.append(weakref.ref(barrier))
        async with trio.open_nursery() as nursery:
            with seqlab.recording(rec):
                nursery.start_soon(barrier.wait)
                nursery.start_soon(barrier.wait)
                await trio.sleep(0.01)
                assert rec._pending is barrier
            assert rec._pending is None
            nursery.cancel_scope.cancel()

    trio.run(main)
    gc.collect()
    assert barrier_ref[0]() is None
    assert [e.kind for e in rec.events].count("arrive") == 2


# ---------------------------------------------------------------- the shared run

_PING = shape("bank", "ping", ("n",))
_PAIR = shape("bank", "pair", ("a", "b"))
_PING_ROW = row_shape(_PING, 2)  # one value and one of padding


def test_deferred_run_drops_its_padding_and_keeps_the_order() -> None:
    run = DeferredRun(2)

    async def main() -> None:
        rec = current_recorder()
        assert rec is not None
        me = trio.lowlevel.current_task()
        (run.push if rec._pending is run else run.into(rec))(
            (rec.clock(), me, "p", _PING_ROW, 1, None)
        )
        (run.push if rec._pending is run else run.into(rec))((rec.clock(), me, "p", _PAIR, 2, 3))
        assert rec._pending is (None if rec.strict else run)
        emit("bank", "between")  # flushes the run first
        assert rec._pending is None
        (run.push if rec._pending is run else run.into(rec))(
            (rec.clock(), me, "q", _PING_ROW, 4, None)
        )

    for strict in (False, True):
        rec = Recorder(strict=strict, waits=False)
        seqlab.run(main, seed=0, recorder=rec)
        events = [(e.primitive, e.kind, e.data) for e in rec.events if e.primitive != "task"]
        by_index = [rec.events[i] for i in range(len(rec.events) - 1, -1, -1)][::-1]
        assert by_index == list(rec.events)  # the padding skipped both ways of reading
        assert events == [
            ("p", "ping", {"n": 1}),
            ("p", "pair", {"a": 2, "b": 3}),
            ("bank", "between", {}),
            ("q", "ping", {"n": 4}),
        ], strict


# ---------------------------------------------------------------- sequencer and convoy


async def sequencer_program() -> None:
    """Sync and async jobs, jobs that record or raise, a bounded sequencer whose submitters
    wait, a shared two-worker dispatcher with direct tasks, two submitting tasks, and a
    sequencer cancelled with work queued."""

    async def slow(x: int) -> int:
        await trio.sleep(0.5)
        emit("bank", "inside", x=x)
        return x

    def boom() -> None:
        raise ValueError("boom")

    async with seqlab.open_dispatcher(workers=2, name="d") as d:
        async with seqlab.open_sequencer(name="a", dispatcher=d) as a:
            async with seqlab.open_sequencer(name="b", dispatcher=d, max_pending=2) as b:

                async def submitter(seq: seqlab.Sequencer) -> None:
                    for i in range(4):
                        seq.submit_nowait(int, i)
                        if i % 2:
                            await trio.lowlevel.checkpoint()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(submitter, a, name="sub")
                    nursery.start_soon(submitter, a, name="sub")
                    for i in range(4):
                        await b.submit(slow, i)
                    d.submit_nowait(emit, "bank", "direct")
                failed = a.submit_nowait(boom)
                a.submit_nowait(emit, "bank", "job")
                try:
                    await failed
                except ValueError:
                    pass
    try:
        async with seqlab.open_sequencer(name="c") as c:
            c.submit_nowait(trio.sleep, 10)
            for _ in range(3):
                c.submit_nowait(int)
            await trio.sleep(1)
            raise KeyError("stop")
    except KeyError:
        pass


async def convoy_program() -> None:
    """Sends from two tasks, sync and async handling, a retry, a dead letter, a duplicate,
    a lock lost to a slow handler, several consumers and short sessions."""

    async def handler(delivery: seqlab.Delivery) -> None:
        if delivery.message == "once" and delivery.attempt == 1:
            raise RuntimeError("once")
        if delivery.message == "never":
            raise RuntimeError("never")
        if delivery.message == "slow" and delivery.attempt == 1:
            await trio.sleep(5)
        await trio.lowlevel.checkpoint()

    async with seqlab.open_convoy(
        handler, consumers=3, name="cv", lock_timeout=2.0, dedup_window=1.0, session_batch=3
    ) as convoy:

        async def sender(tag: str) -> None:
            for i in range(5):
                for key in ("a", "b", "c"):
                    convoy.send_nowait(key, f"{tag}{i}")
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, "x", name="sender")
            nursery.start_soon(sender, "y", name="sender")
            convoy.send_nowait("a", "once")
            convoy.send_nowait("b", "never")
            convoy.send_nowait("c", "slow")
            convoy.send_nowait("c", "dup", dedup_id=1)
            convoy.send_nowait("c", "dup", dedup_id=1)
        await convoy.join()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), program=st.sampled_from([sequencer_program, convoy_program]))
def test_sequencer_and_convoy_deferred_traces_are_the_traces_seen_event_by_event(
    seed: int, program: Any
) -> None:
    assert_same(traces(program, seed))


def test_a_task_whose_label_was_put_away_keeps_it_on_all_its_deferred_events() -> None:
    # The recording block ends before the task it started records anything: its label is
    # put away (retired), and must come back once, not as "submitter#2", "#3", ...
    rec = Recorder()

    async def submitter() -> None:
        async with seqlab.open_sequencer(name="s") as seq:
            for _ in range(3):
                seq.submit_nowait(int)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with seqlab.recording(rec):
                nursery.start_soon(submitter)

    trio.run(main)
    assert {e.task for e in rec.events if e.kind == "submit"} == {"submitter"}


def test_a_task_first_seen_in_deferred_events_keeps_that_label_when_it_spawns() -> None:
    # The task that enters recording() has no spawn event: its first events may be deferred
    # (a convoy send). Its child's spawn event asks for the parent's label, which stages them
    # first and labels it "main" there; it must stay "main", not be numbered again ("main#2").
    rec = Recorder()

    async def handler(delivery: Any) -> None:
        pass

    async def main() -> None:
        async with seqlab.open_convoy(handler) as convoy:  # its consumers are not traced
            with seqlab.recording(rec):
                await convoy.send("k", 1)
                assert rec._pending is convoy._run
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep, 0, name="child")
                await convoy.send("k", 2)

    trio.run(main)
    seen = [(e.task, e.kind, e.data.get("parent")) for e in rec.events]
    assert seen == [
        ("main", "send", None),
        ("child", "spawn", "main"),
        ("child", "exit", None),
        ("main", "send", None),
    ]
