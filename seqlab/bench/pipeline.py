"""Sequence barriers: a persist || moderate -> deliver diamond, and a single stage.

The peers are what a user would write to move events between tasks quickly: memory channels
fed with ``send_nowait`` (awaiting ``send`` only when a channel is full) and drained with
``receive_nowait`` into batches, and, as the floor, a plain loop over a ring that runs every
handler over a batch of ring-size events and yields once per batch. Older peers that
checkpoint on every send are kept as "(old)" info rows.

The rows with targets feed the pipeline with ``publish_many`` (its API for a batch at hand,
which fills the ring a range at a time, as the ring loop does); channels have no batch send,
so their producers send each event with ``send_nowait``. The info rows feed the pipeline one
event at a time with ``publish_nowait`` (awaiting ``publish`` only when the ring is full), the
same pattern as the channel producers, for the per-event comparison.
"""

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


def _diamond_pipeline() -> Pipeline:
    pipe = Pipeline(SIZE)
    persist = pipe.stage("persist", _handler)
    moderate = pipe.stage("moderate", _handler)
    pipe.stage("deliver", _handler, after=(persist, moderate))
    return pipe


async def _publish_each(pipe: Pipeline, n: int) -> None:
    """Publish 0 .. n-1 one at a time, without yielding until the ring is full."""
    async with pipe.run():
        publish_nowait = pipe.publish_nowait
        for i in range(n):
            try:
                publish_nowait(i)
            except trio.WouldBlock:
                await pipe.publish(i)


async def _publish_batch(pipe: Pipeline, n: int) -> None:
    async with pipe.run():
        await pipe.publish_many(range(n))


def _single_pipeline() -> Pipeline:
    pipe = Pipeline(SIZE)
    pipe.stage("only", _handler)
    return pipe


def _ours(quick: bool) -> float:
    return timed_trio(lambda: _publish_each(_diamond_pipeline(), _ops(quick)))


def _ours_batch(quick: bool) -> float:
    return timed_trio(lambda: _publish_batch(_diamond_pipeline(), _ops(quick)))


def _ours_single(quick: bool) -> float:
    return timed_trio(lambda: _publish_each(_single_pipeline(), _ops(quick)))


def _ours_single_batch(quick: bool) -> float:
    return timed_trio(lambda: _publish_batch(_single_pipeline(), _ops(quick)))


async def _send(channel: trio.MemorySendChannel[int], event: int) -> None:
    """Send without a checkpoint while the channel has room; wait only when it is full."""
    try:
        channel.send_nowait(event)
    except trio.WouldBlock:
        await channel.send(event)


async def _batch(channel: trio.MemoryReceiveChannel[int]) -> list[int]:
    """Wait for one event, then take every event already queued; [] once the channel ends."""
    try:
        batch = [await channel.receive()]
    except trio.EndOfChannel:
        return []
    receive_nowait = channel.receive_nowait
    try:
        while True:
            batch.append(receive_nowait())
    except (trio.WouldBlock, trio.EndOfChannel):
        return batch


def batched_channel_diamond(quick: bool) -> float:
    """The diamond from memory channels, batched as a user would batch it: the producer
    sends without checkpointing until a channel is full; each stage drains what is queued,
    handles it and forwards it; delivery takes an event once both branches have passed it."""

    async def main() -> None:
        n = _ops(quick)
        to_persist, persist_in = trio.open_memory_channel[int](SIZE)
        to_moderate, moderate_in = trio.open_memory_channel[int](SIZE)
        persisted, persisted_in = trio.open_memory_channel[int](SIZE)
        moderated, moderated_in = trio.open_memory_channel[int](SIZE)

        async def stage(
            receive: trio.MemoryReceiveChannel[int], send: trio.MemorySendChannel[int]
        ) -> None:
            async with receive, send:
                while batch := await _batch(receive):
                    for i, event in enumerate(batch):
                        _handler(event, event, i == len(batch) - 1)
                    for event in batch:
                        await _send(send, event)

        async def deliver() -> None:
            async with persisted_in, moderated_in:
                while batch := await _batch(persisted_in):
                    for event in batch:
                        # The moderate branch must have passed this event too.
                        try:
                            other = moderated_in.receive_nowait()
                        except trio.WouldBlock:
                            other = await moderated_in.receive()
                        assert other == event
                    for i, event in enumerate(batch):
                        _handler(event, event, i == len(batch) - 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stage, persist_in, persisted)
            nursery.start_soon(stage, moderate_in, moderated)
            nursery.start_soon(deliver)
            async with to_persist, to_moderate:
                for i in range(n):
                    await _send(to_persist, i)
                    await _send(to_moderate, i)

    return timed_trio(main)


