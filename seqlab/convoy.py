"""The sequential convoy: FIFO per key, parallel across keys, nothing lost.

Messages that belong together (the events of one order, the transactions of one account) carry
the same *key*. A convoy hands each key to at most one consumer at a time, so a key's messages
are handled strictly one after another, in the order they were sent, while different keys are
handled in parallel by a small pool of consumers. This is what Azure Service Bus calls sessions,
AWS SQS FIFO calls message groups and Kafka gets from keyed partitions; here it runs in-process
on trio, where a handler that overruns its lock can really be cancelled.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, NamedTuple

import trio
from trio.lowlevel import enable_ki_protection

from ._callables import is_async_callable
from ._traps import checkpoint_marks, checkpointed_since
from .trace import _RECORDER, DeferredRun, clock_reader, row_shape, shape

__all__ = [
    "Convoy",
    "ConvoyStatistics",
    "DeadLetter",
    "Delivery",
    "Undelivered",
    "UndeliveredWarning",
    "open_convoy",
]


class Delivery(NamedTuple):
    """One attempt at handing a message to the handler.

    ``key`` and ``message`` are what was sent; ``sequence`` numbers the key's messages from 0 in
    send order (deduplicated sends take no number); ``attempt`` counts from 1 and grows when the
    same message is delivered again after an error or a lost lock.
    """

    key: Any
    message: Any
    attempt: int
    sequence: int


@dataclass(frozen=True)
class DeadLetter:
    """A message the convoy gave up on after ``attempts`` deliveries; ``error`` is the last one.

    A lost lock is recorded as a :class:`trio.TooSlowError`.
    """

    key: Any
    message: Any
    attempts: int
    error: BaseException


@dataclass(frozen=True)
class Undelivered:
    """A message still unsettled when its convoy's block exited early (cancelled or failed).

    ``attempts`` counts the deliveries that were started and did not finish (0 if the message
    never reached the handler; an attempt interrupted by the exit counts).
    """

    key: Any
    message: Any
    sequence: int
    attempts: int


class UndeliveredWarning(RuntimeWarning):
    """Issued when a convoy block exits early and messages were left undelivered."""


@dataclass(frozen=True)
class ConvoyStatistics:
    """A snapshot of a convoy, as returned by :meth:`Convoy.statistics`.

    * ``consumers``: the size of the consumer pool.
    * ``keys``: how many distinct keys the convoy has seen.
    * ``backlog``: for each key with waiting messages, how many wait (the one in flight excluded),
      oldest backlog first.
    * ``locked_keys``: the keys whose session a consumer holds right now.
    * ``in_flight``: messages inside the handler right now (at most one per key).
    * ``unsettled``: messages sent and neither delivered nor dead-lettered yet.
    * ``sent``, ``delivered``, ``dead_lettered``, ``deduplicated``: message counts.
    * ``retried``: redeliveries after the handler raised.
    * ``lock_losses``: handlers cancelled for overrunning ``lock_timeout``.
    * ``hottest_key``: the key with the longest backlog (``None`` when nothing waits).
    * ``max_wait``: the longest time a message waited between its send and its first delivery.
    """

    consumers: int
    keys: int
    backlog: Mapping[Any, int]
    locked_keys: tuple[Any, ...]
    in_flight: int
    unsettled: int
    sent: int
    delivered: int
    retried: int
    dead_lettered: int
    deduplicated: int
    lock_losses: int
    hottest_key: Any
    max_wait: float


_IDLE, _READY, _HELD = 0, 1, 2
# The hot-path trace events (Recorder.add).
_SEND = shape("Convoy", "send", ("key", "sequence"))
_LOCK = shape("Convoy", "lock", ("key", "consumer"))
_UNLOCK = shape("Convoy", "unlock", ("key", "consumer"))
_DELIVERY = ("key", "sequence", "attempt", "consumer")
_DELIVER = shape("Convoy", "deliver", _DELIVERY)
_DONE = shape("Convoy", "done", _DELIVERY)
_LOCK_LOST = shape("Convoy", "lock_lost", _DELIVERY)
# The two-value events as rows of the convoy's DeferredRun (four values, two of padding).
_SEND_ROW = row_shape(_SEND, 4)
_LOCK_ROW = row_shape(_LOCK, 4)
_UNLOCK_ROW = row_shape(_UNLOCK, 4)


_new_delivery = partial(tuple.__new__, Delivery)  # Delivery(*fields), without the Python frame


class _Key:
    """Everything the convoy knows about one key with work pending: its backlog and where it
    stands. Once a key has nothing left to do it is dropped, keeping only its next sequence
    number (in ``Convoy._idle_sequences``)."""

    __slots__ = (
        "attempts",
        "backlog",
        "join_lot",
        "key",
        "next_sequence",
        "settled",
        "state",
    )

    def __init__(self, key: Any) -> None:
        self.key = key
        # message, send time, message, send time, ... flat (no tuple per message). Its last
        # ``next_sequence - settled`` pairs are the unsettled messages, oldest first (messages
        # settle in order, so the first of them has sequence number ``settled``, the next
        # ``settled + 1``, ...); the pairs before them are settled ones the consumer holding
        # the key has not cut off yet. The oldest stays while it is in flight. A list, not a
        # deque: an empty deque alone is 624 bytes, and most keys hold a message or two.
        self.backlog: list[Any] = []
        self.next_sequence = 0
        self.settled = 0
        # Failed attempts at the oldest unsettled message; while a consumer holds the key,
        # one more is in flight.
        self.attempts = 0
        self.state = _IDLE
        self.join_lot: trio.lowlevel.ParkingLot | None = None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _positive_seconds(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r}"
        )
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds (or None), got {value!r}")
    return float(value)


class Convoy:
    """Handle messages FIFO per key, different keys in parallel, with retries and dead letters.

    Open one with :func:`open_convoy`, which starts the consumers and, on exit, waits until
    every message sent has settled. ``await convoy.send(key, message)`` queues a message;
    a consumer takes the key's *session* (its exclusive lock) and calls
    ``await handler(delivery)`` for the key's messages in send order::

        async def charge(delivery):
            await ledger.apply(delivery.key, delivery.message)

        async with seqlab.open_convoy(charge, consumers=4) as convoy:
            await convoy.send("alice", +100)
            await convoy.send("bob", +5)
            await convoy.send("alice", -30)      # always after alice's +100

    Guarantees:

    * FIFO per key, and at most one message of a key in the handler at any moment.
    * Up to ``consumers`` keys are handled in parallel.
    * A consumer keeps a key's session for at most ``session_batch`` deliveries and then puts
      the key at the back of the line, so a hot key cannot starve the others.
    * A handler that raises an :class:`Exception` gets the same message again (attempt + 1)
      while the key waits; after ``max_attempts`` failed attempts the message becomes a
      :class:`DeadLetter` in :attr:`dead_letters` and the key moves on. Other exceptions
      (``KeyboardInterrupt``, a cancellation from outside) are not handler failures: they end
      the convoy.
    * With ``lock_timeout``, a handler still running after that many seconds loses the session:
      it is cancelled, :attr:`ConvoyStatistics.lock_losses` grows, the key goes to the back of
      the line and the message is delivered again with attempt + 1. A lost lock counts toward
      ``max_attempts`` (the dead letter's error is a :class:`trio.TooSlowError`). Cancelling is
      what keeps "one message per key in flight" true; a broker cannot cancel a remote handler,
      which is why broker handlers must be idempotent. A handler is only cancelled at its
      checkpoints (``await``s), so a plain function cannot be interrupted.
    * With ``dedup_window``, a send whose ``dedup_id`` was accepted less than ``dedup_window``
      seconds earlier (trio's clock) is dropped and :meth:`send` returns ``False``. The window
      starts at the first accepted send and is not extended by duplicates.

    Cancellation: if the ``async with`` block is cancelled or raises, the consumers stop (a
    handler in progress is cancelled) and every unsettled message is recorded in
    :attr:`undelivered` as an :class:`Undelivered`, and an :class:`UndeliveredWarning` names
    them, so nothing is dropped silently. The block's exception then propagates unchanged, and
    a :meth:`join` still waiting (in another task) raises :class:`trio.ClosedResourceError`.

    Tracing: with a recorder active, the convoy emits ``send`` (key, sequence), ``dedup``
    (key, dedup_id), ``lock`` and ``unlock`` when a consumer takes and gives up a key's session
    (key, consumer), ``deliver``, ``done`` and ``lock_lost`` (key, sequence, attempt, consumer),
    ``retry`` (the same plus the error as ``Type: message``), ``dead_letter`` (that plus the
    message, shortened) and, after an early exit, ``undelivered`` (count). Consumers are tasks named ``consumer-0``, ``consumer-1``, ...
    (prefixed with the convoy's ``name`` when it has one).

    Memory: the convoy holds a backlog only for keys with messages pending. A key that has
    nothing left to do is dropped; what it keeps of it is its next sequence number (a dict
    entry of a few dozen bytes, so that its numbering goes on if it comes back, like a broker
    keeps one offset per partition), and the convoy's counters. :meth:`join` on an idle convoy
    returns at once, however many keys it has seen.
    """

    def __init__(
        self,
        handler: Callable[[Delivery], Awaitable[object] | object],
        *,
        consumers: int = 4,
        max_attempts: int = 3,
        lock_timeout: float | None = None,
        dedup_window: float | None = None,
        session_batch: int = 16,
        name: str | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(
                "handler must be a function taking a Delivery (async def handler(delivery)), "
                f"got {type(handler).__name__} {handler!r}"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self._handler = handler
        self._handler_is_async = is_async_callable(handler)
        self._consumers = _positive_int(consumers, "consumers")
        self._max_attempts = _positive_int(max_attempts, "max_attempts")
        self._session_batch = _positive_int(session_batch, "session_batch")
        self._lock_timeout = _positive_seconds(lock_timeout, "lock_timeout")
        self._dedup_window = _positive_seconds(dedup_window, "dedup_window")
        self.name = name
        self._label = "Convoy" if name is None else f"Convoy {name!r}"
        self._keys: dict[Any, _Key] = {}  # keys with work pending
        self._idle_sequences: dict[Any, int] = {}  # every other key seen: its next sequence
        # The sum of _idle_sequences' values: with the pending keys' next_sequence, the
        # number of messages sent (counted per key, not per send).
        self._idle_sent = 0
        self._now: Callable[[], float] = trio.current_time  # cheaper reader once running
        # The traced sends and the consumers' lock, deliver, done and unlock events, deferred
        # while nothing else is recorded (see trace.DeferredRun): one list append per event
        # instead of a call into the recorder.
        self._run = DeferredRun(4)
        self._ready: deque[_Key] = deque()
        self._idle_consumers = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()
        self._dedup_seen: dict[Any, float] = {}
        self._dedup_expiry: deque[tuple[float, Any]] = deque()
        self._closed = False
        # Messages sent and not settled, as of the last session that ended: a consumer
        # subtracts what its session settled when the session ends (what a running session
        # has settled so far shows in its key's ``settled``; see _count_unsettled).
        self._unsettled = 0
        self._retried = 0
        self._dead_count = 0
        self._deduplicated = 0
        self._lock_losses = 0
        self._max_wait = 0.0
        #: Messages given up on, in the order they were given up (see :class:`DeadLetter`).
        self.dead_letters: list[DeadLetter] = []
        #: Messages left unsettled by an early exit (see :class:`Undelivered`); empty otherwise.
        self.undelivered: list[Undelivered] = []

    def __repr__(self) -> str:
        return (
            f"<{self._label}: {self._count_unsettled()} unsettled, {self._in_flight()} in flight, "
            f"{self._consumers} consumers>"
        )

    @property
    def closed(self) -> bool:
        """True once the convoy's block has exited; sending then raises ClosedResourceError."""
        return self._closed

    # ------------------------------------------------------------------ sending

    async def send(self, key: Hashable, message: Any, *, dedup_id: Hashable = None) -> bool:
        """Queue ``message`` behind the earlier messages of ``key``; return False if deduplicated.

        Never blocks (the backlog is unbounded) but is a checkpoint, so a cancelled sender
        raises :class:`trio.Cancelled` and nothing is queued. Raises
        :class:`trio.ClosedResourceError` once the convoy's block has exited.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        accepted = self.send_nowait(key, message, dedup_id=dedup_id)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return accepted

    @enable_ki_protection
    def send_nowait(self, key: Hashable, message: Any, *, dedup_id: Hashable = None) -> bool:
        """Like :meth:`send`, from synchronous code (a convoy's backlog never refuses a message)."""
        if self._closed:
            raise trio.ClosedResourceError(
                f"{self._label} is closed: its 'async with' block has exited; "
                "send while the block is still running"
            )
        try:
            state = self._keys.get(key)
        except TypeError:
            raise TypeError(
                f"key must be hashable (a str, int, tuple, ...), got {type(key).__name__} {key!r}"
            ) from None
        now = self._now()
        if dedup_id is not None and self._is_duplicate(dedup_id, now, key):
            return False
        if state is None:
            state = self._keys[key] = _Key(key)
            if self._idle_sequences:
                sequence = state.next_sequence = state.settled = self._idle_sequences.pop(key, 0)
                self._idle_sent -= sequence
        sequence = state.next_sequence
        state.next_sequence = sequence + 1
        backlog = state.backlog
        backlog.append(message)
        backlog.append(now)
        self._unsettled += 1
        rec = _RECORDER.get()
        if rec is not None:
            run, me = self._run, trio.lowlevel.current_task()
            (run.push if rec._pending is run else run.into(rec))(
                (now, me, self._label, _SEND_ROW, key, sequence, None, None)
            )
        if state.state == _IDLE:
            state.state = _READY
            self._ready.append(state)
            if self._idle_consumers:
                self._idle_consumers.unpark()
        return True

    def _is_duplicate(self, dedup_id: Any, now: float, key: Any) -> bool:
        window = self._dedup_window
        if window is None:
            raise ValueError(
                f"dedup_id={dedup_id!r} given, but {self._label} has no dedup_window; open it "
                "with dedup_window=<seconds> (math.inf to remember ids forever)"
            )
        seen, expiry = self._dedup_seen, self._dedup_expiry
        # An id is in ``seen`` exactly while its one entry is in ``expiry`` (oldest first).
        while expiry and expiry[0][0] <= now:
            del seen[expiry.popleft()[1]]
        try:
            duplicate = dedup_id in seen
        except TypeError:
            raise TypeError(
                f"dedup_id must be hashable, got {type(dedup_id).__name__} {dedup_id!r}"
            ) from None
        if duplicate:
            self._deduplicated += 1
            rec = _RECORDER.get()
            if rec is not None:
                rec.record(
                    trio.lowlevel.current_task(),
                    self._label,
                    "dedup",
                    {"key": key, "dedup_id": dedup_id},
                )
            return True
        seen[dedup_id] = now + window
        expiry.append((now + window, dedup_id))
        return False

    # ------------------------------------------------------------------ waiting

    async def join(self) -> None:
        """Wait until every message sent before this call has been delivered or dead-lettered.

        Messages sent meanwhile do not extend the wait. Cancelling ``join`` changes nothing in
        the convoy. Do not call it from a handler: it would wait for the handler's own message.
        If the convoy's block exits early, the messages still awaited will never settle:
        ``join`` then raises :class:`trio.ClosedResourceError` (they are in :attr:`undelivered`).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._unsettled and not self.undelivered:  # idle: nothing to walk
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        # Only keys with work pending are kept, so this is as long as the work, no longer.
        targets = [(s, s.next_sequence) for s in self._keys.values() if s.settled < s.next_sequence]
        if not targets:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        for state, target in targets:
            while state.settled < target:
                if self._closed:
                    raise trio.ClosedResourceError(
                        f"{self._label} exited early: key {state.key!r} sequence {state.settled} "
                        "and later will never be delivered; see convoy.undelivered"
                    )
                if state.join_lot is None:
                    state.join_lot = trio.lowlevel.ParkingLot()
                await state.join_lot.park()

    async def _drain(self) -> None:
        """Wait until nothing is unsettled, including messages sent while waiting."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._unsettled and not self.undelivered:  # idle: nothing to walk
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        while self._unsettled:
            await self._drained.park()

    async def _wait_for_work(self) -> None:
        await self._idle_consumers.park()

    def _describe_wait(self) -> str:
        return (
            f"{self._label} ({self._count_unsettled()} unsettled, {self._in_flight()} in flight, "
            f"{len(self._ready)} keys waiting for a consumer, "
            f"{len(self._idle_consumers)} of {self._consumers} consumers idle)"
        )

    # ------------------------------------------------------------------ bookkeeping

    def _count_unsettled(self) -> int:
        # Exact at any moment (_unsettled lags by what running sessions settled). After an
        # early exit the backlogs are emptied: the messages are undelivered, not unsettled.
        return sum(s.next_sequence - s.settled for s in self._keys.values() if s.backlog)

    def _in_flight(self) -> int:
        # A consumer holds a key's session exactly while one of its messages is in the
        # handler (it takes the session, delivers, and gives it up with no checkpoint
        # between), so this is counted per session, not kept up to date per message.
        return sum(1 for state in self._keys.values() if state.state == _HELD)

    def _retire(self, state: _Key) -> None:
        """Drop an idle key, keeping only its next sequence number."""
        del self._keys[state.key]
        self._idle_sequences[state.key] = state.next_sequence
        self._idle_sent += state.next_sequence

    def _abandon(self, reason: BaseException | None) -> None:
        """Record every unsettled message as undelivered and say so loudly."""
        self._closed = True
        for state in self._keys.values():
            backlog = state.backlog
            messages = backlog[len(backlog) - 2 * (state.next_sequence - state.settled) :: 2]
            for index, message in enumerate(messages):
                # The attempt in flight when the consumers were stopped counts.
                attempts = state.attempts + (state.state == _HELD) if index == 0 else 0
                sequence = state.settled + index
                self.undelivered.append(Undelivered(state.key, message, sequence, attempts))
            backlog.clear()
            state.state = _IDLE
            if state.join_lot:
                state.join_lot.unpark_all()  # they raise ClosedResourceError
        self._ready.clear()
        self._unsettled = 0
        if not self.undelivered:
            return
        first = self.undelivered[0]
        why = "" if reason is None else f" ({type(reason).__name__})"
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(
                trio.lowlevel.current_task(),
                self._label,
                "undelivered",
                {"count": len(self.undelivered)},
            )
        warnings.warn(
            UndeliveredWarning(
                f"{self._label} exited early{why} with {len(self.undelivered)} message(s) "
                f"undelivered, the first key={first.key!r} sequence={first.sequence}; "
                "they are listed in convoy.undelivered"
            ),
            stacklevel=3,
        )

    def statistics(self) -> ConvoyStatistics:
        """Counts and backlog right now (see :class:`ConvoyStatistics`)."""
        backlog: dict[Any, int] = {}
        locked = []
        sent = self._idle_sent
        unsettled = 0
        for state in self._keys.values():
            sent += state.next_sequence
            # After an early exit the backlogs are emptied (the messages are undelivered).
            waiting = state.next_sequence - state.settled if state.backlog else 0
            unsettled += waiting
            if state.state == _HELD:
                locked.append(state.key)
                waiting -= 1  # the one in the handler
            if waiting > 0:
                backlog[state.key] = waiting
        hottest = max(backlog, key=backlog.__getitem__) if backlog else None
        return ConvoyStatistics(
            consumers=self._consumers,
            keys=len(self._keys) + len(self._idle_sequences),
            backlog=MappingProxyType(backlog),
            locked_keys=tuple(locked),
            in_flight=self._in_flight(),
            unsettled=unsettled,
            sent=sent,
            # Every message sent is delivered, dead-lettered, unsettled or (after an early
            # exit) undelivered: delivered is counted from the others, not per message.
            delivered=sent - self._dead_count - unsettled - len(self.undelivered),
            retried=self._retried,
            dead_lettered=self._dead_count,
            deduplicated=self._deduplicated,
            lock_losses=self._lock_losses,
            hottest_key=hottest,
            max_wait=self._max_wait,
        )


async def _consume(convoy: Convoy, index: int) -> None:
    """One consumer: take a ready key, handle up to session_batch deliveries, put it back.

    A plain function rather than a method, so a deadlock report names what a stuck handler
    waits on, not the convoy around it.
    """
    ready = convoy._ready
    batch = convoy._session_batch
    max_attempts = convoy._max_attempts
    timeout = convoy._lock_timeout
    handler = convoy._handler
    # The common case, an async handler without lock_timeout, is awaited directly.
    plain = convoy._handler_is_async and timeout is None
    label = convoy._label
    rec = _RECORDER.get()
    task = trio.lowlevel.current_task()
    now = convoy._now
    run = convoy._run
    while True:
        if not ready:
            await convoy._wait_for_work()
            continue
        state = ready.popleft()
        state.state = _HELD
        key = state.key
        backlog = state.backlog
        # Kept in locals for the session: nobody else touches them while the key is held.
        sequence = first = state.settled
        head = len(backlog) - 2 * (state.next_sequence - sequence)
        attempt = state.attempts + 1
        marks = checkpoint_marks(task)
        if rec is not None:
            (run.push if rec._pending is run else run.into(rec))(
                (now(), task, label, _LOCK_ROW, key, index, None, None)
            )
        end = len(backlog)
        for _ in range(batch):  # one turn per delivery, retries included
            if head == end:
                end = len(backlog)  # with what was sent while the handler ran
                if head == end:
                    break
            message = backlog[head]
            t = now()  # the deliver event's time too
            if attempt == 1:
                waited = t - backlog[head + 1]
                if waited > convoy._max_wait:
                    convoy._max_wait = waited
            delivery = _new_delivery((key, message, attempt, sequence))
            if rec is not None:
                (run.push if rec._pending is run else run.into(rec))(
                    (t, task, label, _DELIVER, key, sequence, attempt, index)
                )
            try:
                if plain:
                    await handler(delivery)  # type: ignore[misc]
                else:
                    await _call_guarded(handler, delivery, timeout)
            except Exception as exc:
                error: Exception = exc
                lost = type(error) is _LockLost
                if lost:
                    convoy._lock_losses += 1
                    error = trio.TooSlowError(
                        f"handler for key {key!r} sequence {sequence} ran longer than "
                        f"lock_timeout={timeout}s and was cancelled"
                    )
                    if rec is not None:
                        (run.push if rec._pending is run else run.into(rec))(
                            (now(), task, label, _LOCK_LOST, key, sequence, attempt, index)
                        )
                if attempt < max_attempts:
                    state.attempts = attempt
                    attempt += 1
                    if lost:
                        break  # the key goes to the back of the line
                    convoy._retried += 1
                    if rec is not None:
                        rec.record(
                            task,
                            label,
                            "retry",
                            {
                                "key": key,
                                "sequence": sequence,
                                "attempt": attempt - 1,
                                "consumer": index,
                                "error": _error_text(error),
                            },
                        )
                    continue
                convoy.dead_letters.append(DeadLetter(key, message, attempt, error))
                convoy._dead_count += 1
                if rec is not None:
                    rec.record(
                        task,
                        label,
                        "dead_letter",
                        {
                            "key": key,
                            "sequence": sequence,
                            "attempt": attempt,
                            "consumer": index,
                            "error": _error_text(error),
                            "message": _short(message),
                        },
                    )
            else:
                if rec is not None:
                    (run.push if rec._pending is run else run.into(rec))(
                        (now(), task, label, _DONE, key, sequence, attempt, index)
                    )
            # Settle the oldest message (delivered or dead-lettered): the one place it is done.
            if attempt != 1:
                state.attempts = 0
                attempt = 1
            sequence += 1
            state.settled = sequence
            head += 2  # the settled pairs before head are cut off when the session ends
            if state.join_lot:
                state.join_lot.unpark_all()
        if rec is not None:
            (run.push if rec._pending is run else run.into(rec))(
                (now(), task, label, _UNLOCK_ROW, key, index, None, None)
            )
        if sequence != first:
            unsettled = convoy._unsettled - (sequence - first)
            convoy._unsettled = unsettled
            if not unsettled and convoy._drained:
                convoy._drained.unpark_all()
        if head == len(backlog):
            backlog.clear()
        elif head >= 64 and 2 * head >= len(backlog):
            del backlog[:head]  # amortised O(1) per message
        if backlog:
            state.state = _READY
            ready.append(state)
        else:
            state.state = _IDLE
            if not convoy._closed:
                convoy._retire(state)
        if ready and not checkpointed_since(task, marks):
            # Other keys wait and the handler did not yield (a plain function, say), or a
            # cancellation is due: let everyone else run, and deliver it, before taking the
            # next session.
            await trio.lowlevel.checkpoint()


class _LockLost(Exception):
    """Raised by :func:`_call_guarded` when the handler overran ``lock_timeout`` (private: a
    handler cannot raise it, so the consumer tells a lost lock from a handler's error)."""


async def _call_guarded(
    handler: Callable[[Delivery], Awaitable[object] | object],
    delivery: Delivery,
    timeout: float | None,
) -> None:
    """Deliver to a plain-function handler and/or under ``lock_timeout``: the handler's own
    errors propagate, and a lost lock (it overran and was cancelled) raises _LockLost."""
    if timeout is None:
        result = handler(delivery)
        if inspect.isawaitable(result):
            await result
        return
    error: Exception | None = None
    with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
        try:
            result = handler(delivery)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            error = exc
    if scope.cancel_called:
        raise _LockLost
    if error is not None:
        raise error


def open_convoy(
    handler: Callable[[Delivery], Awaitable[object] | object],
    *,
    consumers: int = 4,
    max_attempts: int = 3,
    lock_timeout: float | None = None,
    dedup_window: float | None = None,
    session_batch: int = 16,
    name: str | None = None,
) -> AbstractAsyncContextManager[Convoy]:
    """Open a :class:`Convoy` whose ``consumers`` call ``handler(delivery)``; use ``async with``.

    ``handler`` is usually an async function; a plain function works too. Arguments are
    checked here, before anything starts. The block's exit waits until every message sent has
    been delivered or dead-lettered (messages sent by handlers meanwhile included), then stops
    the consumers. If the block is cancelled or raises, see :attr:`Convoy.undelivered`.

    Example::

        async with seqlab.open_convoy(handle, consumers=2, max_attempts=5) as convoy:
            for account, amount in transfers:
                await convoy.send(account, amount)
        print(convoy.statistics().delivered, convoy.dead_letters)
    """
    convoy = Convoy(
        handler,
        consumers=consumers,
        max_attempts=max_attempts,
        lock_timeout=lock_timeout,
        dedup_window=dedup_window,
        session_batch=session_batch,
        name=name,
    )
    return _run_convoy(convoy)


@asynccontextmanager
async def _run_convoy(convoy: Convoy) -> AsyncIterator[Convoy]:
    convoy._now = clock_reader()  # the trio clock, read the cheapest way
    prefix = "" if convoy.name is None else f"{convoy.name}-"
    body_error: BaseException | None = None
    clean = False
    try:
        async with trio.open_nursery() as nursery:
            for index in range(convoy._consumers):
                nursery.start_soon(_consume, convoy, index, name=f"{prefix}consumer-{index}")
            try:
                yield convoy
                await convoy._drain()
                clean = True
            except BaseException as exc:
                # Kept out of the nursery so the caller sees its own exception, not a group.
                body_error = exc
            finally:
                convoy._closed = True
                nursery.cancel_scope.cancel()
    finally:
        if not clean:
            convoy._abandon(body_error)
    if body_error is not None:
        raise body_error


def _error_text(error: BaseException) -> str:
    """``Type: message`` for a trace event, without memory addresses."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _short(message: Any, limit: int = 60) -> str:
    """A message's repr for a trace event, cut to ``limit`` characters."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(message))
    return text if len(text) <= limit else text[: limit - 3] + "..."
