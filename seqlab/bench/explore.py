"""Exploration: what each strategy finds, what a run costs, and what a second process buys.

The race suite is :mod:`seqlab.examples.races` (three races that need an unlucky order, five
that need a task to fall behind). The cost peer is a bare ``trio.run`` of the same correct
program with trio's own ``MockClock(autojump_threshold=0)``: exploring must not cost much more
per schedule than running the program does.
"""

from __future__ import annotations

import statistics
import time

import trio
import trio.testing

from ..examples.races import DELAY_RACES, LOCKSTEP_RACES
from ..runtime import explore
from . import comparison, cpu_time, limit

RACES = LOCKSTEP_RACES + DELAY_RACES
STRATEGIES = ("auto", "random", "delay", "pct")


async def _careful_tellers() -> None:
    """A correct program of the races' size: three tellers, a lock, a few steps each."""
    lock = trio.Lock()
    account = {"balance": 0}

    async def teller() -> None:
        for _ in range(3):
            async with lock:
                seen = account["balance"]
                await trio.sleep(0)
                account["balance"] = seen + 1
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(teller, name=f"teller-{i}")
    assert account["balance"] == 9


def _runs(quick: bool) -> int:
    return 100 if quick else 400


def _explore_cost(quick: bool) -> float:
    start = cpu_time()
    result = explore(_careful_tellers, seeds=range(_runs(quick)))
    assert result.ok, result
    return cpu_time() - start


def _bare_trio(quick: bool) -> float:
    start = cpu_time()
    for _ in range(_runs(quick)):
        trio.run(_careful_tellers, clock=trio.testing.MockClock(autojump_threshold=0))
    return cpu_time() - start


comparison(
    "explore",
    "cost per schedule vs bare trio.run",
    peer_name="trio.run + MockClock",
    kind="overhead",
    target=1.3,
    unit="run",
    ops=_runs,
    peer=_bare_trio,
)(_explore_cost)


def _wall(workers: int, quick: bool) -> float:
    # Processes work in parallel: this row is timed on the wall clock, not in CPU seconds.
    start = time.perf_counter()
    result = explore(_careful_tellers, seeds=range(4 * _runs(quick)), workers=workers)
    assert result.ok, result
    return time.perf_counter() - start


comparison(
    "explore",
    "workers=2 vs workers=1 (2 cores)",
    peer_name="workers=1",
    kind="faster",
    target=1.7,
    unit="run",
    ops=lambda quick: 4 * _runs(quick),
    peer=lambda quick: _wall(1, quick),
)(lambda quick: _wall(2, quick))


def _first_failures(strategy: str, quick: bool) -> list[int | None]:
    """For each race, the number of runs until the first failure (``None``: not found)."""
    budget = 50 if quick else 100
    found: list[int | None] = []
    for race in RACES:
        result = explore(race, seeds=range(budget), strategy=strategy)
        found.append(result.failures[0].seed + 1 if result.failures else None)
    return found


def _register(strategy: str) -> None:
    count = len(RACES)
    limit(
        "explore",
        f"races found by {strategy!r} (of {count}, 100 runs each)",
        unit="races",
        target=None,
        heavy=True,
    )(lambda quick: float(sum(n is not None for n in _first_failures(strategy, quick))))

    def median_runs(quick: bool) -> float:
        runs = [n for n in _first_failures(strategy, quick) if n is not None]
        return float(statistics.median(runs)) if runs else float("nan")

    limit(
        "explore",
        f"median runs to first failure, {strategy!r}",
        unit="runs",
        target=None,
        heavy=True,
    )(median_runs)


for _strategy in STRATEGIES:
    _register(_strategy)
