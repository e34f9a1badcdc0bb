"""Failing schedules made small and said in words.

:func:`shrink` looks for the fewest decisive choices that still fail the same way, each as
late as it can be; :func:`explain` replays a schedule and tells, for each choice, which task
waited, at which line, for how many steps, and who ran meanwhile. The replay's trace marks
each choice with a ``scheduler`` / ``decision`` event, so the timeline can draw it.
"""

from __future__ import annotations

import dataclasses
import inspect
import linecache
import os
import sys
from typing import Any

import trio

from .runtime import Failure, _Session
from .schedule import Decision, Hold, Order, Policy, Schedule
from .trace import Recorder

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["shrink", "explain"]

_TRIO_DIR = os.path.dirname(trio.__file__)
_SEQLAB_DIR = os.path.dirname(__file__)
_EXAMPLES_DIR = os.path.join(_SEQLAB_DIR, "examples")


def failure_kind(error: BaseException | None) -> str:
    """What kind of failure an error is: its type, or its leaves' types for a group."""
    if error is None:
        return "check"
    if isinstance(error, BaseExceptionGroup):
        leaves: list[str] = []
        stack: list[BaseException] = [error]
        while stack:
            e = stack.pop()
            if isinstance(e, BaseExceptionGroup):
                stack.extend(e.exceptions)
            else:
                leaves.append(type(e).__name__)
        return "group:" + ",".join(sorted(set(leaves)))
    return type(error).__name__


def shrink(failure: Failure, budget: int = 200) -> Failure:
    program = failure._program
    if program is None or not failure.schedule:
        return failure
    target = failure_kind(failure.error)
    decisions = list(Schedule.parse(failure.schedule).decisions)
    runs = 0

    def work(session: _Session) -> tuple[Any, Narrator]:
        nonlocal decisions

        def fails(candidate: list[Decision]) -> bool:
            nonlocal runs
            runs += 1
            attempt = program.attempt(session, 0, Policy(tuple(candidate)))
            return attempt.failed and failure_kind(attempt.error) == target

        if decisions and fails([]):
            decisions = []
        i = 0
        while i < len(decisions) and runs < budget:
            candidate = decisions[:i] + decisions[i + 1 :]
            if fails(candidate):
                decisions = candidate
            else:
                i += 1
        if len(decisions) > 1 or any(not isinstance(d, Hold) for d in decisions):
            # Many choices left, or orders and PCT ranges: one hold may do it alone, and a
            # hold is the simplest story to tell.
            log: list[tuple[int, ...]] = []
            program.attempt(session, 0, Policy(), present_log=log)
            single = _first_single_hold(log, fails, lambda: runs < budget)
            if single is not None:
                decisions = [single]
        for i in reversed(range(len(decisions))):
            d = decisions[i]
            if not isinstance(d, Hold):
                continue
            limit = decisions[i + 1].step if i + 1 < len(decisions) else None
            while runs < budget and (limit is None or d.step + 1 < limit):
                later = dataclasses.replace(d, step=d.step + 1)
                if not fails([*decisions[:i], later, *decisions[i + 1 :]]):
                    break
                d = later
            decisions[i] = d
        recorder = Recorder()
        narrator = Narrator(tuple(decisions), recorder)
        attempt = program.attempt(session, 0, narrator, recorder=recorder, record=True)
        return attempt, narrator

    with _Session() as session:
        attempt, narrator = session.call(lambda: work(session))
    recorder = narrator.recorder
    schedule = str(attempt.controller.schedule())
    text = narrator.story(attempt.error, schedule)
    return Failure(
        failure.seed,
        attempt.error,
        recorder,
        schedule,
        failure.strategy,
        program,
        text,
    )


def _first_single_hold(log: list[tuple[int, ...]], fails: Any, more: Any) -> Hold | None:
    for step, tasks in enumerate(log):
        if len(tasks) < 2:
            continue
        for task in tasks:
            if not more():
                return None
            if fails([Hold(step, task)]):
                return Hold(step, task)
    return None


def explain(failure: Failure) -> str:
    if failure.explanation:
        return failure.explanation
    program = failure._program
    if program is None:
        return str(failure)
    decisions = Schedule.parse(failure.schedule).decisions if failure.schedule else ()
    recorder = Recorder()
    narrator = Narrator(decisions, recorder)
    with _Session() as session:
        attempt = session.call(
            lambda: program.attempt(session, failure.seed, narrator, recorder=recorder)
        )
    return narrator.story(attempt.error, failure.schedule)


# --------------------------------------------------------------------------- narration


@dataclasses.dataclass
class _Episode:
    index: int
    decision: Decision
    first: int
    last: int
    waited: dict[int, int] = dataclasses.field(default_factory=dict)
    where: dict[int, str] = dataclasses.field(default_factory=dict)
    ran: dict[int, str] = dataclasses.field(default_factory=dict)
    ran_to: dict[int, str] = dataclasses.field(default_factory=dict)


