"""seqlab grade: scores from the lesson source, in a limited kernel, robust to bad notebooks.

Kernel starts cost seconds, so each module-scoped fixture grades its submissions as one batch
(``--jobs 2``) and the tests assert on the results.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import nbformat
import pytest
from grading_support import (
    DEPOSIT,
    DEPOSIT_RACY,
    DOUBLE,
    DOUBLE_WRONG,
    FIXTURES,
    SOURCE,
    make_submission,
)

import seqlab
from seqlab.cli import main
from seqlab.grading.grader import GradeSettings, SubmissionResult, grade_many
from seqlab.grading.lesson import Lesson

SCHEMA = json.loads((FIXTURES / "gradescope-results.schema.json").read_text())


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory, lesson: Lesson) -> dict[str, SubmissionResult]:
    d = tmp_path_factory.mktemp("subs")
    (d / "garbage.ipynb").write_text('{"cells": [ this is not json')
    (d / "not-a-notebook.ipynb").write_text('{"hello": 1}')
    subs = {
        "solution": SOURCE,
        "released": make_submission(d, "released"),
        "racy": make_submission(d, "racy", {"double": DOUBLE, "deposit": DEPOSIT_RACY}),
        "extra-cells": make_submission(
            d, "extra", {"double": DOUBLE, "deposit": DEPOSIT}, extra=["x = 1"]
        ),
        "garbage": d / "garbage.ipynb",
        "not-a-notebook": d / "not-a-notebook.ipynb",
        "missing-file": d / "nowhere.ipynb",
    }
    batch = grade_many(subs.values(), lesson, GradeSettings(cell_timeout=20), jobs=2)
    return dict(zip(subs, batch.results))


def _tests(result: SubmissionResult) -> dict[str, tuple[float, str]]:
    return {t.grade_id: (t.score, t.output) for t in result.tests}


def test_solution_notebook_gets_full_score(graded: dict[str, SubmissionResult]) -> None:
    result = graded["solution"]
    assert (result.score, result.max_score) == (3, 3), result.to_text()
    assert all(t.passed for t in result.tests)


def test_released_notebook_scores_zero_with_helpful_messages(
    graded: dict[str, SubmissionResult],
) -> None:
    result = graded["released"]
    assert result.score == 0 and result.max_score == 3
    for _score, output in _tests(result).values():
        assert "not done yet" in output and "NotImplementedError" in output


def test_racy_solution_that_passes_one_seed_is_caught_with_its_failing_seed(
    graded: dict[str, SubmissionResult],
) -> None:
    namespace: dict[str, object] = {}
    setup = "import trio\nfrom seqlab.grading import check_equal\n"
    account = nbformat.read(str(SOURCE), as_version=4).cells[6].source.split("\n", 1)[1]
    scenario = "\n".join(nbformat.read(str(SOURCE), as_version=4).cells[8].source.splitlines()[:10])
    exec(setup + account + "\n" + DEPOSIT_RACY + "\n" + scenario, namespace)
    seqlab.run(namespace["three_deposits"], seed=3)  # type: ignore[arg-type]  # passes here
    scores = _tests(graded["racy"])
    assert scores["double-check"][0] == 1  # partial credit
    score, output = scores["deposit-check"]
    assert score == 0
    assert re.search(r"failed on \d+ of 20 schedules\. In the simplest failing", output), output
    assert "This run fails with" in output  # the shrunk schedule, in words
    replay = re.search(r"Replay it: seqlab.run\(three_deposits, schedule='(s1:[^']*)'", output)
    assert replay is not None, output
    with pytest.raises(Exception, match="balance"):
        seqlab.run(namespace["three_deposits"], schedule=replay.group(1))  # type: ignore[arg-type]
    assert "End of its trace" in output and "teller-" in output
    assert graded["racy"].score == 1


def test_learner_added_cells_are_not_run_and_reported(graded: dict[str, SubmissionResult]) -> None:
    result = graded["extra-cells"]
    assert result.score == 3
    assert "1 code cell(s) you added" in result.output


@pytest.mark.parametrize("name", ["garbage", "not-a-notebook", "missing-file"])
def test_unreadable_submissions_score_zero_with_a_clear_message(
    graded: dict[str, SubmissionResult], name: str
) -> None:
    result = graded[name]
    assert result.score == 0 and result.max_score == 3
    assert "could not be read as a notebook" in result.output
    assert len(result.tests) == 2 and all(not t.passed for t in result.tests)


def test_every_result_validates_against_the_gradescope_schema(
    graded: dict[str, SubmissionResult],
) -> None:
    for result in graded.values():
        jsonschema.validate(result.to_gradescope(), SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tests": [{"status": "ok"}]}, SCHEMA)


def test_grade_command_writes_gradescope_json_and_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = make_submission(tmp_path, "fixture-lesson", {"double": DOUBLE_WRONG, "deposit": DEPOSIT})
    out = tmp_path / "results.json"
    code = main(["grade", str(sub), "--lesson", str(SOURCE), "--out", str(out), "--timeout", "20"])
    assert code == 0
    data = json.loads(out.read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["score"] == 2
    assert [t["status"] for t in data["tests"]] == ["failed", "passed"]
    assert "double(2) should be 4, but it is 0" in data["tests"][0]["output"]
