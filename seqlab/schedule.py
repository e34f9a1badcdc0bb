"""Controlled scheduling: who runs at each step, who is held back, and schedules as data.

trio runs its tasks in batches: every task that is runnable when a batch starts takes one step
(runs to its next checkpoint), and tasks woken meanwhile wait for the next batch. Under
``_ALLOW_DETERMINISTIC_SCHEDULING`` trio hands each batch, sorted by creation order, to
``_r.shuffle(batch)`` and then runs the list from its end. seqlab puts a :class:`Controller`
in the place of ``_r`` for its own runs, so it decides the order of every batch and may take a
task out of it. A task taken out is appended to trio's run queue again: it stays runnable and
simply runs in a later batch. That is how a task is *held back*, the way a slow disk or a busy
CPU holds one back in production. Because a held task is still on the run queue, the virtual
clock never jumps and no deadlock is declared while one exists; and the controller never holds
every task at once (if it would, the held tasks run: nothing else could happen meanwhile).

A **step** is a batch with at least one user task in it (the program's own tasks, not trio's
or seqlab's system tasks); a step is *decisive* when two or more user tasks could take it.
User tasks are numbered in creation order: the main task is 0.

A **schedule** is the list of decisions a run made, as a short string that replays exactly::

    s1:H4.2*;P7.1,0;Q9-15.2|31

``H4.2*``
    at step 4, hold task 2 back until nothing else can run (``H4.2x3``: for 3 steps in which
    another task ran);
``P7.1,0``
    at step 7, run task 1 then task 0; a present task not listed is held for that step;
``Q9-15.2``
    at steps 9 to 15, whenever task 2 can run, it alone runs;
``|31``
    the run took 31 steps (optional; replay checks it).

Every step not named runs its tasks in creation order ("lockstep"). A *strategy* decides
online which decisions to make; each is one small class (:class:`Strategy`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import trio
from trio._core import _run as _trio_run

__all__ = [
    "Hold",
    "Order",
    "Only",
    "Schedule",
    "ScheduleMismatch",
    "Strategy",
    "Lockstep",
    "RandomStrategy",
    "DelayStrategy",
    "PCTStrategy",
    "ExhaustiveStrategy",
    "AutoStrategy",
    "STRATEGIES",
    "make_strategy",
    "Probe",
    "Controller",
    "Decision",
    "Policy",
    "FOREVER",
]

FOREVER = None  # a hold's length when it lasts until nothing else can run


class ScheduleMismatch(ValueError):
    """A schedule does not fit the program it is replayed on (the code changed, or it was
    recorded for another program); the message says at which step it diverged."""


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Hold:
    """Hold user task ``task`` back from step ``step`` on, for ``steps`` steps in which
    another task ran, or (``steps=None``) until nothing else can run."""

    step: int
    task: int
    steps: int | None = FOREVER

    def __str__(self) -> str:
        return f"H{self.step}.{self.task}" + ("*" if self.steps is None else f"x{self.steps}")


@dataclass(frozen=True)
class Order:
    """At step ``step`` run exactly ``tasks``, in that order; other present tasks wait."""

    step: int
    tasks: tuple[int, ...]

    def __str__(self) -> str:
        return f"P{self.step}." + ",".join(map(str, self.tasks))


@dataclass(frozen=True)
class Only:
    """From step ``step`` to ``last``, whenever ``task`` can run it runs alone."""

    step: int
    last: int
    task: int

    def __str__(self) -> str:
        return f"Q{self.step}-{self.last}.{self.task}"


Decision = Hold | Order | Only
_DECISION = re.compile(
    r"H(?P<hs>\d+)\.(?P<ht>\d+)(?:(?P<forever>\*)|x(?P<hl>\d+))"
    r"|P(?P<ps>\d+)\.(?P<pt>\d+(?:,\d+)*)"
    r"|Q(?P<qs>\d+)-(?P<ql>\d+)\.(?P<qt>\d+)$"
)


@dataclass(frozen=True)
class Schedule:
    """A run's decisions, in step order, and (when known) how many steps the run took."""

    decisions: tuple[Decision, ...] = ()
    steps: int | None = None

    def __str__(self) -> str:
        body = ";".join(str(d) for d in self.decisions)
        return f"s1:{body}" + ("" if self.steps is None else f"|{self.steps}")

    def __len__(self) -> int:
        return len(self.decisions)

    def without_length(self) -> Schedule:
        return Schedule(self.decisions)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Read a schedule string; a malformed one is a ``ValueError`` naming the bad part."""
        if not isinstance(text, str):
            raise TypeError(f"schedule must be a string, got {type(text).__name__}")
        text = text.strip()
        if not text.startswith("s1:"):
            raise ValueError(
                f"schedule must be a seqlab schedule string starting with 's1:', got {text[:40]!r}"
            )
        body, _, steps_text = text[3:].partition("|")
        steps = None
        if steps_text:
            if not steps_text.isdigit():
                raise ValueError(f"schedule: the step count after '|' must be a number: {text!r}")
            steps = int(steps_text)
        decisions: list[Decision] = []
        for part in filter(None, body.split(";")):
            match = _DECISION.fullmatch(part)
            if match is None:
                raise ValueError(f"schedule: cannot read the decision {part!r} in {text!r}")
            g = match.groupdict()
            if g["hs"] is not None:
                length = None if g["forever"] else int(g["hl"])
                if length == 0:
                    raise ValueError(f"schedule: a hold of 0 steps in {part!r}")
                decisions.append(Hold(int(g["hs"]), int(g["ht"]), length))
            elif g["ps"] is not None:
                tasks = tuple(int(t) for t in g["pt"].split(","))
                if len(set(tasks)) != len(tasks):
                    raise ValueError(f"schedule: a task named twice in {part!r}")
                decisions.append(Order(int(g["ps"]), tasks))
            else:
                first, last = int(g["qs"]), int(g["ql"])
                if last < first:
                    raise ValueError(f"schedule: an empty step range in {part!r}")
                decisions.append(Only(first, last, int(g["qt"])))
        decisions.sort(key=lambda d: d.step)
        return cls(tuple(decisions), steps)


# --------------------------------------------------------------------------- the controller


@dataclass
class Probe:
    """What a lockstep run of the program looked like: strategies size their choices by it."""

    steps: int = 0  # steps with a user task
    task_steps: int = 0  # user task steps (a strategy that runs one task per step needs this many)

    @classmethod
    def of(cls, present_log: list[tuple[int, ...]]) -> Probe:
        """Measure a run from the tasks present at each of its steps."""
        return cls(len(present_log), sum(len(p) for p in present_log))


class Policy:
    """Decides one run. The base class replays decisions; strategies add their own online.

    ``decide(step, present)`` gets the user tasks that can run (ids, creation order) and
    returns those to run now, in order; the rest are held for this step. It is asked only at
    steps where two or more tasks could run, unless ``every_step`` is set.
    """

    every_step = False

    def __init__(self, decisions: tuple[Decision, ...] = (), *, strict: bool = False) -> None:
        self.pending: dict[int, list[Decision]] = {}
        for d in decisions:
            self.pending.setdefault(d.step, []).append(d)
        self.strict = strict
        self.applied: list[Decision] = []
        self.holds: dict[int, int | None] = {}
        self.hold_causes: dict[int, Hold] = {}
        self.only: Only | None = None
        self.mismatch: str | None = None
        self.tasks: list[trio.lowlevel.Task] = []  # the controller's, by id

    def add(self, decision: Decision) -> None:
        self.pending.setdefault(decision.step, []).append(decision)

    def online(self, step: int, present: list[int]) -> None:
        """A strategy's hook: add decisions for this step before it is decided."""

    def decide(self, step: int, present: list[int]) -> list[int]:
        self.online(step, present)
        order: list[int] | None = None
        cause: Decision | None = None
        for d in self.pending.pop(step, ()):
            if isinstance(d, Hold):
                if d.task not in present:
                    self._diverged(step, f"it holds task {d.task}", present)
                    continue
                self.holds[d.task] = d.steps
                self.hold_causes[d.task] = d
            elif isinstance(d, Order):
                if not set(d.tasks) <= set(present):
                    self._diverged(step, f"it runs tasks {list(d.tasks)}", present)
                    continue
                order, cause = list(d.tasks), d
            else:
                self.only = d
            self.applied.append(d)
            self.on_apply(step, d, present)
        only = self.only
        if only is not None and step > only.last:
            only = self.only = None
        if order is None:
            if only is not None and only.task in present:
                order, cause = [only.task], only
            elif self.holds:
                order = [t for t in present if t not in self.holds]
            else:
                return present
        if not order:
            # Everything present is held: nothing else could happen, so the holds end.
            for task in present:
                self.holds.pop(task, None)
            return present
        if len(order) < len(present):
            for task in present:
                if task in order:
                    continue
                self.on_wait(step, task, cause or self.hold_causes[task], order)
                left = self.holds.get(task, 0)
                if left is not None and left > 0:
                    if left == 1:
                        del self.holds[task]
                    else:
                        self.holds[task] = left - 1
        return order

    def on_apply(self, step: int, decision: Decision, present: list[int]) -> None:
        """Called when ``decision`` takes effect (explanations listen here)."""

    def on_wait(self, step: int, task: int, cause: Decision, order: list[int]) -> None:
        """Called for each task that ``cause`` keeps waiting at ``step`` while ``order`` runs."""

    def _diverged(self, step: int, what: str, present: list[int]) -> None:
        if self.strict and self.mismatch is None:
            can = ", ".join(map(str, present)) or "none"
            self.mismatch = (
                f"the schedule does not fit this program: at step {step} {what}, but the "
                f"user tasks that can run there are {can} (was it recorded for other code?)"
            )

    def finish(self, steps: int) -> None:
        """Called when the run ended after ``steps`` steps."""
        if self.strict and self.mismatch is None and self.pending:
            first = min(self.pending)
            self.mismatch = (
                f"the schedule does not fit this program: it has a decision at step {first}, "
                f"but the run ended after {steps} steps (was it recorded for other code?)"
            )


