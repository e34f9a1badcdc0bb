"""Deterministic runs: seeded scheduling, virtual time, deadlock detection, schedule exploration.

How it works. trio shuffles each batch of runnable tasks with its module RNG
``trio._core._run._r``; when ``_ALLOW_DETERMINISTIC_SCHEDULING`` is true it first sorts the batch
by creation order, so a seeded RNG gives a reproducible interleaving. Both are process globals,
so every run happens on a thread of its own and ``_r`` is replaced, for the duration, by a proxy
that hands each thread its own RNG: a seeded one for seqlab's runs, trio's own for any other
run in the process (a notebook kernel's loop keeps its random schedule and cannot disturb ours).

Each run's ``_r`` is a :class:`seqlab.schedule.Controller`: it decides every batch's order and
may hold a task back for later batches (see that module), which is how exploration reaches
schedules where one task lags behind the others.

Virtual time is a :class:`trio.testing.MockClock` that a watcher task moves forward whenever
every task is blocked. When nothing could ever wake them (no timer, no I/O, no thread), the
watcher declares a :class:`Deadlock` instead of letting the program hang; under the real clock
a watcher does the same, without moving the clock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import inspect
import math
import queue
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import outcome
import trio
from trio._core import _run as _trio_run

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ._callables import is_async_callable
from .schedule import (
    Controller,
    ExhaustiveStrategy,
    Policy,
    Probe,
    Schedule,
    ScheduleMismatch,
    Strategy,
    make_strategy,
)
from .trace import _RECORDER, Recorder, record_deadlock, task_label
from .waits import WAITS_FOR_CHILDREN as _WAITS_FOR_CHILDREN
from .waits import describe_wait

__all__ = [
    "run",
    "explore",
    "Deadlock",
    "BlockedTask",
    "ExploreResult",
    "Failure",
    "Coverage",
    "Interrupted",
    "ScheduleMismatch",
    "current_seed",
    "last_seed",
    "check_trio_hooks",
]

T = TypeVar("T")

_SEED_LIMIT = 2**32
_local = threading.local()
_state_lock = threading.Lock()
_active_runs = 0
_saved_flag: bool = False
_saved_rng: Any = None
_last_seed: int | None = None


# --------------------------------------------------------------------------- trio's hook


def check_trio_hooks() -> None:
    """Fail loudly if this trio no longer has the scheduling hook seqlab relies on."""
    missing = [
        name
        for name in ("_ALLOW_DETERMINISTIC_SCHEDULING", "_r", "GLOBAL_RUN_CONTEXT")
        if not hasattr(_trio_run, name)
    ]
    task_fields = {a.name for a in getattr(trio.lowlevel.Task, "__attrs_attrs__", ())}
    missing += [
        f"Task.{name}"
        for name in ("_next_send_fn", "_counter", "_abort_func")
        if name not in task_fields
    ]
    if not hasattr(trio.lowlevel.Task, "_attempt_delivery_of_any_pending_cancel"):
        missing.append("Task._attempt_delivery_of_any_pending_cancel")
    if missing:
        raise RuntimeError(
            f"trio {trio.__version__} has no {', '.join(missing)} in trio._core._run: seqlab's "
            "deterministic scheduling depends on it. Pin trio to a version seqlab supports."
        )
    if not isinstance(_trio_run._r, (random.Random, _ThreadRandom)):
        raise RuntimeError(
            f"trio {trio.__version__}: trio._core._run._r is no longer a random.Random; "
            "seqlab's deterministic scheduling cannot seed it."
        )


class _ThreadRandom:
    """Stands in for trio's scheduler RNG: each thread draws from its own generator."""

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback

    def shuffle(self, batch: list[Any]) -> None:
        # trio's per-batch call: a plain method, since __getattr__ on this path costs ~8%.
        try:
            shuffle = _local.shuffle
        except AttributeError:  # a thread that never ran seqlab
            shuffle = None
        (shuffle or self._fallback.shuffle)(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(_local, "rng", None) or self._fallback, name)


