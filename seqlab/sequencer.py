"""Sequencer and Dispatcher: run submitted work one task at a time, in order, and fairly.

A :class:`Sequencer` is a facade over some execution capacity. You hand it functions; it runs
them one at a time (never overlapping, not even across their ``await``\\ s), in exactly the order
they were submitted. State that only sequenced tasks touch needs no lock: the sequencer *is*
the lock, and a queue in front of it.

A :class:`Dispatcher` is that execution capacity: a fixed number of worker tasks shared by
every sequencer opened on it, plus plain tasks submitted to it directly. The dispatcher serves
its sequencers round-robin, one task per turn, so no sequencer can monopolise a worker.

Two classic attempts at this pattern fail, and this module is built to avoid both:

* A *draining loop* (one runner that pops tasks until the queue is empty) is ordered and
  sequential but unfair: while it drains, nothing else gets a turn. Here every worker goes back
  to the scheduler (a checkpoint) after each single task, and a sequencer with more work goes to
  the back of the line behind any other sequencer that is waiting.
* A *continuation chain* (dispatch task N+1 only when task N has finished) is fair but slow,
  because each task pays a full trip through the scheduler before it is even queued. Here a
  task is queued at once; the worker that finishes one task picks the next without any hand-off.
"""

from __future__ import annotations

import inspect
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import CoroutineType, TracebackType
from typing import Any, Generic, TypeVar

import outcome
import trio
from trio.lowlevel import enable_ki_protection

from ._traps import cancel_shielded_checkpoint as _yield_turn
from .trace import _RECORDER, DeferredRun, Recorder, clock_reader, shape

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

__all__ = [
    "Dispatcher",
    "DispatcherStatistics",
    "Sequencer",
    "SequencerStatistics",
    "TaskCancelledError",
    "Ticket",
    "open_dispatcher",
    "open_sequencer",
]

T = TypeVar("T")

_QUEUED, _RUNNING, _DONE, _FAILED, _CANCELLED = range(5)
_STATE_NAMES = ("queued", "running", "done", "failed", "cancelled")
# The hot-path trace events (Recorder.add). A dispatcher's own tasks start and finish with
# the same kinds and keys as a sequencer's.
_SUBMIT = shape("Sequencer", "submit", ("ticket", "pending"))
_DISPATCHER_SUBMIT = shape("Dispatcher", "submit", ("ticket", "pending"))
_START = shape("Sequencer", "start", ("ticket", "delay"))
_DONE_EVENT = shape("Sequencer", "done", ("ticket", "duration"))

_current_task = trio.lowlevel.current_task
# Bound once: looking up a C method on every call costs about as much as the call itself
# (~0.05 us per submitted task).
_get_recorder = _RECORDER.get
_reschedule = trio.lowlevel.reschedule
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_Abort = trio.lowlevel.Abort

# Per-run counters for unnamed primitives ("Sequencer #2"): deterministic within a run and
# free of ids, so traces of the same seed stay byte-identical.
_LABEL_COUNTS: trio.lowlevel.RunVar[dict[str, int]] = trio.lowlevel.RunVar("seqlab_label_counts")


def _label(kind: str, name: str | None) -> str:
    if name is not None:
        return f"{kind} {name!r}"
    try:
        counts = _LABEL_COUNTS.get()
    except LookupError:
        counts = {}
        _LABEL_COUNTS.set(counts)
    counts[kind] = counts.get(kind, 0) + 1
    return f"{kind} #{counts[kind]}"


class TaskCancelledError(Exception):
    """Raised by ``await ticket`` when the ticket's task was cancelled instead of finishing.

    A task is cancelled when its sequencer's ``async with`` block is cancelled or exits with an
    error while the task is still queued (it never starts) or running (it is interrupted at its
    next checkpoint). The exception that caused it, if any, is chained as ``__cause__``.
    """


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SequencerStatistics:
    """A snapshot of a :class:`Sequencer`, from :meth:`Sequencer.statistics`.

    ``pending`` counts tasks queued but not started; ``running`` is 1 while one of its tasks
    runs. ``completed``, ``failed`` and ``cancelled`` count finished tasks by outcome.
    ``max_queue_delay`` is the longest a task waited between submission and start (seconds,
    virtual under :func:`seqlab.run`). ``blocked_submitters`` counts tasks waiting in
    :meth:`Sequencer.submit` for room.
    """

    name: str | None
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    max_queue_delay: float
    max_pending: int | None
    blocked_submitters: int
    closed: bool


@dataclass(frozen=True)
class DispatcherStatistics:
    """A snapshot of a :class:`Dispatcher`, from :meth:`Dispatcher.statistics`.

    Counts cover every task the dispatcher runs: its sequencers' and the ones submitted to
    it directly. ``running`` is how many workers are busy; ``sequencers`` how many sequencers
    are open on it.
    """

    name: str | None
    workers: int
    running: int
    pending: int
    completed: int
    failed: int
    cancelled: int
    max_queue_delay: float
    sequencers: int
    closed: bool


# --------------------------------------------------------------------------- tickets


