"""You are the scheduler: run real trio code one step at a time, choosing who steps.

A :class:`Stepper` runs a program under seqlab's controlled scheduler (see
:mod:`seqlab.schedule`) and pauses before every step. You look at the tasks (which can run,
what the others wait on, the line each is at) and choose one; it runs to its next checkpoint
and the program pauses again. Every path you take is a schedule string that
``seqlab.run(fn, *args, schedule=stepper.schedule)`` replays exactly::

    stepper = seqlab.Stepper(two_tellers)
    while not stepper.finished:
        stepper.step(stepper.runnable[-1])     # always the newest task: a lost update
    print(stepper.error)                        # AssertionError: lost update ...
    seqlab.run(two_tellers, schedule=stepper.schedule)   # fails the same way

The program runs on a thread of its own that waits for your choices, so a notebook kernel
stays free between clicks. :meth:`close` abandons a run (its tasks are cancelled).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import outcome
import trio

from .runtime import (
    _MAIN_CODE,
    Deadlock,
    _callable_name,
    _check_async_fn,
    _Run,
    _Session,
    run,
)
from .schedule import Controller, Order, Policy, Schedule, ScheduleMismatch
from .trace import Recorder
from .waits import describe_wait

__all__ = [
    "Stepper",
    "TaskState",
    "StaleRead",
    "GOALS",
    "goal_reached",
    "level_reached",
    "parse_goal",
]

#: The goals a level can name in words (and ``stale:TASK[@OBJECT]``, see :class:`StaleRead`);
#: a goal can also be a callable on the :class:`Stepper`.
GOALS = ("fail", "deadlock")

#: How a stale-read goal is written, for error messages and help.
STALE_SYNTAX = "stale:TASK[@OBJECT]"


@dataclass(frozen=True)
class StaleRead:
    """A level's goal: make ``task`` act on a stale read of ``obj``.

    A program's own objects show their reads and writes in the trace
    (``seqlab.emit("account", "read", balance=...)`` and ``"write"``, as the lessons'
    ``Account`` and ``Ledger`` do). The goal is reached when ``task`` **writes** an object
    after reading it, while **another task wrote that object in between**: the value the
    task read was stale by the time it wrote, and its write buries the other task's newer
    value (a lost update, and you chose who loses it). ``obj`` names the object as the trace
    does (``"account"``); ``None`` means any object. Written ``stale:TASK`` or
    ``stale:TASK@OBJECT`` (:func:`parse_goal`); calling it with a stepper says whether the
    stepper's run so far reached it, so it goes wherever a callable goal goes.
    """

    task: str
    obj: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise ValueError(f"task must be a task's name, got {self.task!r}")
        if self.obj is not None and (not isinstance(self.obj, str) or not self.obj.strip()):
            raise ValueError(
                f"obj must be an object's name as the trace shows it, got {self.obj!r}"
            )

    def __str__(self) -> str:
        return f"stale:{self.task}" + ("" if self.obj is None else f"@{self.obj}")

    def describe(self) -> str:
        """The goal in words, as the widget shows it."""
        what = "a value" if self.obj is None else self.obj
        return f"make {self.task} write {what} from a stale read (another task wrote it in between)"

    def found(self, events: Any) -> bool:
        """Whether the trace ``events`` hold such a write."""
        read: dict[str, bool] = {}  # object -> another task has written it since our read
        for event in events:
            if event.kind not in ("read", "write"):
                continue
            if self.obj is not None and event.primitive != self.obj:
                continue
            mine = event.task == self.task
            if event.kind == "read" and mine:
                read[event.primitive] = False
            elif event.kind == "write" and not mine:
                if event.primitive in read:
                    read[event.primitive] = True
            elif event.kind == "write" and read.pop(event.primitive, False):
                return True  # our write, over a value another task wrote since our read
        return False

    def __call__(self, stepper: Stepper) -> bool:
        return self.found(stepper.recorder.events)


def parse_goal(goal: Any) -> Any:
    """``goal`` as a level takes it: ``"fail"``, ``"deadlock"``, a callable (a
    :class:`StaleRead` included), or the text ``"stale:TASK"`` / ``"stale:TASK@OBJECT"``,
    which becomes a :class:`StaleRead`. Anything else is refused naming ``goal``."""
    if isinstance(goal, str):
        if goal in GOALS:
            return goal
        if goal.startswith("stale:"):
            task, _, obj = goal.removeprefix("stale:").partition("@")
            if task.strip() and (not _ or obj.strip()):
                return StaleRead(task.strip(), obj.strip() if _ else None)
            raise ValueError(
                f"goal must be written {STALE_SYNTAX} (a task's name, and an object's "
                f"name after @ if you give one), got {goal!r}"
            )
        raise ValueError(
            f"goal must be one of {', '.join(GOALS)}, {STALE_SYNTAX} or a callable, got {goal!r}"
        )
    if not callable(goal):
        raise TypeError(
            f"goal must be 'fail', 'deadlock', '{STALE_SYNTAX}' or a callable, "
            f"got {type(goal).__name__}"
        )
    return goal


@dataclass(frozen=True)
class TaskState:
    """One task as the stepper sees it between two steps.

    ``state`` is ``"runnable"``, ``"waiting"`` (``waits_on`` says on what), ``"done"``,
    ``"failed"`` or ``"cancelled"``; ``line`` is where its code is paused, with ``context``
    lines around it.
    """

    name: str
    state: str
    waits_on: str
    line: str
    context: tuple[str, ...]


class _Choice(Policy):
    """Pauses the run before each step and runs the task the person chose."""

    every_step = True

    def __init__(self, stepper: Stepper, replay: list[int]) -> None:
        super().__init__()
        self.stepper = stepper
        self.replay = replay  # task ids to choose without pausing (undo replays a prefix)

    def decide(self, step: int, present: list[int]) -> list[int]:
        stepper = self.stepper
        chosen = self.replay[step] if step < len(self.replay) else stepper._pause(present)
        if chosen not in present:
            chosen = present[0]  # the run was abandoned: let it wind down
        stepper._history.append(chosen)
        if len(present) > 1:
            order = Order(step, (chosen,))
            self.applied.append(order)
        return [chosen]


class Stepper:
    """Run ``async_fn(*args)`` step by step, choosing yourself which task takes each step.

    ``runnable`` names the tasks that can take a step now; ``step(name)`` runs that one to
    its next checkpoint; ``tasks`` describes every task; ``finished``, ``error`` and
    ``result`` say how the program ended; ``schedule`` is the path so far as a string that
    :func:`seqlab.run` replays. ``undo()`` takes back the last step (by replaying the path
    without it) and ``reset()`` starts over. Virtual time applies as in :func:`seqlab.run`:
    when every task sleeps, the clock jumps to the next timer.

    Cancellation: :meth:`close` cancels the program's tasks and waits for its thread; a
    stepper that is garbage collected unfinished is closed the same way.
    """

    def __init__(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        _check_async_fn(async_fn)
        self._fn = async_fn
        self._args = args
        self._start([])

    # ------------------------------------------------------------------ the run thread

    def _start(self, replay: list[int]) -> None:
        self._lock = threading.Condition()
        self._choice: int | None = None
        self._present: list[int] | None = None
        self._done = False
        self._outcome: outcome.Outcome[Any] | None = None
        self._history: list[int] = []
        self._pauses = 0
        self.recorder = Recorder()
        self._policy = _Choice(self, replay)
        self._controller = Controller(0, self._policy, _MAIN_CODE, record=True)
        self._state = _Run(self._fn, self._args, 0, True, self.recorder, self._controller)
        self._session = _Session().__enter__()
        self._thread = threading.Thread(target=self._main, name="seqlab.Stepper", daemon=True)
        self._thread.start()
        self._wait_for_pause()

    def _main(self) -> None:
        result, _ = self._session._run_here(self._state)
        with self._lock:
            self._outcome = result
            self._done = True
            self._present = None
            self._lock.notify_all()

    def _pause(self, present: list[int]) -> int:
        """In the run thread: show ``present`` and wait for a choice."""
        with self._lock:
            self._present = present
            self._choice = None
            self._pauses += 1
            self._lock.notify_all()
            while self._choice is None:
                self._lock.wait()
            chosen, self._choice = self._choice, None
            self._present = None
            return chosen

    def _wait_for_pause(self) -> None:
        with self._lock:
            while self._present is None and not self._done:
                self._lock.wait()
        if self._done:
            self._thread.join()
            self._session.__exit__(None, None, None)

    # ------------------------------------------------------------------ what you see

    def _name(self, task_id: int) -> str:
        if task_id == 0:
            return _callable_name(self._fn)  # what the trace calls the main task too
        return self.recorder.label(self._controller.tasks[task_id])

    @property
    def runnable(self) -> list[str]:
        """The tasks that can take a step now, by name, in creation order."""
        present = self._present
        return [] if present is None else [self._name(i) for i in present]

    @property
    def finished(self) -> bool:
        """Whether the program has ended (returned, raised or deadlocked)."""
        return self._done

    @property
    def error(self) -> BaseException | None:
        """The exception the program ended with (a :class:`seqlab.Deadlock` included)."""
        if self._outcome is None or not isinstance(self._outcome, outcome.Error):
            return None
        error = self._outcome.error
        if self._state.deadlock is not None:
            return self._state.deadlock
        return error

    @property
    def result(self) -> Any:
        """What the program returned (``None`` until it has)."""
        return self._outcome.value if isinstance(self._outcome, outcome.Value) else None

    @property
    def steps(self) -> int:
        """How many steps have been taken."""
        return len(self._history)

    @property
    def path(self) -> list[str]:
        """Who took each step so far, by name."""
        return [self._name(i) for i in self._history]

    @property
    def schedule(self) -> str:
        """The path so far as a schedule string; once finished, ``seqlab.run(fn, *args,
        schedule=...)`` replays the whole run exactly."""
        decisions = tuple(self._policy.applied)
        return str(Schedule(decisions, self._controller.step if self._done else None))

    @property
    def tasks(self) -> list[TaskState]:
        """Every task of the program so far, in creation order."""
        from .explain import _where

        states = []
        present = set(self._present or ())
        exits = {e.task: e.data.get("outcome") for e in self.recorder.events if e.kind == "exit"}
        for i, task in enumerate(self._controller.tasks):
            name = self._name(i)
            if name in exits:
                how = str(exits[name] or "returned")
                state = "done" if how == "returned" else how.split(" ")[0].rstrip(":")
                state = {"raised": "failed"}.get(state, state)
                states.append(TaskState(name, state, "", "", ()))
                continue
            started = i != 0 or self.steps > 0
            where = _where(task) if started else "its start"
            context = _context(task) if started else ()
            if i in present:
                states.append(TaskState(name, "runnable", "", where, context))
            else:
                waits_on, _ = describe_wait(task)
                states.append(TaskState(name, "waiting", waits_on, where, context))
        return states

    # ------------------------------------------------------------------ what you do

    def step(self, name: str) -> None:
        """Let the task called ``name`` take one step (run to its next checkpoint)."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a task name (str), got {type(name).__name__}")
        if self._done:
            raise RuntimeError("the program has finished: reset() to start again")
        names = self.runnable
        if name not in names:
            raise ValueError(
                f"name must be one of the tasks that can step now ({', '.join(names)}), "
                f"got {name!r}"
            )
        assert self._present is not None
        chosen = self._present[names.index(name)]
        with self._lock:
            pauses = self._pauses
            self._choice = chosen
            self._lock.notify_all()
            while self._pauses == pauses and not self._done:
                self._lock.wait()
        self._wait_for_pause()

    def undo(self) -> None:
        """Take back the last step: the program is replayed up to the step before it."""
        if not self._history:
            return
        path = self._history[:-1]
        self.close()
        self._start(path)

    def reset(self) -> None:
        """Start the program again from its first step."""
        self.close()
        self._start([])

    def follow(self, schedule: str, *, steps: int | None = None) -> list[str]:
        """Start again and take the steps ``schedule`` takes; return who took each, by name.

        ``schedule`` may come from anywhere a schedule string does: this stepper, or a
        failure :func:`seqlab.explore` found (its batches become one task per step, in the
        order the batch ran them). ``steps`` stops after that many steps (``None``: the whole
        run). The stepper is left where the path ends, so :attr:`path` lists it and
        :meth:`undo` walks it back.
        """
        if not isinstance(schedule, str):
            raise TypeError(f"schedule must be a schedule string, got {type(schedule).__name__}")
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int) or steps < 0
        ):
            raise ValueError(f"steps must be an int >= 0 or None, got {steps!r}")
        order = _task_order(self._fn, self._args, Schedule.parse(schedule))
        if steps is not None:
            order = order[:steps]
        self.close()
        self._start(order)
        return self.path

    def close(self) -> None:
        """Abandon the run: cancel the program's tasks and wait for its thread to end."""
        if self._done:
            return
        self._state.interrupt()
        while not self._done:
            with self._lock:
                present = self._present
                if present is not None:
                    self._choice = present[0]
                    self._lock.notify_all()
                self._lock.wait(0.05)
        self._thread.join()
        self._session.__exit__(None, None, None)

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self.close()

    def __repr__(self) -> str:
        if self._done:
            how = "failed" if self.error is not None else "finished"
            return f"<Stepper {how} after {self.steps} steps>"
        return f"<Stepper at step {self.steps}: can step {', '.join(self.runnable)}>"


