"""Widgets: comm messages per second while a live Timeline follows a 100k-event run."""

from __future__ import annotations

import time
from typing import Any

import trio

from ..runtime import run
from ..trace import Recorder, emit
from . import limit

WORKERS = 4


def _scenario(rounds: int) -> Any:
    async def main() -> None:
        async def worker(i: int) -> None:
            for g in range(rounds):
                emit("Barrier 'bench'", "arrive", generation=g, index=i)
                emit("Barrier 'bench'", "release", generation=g, index=i)
                if g % 50 == 0:
                    await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            for i in range(WORKERS):
                nursery.start_soon(worker, i, name=f"worker-{i}")

    return main


@limit("widgets", "comm messages/s, live Timeline, 100k events", unit="msg/s", target=10)
def comm_rate(quick: bool) -> float:
    from ..notebook.widgets import Timeline

    events = 100_000  # the target is defined on this size, so --quick keeps it
    recorder = Recorder()
    view = Timeline(recorder)
    sent = 0

    def send(data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        nonlocal sent
        sent += 1

    view.comm.send = send
    start = time.perf_counter()
    run(_scenario(events // (2 * WORKERS)), seed=0, virtual_time=False, recorder=recorder)
    view.finish()
    elapsed = time.perf_counter() - start
    view.close()
    return sent / elapsed