class Controller:
    """Stands in for trio's scheduler RNG during one seqlab run (see the module docstring).

    ``shuffle`` is trio's per-batch call; every other attribute (``random``, ``uniform``, used
    by trio's real clock) comes from an RNG seeded with the run's seed.
    """

    def __init__(
        self,
        seed: int,
        policy: Policy | None,
        main_code: Any,
        *,
        record: bool = False,
        ghost: bool = False,
    ) -> None:
        self.main_code = main_code
        self.seed = seed
        self._rng: random.Random | None = None
        self.policy = policy
        # Every task seen in a batch: user tasks get their id (creation order), others -1.
        self.ids: dict[trio.lowlevel.Task, int] = {}
        self.tasks: list[trio.lowlevel.Task] = []
        if policy is not None:
            policy.tasks = self.tasks
        self.step = 0
        self.batch: list[trio.lowlevel.Task] = []
        self.record = record
        self.orders: list[Order] = []  # what the random shuffle chose, when recording
        self.signature = 0
        self.present_log: list[tuple[int, ...]] | None = None
        self._runq: Any = None
        # seqlab used to start its virtual-clock watcher together with the program, so it
        # took part in the first shuffle after the main task's first step. A stand-in takes
        # its place there, so that seeds give the very schedules they always gave.
        self.ghost = _GHOST_WAITING if ghost and policy is None else None

    @property
    def rng(self) -> random.Random:
        """The run's seeded RNG, made when first used (most policies never use it)."""
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rng, name)

    def _register(self, task: trio.lowlevel.Task) -> int:
        """Number a task the first time a batch holds it: a new task is runnable at once, so
        its first batch comes before any later task's, and ids follow creation order."""
        parent = task.parent_nursery
        if (parent is not None and self.ids.get(parent.parent_task, -1) >= 0) or (
            task.coro.cr_code is self.main_code
        ):
            self.ids[task] = i = len(self.tasks)
            self.tasks.append(task)
        else:
            self.ids[task] = i = -1  # trio's or seqlab's own
        return i

    def shuffle(self, batch: list[trio.lowlevel.Task]) -> None:
        self.batch = batch
        ids = self.ids
        if self.ghost is _GHOST_ARMED:
            self.ghost = _GHOST_NOW
        if len(batch) == 1 and self.ghost is None:
            # The common case: one task can run, so there is nothing to decide.
            i = ids.get(batch[0])
            if i is None:
                i = self._register(batch[0])
            if i < 0:
                return
            step = self.step
            self.step = step + 1
            if self.present_log is not None:
                self.present_log.append((i,))
            policy = self.policy
            if policy is not None and (policy.holds or step in policy.pending or policy.every_step):
                policy.decide(step, [i])  # ends holds; a decision here must fit (strict replay)
            return
        present = []
        for task in batch:
            i = ids.get(task)
            if i is None:
                i = self._register(task)
            if i >= 0:
                present.append(i)
        if self.ghost is not None:
            self._ghost_step(present)
        if not present:
            if self.policy is None:
                self._random_shuffle(batch)
            return
        step = self.step
        self.step = step + 1
        if self.present_log is not None:
            self.present_log.append(tuple(present))
        policy = self.policy
        if policy is None:
            # trio's own seeded shuffle, exactly as before seqlab controlled anything.
            self._random_shuffle(batch)
            if len(present) > 1:
                ran = tuple(i for i in map(ids.__getitem__, reversed(batch)) if i >= 0)
                self.signature = hash((self.signature, step, ran))
                if self.record and list(ran) != present:
                    self.orders.append(Order(step, ran))
            return
        order = policy.decide(step, present)
        if len(present) > 1:
            self.signature = hash((self.signature, step, tuple(order)))
        if order is present and len(present) == len(batch):
            batch.reverse()  # lockstep: creation order (trio runs the list from its end)
            return
        # trio runs the list from its end: system tasks first, then ``order``.
        tasks = self.tasks
        users = [tasks[i] for i in reversed(order)]
        if len(order) < len(present):
            runq = self._runq
            if runq is None:
                runq = self._runq = _trio_run.GLOBAL_RUN_CONTEXT.runner.runq
            chosen = set(order)
            for i in present:
                if i not in chosen:
                    runq.append(tasks[i])
        batch[:] = users + [t for t in batch if ids[t] < 0]

    def _random_shuffle(self, batch: list[trio.lowlevel.Task]) -> None:
        rng = self.rng
        if self.ghost is _GHOST_NOW:
            self.ghost = None
            main = self.tasks[0]._counter
            at = sum(1 for t in batch if t._counter <= main)  # sorted: spawned after main
            batch.insert(at, _GHOST)  # type: ignore[arg-type]
            rng.shuffle(batch)
            batch.remove(_GHOST)  # type: ignore[arg-type]
        else:
            rng.shuffle(batch)

    def _ghost_step(self, present: list[int]) -> None:
        if self.ghost is _GHOST_WAITING and 0 in present:
            self.ghost = _GHOST_ARMED  # the main task takes its first step in this batch

    def schedule(self) -> Schedule:
        """The decisions this run made, as a replayable schedule."""
        if self.policy is None:
            return Schedule(tuple(self.orders), self.step)
        return Schedule(tuple(self.policy.applied), self.step)

    def finish(self) -> None:
        if self.policy is not None:
            self.policy.finish(self.step)