def _install_hooks() -> None:
    global _active_runs, _saved_flag, _saved_rng
    with _state_lock:
        if _active_runs == 0:
            check_trio_hooks()
            _saved_flag = _trio_run._ALLOW_DETERMINISTIC_SCHEDULING
            _saved_rng = _trio_run._r
            _trio_run._r = _ThreadRandom(_saved_rng)  # type: ignore[assignment]
            _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
        _active_runs += 1


def _restore_hooks() -> None:
    global _active_runs
    with _state_lock:
        _active_runs -= 1
        if _active_runs == 0:
            _trio_run._r = _saved_rng
            _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = _saved_flag  # type: ignore[misc]


# --------------------------------------------------------------------------- deadlock


@dataclass(frozen=True)
class BlockedTask:
    """A task found blocked when a deadlock was declared, and what it waits on."""

    name: str
    waits_on: str

    def __str__(self) -> str:
        return f"{self.name} waits {self.waits_on}"


class Deadlock(Exception):
    """Every task is blocked and nothing (timer, I/O, thread) can ever wake one of them.

    ``tasks`` lists each blocked task with what it waits on; the message says the same.
    A real-time run of the same program would hang forever instead.
    """

    def __init__(self, tasks: list[BlockedTask], time: float, seed: int | None) -> None:
        self.tasks = tasks
        self.time = time
        self.seed = seed
        lines = [
            f"deadlock at t={time:.3f}: every task is blocked and nothing can wake one "
            "(no timer pending, no I/O, no thread running)"
        ]
        lines += [f"  {t}" for t in tasks]
        super().__init__("\n".join(lines))


