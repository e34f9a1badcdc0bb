"""Disruptor-style sequence barriers: sequences, barriers, a ring buffer and staged pipelines.

The idea comes from the LMAX Disruptor. Events live in a preallocated ring and are numbered
0, 1, 2, ... Every consumer owns a :class:`Sequence`: the number of the last event it has
finished. A consumer may move on to event ``n`` only when an explicit rule says so: every
sequence it depends on has reached ``n``. That rule is a :class:`SequenceBarrier`, and it
replaces the flags, maps and "only proceed if ..." callbacks that otherwise grow around a
pipeline. Because the barrier answers with the *highest* available sequence, a consumer that
fell behind takes everything in one batch: one wake-up and one checkpoint for many events.
That is where this beats a chain of channels, which pay a checkpoint per event per hop.

Four pieces, from small to large:

* :class:`Sequence` - a counter that only moves forward; ``complete(n)`` accepts completions in
  any order and advances to the highest contiguous one.
* :class:`SequenceBarrier` - ``await wait_for(n)`` until all dependencies reached ``n``;
  returns the highest sequence available in all of them. ``alert()`` halts waiters.
* :class:`RingBuffer` - power-of-two slots; producers claim (``next``/``try_next``), write
  (``ring[seq] = event``) and ``publish``; gating sequences keep them from overwriting slots a
  consumer has not finished with.
* :class:`Pipeline` - stages with dependencies (``after=``) built on the three above, each
  run by its own task, with an exception policy per stage.

Example, the canonical diamond (persist and moderate in parallel, deliver after both)::

    pipe = Pipeline(1024, name="chat")
    persist = pipe.stage("persist", store)
    moderate = pipe.stage("moderate", check)
    pipe.stage("deliver", send, after=(persist, moderate))
    async with pipe.run() as publish:
        for message in messages:
            await publish(message)
    # here every message went through all three stages

Checkpoints follow trio's rule. Every ``async`` method always checkpoints:
:meth:`SequenceBarrier.wait_for` once per batch whatever the batch size, :meth:`Pipeline.publish`
once per event (so a producer loop of ``await publish(event)`` lets the stages run after each
event), :meth:`Pipeline.publish_many` once per call. :meth:`Pipeline.publish_nowait` never
yields and raises :class:`trio.WouldBlock` when the ring is full. Batching lives in the stage
loop: a stage takes every event published since it last ran as one batch, so a producer that
publishes a burst with ``publish_nowait`` (or ``publish_many``) and then yields hands the
stages the whole burst for one wake-up and one sequence update.

Trace events (when a recorder is active; ``primitive`` is the object's label, such as
``"Pipeline 'chat'"``):

* ``stage`` - once per stage when a pipeline starts: ``stage``, ``after`` (names), ``size``.
* ``claim`` / ``publish`` - ``sequence`` (the highest), ``lo`` for a range, and ``cursor``
  on publish. A pipeline records the publishes made between two yields of its producer as one
  range, before any stage sees them: tracing costs per batch, not per event.
* ``advance`` - a stage finished a batch: ``stage``, ``sequence``, ``batch`` (its size). A
  standalone :class:`Sequence` records ``advance`` with ``sequence`` when ``set``/``complete``
  moves it.
* ``wait`` - a stage (or a barrier) found nothing to do and parks: ``stage`` (pipelines only),
  ``wanted``, ``available``.
* ``full`` - a producer waits for room: ``wanted``, ``available`` (the highest claimable).
* ``drain`` - leaving ``run()`` waits for the final stages: ``wanted``, ``available``.
* ``error`` - a handler raised: ``stage``, ``sequence``, ``error`` (repr), ``action``
  (``"stop"`` or ``"skip"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import trio
from trio.lowlevel import (
    ParkingLot,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    enable_ki_protection,
)

from ._callables import callable_name as _callable_name
from ._callables import is_async_callable
from .trace import _RECORDER, Recorder

__all__ = [
    "AlertError",
    "InsufficientCapacity",
    "Pipeline",
    "PipelineStatistics",
    "RingBuffer",
    "RingBufferStatistics",
    "Sequence",
    "SequenceBarrier",
    "SequenceBarrierStatistics",
    "SequenceStatistics",
    "Stage",
    "StageError",
    "StageStatistics",
]

_NO_GATING = 2**62


class AlertError(Exception):
    """Raised by :meth:`SequenceBarrier.wait_for` after :meth:`SequenceBarrier.alert`.

    An alert means "stop waiting, the pipeline is halting". Call
    :meth:`SequenceBarrier.clear_alert` to make the barrier usable again.
    """


class InsufficientCapacity(trio.WouldBlock):
    """:meth:`RingBuffer.try_next` found no free slot: a gating consumer has not caught up.

    It is a :class:`trio.WouldBlock`, like every ``*_nowait`` failure. Wait with
    ``await ring.next()`` instead, or let the consumers catch up first.
    """


def _label(kind: str, name: str | None) -> str:
    return kind if name is None else f"{kind} {name!r}"


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    return value


def _check_name(name: Any) -> str | None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    return name


# --------------------------------------------------------------------------- Sequence


@dataclass(frozen=True, slots=True)
class SequenceStatistics:
    """``value``: the current sequence; ``pending``: completions waiting for a gap to fill."""

    value: int
    pending: int


class Sequence:
    """A counter that only moves forward: "everything up to ``value`` is done".

    A sequence starts at ``initial`` (``-1``: nothing done yet; the first event is 0).
    ``set(n)`` moves it to ``n``; going backwards raises :class:`ValueError`.
    ``complete(n)`` is for work that finishes out of order: it records that ``n`` is done and
    advances ``value`` to the highest ``m`` such that everything up to ``m`` is done::

        seq = Sequence()
        seq.complete(1)      # 0 is not done yet: value stays -1
        seq.complete(0)      # 0 and 1 are done: value jumps to 1
        assert seq.value == 1

    A :class:`SequenceBarrier` waits on sequences; every advance wakes the barriers that are
    waiting for it (and nobody else). Plain methods: nothing here blocks.
    """

    __slots__ = ("_armed", "_label", "_pending", "_value", "name")

    def __init__(self, initial: int = -1, *, name: str | None = None) -> None:
        self._value: int = _check_int(initial, "initial")
        self.name = _check_name(name)
        self._label = _label("Sequence", name)
        self._pending: set[int] = set()
        # Parking lots of barriers (or ring producers) waiting for this sequence to advance.
        self._armed: list[ParkingLot] = []

    @property
    def value(self) -> int:
        """The highest sequence such that it and everything before it are done."""
        return self._value

    def __repr__(self) -> str:
        return f"<{self._label} value={self._value}>"

    def _advance(self, value: int) -> None:
        self._value = value
        if self._armed:
            armed, self._armed = self._armed, []
            for lot in armed:
                lot.unpark_all()

    @enable_ki_protection
    def set(self, n: int) -> None:
        """Move the sequence to ``n`` (everything up to ``n`` is done).

        Setting the current value again does nothing; setting a smaller one raises
        :class:`ValueError`, because consumers may already have acted on the larger one.
        """
        _check_int(n, "n")
        if n < self._value:
            raise ValueError(
                f"{self._label} cannot go backwards from {self._value} to {n}: "
                "sequences only advance"
            )
        if n == self._value:
            return
        pending = self._pending
        if pending:
            for done in [p for p in pending if p <= n]:
                pending.discard(done)
            while n + 1 in pending:
                n += 1
                pending.discard(n)
        self._advance(n)
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(current_task(), self._label, "advance", {"sequence": n})

    @enable_ki_protection
    def complete(self, n: int) -> None:
        """Record that ``n`` is done, in any order; ``value`` follows the contiguous prefix.

        Completing a sequence twice (or one at or below ``value``) raises :class:`ValueError`.
        """
        _check_int(n, "n")
        if n <= self._value or n in self._pending:
            raise ValueError(
                f"{self._label}: sequence {n} was already completed (value is {self._value})"
            )
        if n != self._value + 1:
            self._pending.add(n)
            return
        pending = self._pending
        while n + 1 in pending:
            n += 1
            pending.discard(n)
        self._advance(n)
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(current_task(), self._label, "advance", {"sequence": n})

    def _complete_range(self, lo: int, hi: int) -> None:
        # Everything in lo..hi is done (the caller checked none of it was done before).
        if lo != self._value + 1:
            self._pending.update(range(lo, hi + 1))
            return
        pending = self._pending
        while hi + 1 in pending:
            hi += 1
            pending.discard(hi)
        self._advance(hi)

    def statistics(self) -> SequenceStatistics:
        return SequenceStatistics(value=self._value, pending=len(self._pending))


# --------------------------------------------------------------------------- SequenceBarrier


@dataclass(frozen=True, slots=True)
class SequenceBarrierStatistics:
    """``available``: the minimum over ``dependencies`` (their values, in order);
    ``tasks_waiting``: tasks blocked in :meth:`SequenceBarrier.wait_for`; ``alerted``."""

    available: int
    dependencies: tuple[int, ...]
    tasks_waiting: int
    alerted: bool


class SequenceBarrier:
    """The explicit rule "event ``n`` may be processed once every dependency reached ``n``".

    Dependencies are :class:`Sequence` objects (or a :class:`RingBuffer`, meaning its
    published cursor). ``await barrier.wait_for(n)`` returns the highest sequence available in
    *all* dependencies, which may be well above ``n``: the caller then processes the whole range
    ``n .. available`` as one batch. Typical consumer loop::

        barrier = SequenceBarrier(persisted, moderated)
        next_seq = delivered.value + 1
        while True:
            available = await barrier.wait_for(next_seq)
            for seq in range(next_seq, available + 1):
                deliver(ring[seq])
            delivered.set(available)
            next_seq = available + 1

    ``alert()`` halts the barrier: current and future waiters raise :class:`AlertError` until
    ``clear_alert()``.

    Cancellation: ``wait_for`` is a checkpoint (always, even when data is ready). A cancelled
    wait simply leaves; the barrier and the sequences are unaffected.
    """

    def __init__(self, *dependencies: Sequence | RingBuffer, name: str | None = None) -> None:
        if not dependencies:
            raise TypeError(
                "SequenceBarrier needs at least one dependency: a Sequence or a RingBuffer"
            )
        deps: list[Sequence] = []
        for i, dep in enumerate(dependencies):
            if isinstance(dep, RingBuffer):
                dep = dep._cursor
            if not isinstance(dep, Sequence):
                raise TypeError(
                    f"dependencies[{i}] must be a Sequence or a RingBuffer, "
                    f"got {type(dep).__name__}"
                )
            deps.append(dep)
        self.name = _check_name(name)
        self._label = _label("SequenceBarrier", name)
        self._deps: tuple[Sequence, ...] = tuple(deps)
        self._single: Sequence | None = deps[0] if len(deps) == 1 else None
        self._lot = ParkingLot()
        self._alerted = False
        self._wanted: int | None = None
        self._stage: str | None = None  # set when a Pipeline stage owns this barrier
        self._wait_kind = "wait"

    @property
    def dependencies(self) -> tuple[Sequence, ...]:
        return self._deps

    @property
    def alerted(self) -> bool:
        return self._alerted

    def available(self) -> int:
        """The highest sequence available in every dependency, right now."""
        if self._single is not None:
            return self._single._value
        return min(d._value for d in self._deps)

    async def wait_for(self, n: int) -> int:
        """Wait until every dependency reached ``n``; return the highest available (``>= n``).

        Raises :class:`AlertError` if the barrier is alerted, before or during the wait.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
        await checkpoint_if_cancelled()
        if self._alerted:
            raise AlertError(f"{self._label} was alerted; call clear_alert() to use it again")
        single = self._single
        available = single._value if single is not None else min(d._value for d in self._deps)
        if available >= n:
            await cancel_shielded_checkpoint()
            # Whatever was published while we yielded joins this batch.
            return single._value if single is not None else min(d._value for d in self._deps)
        self._wanted = n
        rec = _RECORDER.get()
        if rec is not None:
            data: dict[str, Any] = {"wanted": n, "available": available}
            if self._stage is not None:
                data = {"stage": self._stage, **data}
            rec.record(current_task(), self._label, self._wait_kind, data)
        lot = self._lot
        while True:
            for dep in self._deps:
                if dep._value < n and lot not in dep._armed:
                    dep._armed.append(lot)
            await lot.park()
            if self._alerted:
                raise AlertError(f"{self._label} was alerted while waiting for {n}")
            available = single._value if single is not None else min(d._value for d in self._deps)
            if available >= n:
                return available

    @enable_ki_protection
    def alert(self) -> None:
        """Halt: every current and future :meth:`wait_for` raises :class:`AlertError`."""
        self._alerted = True
        self._lot.unpark_all()

    @enable_ki_protection
    def clear_alert(self) -> None:
        """Make the barrier usable again after :meth:`alert`."""
        self._alerted = False

    def statistics(self) -> SequenceBarrierStatistics:
        return SequenceBarrierStatistics(
            available=self.available(),
            dependencies=tuple(d._value for d in self._deps),
            tasks_waiting=len(self._lot),
            alerted=self._alerted,
        )

    def _describe_wait(self) -> str:
        return f"{self._label} ({self._wait_details()})"

    def _wait_details(self) -> str:
        deps = ", ".join(f"{d._label} at {d._value}" for d in self._deps)
        wanted = "" if self._wanted is None else f"wants {self._wanted}; "
        alert = "; alerted" if self._alerted else ""
        return f"{wanted}available {self.available()}: {deps}{alert}"


