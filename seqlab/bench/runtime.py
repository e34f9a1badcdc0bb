"""The runtime: seqlab.run's virtual clock against trio's own MockClock.

Tasks sleeping until distinct deadlines make the clock jump once per task; a clock that
looks at every task on each jump costs N(N+1)/2 task visits for N tasks. The peer is
``trio.run`` with ``trio.testing.MockClock(autojump_threshold=0)``, which jumps the same way.

The deadlines are a fixed permutation of the tasks, not their creation order. seqlab.run
shuffles each batch (its default strategy), trio keeps or reverses it; with deadlines in
creation order, trio's deadline heap gets them pre-sorted and seqlab's shuffled, and the row
would measure the heap's luck (1.23x, against 1.06x for seqlab's lockstep order) instead of
the clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from ..runtime import run
from . import comparison, cpu_time, scaling

_STRIDE = 7919  # a prime: i -> i * _STRIDE % n is a permutation for every n it does not divide


def _tasks(quick: bool) -> int:
    return 1_000 if quick else 3_000


def _sleepers(n: int) -> Callable[[], Awaitable[None]]:
    async def main() -> None:
        async def sleeper(i: int) -> None:
            await trio.sleep(1 + i * 0.001)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(sleeper, (i * _STRIDE) % n)

    return main


def _seqlab(n: int) -> float:
    start = cpu_time()
    run(_sleepers(n), seed=0)
    return cpu_time() - start


def _mock_clock(n: int) -> float:
    start = cpu_time()
    trio.run(_sleepers(n), clock=trio.testing.MockClock(autojump_threshold=0))
    return cpu_time() - start


comparison(
    "runtime",
    "tasks on distinct deadlines vs trio MockClock",
    peer_name="trio.run + MockClock",
    kind="overhead",
    target=1.2,
    unit="task",
    ops=_tasks,
    peer=lambda quick: _mock_clock(_tasks(quick)),
)(lambda quick: _seqlab(_tasks(quick)))


@scaling(
    "runtime",
    "tasks on distinct deadlines, cost per task",
    unit="task",
    sizes=(10, 1_000, 100_000),
    quick_sizes=(10, 100, 1_000),
)
def distinct_deadlines(n: int, quick: bool) -> tuple[float, int]:
    """seqlab.run with ``n`` tasks sleeping until ``n`` distinct virtual deadlines,
    repeated so that every size runs about as many tasks."""
    total = 2_000 if quick else 200_000
    rounds = max(1, total // n)
    return sum(_seqlab(n) for _ in range(rounds)), rounds * n