def batched_channel(quick: bool) -> float:
    """One stage from one memory channel: send_nowait in, drain with receive_nowait."""

    async def main() -> None:
        send, receive = trio.open_memory_channel[int](SIZE)

        async def consume() -> None:
            async with receive:
                while batch := await _batch(receive):
                    for i, event in enumerate(batch):
                        _handler(event, event, i == len(batch) - 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            async with send:
                for i in range(_ops(quick)):
                    await _send(send, i)

    return timed_trio(main)


def ring_loop(quick: bool) -> float:
    """The floor: one task fills a ring of SIZE slots, runs persist, moderate and deliver
    over the batch in dependency order, and yields once per batch. No cursors, no tasks to
    wake: the least work that stores every event and calls every handler."""

    async def main() -> None:
        n = _ops(quick)
        ring: list[Any] = [None] * SIZE
        mask = SIZE - 1
        lo = 0
        while lo < n:
            hi = min(lo + SIZE, n) - 1
            for seq in range(lo, hi + 1):
                ring[seq & mask] = seq
            for _stage in range(3):  # persist, moderate, deliver
                for seq in range(lo, hi + 1):
                    _handler(ring[seq & mask], seq, seq == hi)
            lo = hi + 1
            await trio.lowlevel.checkpoint()

    return timed_trio(main)


def checkpointing_channel_diamond(quick: bool) -> float:
    """(old peer) The diamond from memory channels, checkpointing on every send."""

    async def main() -> None:
        n = _ops(quick)
        to_persist, persist_in = trio.open_memory_channel[int](SIZE)
        to_moderate, moderate_in = trio.open_memory_channel[int](SIZE)
        persisted, persisted_in = trio.open_memory_channel[int](SIZE)
        moderated, moderated_in = trio.open_memory_channel[int](SIZE)

        async def stage(receive: Any, send: Any) -> None:
            async with receive, send:
                async for event in receive:
                    _handler(event, event, True)
                    await send.send(event)

        async def deliver() -> None:
            async with persisted_in, moderated_in:
                async for event in persisted_in:
                    await moderated_in.receive()
                    _handler(event, event, True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stage, persist_in, persisted)
            nursery.start_soon(stage, moderate_in, moderated)
            nursery.start_soon(deliver)
            async with to_persist, to_moderate:
                for i in range(n):
                    await to_persist.send(i)
                    await to_moderate.send(i)

    return timed_trio(main)


def checkpointing_channel(quick: bool) -> float:
    """(old peer) One channel, checkpointing on every send and every receive."""

    async def main() -> None:
        send, receive = trio.open_memory_channel[int](SIZE)

        async def consume() -> None:
            async with receive:
                async for event in receive:
                    _handler(event, event, True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            async with send:
                for i in range(_ops(quick)):
                    await send.send(i)

    return timed_trio(main)


comparison(
    "pipeline",
    "diamond, publish_many vs batched channel diamond",
    peer_name="batched channel diamond",
    kind="faster",
    target=4.0,
    unit="event",
    ops=_ops,
    peer=batched_channel_diamond,
)(_ours_batch)
comparison(
    "pipeline",
    "diamond, publish_many vs batched ring loop (floor)",
    peer_name="ring loop",
    kind="overhead",
    target=1.5,
    unit="event",
    ops=_ops,
    peer=ring_loop,
)(_ours_batch)
comparison(
    "pipeline",
    "single stage, publish_many vs batched channel",
    peer_name="batched channel",
    kind="faster",
    target=2.0,
    unit="event",
    ops=_ops,
    peer=batched_channel,
)(_ours_single_batch)
comparison(
    "pipeline",
    "diamond, publish_nowait per event vs batched channel diamond",
    peer_name="batched channel diamond",
    kind="faster",
    target=None,
    unit="event",
    ops=_ops,
    peer=batched_channel_diamond,
)(_ours)
comparison(
    "pipeline",
    "single stage, publish_nowait per event vs batched channel",
    peer_name="batched channel",
    kind="faster",
    target=None,
    unit="event",
    ops=_ops,
    peer=batched_channel,
)(_ours_single)
comparison(
    "pipeline",
    "(old) diamond vs channel diamond, checkpoint per send",
    peer_name="channel diamond",
    kind="faster",
    target=None,
    unit="event",
    ops=_ops,
    peer=checkpointing_channel_diamond,
)(_ours)
comparison(
    "pipeline",
    "(old) single stage vs one channel, checkpoint per send",
    peer_name="one channel",
    kind="faster",
    target=None,
    unit="event",
    ops=_ops,
    peer=checkpointing_channel,
)(_ours_single)


@comparison(
    "tracing",
    "pipeline traced vs untraced",
    peer_name="untraced",
    kind="overhead",
    target=1.3,
    unit="event",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _publish_each(_diamond_pipeline(), _ops(quick))

    return timed_trio(main)
