"""Sequencer: 100k tiny tasks against a bare checkpoint loop (floor) and a lock-per-task version."""

from __future__ import annotations

import trio

from ..sequencer import open_sequencer
from ..trace import Recorder, recording
from . import comparison, timed_trio


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
    async def main() -> None:
        for _ in range(_ops(quick)):
            await trio.lowlevel.checkpoint()
            _job()

    return timed_trio(main)


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
    "tasks vs checkpoint loop floor",
    peer_name="bare loop",
    kind="overhead",
    target=1.5,
    unit="task",
    ops=_ops,
    peer=floor,
)(_ours)
comparison(
    "sequencer",
    "tasks vs task-per-job + trio.Lock",
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
    target=1.5,
    unit="task",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _sequenced(_ops(quick))

    return timed_trio(main)
