"""Outcomes that can be handed to trio more than once.

``trio.lowlevel.reschedule(task, outcome)`` resumes a task blocked in
``wait_task_rescheduled`` with ``outcome.unwrap()``. An :class:`outcome.Value` may be
unwrapped only once, so every wake-up would allocate a new one (and ``reschedule(task)``
allocates ``Value(None)``); on hot paths that allocation is a tenth of a barrier wait. A
:class:`Ready` carries a value that never changes and may be unwrapped any number of times,
so a primitive can keep one per value it hands out (``NONE``, or one per arrival index).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any, TypeVar

import outcome

T = TypeVar("T")


class Ready(outcome.Outcome[T]):
    """A reusable :class:`outcome.Value`: ``unwrap()`` returns ``value`` every time."""

    __slots__ = ("value",)
    value: T

    def __init__(self, value: T) -> None:
        object.__setattr__(self, "value", value)

    def __repr__(self) -> str:
        return f"Ready({self.value!r})"

    def unwrap(self) -> T:
        return self.value

    def send(self, gen: Generator[Any, T, object]) -> Any:
        return gen.send(self.value)

    async def asend(self, agen: AsyncGenerator[Any, T]) -> Any:
        return await agen.asend(self.value)


NONE: Ready[None] = Ready(None)
"""What ``trio.lowlevel.reschedule(task)`` sends, without allocating it each time."""


def indexes(n: int) -> list[Ready[int]]:
    """``Ready(0) .. Ready(n - 1)``."""
    return [Ready(i) for i in range(n)]
