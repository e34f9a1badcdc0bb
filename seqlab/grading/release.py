"""Student versions of lesson notebooks (``seqlab release``).

Releasing a source notebook:

- replaces each solution region (``### BEGIN SOLUTION`` ... ``### END SOLUTION``) with a
  placeholder that raises :class:`NotImplementedError` naming the exercise, so running the
  cell before doing the exercise says so plainly; a solution cell without markers is
  replaced whole; a Markdown solution cell becomes "YOUR ANSWER HERE";
- removes hidden tests (``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``);
- clears outputs and execution counts;
- keeps every cell's metadata, so the grader can match the learner's cells by ``grade_id``.

Example::

    from seqlab.grading.release import release
    release(["lessons/03-barrier.ipynb"], "release/")   # writes release/03-barrier.ipynb
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .lesson import (
    BEGIN_HIDDEN,
    BEGIN_SOLUTION,
    END_HIDDEN,
    END_SOLUTION,
    load_lesson,
    nbgrader_meta,
    source_text,
    strip_region,
)

__all__ = ["release_notebook", "release", "placeholder_lines", "MARKDOWN_PLACEHOLDER"]

MARKDOWN_PLACEHOLDER = "YOUR ANSWER HERE"


def placeholder_lines(exercise: str) -> list[str]:
    """The lines that stand in for a removed solution."""
    return [
        "# YOUR CODE HERE",
        f'raise NotImplementedError("exercise {exercise}: replace this line with your solution")',
    ]


def release_notebook(nb: Any) -> Any:
    """Return the student version of the source notebook ``nb`` (``nb`` is not changed)."""
    out = copy.deepcopy(nb)
    for index, cell in enumerate(out.cells):
        meta = nbgrader_meta(cell)
        text = source_text(cell)
        exercise = str(meta.get("grade_id", f"cell-{index}"))
        if cell.cell_type == "code":
            if BEGIN_SOLUTION in text:
                text = strip_region(text, BEGIN_SOLUTION, END_SOLUTION, placeholder_lines(exercise))
            elif meta.get("solution"):
                text = "\n".join(placeholder_lines(exercise))
            if BEGIN_HIDDEN in text:
                text = strip_region(text, BEGIN_HIDDEN, END_HIDDEN).rstrip("\n")
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            if BEGIN_SOLUTION in text:
                text = strip_region(text, BEGIN_SOLUTION, END_SOLUTION, [MARKDOWN_PLACEHOLDER])
            elif meta.get("solution"):
                text = MARKDOWN_PLACEHOLDER
        cell.source = text
    return out


def release(
    paths: Iterable[str | Path], out: str | Path, lessons_dir: str | Path | None = None
) -> list[Path]:
    """Write the student version of each source notebook in ``paths`` into directory ``out``.

    Each path may also be a lesson ID (looked up as :func:`load_lesson` does). The student
    version keeps ``metadata.seqlab.lesson`` (the lesson ID), so a submission named anything
    is graded against the right lesson. Returns the written paths.
    """
    import nbformat

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for spec in paths:
        lesson = load_lesson(spec, lessons_dir)
        student = release_notebook(lesson.notebook)
        student.metadata.setdefault("seqlab", {})["lesson"] = lesson.id
        dest = target / f"{lesson.id}.ipynb"
        if dest.resolve() == lesson.path.resolve():
            raise ValueError(f"out: releasing {lesson.path} would overwrite its source")
        nbformat.write(student, str(dest))
        written.append(dest)
    return written