class Ticket(Generic[T]):
    """A claim on the outcome of one submitted task.

    ``await ticket`` waits until the task has run and returns its result, or raises the
    exception it raised (:class:`TaskCancelledError` if it was cancelled). Several tasks may
    await the same ticket; each gets the outcome. ``ticket.done`` tells, without waiting,
    whether the task has finished in any way.

    Cancelling an ``await ticket`` abandons the wait only: the task stays queued and still
    runs. A failure that no one ever receives through ``await`` is raised when the
    sequencer's block exits, so an exception is never lost silently.

    Tickets cost almost nothing until someone awaits one: no event is created per task.
    They come from :meth:`Sequencer.submit_nowait` and the other submit methods only:
    ``Ticket()`` raises ``TypeError`` (a ticket made by hand would belong to no sequencer).
    """

    # Lean on purpose: 100,000 queued tasks are 100,000 live tickets, and every slot and
    # every object a ticket holds is paid again each time the cyclic GC scans it. So the
    # function's slot takes the outcome once the task has finished; the waiting tasks and
    # the failures nobody received are kept by the owner (most tickets have neither); and
    # the dispatcher's stamp is kept as a difference that is usually 0 (see _stamp_of).
    # 8 slots: 96 bytes a ticket, against 128 with a slot for each of those.
    __slots__ = (
        "_args",
        "_fn_or_result",
        "_lag",
        "_owner",
        "_queued_at",
        "_rec",
        "_state",
        "number",
    )

    _owner: Sequencer | Dispatcher
    # While queued: the function. Once finished: the return value if done, else the
    # exception (failed) or the cancellation's cause (or None).
    _fn_or_result: Any
    _args: tuple[Any, ...] | None
    _rec: Recorder | None
    #: The task's place in its sequencer's order (its dispatcher's, for a direct task),
    #: counting from 0.
    number: int
    # The dispatcher's stamp (the task's place in the dispatcher's line) minus number: 0 while
    # one sequencer is all a dispatcher serves, so usually no int object of its own.
    _lag: int
    _queued_at: float
    _state: int

    @property
    def done(self) -> bool:
        """True once the task has finished: returned, raised, or was cancelled."""
        return self._state >= _DONE

    @property
    def cancelled(self) -> bool:
        """True if the task was cancelled before it could finish."""
        return self._state == _CANCELLED

    def __repr__(self) -> str:
        return f"<Ticket {self.number} of {self._owner._label}: {_STATE_NAMES[self._state]}>"

    def __await__(self) -> Generator[Any, None, T]:
        # A generator (not the coroutine's own iterator) so deadlock reports can see this frame.
        return (yield from self._wait().__await__())

    @enable_ki_protection
    async def _wait(self) -> T:
        if self._state < _DONE:
            owner = self._owner
            _refuse_wait_from_inside(owner, self)
            task = _current_task()
            # The tasks waiting for a ticket are kept by its owner, not in a slot of every
            # ticket: most tickets are never awaited.
            waiting = owner._waiting
            if waiting is None:
                waiting = owner._waiting = {}
            waiters = waiting.get(self)
            if waiters is None:
                waiters = waiting[self] = []
            waiters.append(task)

            def abort(_: Any) -> trio.lowlevel.Abort:
                waiters.remove(task)
                if not waiters:
                    del waiting[self]
                return _Abort.SUCCEEDED

            await _wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        return self._unwrap()

    def _unwrap(self) -> T:
        state = self._state
        if state == _DONE:
            return self._fn_or_result
        error = self._fn_or_result
        if state == _FAILED:
            assert error is not None
            # Received: no longer raised at the block's exit.
            self._owner._failures.pop(self, None)
            raise error
        raise TaskCancelledError(
            f"ticket {self.number} of {self._owner._label} was cancelled before it finished"
        ) from error

    def _finish(self, state: int, value: Any, error: BaseException | None) -> bool:
        """Store the outcome and wake the tasks waiting for it; True if there were any (a
        failure then counts as received)."""
        self._state = state
        self._fn_or_result = value if state == _DONE else error
        self._args = None
        waiting = self._owner._waiting
        waiters = waiting.pop(self, None) if waiting else None
        if waiters:
            for task in waiters:
                _reschedule(task)
            return True
        return False

    def _describe_wait(self) -> str:
        return self._owner._describe(f"waiting for ticket {self.number}")


class _Ticket(Ticket[Any]):
    """The tickets the submit methods make: a :class:`Ticket` in every way, made without a
    constructor call (a Python ``__init__``, or ``object.__new__`` called with its argument
    tuple, cost every submission ~30 ns). Its ``__new__`` is ``object.__new__`` itself, which
    CPython then calls directly; and because this class has a ``__new__`` of its own, it
    keeps that one when :class:`Ticket` gets the refusing ``__new__`` below."""

    __slots__ = ()
    __new__ = object.__new__


# What traces, deadlock reports and type(ticket) call it (a wait's "on" is the class name).
_Ticket.__name__ = _Ticket.__qualname__ = "Ticket"


def _made_by_hand(cls: type, *args: Any, **kwargs: Any) -> Any:
    raise TypeError(
        "Ticket() cannot be made directly: a ticket comes from the sequencer or dispatcher "
        "that runs its task (submit_nowait, submit or call)"
    )


# Set only now, after _Ticket: set in the class body, it would be inherited by _Ticket as a
# Python-level __new__ and cost every submission a call.
setattr(Ticket, "__new__", staticmethod(_made_by_hand))  # noqa: B010 (mypy refuses the assignment)


def _new_ticket(
    owner: Sequencer | Dispatcher,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    rec: Recorder | None,
) -> Ticket[Any]:
    """A queued ticket for ``fn(*args)``; its owner then gives it a number and a stamp."""
    ticket: Ticket[Any] = _Ticket()
    ticket._owner = owner
    ticket._fn_or_result = fn
    ticket._args = args
    ticket._rec = rec
    ticket._state = _QUEUED
    return ticket


# --------------------------------------------------------------------------- the worker