class _Tracing(Policy):
    """Replays a schedule and notes which task ran, one per step, in the order it ran."""

    every_step = True

    def __init__(self, decisions: tuple[Any, ...]) -> None:
        super().__init__(decisions, strict=True)
        self.ran: list[int] = []

    def decide(self, step: int, present: list[int]) -> list[int]:
        order = super().decide(step, present)
        self.ran.extend(order)
        return order


def _task_order(
    fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], schedule: Schedule
) -> list[int]:
    """The ids of the tasks that ``schedule`` runs, one per stepper step."""
    policy = _Tracing(schedule.decisions)
    controller = Controller(0, policy, _MAIN_CODE)
    state = _Run(fn, args, 0, True, None, controller)
    with _Session() as session:
        session._run_here(state)
    if policy.mismatch is not None:
        raise ScheduleMismatch(policy.mismatch)
    return policy.ran


def goal_reached(stepper: Stepper, goal: str | Callable[[Stepper], Any]) -> bool:
    """Whether ``stepper`` has reached ``goal``.

    ``"fail"``: the program ended with an exception (an ``AssertionError`` that caught a lost
    update, say) other than a deadlock; ``"deadlock"``: it ended in a :class:`seqlab.Deadlock`;
    ``"stale:TASK[@OBJECT]"``: TASK wrote from a stale read (:class:`StaleRead`), at any step;
    a callable is asked ``goal(stepper)`` (between steps, so it may look at ``stepper.tasks``).
    """
    goal = parse_goal(goal)
    if goal == "fail":
        return (
            stepper.finished
            and stepper.error is not None
            and not isinstance(stepper.error, Deadlock)
        )
    if goal == "deadlock":
        return stepper.finished and isinstance(stepper.error, Deadlock)
    assert callable(goal)
    return bool(goal(stepper))


