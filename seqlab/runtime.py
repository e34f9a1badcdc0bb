"""Deterministic runs: seeded scheduling, virtual time, deadlock detection, schedule exploration.

How it works. trio shuffles each batch of runnable tasks with its module RNG
``trio._core._run._r``; when ``_ALLOW_DETERMINISTIC_SCHEDULING`` is true it first sorts the batch
by creation order, so a seeded RNG gives a reproducible interleaving. Both are process globals,
so every run happens on a thread of its own and ``_r`` is replaced, for the duration, by a proxy
that hands each thread its own RNG: a seeded one for seqlab's runs, trio's own for any other
run in the process (a notebook kernel's loop keeps its random schedule and cannot disturb ours).

Virtual time is a :class:`trio.testing.MockClock` that a watcher task moves forward whenever
every task is blocked. When nothing could ever wake them (no timer, no I/O, no thread), the
watcher declares a :class:`Deadlock` instead of letting the program hang.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import random
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import outcome
import trio
from trio._core import _run as _trio_run

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ._callables import is_async_callable
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
    missing += [f"Task.{name}" for name in ("_next_send_fn", "_counter") if name not in task_fields]
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
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    main_task: trio.lowlevel.Task | None = None
    deadlock: Deadlock | None = None
    token: trio.lowlevel.TrioToken | None = None
    stuck: list[trio.lowlevel.Task] = field(default_factory=list)

    async def main(self) -> Any:
        self.main_task = trio.lowlevel.current_task()
        self.token = trio.lowlevel.current_trio_token()
        if self.virtual_time:
            trio.lowlevel.spawn_system_task(
                self.watch, name="<seqlab virtual clock>", context=contextvars.Context()
            )
        rec = self.recorder
        if rec is not None:
            _RECORDER.set(rec)
            rec._start()
            rec._new_label(self.main_task, _callable_name(self.fn))
            rec.record(self.main_task, "task", "spawn", {})
        with self.scope:
            return await self.fn(*self.args)

    async def watch(self) -> None:
        """Move the virtual clock when all tasks are blocked; declare deadlock when stuck."""
        from trio.testing import MockClock, wait_all_tasks_blocked

        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, MockClock)
        while True:
            await wait_all_tasks_blocked()
            stats = trio.lowlevel.current_statistics()
            if stats.tasks_runnable or stats.run_sync_soon_queue_size or self.someone_scheduled():
                continue
            others = _other_idle_cushion()
            if others is not None:
                # The program waits for idleness itself (trio.testing.wait_all_tasks_blocked):
                # let it wake first, as MockClock does, and move the clock only afterwards.
                await wait_all_tasks_blocked(others + 0.001)
                continue
            if stats.seconds_to_next_deadline < math.inf:
                clock.jump(max(stats.seconds_to_next_deadline, 0.0))
                continue
            blocked = self.blocked_tasks()
            if blocked is None or _io_waiters(stats) > 1:
                # Outside activity (a thread, a socket) may still wake someone: wait for it in
                # real time, without spinning.
                await wait_all_tasks_blocked(0.005)
                continue
            if self.deadlock is None:
                self.deadlock = Deadlock(blocked, trio.current_time(), self.seed)
                if self.recorder is not None and self.main_task is not None:
                    record_deadlock(self.recorder, _user_tasks(self.main_task))
                self.scope.cancel()
            else:
                # Still stuck after cancelling everything (a wait shielded from cancellation):
                # throw an error into each stuck wait so the run can end.
                for task in self.stuck:
                    trio.lowlevel.reschedule(task, outcome.Error(_Abandoned()))

    def someone_scheduled(self) -> bool:
        """Whether a task was woken in the same batch as the watcher and has not run yet."""
        assert self.main_task is not None
        return any(t._next_send_fn is not None for t in _user_tasks(self.main_task))

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


class _Abandoned(Exception):
    """Thrown into a wait that stayed stuck after the deadlock cancelled the run."""


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
    return max(key[0] for key in waiting) if waiting else None


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


def current_seed() -> int:
    """The seed of the :func:`seqlab.run` this task belongs to."""
    seed = getattr(_local, "seed", None)
    if seed is None:
        raise RuntimeError("current_seed() must be called inside seqlab.run")
    return int(seed)


def last_seed() -> int | None:
    """The seed of the most recently started :func:`seqlab.run` in this process."""
    return _last_seed


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: Any,
    seed: int | None = None,
    virtual_time: bool = True,
    recorder: Recorder | None = None,
) -> T:
    """Run ``async_fn(*args)`` like :func:`trio.run`, but reproducibly.

    The scheduler draws from an RNG seeded with ``seed``, so the same program and seed give
    the same interleaving and (with a ``recorder``) a byte-identical trace. ``seed=None`` picks
    a random seed; it is stored on the recorder, returned by :func:`seqlab.last_seed`, and added
    as a note to any exception, so every run can be replayed.

    With ``virtual_time`` (the default) the clock starts at 0 and jumps ahead whenever every
    task is blocked: ``await trio.sleep(3600)`` returns at once with ``trio.current_time()``
    at 3600. If every task is blocked and nothing could wake them, :class:`Deadlock` is raised.

    Example::

        async def main():
            await trio.sleep(60)
            return trio.current_time()

        assert seqlab.run(main, seed=7) == 60.0

    The run happens on a thread of its own, so it is safe to call from inside another trio
    run (such as a notebook kernel's loop): that run is paused while this one runs, and its
    scheduling is untouched. Ctrl-C cancels the run.
    """
    _check_async_fn(async_fn)
    if seed is None:
        seed = random.SystemRandom().randrange(_SEED_LIMIT)
    else:
        _check_seed(seed)
    if not isinstance(virtual_time, bool):
        raise TypeError(f"virtual_time must be True or False, got {virtual_time!r}")
    if recorder is not None and not isinstance(recorder, Recorder):
        raise TypeError(f"recorder must be a seqlab.Recorder, got {type(recorder).__name__}")
    global _last_seed
    _last_seed = seed
    if recorder is not None:
        recorder.seed = seed
    state = _Run(async_fn, args, seed, virtual_time, recorder)
    result: list[outcome.Outcome[Any]] = []
    thread = threading.Thread(
        target=lambda: result.append(outcome.capture(_run_in_thread, state)),
        name=f"seqlab.run seed={seed}",
        daemon=True,
    )
    _install_hooks()
    try:
        thread.start()
        _join(thread, state)
    finally:
        _restore_hooks()
    try:
        return result[0].unwrap()
    except BaseException as exc:
        if sys.version_info >= (3, 11) and not isinstance(exc, Deadlock):
            exc.add_note(f"seqlab: replay this run with seed={seed}")
        raise


def _join(thread: threading.Thread, state: _Run) -> None:
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        if state.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                state.token.run_sync_soon(state.scope.cancel)
        thread.join()
        raise


def _run_in_thread(state: _Run) -> Any:
    _local.rng = random.Random(state.seed)
    _local.seed = state.seed
    instruments: list[trio.abc.Instrument] = []
    if state.recorder is not None:
        instruments.append(state.recorder._lifecycle)
        state.recorder._lifecycle_users += 1
    clock = None
    if state.virtual_time:
        from trio.testing import MockClock

        clock = MockClock()
    try:
        value = trio.run(state.main, clock=clock, instruments=instruments)
    except BaseException as exc:
        if state.deadlock is not None:
            raise state.deadlock from _unwrap_cancelled(exc)
        raise
    finally:
        _local.rng = None
        _local.seed = None
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


# --------------------------------------------------------------------------- exploration


@dataclass(frozen=True)
class Failure:
    """One explored run that went wrong: its ``seed``, the ``error`` and its ``trace``.

    ``error`` is the exception the run raised, or ``None`` when it completed but ``check``
    rejected its trace. Replay it with ``seqlab.run(fn, seed=failure.seed)``.
    """

    seed: int
    error: BaseException | None
    trace: Recorder

    def __str__(self) -> str:
        if self.error is None:
            return f"seed {self.seed}: the check returned false"
        return f"seed {self.seed}: {type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class ExploreResult:
    """What :func:`seqlab.explore` found: ``runs`` tried, the ``failures`` among them."""

    runs: int
    failures: list[Failure]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failing_seeds(self) -> list[int]:
        return [f.seed for f in self.failures]

    def __str__(self) -> str:
        if self.ok:
            return f"explored {self.runs} schedules: all passed"
        seeds = ", ".join(str(s) for s in self.failing_seeds[:10])
        more = ", ..." if len(self.failures) > 10 else ""
        return (
            f"explored {self.runs} schedules: {len(self.failures)} failed (seeds {seeds}{more})\n"
            f"first failure: {self.failures[0]}"
        )


def explore(
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
    seeds: Iterable[int] = range(100),
    check: Callable[[Recorder], Any] | None = None,
    virtual_time: bool = True,
) -> ExploreResult:
    """Run ``async_fn(*args)`` once per seed and collect the runs that fail.

    A run fails when it raises (a deadlock included) or when ``check(recorder)`` returns a
    false value or raises. Each failure keeps its seed, error and trace; replay one exactly
    with ``seqlab.run(async_fn, *args, seed=failure.seed)``.

    Example::

        result = seqlab.explore(transfer_race, seeds=range(200))
        if not result.ok:
            print(result.failures[0].trace.to_text())
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
    failures = []
    for seed in seed_list:
        recorder = Recorder()
        error: BaseException | None = None
        try:
            run(async_fn, *args, seed=seed, virtual_time=virtual_time, recorder=recorder)
            passed = True if check is None else bool(check(recorder))
        except Exception as exc:
            error, passed = exc, False
        if not passed:
            failures.append(Failure(seed, error, recorder))
    return ExploreResult(len(seed_list), failures)