_GHOST_WAITING = object()  # the main task has not run yet
_GHOST_ARMED = object()  # it takes its first step in this batch
_GHOST_NOW = object()  # it has: this shuffle is the one the old watcher took part in
_GHOST = object()  # the stand-in


# --------------------------------------------------------------------------- strategies


class Strategy:
    """How to choose a run's decisions. One class per strategy; ``policy`` makes one run's.

    ``bound`` means what the strategy says (delays, depth); ``needs_probe`` strategies size
    their choices by a lockstep run of the program, measured once per exploration.
    """

    name: ClassVar[str]
    needs_probe: ClassVar[bool] = False
    default_bound: ClassVar[int | None] = None

    def __init__(self, bound: int | None = None) -> None:
        self.bound = self.default_bound if bound is None else bound

    def policy(self, seed: int, probe: Probe) -> Policy | None:
        raise NotImplementedError

    def label(self, seed: int) -> str:
        """The strategy that actually chose seed ``seed``'s run (a portfolio names its member)."""
        return self.name

    def lockstep_at(self, seed: int) -> bool:
        """Whether seed ``seed``'s run is the plain lockstep schedule (it can then measure the
        program for strategies that need a probe, instead of an extra run)."""
        return False

    def __repr__(self) -> str:
        bound = "" if self.bound is None else f", bound={self.bound}"
        return f"{type(self).__name__}({self.name!r}{bound})"


