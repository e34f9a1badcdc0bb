"""Every plausible wrong answer in mutants.py scores 0 on its exercise; honest solutions keep
full marks. Graded with ``seqlab grade`` as an instructor would (``--lesson`` pointing at the
lesson source in the repository's ``lessons/``), one batch per lesson with ``--jobs 2``.

To keep this fast, one submission carries one mutant of several *independent* exercises of a
lesson at once (exercise N's mutant never changes what exercise M's check sees). In the
capstone, later exercises call earlier ones, so each of its mutants gets its own submission.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest
from mutants import FORGERIES, MUTANTS, UNFORGEABLE, VARIANTS, Mutant

from seqlab.cli import main
from seqlab.grading.lesson import nbgrader_meta

LESSONS = Path(__file__).resolve().parents[2] / "lessons"
DEPENDENT = {"05-capstone"}


def _submission(folder: Path, lesson: str, replace: dict[str, str]) -> Path:
    nb = nbformat.read(str(LESSONS / f"{lesson}.ipynb"), as_version=4)
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in replace:
            cell.source = replace[gid]
            cell.outputs = []
    folder.mkdir(parents=True)
    path = folder / f"{lesson}.ipynb"
    nbformat.write(nb, str(path))
    return path


def _groups() -> dict[str, list[list[Mutant]]]:
    """lesson -> submissions, each a list of mutants of distinct exercises."""
    by_lesson: dict[str, dict[str, list[Mutant]]] = defaultdict(lambda: defaultdict(list))
    for m in MUTANTS:
        by_lesson[m.lesson][m.exercise].append(m)
    groups: dict[str, list[list[Mutant]]] = {}
    for lesson, exercises in by_lesson.items():
        if lesson in DEPENDENT:
            groups[lesson] = [[m] for ms in exercises.values() for m in ms]
        else:
            rounds = max(len(ms) for ms in exercises.values())
            groups[lesson] = [
                [ms[r] for ms in exercises.values() if r < len(ms)] for r in range(rounds)
            ]
    return groups


FEEDBACK: dict[str, dict[str, str]] = {}  # the same labels -> {check grade_id -> output}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    """submission label -> {check grade_id -> score}; labels are 'honest:LESSON' and
    'LESSON:EXERCISE:NAME' for every mutant (shared submissions share their scores)."""
    root = tmp_path_factory.mktemp("mutants")
    scores: dict[str, dict[str, float]] = {}
    for lesson, groups in _groups().items():
        paths: list[Path] = [_submission(root / lesson / "honest", lesson, {})]
        labels: list[list[str]] = [[f"honest:{lesson}"]]
        for i, group in enumerate(groups):
            replace = {m.exercise: m.source for m in group}
            paths.append(_submission(root / lesson / f"m{i}", lesson, replace))
            labels.append([f"{m.lesson}:{m.exercise}:{m.name}" for m in group])
        for i, v in enumerate(v for v in VARIANTS if v.lesson == lesson):
            paths.append(_submission(root / lesson / f"v{i}", lesson, {v.exercise: v.source}))
            labels.append([f"variant:{v.lesson}:{v.exercise}:{v.name}"])
        out = root / f"{lesson}.json"
        args = ["grade", *map(str, paths), "--lesson", str(LESSONS / f"{lesson}.ipynb")]
        assert main([*args, "--jobs", "2", "--format", "json", "--out", str(out)]) == 0
        data = json.loads(out.read_text())
        for names, entry in zip(labels, data["submissions"], strict=True):
            tests = {t["name"]: t["score"] for t in entry["results"]["tests"]}
            outputs = {t["name"]: t["output"] for t in entry["results"]["tests"]}
            for name in names:
                scores[name] = tests
                FEEDBACK[name] = outputs
    return scores


def _check_of(exercise: str) -> str:
    return f"{exercise}-check"


@pytest.mark.parametrize("lesson", sorted({m.lesson for m in MUTANTS}))
def test_honest_solution_keeps_full_marks(graded: dict[str, dict[str, float]], lesson: str) -> None:
    source = nbformat.read(str(LESSONS / f"{lesson}.ipynb"), as_version=4)
    points = {
        str(nbgrader_meta(c)["grade_id"]): float(nbgrader_meta(c)["points"])
        for c in source.cells
        if nbgrader_meta(c).get("grade") and not nbgrader_meta(c).get("solution")
    }
    assert graded[f"honest:{lesson}"] == points


@pytest.mark.parametrize("m", MUTANTS, ids=[f"{m.exercise}:{m.name}" for m in MUTANTS])
def test_mutant_scores_zero_on_its_exercise(graded: dict[str, dict[str, float]], m: Mutant) -> None:
    scores = graded[f"{m.lesson}:{m.exercise}:{m.name}"]
    assert scores[_check_of(m.exercise)] == 0, scores


def test_every_graded_exercise_has_a_mutant() -> None:
    covered = {(m.lesson, m.exercise) for m in MUTANTS}
    for path in sorted(LESSONS.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            meta = nbgrader_meta(cell)
            if meta.get("solution") and cell.cell_type == "code":
                assert (path.stem, meta["grade_id"]) in covered, (path.stem, meta["grade_id"])
    assert len(MUTANTS) >= 30


def test_every_graded_exercise_has_its_targeted_forgery_among_the_mutants() -> None:
    exercises = set()
    for path in sorted(LESSONS.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        exercises |= {
            str(nbgrader_meta(c)["grade_id"])
            for c in nb.cells
            if c.cell_type == "code" and nbgrader_meta(c).get("solution")
        }
    assert set(FORGERIES) | set(UNFORGEABLE) == exercises
    assert not set(FORGERIES) & set(UNFORGEABLE)
    names = {(m.exercise, m.name) for m in MUTANTS}
    for exercise, name in FORGERIES.items():
        assert (exercise, name) in names, (exercise, name)


def test_a_mutant_failing_a_visible_exploration_is_told_the_schedule_in_words_and_replay(
    graded: dict[str, dict[str, float]],
) -> None:
    """Whatever failed it (a wrong value, an error, or only the trace rule), a visible
    exploration's failure comes with the simplest failing schedule found, explained, and the
    line that replays it."""
    explored = 0
    for m in MUTANTS:
        output = FEEDBACK[f"{m.lesson}:{m.exercise}:{m.name}"][_check_of(m.exercise)]
        if output.startswith("A hidden check failed") or " schedules. " not in output:
            continue
        explored += 1
        assert "In the simplest failing schedule found, " in output, (m.name, output)
        assert "This run fails with" in output, (m.name, output)
        assert re.search(r"Replay it: seqlab\.run\(\w+.*schedule='s1:", output), (m.name, output)
    assert explored >= 20


@pytest.mark.parametrize("v", VARIANTS, ids=[f"{v.exercise}:{v.name}" for v in VARIANTS])
def test_a_right_answer_written_differently_keeps_full_marks(
    graded: dict[str, dict[str, float]], v: Mutant
) -> None:
    scores = graded[f"variant:{v.lesson}:{v.exercise}:{v.name}"]
    check = _check_of(v.exercise)
    assert scores[check] > 0 and scores == graded[f"honest:{v.lesson}"], (
        scores,
        FEEDBACK[f"variant:{v.lesson}:{v.exercise}:{v.name}"][check],
    )
