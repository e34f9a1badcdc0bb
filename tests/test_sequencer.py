"""Sequencer and Dispatcher: sequential, ordered, fair; failures, close, backpressure, cancel."""

from __future__ import annotations

import contextlib
import sys

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.sequencer import (
    Dispatcher,
    DispatcherStatistics,
    Sequencer,
    SequencerStatistics,
    TaskCancelledError,
    Ticket,
    open_dispatcher,
    open_sequencer,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

SEEDS = range(20)


class RaceDetector:
    """Counts tasks inside a critical section; remembers the worst overlap it saw."""

    def __init__(self) -> None:
        self.inside = 0
        self.max_inside = 0

    async def section(self, log: list[object], item: object, yields: int = 2) -> None:
        self.inside += 1
        self.max_inside = max(self.max_inside, self.inside)
        for _ in range(yields):
            await trio.lowlevel.checkpoint()
        log.append(item)
        self.inside -= 1


def explore_ok(fn, seeds=SEEDS, strategy="auto") -> None:
    result = seqlab.explore(fn, seeds=seeds, strategy=strategy)
    assert result.ok, str(result)


# ---------------------------------------------------------------- basics


def test_sync_and_async_tasks_run_in_order_and_return_results():
    async def main():
        log = []

        async def slow(x):
            await trio.sleep(1)
            log.append(x)
            return x * 10

        async with open_sequencer(name="db") as seq:
            assert isinstance(seq, Sequencer)
            first = seq.submit_nowait(log.append, "a")
            second = seq.submit_nowait(slow, "b")
            third = await seq.submit(log.append, "c")
            assert isinstance(first, Ticket)
            assert not second.done
            assert await seq.call(slow, "d") == "d" * 10
            assert first.done and second.done and third.done
            assert await second == "b" * 10
            assert await first is None
            assert [first.number, second.number, third.number] == [0, 1, 2]
        assert log == ["a", "b", "c", "d"]
        assert trio.current_time() == 2.0

    seqlab.run(main, seed=1)


def test_ticket_can_be_awaited_by_several_tasks_and_after_done():
    async def main():
        results = []
        async with open_sequencer() as seq:
            ticket = seq.submit_nowait(trio.sleep, 3)

            async def waiter():
                results.append((await ticket, trio.current_time()))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(waiter)
            assert await ticket is None
        assert results == [(None, 3.0)] * 3

    explore_ok(main)


def test_a_cancelled_waiter_leaves_the_other_waiters_of_its_ticket_waiting():
    # The sequencer keeps each awaited ticket's waiting tasks; one that gives up must take
    # only itself out, whether it was the first, last or only one in the list.
    async def main():
        got = []
        async with open_sequencer() as seq:
            ticket = seq.submit_nowait(_after, 5, "value")

            async def waiter(name, patience):
                with trio.move_on_after(patience):
                    got.append((name, await ticket, trio.current_time()))
                    return
                got.append((name, "gave up", trio.current_time()))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter, "first", 1)
                nursery.start_soon(waiter, "patient", 10)
                nursery.start_soon(waiter, "last", 2)
                await trio.sleep(3)
                # Everyone who gave up is gone; a newcomer queues behind the patient one.
                nursery.start_soon(waiter, "newcomer", 10)
        assert sorted(got) == [
            ("first", "gave up", 1.0),
            ("last", "gave up", 2.0),
            ("newcomer", "value", 5.0),
            ("patient", "value", 5.0),
        ]
        assert not seq._waiting  # nothing left behind for the finished ticket

    explore_ok(main)


async def _after(delay, value):
    await trio.sleep(delay)
    return value


def test_a_failure_received_after_it_happened_is_not_raised_again_at_exit():
    # Nobody waits while the task fails; the ticket is awaited only later. Received is
    # received: the block must not raise it again (nor would it, had nobody awaited it, stay
    # silent: see test_unretrieved_exception_is_raised_at_exit).
    async def main():
        async with open_sequencer() as seq:
            bad = seq.submit_nowait(int, "x")
            await seq.call(int, "1")
            assert bad.done
            with pytest.raises(ValueError, match="invalid literal"):
                await bad
            with pytest.raises(ValueError, match="invalid literal"):
                await bad  # as often as asked
        return seq.statistics().failed

    assert seqlab.run(main, seed=0) == 1


def test_repr_and_labels_have_no_addresses():
    async def main():
        async with open_sequencer() as a, open_sequencer(name="b") as b:
            ticket = a.submit_nowait(int)
            assert repr(ticket) == "<Ticket 0 of Sequencer #1: queued>"
            await ticket
            assert repr(ticket) == "<Ticket 0 of Sequencer #1: done>"
            assert repr(b) == "<Sequencer 'b' (0 pending)>"
            assert "0x" not in repr(a._dispatcher)

    seqlab.run(main, seed=0)


