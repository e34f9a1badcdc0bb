"""Barriers: groups of tasks that meet at a checkpoint before any of them goes on.

:class:`Barrier` is the fixed-size, reusable meeting point (like :class:`threading.Barrier`,
:class:`asyncio.Barrier` or Java's ``CyclicBarrier``). :class:`Phaser` is its flexible
cousin from Java: parties can join and leave between phases, and a party may arrive without
waiting.

Both are built directly on :func:`trio.lowlevel.wait_task_rescheduled`, the same machinery
that :class:`trio.lowlevel.ParkingLot` uses, with the same cost per wait (one queue entry
and one abort callback). Owning the queue lets a barrier do two things a parking lot cannot:
hand each released task its index as the value it wakes up with, and update its bookkeeping
at the very moment a waiter is cancelled, so no other task can ever see a stale count.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import islice, repeat
from operator import sub as _sub
from types import TracebackType
from typing import Any

import outcome
import trio
from trio.lowlevel import enable_ki_protection

from . import _traps
from ._callables import is_async_callable
from ._outcomes import Ready, indexes
from .trace import _RECORDER, Recorder, Same, flush_deferred, shape

__all__ = [
    "Barrier",
    "BarrierStatistics",
    "BrokenBarrierError",
    "Phaser",
    "PhaserStatistics",
]

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
# trio's own, one frame shorter (seqlab/_traps.py): a parked party keeps one object less
# alive for the cyclic GC to scan, which counts with 100,000 parties.
_cancel_shielded_checkpoint = _traps.cancel_shielded_checkpoint
_wait_task_rescheduled = _traps.wait_task_rescheduled
_park = _traps.park
_park_message = _traps.park_message
_current_task = trio.lowlevel.current_task
_reschedule = trio.lowlevel.reschedule
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_Value = outcome.Value
_Error = outcome.Error
# The hot-path trace events (Recorder.add).
_ARRIVE = shape("Barrier", "arrive", ("generation", "index", "n_waiting", "parties"))
_RELEASE = shape("Barrier", "release", ("generation", "index", "waited", "by"))
_RELEASE_UNTIMED = shape("Barrier", "release", ("generation", "index", "by"))


class BrokenBarrierError(trio.BrokenResourceError):
    """Raised by a :class:`Barrier` that is broken, or that broke while the task waited.

    A barrier breaks when :meth:`Barrier.abort` is called, when :meth:`Barrier.reset` breaks
    the tasks waiting at it out, or when its ``action`` raises. It is a subclass of
    :class:`trio.BrokenResourceError`, so code that already handles broken trio resources
    handles a broken barrier too.
    """


def _check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")


def _check_callback(value: object, argument: str, signature: str) -> None:
    if value is None:
        return
    if not callable(value):
        raise TypeError(
            f"{argument} must be a plain function called as {signature}, or None; "
            f"got {type(value).__name__} {value!r}"
        )
    if is_async_callable(value):
        raise TypeError(
            f"{argument} must be a plain (non-async) function: it runs synchronously, "
            f"before any waiting task is released. Got the async function {value!r}; "
            "do the async work after the barrier instead, e.g. in the task that gets the "
            "last index."
        )


def _label(kind: str, name: str | None) -> str:
    return kind if name is None else f"{kind} {name!r}"


@dataclass(frozen=True, slots=True)
class BarrierStatistics:
    """What a :class:`Barrier` looks like right now (see :meth:`Barrier.statistics`).

    * ``parties``: how many tasks must arrive to release a generation.
    * ``n_waiting``: how many tasks are waiting in the generation that is filling.
    * ``broken``: whether the barrier is broken (waits raise :class:`BrokenBarrierError`).
    * ``generation``: the number of the generation that is filling (starts at 0).
    """

    parties: int
    n_waiting: int
    broken: bool
    generation: int


def _leave(
    barrier: Barrier, task: trio.lowlevel.Task, rec: Recorder | None, _: object
) -> trio.lowlevel.Abort:
    """A waiting party's abort function: it is cancelled, so it leaves the filling generation."""
    if barrier._deferred_in is not None:
        flush_deferred(barrier)  # deferred arrivals' indexes are their places in _waiters
    del barrier._waiters[task]
    # Cancellation may be delivered from outside any task (a deadline expiring), so
    # use the recorder that was active when this task arrived.
    if rec is not None:
        rec.record(
            task,
            barrier._label,
            "leave",
            {"generation": barrier._generation, "n_waiting": len(barrier._waiters)},
        )
    return _SUCCEEDED