def _check_goal(goal: Any) -> None:
    parse_goal(goal)


def level_reached(
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
    schedule: str,
    goal: str | Callable[[Stepper], Any] = "fail",
) -> bool:
    """Whether the path stored as ``schedule`` reaches ``goal`` on ``async_fn(*args)``: the
    grade of a "be the scheduler" level.

    For ``"fail"`` and ``"deadlock"`` the schedule must be a whole run (a finished stepper's
    :attr:`Stepper.schedule`, which ends with ``|steps``); it is replayed with
    :func:`seqlab.run` and the ending decides. A path that stops early, does not fit the
    program, or ends otherwise is ``False``. For a callable goal (a stale read included) the
    path is followed step by step (up to the schedule's step count) and the goal asked after
    each step, so only what the learner's own steps did counts.
    """
    _check_async_fn(async_fn)
    goal = parse_goal(goal)
    if not isinstance(schedule, str):
        raise TypeError(f"schedule must be a schedule string, got {type(schedule).__name__}")
    parsed = Schedule.parse(schedule)
    if parsed.steps is None:
        return False  # a path that stopped before the program ended
    if not callable(goal):
        recorder = Recorder()
        try:
            run(async_fn, *args, schedule=schedule, recorder=recorder)
        except ScheduleMismatch:
            return False
        except Deadlock:
            reached = goal == "deadlock"
        except Exception:
            reached = goal == "fail"
        else:
            return False
        # The ending must come where the path ends: a prefix with a step count glued on would
        # otherwise finish in lockstep and might fail without the learner's doing.
        return reached and Schedule.parse(recorder.schedule or "s1:").steps == parsed.steps
    try:
        order = _task_order(async_fn, args, parsed)[: parsed.steps]
    except ScheduleMismatch:
        return False
    stepper = Stepper(async_fn, *args)
    try:
        if goal(stepper):
            return True
        for task_id in order:
            if stepper.finished:
                break
            present = stepper._present or []
            if task_id not in present:
                return False
            stepper.step(stepper.runnable[present.index(task_id)])
            if goal(stepper):
                return True
        return False
    finally:
        stepper.close()


def _context(task: trio.lowlevel.Task, around: int = 2) -> tuple[str, ...]:
    """The lines around where ``task`` is paused (``>`` marks its line)."""
    import linecache

    from .explain import _user_frame

    frame = _user_frame(task)
    if frame is None:
        return ()
    filename, line = frame.f_code.co_filename, frame.f_lineno
    lines = []
    for n in range(max(1, line - around), line + around + 1):
        text = linecache.getline(filename, n).rstrip()
        if text or n <= line:
            lines.append(f"{'>' if n == line else ' '} {n:4} {text}")
    return tuple(lines)