def _user_tasks(root: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found = [root]
    for task in found:
        for nursery in task.child_nurseries:
            # Creation order (trio's task counter) keeps reports deterministic.
            found.extend(sorted(nursery.child_tasks, key=lambda t: getattr(t, "_counter", 0)))
    return found


# --------------------------------------------------------------------------- one run


@dataclass
class _Run:
    fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    seed: int
    virtual_time: bool
    recorder: Recorder | None
    controller: Controller
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    main_task: trio.lowlevel.Task | None = None
    deadlock: Deadlock | None = None
    token: trio.lowlevel.TrioToken | None = None
    stuck: list[trio.lowlevel.Task] = field(default_factory=list)
    started_at: float = 0.0
    watching: bool = False  # the virtual-time watcher was started
    watcher: trio.lowlevel.Task | None = None  # it, while it sleeps
    quiet_until: float = 0.0
    interrupted: bool = False

    async def main(self) -> Any:
        self.main_task = trio.lowlevel.current_task()
        self.token = trio.lowlevel.current_trio_token()
        if self.interrupted:  # Ctrl-C came before there was a token to cancel through
            self.scope.cancel()
        self.started_at = trio.current_time()
        if not self.virtual_time:
            self.spawn_watcher(self.watch_real_time)
        rec = self.recorder
        if rec is not None:
            _RECORDER.set(rec)
            rec._start()
            rec._new_label(self.main_task, _callable_name(self.fn))
            rec.record(self.main_task, "task", "spawn", {})
        with self.scope:
            return await self.fn(*self.args)

    def spawn_watcher(self, watch: Callable[[], Awaitable[None]]) -> None:
        trio.lowlevel.spawn_system_task(
            watch, name="<seqlab watcher>", context=contextvars.Context()
        )

    async def watch(self) -> None:
        """Declare a deadlock when every task is blocked and no timer is pending.

        The virtual clock jumps inside trio's own loop (see :func:`_virtual_clock`), which
        costs no task step. This watcher is started the first time that loop finds nothing
        runnable and no timer pending (:meth:`idle`, which most runs never reach); it looks
        at why, then sleeps until the loop finds that again.
        """

        def abort(_: object) -> trio.lowlevel.Abort:
            self.watcher = None  # cancelled as the run ends: idle() must not wake it
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            stats = trio.lowlevel.current_statistics()
            if stats.tasks_runnable or stats.run_sync_soon_queue_size:
                pass
            elif stats.seconds_to_next_deadline < math.inf:
                pass  # the clock will jump to it
            elif not await self.check_deadlock(stats):
                # A thread or I/O may still wake someone: look again a little later.
                self.quiet_until = time.perf_counter() + _OUTSIDE_ACTIVITY_POLL
            self.watcher = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(abort)

    def idle(self) -> float:
        """trio's loop found no runnable task and no timer: wake the watcher to look why.

        Returns how long the loop may sleep (real seconds) before asking again.
        """
        runner = _trio_run.GLOBAL_RUN_CONTEXT.runner
        if runner.waiting_for_idle:
            return 86400.0  # the program waits for idleness itself: trio wakes it first
        wait = self.quiet_until - time.perf_counter()
        if wait > 0:
            return wait
        if not self.watching:
            if runner.main_task_outcome is not None:
                return 86400.0  # the program has ended; trio is only closing down
            self.watching = True
            self.spawn_watcher(self.watch)
            return 0.0
        if self.watcher is not None:
            trio.lowlevel.reschedule(self.watcher)
            self.watcher = None
            return 0.0
        return _OUTSIDE_ACTIVITY_POLL

    async def watch_real_time(self) -> None:
        """Under the real clock, declare a deadlock when nothing at all can wake a task."""
        from trio.testing import wait_all_tasks_blocked

        while True:
            await wait_all_tasks_blocked(_REAL_TIME_QUIET)
            stats = trio.lowlevel.current_statistics()
            if stats.tasks_runnable or stats.run_sync_soon_queue_size or self.someone_scheduled():
                continue
            if _other_idle_cushion() is not None:
                await wait_all_tasks_blocked(_REAL_TIME_QUIET)
                continue
            if stats.seconds_to_next_deadline < math.inf:
                # A timer will wake someone: sleep until it has fired, then look again.
                await trio.sleep(stats.seconds_to_next_deadline)
                continue
            if not await self.check_deadlock(stats):
                await wait_all_tasks_blocked(_OUTSIDE_ACTIVITY_POLL)

    async def check_deadlock(self, stats: Any) -> bool:
        """Declare a deadlock, or return false when outside activity (a thread, a socket)
        may still wake someone."""
        blocked = self.blocked_tasks()
        if blocked is None or _io_waiters(stats) > 1:
            return False
        if self.deadlock is None:
            elapsed = trio.current_time() - (0.0 if self.virtual_time else self.started_at)
            self.deadlock = Deadlock(blocked, elapsed, self.seed)
            if self.recorder is not None and self.main_task is not None:
                record_deadlock(self.recorder, _user_tasks(self.main_task))
            self.cancel_in_creation_order()
        else:
            # Still stuck after cancelling everything (a wait shielded from cancellation):
            # throw an error into each stuck wait so the run can end.
            for task in self.stuck:
                trio.lowlevel.reschedule(task, outcome.Error(_Abandoned()))
        return True

    def cancel_in_creation_order(self) -> None:
        """Cancel the run, delivering the cancellation to blocked tasks oldest first.

        trio delivers a cancellation to a scope's tasks in the order of a set, which changes
        from run to run; a primitive's abort callback records events (a barrier's ``leave``),
        so the trace after a deadlock would too. The blocked tasks' abort callbacks are
        stood aside while the scope is cancelled, then given back and run in creation order.
        """
        assert self.main_task is not None
        waiting = sorted(
            (t for t in _user_tasks(self.main_task) if t._abort_func is not None),
            key=lambda t: t._counter,
        )
        aborts = [task._abort_func for task in waiting]
        for task in waiting:
            task._abort_func = None
        self.scope.cancel()
        for task, abort in zip(waiting, aborts, strict=True):
            task._abort_func = abort
            task._attempt_delivery_of_any_pending_cancel()

    def someone_scheduled(self) -> bool:
        """Whether a task woken in the watcher's own batch has not run yet.

        The controller holds trio's current batch; what is still in it has not run. This
        looks at that batch only, never at every task, so each clock jump costs O(1).
        """
        me = trio.lowlevel.current_task()
        return any(task is not me for task in self.controller.batch)

    def blocked_tasks(self) -> list[BlockedTask] | None:
        assert self.main_task is not None
        result = []
        self.stuck = []
        for task in _user_tasks(self.main_task):
            waits_on, outside = describe_wait(task)
            if outside:
                return None
            if waits_on != _WAITS_FOR_CHILDREN:
                self.stuck.append(task)
            name = self.recorder.label(task) if self.recorder else task_label(task)
            if task is self.main_task:
                name = _callable_name(self.fn)
            result.append(BlockedTask(name, waits_on))
        # Tasks waiting on something come first; those waiting for children after.
        result.sort(key=lambda t: t.waits_on == _WAITS_FOR_CHILDREN)
        return result

    def interrupt(self) -> None:
        """Cancel the run from another thread (Ctrl-C in the calling thread)."""
        self.interrupted = True
        if self.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self.scope.cancel)


