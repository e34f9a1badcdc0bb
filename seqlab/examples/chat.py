"""Chat rooms: deliver each room's messages in order, only once persisted and moderated.

Every message ``Message(room, seq, text)`` goes through three steps: *persist* (store it),
*moderate* (mask blocked words) and *deliver* (send it to the room). Persist and moderate may
run in parallel; deliver needs both, and a room's messages must be delivered in ``seq`` order.
So delivery of ``(R, N)`` hangs on two checks: a within-message one (N is persisted and
moderated) and an across-message one (``N - 1`` of room R was delivered).

Four versions with the same interface, ``async def version(messages) -> list[Delivered]``
(the deliveries in the order they happened):

* :func:`run_naive` - a task per message that persists and moderates, then delivers. Simple,
  and wrong: a later message can overtake an earlier one of the same room. Whether it does
  depends on the schedule, so :func:`seqlab.explore` finds seeds where it misorders.
* :func:`run_glue` - completion callbacks with flags, a map of per-room expectations and a
  "flush what became deliverable" loop. Correct, but the delivery rule is spread over four
  functions and three pieces of state.
* :func:`run_pipeline` - a :class:`~seqlab.sequence.Pipeline`: persist and moderate stages in
  parallel, deliver ``after=(persist, moderate)``. The rule is the deliver stage's barrier.
* :func:`run_keyed` - sequence numbers per room: each room has persisted / moderated /
  delivered :class:`~seqlab.sequence.Sequence` s and one
  :class:`~seqlab.sequence.SequenceBarrier`. Workers finish out of order and call
  ``complete(n)``; the room's deliverer moves only by the rule "both reached N".

Messages arrive as one burst (as from a network read), and every step is a few checkpoints of
simulated work, so the scheduler (and so the seed) decides how the steps interleave. The steps
trace themselves through ``seqlab.emit`` under the primitive ``"chat"`` (``persist``,
``moderate``, ``deliver``); the pipeline and keyed versions add their primitives' own events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from ..sequence import Pipeline, Sequence, SequenceBarrier
from ..trace import emit

__all__ = [
    "BLOCKED_WORDS",
    "VERSIONS",
    "Delivered",
    "Message",
    "by_room",
    "check_order",
    "checked",
    "make_messages",
    "run_glue",
    "run_keyed",
    "run_naive",
    "run_pipeline",
]

BLOCKED_WORDS = frozenset({"darn", "heck"})


@dataclass(frozen=True)
class Message:
    """A chat message: the ``seq``-th message (from 0) of ``room``."""

    room: str
    seq: int
    text: str


@dataclass(frozen=True)
class Delivered:
    """What a room's clients received: the moderated text of message ``seq``."""

    room: str
    seq: int
    text: str


def make_messages(rooms: int = 3, per_room: int = 4) -> list[Message]:
    """Messages for ``rooms`` rooms, interleaved as they would arrive; some need masking."""
    words = ["hello", "darn it", "lunch?", "heck yes", "ok", "see you"]
    out = []
    for n in range(per_room):
        for r in range(rooms):
            out.append(Message(f"room-{r}", n, words[(n * rooms + r) % len(words)]))
    return out


# --------------------------------------------------------------------------- the work


async def _work(steps: int) -> None:
    for _ in range(steps):
        await trio.lowlevel.checkpoint()


async def persist(msg: Message, store: list[Message]) -> None:
    """Store the message (two checkpoints of pretend I/O)."""
    await _work(2)
    store.append(msg)
    emit("chat", "persist", room=msg.room, seq=msg.seq)


async def moderate(msg: Message) -> str:
    """Return the text with blocked words masked (one or two checkpoints of pretend work)."""
    await _work(1 + msg.seq % 2)
    text = " ".join("***" if w in BLOCKED_WORDS else w for w in msg.text.split())
    emit("chat", "moderate", room=msg.room, seq=msg.seq)
    return text


def deliver(out: list[Delivered], msg: Message, text: str) -> None:
    out.append(Delivered(msg.room, msg.seq, text))
    emit("chat", "deliver", room=msg.room, seq=msg.seq)