async def _work(d: Dispatcher) -> None:
    """One worker: take the next task in line, run it, go back to the scheduler, repeat.

    The line is two FIFOs merged by submission stamp: sequencers that have a task ready, and
    tasks submitted to the dispatcher directly. A sequencer is in the line at most once and
    only while none of its tasks runs, which is what keeps its tasks from overlapping.

    A cancel scope per task would cost more than the checkpoint, so each worker keeps one
    scope for as long as nobody cancels it; a sequencer that must interrupt its running task
    cancels that worker's scope, and the worker goes on under a fresh one.
    """
    ready = d._ready
    jobs = d._jobs
    busy = d._busy
    interrupted = d._interrupted
    now = d._now
    run = d._run
    # A schedule point, not a cancel point: cancellation reaches a worker inside an async task
    # or while it waits for work, and whoever cancels a dispatcher or sequencer empties its
    # queue first, so a worker never needs to notice cancellation between two tasks. (The
    # one-frame form of trio.lowlevel.cancel_shielded_checkpoint: see seqlab/_traps.py.)
    yield_turn = _yield_turn
    me = _current_task()
    busy[me] = None
    # With one worker, a sequencer whose task just finished and that nobody else is in line
    # with is kept here across the yield rather than put in line and taken out again: after
    # the yield it is still first (anything that joins the line meanwhile was submitted after
    # its next task). It is then neither running nor in line; Sequencer._abort allows that.
    single = d._workers == 1
    kept: Sequencer | None = None
    try:
        while True:
            interrupted.discard(me)
            with trio.CancelScope() as scope:
                d._scopes[me] = scope
                while True:
                    seq: Sequencer | None
                    owner: Sequencer | Dispatcher
                    if kept is not None:
                        seq = owner = kept
                        kept = None
                        if not seq._queue:  # aborted while we yielded
                            continue
                        ticket = seq._queue.popleft()
                        seq._running = ticket
                        if seq._blocked:
                            seq._admit_blocked()
                    elif ready and (not jobs or ready[0]._key < _stamp_of(jobs[0])):
                        seq = owner = ready.popleft()
                        ticket = seq._queue.popleft()
                        seq._running = ticket
                        if seq._blocked:
                            seq._admit_blocked()
                    elif jobs:
                        seq = None
                        owner = d
                        ticket = jobs.popleft()
                    elif d._closed:
                        return
                    else:
                        await d._wait_for_work()
                        continue
                    busy[me] = ticket
                    ticket._state = _RUNNING
                    start = now()
                    delay = start - ticket._queued_at
                    # The owner's longest delay only: the dispatcher's is its own and its
                    # sequencers' together, taken when asked (Dispatcher._longest_delay).
                    if delay > owner._max_delay:
                        owner._max_delay = delay
                    rec = ticket._rec
                    if rec is not None:
                        (run.push if rec._pending is run else run.into(rec))(
                            (start, me, owner._label, _START, ticket.number, delay)
                        )
                    try:
                        value = ticket._fn_or_result(*ticket._args)  # type: ignore[misc]
                        if type(value) is CoroutineType:
                            value = await value
                    except Exception as exc:
                        _settle(d, owner, seq, ticket, me, start, _FAILED, None, exc)
                    except BaseException:
                        # Cancelled (by the sequencer, through our scope, or by the
                        # dispatcher's shutdown) or KeyboardInterrupt and the like.
                        _settle(d, owner, seq, ticket, me, start, _CANCELLED, None, None)
                        raise
                    else:
                        waiting = owner._waiting
                        if seq is None or (waiting and ticket in waiting):
                            _settle(d, owner, seq, ticket, me, start, _DONE, value, None)
                        else:
                            # _settle's common case, inlined: this is the hot path.
                            if rec is not None:
                                end = now()
                                (run.push if rec._pending is run else run.into(rec))(
                                    (end, me, seq._label, _DONE_EVENT, ticket.number, end - start)
                                )
                            ticket._state = _DONE
                            ticket._fn_or_result = value
                            ticket._args = None
                            seq._running = None
                            queue = seq._queue
                            if queue and single and not ready and not jobs:
                                kept = seq
                            elif queue:
                                key = _stamp_of(queue[0])
                                if ready and ready[-1]._key > key:
                                    key = ready[-1]._key
                                seq._key = key
                                ready.append(seq)
                                if d._idle:
                                    d._wake_one()
                            elif seq._drained is not None:
                                seq._drained.set()
                    await yield_turn()
                    if interrupted and me in interrupted:
                        # The interrupted task finished without meeting the cancellation
                        # (it swallowed it, or never checkpointed again): drop the cancelled
                        # scope before it hits a task that did nothing wrong.
                        interrupted.remove(me)
                        break
    except trio.Cancelled:
        # The dispatcher is shutting down and has already accounted for every task.
        return
    finally:
        del busy[me]
        del d._scopes[me]
        d._live_workers -= 1
        if d._live_workers == 0:
            d._stopped.set()


def _stamp_of(ticket: Ticket[Any]) -> int:
    """The ticket's place in its dispatcher's line: what orders it against other sequencers'
    tasks and the dispatcher's own (a ticket keeps only the difference from its number)."""
    return ticket.number + ticket._lag


def _settle(
    d: Dispatcher,
    owner: Sequencer | Dispatcher,
    seq: Sequencer | None,
    ticket: Ticket[Any],
    me: trio.lowlevel.Task,
    start: float,
    state: int,
    value: Any,
    error: BaseException | None,
) -> None:
    """Book a finished task, hand over its outcome, and put its sequencer back in line.

    Completed tasks are not counted here: :meth:`Sequencer.statistics` and
    :meth:`Dispatcher.statistics` derive that count from the others
    (``Sequencer._count_completed``, ``Dispatcher._counts``).
    """
    if state == _FAILED:
        owner._failed += 1
        if seq is not None:
            d._failed += 1
    elif state == _CANCELLED:
        owner._cancelled += 1
        if seq is not None:
            d._cancelled += 1
    rec = ticket._rec
    if rec is not None:
        data: dict[str, Any] = {"ticket": ticket.number, "duration": d._now() - start}
        if state == _FAILED:
            data["error"] = f"{type(error).__name__}: {error}"
        rec.record(me, owner._label, _STATE_NAMES[state], data)
    if state == _CANCELLED:
        error = owner._cancel_reason
    received = ticket._finish(state, value, error)
    if state == _FAILED and not received:
        owner._failures[ticket] = None
    if seq is not None:
        seq._running = None
        queue = seq._queue
        if queue:
            # Back in line at its next task's place, but never ahead of another sequencer
            # already waiting: one task per turn, round-robin.
            key = _stamp_of(queue[0])
            ready = d._ready
            if ready and ready[-1]._key > key:
                key = ready[-1]._key
            seq._key = key
            ready.append(seq)
            if d._idle:
                d._wake_one()
        elif seq._drained is not None:
            seq._drained.set()


