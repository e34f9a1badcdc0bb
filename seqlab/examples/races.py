"""Races people write, each a small program that fails only under some schedules.

The first three fail under some *order* of a lockstep batch: trio's shuffle finds them. The
other five fail only when one task falls behind the others by a few steps, as a slow disk or a
busy CPU makes it in production; no batch order shows them, so exploring seeds with
``strategy="random"`` never fails them, while the default strategy does in a few runs::

    result = seqlab.explore(use_before_init, seeds=range(100))
    print(result.failures[0].shrink().explain())

Each program raises (an ``AssertionError`` or a :class:`seqlab.Deadlock`) when the race hits.
``LOCKSTEP_RACES`` and ``DELAY_RACES`` list them by kind.
"""

from __future__ import annotations

import trio

__all__ = [
    "lost_update",
    "finish_order",
    "double_booking",
    "use_before_init",
    "lock_order_inversion",
    "condition_if_not_while",
    "late_subscriber",
    "stale_cache",
    "LOCKSTEP_RACES",
    "DELAY_RACES",
]


async def _steps(n: int) -> None:
    for _ in range(n):
        await trio.sleep(0)


async def lost_update() -> None:
    """Two tellers read the balance, pause, and write back their sum: one deposit is lost."""
    account = {"balance": 0}

    async def teller() -> None:
        seen = account["balance"]
        await trio.sleep(0)
        account["balance"] = seen + 10

    async with trio.open_nursery() as nursery:
        nursery.start_soon(teller, name="teller-0")
        nursery.start_soon(teller, name="teller-1")
    assert account["balance"] == 20, f"lost update: balance is {account['balance']}, expected 20"


async def finish_order() -> None:
    """The code assumes the first-started job finishes first because both take one step."""
    done: list[str] = []

    async def job(name: str) -> None:
        await trio.sleep(0)
        done.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job, "first", name="job-first")
        nursery.start_soon(job, "second", name="job-second")
    assert done == ["first", "second"], f"jobs finished in the order {done}"


async def double_booking() -> None:
    """Two clerks check that a seat is free, then book it: both succeed."""
    bookings: list[str] = []
    seat = {"free": True}

    async def clerk(name: str) -> None:
        if seat["free"]:
            await trio.sleep(0)  # confirm payment
            seat["free"] = False
            bookings.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(clerk, "ann", name="clerk-ann")
        nursery.start_soon(clerk, "bob", name="clerk-bob")
    assert len(bookings) == 1, f"the seat was booked {len(bookings)} times: {bookings}"


async def use_before_init() -> None:
    """A service needs one step to initialise; the client assumes three steps are plenty."""
    service: dict[str, object] = {}

    async def initialise() -> None:
        await trio.sleep(0)  # open the connection
        service["ready"] = True

    async def client() -> None:
        await _steps(3)
        assert service.get("ready"), "the client used the service before it was initialised"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(initialise, name="initialise")
        nursery.start_soon(client, name="client")


async def lock_order_inversion() -> None:
    """Two tasks take two locks in opposite orders; in lockstep their windows never meet."""
    accounts, audit = trio.Lock(), trio.Lock()

    async def transfer() -> None:
        async with accounts:
            await trio.sleep(0)
            async with audit:
                await trio.sleep(0)

    async def report() -> None:
        await _steps(4)
        async with audit:
            await trio.sleep(0)
            async with accounts:
                await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transfer, name="transfer")
        nursery.start_soon(report, name="report")


async def condition_if_not_while() -> None:
    """Consumers test the condition with ``if`` instead of ``while``: a late consumer can take
    the item a woken one was promised."""
    items: list[int] = []
    cond = trio.Condition()
    taken: list[int] = []

    async def consumer(delay: int) -> None:
        await _steps(delay)
        async with cond:
            if not items:
                await cond.wait()
            taken.append(items.pop(0))

    async def producer() -> None:
        for item in range(2):
            await _steps(2)
            async with cond:
                items.append(item)
                cond.notify()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer, 0, name="consumer-0")
        nursery.start_soon(consumer, 4, name="consumer-1")
        nursery.start_soon(producer, name="producer")
    assert sorted(taken) == [0, 1], f"consumers took {taken}"


async def late_subscriber() -> None:
    """A subscriber registers after one step; the publisher fires after two. If the subscriber
    is late, the one announcement is missed and it waits forever (a Deadlock)."""
    subscribers: list[trio.MemorySendChannel[str]] = []

    async def subscriber() -> None:
        await trio.sleep(0)
        send, receive = trio.open_memory_channel[str](1)
        subscribers.append(send)
        assert await receive.receive() == "open"

    async def publisher() -> None:
        await _steps(2)
        for send in subscribers:
            send.send_nowait("open")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(subscriber, name="subscriber")
        nursery.start_soon(publisher, name="publisher")


async def stale_cache() -> None:
    """A writer invalidates the cache, then updates the database; the refresher reloads the
    cache two steps after an invalidation. A slow writer lets it reload the old value."""
    db = {"price": 1}
    cache = {"price": 1, "valid": True}
    invalidated = trio.Event()

    async def writer() -> None:
        cache["valid"] = False
        invalidated.set()
        await trio.sleep(0)
        db["price"] = 2

    async def refresher() -> None:
        await invalidated.wait()
        await _steps(2)
        cache["price"], cache["valid"] = db["price"], True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, name="writer")
        nursery.start_soon(refresher, name="refresher")
    assert cache["price"] == db["price"], f"stale cache: {cache['price']}, database {db['price']}"


LOCKSTEP_RACES = (lost_update, finish_order, double_booking)
DELAY_RACES = (
    use_before_init,
    lock_order_inversion,
    condition_if_not_while,
    late_subscriber,
    stale_cache,
)
