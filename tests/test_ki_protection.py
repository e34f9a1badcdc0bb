"""Sync methods that change a primitive's state and wake tasks are protected from Ctrl-C.

trio marks such methods (``Event.set``, ``Lock.release``, ...) with
``trio.lowlevel.enable_ki_protection``: a KeyboardInterrupt delivered half way through would
leave the primitive half updated (a waiter woken but not counted, a cursor moved but its
waiters not woken). It matters where trio runs on the main thread, as in the seqlab kernel.

The probe: a trace function asks trio, on entry to the method, whether KeyboardInterrupt
protection is on at that point (``trio.lowlevel.currently_ki_protected``), from inside an
unprotected task.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

import seqlab


def _protection_seen(code: Any, call: Callable[[], Any]) -> list[bool]:
    """For each time a frame of ``code`` starts or resumes inside ``call()``: whether KI
    protection was on (asked from the tracer, with that frame on the stack above it)."""
    seen: list[bool] = []

    def tracer(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is code:
            seen.append(trio.lowlevel.currently_ki_protected())

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(previous)
    assert seen, f"{code.co_qualname} never ran"
    return seen


def protection_on_entry(method: Callable[..., Any], call: Callable[[], Any]) -> bool:
    """Whether KI protection is on when ``method``'s code starts running inside ``call()``."""
    code = getattr(method, "__code__", None) or method.__func__.__code__  # type: ignore[attr-defined]
    return _protection_seen(code, call)[0]


def in_trio(fn: Callable[[], Any]) -> Any:
    async def main() -> Any:
        assert not trio.lowlevel.currently_ki_protected()  # user tasks are not protected
        return await fn()

    return trio.run(main)


async def _sequencer(method: str, kind: str) -> bool:
    opener = seqlab.open_sequencer() if kind == "Sequencer" else seqlab.open_dispatcher()
    async with opener as owner:
        cls = type(owner)
        if method == "submit_nowait":
            return protection_on_entry(cls.submit_nowait, lambda: owner.submit_nowait(len, ()))
        return protection_on_entry(cls.close, owner.close)


async def _convoy() -> bool:
    async def handler(delivery: Any) -> None:
        pass

    async with seqlab.open_convoy(handler) as convoy:
        return protection_on_entry(seqlab.Convoy.send_nowait, lambda: convoy.send_nowait("k", 1))


def _plain(method: Callable[..., Any], make: Callable[[], Any], *args: Any) -> Callable[[], Any]:
    async def check() -> bool:
        obj = make()
        return protection_on_entry(method, lambda: getattr(obj, method.__name__)(*args))

    return check


def _ring_with_claim() -> seqlab.RingBuffer:
    ring = seqlab.RingBuffer(4)
    ring.try_next()
    return ring


PROTECTED = {
    "Barrier.abort": _plain(seqlab.Barrier.abort, lambda: seqlab.Barrier(2)),
    "Barrier.reset": _plain(seqlab.Barrier.reset, lambda: seqlab.Barrier(2)),
    "Phaser.register": _plain(seqlab.Phaser.register, lambda: seqlab.Phaser(1)),
    "Phaser.arrive": _plain(seqlab.Phaser.arrive, lambda: seqlab.Phaser(2)),
    "Phaser.arrive_and_deregister": _plain(
        seqlab.Phaser.arrive_and_deregister, lambda: seqlab.Phaser(2)
    ),
    "Sequencer.submit_nowait": lambda: _sequencer("submit_nowait", "Sequencer"),
    "Sequencer.close": lambda: _sequencer("close", "Sequencer"),
    "Dispatcher.submit_nowait": lambda: _sequencer("submit_nowait", "Dispatcher"),
    "Dispatcher.close": lambda: _sequencer("close", "Dispatcher"),
    "Convoy.send_nowait": _convoy,
    "Sequence.set": _plain(seqlab.Sequence.set, seqlab.Sequence, 3),
    "Sequence.complete": _plain(seqlab.Sequence.complete, seqlab.Sequence, 0),
    "SequenceBarrier.alert": _plain(
        seqlab.SequenceBarrier.alert, lambda: seqlab.SequenceBarrier(seqlab.Sequence())
    ),
    "SequenceBarrier.clear_alert": _plain(
        seqlab.SequenceBarrier.clear_alert, lambda: seqlab.SequenceBarrier(seqlab.Sequence())
    ),
    "RingBuffer.try_next": _plain(seqlab.RingBuffer.try_next, lambda: seqlab.RingBuffer(4)),
    "RingBuffer.publish": _plain(seqlab.RingBuffer.publish, _ring_with_claim, 0),
    "RingBuffer.add_gating": _plain(
        seqlab.RingBuffer.add_gating, lambda: seqlab.RingBuffer(4), seqlab.Sequence()
    ),
}


@pytest.mark.parametrize("name", sorted(PROTECTED))
def test_state_changing_sync_methods_are_ki_protected(name: str):
    assert in_trio(PROTECTED[name]) is True