_REAL_TIME_QUIET = 0.05  # seconds with every task blocked before a real-time run is examined
_OUTSIDE_ACTIVITY_POLL = 0.005  # real seconds between looks while a thread or I/O is pending


def _virtual_clock(idle: Callable[[], float]) -> Any:
    """Virtual time that trio's own loop moves: a :class:`~trio.testing.MockClock` with
    ``autojump_threshold=0`` jumps to the next timer whenever every task is blocked, at no
    task step's cost. trio asks the clock how long to sleep only when no task is runnable;
    with no timer pending either, this clock calls ``idle()`` instead of sleeping a day (the
    method is set on the instance: MockClock cannot be subclassed).
    """
    from trio.testing import MockClock

    clock = MockClock(autojump_threshold=0)
    standard = clock.deadline_to_sleep_time

    def deadline_to_sleep_time(deadline: float) -> float:
        return idle() if deadline == math.inf else standard(deadline)

    clock.deadline_to_sleep_time = deadline_to_sleep_time  # type: ignore[method-assign]
    return clock


_MAIN_CODE = _Run.main.__code__


class _Abandoned(Exception):
    """Thrown into a wait that stayed stuck after the deadlock cancelled the run."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a :func:`seqlab.run` or :func:`seqlab.explore`.

    The run's thread has been stopped and joined: none of the program's code runs any more.
    ``seed``, ``schedule`` and ``recorder`` describe the interrupted run; for an exploration,
    ``explored`` is the :class:`ExploreResult` of the schedules that finished before it.
    """

    def __init__(
        self,
        message: str,
        *,
        seed: int | None = None,
        schedule: str | None = None,
        recorder: Recorder | None = None,
        explored: ExploreResult | None = None,
    ) -> None:
        super().__init__(message)
        self.seed = seed
        self.schedule = schedule
        self.recorder = recorder
        self.explored = explored


def _io_waiters(stats: Any) -> int:
    io = stats.io_statistics
    return sum(
        getattr(io, name, 0)
        for name in ("tasks_waiting_read", "tasks_waiting_write", "tasks_waiting", "monitors")
    )


def _other_idle_cushion() -> float | None:
    """The longest cushion of the program's own wait_all_tasks_blocked calls, if any."""
    runner = getattr(_trio_run.GLOBAL_RUN_CONTEXT, "runner", None)
    waiting = getattr(runner, "waiting_for_idle", None)
    if not waiting:
        return None
    mine = trio.lowlevel.current_task()
    cushions = [key[0] for key, task in waiting.items() if task is not mine]
    return max(cushions) if cushions else None


def _callable_name(fn: Any) -> str:
    fn = inspect.unwrap(fn)
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def _check_async_fn(async_fn: Any) -> None:
    if not callable(async_fn):
        raise TypeError(f"async_fn must be an async function, got {type(async_fn).__name__}")
    if not is_async_callable(async_fn):
        raise TypeError(
            f"async_fn must be an async function (defined with 'async def'), but "
            f"{_callable_name(async_fn)!r} is a plain function. Pass the function itself, "
            "not a call: seqlab.run(main), not seqlab.run(main())."
        )