class Lockstep(Strategy):
    """Every runnable task steps once per batch, in creation order: one fixed schedule."""

    name = "lockstep"

    def policy(self, seed: int, probe: Probe) -> Policy | None:
        return Policy()


class RandomStrategy(Strategy):
    """trio's own shuffle of each batch, seeded: lockstep schedules in random orders.

    Seeds replay exactly as they did before seqlab controlled scheduling.
    """

    name = "random"

    def policy(self, seed: int, probe: Probe) -> Policy | None:
        return None


_HOLD_LENGTHS = (1, 2, 3, 5, 8, 13, None, None)


class _DelayPolicy(Policy):
    def __init__(self, rng: random.Random, delays: int, probe: Probe) -> None:
        super().__init__()
        span = max(probe.steps, 1)
        self.rng = rng
        self.at = sorted(rng.randrange(span) for _ in range(delays))

    def online(self, step: int, present: list[int]) -> None:
        at = self.at
        if not at or at[0] > step or len(present) < 2:
            return
        free = [t for t in present if t not in self.holds]
        if len(free) < 2:
            return
        while at and at[0] <= step:
            at.pop(0)
            task = self.rng.choice(free)
            self.add(Hold(step, task, self.rng.choice(_HOLD_LENGTHS)))
            free.remove(task)
            if len(free) < 2:
                break


