"""Convoy: 16 keys x 2000 messages, 4 consumers, FIFO per key, one message per key in flight.

The peer is what a user would write for the same guarantees: one unbounded memory channel and
one worker task per key, the worker draining its channel with ``receive_nowait`` and awaiting
only when it is empty. The older peer, which checkpoints on every receive as well as in the
handler, is an "(old)" info row. Scaling rows check that the cost per message does not grow
with the number of keys, and that ``join()`` on an idle convoy does not either.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from typing import Any

import trio

from ..convoy import open_convoy
from ..trace import Recorder, recording
from . import comparison, cpu_time, limit, scaling, timed_trio

KEYS = 16
CONSUMERS = 4


def _per_key(quick: bool) -> int:
    return 200 if quick else 2000


def _ops(quick: bool) -> int:
    return KEYS * _per_key(quick)


async def _handler(delivery: Any) -> None:
    await trio.lowlevel.checkpoint()


async def _convoy(per_key: int, consumers: int, handler: Any = _handler, keys: int = KEYS) -> None:
    async with open_convoy(handler, consumers=consumers) as convoy:
        for i in range(per_key):
            for key in range(keys):
                convoy.send_nowait(key, i)


def _ours(quick: bool) -> float:
    return timed_trio(lambda: _convoy(_per_key(quick), CONSUMERS))


async def _drain_worker(receive: trio.MemoryReceiveChannel[int]) -> None:
    """Handle a key's messages in order, one at a time, checkpointing only in the handler."""
    async with receive:
        while True:
            try:
                message = receive.receive_nowait()
            except trio.WouldBlock:
                try:
                    message = await receive.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            await _handler(message)


async def _async_for_worker(receive: trio.MemoryReceiveChannel[int]) -> None:
    async with receive:
        async for message in receive:
            await _handler(message)


def _per_key_channels(worker: Any, quick: bool) -> float:
    async def main() -> None:
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


def draining_per_key_channels(quick: bool) -> float:
    """One unbounded channel and one draining worker task per key."""
    return _per_key_channels(_drain_worker, quick)


def per_key_channels(quick: bool) -> float:
    """(old peer) One channel and one ``async for`` worker per key (two checkpoints a message)."""
    return _per_key_channels(_async_for_worker, quick)


comparison(
    "convoy",
    "messages vs draining per-key channels",
    peer_name="draining per-key channels",
    kind="overhead",
    target=1.2,
    unit="msg",
    ops=_ops,
    peer=draining_per_key_channels,
)(_ours)
comparison(
    "convoy",
    "(old) messages vs per-key channels, async for",
    peer_name="per-key channels",
    kind="overhead",
    target=None,
    unit="msg",
    ops=_ops,
    peer=per_key_channels,
)(_ours)


def _slow_ops(quick: bool) -> int:
    return KEYS * (8 if quick else 40)


async def _sleep_1ms(delivery: Any) -> None:
    await trio.sleep(0.001)


def _slow(consumers: int, quick: bool) -> float:
    # Waiting, not computing: this row is timed on the wall clock.
    async def main() -> float:
        start = trio.current_time()
        await _convoy(_slow_ops(quick) // KEYS, consumers, _sleep_1ms)
        return trio.current_time() - start

    return trio.run(main)


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
    target=1.3,
    unit="msg",
    ops=_ops,
    peer=_ours,
)
def traced(quick: bool) -> float:
    async def main() -> None:
        with recording(Recorder()):
            await _convoy(_per_key(quick), CONSUMERS)

    return timed_trio(main)


def _total(quick: bool) -> int:
    return 20_000 if quick else 200_000


@scaling("convoy", "keys, cost per message", unit="msg")
def many_keys(n: int, quick: bool) -> tuple[float, int]:
    """``n`` keys, the same total number of messages, sent round-robin over the keys."""
    per = max(1, _total(quick) // n)
    seconds = timed_trio(lambda: _convoy(per, CONSUMERS, keys=n))
    return seconds, per * n


@scaling("convoy", "idle join() after n keys were used, cost per join", unit="join")
def idle_join(n: int, quick: bool) -> tuple[float, int]:
    """``n`` keys get one message each and are all delivered; then ``join()`` on the idle
    convoy is timed. A join that walks every key ever seen grows with ``n``."""
    joins = 2_000 if quick else 20_000
    elapsed = 0.0

    async def main() -> None:
        nonlocal elapsed
        async with open_convoy(_handler, consumers=CONSUMERS) as convoy:
            for key in range(n):
                convoy.send_nowait(key, key)
            await convoy.join()
            start = cpu_time()
            for _ in range(joins):
                await convoy.join()
            elapsed = cpu_time() - start

    trio.run(main)
    return elapsed, joins


@limit("convoy", "memory kept per idle key, 100k keys used once", unit="B/key", target=150)
def idle_key_memory(quick: bool) -> float:
    """Bytes the convoy still holds per key once ``n`` keys were each sent one message and
    every message was delivered (measured with tracemalloc; the keys are ints, which only the
    convoy keeps alive). An idle key keeps its next sequence number, a dict entry; its
    backlog and state (about a kilobyte) are dropped."""
    n = 10_000 if quick else 100_000
    held = 0

    async def main() -> None:
        nonlocal held
        async with open_convoy(_handler, consumers=CONSUMERS) as convoy:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for key in range(n):
                convoy.send_nowait(key, None)
            await convoy.join()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before

    tracemalloc.start()
    try:
        trio.run(main)
    finally:
        tracemalloc.stop()
    return held / n