def _check_seed(seed: Any, name: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < _SEED_LIMIT:
        raise ValueError(f"{name} must be between 0 and 2**32 - 1, got {seed}")


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def current_seed() -> int:
    """The seed of the :func:`seqlab.run` this task belongs to."""
    seed = getattr(_local, "seed", None)
    if seed is None:
        raise RuntimeError("current_seed() must be called inside seqlab.run")
    return int(seed)


def last_seed() -> int | None:
    """The seed of the most recently started :func:`seqlab.run` in this process."""
    return _last_seed


# --------------------------------------------------------------------------- the run thread


@dataclass
class _Job:
    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: outcome.Outcome[Any] | None = None


class _Session:
    """Trio's hooks installed and one thread on which seqlab's runs happen, one after another.

    :func:`run` uses a session for one run; :func:`explore` hands its whole loop over
    schedules to :meth:`call`, so neither the hook check, nor a thread start, nor a hand-over
    between threads is paid per schedule. Ctrl-C in the calling thread cancels the current
    run and makes every later one raise :class:`Interrupted` instead of starting.
    """

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.current: _Run | None = None
        self.stopping = False

    def __enter__(self) -> _Session:
        _install_hooks()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            _wait_uninterrupted(self.thread.join)
        _restore_hooks()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job.result = outcome.capture(job.fn)
            finally:
                job.done.set()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, called on the session's thread (where runs may happen)."""
        if threading.current_thread() is self.thread:
            return fn()
        if self.thread is None:
            self.thread = threading.Thread(target=self._serve, name="seqlab.run", daemon=True)
            self.thread.start()
        job = _Job(fn)
        self.jobs.put(job)
        while True:
            try:
                while not job.done.wait(0.1):
                    pass
                break
            except KeyboardInterrupt:
                # Stop the program, then wait until its thread has really finished the run:
                # nothing of it may run once we return.
                self.stopping = True
                current = self.current
                if current is not None:
                    current.interrupt()
        assert job.result is not None
        return job.result.unwrap()

    def run(self, state: _Run) -> tuple[outcome.Outcome[Any], bool]:
        """Run ``state``; return its outcome and whether Ctrl-C stopped it (or it never began)."""
        return self.call(lambda: self._run_here(state))

    def _run_here(self, state: _Run) -> tuple[outcome.Outcome[Any], bool]:
        if self.stopping:
            return outcome.Error(KeyboardInterrupt()), True
        self.current = state
        try:
            result = outcome.capture(_run_in_thread, state)
        finally:
            self.current = None
        return result, self.stopping


def _wait_uninterrupted(wait: Callable[[], object]) -> None:
    interrupted = False
    while True:
        try:
            wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def _run_in_thread(state: _Run) -> Any:
    _local.rng = state.controller
    _local.shuffle = state.controller.shuffle
    _local.seed = state.seed
    instruments: list[trio.abc.Instrument] = []
    if state.recorder is not None:
        instruments.append(state.recorder._lifecycle)
        state.recorder._lifecycle_users += 1
    clock = _virtual_clock(state.idle) if state.virtual_time else None
    try:
        value = trio.run(state.main, clock=clock, instruments=instruments)
    except BaseException as exc:
        if state.deadlock is not None:
            raise state.deadlock from _unwrap_cancelled(exc)
        raise
    finally:
        _local.rng = None
        _local.shuffle = None
        _local.seed = None
        state.controller.finish()
        if state.recorder is not None:
            state.recorder._lifecycle_users -= 1
    if state.deadlock is not None:
        # The program swallowed the cancellation we used to unblock it; report the deadlock.
        raise state.deadlock
    return value


def _unwrap_cancelled(exc: BaseException) -> BaseException | None:
    if isinstance(exc, BaseExceptionGroup):
        rest = exc.split((trio.Cancelled, _Abandoned))[1]
        return rest
    return None if isinstance(exc, (trio.Cancelled, _Abandoned)) else exc


@dataclass
class _Program:
    """A program to run under many schedules: the function, its arguments and the options."""

    fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    virtual_time: bool
    check: Callable[[Recorder], Any] | None = None

    def attempt(
        self,
        session: _Session,
        seed: int,
        policy: Policy | None,
        *,
        recorder: Recorder | None = None,
        record: bool = False,
        present_log: list[tuple[int, ...]] | None = None,
    ) -> _Attempt:
        """One run; the outcome says whether it failed (raised, or ``check`` said no)."""
        controller = Controller(seed, policy, _MAIN_CODE, record=record, ghost=self.virtual_time)
        controller.present_log = present_log
        if self.check is not None and recorder is None:
            recorder = Recorder()
        if recorder is not None:
            recorder.seed = seed
        state = _Run(self.fn, self.args, seed, self.virtual_time, recorder, controller)
        result, interrupted = session.run(state)
        if interrupted:
            raise Interrupted(
                f"interrupted (Ctrl-C) after {controller.step} steps of seed {seed}",
                seed=seed,
                schedule=str(controller.schedule()),
                recorder=recorder,
            )
        mismatch = policy.mismatch if policy is not None else None
        error: BaseException | None = None
        value: Any = None
        rejected = False
        if isinstance(result, outcome.Error):
            error = result.error
            if not isinstance(error, Exception):
                raise error  # KeyboardInterrupt, SystemExit: not a failure to report
        elif isinstance(result, outcome.Value):
            value = result.value
            if self.check is not None:
                assert recorder is not None
                recorder.schedule = str(controller.schedule())
                try:
                    rejected = not self.check(recorder)
                except Exception as exc:
                    error = exc
        return _Attempt(value, error, rejected, controller, recorder, mismatch)


@dataclass
class _Attempt:
    value: Any
    error: BaseException | None
    rejected: bool  # the run completed, but check() said no
    controller: Controller
    recorder: Recorder | None
    mismatch: str | None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.rejected


def _probe(program: _Program, session: _Session) -> Probe:
    """A lockstep run, measured, for strategies that size their choices by the program."""
    log: list[tuple[int, ...]] = []
    program.attempt(session, 0, Policy(), present_log=log)
    return Probe.of(log)


def _policy_for(
    strategy: Strategy,
    seed: int,
    probe: Probe | None,
    schedule: Schedule | None,
    recorder: Recorder | None,
) -> Policy | None:
    if schedule is None:
        return strategy.policy(seed, probe or Probe())
    if recorder is None:
        return Policy(schedule.decisions, strict=True)
    # Replayed with a recorder: mark each decisive choice in the trace, as a shrunk failure's
    # trace has them, so both traces are the same.
    from .explain import Narrator

    return Narrator(schedule.decisions, recorder, strict=True)


# --------------------------------------------------------------------------- seqlab.run


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: Any,
    seed: int | None = None,
    virtual_time: bool = True,
    recorder: Recorder | None = None,
    strategy: str | Strategy = "random",
    bound: int | None = None,
    schedule: str | None = None,
) -> T:
    """Run ``async_fn(*args)`` like :func:`trio.run`, but reproducibly.

    The scheduler draws from an RNG seeded with ``seed``, so the same program and seed give
    the same interleaving and (with a ``recorder``) a byte-identical trace. ``seed=None`` picks
    a random seed; it is stored on the recorder, returned by :func:`seqlab.last_seed`, and added
    as a note to any exception, so every run can be replayed.

    ``strategy`` (default ``"random"``: trio's own shuffle, seeded) chooses how the scheduler
    decides; ``seqlab.run(fn, seed=s, strategy="pct")`` replays seed ``s`` of an exploration
    with that strategy. ``schedule`` replays a schedule string exactly (from
    ``failure.schedule``, another process, another machine); give it instead of a seed.

    With ``virtual_time`` (the default) the clock starts at 0 and jumps ahead whenever every
    task is blocked: ``await trio.sleep(3600)`` returns at once with ``trio.current_time()``
    at 3600. If every task is blocked and nothing could wake them (no timer, no I/O, no
    thread), :class:`Deadlock` is raised, under the real clock too.

    Example::

        async def main():
            await trio.sleep(60)
            return trio.current_time()

        assert seqlab.run(main, seed=7) == 60.0

    The run happens on a thread of its own, so it is safe to call from inside another trio
    run (such as a notebook kernel's loop): that run is paused while this one runs, and its
    scheduling is untouched. Ctrl-C cancels the run, waits until none of its code runs any
    more, and raises :class:`Interrupted`.
    """
    _check_async_fn(async_fn)
    chosen = make_strategy(strategy, bound)
    if isinstance(chosen, ExhaustiveStrategy):
        raise ValueError(
            "strategy 'exhaustive' is a search over many runs: use it with seqlab.explore, and "
            "replay one of its failures with schedule=failure.schedule"
        )
    parsed = None
    if schedule is not None:
        if seed is not None:
            raise ValueError("give either seed or schedule, not both: a schedule replays alone")
        if strategy != "random" or bound is not None:
            raise ValueError("a schedule replays alone: give no strategy or bound with it")
        parsed = Schedule.parse(schedule)
        seed = 0
    elif seed is None:
        seed = random.SystemRandom().randrange(_SEED_LIMIT)
    else:
        _check_seed(seed)
    _check_bool(virtual_time, "virtual_time")
    if recorder is not None and not isinstance(recorder, Recorder):
        raise TypeError(f"recorder must be a seqlab.Recorder, got {type(recorder).__name__}")
    global _last_seed
    _last_seed = seed
    if recorder is not None:
        recorder.seed = seed
    program = _Program(async_fn, args, virtual_time)
    with _Session() as session:
        probe = _probe(program, session) if chosen.needs_probe and parsed is None else None
        policy = _policy_for(chosen, seed, probe, parsed, recorder)
        attempt = program.attempt(session, seed, policy, recorder=recorder, record=True)
    if recorder is not None:
        recorder.schedule = str(attempt.controller.schedule())
    if attempt.mismatch is not None:
        raise ScheduleMismatch(attempt.mismatch)
    if attempt.error is None:
        return attempt.value
    error = attempt.error
    if sys.version_info >= (3, 11) and not isinstance(error, Deadlock):
        if parsed is not None:
            error.add_note(f"seqlab: replay this run with schedule={schedule!r}")
        else:
            how = "" if strategy == "random" and bound is None else f", strategy={strategy!r}"
            how += "" if bound is None else f", bound={bound}"
            error.add_note(f"seqlab: replay this run with seed={seed}{how}")
    raise error