def test_a_ticket_cannot_be_made_by_hand_but_every_submitted_one_is_a_ticket():
    # Ticket has no constructor (it would cost every submission a call); made by hand it
    # would belong to no sequencer, and its repr, .done and await would fail with
    # AttributeError. So Ticket() refuses, with a TypeError saying where tickets come from.
    for make in (Ticket, Ticket[int], seqlab.Ticket):
        with pytest.raises(TypeError, match=r"Ticket\(\) cannot be made directly.*submit"):
            make()

    async def main():
        async with open_dispatcher() as d, open_sequencer(dispatcher=d, max_pending=1) as seq:
            made = [seq.submit_nowait(int), await seq.submit(int), d.submit_nowait(int)]
            made.append(await d.submit(int))
            assert all(isinstance(ticket, Ticket) for ticket in made)
            assert [await ticket for ticket in made] == [0, 0, 0, 0]
            # and whatever class makes them, a trace says a task waits on a Ticket
            assert await seq.submit_nowait(trio.sleep, 1) is None

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    on_tickets = {
        e.data["on"] for e in rec.events if "waiting for ticket" in e.data.get("what", "")
    }
    assert on_tickets == {"Ticket"}


# ---------------------------------------------------------------- Michonne certification


def michonne(count: int, workers: int = 1):
    """Tasks alternately to a sequencer and straight to its dispatcher: dispatch order holds."""

    async def main():
        log: list[int] = []
        detector = RaceDetector()
        async with open_dispatcher(workers=workers) as d:
            async with open_sequencer(name="certified", dispatcher=d) as seq:
                for i in range(count):
                    if i % 2 == 0:
                        seq.submit_nowait(detector.section, log, i)
                    else:
                        d.submit_nowait(detector.section, log, i)
        return log, detector.max_inside

    return main


def test_michonne_certification_exact_dispatch_order_under_many_seeds():
    for seed in range(10):
        log, overlap = seqlab.run(michonne(1000), seed=seed)
        assert log == list(range(1000))
        assert overlap == 1


def test_michonne_sequenced_half_stays_ordered_and_exclusive_with_many_workers():
    async def main():
        log: list[int] = []
        direct: list[int] = []
        detector = RaceDetector()
        plain = RaceDetector()
        async with open_dispatcher(workers=4) as d:
            async with open_sequencer(dispatcher=d) as seq:
                for i in range(200):
                    if i % 2 == 0:
                        seq.submit_nowait(detector.section, log, i)
                    else:
                        d.submit_nowait(plain.section, direct, i)
        assert log == list(range(0, 200, 2))
        assert detector.max_inside == 1
        assert sorted(direct) == list(range(1, 200, 2))
        return plain.max_inside

    explore_ok(main)

    # The detector can see overlap: under trio's fair shuffle, direct tasks on 4 workers do
    # overlap (a strategy that runs one task alone for a while may show none, rightly).
    for seed in range(3):
        assert seqlab.run(main, seed=seed) > 1


def test_race_detector_catches_unsequenced_tasks():
    """Control experiment: the same work as plain nursery tasks overlaps and reorders."""

    async def main():
        log: list[int] = []
        detector = RaceDetector()
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(detector.section, log, i)
        return log, detector.max_inside

    logs = [seqlab.run(main, seed=seed) for seed in range(3)]
    assert all(overlap > 1 for _, overlap in logs)
    assert any(log != list(range(50)) for log, _ in logs)


# ---------------------------------------------------------------- fairness


def test_plain_task_is_not_starved_by_a_busy_sequencer():
    async def main():
        events: list[str] = []

        async def plain():
            for _ in range(10):
                await trio.lowlevel.checkpoint()
            events.append("plain done")

        async with trio.open_nursery() as nursery, open_sequencer() as seq:
            for i in range(100):
                seq.submit_nowait(events.append, i)
            nursery.start_soon(plain)
        position = events.index("plain done")
        # Each task costs the sequencer one turn of the scheduler, like a plain checkpoint.
        assert position <= 15, position
        assert events[-1] == 99

    # Fairness is a promise under a fair scheduler: the delay and PCT strategies hold tasks
    # back on purpose, which is not the sequencer starving them.
    explore_ok(main, strategy="random")


def test_two_sequencers_on_one_worker_alternate_strictly():
    async def main():
        log: list[str] = []
        async with open_dispatcher(workers=1) as d:
            async with (
                open_sequencer(name="a", dispatcher=d) as a,
                open_sequencer(name="b", dispatcher=d) as b,
            ):
                for i in range(10):
                    a.submit_nowait(log.append, f"a{i}")
                for i in range(5):
                    b.submit_nowait(log.append, f"b{i}")
        alternating = [x for i in range(5) for x in (f"a{i}", f"b{i}")]
        assert log == alternating + [f"a{i}" for i in range(5, 10)]

    explore_ok(main)


