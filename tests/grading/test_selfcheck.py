"""%seqlab check: visible checks from the lesson source, run in the learner's namespace."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from grading_support import DEPOSIT, DEPOSIT_RACY, DOUBLE, DOUBLE_WRONG, SOURCE

from seqlab.grading.lesson import nbgrader_meta
from seqlab.grading.release import release_notebook
from seqlab.grading.selfcheck import find_checks, self_check


def _namespace(*solutions: str) -> dict[str, Any]:
    """What a learner's kernel holds after running the lesson's locked cells and ``solutions``."""
    ns: dict[str, Any] = {}
    nb = nbformat.read(str(SOURCE), as_version=4)
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type == "code" and meta.get("locked") and not meta.get("grade"):
            exec(cell.source.replace("await trio.sleep(0)", "pass"), ns)
    for code in solutions:
        exec(code, ns)
    return ns


def test_passing_exercise_is_reported_with_a_hint_about_hidden_checks() -> None:
    report = self_check("double", _namespace(DOUBLE), lesson=SOURCE)
    assert report.startswith("double (fixture-lesson): 1 of 1 visible check(s) passed.")
    assert "✓ double-check: passed." in report
    assert "The grader runs more checks" in report


def test_wrong_answer_explains_what_was_expected() -> None:
    report = self_check("double-check", _namespace(DOUBLE_WRONG), lesson=SOURCE)
    assert "0 of 1" in report and "double(2) should be 4, but it is 0." in report


def test_unfinished_exercise_says_so() -> None:
    nb = release_notebook(nbformat.read(str(SOURCE), as_version=4))
    placeholder = next(c.source for c in nb.cells if nbgrader_meta(c).get("grade_id") == "double")
    report = self_check("double", _namespace(placeholder), lesson=SOURCE)
    assert "not done yet" in report


def test_racy_solution_gets_the_failing_schedule_and_replay_line() -> None:
    report = self_check("deposit", _namespace(DEPOSIT_RACY), lesson=SOURCE)
    assert "0 of 1" in report and "In the simplest failing schedule found" in report
    assert "seqlab.run(three_deposits, schedule='s1:" in report
    assert "1 of 1" in self_check("deposit", _namespace(DEPOSIT), lesson=SOURCE)


def test_hidden_checks_are_not_run_by_the_self_check() -> None:
    _, tests = find_checks("deposit", {}, lesson=SOURCE)
    assert "range(20, 60)" not in tests[0].visible_source


def test_missing_setup_and_unknown_exercises_are_friendly() -> None:
    assert "Did you run the exercise's cell" in self_check("double", {}, lesson=SOURCE)
    assert "Cannot check 'nope'" in self_check("nope", {}, lesson=SOURCE)
    assert "Which exercise?" in self_check("  ", {})


@pytest.mark.parametrize("exercise", ["double", "double-check"])
def test_exercise_can_be_named_by_solution_or_check_id(exercise: str) -> None:
    _, tests = find_checks(exercise, {}, lesson=SOURCE)
    assert [t.grade_id for t in tests] == ["double-check"]
