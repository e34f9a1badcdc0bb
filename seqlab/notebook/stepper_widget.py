"""The stepper as a widget: you are the scheduler, with buttons.

:class:`StepperWidget` wraps a :class:`seqlab.Stepper`. It shows every task (can step, waits
on what, done, failed), the line each is paused at with a few lines around it, and the shared
state you asked to watch; its buttons step a task, run round-robin until something happens,
undo, reset, and let the explorer find a failure that you then replay one step at a time::

    account = {"balance": 0}
    widget = StepperWidget(two_tellers, watch=["account"], namespace=globals(), goal="fail")
    widget                          # click teller-0, teller-1, ... until the balance is wrong

The buttons call the same methods you can call yourself (:meth:`StepperWidget.step`,
:meth:`~StepperWidget.run_until`, :meth:`~StepperWidget.undo`, :meth:`~StepperWidget.reset`,
:meth:`~StepperWidget.explore`, :meth:`~StepperWidget.replay_next`). The program runs on the
stepper's own thread, so a click is answered even while the cell that made the widget has long
returned, in any kernel.

A level: give ``goal`` (``"fail"``, ``"deadlock"``, ``"stale:TASK@OBJECT"`` or a callable on the
stepper). The widget says when it is reached and keeps the path in its state (``level``: the
goal in words and as written, whether it was reached, and the schedule string), which a saved
notebook stores; a check cell grades it with
:func:`seqlab.stepper.level_reached`, replaying that schedule.

Like the other views, its output carries a deterministic ``text/plain`` form and static HTML
(the tasks, the path as text, the schedule), which survive nbconvert and nbval.
"""

from __future__ import annotations

import pathlib
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from html import escape
from typing import Any

import anywidget
import traitlets

from ..runtime import Deadlock
from ..schedule import Schedule
from ..stepper import StaleRead, Stepper, goal_reached, parse_goal
from ._report import describe_error, safe_repr

__all__ = ["StepperWidget"]

_STATIC = pathlib.Path(__file__).parent / "static"
#: "run until something happens" gives up after this many steps without anything happening.
RUN_LIMIT = 500
_SCENARIO_FILE = re.compile(r" of <seqlab scenario \d+>")

Watch = Callable[[], dict[str, Any]]


def _goal_text(goal: Any) -> str:
    if goal is None:
        return ""
    if goal == "fail":
        return "make the program fail"
    if goal == "deadlock":
        return "reach a deadlock"
    if isinstance(goal, StaleRead):
        return goal.describe()
    doc = (getattr(goal, "__doc__", None) or "").strip().splitlines()
    return doc[0] if doc else getattr(goal, "__name__", "the goal")


def _goal_spec(goal: Any) -> str:
    """The goal as ``level_reached(goal=...)`` takes it in writing ("" for a callable)."""
    if isinstance(goal, (str, StaleRead)):
        return str(goal)
    return ""


def _parse_watch(watch: Any) -> tuple[list[str], Watch | None]:
    if watch is None:
        return [], None
    if isinstance(watch, str):
        return [w for w in re.split(r"[,\s]+", watch) if w], None
    if callable(watch):
        return [], watch
    if isinstance(watch, Iterable):
        names = list(watch)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"watch must hold expressions as str, got {type(name).__name__}")
        return names, None
    raise TypeError(
        f"watch must be names (a str or a list of str) or a callable returning a dict, "
        f"got {type(watch).__name__}"
    )