def test_tasks_from_await_submit_and_admitted_submitters_keep_their_place_among_direct_tasks():
    # With one worker, a sequencer's tasks and direct tasks run in submission order, and a
    # submitter that waited for room is placed when it is admitted. Every task here is
    # queued through `await submit` (room at once, or admitted later), which stamps its
    # ticket on a path of its own; a wrong stamp there would put a sequencer task after a
    # direct task submitted later.
    async def main():
        log: list[str] = []
        async with open_dispatcher() as d, open_sequencer(dispatcher=d, max_pending=4) as seq:
            d.submit_nowait(trio.sleep, 1)  # holds the worker while everything queues
            for i in range(4):
                await seq.submit(log.append, f"s{i}")
                d.submit_nowait(log.append, f"d{i}")

            async def late_submitter():
                await seq.submit(log.append, "admitted")  # full: waits until s0 starts
                d.submit_nowait(log.append, "after-admitted")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(late_submitter)
        expected = [x for i in range(4) for x in (f"s{i}", f"d{i}")]
        assert log == [*expected, "admitted", "after-admitted"]

    explore_ok(main)


def test_round_robin_between_three_sequencers_and_direct_tasks():
    async def main():
        log: list[str] = []
        async with open_dispatcher() as d:
            async with (
                open_sequencer(dispatcher=d) as a,
                open_sequencer(dispatcher=d) as b,
                open_sequencer(dispatcher=d) as c,
            ):
                for name, seq in (("a", a), ("b", b), ("c", c)):
                    for i in range(3):
                        seq.submit_nowait(log.append, f"{name}{i}")
                d.submit_nowait(log.append, "direct")
        # No sequencer ever runs twice in a row while another has a task ready.
        assert log[:9] == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
        assert log[9] == "direct"

    explore_ok(main)


def test_many_workers_run_different_sequencers_at_once_each_sequentially():
    async def main():
        running = 0
        peak = 0
        detectors = [RaceDetector() for _ in range(5)]
        logs: list[list[int]] = [[] for _ in range(5)]

        async def job(k, i):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await detectors[k].section(logs[k], i)
            await trio.sleep(1)
            running -= 1

        async with open_dispatcher(workers=3) as d, contextlib.AsyncExitStack() as stack:
            seqs = [await stack.enter_async_context(open_sequencer(dispatcher=d)) for _ in "abcde"]
            for i in range(4):
                for k, seq in enumerate(seqs):
                    seq.submit_nowait(job, k, i)
        assert peak == 3
        assert all(det.max_inside == 1 for det in detectors)
        assert logs == [list(range(4))] * 5
        assert trio.current_time() == 7.0  # 20 one-second tasks on 3 workers, 5 sequencers

    explore_ok(main, seeds=range(10))


# ---------------------------------------------------------------- failures


def test_exception_belongs_to_its_ticket_and_later_tasks_still_run():
    async def main():
        log = []

        def boom():
            raise ValueError("boom")

        async with open_sequencer(name="db") as seq:
            seq.submit_nowait(log.append, 1)
            bad = seq.submit_nowait(boom)
            seq.submit_nowait(log.append, 2)
            with pytest.raises(ValueError, match="boom"):
                await bad
            with pytest.raises(ValueError, match="boom"):
                await seq.call(boom)
            assert bad.done and not bad.cancelled
        assert log == [1, 2]
        stats = seq.statistics()
        assert (stats.completed, stats.failed, stats.cancelled) == (2, 2, 0)

    explore_ok(main)


def test_unretrieved_exception_is_raised_at_exit():
    async def main():
        async with open_sequencer(name="db") as seq:
            seq.submit_nowait(int, "not a number")
            seq.submit_nowait(int, "7")

    with pytest.raises(ValueError, match="invalid literal") as info:
        seqlab.run(main, seed=3)
    if sys.version_info >= (3, 11):
        assert any("ticket 0 of Sequencer 'db'" in note for note in info.value.__notes__)


def test_several_unretrieved_exceptions_raise_an_exception_group():
    async def main():
        async def fail(n):
            await trio.sleep(n)
            raise KeyError(n)

        async with open_sequencer() as seq:
            for n in range(3):
                seq.submit_nowait(fail, n)
            retrieved = seq.submit_nowait(fail, 9)
            with pytest.raises(KeyError):
                await retrieved

    with pytest.raises(ExceptionGroup) as info:
        seqlab.run(main, seed=0)
    assert [e.args[0] for e in info.value.exceptions] == [0, 1, 2]
    assert "3 tasks of Sequencer #1 failed" in str(info.value)


def test_body_error_and_unretrieved_failures_are_both_reported():
    async def main():
        async with open_sequencer() as seq:
            seq.submit_nowait(int, "x")
            await trio.sleep(1)
            raise RuntimeError("body")

    with pytest.raises(BaseExceptionGroup) as info:
        seqlab.run(main, seed=0)
    kinds = [type(e) for e in info.value.exceptions]
    assert kinds == [RuntimeError, ValueError]


