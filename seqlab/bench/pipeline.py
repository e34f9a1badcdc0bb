"""Sequence barriers: a persist || moderate -> deliver diamond against the same from channels."""

from __future__ import annotations

from typing import Any

import trio

from ..sequence import Pipeline
from ..trace import Recorder, recording
from . import comparison, timed_trio

SIZE = 1024


def _ops(quick: bool) -> int:
    return 20_000 if quick else 200_000


def _handler(event: Any, sequence: int, end_of_batch: bool) -> None:
    pass


def _work(event: Any) -> None:
    pass


async def _diamond(n: int) -> None:
    pipe = Pipeline(SIZE)
    persist = pipe.stage("persist", _handler)
    moderate = pipe.stage("moderate", _handler)
    pipe.stage("deliver", _handler, after=(persist, moderate))
    async with pipe.run() as publish:
        for i in range(n):
            await publish(i)


async def _single(n: int) -> None:
    pipe = Pipeline(SIZE)
    pipe.stage("only", _handler)
    async with pipe.run() as publish:
        for i in range(n):
            await publish(i)


def _ours(quick: bool) -> float:
    return timed_trio(lambda: _diamond(_ops(quick)))


def channel_diamond(quick: bool) -> float:
    """The same diamond from memory channels: fan out to two stages, join before delivery."""

    async def main() -> None:
        n = _ops(quick)
        to_persist, persist_in = trio.open_memory_channel[int](SIZE)
        to_moderate, moderate_in = trio.open_memory_channel[int](SIZE)
        persisted, persisted_in = trio.open_memory_channel[int](SIZE)
        moderated, moderated_in = trio.open_memory_channel[int](SIZE)

        async def stage(receive: Any, send: Any) -> None:
            async with receive, send:
                async for event in receive:
                    _work(event)
                    await send.send(event)

        async def deliver() -> None:
            async with persisted_in, moderated_in:
                async for event in persisted_in:
                    await moderated_in.receive()
                    _work(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stage, persist_in, persisted)
            nursery.start_soon(stage, moderate_in, moderated)
            nursery.start_soon(deliver)
            async with to_persist, to_moderate:
                for i in range(n):
                    await to_persist.send(i)
                    await to_moderate.send(i)

    return timed_trio(main)


def one_channel(quick: bool) -> float:
    async def main() -> None:
        send, receive = trio.open_memory_channel[int](SIZE)

        async def consume() -> None:
            async with receive:
                async for event in receive:
                    _work(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            async with send:
                for i in range(_ops(quick)):
                    await send.send(i)

    return timed_trio(main)


comparison(
    "pipeline",
    "diamond events vs channel diamond",
    peer_name="channel diamond",
    kind="faster",
    target=20.0,
    unit="event",
    ops=_ops,
    peer=channel_diamond,
)(_ours)
comparison(
    "pipeline",
    "single stage vs one channel",
    peer_name="one channel",
    kind="faster",
    target=10.0,
    unit="event",
    ops=_ops,
    peer=one_channel,
)(lambda quick: timed_trio(lambda: _single(_ops(quick))))


@comparison(
    "tracing",
    "pipeline traced vs untraced",
    peer_name="untraced",
    kind="overhead",
    target=1.5,
    unit="event",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _diamond(_ops(quick))

    return timed_trio(main)