# --------------------------------------------------------------------------- 1. naive


async def run_naive(messages: Iterable[Message]) -> list[Delivered]:
    """A task per message: persist and moderate in parallel, then deliver. Races."""
    out: list[Delivered] = []
    store: list[Message] = []

    async def handle(msg: Message) -> None:
        texts: list[str] = []

        async def moderate_into() -> None:
            texts.append(await moderate(msg))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(persist, msg, store)
            nursery.start_soon(moderate_into)
        deliver(out, msg, texts[0])  # nothing checks that msg.seq - 1 was delivered

    async with trio.open_nursery() as nursery:
        for msg in messages:
            nursery.start_soon(handle, msg, name=f"handle {msg.room}#{msg.seq}")
    return out


# --------------------------------------------------------------------------- 2. glue


@dataclass
class _Flags:
    message: Message
    persisted: bool = False
    moderated: bool = False
    text: str = ""
    delivered: bool = False


@dataclass
class _Glue:
    """The coordination layer nobody meant to write: flags, a map, retries."""

    out: list[Delivered]
    store: list[Message] = field(default_factory=list)
    state: dict[tuple[str, int], _Flags] = field(default_factory=dict)
    next_expected: dict[str, int] = field(default_factory=dict)

    def on_message(self, nursery: trio.Nursery, msg: Message) -> None:
        self.state[msg.room, msg.seq] = _Flags(msg)
        self.next_expected.setdefault(msg.room, 0)
        nursery.start_soon(self._persist_task, msg)
        nursery.start_soon(self._moderate_task, msg)

    async def _persist_task(self, msg: Message) -> None:
        await persist(msg, self.store)
        self.on_persist_done(msg.room, msg.seq)

    async def _moderate_task(self, msg: Message) -> None:
        text = await moderate(msg)
        self.on_moderate_done(msg.room, msg.seq, text)

    def on_persist_done(self, room: str, seq: int) -> None:
        self.state[room, seq].persisted = True
        self.try_deliver(room, seq)

    def on_moderate_done(self, room: str, seq: int, text: str) -> None:
        flags = self.state[room, seq]
        flags.moderated = True
        flags.text = text
        self.try_deliver(room, seq)

    def try_deliver(self, room: str, seq: int) -> None:
        flags = self.state[room, seq]
        if (
            flags.persisted
            and flags.moderated
            and seq == self.next_expected[room]
            and not flags.delivered
        ):
            deliver(self.out, flags.message, flags.text)
            flags.delivered = True
            self.next_expected[room] = seq + 1
            self.flush_ready_but_blocked(room)

    def flush_ready_but_blocked(self, room: str) -> None:
        # A later message may have finished first and been turned away; retry it now.
        nxt = (room, self.next_expected[room])
        if nxt in self.state:
            self.try_deliver(*nxt)


async def run_glue(messages: Iterable[Message]) -> list[Delivered]:
    """Completion callbacks decide delivery. Correct, but the rule is scattered."""
    glue = _Glue(out=[])
    async with trio.open_nursery() as nursery:
        for msg in messages:
            glue.on_message(nursery, msg)
    return glue.out


# --------------------------------------------------------------------------- 3. pipeline


@dataclass
class _Entry:
    """A ring slot's event: the message plus what the parallel stages found out."""

    message: Message
    persisted: bool = False
    text: str | None = None


async def run_pipeline(messages: Iterable[Message], *, size: int = 4) -> list[Delivered]:
    """A diamond pipeline: deliver runs ``after=(persist, moderate)``. One explicit rule."""
    out: list[Delivered] = []
    store: list[Message] = []

    async def persist_stage(entry: _Entry, sequence: int, end_of_batch: bool) -> None:
        await persist(entry.message, store)
        entry.persisted = True

    async def moderate_stage(entry: _Entry, sequence: int, end_of_batch: bool) -> None:
        entry.text = await moderate(entry.message)

    def deliver_stage(entry: _Entry, sequence: int, end_of_batch: bool) -> None:
        # The barrier already guaranteed both; these asserts only document it.
        assert entry.persisted and entry.text is not None
        deliver(out, entry.message, entry.text)

    pipe = Pipeline(size, name="chat")
    p = pipe.stage("persist", persist_stage)
    m = pipe.stage("moderate", moderate_stage)
    pipe.stage("deliver", deliver_stage, after=(p, m))
    async with pipe.run() as publish:
        for msg in messages:
            await publish(_Entry(msg))
    return out