def test_body_error_alone_propagates_unchanged_and_cancels_pending():
    async def main():
        with pytest.raises(KeyError, match="body"):
            async with open_sequencer() as seq:
                tickets = [seq.submit_nowait(trio.sleep, 1) for _ in range(3)]
                await trio.sleep(0.5)
                raise KeyError("body")
        assert trio.current_time() == 0.5
        assert all(t.cancelled for t in tickets)
        with pytest.raises(TaskCancelledError) as info:
            await tickets[0]
        assert isinstance(info.value.__cause__, KeyError)

    explore_ok(main)


def test_unretrieved_failure_on_shared_dispatcher_is_raised_by_its_sequencer_block():
    async def main():
        async with open_dispatcher(workers=2) as d:
            with pytest.raises(ZeroDivisionError):
                async with open_sequencer(dispatcher=d) as seq:
                    seq.submit_nowait(divmod, 1, 0)
            async with open_sequencer(dispatcher=d) as fine:
                assert await fine.call(divmod, 7, 2) == (3, 1)
            assert d.statistics().failed == 1

    explore_ok(main)


@pytest.mark.parametrize("shared", [False, True], ids=["own dispatcher", "shared dispatcher"])
def test_how_a_block_ends_is_the_same_with_its_own_or_a_shared_dispatcher(shared):
    # The two kinds of block are built differently (a generator around a private
    # dispatcher; a class on a shared one): each ending must come out the same.
    def opened(d):
        return open_sequencer(dispatcher=d) if shared else open_sequencer()

    async def main():
        async with open_dispatcher(workers=1) as d:
            body = KeyError("body")
            with pytest.raises(KeyError) as caught:  # the body's error, bare and unchanged
                async with opened(d) as seq:
                    queued = seq.submit_nowait(trio.sleep, 1)
                    raise body
            assert caught.value is body and queued.cancelled
            with pytest.raises(BaseExceptionGroup) as group:  # ... and an unawaited failure
                async with opened(d) as seq:
                    seq.submit_nowait(int, "x")
                    await trio.sleep(1)
                    raise body
            assert [type(e) for e in group.value.exceptions] == [KeyError, ValueError]
            with pytest.raises(ValueError):  # a clean exit raises the unawaited failure
                async with opened(d) as seq:
                    seq.submit_nowait(int, "x")
            with trio.move_on_after(1) as scope:  # cancelled while draining
                async with opened(d) as seq:
                    long = seq.submit_nowait(trio.sleep, 5)
                    after = seq.submit_nowait(int, "1")
            assert scope.cancelled_caught and long.cancelled and after.cancelled
            assert seq.closed and d.statistics().sequencers == 0

    explore_ok(main)


def test_block_error_between_two_tasks_of_a_sequencer_alone_on_its_worker():
    # A lone sequencer's worker keeps it across the yield between two tasks (neither running
    # nor in line): an error in the block may land right then, and must cancel the rest.
    async def main():
        log = []
        with pytest.raises(KeyError):
            async with open_sequencer() as seq:
                for i in range(5):
                    seq.submit_nowait(log.append, i)
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()
                raise KeyError("body")
        assert log == list(range(len(log)))
        stats = seq.statistics()
        assert (stats.completed, stats.cancelled, stats.pending) == (len(log), 5 - len(log), 0)
        return len(log)

    done = {seqlab.run(main, seed=seed) for seed in range(40)}
    assert len(done) > 1  # the error landed at different points between tasks
    explore_ok(main)


def test_task_may_await_another_sequencer_when_workers_are_free():
    async def main():
        async with (
            open_dispatcher(workers=2) as d,
            open_sequencer(dispatcher=d) as a,
            open_sequencer(dispatcher=d) as b,
        ):

            async def ask_b():
                return await b.call(pow, 3, 2) + 1

            assert await a.call(ask_b) == 10

    explore_ok(main)


def test_direct_task_failure_reported_at_dispatcher_exit():
    async def main():
        async with open_dispatcher(workers=2) as d:
            assert await d.call(pow, 2, 5) == 32
            d.submit_nowait(int, "bad")

    with pytest.raises(ValueError):
        seqlab.run(main, seed=0)


# ---------------------------------------------------------------- close


def test_close_refuses_new_work_but_runs_queued_tasks():
    async def main():
        log = []
        async with open_sequencer(name="db") as seq:
            seq.submit_nowait(log.append, 1)
            seq.close()
            seq.close()
            assert seq.closed and seq.statistics().closed
            with pytest.raises(trio.ClosedResourceError, match="Sequencer 'db' is closed"):
                seq.submit_nowait(log.append, 2)
            with pytest.raises(trio.ClosedResourceError):
                await seq.submit(log.append, 3)
            with pytest.raises(trio.ClosedResourceError):
                await seq.call(log.append, 4)
        assert log == [1]
        with pytest.raises(trio.ClosedResourceError):
            seq.submit_nowait(log.append, 5)

    explore_ok(main)


