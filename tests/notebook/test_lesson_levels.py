"""Every lesson's "be the scheduler" level, played as a learner would and graded as a grader would.

Each level is the lesson's own ``%%seqlab step`` cell (from the lesson source, options parsed by
the magic's own parser), run on a namespace made by the lesson's code cells before it. Random
walks of clicks play it through a :class:`StepperWidget`; the schedule the widget stores (what
the saved notebook keeps) must grade ``True`` with :func:`level_reached` when the goal was
reached, and a path that does not reach it must grade ``False``: a finished path that misses the
goal where one exists, otherwise the winning path stopped one step short. Levels the lesson says
cannot be avoided (every path deadlocks or fails) are checked to be so.
"""

from __future__ import annotations

import contextlib
import io
import random
import shlex
from pathlib import Path
from typing import Any

import nbformat
import pytest

from seqlab.notebook import StepperWidget
from seqlab.notebook.magics import _step_parser, compile_scenario
from seqlab.stepper import Stepper, goal_reached, level_reached, parse_goal

LESSONS = Path(__file__).resolve().parents[2] / "lessons"

# lesson -> (goal as the cell writes it, whether some path avoids the goal)
LEVELS = {
    "00-welcome": ("fail", True),
    "01-sequencer": ("stale:teller-1@account", True),
    "02-barrier": ("deadlock", False),
    "03-convoy": ("fail", True),
    "04-sequence-barriers": ("fail", True),
    "05-capstone": ("fail", False),
}
WALKS = 40  # random paths tried per level (each a few dozen steps)


def load_level(stem: str) -> tuple[Any, Any]:
    """The level cell's scenario (compiled as the magic compiles it) and its parsed options."""
    nb = nbformat.read(str(LESSONS / f"{stem}.ipynb"), as_version=4)
    namespace: dict[str, Any] = {"__name__": f"lesson_{stem[:2]}"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("id") == f"{stem[:2]}-level":
            first, _, body = cell.source.partition("\n")
            words = shlex.split(first)
            assert words[:2] == ["%%seqlab", "step"], first
            options = _step_parser().parse(words[2:])
            return compile_scenario(body, namespace), options
        if cell.source.lstrip().startswith("%"):
            continue  # another magic (none comes before a level today)
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell.source, f"<{stem} {cell.get('id')}>", "exec"), namespace)
    raise AssertionError(f"{stem} has no level cell {stem[:2]}-level")


def play(fn: Any, goal: Any, rng: random.Random) -> tuple[list[str], StepperWidget]:
    """Click random runnable tasks until the goal is reached or the program ends."""
    widget = StepperWidget(fn, goal=goal)
    while not widget.finished and not widget.goal_reached:
        widget.step(rng.choice(widget.runnable))
    return list(widget.path), widget


def short_of(fn: Any, path: list[str]) -> str:
    """The schedule of ``path`` without its last step, with that step count glued on."""
    stepper = Stepper(fn)
    try:
        for name in path[:-1]:
            stepper.step(name)
        return stepper.schedule + f"|{stepper.steps}"
    finally:
        stepper.close()


@pytest.mark.parametrize("stem", list(LEVELS))
def test_the_level_is_won_from_its_stored_path_and_a_missed_one_scores_0(stem: str) -> None:
    fn, options = load_level(stem)
    written, avoidable = LEVELS[stem]
    assert str(options.goal) == written  # the lesson's level is the one this test plays
    goal = parse_goal(written)
    rng = random.Random(stem)
    won: dict[str, Any] | None = None
    won_path: list[str] = []
    missed: str | None = None
    for _ in range(WALKS):
        path, widget = play(fn, goal, rng)
        try:
            if widget.goal_reached:
                if won is None:
                    won, won_path = dict(widget.level), path
            elif missed is None:
                assert widget.finished
                missed = widget.schedule
        finally:
            widget.close()
        if avoidable and won is not None and missed is not None:
            break
    assert won is not None, f"{stem}: no random path reached {written}"
    assert won["reached"] and won["spec"] == written
    # What the saved notebook keeps grades True in a replay of its own.
    assert level_reached(fn, schedule=won["schedule"], goal=won["spec"])
    if avoidable:
        assert missed is not None, f"{stem}: every path reached {written}; the text says not"
        assert not level_reached(fn, schedule=missed, goal=written)
    else:
        assert missed is None, f"{stem}: a path avoided {written}; the lesson says none does"
    # The winning path one step short has not reached the goal yet, and scores 0.
    assert not level_reached(fn, schedule=short_of(fn, won_path), goal=written)
    # Graded against a goal it does not meet, the winning path scores 0 too.
    other = "deadlock" if written != "deadlock" else "fail"
    assert not level_reached(fn, schedule=won["schedule"], goal=other)


def test_the_stale_read_level_names_the_teller_that_lost() -> None:
    """Lesson 01: every path loses a deposit, and the goal is reached exactly when teller-1's
    write is the one from a stale read; the same path graded for teller-0 scores 0."""
    fn, _ = load_level("01-sequencer")
    # both read 0 and wait for the fraud service; teller-0 writes 10, then teller-1 writes 10
    teller_1_late = ["scenario", "teller-0", "teller-1", "teller-0", "teller-1"]
    stepper = Stepper(fn)
    try:
        for name in teller_1_late:
            assert not goal_reached(stepper, "stale:teller-1@account")
            stepper.step(name)
        assert goal_reached(stepper, "stale:teller-1@account")
        assert not goal_reached(stepper, "stale:teller-0@account")
        schedule = stepper.schedule + f"|{stepper.steps}"
    finally:
        stepper.close()
    assert level_reached(fn, schedule=schedule, goal="stale:teller-1@account")
    assert not level_reached(fn, schedule=schedule, goal="stale:teller-0@account")


@pytest.mark.parametrize("teller", ["teller-0", "teller-1"])
def test_the_explorer_button_finds_a_path_to_the_stale_read(teller: str) -> None:
    """Lesson 01: every run raises (a deposit is always lost), so 'a failure' is not the goal;
    the explorer looks for a run in which this teller writes from a stale read, and replaying
    its path one step at a time reaches the goal. (Either teller: the first failing run, as
    the button takes for a fail goal, reaches only one of the two.)"""
    fn, _ = load_level("01-sequencer")
    goal = f"stale:{teller}@account"
    widget = StepperWidget(fn, goal=goal, explore_seeds=50)
    try:
        assert widget.explore()
        assert f"a path where {teller} writes from a stale read" in widget.message
        while not widget.goal_reached:
            widget.replay_next()
        assert level_reached(fn, schedule=widget.level["schedule"], goal=goal)
    finally:
        widget.close()