class StepperWidget(anywidget.AnyWidget):
    """Step a program task by task with buttons; see the module docstring."""

    _esm = _STATIC / "stepper.js"
    _css = _STATIC / "stepper.css"

    title = traitlets.Unicode("").tag(sync=True)
    #: One dict per task: name, state, waits_on, line, context (list of lines).
    tasks: traitlets.List[Any] = traitlets.List().tag(sync=True)
    runnable = traitlets.List(traitlets.Unicode()).tag(sync=True)
    path = traitlets.List(traitlets.Unicode()).tag(sync=True)
    schedule = traitlets.Unicode("").tag(sync=True)
    steps = traitlets.Int(0).tag(sync=True)
    finished = traitlets.Bool(False).tag(sync=True)
    #: How the program ended, in words ("" while it runs).
    outcome = traitlets.Unicode("").tag(sync=True)
    #: [[expression, value as text], ...] read between steps.
    watched: traitlets.List[Any] = traitlets.List().tag(sync=True)
    goal = traitlets.Unicode("").tag(sync=True)
    goal_reached = traitlets.Bool(False).tag(sync=True)
    #: What a grader needs: {"goal", "reached", "schedule", "path"} (empty without a goal).
    level = traitlets.Dict().tag(sync=True)
    #: The explorer's failing path (task names), replayed with replay_next().
    plan = traitlets.List(traitlets.Unicode()).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        program: Stepper | Callable[..., Awaitable[Any]],
        *args: Any,
        watch: Any = None,
        namespace: dict[str, Any] | None = None,
        goal: Any = None,
        title: str = "",
        explore_seeds: int = 200,
    ) -> None:
        if goal is not None:
            goal = parse_goal(goal)  # "stale:TASK@OBJECT" becomes a StaleRead
        if namespace is not None and not isinstance(namespace, dict):
            raise TypeError(f"namespace must be a dict, got {type(namespace).__name__}")
        if not isinstance(title, str):
            raise TypeError(f"title must be a str, got {type(title).__name__}")
        if isinstance(explore_seeds, bool) or not isinstance(explore_seeds, int):
            raise TypeError(f"explore_seeds must be an int, got {type(explore_seeds).__name__}")
        if explore_seeds < 1:
            raise ValueError(f"explore_seeds must be >= 1, got {explore_seeds}")
        self._names, self._watch_fn = _parse_watch(watch)
        if isinstance(program, Stepper):
            if args:
                raise TypeError("args go with a function, not with a Stepper already made")
            stepper = program
        else:
            stepper = Stepper(program, *args)  # checks that it is an async function
        self.stepper = stepper
        self._namespace = namespace if namespace is not None else {}
        self._locals: dict[str, Any] = {}
        self._goal = goal
        self._explore_seeds = explore_seeds
        self._lock = threading.RLock()
        self._display_handle: Any = None
        self._timeline: Any = None
        self._timeline_handle: Any = None
        super().__init__(title=title or f"You are the scheduler: {stepper._name(0)}")
        self.goal = _goal_text(goal)
        self.on_msg(self._on_message)
        self._sync()

    # ------------------------------------------------------------------ actions

    def step(self, name: str) -> None:
        """Let the task ``name`` take one step."""
        with self._lock:
            self.stepper.step(name)
            self._sync()

    def run_until(self) -> int:
        """Step the runnable tasks round-robin until something happens: a task finishes,
        fails or starts waiting, the program ends, or the goal is reached. Returns the
        number of steps taken."""
        with self._lock:
            stepper = self.stepper
            before = {t.name: t.state for t in stepper.tasks}
            last = stepper.path[-1] if stepper.path else None
            taken = 0
            while not stepper.finished and taken < RUN_LIMIT:
                names = stepper.runnable
                # round-robin: the next task after the last one that stepped, in creation order
                order = [t.name for t in stepper.tasks]
                mark = order.index(last) if last in order else -1
                later = [n for n in names if order.index(n) > mark]
                choice = later[0] if later else names[0]
                stepper.step(choice)
                last = choice
                taken += 1
                if self._goal is not None and goal_reached(stepper, self._goal):
                    break
                now = {t.name: t.state for t in stepper.tasks}
                if any(
                    state != "runnable" and before.get(name) != state for name, state in now.items()
                ):
                    break
                before = now
            self._sync()
            return taken

    def undo(self) -> None:
        """Take back the last step."""
        with self._lock:
            self.stepper.undo()
            self._sync()

    def reset(self) -> None:
        """Start the program again (the explorer's path, if any, stays to be replayed)."""
        with self._lock:
            self.stepper.reset()
            self._locals = {}
            self._sync()

    def explore(self) -> bool:
        """Let the explorer look for a failing schedule; if it finds one, shrink it, start
        again and keep its path in :attr:`plan` for :meth:`replay_next`. Returns whether it
        found one.

        With a stale-read goal (:class:`~seqlab.stepper.StaleRead`) the explorer looks for a
        run that reaches the goal instead (a run that merely raises is not one): the plan
        is that run's path, shrunk only when the shrunk run still reaches the goal.
        """
        from ..runtime import explore

        with self._lock:
            stepper = self.stepper
            goal = self._goal
            stale = goal if isinstance(goal, StaleRead) else None
            result = explore(
                stepper._fn,
                *stepper._args,
                seeds=range(self._explore_seeds),
                strategy="auto",
                check=None if stale is None else (lambda rec: not stale.found(rec.events)),
            )
            failures = list(result.failures)
            if stale is not None:
                failures = [f for f in failures if stale.found(f.trace.events)]
            if not failures:
                what = "failed" if stale is None else "reached the goal"
                self.message = f"the explorer tried {result.runs} schedules: none {what}"
                return False
            failure = failures[0]
            shrunk = failure.shrink()
            if stale is None or stale.found(shrunk.trace.events):
                failure = shrunk
            self.plan = stepper.follow(failure.schedule)
            stepper.reset()
            self._locals = {}
            if stale is not None:
                found = f"a path where {stale.task} writes from a stale read"
            else:
                found = type(failure.error).__name__ if failure.error is not None else "a failure"
            self.message = (
                f"the explorer found {found} in {len(self.plan)} steps; "
                "step through it with 'next step of the failure'"
            )
            self._sync(keep_message=True)
            return True

    def replay_next(self) -> None:
        """Take the next step of the explorer's path (after :meth:`explore`)."""
        with self._lock:
            plan, path = list(self.plan), self.stepper.path
            if not plan:
                raise RuntimeError("no failure to replay yet: explore() first")
            if path != plan[: len(path)]:
                raise RuntimeError(
                    "the path left the explorer's: reset() to replay the failure from the start"
                )
            if len(path) >= len(plan):
                raise RuntimeError("the explorer's path is all replayed")
            self.stepper.step(plan[len(path)])
            self._sync()

    def show(self, timeline: bool = True) -> None:
        """Display the widget and keep its output in step: after every action the cell's
        saved output (text, HTML and the level in its metadata) shows the path so far.

        With ``timeline``, a :class:`~seqlab.notebook.Timeline` of the run so far is shown
        under it and redrawn after every action: the path, task by task, in event order.
        """
        from IPython.display import display

        self._display_handle = display(self, display_id=True)
        if timeline:
            self._timeline = self._make_timeline()
            self._timeline_handle = display(self._timeline, display_id=True)

    def _make_timeline(self) -> Any:
        from .widgets import Timeline

        return Timeline(self.stepper.recorder, live=False, title="the path so far")

    def _redraw_timeline(self) -> None:
        """Redraw the same Timeline widget from the stepper's recorder (undo and reset give
        the stepper a new one), so the browser keeps one view and only its state changes."""
        timeline = self._timeline
        if timeline is None:
            return
        recorder = self.stepper.recorder
        with timeline._lock:
            primitive, options = timeline._options
            model = timeline._model_class(primitive, **options)
            model.feed_all(list(recorder.events))
            timeline._trace_model = model
            timeline._source = recorder
            timeline._push()
        if self._timeline_handle is not None:
            self._timeline_handle.update(timeline)  # the saved snapshot follows too

    def close(self) -> None:
        stepper = getattr(self, "stepper", None)  # None: __init__ refused its arguments
        if stepper is not None:
            stepper.close()
        if getattr(self, "_timeline", None) is not None:
            self._timeline.close()
        super().close()

    # ------------------------------------------------------------------ the front end's clicks

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        action = content.get("action")
        try:
            if action == "step":
                self.step(str(content.get("task", "")))
            elif action == "run":
                self.run_until()
            elif action == "undo":
                self.undo()
            elif action == "reset":
                self.reset()
            elif action == "explore":
                self.explore()
            elif action == "replay":
                self.replay_next()
            else:
                self.message = f"unknown action {action!r}"
        except (ValueError, RuntimeError) as exc:
            # A stale click (the task can no longer step, the program ended): say so.
            self.message = str(exc)

    # ------------------------------------------------------------------ state

    def _read_watched(self) -> list[list[str]]:
        stepper = self.stepper
        if self._watch_fn is not None:
            try:
                values = self._watch_fn()
            except Exception as exc:
                return [["watch()", f"raised {type(exc).__name__}: {exc}"]]
            if not isinstance(values, dict):
                return [["watch()", f"returned {type(values).__name__}, not a dict"]]
            return [[str(k), safe_repr(v)] for k, v in values.items()]
        if not self._names:
            return []
        main = stepper._controller.tasks[0] if stepper._controller.tasks else None
        if main is not None and not stepper.finished:
            # The program's own frames, outermost first: a name in a function the program
            # awaits (``account`` inside ``deposits``) shadows the same name further out.
            from ..explain import _EXAMPLES_DIR, _SEQLAB_DIR, _TRIO_DIR

            seen: dict[str, Any] = {}
            inside = False
            try:
                for frame, _ in main.iter_await_frames():
                    inside = inside or frame.f_code is getattr(stepper._fn, "__code__", None)
                    filename = frame.f_code.co_filename
                    internal = filename.startswith(_TRIO_DIR) or (
                        filename.startswith(_SEQLAB_DIR) and not filename.startswith(_EXAMPLES_DIR)
                    )
                    if inside and not internal:
                        seen.update(frame.f_locals)
            except Exception:
                seen = {}
            if seen:
                self._locals = seen
        rows = []
        for name in self._names:
            try:
                value = eval(name, self._namespace, self._locals)
            except NameError:
                rows.append([name, "(not defined yet)"])
                continue
            except Exception as exc:
                rows.append([name, f"raised {type(exc).__name__}: {exc}"])
                continue
            rows.append([name, safe_repr(value)])
        return rows

    def _sync(self, keep_message: bool = False) -> None:
        stepper = self.stepper
        tasks = []
        for t in stepper.tasks:
            tasks.append(
                {
                    "name": t.name,
                    "state": t.state,
                    "waits_on": t.waits_on,
                    "line": _SCENARIO_FILE.sub("", t.line),
                    "context": list(t.context),
                }
            )
        reached = self._goal is not None and goal_reached(stepper, self._goal)
        schedule = stepper.schedule
        if self._goal is not None and callable(self._goal) and not stepper.finished:
            # A goal met mid-run: the step count says where the path ends.
            schedule = str(Schedule(Schedule.parse(schedule).decisions, stepper.steps))
        outcome = ""
        if stepper.finished:
            error = stepper.error
            if error is None:
                outcome = "returned" + (
                    "" if stepper.result is None else f" {safe_repr(stepper.result)}"
                )
            elif isinstance(error, Deadlock):
                outcome = "deadlock: " + str(error).splitlines()[0]
            else:
                outcome = "failed: " + describe_error(error, stepper.recorder).rstrip()
        with self.hold_sync():
            self.tasks = tasks
            self.runnable = stepper.runnable
            self.path = stepper.path
            self.steps = stepper.steps
            self.finished = stepper.finished
            self.schedule = schedule
            self.outcome = outcome
            self.watched = self._read_watched()
            self.goal_reached = reached
            if self._goal is not None:
                self.level = {
                    "goal": self.goal,
                    # what level_reached(goal=...) takes, when the goal has a written form
                    "spec": _goal_spec(self._goal),
                    "reached": reached,
                    "schedule": schedule,
                    "path": stepper.path,
                }
            if not keep_message:
                self.message = "goal reached: " + self.goal if reached else ""
        if self._display_handle is not None:
            self._display_handle.update(self)
        self._redraw_timeline()

    # ------------------------------------------------------------------ static forms

    def __repr__(self) -> str:
        lines = [f"{self.title}: step {self.steps}"]
        if self.goal:
            lines[0] += f"; goal: {self.goal} ({'REACHED' if self.goal_reached else 'not yet'})"
        for t in self.tasks:
            detail = t["waits_on"] if t["state"] == "waiting" else t["line"]
            lines.append(f"  {t['name']}: {t['state']}" + (f", {detail}" if detail else ""))
        for name, value in self.watched:
            lines.append(f"  {name} = {value}")
        lines.append("path: " + (", ".join(self.path) or "(no steps yet)"))
        if self.outcome:
            lines.append("ended: " + self.outcome.replace("\n", "\n  "))
        lines.append(f"schedule: {self.schedule}")
        return "\n".join(lines)

    def to_html(self) -> str:
        rows = []
        for t in self.tasks:
            detail = t["waits_on"] if t["state"] == "waiting" else t["line"]
            rows.append(
                f'<tr class="seqlab-stepper-{escape(t["state"])}"><td>{escape(t["name"])}</td>'
                f"<td>{escape(t['state'])}</td><td>{escape(detail)}</td></tr>"
            )
        watched = "".join(
            f"<tr><td><code>{escape(n)}</code></td><td><code>{escape(v)}</code></td></tr>"
            for n, v in self.watched
        )
        goal = ""
        if self.goal:
            goal = (
                f"<p><b>goal:</b> {escape(self.goal)} "
                f"({'reached' if self.goal_reached else 'not yet'})</p>"
            )
        ended = f"<pre>{escape(self.outcome)}</pre>" if self.outcome else ""
        return (
            '<div class="seqlab-snapshot seqlab-stepper-static">'
            f'<div class="seqlab-title">{escape(self.title)}</div>{goal}'
            f"<table><tr><th>task</th><th>state</th><th>where</th></tr>{''.join(rows)}</table>"
            + (f"<table>{watched}</table>" if watched else "")
            + f"<p><b>path:</b> {escape(', '.join(self.path) or '(no steps yet)')}</p>{ended}"
            f"<p><b>schedule:</b> <code>{escape(self.schedule)}</code></p></div>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        data = dict(data)
        data["text/plain"] = repr(self)
        data["text/html"] = self.to_html()
        if self.level:
            # In the saved notebook, beside the output: what a grader replays.
            metadata = {**dict(metadata or {}), "seqlab": {"level": dict(self.level)}}
        return data, metadata