def test_closed_dispatcher_refuses_sequencers_and_direct_tasks():
    async def main():
        async with open_dispatcher() as d:
            async with open_sequencer(dispatcher=d) as seq:
                d.close()
                with pytest.raises(trio.ClosedResourceError, match="dispatcher"):
                    seq.submit_nowait(int)
                with pytest.raises(trio.ClosedResourceError):
                    d.submit_nowait(int)
            with pytest.raises(trio.ClosedResourceError):
                async with open_sequencer(dispatcher=d):
                    pass  # pragma: no cover

    seqlab.run(main, seed=0)


def test_a_full_queue_that_is_closed_says_closed_not_would_block():
    async def main():
        async with open_dispatcher() as d:
            async with open_sequencer(dispatcher=d, max_pending=1) as seq:
                seq.submit_nowait(int)
                with pytest.raises(trio.WouldBlock):
                    seq.submit_nowait(int)
                d.close()
                with pytest.raises(trio.ClosedResourceError, match="its dispatcher"):
                    seq.submit_nowait(int)
            async with open_sequencer(max_pending=1) as own:
                own.submit_nowait(int)
                own.close()
                with pytest.raises(trio.ClosedResourceError, match="is closed"):
                    own.submit_nowait(int)

    seqlab.run(main, seed=0)


def test_exit_drains_pending_tasks():
    async def main():
        log = []
        async with open_sequencer() as seq:
            for i in range(5):
                seq.submit_nowait(trio.sleep, 1)
                seq.submit_nowait(log.append, i)
        assert log == [0, 1, 2, 3, 4]
        assert trio.current_time() == 5.0

    explore_ok(main)


# ---------------------------------------------------------------- backpressure


def test_backpressure_submit_nowait_raises_and_submit_waits():
    async def main():
        order = []
        async with open_sequencer(max_pending=2) as seq:
            seq.submit_nowait(trio.sleep, 10)  # started by t=1: no longer pending
            await trio.sleep(1)
            seq.submit_nowait(order.append, "q1")
            seq.submit_nowait(order.append, "q2")
            assert seq.statistics().pending == 2
            with pytest.raises(trio.WouldBlock):
                seq.submit_nowait(order.append, "no")

            async def blocked(tag):
                ticket = await seq.submit(order.append, tag)
                order.append(f"admitted {tag} at {trio.current_time():g}")
                await ticket

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked, "b1")
                await trio.sleep(1)
                nursery.start_soon(blocked, "b2")
                await trio.sleep(1)
                assert seq.statistics().blocked_submitters == 2
                assert "2 submitters blocked" in seq._describe_wait()
        # Blocked submitters were admitted first come, first served as room appeared.
        assert [x for x in order if not x.startswith("admitted")] == ["q1", "q2", "b1", "b2"]
        assert "admitted b1 at 10" in order and "admitted b2 at 10" in order

    explore_ok(main)


def test_cancelled_blocked_submit_submits_nothing_and_close_wakes_submitters():
    async def main():
        log = []
        async with open_sequencer(max_pending=1) as seq:
            seq.submit_nowait(trio.sleep, 5)
            await trio.sleep(1)
            seq.submit_nowait(log.append, "queued")
            with trio.move_on_after(1):
                await seq.submit(log.append, "given up")
            assert seq.statistics().blocked_submitters == 0

            async def closer():
                await trio.sleep(1)
                seq.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(closer)
                with pytest.raises(trio.ClosedResourceError):
                    await seq.submit(log.append, "refused")
        assert log == ["queued"]

    explore_ok(main)


# ---------------------------------------------------------------- cancellation


def test_cancelling_the_block_cancels_pending_tasks_and_reports_them():
    async def main():
        rec = seqlab.Recorder()
        log = []
        with seqlab.recording(rec):
            with trio.move_on_after(2.5):
                async with open_sequencer(name="db") as seq:
                    tickets = [seq.submit_nowait(trio.sleep, 1) for _ in range(5)]
                    tickets.append(seq.submit_nowait(log.append, "never"))
                    await tickets[-1]
        assert trio.current_time() == 2.5
        assert [t.done for t in tickets] == [True] * 6
        assert [t.cancelled for t in tickets] == [False, False, True, True, True, True]
        with pytest.raises(TaskCancelledError, match="ticket 5 of Sequencer 'db'"):
            await tickets[5]
        stats = seq.statistics()
        assert (stats.completed, stats.cancelled, stats.pending, stats.running) == (2, 4, 0, 0)
        assert log == []
        cancelled = [e.data["ticket"] for e in rec.events if e.kind == "cancelled"]
        assert sorted(cancelled) == [2, 3, 4, 5]

    explore_ok(main)