def test_remove_gating_and_pipeline_publish_nowait_are_ki_protected():
    async def check() -> list[bool]:
        ring = seqlab.RingBuffer(4)
        gate = seqlab.Sequence()
        ring.add_gating(gate)
        removed = protection_on_entry(
            seqlab.RingBuffer.remove_gating, lambda: ring.remove_gating(gate)
        )
        pipe = seqlab.Pipeline(4)
        pipe.stage("s", lambda event, seq, end: None)
        async with pipe.run():
            published = protection_on_entry(
                seqlab.Pipeline.publish_nowait, lambda: pipe.publish_nowait(1)
            )
        return [removed, published]

    assert in_trio(check) == [True, True]


def test_the_probe_sees_unprotected_methods():
    # Reading methods need no protection; the probe must tell them apart from protected ones.
    async def check() -> bool:
        barrier = seqlab.Barrier(2)
        return protection_on_entry(seqlab.Barrier.statistics, barrier.statistics)

    assert in_trio(check) is False


def _protected_while_running(code: Any, scenario: Callable[[], Any]) -> list[bool]:
    """For each time a frame of ``code`` starts or resumes during ``trio.run(scenario)``:
    whether KI protection was on (the first entry is the one that matters)."""
    return _protection_seen(code, lambda: trio.run(scenario))


async def _await_a_ticket() -> None:
    async with seqlab.open_sequencer() as seq:
        await seq.submit_nowait(trio.sleep, 1)


async def _blocked_submit() -> None:
    async with seqlab.open_sequencer(max_pending=1) as seq:
        seq.submit_nowait(trio.sleep, 1)  # queued, not started: full
        await seq.submit(int)  # waits for room until the sleep starts


@pytest.mark.parametrize(
    ("method", "scenario"),
    [
        (seqlab.Ticket._wait, _await_a_ticket),
        (seqlab.Sequencer.submit, _blocked_submit),
        (seqlab.Dispatcher._wait_for_work, _await_a_ticket),
    ],
    ids=["await ticket", "Sequencer.submit waiting for room", "an idle worker"],
)
def test_a_task_that_parks_on_the_sequencer_registers_itself_under_ki_protection(
    method: Any, scenario: Callable[[], Any]
) -> None:
    # Each adds the task to a list of waiters (a ticket's, the blocked submitters', the idle
    # workers') and then parks. A KeyboardInterrupt raised between the two would leave a
    # task in the list that is not parked: waking it later would reschedule a running task
    # (trio's ParkingLot.park is protected for the same reason). Protected, the interrupt
    # waits for the park, where trio delivers it through the abort function, which takes
    # the task out of the list.
    assert all(_protected_while_running(method.__code__, scenario))


async def _barrier_meeting() -> None:
    barrier = seqlab.Barrier(3)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(barrier.wait)


async def _phaser_phases() -> None:
    phaser = seqlab.Phaser(parties=2)

    async def watcher() -> None:
        await phaser.wait_for_advance(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher)
        await trio.sleep(0)
        nursery.start_soon(phaser.arrive_and_wait)
        nursery.start_soon(phaser.arrive_and_wait)


@pytest.mark.parametrize(
    ("method", "scenario"),
    [
        (seqlab.Barrier.wait, _barrier_meeting),
        (seqlab.Phaser.arrive_and_wait, _phaser_phases),
        (seqlab.Phaser.wait_for_advance, _phaser_phases),
        (seqlab.Phaser._park, _phaser_phases),
    ],
    ids=["Barrier.wait", "Phaser.arrive_and_wait", "Phaser.wait_for_advance", "Phaser._park"],
)
def test_barrier_and_phaser_waits_run_under_ki_protection(
    method: Any, scenario: Callable[[], Any]
) -> None:
    # A waiter is put in the waiters and then parks; the last arriver reschedules every
    # waiter and then clears them. A KeyboardInterrupt between the two steps of either would
    # leave a task counted that is not parked (the release would reschedule a running task)
    # or a generation released in part (a second release would reschedule tasks twice).
    assert all(_protected_while_running(method.__code__, scenario))


def test_ctrl_c_still_reaches_a_main_task_parked_at_a_barrier() -> None:
    # Protection defers the interrupt, it must not swallow it: a real SIGINT raised while
    # the main task waits at a barrier that will never fill ends the run with
    # KeyboardInterrupt, and the barrier no longer counts the task.
    import signal

    barrier = seqlab.Barrier(2)

    async def main() -> None:
        async def interrupt_once_parked() -> None:
            while barrier.n_waiting == 0:
                await trio.sleep(0)
            signal.raise_signal(signal.SIGINT)

        # (A guard, not a timing: if the interrupt were swallowed the wait would never end;
        # it ends with TooSlowError instead, which fails the test below.)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(interrupt_once_parked)
                await barrier.wait()

    with pytest.raises(BaseException) as info:
        trio.run(main)
    caught = info.value
    if isinstance(caught, BaseExceptionGroup):  # the nursery's, around the interrupt
        rest = caught.split(KeyboardInterrupt)[1]
        assert rest is None, rest
    else:
        assert isinstance(caught, KeyboardInterrupt), caught
    assert barrier.n_waiting == 0