# --------------------------------------------------------------------------- exploration


@dataclass(frozen=True)
class Failure:
    """One explored run that went wrong.

    ``seed`` and ``strategy`` say which run it was, ``error`` what it raised (``None`` when
    it completed but ``check`` rejected its trace), ``trace`` what each task did,
    and ``schedule`` the decisions that produced it: ``seqlab.run(fn, *args,
    schedule=failure.schedule)`` replays it exactly, in any process. :meth:`shrink` finds the
    fewest decisive choices that still fail; :meth:`explain` says them in words.
    """

    seed: int
    error: BaseException | None
    _trace: Recorder | None
    schedule: str = ""
    strategy: str = "random"
    _program: _Program | None = field(default=None, repr=False, compare=False)
    explanation: str = field(default="", repr=False, compare=False)

    @property
    def trace(self) -> Recorder:
        """What each task did in the failing run (replayed, once, on first use)."""
        if self._trace is None:
            recorder = Recorder()
            with contextlib.suppress(Exception):
                self.replay(recorder)
            object.__setattr__(self, "_trace", recorder)
        assert self._trace is not None
        return self._trace

    def __str__(self) -> str:
        what = (
            "the check returned false"
            if self.error is None
            else f"{type(self.error).__name__}: {self.error}"
        )
        return f"seed {self.seed} ({self.strategy}): {what}"

    @property
    def decisions(self) -> int:
        """How many decisive choices the schedule makes (0: plain lockstep fails)."""
        return len(Schedule.parse(self.schedule)) if self.schedule else 0

    def replay(self, recorder: Recorder | None = None) -> Any:
        """Run the failing schedule again (it raises the same error)."""
        assert self._program is not None
        return run(
            self._program.fn,
            *self._program.args,
            schedule=self.schedule,
            virtual_time=self._program.virtual_time,
            recorder=recorder,
        )

    def shrink(self, budget: int = 200) -> Failure:
        """A failure like this one whose schedule has the fewest decisive choices found.

        Tries plain lockstep, then drops decisions one by one, then looks for a single hold
        that fails the same way, then moves each remaining choice as late as it still fails.
        At most ``budget`` runs.
        """
        from .explain import shrink

        return shrink(self, budget)

    def explain(self) -> str:
        """The failing schedule's decisive choices in words: who was held back, where, while
        whom ran, and what then went wrong."""
        from .explain import explain

        return explain(self)