def test_tasks_waiting_on_cancelled_tickets_are_told_and_nothing_is_left_waiting():
    # Waiters outside the block, on a running ticket, on a queued one and on a direct task of
    # the dispatcher, when an error ends the block: each hears TaskCancelledError, at once.
    async def main():
        heard = []

        async def wait_for(name, ticket):
            try:
                await ticket
            except TaskCancelledError as exc:
                heard.append((name, type(exc.__cause__).__name__, trio.current_time()))

        async with trio.open_nursery() as waiters:
            with pytest.raises(KeyError):
                async with open_dispatcher(workers=1) as d:
                    async with open_sequencer(dispatcher=d) as seq:
                        running = seq.submit_nowait(trio.sleep, 10)
                        queued = seq.submit_nowait(trio.sleep, 10)
                        direct = d.submit_nowait(trio.sleep, 10)
                        for name, ticket in [("running", running), ("queued", queued)]:
                            waiters.start_soon(wait_for, name, ticket)
                        waiters.start_soon(wait_for, "direct", direct)
                        await trio.sleep(1)
                        raise KeyError("body")
        assert sorted(heard) == [
            ("direct", "KeyError", 1.0),
            ("queued", "KeyError", 1.0),
            ("running", "KeyError", 1.0),
        ]
        assert not seq._waiting and not d._waiting

    explore_ok(main)


def test_cancelling_one_sequencer_interrupts_its_task_on_a_shared_dispatcher():
    async def main():
        log = []
        async with open_dispatcher(workers=1) as d:
            async with open_sequencer(dispatcher=d) as other:
                with trio.move_on_after(1):
                    async with open_sequencer(dispatcher=d) as seq:
                        long = seq.submit_nowait(trio.sleep, 100)
                        seq.submit_nowait(log.append, "never")
                        await trio.sleep_forever()
                assert long.cancelled
                assert trio.current_time() == 1.0
                assert await other.call(log.append, "other still served") is None
        assert log == ["other still served"]
        assert d.statistics().cancelled == 2

    explore_ok(main)


def test_interrupted_task_that_swallows_cancellation_does_not_hurt_the_next_one():
    async def main():
        log = []

        async def stubborn():
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                log.append("swallowed")

        async with open_dispatcher(workers=1) as d:
            async with open_sequencer(dispatcher=d) as other:
                with trio.move_on_after(1):
                    async with open_sequencer(dispatcher=d) as seq:
                        seq.submit_nowait(stubborn)
                        await trio.sleep_forever()
                other.submit_nowait(trio.sleep, 2)
                other.submit_nowait(log.append, "next task ran in full")
        assert log == ["swallowed", "next task ran in full"]
        assert trio.current_time() == 3.0

    explore_ok(main)


def test_cancelling_the_dispatcher_cancels_everything_queued_nothing_hangs():
    async def main():
        with trio.move_on_after(3):
            async with open_dispatcher(workers=2) as d, open_sequencer(dispatcher=d) as seq:
                tickets = [seq.submit_nowait(trio.sleep, 2) for _ in range(3)]
                direct = [d.submit_nowait(trio.sleep, 10) for _ in range(3)]
        assert trio.current_time() == 3
        assert [t.cancelled for t in tickets] == [False, True, True]
        assert all(t.cancelled for t in direct)
        assert d.statistics().running == 0

    explore_ok(main)


def test_cancelled_wait_on_ticket_leaves_the_task_queued():
    async def main():
        async with open_sequencer() as seq:
            ticket = seq.submit_nowait(trio.sleep, 5)
            with trio.move_on_after(1):
                await ticket
            assert not ticket.done
            with trio.move_on_after(1):
                await seq.call(trio.sleep, 1)
            assert await ticket is None
        assert trio.current_time() == 6

    explore_ok(main)


# ---------------------------------------------------------------- deadlocks


def test_waiting_on_own_sequencer_from_inside_raises_instead_of_hanging():
    async def main():
        async with open_sequencer(name="db") as seq:

            async def nested():
                return await seq.call(int, "1")

            with pytest.raises(RuntimeError, match="same sequencer"):
                await seq.call(nested)

            async def awaits_later():
                await later

            first = seq.submit_nowait(awaits_later)
            later = seq.submit_nowait(int, "2")
            with pytest.raises(RuntimeError, match="wait forever"):
                await first
            assert await later == 2

    seqlab.run(main, seed=0)


def test_deadlock_report_names_the_sequencer():
    async def main():
        never = trio.Event()
        async with open_sequencer(name="db") as seq:
            seq.submit_nowait(never.wait)
            await seq.call(int)

    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=0)
    assert "Sequencer 'db' (ticket 0 running, 1 pending)" in str(info.value)

    async def awaits_ticket():
        never = trio.Event()
        async with open_sequencer(name="db") as seq:
            seq.submit_nowait(never.wait)
            await seq.submit_nowait(int)

    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(awaits_ticket, seed=0)
    blocked = {t.name: t.waits_on for t in info.value.tasks}
    assert blocked["awaits_ticket"] == (
        "at Sequencer 'db' (waiting for ticket 1, ticket 0 running, 1 pending)"
    )
    assert blocked["db-worker"] == "on trio.Event"


