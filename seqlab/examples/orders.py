"""Order events handled by a worker pool: competing consumers break per-order order.

Every order goes through the same lifecycle, ``placed -> paid -> shipped``, and the shop emits
one event per step, in order. A plain worker pool (competing consumers reading one queue)
handles them in parallel, so two events of the same order can be in two workers at once; the
later one sometimes finishes first and the order is "paid" before it was "placed". Whether that
happens depends on the schedule, which is what :func:`seqlab.explore` searches.

The convoy keys each event by its order id: one order's events are handled one at a time, in
order, while different orders still proceed in parallel. Every schedule is correct.

Run ``python -m seqlab.examples.orders`` to see both explored.
"""

from __future__ import annotations

import trio

from ..convoy import Delivery, open_convoy
from ..trace import emit

LIFECYCLE = ("placed", "paid", "shipped")


class OrderBook:
    """The status of each order; an event that skips a step is recorded as a violation."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.violations: list[str] = []

    async def apply(self, order: str, event: str) -> None:
        """Read the order, talk to the database (one checkpoint), write the new status."""
        current = self.status.get(order)
        emit("orders", "read", order=order, status=current)
        await trio.lowlevel.checkpoint()
        expected = LIFECYCLE[LIFECYCLE.index(current) + 1] if current else LIFECYCLE[0]
        if event != expected:
            was = current or "not placed yet"
            self.violations.append(f"{order}: {event!r} arrived while it was {was!r}")
        self.status[order] = event
        emit("orders", "write", order=order, status=event)


def events(orders: int) -> list[tuple[str, str]]:
    """The shop's event stream: a new order starts at every tick, each takes one step per tick.

    For three orders: ``order-0 placed, order-0 paid, order-1 placed, order-0 shipped, ...``.
    """
    steps = [
        (order + step, order, event)
        for order in range(orders)
        for step, event in enumerate(LIFECYCLE)
    ]
    return [(f"order-{order}", event) for _, order, event in sorted(steps)]


async def competing_consumers(orders: int = 3, workers: int = 3) -> OrderBook:
    """Handle the events with ``workers`` tasks that all read one queue (no ordering)."""
    book = OrderBook()
    send, receive = trio.open_memory_channel[tuple[str, str]](0)

    async def worker(receive: trio.MemoryReceiveChannel[tuple[str, str]]) -> None:
        async with receive:
            async for order, event in receive:
                await book.apply(order, event)

    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(worker, receive.clone(), name=f"worker-{i}")
        receive.close()
        async with send:
            for item in events(orders):
                await send.send(item)
    return book


async def convoy_consumers(orders: int = 3, consumers: int = 3) -> OrderBook:
    """Handle the same events through a convoy keyed by order id."""
    book = OrderBook()

    async def handle(delivery: Delivery) -> None:
        await book.apply(delivery.key, delivery.message)

    async with open_convoy(handle, consumers=consumers, name="orders") as convoy:
        for order, event in events(orders):
            await convoy.send(order, event)
    return book


async def checked_competing_consumers(orders: int = 3, workers: int = 3) -> None:
    """:func:`competing_consumers`, failing when an order saw its events out of order."""
    book = await competing_consumers(orders, workers)
    if book.violations:
        raise AssertionError("; ".join(book.violations))


async def checked_convoy_consumers(orders: int = 3, consumers: int = 3) -> None:
    """:func:`convoy_consumers`, failing when an order saw its events out of order."""
    book = await convoy_consumers(orders, consumers)
    if book.violations:
        raise AssertionError("; ".join(book.violations))


def main() -> None:
    from ..runtime import explore

    print("competing consumers:", explore(checked_competing_consumers, seeds=range(100)))
    print("convoy:             ", explore(checked_convoy_consumers, seeds=range(100)))


if __name__ == "__main__":
    main()