class Narrator(Policy):
    """Replays decisions and notes, for each, who waited where while whom ran."""

    def __init__(
        self, decisions: tuple[Decision, ...], recorder: Recorder, *, strict: bool = False
    ) -> None:
        super().__init__(decisions, strict=strict)
        self.recorder = recorder
        self.episodes: dict[Decision, _Episode] = {}
        self.open: list[_Episode] = []

    def name(self, task: int) -> str:
        return self.recorder.label(self.tasks[task]) if task < len(self.tasks) else f"task {task}"

    def decide(self, step: int, present: list[int]) -> list[int]:
        for episode in self.open:
            # Where the tasks that ran during an episode got to, as of now.
            for task in episode.ran:
                if task < len(self.tasks):
                    episode.ran_to[task] = _where(self.tasks[task])
        return super().decide(step, present)

    def on_apply(self, step: int, decision: Decision, present: list[int]) -> None:
        episode = _Episode(len(self.episodes) + 1, decision, step, step)
        self.episodes[decision] = episode
        if isinstance(decision, Order):
            for task in decision.tasks:
                episode.ran.setdefault(task, _where(self.tasks[task]))
            first = self.tasks[decision.tasks[0]]
            text = f"took its step first, at {episode.ran[decision.tasks[0]]}"
            self.recorder.record(
                first, "scheduler", "decision", {"index": episode.index, "text": text}
            )

    def on_wait(self, step: int, task: int, cause: Decision, order: list[int]) -> None:
        episode = self.episodes.get(cause)
        if episode is None:
            return
        if task not in episode.waited:
            episode.where[task] = _where(self.tasks[task])
            self.recorder.record(
                self.tasks[task],
                "scheduler",
                "decision",
                {"index": episode.index, "text": f"held back at {episode.where[task]}"},
            )
        if episode not in self.open:
            self.open.append(episode)
        episode.waited[task] = episode.waited.get(task, 0) + 1
        episode.last = step
        for runner in order:
            episode.ran.setdefault(runner, _where(self.tasks[runner]))

    def story(self, error: BaseException | None, schedule: str) -> str:
        episodes = [e for e in self.episodes.values() if e.waited or isinstance(e.decision, Order)]
        if not episodes:
            lines = ["This run fails with no decisive choice: plain lockstep order fails."]
        else:
            n = len(episodes)
            lines = [f"This run fails with {n} decisive choice{'s' if n != 1 else ''}:"]
        for e in episodes:
            lines.append(f"  {e.index}. {self.sentence(e)}")
        if error is not None:
            leaf = _first_leaf(error)
            lines.append(f"Then: {type(leaf).__name__}: {leaf}".splitlines()[0])
        lines.append(f"Replay: seqlab.run(..., schedule={schedule!r})")
        return "\n".join(lines)

    def sentence(self, e: _Episode) -> str:
        runners = [t for t in e.ran if t not in e.waited]
        meanwhile = ", ".join(
            f"{self.name(t)} ran ({_span(e.ran[t], e.ran_to.get(t))})" for t in runners
        )
        if isinstance(e.decision, Order) and not e.waited:
            who = ", ".join(self.name(t) for t in e.decision.tasks)
            return f"at step {e.first}, the tasks took their step in the order {who}"
        parts = []
        for task, steps in e.waited.items():
            parts.append(
                f"{self.name(task)} was held back for {steps} step{'s' if steps != 1 else ''} "
                f"at {e.where[task]}"
            )
        text = f"at step {e.first}, " + " and ".join(parts)
        return text + (f", while {meanwhile}" if meanwhile else "")


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _span(start: str, end: str | None) -> str:
    if end is None or end == start:
        return f"from {start}"
    return f"from {start} to {end}"


def _user_frame(task: trio.lowlevel.Task) -> Any:
    """The innermost frame of the program's own code in ``task`` (not trio's or seqlab's)."""
    found: Any = None
    try:
        frames = [frame for frame, _ in task.iter_await_frames()]
    except Exception:
        frames = []
    for frame in frames:
        filename = frame.f_code.co_filename
        internal = filename.startswith(_TRIO_DIR) or (
            filename.startswith(_SEQLAB_DIR) and not filename.startswith(_EXAMPLES_DIR)
        )
        if not internal:
            found = frame
    return found if found is not None else getattr(task.coro, "cr_frame", None)


def _where(task: trio.lowlevel.Task) -> str:
    """The line of the program's own code where ``task`` is paused, as 'line N of file'."""
    found = _user_frame(task)
    if found is None:
        return "its end"
    if inspect.getcoroutinestate(task.coro) == inspect.CORO_CREATED:
        return f"its start (line {found.f_lineno} of {os.path.basename(found.f_code.co_filename)})"
    filename, line = found.f_code.co_filename, found.f_lineno
    code = linecache.getline(filename, line).strip()
    base = os.path.basename(filename)
    return f"line {line} of {base}" + (f" ({code})" if code else "")