# ---------------------------------------------------------------- statistics and trace


def test_statistics_count_outcomes_and_exact_queue_delay():
    async def main():
        async with open_dispatcher(workers=1, name="pool") as d:
            async with open_sequencer(name="db", dispatcher=d, max_pending=10) as seq:
                seq.submit_nowait(trio.sleep, 5)
                late = seq.submit_nowait(int, "3")
                await trio.sleep(1)
                stats = seq.statistics()
                assert stats == SequencerStatistics(
                    name="db",
                    pending=1,
                    running=1,
                    completed=0,
                    failed=0,
                    cancelled=0,
                    max_queue_delay=0.0,
                    max_pending=10,
                    blocked_submitters=0,
                    closed=False,
                )
                assert await late == 3
                assert seq.statistics().max_queue_delay == 5.0
                assert seq.statistics().completed == 2
            assert await d.call(int, "4") == 4
            dstats = d.statistics()
            assert isinstance(dstats, DispatcherStatistics)
            assert (dstats.completed, dstats.max_queue_delay, dstats.workers) == (3, 5.0, 1)
            assert dstats.sequencers == 0 and dstats.pending == 0
            assert isinstance(d, Dispatcher) and d.workers == 1 and d.name == "pool"

    seqlab.run(main, seed=0)


def test_dispatcher_longest_queue_delay_covers_open_closed_and_direct():
    # The dispatcher's max_queue_delay is the longest wait of any task it ran: a sequencer's
    # still open, one's already closed (a later, shorter one closing after it must not hide
    # it), and its own direct tasks.
    async def main():
        async with open_dispatcher(workers=1) as d:
            async with open_sequencer(dispatcher=d) as outer:
                async with open_sequencer(dispatcher=d) as inner:
                    inner.submit_nowait(trio.sleep, 3)
                    assert await inner.call(int, "1") == 1  # waited 3
                    assert inner.statistics().max_queue_delay == 3.0
                    assert d.statistics().max_queue_delay == 3.0  # inner still open
                assert d.statistics().max_queue_delay == 3.0  # inner closed
                outer.submit_nowait(trio.sleep, 2)
                assert await outer.call(int, "2") == 2  # waited 2
                assert outer.statistics().max_queue_delay == 2.0
            assert d.statistics().max_queue_delay == 3.0  # outer (2) closed after inner (3)
            d.submit_nowait(trio.sleep, 5)
            assert await d.call(int, "3") == 3  # waited 5
            assert d.statistics().max_queue_delay == 5.0

    explore_ok(main)


def test_statistics_add_up_at_every_step_on_a_shared_dispatcher():
    # Completed (and the dispatcher's pending and running) are counted from the queues, the
    # workers and the other outcomes; each is checked while tasks queue, run, fail, complete
    # and are cancelled, including direct tasks, which count for the dispatcher only.
    def counts(s):
        return (s.pending, s.running, s.completed, s.failed, s.cancelled)

    def boom():
        raise ValueError("boom")

    async def main():
        async with open_dispatcher(workers=1) as d:
            async with open_sequencer(dispatcher=d) as a:
                a.submit_nowait(trio.sleep, 1)
                failing = a.submit_nowait(boom)
                d.submit_nowait(trio.sleep, 1)
                a.submit_nowait(int)
                assert counts(a.statistics()) == (3, 0, 0, 0, 0)
                assert counts(d.statistics()) == (4, 0, 0, 0, 0)
                await trio.sleep(0.5)  # a's sleep runs
                assert counts(a.statistics()) == (2, 1, 0, 0, 0)
                assert counts(d.statistics()) == (3, 1, 0, 0, 0)
                await trio.sleep(1)  # a's boom failed at 1.0; the direct sleep runs
                assert counts(a.statistics()) == (1, 0, 1, 1, 0)
                assert counts(d.statistics()) == (1, 1, 1, 1, 0)
                with pytest.raises(ValueError):
                    await failing
            assert counts(a.statistics()) == (0, 0, 2, 1, 0)
            assert counts(d.statistics()) == (0, 0, 3, 1, 0)
            with trio.move_on_after(1.5):
                async with open_sequencer(dispatcher=d) as b:
                    b.submit_nowait(trio.sleep, 1)
                    b.submit_nowait(trio.sleep, 1)
                    b.submit_nowait(int)
                    await trio.sleep_forever()
            assert counts(b.statistics()) == (0, 0, 1, 0, 2)
            assert counts(d.statistics()) == (0, 0, 4, 1, 2)
        assert d.statistics().sequencers == 0

    explore_ok(main)


