"""Grading: lesson-00 submissions graded per minute with two jobs, sandbox included (a full
run only)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import limit

COPIES = 8


@limit("grading", "lesson 00 solutions graded, --jobs 2", unit="per min", target=None, heavy=True)
def per_minute(quick: bool) -> float:
    from ..grading.grader import grade_many
    from ..grading.lesson import load_lesson, source_dir

    sources = source_dir()
    if sources is None:
        raise RuntimeError("needs the lesson sources: run seqlab bench from a checkout")
    source = sources / "00-welcome.ipynb"
    lesson = load_lesson(source)
    with tempfile.TemporaryDirectory(prefix="seqlab-bench-") as scratch:
        copies = []
        for i in range(COPIES):
            copy = Path(scratch) / f"student-{i}.ipynb"
            shutil.copy(source, copy)
            copies.append(copy)
        batch = grade_many(copies, lesson, jobs=2)
    if any(r.score != r.max_score for r in batch.results):
        raise RuntimeError("the lesson's own solutions did not get full marks")
    return batch.per_minute
