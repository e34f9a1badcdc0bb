"""Sequencer: 100k tiny tasks, one at a time in submission order.

Peers: a memory channel plus one worker task, as a user would write a serial job queue
(``async for job in receive``, which yields once per job, as the sequencer does); the same
worker draining the channel with ``receive_nowait`` and yielding explicitly after each job
(the fair-yielding form); the same worker draining without yielding between jobs (info: it
starves every other task while its queue is long, which a sequencer must not); and the floor,
a bare loop that yields once per task. A task spawned per job behind a ``trio.Lock`` is kept
as an "(old)" info row.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack

import trio

from .._traps import cancel_shielded_checkpoint
from ..sequencer import open_dispatcher, open_sequencer
from ..trace import Recorder, recording
from . import comparison, cpu_time, scaling, timed_trio


def _ops(quick: bool) -> int:
    return 10_000 if quick else 100_000


def _job() -> None:
    pass


async def _sequenced(n: int) -> None:
    async with open_sequencer() as seq:
        for _ in range(n):
            seq.submit_nowait(_job)


def _ours(quick: bool) -> float:
    return timed_trio(lambda: _sequenced(_ops(quick)))


def floor(quick: bool) -> float:
    """One yield per task, nothing else: what any fair one-at-a-time runner must pay.

    It yields the cheapest way the sequencer's worker does (a schedule point from one frame,
    :mod:`seqlab._traps`): a floor may use every trick the primitive uses.
    """

    async def main() -> None:
        for _ in range(_ops(quick)):
            await cancel_shielded_checkpoint()
            _job()

    return timed_trio(main)


def _channel_worker(worker: object, quick: bool) -> float:
    async def main() -> None:
        send, receive = trio.open_memory_channel[object](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, receive)  # type: ignore[arg-type]
            async with send:
                for _ in range(_ops(quick)):
                    send.send_nowait(_job)

    return timed_trio(main)


async def _async_for_worker(receive: trio.MemoryReceiveChannel[object]) -> None:
    async with receive:
        async for job in receive:
            job()  # type: ignore[operator]


async def _fair_draining_worker(receive: trio.MemoryReceiveChannel[object]) -> None:
    async with receive:
        while True:
            try:
                job = receive.receive_nowait()
            except trio.WouldBlock:
                try:
                    job = await receive.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            job()  # type: ignore[operator]
            await trio.lowlevel.checkpoint()


async def _draining_worker(receive: trio.MemoryReceiveChannel[object]) -> None:
    async with receive:
        while True:
            try:
                job = await receive.receive()
            except trio.EndOfChannel:
                return
            job()  # type: ignore[operator]
            try:
                while True:
                    receive.receive_nowait()()  # type: ignore[operator]
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                return


def channel_worker(quick: bool) -> float:
    """A memory channel and one worker: ``async for job in receive: job()``."""
    return _channel_worker(_async_for_worker, quick)


def channel_worker_fair(quick: bool) -> float:
    """The worker drains with ``receive_nowait`` and yields with a checkpoint after each job."""
    return _channel_worker(_fair_draining_worker, quick)


def channel_worker_draining(quick: bool) -> float:
    """The worker drains with ``receive_nowait`` and runs every queued job without yielding."""
    return _channel_worker(_draining_worker, quick)


def naive(quick: bool) -> float:
    """One spawned task per job, serialised by a trio.Lock (ordered only by luck)."""

    async def main() -> None:
        lock = trio.Lock()

        async def run() -> None:
            async with lock:
                _job()

        async with trio.open_nursery() as nursery:
            for _ in range(_ops(quick)):
                nursery.start_soon(run)

    return timed_trio(main)


comparison(
    "sequencer",
    "tasks vs channel + worker",
    peer_name="channel + worker",
    kind="overhead",
    target=1.0,
    unit="task",
    ops=_ops,
    peer=channel_worker,
)(_ours)
comparison(
    "sequencer",
    "tasks vs channel + worker, fair-yielding drain",
    peer_name="fair drain",
    kind="overhead",
    target=1.0,
    unit="task",
    ops=_ops,
    peer=channel_worker_fair,
)(_ours)
comparison(
    "sequencer",
    "tasks vs one-yield-per-task floor",
    peer_name="bare loop",
    kind="overhead",
    target=1.25,
    unit="task",
    ops=_ops,
    peer=floor,
)(_ours)
comparison(
    "sequencer",
    "tasks vs channel + worker draining without yields (unfair)",
    peer_name="unfair drain",
    kind="overhead",
    target=None,
    unit="task",
    ops=_ops,
    peer=channel_worker_draining,
)(_ours)
comparison(
    "sequencer",
    "(old) tasks vs task-per-job + trio.Lock",
    peer_name="naive lock",
    kind="faster",
    target=None,
    unit="task",
    ops=_ops,
    peer=naive,
)(_ours)


@comparison(
    "tracing",
    "sequencer traced vs untraced",
    peer_name="untraced",
    kind="overhead",
    target=1.3,
    unit="task",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _sequenced(_ops(quick))

    return timed_trio(main)


def _total(quick: bool) -> int:
    return 20_000 if quick else 200_000


@scaling("sequencer", "sequencers on one dispatcher, cost per task", unit="task")
def many_sequencers(n: int, quick: bool) -> tuple[float, int]:
    """``n`` sequencers share one dispatcher with one worker; each gets the same number of
    tasks, submitted round-robin, so the dispatcher always has every sequencer in line. Timed
    from the first submission to the last task's end (opening and closing are not timed)."""
    per = max(1, _total(quick) // n)
    total = per * n
    elapsed = 0.0

    async def main() -> None:
        nonlocal elapsed
        done = trio.Event()
        count = 0

        def job() -> None:
            nonlocal count
            count += 1
            if count == total:
                done.set()

        async with open_dispatcher(workers=1) as dispatcher, AsyncExitStack() as stack:
            seqs = [
                await stack.enter_async_context(open_sequencer(dispatcher=dispatcher))
                for _ in range(n)
            ]
            start = cpu_time()
            for _ in range(per):
                for seq in seqs:
                    seq.submit_nowait(job)
            await done.wait()
            elapsed = cpu_time() - start

    trio.run(main)
    return elapsed, total