def trace_main():
    async def main():
        def boom():
            raise ValueError("x")

        async with open_sequencer(name="db") as seq:
            seq.submit_nowait(trio.sleep, 2)
            bad = seq.submit_nowait(boom)
            with pytest.raises(ValueError):
                await bad

    return main


def test_trace_events_carry_queue_delay_and_are_reproducible():
    texts = []
    for _ in range(2):
        rec = seqlab.Recorder()
        seqlab.run(trace_main(), seed=11, recorder=rec)
        texts.append(rec.to_text())
        events = [(e.kind, dict(e.data)) for e in rec.events if e.primitive == "Sequencer 'db'"]
        assert events == [
            ("submit", {"ticket": 0, "pending": 1}),
            ("submit", {"ticket": 1, "pending": 2}),
            ("start", {"ticket": 0, "delay": 0.0}),
            ("done", {"ticket": 0, "duration": 2.0}),
            ("start", {"ticket": 1, "delay": 2.0}),
            ("failed", {"ticket": 1, "duration": 0.0, "error": "ValueError: x"}),
        ]
    assert texts[0] == texts[1]
    assert "db-worker" in texts[0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_pending": 0}, ValueError, "max_pending must be at least 1"),
        ({"max_pending": -3}, ValueError, "max_pending"),
        ({"max_pending": 1.5}, TypeError, "max_pending must be an int or None"),
        ({"max_pending": True}, TypeError, "max_pending"),
        ({"name": 3}, TypeError, "name must be a str"),
        ({"dispatcher": "pool"}, TypeError, "dispatcher must be a Dispatcher"),
    ],
)
def test_open_sequencer_rejects_bad_arguments_at_call_time(kwargs, error, match):
    with pytest.raises(error, match=match):
        open_sequencer(**kwargs)


@pytest.mark.parametrize(
    ("workers", "error"),
    [(0, ValueError), (-1, ValueError), (2.0, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_open_dispatcher_rejects_bad_workers(workers, error):
    with pytest.raises(error, match="workers"):
        open_dispatcher(workers)
    with pytest.raises(TypeError, match="name"):
        open_dispatcher(name=b"x")


def test_non_callable_fn_is_rejected_with_a_clear_error():
    async def main():
        async def work():
            pass  # pragma: no cover

        async with open_dispatcher() as d, open_sequencer(dispatcher=d) as seq:
            for submit in (seq.submit_nowait, d.submit_nowait):
                with pytest.raises(TypeError, match="fn must be callable"):
                    submit(42)
            with pytest.raises(TypeError, match="fn must be callable"):
                await seq.submit("text")
            with pytest.raises(TypeError, match="fn must be callable"):
                await d.call(None)
            coro = work()
            with pytest.raises(TypeError, match=r"not submit_nowait\(fn\(x\)\)"):
                seq.submit_nowait(coro)
            coro.close()
            assert seq.statistics().pending == 0

    seqlab.run(main, seed=0)


# ---------------------------------------------------------------- property


task_spec = st.tuples(
    st.integers(0, 2),  # sequencer index
    st.booleans(),  # async?
    st.booleans(),  # fails?
    st.integers(0, 3),  # sleep (async) in virtual seconds
)


@settings(max_examples=50, deadline=None)
@given(
    specs=st.lists(task_spec, max_size=25),
    workers=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_property_order_no_overlap_and_outcomes(specs, workers, seed):
    async def main():
        logs: list[list[int]] = [[], [], []]
        detectors = [RaceDetector() for _ in range(3)]

        def make(k, i, is_async, fails, delay):
            def sync_task():
                detectors[k].inside += 1
                assert detectors[k].inside == 1
                logs[k].append(i)
                detectors[k].inside -= 1
                if fails:
                    raise ValueError(i)
                return i

            async def async_task():
                await detectors[k].section(logs[k], i, yields=1)
                detectors[k].inside += 1
                await trio.sleep(delay)
                detectors[k].inside -= 1
                if fails:
                    raise ValueError(i)
                return i

            return async_task if is_async else sync_task

        async with open_dispatcher(workers=workers) as d:
            async with (
                open_sequencer(dispatcher=d) as s0,
                open_sequencer(dispatcher=d) as s1,
                open_sequencer(dispatcher=d) as s2,
            ):
                seqs = [s0, s1, s2]
                tickets = []
                for i, (k, is_async, fails, delay) in enumerate(specs):
                    tickets.append(seqs[k].submit_nowait(make(k, i, is_async, fails, delay)))
                for i, ticket in enumerate(tickets):
                    if specs[i][2]:
                        with pytest.raises(ValueError):
                            await ticket
                    else:
                        assert await ticket == i
        for k in range(3):
            assert logs[k] == [i for i, spec in enumerate(specs) if spec[0] == k]
            assert detectors[k].max_inside <= 1
        failed = sum(spec[2] for spec in specs)
        assert d.statistics().failed == failed
        assert d.statistics().completed == len(specs) - failed

    seqlab.run(main, seed=seed)
