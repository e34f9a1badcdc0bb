"""Grading: submissions graded per minute with two jobs (a full run only)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import limit

COPIES = 8


@limit("grading", "lesson 00 solutions graded, --jobs 2", unit="per min", target=None, heavy=True)
def per_minute(quick: bool) -> float:
    from ..grading.grader import grade_many
    from ..grading.lesson import installed_lessons, load_lesson

    source = installed_lessons()["00-welcome"]
    lesson = load_lesson(source)
    with tempfile.TemporaryDirectory(prefix="seqlab-bench-") as folder:
        copies = []
        for i in range(COPIES):
            copy = Path(folder) / f"student-{i}.ipynb"
            shutil.copy(source, copy)
            copies.append(copy)
        batch = grade_many(copies, lesson, jobs=2)
    if any(r.score != r.max_score for r in batch.results):
        raise RuntimeError("the lesson's own solutions did not get full marks")
    return batch.per_minute
