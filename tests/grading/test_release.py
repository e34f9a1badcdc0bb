"""seqlab release: student versions keep metadata, lose solutions, hidden tests and outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from grading_support import SOURCE

from seqlab.cli import main
from seqlab.grading.lesson import (
    LessonNotFound,
    installed_lessons,
    load_lesson,
    nbgrader_meta,
    strip_region,
)
from seqlab.grading.release import release, release_notebook


def _by_id(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {nbgrader_meta(c)["grade_id"]: c for c in nb.cells}


def test_release_replaces_solutions_with_a_placeholder_that_raises() -> None:
    source = nbformat.read(str(SOURCE), as_version=4)
    student = _by_id(release_notebook(source))
    text = student["double"].source
    assert "BEGIN SOLUTION" not in text and "return 2 * x" not in text
    assert text.startswith("def double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError(")
    namespace: dict[str, object] = {}
    exec(text, namespace)
    with pytest.raises(NotImplementedError, match="exercise double"):
        namespace["double"](1)  # type: ignore[operator]


def test_release_removes_hidden_tests_and_outputs_and_keeps_metadata() -> None:
    source = nbformat.read(str(SOURCE), as_version=4)
    source.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello")]
    source.cells[1].execution_count = 3
    released = release_notebook(source)
    student = _by_id(released)
    check = student["deposit-check"].source
    assert "HIDDEN" not in check and "range(20, 60)" not in check
    assert "check_explore(three_deposits, seeds=range(20)" in check
    assert all(not c.get("outputs") for c in released.cells if c.cell_type == "code")
    assert all(c.get("execution_count") is None for c in released.cells if c.cell_type == "code")
    for original, copy in zip(source.cells, released.cells):
        assert copy.metadata == original.metadata
    assert "return 2 * x" in _by_id(source)["double"].source  # the source is not changed


def test_release_of_marker_free_solution_cell_and_markdown_answers() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "x = 42", metadata={"nbgrader": {"grade_id": "x", "solution": True}}
        ),
        nbformat.v4.new_markdown_cell(
            "Why?", metadata={"nbgrader": {"grade_id": "why", "solution": True}}
        ),
    ]
    out = release_notebook(nb)
    assert "x = 42" not in out.cells[0].source and "NotImplementedError" in out.cells[0].source
    assert out.cells[1].source == "YOUR ANSWER HERE"


def test_strip_region_keeps_indentation_and_unterminated_regions_end_the_text() -> None:
    text = "a\n  ### BEGIN SOLUTION\n  b\n  ### END SOLUTION\nc\n"
    assert strip_region(text, "### BEGIN SOLUTION", "### END SOLUTION", ["X"]) == "a\n  X\nc\n"
    assert strip_region("a\n### BEGIN HIDDEN TESTS\nb", "### BEGIN HIDDEN TESTS", "### END") == "a"


def test_release_command_writes_student_versions(tmp_path: Path) -> None:
    assert main(["release", str(SOURCE), "--out", str(tmp_path)]) == 0
    written = tmp_path / SOURCE.name
    student = nbformat.read(str(written), as_version=4)
    assert "NotImplementedError" in _by_id(student)["deposit"].source
    with pytest.raises(ValueError, match="overwrite"):
        release([SOURCE], SOURCE.parent)


def test_lessons_resolve_by_path_or_installed_id() -> None:
    assert load_lesson(SOURCE).id == "fixture-lesson"
    assert [t.grade_id for t in load_lesson(SOURCE).tests] == ["double-check", "deposit-check"]
    assert load_lesson(SOURCE).max_score == 3
    with pytest.raises(LessonNotFound, match="give a lesson ID"):
        load_lesson("no-such-lesson")
    with pytest.raises(LessonNotFound, match="no lesson notebook at"):
        load_lesson(Path("missing-folder") / "00-welcome.ipynb")
    # From a checkout, an ID names the source in lessons/ (solutions and hidden checks in it).
    assert load_lesson("00-welcome.ipynb").id == "00-welcome"
    assert not load_lesson("00-welcome").is_student_version
    for lesson_id, path in installed_lessons().items():
        assert load_lesson(lesson_id).id == lesson_id
        assert load_lesson(path).is_student_version  # what ships: student versions only


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["grade", "x.ipynb", "--timeout", "0"], "--timeout must be positive, not 0"),
        (["grade", "x.ipynb", "--total-timeout", "-1"], "--total-timeout must be positive"),
        (["grade", "x.ipynb", "--memory", "0"], "--memory must be at least 1 (MiB), not 0"),
        (["gradescope-bundle", "x", "--memory", "-5"], "--memory must be at least 1"),
    ],
)
def test_grading_commands_reject_limits_that_would_mean_no_limit(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "grade":
        argv = [*argv, "--lesson", str(SOURCE)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
