"""Lessons: wall time of the strict nbval run over every lesson (a full run only)."""

from __future__ import annotations

import subprocess
import sys
import time

from . import limit


@limit("lessons", "nbval wall time, all lessons", unit="s", target=120, heavy=True)
def nbval_time(quick: bool) -> float:
    from ..grading.lesson import source_dir

    lessons = source_dir()
    if lessons is None:
        raise RuntimeError("needs the lesson sources: run seqlab bench from a checkout")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider", str(lessons)],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"nbval failed on the lessons:\n{done.stdout[-2000:]}")
    return elapsed
