"""trio's two ways of giving up the CPU, one frame shorter than the public functions.

``trio.lowlevel.cancel_shielded_checkpoint()`` and ``trio.lowlevel.wait_task_rescheduled()``
are ``async def`` functions that await a ``@types.coroutine`` generator, which yields one
message to trio's run loop (``CancelShieldedCheckpoint``, or ``WaitTaskRescheduled`` carrying
the abort function) and unwraps the outcome it is resumed with. So each call makes and tears
down two frames and two objects the cyclic GC tracks. The functions here yield the same
message from one generator: the run loop cannot tell them apart, and a hot path pays one
object less per call (about 0.15 us; and one object less for the GC to scan per parked task).

The two message classes are private to trio. ``tests/test_traps.py`` pins them and checks
that these functions behave exactly like the public ones (schedule point, cancel point,
abort protocol); if a trio release moves them, :data:`DIRECT` is false and the public
functions are used instead.

It also reads the count of schedule points trio keeps per task, and whether a cancellation is
due for it (:func:`checkpoint_marks`, :func:`checkpointed_since`): a loop that must checkpoint
now and then can skip its own checkpoint when the user code it ran already yielded and no
cancellation waits to be delivered.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import Any

import trio

__all__ = [
    "COUNTS_CHECKPOINTS",
    "DIRECT",
    "cancel_shielded_checkpoint",
    "checkpoint_marks",
    "checkpointed_since",
    "park",
    "park_message",
    "wait_task_rescheduled",
]

_CANCEL_SHIELDED: Any
_WAIT: Any
try:
    from trio._core import _traps as _trio_traps

    _CANCEL_SHIELDED = _trio_traps.CancelShieldedCheckpoint
    _WAIT = _trio_traps.WaitTaskRescheduled
except (ImportError, AttributeError):  # pragma: no cover - a trio that moved them
    _CANCEL_SHIELDED = _WAIT = None

DIRECT = _CANCEL_SHIELDED is not None and _WAIT is not None
"""True when the one-frame versions are in use (trio's message classes were found)."""


@types.coroutine
def _cancel_shielded_checkpoint() -> Generator[Any, Any, None]:
    (yield _CANCEL_SHIELDED).unwrap()


@types.coroutine
def _wait_task_rescheduled(
    abort_func: Callable[[Callable[[], Any]], trio.lowlevel.Abort],
) -> Generator[Any, Any, Any]:
    return (yield _WAIT(abort_func)).unwrap()


cancel_shielded_checkpoint: Callable[[], Any] = (
    _cancel_shielded_checkpoint if DIRECT else trio.lowlevel.cancel_shielded_checkpoint
)
"""``await cancel_shielded_checkpoint()``: a schedule point, not a cancel point."""

wait_task_rescheduled: Callable[..., Any] = (
    _wait_task_rescheduled if DIRECT else trio.lowlevel.wait_task_rescheduled
)
"""``await wait_task_rescheduled(abort_func)``: park until rescheduled, as trio's function."""


def _message(abort_func: Callable[[Callable[[], Any]], trio.lowlevel.Abort]) -> Any:
    return _WAIT(abort_func)


@types.coroutine
def _park(message: Any) -> Generator[Any, Any, Any]:
    return (yield message).unwrap()


def _abort_func_itself(abort_func: Callable[[Callable[[], Any]], trio.lowlevel.Abort]) -> Any:
    return abort_func


park_message: Callable[[Callable[[Callable[[], Any]], trio.lowlevel.Abort]], Any] = (
    _message if DIRECT else _abort_func_itself
)
"""What :func:`park` takes: built once, it can park the same task again and again.

``wait_task_rescheduled(abort_func)`` makes trio's message anew on every call. A primitive
whose tasks park over and over with the same abort function (a barrier's parties) can make
the message once per task with ``park_message(abort_func)`` and ``await park(message)``
each time: nothing is allocated per wait but the generator."""

park: Callable[[Any], Any] = _park if DIRECT else trio.lowlevel.wait_task_rescheduled
"""``await park(park_message(abort_func))`` is ``await wait_task_rescheduled(abort_func)``."""


COUNTS_CHECKPOINTS = hasattr(trio.lowlevel.Task, "_schedule_points") and hasattr(
    trio.lowlevel.Task, "_cancel_status"
)
"""True when trio counts each task's schedule points and keeps its cancel status (private)."""


def checkpoint_marks(task: trio.lowlevel.Task) -> int | None:
    """How many schedule points ``task`` has passed so far (``Task._schedule_points``, which
    trio's run loop counts each time the task yields).

    A loop that must checkpoint now and then, but runs user code that usually yields for it,
    takes a mark before the user code and asks :func:`checkpointed_since` afterwards, and
    checkpoints itself only if it has to. ``None`` when this trio does not keep the counter.
    """
    if COUNTS_CHECKPOINTS:
        return task._schedule_points
    return None  # pragma: no cover - a trio without the counter


def checkpointed_since(task: trio.lowlevel.Task, marks: int | None) -> bool:
    """True if one ``await trio.lowlevel.checkpoint()`` here would change nothing: ``task``
    passed a schedule point since ``marks`` were taken (other tasks had their turn), and no
    cancellation is due for it now (the checkpoint would not raise :class:`trio.Cancelled`).

    Whether the user code passed a cancel point does not tell the second half: under a
    shield, or in code that catches ``Cancelled``, trio counts a cancel point that delivered
    nothing. So the task's cancel status is read at the moment of asking. False when trio
    keeps neither (the caller then checkpoints, as it would without this test).
    """
    return (
        marks is not None
        and task._schedule_points != marks
        and not task._cancel_status.effectively_cancelled
    )
