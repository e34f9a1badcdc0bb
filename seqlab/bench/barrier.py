"""Barrier: 100 parties x 300 phases.

The floor is the least a correct trio barrier can do: a cancellation point on entry, the
waiting tasks parked with ``wait_task_rescheduled`` (and taken out again if cancelled), the
last arriver rescheduling them all and yielding once. Peers: asyncio.Barrier (in asyncio's
loop), threading.Barrier (100 threads) and a barrier made of a ``trio.Event`` per generation,
as a user might write one. The ParkingLot barrier that used to be the floor is an "(old)" row.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from functools import partial
from typing import Any

import trio

from .. import _traps
from .._outcomes import Ready
from ..barrier import Barrier
from ..trace import Recorder, recording
from . import comparison, cpu_time, scaling, timed_trio

PARTIES = 100


def _phases(quick: bool) -> int:
    return 60 if quick else 300


def _ops(quick: bool) -> int:
    return PARTIES * _phases(quick)


class RawBarrier:
    """The floor: count arrivals, park with wait_task_rescheduled, reschedule everyone.

    Like seqlab's Barrier, it wakes tasks with reusable outcomes (one per arrival index)
    instead of a new ``outcome.Value`` per wake-up, parks and yields with trio's messages
    sent from one frame (``seqlab._traps``), and makes each task's park message (with a
    ``partial`` as its abort function) once and reuses it: the floor may use every trick we
    do. (It keeps every task's message; seqlab's Barrier bounds its store.)
    """

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.waiting: dict[trio.lowlevel.Task, None] = {}
        self.outcomes = [Ready(i) for i in range(parties)]
        self.parked: dict[trio.lowlevel.Task, Any] = {}

    async def wait(self) -> int:
        await trio.lowlevel.checkpoint_if_cancelled()
        waiting = self.waiting
        if len(waiting) + 1 == self.parties:
            for task, ready in zip(waiting, self.outcomes, strict=False):
                trio.lowlevel.reschedule(task, ready)
            waiting.clear()
            await _traps.cancel_shielded_checkpoint()
            return self.parties - 1
        task = trio.lowlevel.current_task()
        waiting[task] = None
        message = self.parked.get(task)
        if message is None:
            message = self.parked[task] = _traps.park_message(partial(_leave, waiting, task))
        arrival: int = await _traps.park(message)
        return arrival


def _leave(waiting: dict[trio.lowlevel.Task, None], task: Any, _: object) -> trio.lowlevel.Abort:
    del waiting[task]
    return trio.lowlevel.Abort.SUCCEEDED


class EventBarrier:
    """A barrier a user might build from trio.Event: one Event per generation."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.count = 0
        self.event = trio.Event()

    async def wait(self) -> None:
        self.count += 1
        if self.count == self.parties:
            self.count = 0
            event, self.event = self.event, trio.Event()
            event.set()
            await trio.lowlevel.checkpoint()
        else:
            await self.event.wait()


