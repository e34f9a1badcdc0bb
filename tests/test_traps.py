"""seqlab._traps: trio's yields, one frame shorter, must behave exactly like trio's own."""

from __future__ import annotations

from typing import Any

import outcome
import pytest
import trio
import trio.testing

from seqlab import _traps, barrier, sequencer


class Steps(trio.abc.Instrument):
    """Counts the steps one task takes (each resumption after a yield is a step)."""

    def __init__(self) -> None:
        self.steps = 0
        self.task: trio.lowlevel.Task | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


def test_the_direct_forms_are_in_use_and_used_by_the_primitives() -> None:
    # trio's message classes are private: if a release moves them this fails loudly (the
    # primitives would still work, through the public functions, only slower).
    assert _traps.DIRECT
    assert _traps.cancel_shielded_checkpoint is _traps._cancel_shielded_checkpoint
    assert _traps.wait_task_rescheduled is _traps._wait_task_rescheduled
    assert sequencer._yield_turn is _traps.cancel_shielded_checkpoint
    assert barrier._wait_task_rescheduled is _traps.wait_task_rescheduled
    assert barrier._cancel_shielded_checkpoint is _traps.cancel_shielded_checkpoint
    assert barrier._park is _traps.park is _traps._park


@pytest.mark.parametrize(
    "yield_turn",
    [trio.lowlevel.cancel_shielded_checkpoint, _traps.cancel_shielded_checkpoint],
    ids=["trio", "seqlab"],
)
def test_cancel_shielded_checkpoint_is_a_schedule_point_and_not_a_cancel_point(
    yield_turn: Any,
) -> None:
    async def main() -> int:
        steps.task = trio.lowlevel.current_task()
        with trio.CancelScope() as scope:
            scope.cancel()
            before = steps.steps
            await yield_turn()
            await yield_turn()
            return steps.steps - before
        raise AssertionError("cancelled at a cancel-shielded checkpoint")  # pragma: no cover

    steps = Steps()
    assert trio.run(main, instruments=[steps]) == 2


def _park_with_a_fresh_message(abort_func: Any) -> Any:
    return _traps.park(_traps.park_message(abort_func))


@pytest.mark.parametrize(
    "wait",
    [trio.lowlevel.wait_task_rescheduled, _traps.wait_task_rescheduled, _park_with_a_fresh_message],
    ids=["trio", "seqlab", "park"],
)
def test_wait_task_rescheduled_parks_wakes_and_honours_the_abort_function(wait: Any) -> None:
    # Woken with the value it is rescheduled with; a cancellation asks the abort function:
    # refused, the task stays parked until rescheduled; accepted, it raises Cancelled.

    async def main() -> list[object]:
        log: list[object] = []
        me = trio.lowlevel.current_task()

        def refuse(_: Any) -> trio.lowlevel.Abort:
            log.append(("abort", trio.current_time()))
            return trio.lowlevel.Abort.FAILED

        def accept(_: Any) -> trio.lowlevel.Abort:
            log.append(("abort", trio.current_time()))
            return trio.lowlevel.Abort.SUCCEEDED

        async def waker() -> None:
            await trio.sleep(1)
            trio.lowlevel.reschedule(me, outcome.Value("first"))
            await trio.sleep(2)
            trio.lowlevel.reschedule(me, outcome.Value("second"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waker)
            log.append(await wait(refuse))
            with trio.move_on_after(1):  # fires at 2; refused; woken at 3
                log.append(await wait(refuse))
            with trio.move_on_after(1) as scope:  # fires at 4; accepted
                await wait(accept)
            log.append((scope.cancelled_caught, trio.current_time()))
        return log

    got = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == ["first", ("abort", 2.0), "second", ("abort", 4.0), (True, 4.0)]


def test_one_park_message_parks_the_same_task_again_and_again() -> None:
    # A barrier keeps each party's message: reused, it still wakes with the new value and
    # still asks the abort function on each cancellation.
    async def main() -> list[object]:
        log: list[object] = []
        me = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            log.append(("abort", trio.current_time()))
            return trio.lowlevel.Abort.SUCCEEDED

        message = _traps.park_message(abort)

        async def waker() -> None:
            for value in ("one", "two"):
                await trio.sleep(1)
                trio.lowlevel.reschedule(me, outcome.Value(value))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waker)
            log.append(await _traps.park(message))
            log.append(await _traps.park(message))
        for _ in range(2):
            with trio.move_on_after(1):
                await _traps.park(message)
        return log

    got = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == ["one", "two", ("abort", 3.0), ("abort", 4.0)]


@pytest.mark.parametrize(
    ("steps", "cancelled", "expected"),
    [
        ((), False, False),
        (("if_cancelled",), False, False),  # a cancel point that does not yield
        (("shielded",), False, True),  # yielded, and nothing to deliver
        (("checkpoint",), False, True),
        (("sleep",), False, True),  # parked, then woken
        # Cancelled: whatever the code passed, a checkpoint now would raise, so it is needed.
        (("shielded",), True, False),
        (("shield_scope_sleep",), True, False),  # a cancel point under a shield
        (("swallow_sleep",), True, False),  # a cancel point whose Cancelled was caught
    ],
)
def test_checkpointed_since_means_a_checkpoint_now_would_change_nothing(
    steps: tuple[str, ...], cancelled: bool, expected: bool
) -> None:
    # The private state trio keeps per task (the schedule-point counter and the cancel
    # status): a consumer that skips its own checkpoint when its handler already yielded
    # relies on them. If trio renames them this fails (the convoy would still be correct,
    # checkpointing every time, only slower).
    assert _traps.COUNTS_CHECKPOINTS

    async def shield_scope_sleep() -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(0.001)

    async def swallow_sleep() -> None:
        try:
            await trio.sleep(0.001)
        except trio.Cancelled:
            pass

    kinds = {
        "shielded": trio.lowlevel.cancel_shielded_checkpoint,
        "if_cancelled": trio.lowlevel.checkpoint_if_cancelled,
        "checkpoint": trio.lowlevel.checkpoint,
        "sleep": lambda: trio.sleep(0.001),
        "shield_scope_sleep": shield_scope_sleep,
        "swallow_sleep": swallow_sleep,
    }

    async def main() -> bool:
        task = trio.lowlevel.current_task()
        with trio.CancelScope() as scope:
            if cancelled:
                scope.cancel()
            marks = _traps.checkpoint_marks(task)
            assert marks is not None
            for step in steps:
                await kinds[step]()
            return _traps.checkpointed_since(task, marks)
        raise AssertionError("unreachable: nothing here raises Cancelled")

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) is expected
    assert _traps.checkpointed_since(object(), None) is False  # type: ignore[arg-type]