@dataclass(frozen=True)
class Coverage:
    """How one strategy did in an exploration: runs, distinct schedules, failures."""

    runs: int
    schedules: int
    failures: int


@dataclass(frozen=True)
class ExploreResult:
    """What :func:`seqlab.explore` found.

    ``runs`` tried, the ``failures`` among them, how many distinct ``schedules`` ran (by
    decision sequence, not by seed) and, per strategy, ``by_strategy``. For the exhaustive
    strategy, ``complete`` says whether every schedule within the bound was run.
    """

    runs: int
    failures: list[Failure]
    strategy: str = "random"
    schedules: int = 0
    by_strategy: dict[str, Coverage] = field(default_factory=dict)
    complete: bool | None = None
    bound: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failing_seeds(self) -> list[int]:
        return [f.seed for f in self.failures]

    def __str__(self) -> str:
        if self.complete:
            head = (
                f"explored all {self.schedules:,} schedules with at most {self.bound} "
                f"hold{'s' if self.bound != 1 else ''}"
            )
        else:
            head = f"explored {self.runs} schedules ({self.schedules} distinct, {self.strategy})"
            if self.complete is False:
                head += f": the run budget ended before the space with {self.bound} holds did"
        if self.ok:
            return head + (": no failure" if self.complete else ": all passed")
        seeds = ", ".join(str(s) for s in self.failing_seeds[:10])
        more = ", ..." if len(self.failures) > 10 else ""
        return (
            f"{head}: {len(self.failures)} failed (seeds {seeds}{more})\n"
            f"first failure: {self.failures[0]}"
        )


