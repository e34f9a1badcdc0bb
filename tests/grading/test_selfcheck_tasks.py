"""%seqlab check when the placeholder raises inside tasks: trio gathers the errors in a group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
import trio
from grading_support import SOURCE

import seqlab
from seqlab.grading.lesson import nbgrader_meta
from seqlab.grading.selfcheck import self_check

# A check cell like the capstone's: it runs the learner's function in three tasks itself,
# so a placeholder's NotImplementedError arrives wrapped in an ExceptionGroup.
CHECK = """\
async def day():
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(work, i, name=f"teller-{i}")
seqlab.run(day)
"""


@pytest.fixture
def lesson(tmp_path: Path) -> Path:
    nb = nbformat.read(str(SOURCE), as_version=4)
    for cell in nb.cells:
        if nbgrader_meta(cell).get("grade_id") == "double-check":
            cell.source = CHECK
    path = tmp_path / "tasks-lesson.ipynb"
    nbformat.write(nb, str(path))
    return path


def namespace(body: str) -> dict[str, Any]:
    ns: dict[str, Any] = {"trio": trio, "seqlab": seqlab}
    exec(f"async def work(i):\n    await trio.sleep(i)\n    {body}\n", ns)
    return ns


def test_a_placeholder_inside_tasks_is_not_done_yet(lesson: Path) -> None:
    report = self_check("double", namespace("raise NotImplementedError()"), lesson=lesson)
    assert "✗ double-check: the exercise is not done yet" in report
    assert "ExceptionGroup" not in report


def test_other_errors_inside_tasks_are_named_by_their_leaf(lesson: Path) -> None:
    report = self_check("double", namespace("raise KeyError(i)"), lesson=lesson)
    assert "✗ double-check: your code raised KeyError: 0" in report
    assert "not done yet" not in report and "ExceptionGroup" not in report


def test_a_finished_exercise_passes(lesson: Path) -> None:
    assert "1 of 1 visible check(s) passed" in self_check(
        "double", namespace("pass"), lesson=lesson
    )


def test_lesson_00_names_every_exercise_id_and_each_one_checks() -> None:
    import re

    from seqlab.grading.selfcheck import find_checks

    path = Path(__file__).resolve().parents[2] / "lessons" / "00-welcome.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    named = set(re.findall(r"%seqlab check (ex0-[a-z]+)`", text))
    solutions = {
        nbgrader_meta(c)["grade_id"]
        for c in nb.cells
        if nbgrader_meta(c).get("solution") and nbgrader_meta(c).get("grade_id")
    }
    assert named == solutions and len(named) == 3
    for exercise in named:
        _, checks = find_checks(exercise, {}, lesson=path)
        assert checks, exercise