class DelayStrategy(Strategy):
    """Delay bounding: lockstep, plus up to ``bound`` holds at random steps for random lengths.

    Most real races need one or two tasks to fall behind (Emmi, Qadeer and Rakamarić; the
    SCTBench study), which lockstep orders never show.
    """

    name = "delay"
    needs_probe = True
    default_bound = 2

    def policy(self, seed: int, probe: Probe) -> Policy | None:
        rng = random.Random(f"delay:{seed}")
        return _DelayPolicy(rng, rng.randint(1, max(self.bound or 1, 1)), probe)


class _PCTPolicy(Policy):
    def __init__(self, rng: random.Random, depth: int, probe: Probe) -> None:
        super().__init__()
        self.rng = rng
        self.depth = depth
        span = max(probe.task_steps, 1)
        points = rng.sample(range(span), min(depth - 1, span))
        self.changes = {step: i + 1 for i, step in enumerate(sorted(points))}
        self.priority: dict[int, float] = {}

    def online(self, step: int, present: list[int]) -> None:
        priority = self.priority
        for t in present:
            if t not in priority:
                priority[t] = self.depth + self.rng.random()
        if len(present) < 2:
            return
        chosen = max(present, key=priority.__getitem__)
        change = self.changes.get(step)
        if change is not None:
            priority[chosen] = change / (self.depth + 1)
            chosen = max(present, key=priority.__getitem__)
        only = self.only
        if only is not None and only.task == chosen and only.last < step:
            # Extend the running range instead of adding a decision.
            extended = Only(only.step, step, chosen)
            applied = self.applied
            # Only PCT's own decisions are applied, so the running range is the last one.
            at = len(applied) - 1 if applied[-1] is only else applied.index(only)
            applied[at] = extended
            self.only = extended
        else:
            self.add(Only(step, step, chosen))


