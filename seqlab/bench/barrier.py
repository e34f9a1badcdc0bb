"""Barrier: 100 parties x 300 phases against asyncio.Barrier and a bare ParkingLot barrier."""

from __future__ import annotations

import asyncio
import sys
import time

import trio

from ..barrier import Barrier
from ..trace import Recorder, recording
from . import comparison, timed_trio

PARTIES = 100


def _phases(quick: bool) -> int:
    return 60 if quick else 300


def _ops(quick: bool) -> int:
    return PARTIES * _phases(quick)


class LotBarrier:
    """The floor: the least a correct trio barrier can do (count, park, unpark all)."""

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


async def _parties(barrier: Barrier | LotBarrier, phases: int) -> None:
    async def party() -> None:
        for _ in range(phases):
            await barrier.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(PARTIES):
            nursery.start_soon(party)


def floor(quick: bool) -> float:
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

        start = time.perf_counter()
        await asyncio.gather(*(party() for _ in range(PARTIES)))
        return time.perf_counter() - start

    return asyncio.run(main())


def _ours(quick: bool) -> float:
    return timed_trio(lambda: _parties(Barrier(PARTIES), _phases(quick)))


comparison(
    "barrier",
    "waits vs asyncio.Barrier",
    peer_name="asyncio.Barrier",
    kind="faster",
    target=2.0,
    unit="wait",
    ops=_ops,
    peer=asyncio_barrier,
)(_ours)
comparison(
    "barrier",
    "waits vs ParkingLot floor",
    peer_name="ParkingLot barrier",
    kind="overhead",
    target=1.3,
    unit="wait",
    ops=_ops,
    peer=floor,
)(_ours)


@comparison(
    "tracing",
    "barrier traced vs untraced",
    peer_name="untraced",
    kind="overhead",
    target=1.5,
    unit="wait",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _parties(Barrier(PARTIES), _phases(quick))

    return timed_trio(main)