def _leave_parked(
    barrier_ref: Callable[[], Barrier | None],
    task_ref: Callable[[], trio.lowlevel.Task | None],
    _: object,
) -> trio.lowlevel.Abort:
    """A waiting party's kept abort function (see ``Barrier._park_message``). It holds the
    barrier and the task weakly; the parked task holds both, so they are alive. The recorder
    is the one in the task's context, which cannot change while the task is parked: the one
    active when it arrived (None if none was)."""
    barrier, task = barrier_ref(), task_ref()
    assert barrier is not None and task is not None
    return _leave(barrier, task, task.context.get(_RECORDER), _)


def _leave_phaser(phaser: Phaser, task: trio.lowlevel.Task, _: object) -> trio.lowlevel.Abort:
    del phaser._waiters[task]
    return _SUCCEEDED


class Barrier:
    """A meeting point for a fixed number of tasks, reusable for phase after phase.

    Each task that calls :meth:`wait` blocks until ``parties`` tasks have called it; then
    all of them are released together and the barrier is ready for the next *generation*.
    Use it when a group of tasks must all finish one phase of work before any of them
    starts the next::

        barrier = seqlab.Barrier(3, name="phase")

        async def worker(results, i):
            results[i] = await compute(i)        # phase 1
            await barrier.wait()                 # every result is in now
            await combine(results)               # phase 2

    **Indexes.** :meth:`wait` returns the task's arrival index: in every generation the
    released tasks get exactly ``0, 1, ..., parties - 1``, once each, in the order they
    arrived. The last to arrive gets ``parties - 1``, so ``if await barrier.wait() == 0:``
    picks exactly one task per phase for a special job. ``async with barrier as i:`` is the
    same as ``i = await barrier.wait()``.

    **Action.** ``action`` is a plain function that the last arriving task calls, exactly
    once per generation, before anyone is released: a good place to merge results or log
    the end of a phase, with everybody still parked. If it raises, the barrier breaks: the
    last arriver gets the action's exception and every waiting task gets
    :class:`BrokenBarrierError`.

    **Extra arrivals.** With ``parties=2`` and three tasks, the third waits for the next
    generation; it is never released with the first two.

    **Cancellation.** A task cancelled while the barrier fills simply leaves: it is no
    longer counted, the barrier is not broken, and the tasks that arrived after it move up
    one index. Once a generation is released, its tasks are no longer cancellable at the
    barrier: each returns its index (trio's rule: an operation that happened is not undone).

    **Timeouts** are trio cancel scopes. ``with trio.fail_after(5): await barrier.wait()``
    gives up waiting and leaves the others waiting. When a timeout means the whole group
    has failed (like :class:`threading.Barrier`), let the first task that times out abort
    the barrier, so every other task fails too instead of waiting forever::

        try:
            with trio.fail_after(5):
                await barrier.wait()
        except trio.TooSlowError:
            barrier.abort()          # the others get BrokenBarrierError
            raise

    **Breaking and repairing.** :meth:`abort` breaks the barrier: waiting tasks and every
    later caller get :class:`BrokenBarrierError` until :meth:`reset`, which breaks the
    current waiters out too and makes the barrier usable again, starting a new generation.

    Args:
      parties (int): how many tasks make up a generation; at least 1.
      action: a plain function called with no arguments when a generation is complete.
      name (str): a name for traces and deadlock reports ("Barrier 'phase'").
    """

    __slots__ = (
        "__weakref__",
        "_action",
        "_broken",
        "_deferred_from",
        "_deferred_in",
        "_generation",
        "_label",
        "_outcomes",
        "_parked",
        "_parties",
        "_reason",
        "_waiters",
    )

    def __init__(
        self,
        parties: int,
        *,
        action: Callable[[], object] | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int):
            raise TypeError(
                f"parties must be an int (how many tasks meet at the barrier), "
                f"got {type(parties).__name__} {parties!r}"
            )
        if parties < 1:
            raise ValueError(f"parties must be at least 1, got {parties}")
        _check_callback(action, "action", "action()")
        _check_name(name)
        self._parties = parties
        self._action = action
        self._label = _label("Barrier", name)
        # The tasks waiting in the filling generation, in arrival order. Their value is the
        # arrival time when a recorder was active, else None.
        self._waiters: dict[trio.lowlevel.Task, float | None] = {}
        self._outcomes: list[Ready[int]] = []
        # Parties park with a message made once per task (seqlab._traps.park) and kept
        # here by the task's number, so that a wait allocates almost nothing (see
        # _park_message).
        self._parked: dict[int, Any] = {}
        self._generation = 0
        self._broken = False
        self._reason = ""
        # Traced arrivals are deferred (Recorder.defer): while this barrier is the pending
        # owner of the recorder a party arrives with, the arrival's event is only its entry
        # in _waiters (its time is kept there anyway), and the arrivals from place
        # _deferred_from on are staged in one call when the trace needs them: at the
        # release, usually. An arrival's index is its place in _waiters, so anything that
        # takes a waiter out flushes them first. _deferred_in is the recorder (weakly).
        self._deferred_in: Any = None
        self._deferred_from = 0

    def __repr__(self) -> str:
        state = "broken" if self._broken else f"{len(self._waiters)} of {self._parties} arrived"
        return f"<{self._label}: generation {self._generation}, {state}>"

    @property
    def parties(self) -> int:
        """How many tasks must arrive to release a generation."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """How many tasks are waiting in the generation that is filling."""
        return len(self._waiters)

    @property
    def broken(self) -> bool:
        """True after :meth:`abort` or a failed action, until :meth:`reset`."""
        return self._broken

    @property
    def generation(self) -> int:
        """The number of the generation that is filling.

        It starts at 0 and goes up by one each time a generation is released and each time
        :meth:`reset` is called. Breaking the barrier does not change it.
        """
        return self._generation

    def statistics(self) -> BarrierStatistics:
        """Return a :class:`BarrierStatistics` snapshot: parties, n_waiting, broken, generation."""
        return BarrierStatistics(
            parties=self._parties,
            n_waiting=len(self._waiters),
            broken=self._broken,
            generation=self._generation,
        )

    def _describe_wait(self) -> str:
        if self._broken:
            return f"{self._label} (broken)"
        return f"{self._label} ({len(self._waiters)} of {self._parties} arrived)"

    async def __aenter__(self) -> int:
        return await self.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    @enable_ki_protection
    async def wait(self) -> int:
        """Wait until ``parties`` tasks are waiting, then return this task's arrival index.

        The indexes of one generation are ``0 .. parties - 1`` in arrival order; the last
        arriver gets ``parties - 1`` and runs the ``action`` before anyone is released.

        If the task is cancelled before its generation is released, it leaves the barrier
        without breaking it; once released, it always returns its index.

        A Ctrl-C never lands half way: the method runs protected from KeyboardInterrupt (as
        trio's ``ParkingLot.park`` does), so a task is never left counted but not parked, nor
        a generation released in part; the interrupt reaches a waiting task where it parks.

        Raises:
          BrokenBarrierError: if the barrier is broken, or breaks while this task waits.
          Exception: whatever the ``action`` raised, in the task that ran it.
        """
        await _checkpoint_if_cancelled()
        if self._broken:
            raise BrokenBarrierError(self._broken_message())
        rec = _RECORDER.get()
        waiters = self._waiters
        if len(waiters) + 1 == self._parties:
            if rec is not None:
                self._record_last_arrival(rec)
            elif self._deferred_in is not None:
                flush_deferred(self)  # the release empties _waiters
            if self._action is not None:
                self._run_action(rec)
            # Release: each waiter wakes up with its index, in arrival order.
            if rec is None:
                outcomes = self._outcomes or self._make_outcomes()
                list(map(_reschedule, waiters, outcomes))
            else:
                self._release_recorded(rec)
            waiters.clear()
            self._generation += 1
            await _cancel_shielded_checkpoint()
            return self._parties - 1

        task = _current_task()
        if rec is None:
            waiters[task] = None
        elif rec._pending is self or self._defer_arrivals(rec):
            waiters[task] = rec.clock()  # the arrival's event, deferred (see __init__)
        else:
            index = len(waiters)
            waiters[task] = t = rec.clock()
            rec.add(
                t, task, self._label, _ARRIVE, self._generation, index, index + 1, self._parties
            )
        message = self._parked.get(task._counter) or self._park_message(task)
        my_index: int = await _park(message)
        return my_index

    def _park_message(self, task: trio.lowlevel.Task) -> Any:
        """Make (and keep) what ``task`` parks with when it waits, traced or not.

        Parties usually wait at the same barrier phase after phase, so each one's message
        (trio's ``WaitTaskRescheduled`` and the abort function it carries) is made once and
        reused: the wait then allocates nothing but its coroutines, for speed and so that the
        garbage collector has fewer objects to scan per parked party. Tasks come and go, so
        the store is cut back to the tasks waiting now whenever it reaches twice the parties:
        it never holds more than that.

        It is kept by ``task._counter``, the number trio gives each task (unique in the
        process), and holds the task weakly: a traced task's context holds its recorder, so
        keeping tasks would keep finished traces alive for as long as the barrier lives.
        """
        parked = self._parked
        if len(parked) >= 2 * self._parties:
            numbers = [t._counter for t in self._waiters]
            parked = self._parked = {k: parked[k] for k in numbers if k in parked}
        ref = weakref.ref
        message = _park_message(partial(_leave_parked, ref(self), ref(task)))
        parked[task._counter] = message
        return message

    def _defer_arrivals(self, rec: Recorder) -> bool:
        """Become ``rec``'s pending owner, deferring the arrivals from the next one on (see
        ``__init__``); False if ``rec`` records every event at once."""
        if rec.defer(self):
            self._deferred_from = len(self._waiters)
            return True
        return False

    def _stage_deferred(self, rec: Recorder) -> None:
        """Stage the deferred arrivals (``Recorder.defer`` calls this): one event per entry
        of ``_waiters`` from ``_deferred_from`` on, its time the entry's value and its index
        its place. An entry without a time arrived untraced: it records nothing."""
        waiters, start = self._waiters, self._deferred_from
        n = len(waiters) - start
        if n <= 0:
            return
        generation, parties, label = self._generation, self._parties, self._label
        if start:
            tasks = list(islice(waiters, start, None))
            times: list[Any] = list(islice(waiters.values(), start, None))
        else:
            tasks, times = list(waiters), list(waiters.values())
        if all(times):  # (a time of exactly 0.0 merely takes the careful path)
            end = start + n
            columns = (Same(generation), range(start, end), range(start + 1, end + 1))
            rec._stage(times, tasks, label, _ARRIVE, (*columns, Same(parties)))
            return
        for index, (task, t) in enumerate(zip(tasks, times, strict=True), start):
            if t is not None:
                rec.add(t, task, label, _ARRIVE, generation, index, index + 1, parties)

    def _record_last_arrival(self, rec: Recorder) -> None:
        parties = self._parties
        task, generation = _current_task(), self._generation
        t = rec.clock()
        if rec._pending is self:
            # Staged with the deferred arrivals, in the same call.
            waiters = self._waiters
            waiters[task] = t
            rec._flush()
            del waiters[task]
            return
        if self._deferred_in is not None:
            flush_deferred(self)  # pending in another recorder: the release empties _waiters
        rec.add(t, task, self._label, _ARRIVE, generation, parties - 1, parties, parties)

    def _run_action(self, rec: Recorder | None) -> None:
        assert self._action is not None
        generation = self._generation
        if rec is not None:
            rec.record(_current_task(), self._label, "action", {"generation": generation})
        try:
            result = self._action()
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    f"the action of {self._label} returned an awaitable: it must be a plain "
                    "function that does its work synchronously"
                )
        except BaseException as exc:
            self._break(f"its action raised {type(exc).__name__}: {exc}")
            raise
        if self._broken or self._generation != generation:
            # The action itself called abort() or reset(): this generation is over.
            raise BrokenBarrierError(
                f"{self._label} was aborted or reset by its own action; nobody was released"
            )

    def _make_outcomes(self) -> list[Ready[int]]:
        # One reusable outcome per arrival index: releasing allocates nothing.
        self._outcomes = indexes(self._parties)
        return self._outcomes

    def _release_recorded(self, rec: Recorder) -> None:
        outcomes = self._outcomes or self._make_outcomes()
        now = rec.clock()
        me = _current_task()
        by = rec.label(me)  # the last arriver releases everyone
        generation, label, waiters = self._generation, self._label, self._waiters
        # Some arrived while no recorder was active? (all() is the cheap test: it compares
        # nothing; an arrival at exactly 0.0 merely takes the careful path.)
        if not all(waiters.values()):
            for index, (task, arrived) in enumerate(waiters.items()):
                if arrived is None:
                    rec.add(now, task, label, _RELEASE_UNTIMED, generation, index, by)
                else:
                    rec.add(now, task, label, _RELEASE, generation, index, now - arrived, by)
            rec.add(now, me, label, _RELEASE, generation, self._parties - 1, 0.0, by)
        else:
            # One event per party, the last arriver's (it waited 0.0) included, all in one
            # call: no Python code runs per waiter.
            tasks = list(waiters)
            tasks.append(me)
            waited = list(map(_sub, repeat(now), waiters.values()))
            waited.append(0.0)
            n = len(tasks)
            rec.add_many(now, tasks, label, _RELEASE, Same(generation), range(n), waited, Same(by))
        list(map(_reschedule, waiters, outcomes))

    def _broken_message(self) -> str:
        return f"{self._label} is broken ({self._reason}); call reset() to make it usable again"

    def _break(self, reason: str) -> None:
        """Break the barrier and throw BrokenBarrierError into every waiting task."""
        self._broken = True
        self._reason = reason
        self._throw_out_waiters(f"{self._label} broke while this task waited: {reason}")
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(
                _current_task(),
                self._label,
                "broken",
                {"generation": self._generation, "reason": reason},
            )

    def _throw_out_waiters(self, message: str) -> int:
        if self._deferred_in is not None:
            flush_deferred(self)
        waiters = list(self._waiters)
        self._waiters.clear()
        for task in waiters:
            _reschedule(task, _Error(BrokenBarrierError(message)))
        return len(waiters)

    @enable_ki_protection
    def abort(self) -> None:
        """Break the barrier: waiting tasks and all later callers get BrokenBarrierError.

        Use it when the group cannot complete, for example when one task fails or times
        out, so that the others stop waiting for it. The barrier stays broken until
        :meth:`reset`. Aborting a broken barrier does nothing.
        """
        if not self._broken:
            self._break("abort() was called")

    @enable_ki_protection
    def reset(self) -> None:
        """Make the barrier usable again, starting a new, empty generation.

        Tasks waiting right now get :class:`BrokenBarrierError` (their generation is gone);
        tasks that call :meth:`wait` afterwards form the new generation. This also repairs
        a broken barrier.
        """
        broken_out = self._throw_out_waiters(
            f"{self._label} was reset while this task waited; wait again to join the new generation"
        )
        self._broken = False
        self._reason = ""
        self._generation += 1
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(
                _current_task(),
                self._label,
                "reset",
                {"generation": self._generation, "broken_out": broken_out},
            )


@dataclass(frozen=True, slots=True)
class PhaserStatistics:
    """What a :class:`Phaser` looks like right now (see :meth:`Phaser.statistics`).

    * ``phase``: the current phase number.
    * ``registered``: how many parties are registered.
    * ``arrived``: how many of them have arrived in the current phase.
    * ``n_waiting``: how many tasks wait for the current phase to end.
    * ``terminated``: whether the phaser has terminated.
    """

    phase: int
    registered: int
    arrived: int
    n_waiting: int
    terminated: bool


def _default_on_advance(phase: int, registered: int) -> bool:
    return registered == 0


class Phaser:
    """A reusable barrier whose parties can join and leave, and arrive without waiting.

    A phaser counts *registered parties*. Each phase ends when every registered party has
    arrived; then the phase number goes up by one, the tasks waiting for that phase are
    released, and the next phase begins with nobody arrived. Parties are counted, not
    identified: any task may arrive on behalf of a party.

    * :meth:`register` adds a party (it must arrive in the current phase too);
      :meth:`arrive_and_deregister` arrives and leaves for good.
    * :meth:`arrive` records an arrival and returns at once (a producer that must not
      wait for its consumers); ``await`` :meth:`arrive_and_wait` arrives and waits for the
      phase to end, like :meth:`Barrier.wait`; ``await`` :meth:`wait_for_advance` waits
      without arriving (an observer).

    Example: a coordinator releases workers phase by phase, and the phaser terminates by
    itself when the last worker leaves::

        phaser = seqlab.Phaser(1)            # the coordinator is a party

        async def worker(phaser, steps):
            for _ in range(steps):
                await do_step()
                await phaser.arrive_and_wait()
            phaser.arrive_and_deregister()

        for steps in (2, 3):
            phaser.register()
            nursery.start_soon(worker, phaser, steps)
        phaser.arrive_and_deregister()       # the coordinator leaves; workers go on

    **Termination.** When a phase ends, ``on_advance(phase, registered)`` is called with
    the number of the phase that ended and the parties still registered; if it returns a
    true value the phaser terminates. The default terminates when no party is registered,
    as Java's ``Phaser`` does. The final advance still happens (waiters are released with
    the new phase number); after that the phase never changes, :attr:`terminated` is
    true, arrivals do nothing, waits return the final phase at once, and :meth:`register`
    raises :class:`trio.ClosedResourceError`. If ``on_advance`` raises, the phaser
    terminates the same way and the exception propagates from the call that ended the
    phase.

    **Cancellation.** An arrival is an event, not a wait: it is never undone. If
    :meth:`arrive_and_wait` is cancelled while it waits, its arrival still counts and only
    the waiting is abandoned; a cancelled :meth:`wait_for_advance` just leaves.

    Args:
      parties (int): parties registered from the start (default 0).
      on_advance: a plain function ``on_advance(phase, registered) -> bool``.
      name (str): a name for traces and deadlock reports ("Phaser 'steps'").
    """

    __slots__ = (
        "_arrived",
        "_label",
        "_on_advance",
        "_phase",
        "_registered",
        "_terminated",
        "_waiters",
    )

    def __init__(
        self,
        parties: int = 0,
        *,
        on_advance: Callable[[int, int], object] | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int):
            raise TypeError(
                f"parties must be an int (how many parties start registered), "
                f"got {type(parties).__name__} {parties!r}"
            )
        if parties < 0:
            raise ValueError(f"parties must be 0 or more, got {parties}")
        _check_callback(on_advance, "on_advance", "on_advance(phase, registered)")
        _check_name(name)
        self._registered = parties
        self._arrived = 0
        self._phase = 0
        self._terminated = False
        self._on_advance: Callable[[int, int], object] = on_advance or _default_on_advance
        self._label = _label("Phaser", name)
        self._waiters: dict[trio.lowlevel.Task, None] = {}

    def __repr__(self) -> str:
        if self._terminated:
            return f"<{self._label}: terminated at phase {self._phase}>"
        return (
            f"<{self._label}: phase {self._phase}, {self._arrived} of {self._registered} arrived>"
        )

    @property
    def phase(self) -> int:
        """The current phase number: 0 at first, one more after each phase ends."""
        return self._phase

    @property
    def registered(self) -> int:
        """How many parties are registered."""
        return self._registered

    @property
    def arrived(self) -> int:
        """How many registered parties have arrived in the current phase."""
        return self._arrived

    @property
    def unarrived(self) -> int:
        """How many registered parties have not arrived yet in the current phase."""
        return self._registered - self._arrived

    @property
    def terminated(self) -> bool:
        """True once ``on_advance`` returned true; the phase never changes again."""
        return self._terminated

    def statistics(self) -> PhaserStatistics:
        """Return a :class:`PhaserStatistics` snapshot."""
        return PhaserStatistics(
            phase=self._phase,
            registered=self._registered,
            arrived=self._arrived,
            n_waiting=len(self._waiters),
            terminated=self._terminated,
        )

    def _describe_wait(self) -> str:
        if self._terminated:
            return f"{self._label} (terminated at phase {self._phase})"
        return f"{self._label} phase {self._phase} ({self._arrived} of {self._registered} arrived)"

    @enable_ki_protection
    def register(self) -> int:
        """Add one party and return the current phase, in which it must arrive too.

        Raises:
          trio.ClosedResourceError: if the phaser has terminated.
        """
        if self._terminated:
            raise trio.ClosedResourceError(
                f"{self._label} terminated at phase {self._phase}; create a new Phaser "
                "to coordinate more phases"
            )
        self._registered += 1
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(
                _current_task(),
                self._label,
                "register",
                {"phase": self._phase, "registered": self._registered},
            )
        return self._phase

    def _check_can_arrive(self, method: str) -> None:
        if self._registered == 0:
            raise RuntimeError(
                f"{method}() on {self._label}, which has no registered party: call "
                "register() first (or pass parties= when creating it)"
            )

    @enable_ki_protection
    def arrive(self) -> int:
        """Arrive at the current phase without waiting; return that phase's number.

        If this was the last registered party to arrive, the phase ends now.

        Raises:
          RuntimeError: if no party is registered.
        """
        if self._terminated:
            return self._phase
        self._check_can_arrive("arrive")
        return self._arrive(deregister=False)

    @enable_ki_protection
    def arrive_and_deregister(self) -> int:
        """Arrive at the current phase and leave the phaser; return that phase's number.

        Later phases no longer wait for this party. When the last party leaves, the phase
        ends and (with the default ``on_advance``) the phaser terminates.

        Raises:
          RuntimeError: if no party is registered.
        """
        if self._terminated:
            return self._phase
        self._check_can_arrive("arrive_and_deregister")
        return self._arrive(deregister=True)

    def _arrive(self, *, deregister: bool) -> int:
        phase = self._phase
        if deregister:
            self._registered -= 1
        else:
            self._arrived += 1
        rec = _RECORDER.get()
        if rec is not None:
            rec.record(
                _current_task(),
                self._label,
                "deregister" if deregister else "arrive",
                {"phase": phase, "arrived": self._arrived, "registered": self._registered},
            )
        if self._arrived == self._registered:
            self._advance(rec)
        return phase

    def _advance(self, rec: Recorder | None) -> None:
        ended = self._phase
        self._phase = ended + 1
        self._arrived = 0
        try:
            self._terminated = bool(self._on_advance(ended, self._registered))
        except BaseException:
            self._terminated = True
            raise
        finally:
            new_phase = self._phase
            for task in self._waiters:
                _reschedule(task, _Value(new_phase))
            self._waiters.clear()
            if rec is not None:
                rec.record(
                    _current_task(),
                    self._label,
                    "advance",
                    {
                        "phase": new_phase,
                        "registered": self._registered,
                        "terminated": self._terminated,
                    },
                )

    @enable_ki_protection
    async def arrive_and_wait(self) -> int:
        """Arrive at the current phase and wait for it to end; return the new phase number.

        This is :meth:`Barrier.wait` for a phaser. On a terminated phaser it returns the
        final phase at once.

        Raises:
          RuntimeError: if no party is registered.
        """
        await _checkpoint_if_cancelled()
        if self._terminated:
            await _cancel_shielded_checkpoint()
            return self._phase
        self._check_can_arrive("arrive_and_wait")
        phase = self._arrive(deregister=False)
        if self._phase != phase or self._terminated:
            await _cancel_shielded_checkpoint()
            return self._phase
        return await self._park()

    @enable_ki_protection
    async def wait_for_advance(self, phase: int) -> int:
        """Wait until phase number ``phase`` has ended; return the current phase number.

        Returns at once if ``phase`` has already ended or the phaser has terminated. Waiting
        does not count as an arrival, so any task may observe the phases.

        Raises:
          ValueError: if ``phase`` is negative or has not started yet.
        """
        if isinstance(phase, bool) or not isinstance(phase, int):
            raise TypeError(f"phase must be an int, got {type(phase).__name__} {phase!r}")
        if phase < 0:
            raise ValueError(f"phase must be 0 or more, got {phase}")
        await _checkpoint_if_cancelled()
        if self._terminated or phase < self._phase:
            await _cancel_shielded_checkpoint()
            return self._phase
        if phase > self._phase:
            raise ValueError(
                f"phase {phase} has not started yet ({self._label} is at phase "
                f"{self._phase}); wait_for_advance(phase) waits for a started phase to end"
            )
        return await self._park()

    async def _park(self) -> int:
        task = _current_task()
        self._waiters[task] = None
        new_phase: int = await _wait_task_rescheduled(partial(_leave_phaser, self, task))
        return new_phase