# --------------------------------------------------------------------------- Sequencer


class Sequencer:
    """Runs the tasks you submit one at a time, in submission order, fairly.

    Get one from :func:`open_sequencer`::

        async with seqlab.open_sequencer(name="db") as seq:
            seq.submit_nowait(write, "a")           # queued; returns a Ticket
            ticket = await seq.submit(write, "b")   # waits for room if max_pending is set
            value = await seq.call(read)            # runs after both writes; returns the result
            await ticket                            # result of write("b"), or its exception

    Guarantees:

    * **Sequential**: a task starts only after the previous one has finished, including every
      ``await`` inside an async task. Data touched only by one sequencer's tasks needs no lock.
    * **Ordered**: tasks run in the order they were submitted.
    * **Isolated failures**: a task's exception belongs to its :class:`Ticket`; later tasks
      still run. A failure that nobody awaited is raised when the ``async with`` block exits
      (the exception itself if there is one, an :class:`ExceptionGroup` if several), so no
      error is ever lost silently.
    * **Fair**: after each task the worker goes back to the trio scheduler, and the sequencer
      goes to the back of its dispatcher's line; it never drains its whole queue in one go.

    ``fn`` may be a plain function or an async function (anything whose call returns a
    coroutine is awaited). It runs in a worker task of the sequencer's :class:`Dispatcher`,
    not in the submitting task.

    Closing and exit: :meth:`close` refuses new work (``trio.ClosedResourceError``) but lets
    queued tasks run. Leaving the block closes the sequencer and waits for its queue to drain.

    Cancellation: if the block is cancelled or raises, tasks still queued are cancelled (never
    started), a running async task is cancelled at its next checkpoint, each is recorded as a
    ``cancelled`` trace event and counted in :meth:`statistics`, and awaiting their tickets
    raises :class:`TaskCancelledError`. Cancelling a task that waits on a ticket, in
    :meth:`call` or in :meth:`submit` abandons only that wait (a blocked :meth:`submit`
    submits nothing).

    Not to be confused with :class:`trio.testing.Sequencer`, a test helper that forces
    *existing* tasks through a chosen interleaving (``async with seq(0):``). This one is an
    executor: you hand it work, and it decides when the work runs.
    """

    __slots__ = (
        "__weakref__",
        "_blocked",
        "_cancel_reason",
        "_cancelled",
        "_closed",
        "_dispatcher",
        "_drained",
        "_failed",
        "_failures",
        "_gate",
        "_key",
        "_label",
        "_limit",
        "_max_delay",
        "_max_pending",
        "_name",
        "_next_number",
        "_queue",
        "_running",
        "_waiting",
    )

    def __init__(
        self, dispatcher: Dispatcher, name: str | None, max_pending: int | None, label: str
    ) -> None:
        """Private: use :func:`open_sequencer`."""
        self._dispatcher = dispatcher
        self._name = name
        self._max_pending = max_pending
        self._limit = sys.maxsize if max_pending is None else max_pending
        # submit_nowait's one test: len(queue) >= _gate means "refuse" (full, or closed: then
        # _gate is 0). Kept equal to _limit while open; close() and the dispatcher's close()
        # set it to 0.
        self._gate = self._limit
        self._label = label
        self._queue: deque[Ticket[Any]] = deque()
        self._running: Ticket[Any] | None = None
        self._key = 0
        # Submitters waiting for room, first come first served. Usually empty: a list (56
        # bytes) rather than a deque (624), which matters with many sequencers.
        self._blocked: list[tuple[trio.lowlevel.Task, Ticket[Any]]] = []
        self._closed = False
        self._next_number = 0
        self._failed = 0
        self._cancelled = 0
        self._max_delay = 0.0
        # Failed tickets whose exception nobody has received yet, in order (raised at exit).
        self._failures: dict[Ticket[Any], None] = {}
        # Tickets someone awaits -> the tasks waiting (made on the first wait).
        self._waiting: dict[Ticket[Any], list[trio.lowlevel.Task]] | None = None
        self._drained: trio.Event | None = None
        self._cancel_reason: BaseException | None = None

    @property
    def name(self) -> str | None:
        """The name given to :func:`open_sequencer`, shown in traces and deadlock reports."""
        return self._name

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher whose workers run this sequencer's tasks."""
        return self._dispatcher

    @property
    def max_pending(self) -> int | None:
        """How many tasks may wait unstarted before :meth:`submit` waits (``None``: no limit)."""
        return self._max_pending

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the block exited)."""
        return self._closed

    def __repr__(self) -> str:
        return f"<{self._describe()}>"

    @enable_ki_protection
    def submit_nowait(self, fn: Callable[..., Any], *args: Any) -> Ticket[Any]:
        """Queue ``fn(*args)`` to run after every task submitted before it; never blocks.

        Returns its :class:`Ticket`. Raises ``trio.WouldBlock`` when ``max_pending`` tasks are
        already waiting to start, and ``trio.ClosedResourceError`` after :meth:`close`.
        """
        if not callable(fn):
            _bad_fn(fn)
        queue = self._queue
        if len(queue) >= self._gate:
            if self._closed or self._dispatcher._closed:
                raise self._closed_error()
            raise trio.WouldBlock
        rec = _get_recorder()
        # _enqueue and Ticket.__init__, inlined: this is the hot path.
        d = self._dispatcher
        number = self._next_number
        self._next_number = number + 1
        stamp = d._stamp
        d._stamp = stamp + 1
        ticket: Ticket[Any] = _Ticket()
        ticket._owner = self
        ticket._fn_or_result = fn
        ticket._args = args
        ticket._rec = rec
        ticket.number = number
        ticket._lag = stamp - number
        ticket._queued_at = queued_at = d._now()
        ticket._state = _QUEUED
        queue.append(ticket)
        if len(queue) == 1 and self._running is None:
            self._key = stamp
            d._ready.append(self)
            if d._idle:
                d._wake_one()
        if rec is not None:
            run = d._run
            (run.push if rec._pending is run else run.into(rec))(
                (queued_at, _current_task(), self._label, _SUBMIT, number, len(queue))
            )
        return ticket

    @enable_ki_protection
    async def submit(self, fn: Callable[..., Any], *args: Any) -> Ticket[Any]:
        """Queue ``fn(*args)`` like :meth:`submit_nowait`, waiting for room if the queue is full.

        Submitters that wait are admitted first come, first served, each as soon as a queued
        task starts. Cancelling the wait submits nothing. If the sequencer is closed while
        you wait, raises ``trio.ClosedResourceError``.
        """
        if not callable(fn):
            _bad_fn(fn)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed or self._dispatcher._closed:
            raise self._closed_error()
        rec = _get_recorder()
        ticket = _new_ticket(self, fn, args, rec)
        task = _current_task()
        if len(self._queue) < self._limit:
            self._enqueue(ticket, task)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return ticket
        entry = (task, ticket)
        self._blocked.append(entry)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._blocked.remove(entry)
            return _Abort.SUCCEEDED

        await _wait_task_rescheduled(abort)
        return ticket

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit ``fn(*args)`` (waiting for room if needed) and return its result.

        Raises whatever the task raised. Calling this from inside a task of the same
        sequencer would wait forever, so it raises ``RuntimeError`` instead.
        """
        _refuse_wait_from_inside(self, None)
        ticket = await self.submit(fn, *args)
        return await ticket

    @enable_ki_protection
    def close(self) -> None:
        """Refuse new submissions from now on; queued tasks still run.

        Tasks blocked in :meth:`submit` get ``trio.ClosedResourceError``. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._gate = 0
        while self._blocked:
            task, _ = self._blocked.pop(0)
            _reschedule(task, outcome.Error(self._closed_error()))

    def statistics(self) -> SequencerStatistics:
        """A snapshot of queue length, outcome counts and the longest queue delay so far."""
        return SequencerStatistics(
            name=self._name,
            pending=len(self._queue),
            running=0 if self._running is None else 1,
            completed=self._count_completed(),
            failed=self._failed,
            cancelled=self._cancelled,
            max_queue_delay=self._max_delay,
            max_pending=self._max_pending,
            blocked_submitters=len(self._blocked),
            closed=self._closed,
        )

    # -- internals

    def _count_completed(self) -> int:
        # Every numbered task is queued, running, failed, cancelled or completed: counting
        # the completed ones this way keeps a counter update off the worker's hot path.
        running = 0 if self._running is None else 1
        return self._next_number - len(self._queue) - running - self._failed - self._cancelled

    def _closed_error(self) -> trio.ClosedResourceError:
        if self._closed:
            return trio.ClosedResourceError(f"{self._label} is closed: it accepts no new tasks")
        return trio.ClosedResourceError(
            f"{self._label} cannot accept tasks: its dispatcher {self._dispatcher._label} is closed"
        )

    def _enqueue(self, ticket: Ticket[Any], task: trio.lowlevel.Task | None) -> None:
        d = self._dispatcher
        ticket.number = number = self._next_number
        self._next_number += 1
        stamp = d._stamp
        d._stamp += 1
        ticket._lag = stamp - number
        ticket._queued_at = queued_at = d._now()
        queue = self._queue
        queue.append(ticket)
        if self._running is None and len(queue) == 1:
            # The newest stamp sorts after everything already in line.
            self._key = stamp
            d._ready.append(self)
            if d._idle:
                d._wake_one()
        rec = ticket._rec
        if rec is not None:
            assert task is not None
            rec.add(queued_at, task, self._label, _SUBMIT, ticket.number, len(queue))

    def _admit_blocked(self) -> None:
        task, ticket = self._blocked.pop(0)
        self._enqueue(ticket, task)
        _reschedule(task)

    def _abort(self, reason: BaseException | None) -> None:
        """Close, cancel every queued task, and interrupt the running one."""
        self.close()
        if not isinstance(reason, trio.Cancelled):
            self._cancel_reason = reason
        d = self._dispatcher
        queue = self._queue
        if queue:
            if self._running is None and self in d._ready:  # (not there while a worker keeps it)
                d._ready.remove(self)
            cancelled = list(queue)
            queue.clear()
            for ticket in cancelled:
                _cancel_queued(d, self, ticket)
        running = self._running
        if running is None:
            if self._drained is not None:
                self._drained.set()
        else:
            d._interrupt(running)

    async def _drain(self) -> None:
        if self._queue or self._running is not None:
            self._drained = trio.Event()
            await self._drained.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _unretrieved(self) -> list[Exception]:
        return _unretrieved(self._failures, self._label)

    def _describe(self, what: str = "") -> str:
        parts = [what] if what else []
        if self._running is not None:
            parts.append(f"ticket {self._running.number} running")
        parts.append(f"{len(self._queue)} pending")
        if self._blocked:
            parts.append(f"{len(self._blocked)} submitters blocked")
        if self._closed:
            parts.append("closed")
        return f"{self._label} ({', '.join(parts)})"

    def _describe_wait(self) -> str:
        return self._describe()


def _cancel_queued(d: Dispatcher, owner: Sequencer | Dispatcher, ticket: Ticket[Any]) -> None:
    owner._cancelled += 1
    if owner is not d:
        d._cancelled += 1
    rec = ticket._rec
    if rec is not None:
        rec.record(_current_task(), owner._label, "cancelled", {"ticket": ticket.number})
    ticket._finish(_CANCELLED, None, owner._cancel_reason)


def _unretrieved(failures: dict[Ticket[Any], None], label: str) -> list[Exception]:
    """The failures that nobody received, with a note naming their tickets; forgets them."""
    errors = []
    for ticket in failures:
        error = ticket._fn_or_result
        if isinstance(error, Exception):
            if sys.version_info >= (3, 11):
                error.add_note(
                    f"seqlab: raised by ticket {ticket.number} of {label}, which nobody awaited"
                )
            errors.append(error)
    failures.clear()
    return errors


def _raise_unretrieved(errors: list[Exception], label: str) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup(
            f"{len(errors)} tasks of {label} failed and nobody awaited their tickets",
            errors,
        )


def _refuse_wait_from_inside(owner: Sequencer | Dispatcher, ticket: Ticket[Any] | None) -> None:
    """Raise instead of waiting forever for work that can only run after the waiting task."""
    d = owner if isinstance(owner, Dispatcher) else owner._dispatcher
    current = d._busy.get(_current_task())
    if current is None or current._state != _RUNNING:
        return
    if isinstance(owner, Sequencer) and current._owner is owner:
        why = "a task of a sequencer cannot wait for a later task of the same sequencer"
    elif d._workers == 1:
        why = f"{d._label} has one worker, and the waiting task is occupying it"
    else:
        return
    target = "a task it submits" if ticket is None else repr(ticket)
    raise RuntimeError(
        f"this would wait forever: ticket {current.number} of {current._owner._label} "
        f"awaits {target}, but {why}. Submit the follow-up without awaiting it, or use "
        "another sequencer or dispatcher."
    )


# --------------------------------------------------------------------------- Dispatcher


class Dispatcher:
    """Shared execution capacity: ``workers`` worker tasks that run sequencers' tasks.

    Get one from :func:`open_dispatcher` and pass it to :func:`open_sequencer`::

        async with seqlab.open_dispatcher(workers=2) as d:
            async with seqlab.open_sequencer(name="a", dispatcher=d) as a, \\
                       seqlab.open_sequencer(name="b", dispatcher=d) as b:
                ...

    Scheduling: every sequencer with a task ready waits in one line, together with tasks
    submitted to the dispatcher directly (:meth:`submit_nowait`). A free worker takes the
    first in line, runs exactly one task, and goes back to the scheduler. A sequencer with
    more work rejoins the line at its next task's submission place, but never ahead of
    another sequencer already waiting. So:

    * with ``workers=1``, no sequencer runs two tasks in a row while another has one ready
      (sequencers alternate strictly), and a single sequencer's tasks interleave with direct
      tasks in exactly the order they were submitted;
    * with ``workers=N``, up to N sequencers run at once, each still one task at a time.

    Leaving the block closes the dispatcher and waits until every queued task has run. If
    the block is cancelled or raises, queued tasks are cancelled, including those of
    sequencers still open on it. A direct task's failure that nobody awaited is raised
    at exit, as for a sequencer.
    """

    def __init__(self, workers: int, name: str | None, label: str) -> None:
        """Private: use :func:`open_dispatcher`."""
        self._workers = workers
        self._name = name
        self._label = label
        self._now: Callable[[], float] = clock_reader()
        # The traced submissions (submit_nowait), starts and completions of this dispatcher's
        # tasks, deferred while nothing else is recorded (see trace.DeferredRun): one list
        # append per event instead of a call into the recorder.
        self._run = DeferredRun(2)
        self._ready: deque[Sequencer] = deque()
        self._jobs: deque[Ticket[Any]] = deque()
        self._idle: deque[trio.lowlevel.Task] = deque()
        self._busy: dict[trio.lowlevel.Task, Ticket[Any] | None] = {}
        self._scopes: dict[trio.lowlevel.Task, trio.CancelScope] = {}
        self._interrupted: set[trio.lowlevel.Task] = set()
        self._open: dict[Sequencer, None] = {}
        self._stamp = 0
        self._next_number = 0
        self._failed = 0
        self._cancelled = 0
        self._max_delay = 0.0
        self._closed = False
        self._live_workers = workers
        self._stopped = trio.Event()
        # Failed tickets whose exception nobody has received yet, in order (raised at exit).
        self._failures: dict[Ticket[Any], None] = {}
        # Tickets someone awaits -> the tasks waiting (made on the first wait).
        self._waiting: dict[Ticket[Any], list[trio.lowlevel.Task]] | None = None
        self._cancel_reason: BaseException | None = None

    @property
    def workers(self) -> int:
        """How many tasks this dispatcher can run at the same time."""
        return self._workers

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<{self._describe()}>"

    @enable_ki_protection
    def submit_nowait(self, fn: Callable[..., Any], *args: Any) -> Ticket[Any]:
        """Queue ``fn(*args)`` as a plain task, outside any sequencer; never blocks.

        Plain tasks are not sequenced with each other when ``workers > 1``; they simply take
        their place in the dispatcher's line. Raises ``trio.ClosedResourceError`` once the
        dispatcher is closed.
        """
        if not callable(fn):
            _bad_fn(fn)
        if self._closed:
            raise trio.ClosedResourceError(f"{self._label} is closed: it accepts no new tasks")
        rec = _get_recorder()
        ticket = _new_ticket(self, fn, args, rec)
        ticket.number = number = self._next_number
        self._next_number += 1
        ticket._lag = self._stamp - number
        self._stamp += 1
        ticket._queued_at = queued_at = self._now()
        self._jobs.append(ticket)
        if self._idle:
            self._wake_one()
        if rec is not None:
            task = _current_task()
            rec.add(
                queued_at, task, self._label, _DISPATCHER_SUBMIT, ticket.number, len(self._jobs)
            )
        return ticket

    async def submit(self, fn: Callable[..., Any], *args: Any) -> Ticket[Any]:
        """:meth:`submit_nowait`, as a checkpoint (the dispatcher's own line is unbounded)."""
        if not callable(fn):
            _bad_fn(fn)
        await trio.lowlevel.checkpoint_if_cancelled()
        ticket = self.submit_nowait(fn, *args)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return ticket

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as a plain task on this dispatcher and return its result."""
        _refuse_wait_from_inside(self, None)
        ticket = await self.submit(fn, *args)
        return await ticket

    @enable_ki_protection
    def close(self) -> None:
        """Refuse new tasks, direct or from sequencers; queued tasks still run. Idempotent."""
        self._closed = True
        for seq in self._open:
            seq._gate = 0
        while self._idle:
            _reschedule(self._idle.popleft())

    def statistics(self) -> DispatcherStatistics:
        """A snapshot covering every task this dispatcher runs."""
        pending, running = self._counts()
        return DispatcherStatistics(
            name=self._name,
            workers=self._workers,
            running=running,
            pending=pending,
            # Every stamped task is pending, running, failed, cancelled or completed.
            completed=self._stamp - pending - running - self._failed - self._cancelled,
            failed=self._failed,
            cancelled=self._cancelled,
            max_queue_delay=self._longest_delay(),
            sequencers=len(self._open),
            closed=self._closed,
        )

    # -- internals

    def _longest_delay(self) -> float:
        """The longest queue delay of any task this dispatcher ran: ``_max_delay`` covers its
        direct tasks and the sequencers already closed (folded in as they close), the open
        sequencers keep their own."""
        return max(self._max_delay, max((seq._max_delay for seq in self._open), default=0.0))

    def _counts(self) -> tuple[int, int]:
        """(pending, running), counted from the queues and the workers rather than kept up to
        date on every task: statistics are rare, tasks are not."""
        pending = len(self._jobs) + sum(len(seq._queue) for seq in self._open)
        running = sum(
            1 for ticket in self._busy.values() if ticket is not None and ticket._state == _RUNNING
        )
        return pending, running

    def _interrupt(self, ticket: Ticket[Any]) -> None:
        for worker, running in self._busy.items():
            if running is ticket:
                self._scopes[worker].cancel()
                self._interrupted.add(worker)

    def _wake_one(self) -> None:
        _reschedule(self._idle.popleft())

    @enable_ki_protection
    async def _wait_for_work(self) -> None:
        task = _current_task()
        self._idle.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle.remove(task)
            return _Abort.SUCCEEDED

        await _wait_task_rescheduled(abort)

    def _abort(self, reason: BaseException | None) -> None:
        self.close()
        if not isinstance(reason, trio.Cancelled):
            self._cancel_reason = reason
        for seq in list(self._open):
            seq._abort(reason)
        jobs = list(self._jobs)
        self._jobs.clear()
        for ticket in jobs:
            _cancel_queued(self, self, ticket)
        for scope in self._scopes.values():
            scope.cancel()

    async def _drain(self) -> None:
        if self._live_workers:
            await self._stopped.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _describe(self, what: str = "") -> str:
        parts = [what] if what else []
        pending, running = self._counts()
        parts.append(f"{running} of {self._workers} workers busy")
        parts.append(f"{pending} pending")
        if self._closed:
            parts.append("closed")
        return f"{self._label} ({', '.join(parts)})"

    def _describe_wait(self) -> str:
        return self._describe()


# --------------------------------------------------------------------------- opening


def _bad_fn(fn: Any) -> None:
    if inspect.iscoroutine(fn):
        raise TypeError(
            f"fn must be a function, but got a coroutine object ({fn.__qualname__}). Pass the "
            "function and its arguments: submit_nowait(fn, x), not submit_nowait(fn(x))."
        )
    raise TypeError(f"fn must be callable (a function or async function), got {type(fn).__name__}")


def _check_count(value: Any, arg: str, none_ok: bool) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "an int or None" if none_ok else "an int"
        raise TypeError(f"{arg} must be {expected}, got {type(value).__name__} {value!r}")
    if value < 1:
        hint = " (or None for no limit)" if none_ok else ""
        raise ValueError(f"{arg} must be at least 1{hint}, got {value}")


def _check_name(name: Any) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")


def open_dispatcher(
    workers: int = 1, *, name: str | None = None
) -> AbstractAsyncContextManager[Dispatcher]:
    """Open a :class:`Dispatcher` with ``workers`` worker tasks for the block's duration.

    Example: two sequencers that share one worker take strict turns::

        async with seqlab.open_dispatcher(workers=1) as d:
            async with seqlab.open_sequencer(name="a", dispatcher=d) as a:
                async with seqlab.open_sequencer(name="b", dispatcher=d) as b:
                    for i in range(3):
                        a.submit_nowait(print, "a", i)
                        b.submit_nowait(print, "b", i)
        # prints a 0, b 0, a 1, b 1, a 2, b 2

    Exit waits until every queued task has run. Arguments are checked at once: ``workers``
    must be an int >= 1.
    """
    _check_count(workers, "workers", none_ok=False)
    _check_name(name)
    return _dispatcher_block(workers, name, None, None)


def open_sequencer(
    *,
    name: str | None = None,
    dispatcher: Dispatcher | None = None,
    max_pending: int | None = None,
) -> AbstractAsyncContextManager[Sequencer]:
    """Open a :class:`Sequencer` for the block's duration.

    ``name`` labels it in traces, statistics and deadlock reports. ``dispatcher`` shares
    workers with other sequencers; without one, the sequencer gets a private one-worker
    dispatcher that lives as long as the block. ``max_pending`` bounds how many tasks may
    wait unstarted: beyond it, :meth:`~Sequencer.submit_nowait` raises ``trio.WouldBlock``
    and :meth:`~Sequencer.submit` waits.

    Example::

        async with seqlab.open_sequencer(name="ledger") as ledger:
            for amount in (10, -5, 7):
                ledger.submit_nowait(apply, amount)
            balance = await ledger.call(read_balance)   # sees all three updates

    Exit closes the sequencer and waits for its queued tasks, then raises any task failure
    that nobody awaited (the exception itself, or an ``ExceptionGroup`` if several).
    """
    _check_name(name)
    if dispatcher is not None and not isinstance(dispatcher, Dispatcher):
        raise TypeError(
            "dispatcher must be a Dispatcher from seqlab.open_dispatcher() or None, "
            f"got {type(dispatcher).__name__}"
        )
    _check_count(max_pending, "max_pending", none_ok=True)
    if dispatcher is None:
        return _sequencer_block(name, dispatcher, max_pending)
    return _SequencerLife(dispatcher, name, max_pending)


@asynccontextmanager
async def _dispatcher_block(
    workers: int, name: str | None, label: str | None, worker_name: str | None
) -> AsyncIterator[Dispatcher]:
    d = Dispatcher(workers, name, label or _label("Dispatcher", name))
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        for i in range(workers):
            task_name = worker_name or f"{name or 'dispatcher'}-worker-{i + 1}"
            nursery.start_soon(_work, d, name=task_name)
        try:
            yield d
            d.close()
            await d._drain()
        except BaseException as exc:
            body_error = exc
            d._abort(exc)
            nursery.cancel_scope.cancel()
    errors = _unretrieved(d._failures, d._label)
    if body_error is not None:
        if errors:
            raise BaseExceptionGroup(
                f"{d._label} exited with an error, and {len(errors)} failed tasks were never "
                "awaited",
                [body_error, *errors],
            ) from None
        raise body_error
    _raise_unretrieved(errors, d._label)


@asynccontextmanager
async def _sequencer_block(
    name: str | None, dispatcher: Dispatcher | None, max_pending: int | None
) -> AsyncIterator[Sequencer]:
    """A sequencer with a private one-worker dispatcher that lives as long as the block."""
    label = _label("Sequencer", name)
    private = _dispatcher_block(1, name, f"Dispatcher of {label}", f"{name or 'sequencer'}-worker")
    async with private as d, _SequencerLife(d, name, max_pending, label) as seq:
        yield seq


class _SequencerLife(AbstractAsyncContextManager["Sequencer"]):
    """The ``async with`` of one sequencer on a dispatcher: open on entry; on exit close and
    drain, or (if the block raised or is cancelled) abort, and raise unawaited failures.

    A class rather than an ``@asynccontextmanager`` generator: a generator-based block is
    five more objects for the garbage collector per open sequencer (two async generators,
    the weak references trio keeps to them, two wrappers), which counts with 100,000
    sequencers on one dispatcher.
    """

    __slots__ = ("_dispatcher", "_label", "_max_pending", "_name", "_seq")

    def __init__(
        self, d: Dispatcher, name: str | None, max_pending: int | None, label: str | None = None
    ) -> None:
        self._dispatcher = d
        self._name = name
        self._max_pending = max_pending
        self._label = label
        self._seq: Sequencer | None = None

    async def __aenter__(self) -> Sequencer:
        d = self._dispatcher
        if self._label is None:
            if d._closed:
                raise trio.ClosedResourceError(
                    f"cannot open a sequencer on {d._label}: it is closed"
                )
            self._label = _label("Sequencer", self._name)
        seq = self._seq = Sequencer(d, self._name, self._max_pending, self._label)
        d._open[seq] = None
        return seq

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        seq = self._seq
        assert seq is not None
        try:
            if exc is not None:
                await _abort_block(seq, exc)
                return False  # the block's own exception goes on, unchanged
            try:
                seq.close()
                await seq._drain()
            except BaseException as error:
                await _abort_block(seq, error)
                raise
        finally:
            d = seq._dispatcher
            del d._open[seq]
            if seq._max_delay > d._max_delay:
                d._max_delay = seq._max_delay
        _raise_unretrieved(seq._unretrieved(), seq._label)
        return False


async def _abort_block(seq: Sequencer, exc: BaseException) -> None:
    """The block of ``seq`` ends with ``exc``: cancel its queued tasks, interrupt the running
    one and wait until it is off the worker; raise ``exc`` grouped with failures nobody
    awaited, if there are any (else return, and the caller lets ``exc`` go on)."""
    seq._abort(exc)
    if seq._running is not None:
        # Wait (immune to the cancellation that may have brought us here) until the
        # interrupted task is off the worker: none of its tasks may outlive the block.
        with trio.CancelScope(shield=True):
            await seq._drain()
    errors = seq._unretrieved()
    if errors:
        raise BaseExceptionGroup(
            f"{seq._label} exited with an error, and {len(errors)} failed tasks were never awaited",
            [exc, *errors],
        ) from None