class PCTStrategy(Strategy):
    """Probabilistic concurrency testing (Burckhardt et al., 2010) of depth ``bound``.

    Each task gets a random priority and only the highest-priority runnable task steps;
    at ``bound - 1`` random steps the running task drops below all others. A bug of depth d
    among n tasks and k steps is found with probability at least 1/(n·k^(d-1)) per run.
    """

    name = "pct"
    needs_probe = True
    default_bound = 3

    def policy(self, seed: int, probe: Probe) -> Policy | None:
        return _PCTPolicy(random.Random(f"pct:{seed}"), max(self.bound or 1, 1), probe)


class ExhaustiveStrategy(Strategy):
    """Every schedule with at most ``bound`` holds (each until nothing else can run), found
    by a depth-first search that never repeats a schedule. :func:`seqlab.explore` drives it
    and says whether the space was exhausted or the run budget spent first."""

    name = "exhaustive"
    default_bound = 2

    def policy(self, seed: int, probe: Probe) -> Policy | None:
        return Policy()  # the search itself lives in runtime.explore

    def children(
        self, decisions: tuple[Hold, ...], present: list[tuple[int, ...]]
    ) -> Iterator[tuple[Hold, ...]]:
        """The schedules one hold longer than ``decisions``, given the run's present tasks."""
        if len(decisions) >= (self.bound or 0):
            return
        last = decisions[-1] if decisions else None
        for step in range(0 if last is None else last.step, len(present)):
            tasks = present[step]
            if len(tasks) < 2:
                continue
            for task in tasks:
                if last is not None and step == last.step and task <= last.task:
                    continue
                yield (*decisions, Hold(step, task))


class AutoStrategy(Strategy):
    """The default: a portfolio that takes turns by seed.

    Seed 0 is the plain lockstep schedule, then random orders, delays and PCT alternate, so
    an exploration finds lockstep races at once and races that need a lagging task in a few
    runs. ``seqlab.run(fn, seed=s, strategy="auto")`` replays seed ``s``'s run.
    """

    name = "auto"
    needs_probe = True
    members: ClassVar[tuple[Strategy, ...]] = (
        Lockstep(),
        RandomStrategy(),
        DelayStrategy(1),
        PCTStrategy(2),
        DelayStrategy(2),
        PCTStrategy(3),
    )

    def member(self, seed: int) -> Strategy:
        return self.members[seed % len(self.members)]

    def lockstep_at(self, seed: int) -> bool:
        return isinstance(self.member(seed), Lockstep)

    def policy(self, seed: int, probe: Probe) -> Policy | None:
        return self.member(seed).policy(seed, probe)

    def label(self, seed: int) -> str:
        member = self.member(seed)
        return member.name if member.bound is None else f"{member.name}({member.bound})"


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        AutoStrategy,
        Lockstep,
        RandomStrategy,
        DelayStrategy,
        PCTStrategy,
        ExhaustiveStrategy,
    )
}


def make_strategy(strategy: Any, bound: Any) -> Strategy:
    """The strategy named ``strategy`` (or a :class:`Strategy` instance) with ``bound``."""
    if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
        raise TypeError(f"bound must be an int, got {type(bound).__name__} {bound!r}")
    if bound is not None and bound < 0:
        raise ValueError(f"bound must be zero or more, got {bound}")
    if isinstance(strategy, Strategy):
        if bound is not None:
            raise ValueError("give bound inside the Strategy instance, not as well as bound=")
        return strategy
    if not isinstance(strategy, str):
        raise TypeError(
            f"strategy must be a strategy name or Strategy, got {type(strategy).__name__}"
        )
    cls = STRATEGIES.get(strategy)
    if cls is None:
        names = ", ".join(repr(n) for n in STRATEGIES)
        raise ValueError(f"strategy must be one of {names}, got {strategy!r}")
    if bound is not None and cls in (AutoStrategy, Lockstep, RandomStrategy):
        raise ValueError(f"strategy {strategy!r} takes no bound (delay, pct and exhaustive do)")
    if cls is PCTStrategy and bound == 0:
        raise ValueError("bound for strategy 'pct' is its depth: 1 or more")
    return cls(bound)
