"""Convoy: 16 keys x 2000 messages, 4 consumers, against per-key channels with a worker per key."""

from __future__ import annotations

import math
from typing import Any

import trio

from ..convoy import open_convoy
from ..trace import Recorder, recording
from . import comparison, timed_trio

KEYS = 16
CONSUMERS = 4


def _per_key(quick: bool) -> int:
    return 200 if quick else 2000


def _ops(quick: bool) -> int:
    return KEYS * _per_key(quick)


async def _handler(delivery: Any) -> None:
    await trio.lowlevel.checkpoint()


async def _convoy(per_key: int, consumers: int, handler: Any = _handler) -> None:
    async with open_convoy(handler, consumers=consumers) as convoy:
        for i in range(per_key):
            for key in range(KEYS):
                convoy.send_nowait(key, i)


def _ours(quick: bool) -> float:
    return timed_trio(lambda: _convoy(_per_key(quick), CONSUMERS))


def per_key_channels(quick: bool) -> float:
    """The hand-rolled version: one unbounded channel and one worker task per key."""

    async def main() -> None:
        async def worker(receive: trio.MemoryReceiveChannel[int]) -> None:
            async with receive:
                async for message in receive:
                    await _handler(message)

        async with trio.open_nursery() as nursery:
            senders = []
            for _ in range(KEYS):
                send, receive = trio.open_memory_channel[int](math.inf)
                senders.append(send)
                nursery.start_soon(worker, receive)
            for i in range(_per_key(quick)):
                for send in senders:
                    send.send_nowait(i)
            for send in senders:
                send.close()

    return timed_trio(main)


comparison(
    "convoy",
    "messages vs per-key channels",
    peer_name="per-key channels",
    kind="overhead",
    target=1.5,
    unit="msg",
    ops=_ops,
    peer=per_key_channels,
)(_ours)


def _slow_ops(quick: bool) -> int:
    return KEYS * (8 if quick else 40)


async def _sleep_1ms(delivery: Any) -> None:
    await trio.sleep(0.001)


def _slow(consumers: int, quick: bool) -> float:
    return timed_trio(lambda: _convoy(_slow_ops(quick) // KEYS, consumers, _sleep_1ms))


comparison(
    "convoy",
    "1 ms handler: 4 consumers vs 1 (target 0.9 x 4)",
    peer_name="1 consumer",
    kind="faster",
    target=0.9 * min(KEYS, CONSUMERS),
    unit="msg",
    ops=_slow_ops,
    peer=lambda quick: _slow(1, quick),
)(lambda quick: _slow(CONSUMERS, quick))


@comparison(
    "tracing",
    "convoy traced vs untraced",
    peer_name="untraced",
    kind="overhead",
    target=1.5,
    unit="msg",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _convoy(_per_key(quick), CONSUMERS)

    return timed_trio(main)
