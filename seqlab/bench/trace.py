"""Traces: what an event costs to keep, and whether recording stays flat as traces grow."""

from __future__ import annotations

import gc
import tracemalloc

import trio

from ..barrier import Barrier
from ..trace import Recorder, emit, recording
from . import cpu_time, limit, scaling

PARTIES = 100


async def _barrier_run(phases: int) -> None:
    barrier = Barrier(PARTIES)

    async def party() -> None:
        for _ in range(phases):
            await barrier.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(PARTIES):
            nursery.start_soon(party)


@limit("tracing", "memory kept per event, traced barrier run", unit="B/event", target=150)
def bytes_per_event(quick: bool) -> float:
    """Bytes a recorder keeps per event after a traced 100-party barrier run (tracemalloc:
    what is freed when the recorder goes), read once in full so any cache is counted."""
    phases = 50 if quick else 300
    rec = Recorder()

    async def main(rec: Recorder) -> None:
        with recording(rec):
            await _barrier_run(phases)

    gc.collect()
    tracemalloc.start()
    try:
        trio.run(main, rec)
        count = sum(1 for _ in rec.events)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        del rec
        gc.collect()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return freed / count


@scaling("tracing", "events recorded, cost per event", unit="event")
def many_events(n: int, quick: bool) -> tuple[float, int]:
    """Record ``n`` events into a fresh recorder, as often as it takes to record about the
    same number of events at every size."""
    total = 100_000 if quick else 1_000_000
    rounds = max(1, total // n)
    elapsed = 0.0

    async def main() -> None:
        nonlocal elapsed
        for _ in range(rounds):
            with recording(Recorder()):
                start = cpu_time()
                for i in range(n):
                    emit("Barrier 'b'", "arrive", generation=i, index=i)
                elapsed += cpu_time() - start

    trio.run(main)
    return elapsed, rounds * n