# --------------------------------------------------------------------------- 4. keyed


@dataclass
class _Room:
    """One room's progress, as three sequences over the room's own message numbers."""

    persisted: Sequence
    moderated: Sequence
    delivered: Sequence
    barrier: SequenceBarrier
    messages: dict[int, Message] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)


async def run_keyed(messages: Iterable[Message]) -> list[Delivered]:
    """Per-room sequences: workers ``complete(n)`` out of order; one rule gates delivery."""
    out: list[Delivered] = []
    store: list[Message] = []
    rooms: dict[str, _Room] = {}

    async def persist_task(room: _Room, msg: Message) -> None:
        await persist(msg, store)
        room.persisted.complete(msg.seq)

    async def moderate_task(room: _Room, msg: Message) -> None:
        room.texts[msg.seq] = await moderate(msg)
        room.moderated.complete(msg.seq)

    async def deliverer(room: _Room) -> None:
        # The whole delivery rule: N is persisted and moderated, and N-1 was delivered.
        nxt = room.delivered.value + 1
        while True:
            available = await room.barrier.wait_for(nxt)
            for n in range(nxt, available + 1):
                deliver(out, room.messages[n], room.texts.pop(n))
            room.delivered.set(available)
            nxt = available + 1

    async with trio.open_nursery() as nursery:
        for msg in messages:
            room = rooms.get(msg.room)
            if room is None:
                p, m = (
                    Sequence(name=f"{msg.room} persisted"),
                    Sequence(name=f"{msg.room} moderated"),
                )
                room = rooms[msg.room] = _Room(
                    p, m, Sequence(name=f"{msg.room} delivered"), SequenceBarrier(p, m)
                )
                nursery.start_soon(deliverer, room, name=f"deliver {msg.room}")
            room.messages[msg.seq] = msg
            nursery.start_soon(persist_task, room, msg)
            nursery.start_soon(moderate_task, room, msg)
        for room in rooms.values():
            await SequenceBarrier(room.delivered).wait_for(max(room.messages))
        nursery.cancel_scope.cancel()
    return out


# --------------------------------------------------------------------------- checking

VERSIONS: dict[str, Callable[[list[Message]], Awaitable[list[Delivered]]]] = {
    "naive": run_naive,
    "glue": run_glue,
    "pipeline": run_pipeline,
    "keyed": run_keyed,
}


def by_room(delivered: Iterable[Delivered]) -> dict[str, list[tuple[int, str]]]:
    """Each room's deliveries in order: what a room's clients saw."""
    rooms: dict[str, list[tuple[int, str]]] = {}
    for d in delivered:
        rooms.setdefault(d.room, []).append((d.seq, d.text))
    return dict(sorted(rooms.items()))


def check_order(messages: Iterable[Message], delivered: Iterable[Delivered]) -> None:
    """Raise AssertionError unless every room got all its messages, in order, moderated."""
    delivered = list(delivered)
    expected: dict[str, list[int]] = {}
    for msg in messages:
        expected.setdefault(msg.room, []).append(msg.seq)
    got = {room: [seq for seq, _ in items] for room, items in by_room(delivered).items()}
    for room, seqs in sorted(expected.items()):
        if got.get(room) != seqs:
            raise AssertionError(f"{room} received {got.get(room)}, expected {seqs}")
    for d in delivered:
        if any(w in BLOCKED_WORDS for w in d.text.split()):
            raise AssertionError(f"{d.room}#{d.seq} was delivered unmoderated: {d.text!r}")


async def checked(version: str, rooms: int = 3, per_room: int = 4) -> list[Delivered]:
    """Run a version on :func:`make_messages` and check the order (for ``seqlab.explore``)."""
    messages = make_messages(rooms, per_room)
    delivered = await VERSIONS[version](messages)
    check_order(messages, delivered)
    return delivered