class LotBarrier:
    """(old floor) Count, park in a ParkingLot, unpark all."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.count = 0
        self.lot = trio.lowlevel.ParkingLot()

    async def wait(self) -> None:
        self.count += 1
        if self.count == self.parties:
            self.count = 0
            self.lot.unpark_all()
            await trio.lowlevel.checkpoint()
        else:
            await self.lot.park()


async def _parties(barrier: Any, phases: int, parties: int = PARTIES) -> None:
    async def party() -> None:
        for _ in range(phases):
            await barrier.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(parties):
            nursery.start_soon(party)


def _ours(quick: bool) -> float:
    return timed_trio(lambda: _parties(Barrier(PARTIES), _phases(quick)))


def raw_floor(quick: bool) -> float:
    return timed_trio(lambda: _parties(RawBarrier(PARTIES), _phases(quick)))


def event_barrier(quick: bool) -> float:
    return timed_trio(lambda: _parties(EventBarrier(PARTIES), _phases(quick)))


def lot_barrier(quick: bool) -> float:
    return timed_trio(lambda: _parties(LotBarrier(PARTIES), _phases(quick)))


def asyncio_barrier(quick: bool) -> float:
    if sys.version_info < (3, 11):
        raise RuntimeError("asyncio.Barrier needs Python 3.11")
    phases = _phases(quick)

    async def main() -> float:
        barrier = asyncio.Barrier(PARTIES)

        async def party() -> None:
            for _ in range(phases):
                await barrier.wait()

        start = cpu_time()
        await asyncio.gather(*(party() for _ in range(PARTIES)))
        return cpu_time() - start

    return asyncio.run(main())


def threading_barrier(quick: bool) -> float:
    """100 threads at a threading.Barrier (CPU time of the whole process, all threads)."""
    phases = max(1, _phases(quick) // 10)  # a thread switch costs far more; fewer phases
    barrier = threading.Barrier(PARTIES)

    def party() -> None:
        for _ in range(phases):
            barrier.wait()

    threads = [threading.Thread(target=party) for _ in range(PARTIES)]
    start = cpu_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Scaled to the same number of waits as the other rows.
    return (cpu_time() - start) * _phases(quick) / phases


comparison(
    "barrier",
    "waits vs raw reschedule floor",
    peer_name="raw barrier",
    kind="overhead",
    target=1.1,
    unit="wait",
    ops=_ops,
    peer=raw_floor,
)(_ours)
comparison(
    "barrier",
    "waits vs asyncio.Barrier",
    peer_name="asyncio.Barrier",
    kind="faster",
    target=2.5,
    unit="wait",
    ops=_ops,
    peer=asyncio_barrier,
)(_ours)
comparison(
    "barrier",
    "waits vs threading.Barrier, 100 threads",
    peer_name="threading.Barrier",
    kind="faster",
    target=None,
    unit="wait",
    ops=_ops,
    peer=threading_barrier,
)(_ours)
comparison(
    "barrier",
    "waits vs trio.Event barrier",
    peer_name="Event barrier",
    kind="faster",
    target=None,
    unit="wait",
    ops=_ops,
    peer=event_barrier,
)(_ours)
comparison(
    "barrier",
    "(old) waits vs ParkingLot barrier",
    peer_name="ParkingLot barrier",
    kind="overhead",
    target=None,
    unit="wait",
    ops=_ops,
    peer=lot_barrier,
)(_ours)


@comparison(
    "tracing",
    "barrier traced vs untraced",
    peer_name="untraced",
    kind="overhead",
    target=1.3,
    unit="wait",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _parties(Barrier(PARTIES), _phases(quick))

    return timed_trio(main)


def _many_parties(make: Any, n: int, quick: bool, *, pause_gc: bool = False) -> tuple[float, int]:
    total = 20_000 if quick else 200_000
    phases = max(10, total // n)
    start = end = 0.0

    async def main() -> None:
        nonlocal start, end
        barrier = make(n)

        async def party() -> None:
            nonlocal start, end
            await barrier.wait()
            if not start:
                if pause_gc:
                    gc.disable()
                start = cpu_time()
            for _ in range(phases):
                await barrier.wait()
            end = cpu_time()

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(party)

    try:
        trio.run(main)
    finally:
        gc.enable()
    return end - start, phases * n


@scaling("barrier", "parties, cost per wait", unit="wait")
def many_parties(n: int, quick: bool) -> tuple[float, int]:
    """``n`` parties, phases chosen so every size does about as many waits (at least 10
    phases). Timed from the first release to the last party's last wait: spawning and
    ending the tasks is not barrier work."""
    return _many_parties(Barrier, n, quick)


@scaling("barrier", "parties, raw floor's cost per wait (trio itself)", unit="wait", target=None)
def many_parties_floor(n: int, quick: bool) -> tuple[float, int]:
    """The same for the raw floor: how much of the growth is trio's (and the CPU cache's)
    with that many tasks, whatever the barrier."""
    return _many_parties(RawBarrier, n, quick)


@scaling(
    "barrier",
    "parties, cost per wait, cyclic GC paused while timed",
    unit="wait",
    target=None,
)
def many_parties_gc_paused(n: int, quick: bool) -> tuple[float, int]:
    """The barrier row again with the garbage collector off from the first release to the
    last wait. Each parked party keeps a few objects the collector tracks (its coroutines,
    the abort function, trio's WaitTaskRescheduled); with 100,000 parked, young collections
    promote them and full collections rescan them all, every generation. What growth is
    left without that is the CPU caches'."""
    return _many_parties(Barrier, n, quick, pause_gc=True)
