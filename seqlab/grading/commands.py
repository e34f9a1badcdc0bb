"""The ``seqlab release``, ``seqlab grade`` and ``seqlab gradescope-bundle`` commands.

:mod:`seqlab.cli` registers thin wrappers that call these functions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["release_command", "grade_command", "bundle_command", "infer_lesson"]


def release_command(args: argparse.Namespace) -> int:
    from .lesson import LessonNotFound
    from .release import release

    try:
        written = release(args.sources, args.out, getattr(args, "lessons", None))
    except (LessonNotFound, ValueError) as error:
        print(f"seqlab release: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def infer_lesson(submission: str) -> str | None:
    """The lesson ID a submission names: its notebook's ``metadata.seqlab.lesson`` (written by
    ``seqlab release``, so ``submission.ipynb`` grades without ``--lesson``), else its file
    stem when a lesson has that ID."""
    from .lesson import installed_lessons, source_dir

    try:
        with open(submission, encoding="utf-8", errors="replace") as f:
            meta = json.load(f).get("metadata", {})
        lesson = meta.get("seqlab", {}).get("lesson") if isinstance(meta, dict) else None
        if isinstance(lesson, str) and lesson:
            return lesson
    except (OSError, ValueError, AttributeError):
        pass
    stem = Path(submission).stem
    checkout = source_dir()
    known = set(installed_lessons()) | (
        {p.stem for p in checkout.glob("*.ipynb")} if checkout else set()
    )
    return stem if stem in known else None


def _write(text: str, out: str | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)


def _limits_problem(timeout: float, memory: int, total_timeout: float | None = None) -> str:
    """What is wrong with the grading limits, or "" (a limit of 0 would silently mean none)."""
    if not timeout > 0:
        return f"--timeout must be positive, not {timeout:g}"
    if total_timeout is not None and not total_timeout > 0:
        return f"--total-timeout must be positive, not {total_timeout:g}"
    if memory < 1:
        return f"--memory must be at least 1 (MiB), not {memory}"
    return ""


def grade_command(args: argparse.Namespace) -> int:
    from .grader import GradeSettings, SubmissionResult, grade_many
    from .lesson import Lesson, LessonNotFound, load_lesson

    specs = [args.lesson or infer_lesson(sub) for sub in args.submissions]
    unknown = [sub for sub, spec in zip(args.submissions, specs, strict=True) if spec is None]
    if unknown:
        print(
            "seqlab grade: which lesson? these notebooks name none (no metadata.seqlab.lesson, "
            f"no lesson with their file name): {', '.join(unknown)}; pass --lesson ID or "
            "--lesson PATH/TO/SOURCE.ipynb",
            file=sys.stderr,
        )
        return 2
    loaded: dict[str, Lesson] = {}
    try:
        for spec in specs:
            assert spec is not None
            if spec not in loaded:
                loaded[spec] = load_lesson(spec, args.lessons)
    except LessonNotFound as error:
        print(f"seqlab grade: {error}", file=sys.stderr)
        return 2
    students = sorted({str(x.path) for x in loaded.values() if x.is_student_version})
    if students:
        print(
            "seqlab grade: grading needs the lesson *source* (solutions, hidden checks), but "
            f"{', '.join(students)} is a student version: pass --lesson PATH/TO/SOURCE.ipynb "
            "or --lessons DIR (the repository's lessons/ folder)",
            file=sys.stderr,
        )
        return 2
    lessons = [loaded[str(spec)] for spec in specs]
    fmt = args.format or ("gradescope" if len(args.submissions) == 1 else "json")
    if fmt == "gradescope" and len(args.submissions) != 1:
        print(
            "seqlab grade: --format gradescope writes one submission's results.json; "
            "use --format json (or text) for a batch",
            file=sys.stderr,
        )
        return 2
    if args.jobs < 1:
        print("seqlab grade: --jobs must be at least 1", file=sys.stderr)
        return 2
    problem = _limits_problem(args.timeout, args.memory, args.total_timeout)
    if problem:
        print(f"seqlab grade: {problem}", file=sys.stderr)
        return 2
    settings = GradeSettings(
        cell_timeout=args.timeout,
        total_timeout=args.total_timeout,
        memory_mb=args.memory,
        hidden_visibility=args.hidden_visibility,
    )
    from .sandbox import detect

    warning = detect().warning()
    if warning:
        print(warning, file=sys.stderr)

    def progress(result: SubmissionResult) -> None:
        if len(args.submissions) > 1:
            print(
                f"graded {result.submission}: {result.score:g}/{result.max_score:g}",
                file=sys.stderr,
            )

    from .checkplan import LessonError

    try:
        batch = grade_many(args.submissions, lessons, settings, jobs=args.jobs, progress=progress)
    except LessonError as error:
        print(f"seqlab grade: the lesson cannot be graded: {error}", file=sys.stderr)
        return 2
    data: Any
    if fmt == "gradescope":
        _write(json.dumps(batch.results[0].to_gradescope(), indent=2) + "\n", args.out)
    elif fmt == "json":
        data = batch.to_json()
        _write(json.dumps(data, indent=2) + "\n", args.out)
    else:
        _write("\n\n".join(r.to_text() for r in batch.results) + "\n", args.out)
    if len(batch.results) > 1:
        print(
            f"graded {len(batch.results)} submissions in {batch.seconds:.1f} s with "
            f"{batch.jobs} job(s): {batch.per_minute:.1f} submissions per minute",
            file=sys.stderr,
        )
    return 0


def bundle_command(args: argparse.Namespace) -> int:
    from .gradescope import BundleError, build_bundle
    from .lesson import LessonNotFound

    problem = _limits_problem(args.timeout, args.memory)
    if problem:
        print(f"seqlab gradescope-bundle: {problem}", file=sys.stderr)
        return 2
    try:
        path = build_bundle(
            args.lesson,
            args.out,
            wheel=args.wheel,
            timeout=args.timeout,
            memory_mb=args.memory,
            hidden_visibility=args.hidden_visibility,
        )
    except (LessonNotFound, BundleError) as error:
        print(f"seqlab gradescope-bundle: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