# --------------------------------------------------------------------------- RingBuffer


@dataclass(frozen=True, slots=True)
class RingBufferStatistics:
    """``cursor``: highest published; ``claimed``: highest claimed; ``gating``: the gating
    sequences' values; ``remaining_capacity``: slots a producer may claim now;
    ``producers_waiting``: tasks blocked in :meth:`RingBuffer.next`."""

    size: int
    cursor: int
    claimed: int
    gating: tuple[int, ...]
    remaining_capacity: int
    producers_waiting: int


class RingBuffer:
    """A fixed ring of ``size`` slots (a power of two) addressed by ever-growing sequences.

    Sequence ``s`` lives in slot ``s % size``. A producer claims sequences, writes them, and
    publishes them; consumers read published ones::

        ring = RingBuffer(8)
        ring.add_gating(consumer_seq)     # producers never lap this consumer
        seq = await ring.next()           # claim (waits while the ring is full)
        ring[seq] = event
        ring.publish(seq)                 # consumers waiting on the ring wake up

    ``factory`` (a no-argument callable) preallocates every slot, Disruptor style, for
    producers that fill a mutable event in place instead of storing a new object.

    Several producer tasks may share a ring: claims never overlap, and ``cursor`` (the highest
    published sequence such that all before it are published too) only covers a claimed
    sequence once it and all earlier ones are published. A producer that claims and never
    publishes therefore stalls every consumer: publish what you claim, even on error.

    Capacity: producers never overwrite a slot a gating sequence has not passed. Register
    gating sequences before producing (a ring with none never waits). A gating sequence far
    behind the cursor blocks producers until it catches up.

    Cancellation: ``next`` is a checkpoint; if it is cancelled nothing was claimed.
    """

    def __init__(
        self, size: int, factory: Callable[[], Any] | None = None, *, name: str | None = None
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int (a power of two), got {type(size).__name__}")
        if size < 1 or size & (size - 1):
            raise ValueError(
                f"size must be a power of two (1, 2, 4, 8, ...), got {size}; try "
                f"{1 << max(size - 1, 0).bit_length()}"
            )
        if factory is not None and not callable(factory):
            raise TypeError(f"factory must be a callable or None, got {type(factory).__name__}")
        if is_async_callable(factory):
            raise TypeError(
                "factory must be a plain function that returns a slot's initial value; "
                f"{_callable_name(factory)} is an async function (it would fill the ring with "
                "coroutines)"
            )
        self.name = _check_name(name)
        self._label = _label("RingBuffer", name)
        self._size = size
        self._mask = size - 1
        self._entries: list[Any] = (
            [None] * size if factory is None else [factory() for _ in range(size)]
        )
        self._cursor = Sequence(name=name)
        self._cursor._label = f"{self._label} cursor"
        self._claimed = -1
        self._gating: list[Sequence] = []
        self._gating_cache = _NO_GATING
        self._room = ParkingLot()

    @property
    def size(self) -> int:
        return self._size

    @property
    def cursor(self) -> int:
        """The highest published sequence (every sequence up to it is published)."""
        return self._cursor._value

    @property
    def cursor_sequence(self) -> Sequence:
        """The cursor as a :class:`Sequence`, to wait on (``SequenceBarrier(ring)`` does)."""
        return self._cursor

    @enable_ki_protection
    def add_gating(self, *sequences: Sequence) -> None:
        """Producers will not claim a slot until every one of ``sequences`` has passed it."""
        for i, seq in enumerate(sequences):
            if not isinstance(seq, Sequence):
                raise TypeError(f"sequences[{i}] must be a Sequence, got {type(seq).__name__}")
        for seq in sequences:
            if seq not in self._gating:
                self._gating.append(seq)
        self._refresh_gating()

    @enable_ki_protection
    def remove_gating(self, sequence: Sequence) -> None:
        """Stop gating producers on ``sequence`` (a consumer that left)."""
        if sequence not in self._gating:
            raise ValueError(f"{sequence!r} is not a gating sequence of {self._label}")
        self._gating.remove(sequence)
        self._refresh_gating()
        self._room.unpark_all()

    def _refresh_gating(self) -> int:
        self._gating_cache = min((g._value for g in self._gating), default=_NO_GATING)
        return self._gating_cache

    def _has_room(self, hi: int) -> bool:
        # Claiming up to ``hi`` overwrites the slot of ``hi - size``: every gating sequence
        # must have passed it. The cached minimum only grows, so refresh only when it says no.
        wrap = hi - self._size
        return wrap <= self._gating_cache or wrap <= self._refresh_gating()

    def _check_n(self, n: Any) -> int:
        _check_int(n, "n")
        if not 1 <= n <= self._size:
            raise ValueError(f"n must be between 1 and the ring size {self._size}, got {n}")
        return int(n)

    def remaining_capacity(self) -> int:
        """How many sequences a producer could claim right now without waiting."""
        free = self._refresh_gating() + self._size - self._claimed
        return max(0, min(free, self._size))

    @enable_ki_protection
    def try_next(self, n: int = 1) -> int:
        """Claim ``n`` sequences without waiting; return the highest one claimed.

        The claimed range is ``hi - n + 1 .. hi``. Raises :class:`InsufficientCapacity` when
        a gating sequence has not freed enough slots.
        """
        n = self._check_n(n)
        hi = self._claimed + n
        if not self._has_room(hi):
            raise InsufficientCapacity(
                f"{self._label} is full: claiming up to {hi} would overwrite slot "
                f"{hi - self._size}, and the slowest gating sequence is at {self._gating_cache}"
            )
        self._claimed = hi
        self._trace_claim(hi, n)
        return hi

    async def next(self, n: int = 1) -> int:
        """Claim ``n`` sequences, waiting for room; return the highest one claimed."""
        n = self._check_n(n)
        await checkpoint_if_cancelled()
        hi = self._claimed + n
        if self._has_room(hi):
            self._claimed = hi
            self._trace_claim(hi, n)
            await cancel_shielded_checkpoint()
            return hi
        await self._wait_for_room(n)
        hi = self._claimed + n
        self._claimed = hi
        self._trace_claim(hi, n)
        return hi

    async def _wait_for_room(self, n: int, stop: Callable[[], bool] | None = None) -> None:
        # Returns when claiming n more fits, or (with ``stop``) when stop() became true.
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(
                current_task(),
                self._label,
                "full",
                {"wanted": self._claimed + n, "available": self._gating_cache + self._size},
            )
        while True:
            hi = self._claimed + n
            if self._has_room(hi):
                return
            wrap = hi - self._size
            for g in self._gating:
                if g._value < wrap and self._room not in g._armed:
                    g._armed.append(self._room)
            await self._room.park()
            if stop is not None and stop():
                return

    def _trace_claim(self, hi: int, n: int) -> None:
        rec = _RECORDER.get()
        if rec is not None:
            data = {"sequence": hi} if n == 1 else {"lo": hi - n + 1, "sequence": hi}
            rec.record(current_task(), self._label, "claim", data)

    def _check_window(self, seq: Any, what: str = "seq") -> int:
        _check_int(seq, what)
        if not self._claimed - self._size < seq <= self._claimed:
            raise IndexError(
                f"sequence {seq} is not in {self._label}: claimed sequences are "
                f"{max(self._claimed - self._size + 1, 0)}..{self._claimed}"
            )
        return int(seq)

    def __getitem__(self, seq: int) -> Any:
        """The event at claimed sequence ``seq`` (only the last ``size`` claims are kept)."""
        return self._entries[self._check_window(seq) & self._mask]

    def __setitem__(self, seq: int, value: Any) -> None:
        """Write the event for a claimed, not yet published sequence."""
        seq = self._check_window(seq)
        if seq <= self._cursor._value or seq in self._cursor._pending:
            raise ValueError(f"sequence {seq} is already published; claim a new one")
        self._entries[seq & self._mask] = value

    @enable_ki_protection
    def publish(self, lo: int, hi: int | None = None) -> None:
        """Make claimed sequence ``lo`` (or the range ``lo..hi``) visible to consumers.

        Publishing may happen out of order across producers; ``cursor`` advances once the gap
        before a sequence is published too.
        """
        _check_int(lo, "lo")
        if hi is not None:
            _check_int(hi, "hi")
        lo = self._check_window(lo, "lo")
        hi = lo if hi is None else self._check_window(hi, "hi")
        if hi < lo:
            raise ValueError(f"hi ({hi}) must not be below lo ({lo})")
        cursor = self._cursor
        if lo <= cursor._value or any(s in cursor._pending for s in range(lo, hi + 1)):
            raise ValueError(f"{self._label}: sequence in {lo}..{hi} already published")
        cursor._complete_range(lo, hi)
        rec = _RECORDER.get()
        if rec is not None:
            data = {"sequence": hi} if lo == hi else {"lo": lo, "sequence": hi}
            rec.record(current_task(), self._label, "publish", {**data, "cursor": cursor._value})

    def new_barrier(self, *dependencies: Sequence) -> SequenceBarrier:
        """A barrier on ``dependencies``, or on this ring's cursor when none are given."""
        return SequenceBarrier(*(dependencies or (self._cursor,)))

    def statistics(self) -> RingBufferStatistics:
        return RingBufferStatistics(
            size=self._size,
            cursor=self._cursor._value,
            claimed=self._claimed,
            gating=tuple(g._value for g in self._gating),
            remaining_capacity=self.remaining_capacity(),
            producers_waiting=len(self._room),
        )

    def _describe_wait(self) -> str:
        gating = ", ".join(str(g._value) for g in self._gating) or "none"
        return (
            f"{self._label} (full: size {self._size}, claimed {self._claimed}, "
            f"cursor {self._cursor._value}; gating sequences at {gating})"
        )


# --------------------------------------------------------------------------- Pipeline

OnError = Literal["raise", "skip"] | Callable[[BaseException, Any, int], Any]


@dataclass(frozen=True, slots=True)
class StageError:
    """A handler error that a stage with ``on_error="skip"`` recorded and skipped."""

    stage: str
    sequence: int
    event: Any
    error: BaseException


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """One stage: its ``sequence``; ``batches`` and ``events`` handled, ``largest_batch``;
    ``errors`` skipped; ``waiting``: whether its task is blocked for more events."""

    name: str
    sequence: int
    batches: int
    events: int
    largest_batch: int
    errors: int
    waiting: bool


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    """``cursor``: highest published event; ``stages`` in the order they were added;
    ``producers_waiting``: publishers blocked on a full ring; ``running``."""

    size: int
    cursor: int
    stages: tuple[StageStatistics, ...]
    producers_waiting: int
    running: bool


class Stage:
    """One step of a :class:`Pipeline`; made by :meth:`Pipeline.stage`, not directly.

    ``sequence`` is the last event this stage finished; ``after`` the stages it waits for;
    ``errors`` the :class:`StageError` s it skipped (``on_error="skip"``).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        name: str,
        handler: Callable[..., Any],
        after: tuple[Stage, ...],
        on_error: OnError,
    ) -> None:
        self.pipeline = pipeline
        self.name = name
        self.handler = handler
        self.after = after
        self.on_error = on_error
        # A stage added after a run starts at the cursor: the ring no longer holds older events.
        self.sequence = Sequence(pipeline.ring._cursor._value, name=name)
        self.sequence._label = f"{pipeline._label} stage {name!r}"
        deps = [s.sequence for s in after] or [pipeline.ring._cursor]
        self.barrier = SequenceBarrier(*deps)
        self.barrier._label = pipeline._label
        self.barrier._stage = name
        self.errors: list[StageError] = []
        self._is_async = is_async_callable(handler)
        self._batches = 0
        self._events = 0
        self._largest = 0

    def __repr__(self) -> str:
        after = ", ".join(s.name for s in self.after) or "cursor"
        return f"<Stage {self.name!r} after {after} at {self.sequence._value}>"

    def statistics(self) -> StageStatistics:
        return StageStatistics(
            name=self.name,
            sequence=self.sequence._value,
            batches=self._batches,
            events=self._events,
            largest_batch=self._largest,
            errors=len(self.errors),
            waiting=len(self.barrier._lot) > 0,
        )

    def _describe_wait(self) -> str:
        nxt = self.sequence._value + 1
        avail = self.barrier.available()
        where = f"{self.pipeline._label} stage {self.name!r} at {self.sequence._value}"
        if avail >= nxt:
            return f"{where} (in its handler, batch {nxt}..{avail})"
        deps = (
            ", ".join(f"{s.name} at {s.sequence._value}" for s in self.after)
            or f"cursor at {self.pipeline.ring._cursor._value}"
        )
        return f"{where} (waits for {nxt}: {deps})"

    async def _run(self) -> None:
        # The BatchEventProcessor loop: wait once, handle the whole batch, advance once.
        pipeline = self.pipeline
        entries = pipeline.ring._entries
        mask = pipeline.ring._mask
        handler = self.handler
        barrier = self.barrier
        sequence = self.sequence
        is_async = self._is_async
        label = pipeline._label
        nxt = sequence._value + 1
        while True:
            try:
                available = await barrier.wait_for(nxt)
            except AlertError:
                return  # the pipeline is stopping (another stage failed)
            if pipeline._trace_from is not None:
                pipeline._trace_flush()
            seq = nxt
            while seq <= available:
                try:
                    if is_async:
                        for seq in range(seq, available + 1):  # noqa: B020
                            await handler(entries[seq & mask], seq, seq == available)
                    else:
                        for seq in range(seq, available + 1):  # noqa: B020
                            handler(entries[seq & mask], seq, seq == available)
                except Exception as exc:
                    if not self._handle_error(exc, entries[seq & mask], seq):
                        return
                # Past the batch, or past the event the policy skipped: go on after it.
                seq += 1
            batch = available - nxt + 1
            self._batches += 1
            self._events += batch
            if batch > self._largest:
                self._largest = batch
            sequence._advance(available)
            rec = _RECORDER.get()
            if rec is not None:
                rec.record(
                    current_task(),
                    label,
                    "advance",
                    {"stage": self.name, "sequence": available, "batch": batch},
                )
            nxt = available + 1

    def _handle_error(self, exc: Exception, event: Any, seq: int) -> bool:
        """Apply the stage's policy; True means skip the event and go on."""
        rec = _RECORDER.get()
        policy = self.on_error
        if policy == "skip":
            self.errors.append(StageError(self.name, seq, event, exc))
        elif callable(policy):
            try:
                policy(exc, event, seq)
            except Exception as policy_exc:
                exc = policy_exc
                policy = "raise"
        if policy == "raise":
            if rec is not None:
                rec.record(
                    current_task(),
                    self.pipeline._label,
                    "error",
                    {"stage": self.name, "sequence": seq, "error": repr(exc), "action": "stop"},
                )
            if hasattr(exc, "add_note"):
                exc.add_note(f"seqlab: raised by stage {self.name!r} handling sequence {seq}")
            self.pipeline._fail(exc)
            return False
        if rec is not None:
            rec.record(
                current_task(),
                self.pipeline._label,
                "error",
                {"stage": self.name, "sequence": seq, "error": repr(exc), "action": "skip"},
            )
        return True


class Pipeline:
    """Stages over one ring, each advancing by one explicit rule: its dependencies' sequences.

    Build the dependency graph with :meth:`stage`, then run it::

        pipe = Pipeline(1024)
        persist = pipe.stage("persist", store)            # reads the ring cursor
        moderate = pipe.stage("moderate", check)          # runs in parallel with persist
        pipe.stage("deliver", send, after=(persist, moderate))
        async with pipe.run() as publish:
            await publish(message)

    Handlers are called as ``handler(event, sequence, end_of_batch)``; ``async def`` handlers
    are awaited. Each stage runs in its own task: when it wakes it takes every event available
    as one batch, calls the handler for each in order, and advances its sequence once, after the
    event with ``end_of_batch=True``. Stages with no ``after`` read the ring's cursor. The
    final stages (those no other stage depends on) gate the producer, so no event is
    overwritten before every stage has handled it.

    Errors, per stage (``on_error``):

    * ``"raise"`` (default): the pipeline stops - every barrier is alerted, every stage task
      and the block's body are cancelled, blocked publishers are woken - and the handler's
      exception comes out of ``run()`` *bare* (not wrapped in an ExceptionGroup), with a note
      naming the stage and sequence. Nothing hangs.
    * ``"skip"``: the error is recorded in ``stage.errors`` (a :class:`StageError`) and the
      stage goes on with the next event, like the Disruptor's non-fatal exception handler.
    * a callable ``on_error(error, event, sequence)``: called instead of recording (log it,
      count it); the event is skipped. If the callable raises, the pipeline stops with that.

    Cancellation: a stage cancelled in the middle of a batch has not advanced past it, and the
    batch's events stay in the ring (the producer is gated), so running the pipeline again
    handles that batch again from its start: delivery is at-least-once across a cancellation.

    Leaving the ``run()`` block normally waits until every published event went through every
    stage. Leaving it with an exception stops the stages at once and re-raises it.
    Publishing after the block raises :class:`trio.ClosedResourceError`.

    Checkpoints, as in trio: :meth:`publish` and :meth:`publish_many` always checkpoint;
    :meth:`publish_nowait` never does (and raises :class:`trio.WouldBlock` when the ring is
    full). A stage takes every event published since it last ran as one batch.
    """

    def __init__(self, size: int, *, name: str | None = None) -> None:
        self.name = _check_name(name)
        self._label = _label("Pipeline", name)
        self.ring = RingBuffer(size, name=name)
        self.ring._label = self._label
        self.ring._cursor._label = f"{self._label} cursor"
        self._stages: dict[str, Stage] = {}
        self._running = False
        self._closed = True
        self._error: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        # Tracing coalesces the publishes made between two yields of the producer into one
        # claim and one publish event (a range), recorded before any stage sees them.
        self._trace_from: int | None = None
        self._trace_task: trio.lowlevel.Task | None = None
        self._trace_rec: Recorder | None = None

    @property
    def size(self) -> int:
        return self.ring._size

    @property
    def cursor(self) -> int:
        """The highest published event's sequence."""
        return self.ring._cursor._value

    @property
    def stages(self) -> tuple[Stage, ...]:
        return tuple(self._stages.values())

    def __repr__(self) -> str:
        return f"<{self._label} size={self.size} stages={list(self._stages)}>"

    def stage(
        self,
        name: str,
        handler: Callable[..., Any],
        *,
        after: Iterable[Stage | str] | Stage | str = (),
        on_error: OnError = "raise",
    ) -> Stage:
        """Add a stage that runs ``handler(event, sequence, end_of_batch)`` on every event.

        ``after`` lists the stages (objects or names) that must have handled an event before
        this one may; they must already exist, so stages are added in dependency order (which
        also makes cycles impossible). ``on_error`` is ``"raise"``, ``"skip"`` or a callable,
        see the class docstring. A stage added between two runs sees only the events published
        after it was added.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a non-empty str, got {type(name).__name__} {name!r}")
        if not name:
            raise ValueError("name must be a non-empty str, got ''")
        if name in self._stages:
            raise ValueError(f"name: {self._label} already has a stage named {name!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if isinstance(on_error, str):
            if on_error not in ("raise", "skip"):
                raise ValueError(
                    f"on_error must be 'raise', 'skip' or a callable(error, event, sequence), "
                    f"got {on_error!r}"
                )
        elif not callable(on_error):
            raise TypeError(
                f"on_error must be 'raise', 'skip' or a callable(error, event, sequence), "
                f"got {type(on_error).__name__} {on_error!r}"
            )
        elif is_async_callable(on_error):
            # The stage calls it without awaiting: its body would never run and its errors
            # would vanish (only a "never awaited" warning).
            raise TypeError(
                f"on_error must be a plain function, called as on_error(error, event, "
                f"sequence); {_callable_name(on_error)} is an async function. Log or count "
                "in a plain function, or handle the error inside an async handler"
            )
        if isinstance(after, (Stage, str)):
            items: tuple[Any, ...] = (after,)
        elif isinstance(after, Iterable):
            items = tuple(after)
        else:
            raise TypeError(
                "after must be a Stage, a stage name, or an iterable of them (() for none), "
                f"got {type(after).__name__} {after!r}"
            )
        if self._running:
            raise RuntimeError(f"cannot add stage {name!r} while {self._label} is running")
        deps: list[Stage] = []
        for item in items:
            if isinstance(item, Stage):
                if item.pipeline is not self:
                    raise ValueError(
                        f"after: stage {name!r} cannot depend on {item.name!r}: that stage belongs "
                        f"to {item.pipeline._label}, not {self._label}"
                    )
                dep = item
            elif isinstance(item, str):
                if item == name:
                    raise ValueError(f"after: stage {name!r} cannot depend on itself (a cycle)")
                if item not in self._stages:
                    known = ", ".join(repr(s) for s in self._stages) or "none yet"
                    raise ValueError(
                        f"after: stage {name!r} depends on unknown stage {item!r} "
                        f"(known: {known}). "
                        "Add stages in dependency order, each after the stages it waits for; "
                        "a later stage or a cycle cannot be a dependency."
                    )
                dep = self._stages[item]
            else:
                raise TypeError(
                    f"after must hold Stage objects or stage names, got {type(item).__name__} "
                    f"{item!r}"
                )
            if dep not in deps:
                deps.append(dep)
        stage = Stage(self, name, handler, tuple(deps), on_error)
        self._stages[name] = stage
        return stage

    def _final_stages(self) -> list[Stage]:
        depended_on = {id(d) for s in self._stages.values() for d in s.after}
        return [s for s in self._stages.values() if id(s) not in depended_on]

    @asynccontextmanager
    async def run(self) -> AsyncIterator[Callable[[Any], Awaitable[None]]]:
        """Start one task per stage; yield :meth:`publish`; drain on the way out."""
        if not self._stages:
            raise RuntimeError(f"{self._label} has no stages; add some with pipe.stage(...)")
        if self._running:
            raise RuntimeError(f"{self._label} is already running")
        self._running = True
        self._closed = False
        self._error = None
        finals = self._final_stages()
        ring = self.ring
        ring._gating = [s.sequence for s in finals]
        ring._refresh_gating()
        for s in self._stages.values():
            s.barrier.clear_alert()
        rec = _RECORDER.get()
        if rec is not None:
            task = current_task()
            for s in self._stages.values():
                after = [d.name for d in s.after]
                rec.record(
                    task,
                    self._label,
                    "stage",
                    {"stage": s.name, "after": after, "size": ring._size},
                )
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                for s in self._stages.values():
                    nursery.start_soon(s._run, name=f"{self._label} stage {s.name!r}")
                try:
                    yield self.publish
                except BaseException as exc:
                    body_error = exc
                else:
                    self._closed = True
                    self._trace_flush()
                    end = ring._cursor._value
                    drained = SequenceBarrier(*ring._gating)
                    drained._label, drained._wait_kind = self._label, "drain"
                    await drained.wait_for(end)
                self._closed = True
                nursery.cancel_scope.cancel()
        finally:
            self._trace_flush()
            self._running = False
            self._closed = True
            self._scope = None
            ring._room.unpark_all()
        if self._error is not None:
            raise self._error
        if body_error is not None:
            raise body_error

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._closed = True
        for s in self._stages.values():
            s.barrier.alert()
        self.ring._room.unpark_all()
        if self._scope is not None:
            self._scope.cancel()

    def _closed_error(self) -> trio.ClosedResourceError:
        if self._error is not None:
            return trio.ClosedResourceError(f"{self._label} stopped: a stage failed")
        return trio.ClosedResourceError(
            f"{self._label} is not running; publish inside 'async with pipe.run() as publish:'"
        )

    async def publish(self, event: Any) -> None:
        """Put ``event`` into the ring and make it visible to the stages.

        Always a checkpoint, as every trio ``async`` method: a cancel point (if cancelled,
        nothing was published) and a schedule point, so the stages get to run. When the ring
        is full it waits for the final stages to make room. Raises
        :class:`trio.ClosedResourceError` outside ``run()`` or after a stage failed.

        A producer that has many events at hand and wants the stages to take them as one
        batch uses :meth:`publish_nowait` (or :meth:`publish_many`) for all but the last.
        """
        await checkpoint_if_cancelled()
        if self._closed:
            raise self._closed_error()
        ring = self.ring
        hi = ring._claimed + 1
        if hi - ring._size > ring._gating_cache and not ring._has_room(hi):
            await self._wait_for_room(1)  # blocked: that was the schedule point
            self._put(ring._claimed + 1, event)
        else:
            self._put(hi, event)
            await cancel_shielded_checkpoint()

    @enable_ki_protection
    def publish_nowait(self, event: Any) -> None:
        """Publish ``event`` without yielding; raise :class:`InsufficientCapacity` (a
        :class:`trio.WouldBlock`) when the ring is full.

        Never a checkpoint: the stages see the event the next time this task yields. That is
        how a producer hands the stages a whole batch at once (each stage then wakes once and
        advances its sequence once for all of it)::

            for event in burst:
                try:
                    pipe.publish_nowait(event)
                except trio.WouldBlock:
                    await pipe.publish(event)  # full: wait for room
            await trio.lowlevel.checkpoint()  # let the stages run
        """
        if self._closed:
            raise self._closed_error()
        ring = self.ring
        hi = ring._claimed + 1
        if hi - ring._size > ring._gating_cache and not ring._has_room(hi):
            raise InsufficientCapacity(
                f"{self._label} is full ({ring._size} events not yet through its final stages)"
            )
        # self._put(hi, event), inlined: this is the producer's hot path.
        ring._claimed = hi
        ring._entries[hi & ring._mask] = event
        cursor = ring._cursor
        if cursor._pending:
            cursor._complete_range(hi, hi)
        else:
            cursor._value = hi
            if cursor._armed:
                cursor._advance(hi)
        if self._trace_from is None:
            rec = _RECORDER.get()
            if rec is not None:
                self._trace_start(rec, hi)

    @enable_ki_protection
    def _put(self, hi: int, event: Any) -> None:
        """Store ``event`` at claimed-next sequence ``hi`` and advance the cursor to it."""
        ring = self.ring
        ring._claimed = hi
        ring._entries[hi & ring._mask] = event
        cursor = ring._cursor
        if cursor._pending:
            cursor._complete_range(hi, hi)
        else:
            cursor._value = hi
            if cursor._armed:
                cursor._advance(hi)
        if self._trace_from is None:
            rec = _RECORDER.get()
            if rec is not None:
                self._trace_start(rec, hi)

    async def publish_many(self, events: Iterable[Any]) -> int:
        """Publish every event of ``events`` in order; return how many.

        Claims as many slots at a time as the ring has free and publishes them as one range,
        so the stages wake once per range. Like :meth:`publish` it is always a checkpoint
        (one per call, however many events). If cancelled while waiting for room, the events
        published so far stay published.
        """
        if not isinstance(events, Iterable):
            raise TypeError(f"events must be an iterable, got {type(events).__name__}")
        it = iter(events)
        await checkpoint_if_cancelled()
        if self._closed:
            raise self._closed_error()
        ring = self.ring
        entries, mask, cursor = ring._entries, ring._mask, ring._cursor
        count = 0
        done = False
        waited = False
        while not done:
            free = ring.remaining_capacity()
            if free == 0:
                await self._wait_for_room(1)
                waited = True
                continue
            lo = ring._claimed + 1
            hi = lo - 1
            # zip stops at the range first, so no event is taken beyond the free slots.
            for hi, event in zip(range(lo, lo + free), it, strict=False):
                entries[hi & mask] = event
            if hi - lo + 1 < free:
                done = True
            if hi < lo:
                break
            ring._claimed = hi
            cursor._complete_range(lo, hi)
            count += hi - lo + 1
            if self._trace_from is None:
                rec = _RECORDER.get()
                if rec is not None:
                    self._trace_start(rec, lo)
        if not waited:
            await cancel_shielded_checkpoint()
        return count

    def _trace_start(self, rec: Recorder, first: int) -> None:
        self._trace_from = first
        self._trace_task = current_task()
        self._trace_rec = rec

    def _trace_flush(self) -> None:
        """Record the publishes since the last flush as one claim and one publish range."""
        lo, rec, task = self._trace_from, self._trace_rec, self._trace_task
        if lo is None or rec is None or task is None:
            return
        self._trace_from = self._trace_rec = self._trace_task = None
        cursor = self.ring._cursor._value
        hi = self.ring._claimed
        rng: dict[str, Any] = {"sequence": hi} if lo == hi else {"lo": lo, "sequence": hi}
        rec.record(task, self._label, "claim", rng)
        rec.record(task, self._label, "publish", {**rng, "cursor": cursor})

    async def _wait_for_room(self, n: int) -> None:
        self._trace_flush()
        await self.ring._wait_for_room(n, lambda: self._closed)
        if self._closed:
            raise self._closed_error()

    def statistics(self) -> PipelineStatistics:
        return PipelineStatistics(
            size=self.ring._size,
            cursor=self.ring._cursor._value,
            stages=tuple(s.statistics() for s in self._stages.values()),
            producers_waiting=len(self.ring._room),
            running=self._running,
        )

    def _describe_wait(self) -> str:
        stages = ", ".join(f"{s.name} at {s.sequence._value}" for s in self._stages.values())
        return (
            f"{self._label} (size {self.ring._size}, cursor {self.ring._cursor._value}; "
            f"stages: {stages})"
        )