def explore(
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
    seeds: Iterable[int] = range(100),
    check: Callable[[Recorder], Any] | None = None,
    virtual_time: bool = True,
    strategy: str | Strategy = "auto",
    bound: int | None = None,
    workers: int = 1,
    executor: concurrent.futures.Executor | None = None,
) -> ExploreResult:
    """Run ``async_fn(*args)`` under many schedules and collect the runs that fail.

    A run fails when it raises (a deadlock included) or when ``check(recorder)`` returns a
    false value or raises; ``check`` gets the run's trace, with ``recorder.seed`` and
    ``recorder.schedule`` (the string that replays this very run) filled in. Each :class:`Failure` keeps its seed, error, trace and schedule;
    replay one exactly with ``seqlab.run(async_fn, *args, schedule=failure.schedule)``.

    ``strategy`` chooses the schedules (``bound`` tunes it):

    - ``"auto"`` (default): a portfolio (lockstep, random orders, delays, PCT) that finds
      races needing a lagging task as well as plain ordering races;
    - ``"random"``: trio's shuffle of each batch, one seed per run (lockstep schedules only);
    - ``"delay"``: up to ``bound`` tasks held back at random steps for random lengths;
    - ``"pct"``: probabilistic concurrency testing with depth ``bound``;
    - ``"exhaustive"``: every schedule with at most ``bound`` holds, depth first, never
      repeating one; ``len(seeds)`` is the run budget and the result says whether the whole
      space was covered.

    ``workers=N`` runs schedules in N processes, or give any ``concurrent.futures.Executor``
    (a process pool, a ``dask.distributed`` client's ``get_executor()``): the result is the
    same, in the same order, as in one process.

    Example::

        result = seqlab.explore(transfer_race, seeds=range(200))
        if not result.ok:
            failure = result.failures[0].shrink()
            print(failure.explain())
    """
    _check_async_fn(async_fn)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be an iterable of ints, got {type(seeds).__name__}")
    seed_list = list(seeds)
    if not seed_list:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds=range(100)")
    for seed in seed_list:
        _check_seed(seed, "each of seeds")
    if check is not None and not callable(check):
        raise TypeError(f"check must be a callable taking a Recorder, got {type(check).__name__}")
    if check is not None and is_async_callable(check):
        raise TypeError(
            "check must be a plain function taking a Recorder and returning true or false, "
            f"not an async function ({_callable_name(check)!r})"
        )
    _check_bool(virtual_time, "virtual_time")
    chosen = make_strategy(strategy, bound)
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int, got {type(workers).__name__} {workers!r}")
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, got {workers}")
    if executor is not None and not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
        )
    from .exploration import explore_program

    program = _Program(async_fn, args, virtual_time, check)
    return explore_program(program, seed_list, chosen, workers, executor)
