"""The grader: score submissions against a lesson's source, never against the submission.

How one submission is graded (:func:`grade`):

1. **Rebuild.** The notebook that runs is built from the lesson *source*: every locked cell and
   every check cell (hidden checks included) comes from the source; from the submission only
   the solution cells are taken, matched by ``grade_id``. Cells the learner added are not run
   (the report says so); a solution cell the learner deleted is replaced by its placeholder.
2. **Run in a fresh kernel.** A worker process (:mod:`seqlab.grading._worker`, one per
   submission; ``jobs`` of them at a time) starts the grading kernel (:mod:`seqlab.grading._kernel`: the seqlab kernel, so top-level ``await``
   works, under ``RLIMIT_AS``/``RLIMIT_CPU`` limits) in an empty working directory and runs
   the cells with a per-cell time limit; the grader kills worker and kernel at the total limit.
3. **Guard the checks.** The first cell snapshots seqlab, trio and the builtins before any
   learner code runs; each check cell starts by restoring that snapshot and rebinding the
   check helpers, and ends by verifying that nothing changed meanwhile
   (:mod:`seqlab.grading._guard`), so learner redefinitions and monkeypatches, even from a
   background thread, do not reach the check.
4. **Decide from the kernel's replies.** A check passes when the kernel's execute reply for
   its cell says ``ok`` and the kernel published no error for it. Nothing the cell prints counts. After each
   check cell a *canary* cell that must fail is run; if the kernel reports it as passing,
   something in the submission is hiding errors and that check (and every later one) scores 0.
   The worker reports replies over its stdout, every line signed with a key the kernel never
   sees.
5. **Always a result.** An unreadable notebook, a hang, a crash, ``sys.exit``/``os._exit``, an
   exhausted memory limit: checks that did not pass score 0, with a message saying why, and
   the result is still complete and valid.

Concurrency checks are ordinary check cells calling :func:`seqlab.grading.check_explore`,
whose failure message names the failing seed, shows a trace excerpt and the replay line.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .lesson import Lesson, nbgrader_meta, source_text
from .release import release_notebook

__all__ = [
    "GradeSettings",
    "TestResult",
    "SubmissionResult",
    "Batch",
    "rebuild",
    "grade",
    "grade_many",
    "MAX_NOTEBOOK_BYTES",
]

MAX_NOTEBOOK_BYTES = 20 * 1024 * 1024
_OUTPUT_CHARS = 4000


@dataclass(frozen=True)
class GradeSettings:
    """Limits for one submission: seconds per cell, seconds in all, kernel memory in MiB,
    and (when grading as root) the unprivileged user the kernel runs as."""

    cell_timeout: float = 60.0
    total_timeout: float | None = None
    memory_mb: int = 2048
    run_as: str | None = None

    @property
    def total(self) -> float:
        return self.total_timeout if self.total_timeout is not None else 10 * self.cell_timeout


@dataclass
class TestResult:
    """The outcome of one check cell."""

    grade_id: str
    score: float
    max_score: float
    passed: bool
    output: str
    hidden: bool = False
    seconds: float = 0.0

    def to_gradescope(self, number: int) -> dict[str, Any]:
        return {
            "name": self.grade_id,
            "number": str(number),
            "score": self.score,
            "max_score": self.max_score,
            "status": "passed" if self.passed else "failed",
            "output": self.output,
            "visibility": "visible",
            "extra_data": {"seconds": round(self.seconds, 3), "has_hidden_checks": self.hidden},
        }


@dataclass
class SubmissionResult:
    """The outcome of grading one submission."""

    submission: str
    lesson: str
    tests: list[TestResult]
    output: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tests)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tests)

    def to_gradescope(self) -> dict[str, Any]:
        """This result in Gradescope's ``results.json`` format."""
        return {
            "score": self.score,
            "execution_time": round(self.seconds, 3),
            "output": self.output or f"{self.score:g} of {self.max_score:g} points.",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": [t.to_gradescope(i) for i, t in enumerate(self.tests, 1)],
            "extra_data": {"lesson": self.lesson, "max_score": self.max_score},
        }

    def to_text(self) -> str:
        lines = [
            f"{self.submission}: {self.score:g}/{self.max_score:g} (lesson {self.lesson}, "
            f"{self.seconds:.1f} s)"
        ]
        if self.output:
            lines.append(_indent(self.output, "  "))
        for t in self.tests:
            mark = "PASS" if t.passed else "FAIL"
            lines.append(f"  [{mark}] {t.grade_id}: {t.score:g}/{t.max_score:g}")
            if not t.passed and t.output:
                lines.append(_indent(t.output, "      "))
        return "\n".join(lines)


@dataclass
class Batch:
    """Results of :func:`grade_many`, with throughput."""

    results: list[SubmissionResult]
    seconds: float
    jobs: int

    @property
    def per_minute(self) -> float:
        return 60.0 * len(self.results) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "submissions": [
                {"submission": r.submission, "lesson": r.lesson, "results": r.to_gradescope()}
                for r in self.results
            ],
            "summary": {
                "count": len(self.results),
                "seconds": round(self.seconds, 3),
                "jobs": self.jobs,
                "submissions_per_minute": round(self.per_minute, 2),
            },
        }


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _clip(text: str) -> str:
    if len(text) <= _OUTPUT_CHARS:
        return text
    return text[: _OUTPUT_CHARS - 40] + "\n... (output shortened)"


# --------------------------------------------------------------------------- rebuild


@dataclass
class _Plan:
    """The notebook to run and what each of its code cells is."""

    notebook: Any
    roles: dict[int, tuple[str, str]]  # cell index -> (role, grade_id)
    notes: list[str] = field(default_factory=list)
    nonce: str = ""


def _guard_prefix(nonce: str) -> str:
    return f'__import__("sys").modules["_seqlab_guard_{nonce}"].restore(globals())\n'


def _guard_suffix(nonce: str) -> str:
    return f'__import__("sys").modules["_seqlab_guard_{nonce}"].verify()\n'


def _canary(nonce: str) -> str:
    return f'raise AssertionError("seqlab-canary-{nonce}")'


def rebuild(lesson: Lesson, submission: Any, nonce: str | None = None) -> _Plan:
    """The notebook to run: the lesson source with the submission's solution cells in it."""
    import nbformat

    nonce = nonce or secrets.token_hex(8)
    student_cells: dict[str, Any] = {}
    extra = 0
    duplicates: set[str] = set()
    # The lesson's own cells without nbgrader metadata are not "added" by the learner.
    unmarked = {
        source_text(c).strip()
        for c in lesson.notebook.cells
        if c.cell_type == "code" and "grade_id" not in nbgrader_meta(c)
    }
    for cell in submission.get("cells", []):
        gid = nbgrader_meta(cell).get("grade_id")
        if gid is None:
            text = source_text(cell).strip()
            if cell.get("cell_type") == "code" and text and text not in unmarked:
                extra += 1
            continue
        gid = str(gid)
        if gid in student_cells:
            duplicates.add(gid)
            continue
        student_cells[gid] = cell
    released = release_notebook(lesson.notebook)
    new = nbformat.v4.new_code_cell
    cells = [
        new(
            "import seqlab.grading._guard as _seqlab_guard_module\n"
            f'_seqlab_guard_module.install("{nonce}")\n'
            "del _seqlab_guard_module"
        ),
        new(_canary(nonce)),
    ]
    roles: dict[int, tuple[str, str]] = {0: ("preamble", ""), 1: ("canary", "")}
    notes: list[str] = []
    for index, cell in enumerate(lesson.notebook.cells):
        if cell.cell_type != "code":
            continue
        meta = nbgrader_meta(cell)
        gid = str(meta.get("grade_id", f"cell-{index}"))
        if meta.get("solution"):
            mine = student_cells.get(gid)
            if mine is None or mine.get("cell_type") != "code":
                notes.append(
                    f"Your notebook has no code cell with grade_id {gid!r} (was it deleted, or "
                    "its metadata lost?); it was graded as not done."
                )
                text = source_text(released.cells[index])
            else:
                text = source_text(mine)
            roles[len(cells)] = ("solution", gid)
            cells.append(new(text))
        elif meta.get("grade"):
            roles[len(cells)] = ("test", gid)
            body = source_text(cell).rstrip("\n")
            cells.append(new(_guard_prefix(nonce) + body + "\n" + _guard_suffix(nonce)))
            roles[len(cells)] = ("canary", gid)
            cells.append(new(_canary(nonce)))
        else:
            roles[len(cells)] = ("locked", gid)
            cells.append(new(source_text(cell)))
    if extra:
        notes.append(
            f"{extra} code cell(s) you added outside the exercise cells were not run: "
            "put code the checks need inside the exercise cells."
        )
    if duplicates:
        notes.append(
            "Cells with the same grade_id appear more than once (only the first was used): "
            + ", ".join(sorted(duplicates))
        )
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {"kernelspec": {"name": "seqlab-grader", "display_name": "seqlab grader"}}
    return _Plan(notebook=nb, roles=roles, notes=notes, nonce=nonce)


# --------------------------------------------------------------------------- running


def _read_submission(path: Path) -> Any:
    import nbformat

    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"the file is {size} bytes; the limit is {MAX_NOTEBOOK_BYTES}")
    text = path.read_text(encoding="utf-8", errors="replace")
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError("it is JSON but not a notebook (no list of cells)")
    for cell in data["cells"]:
        if not isinstance(cell, dict):
            raise ValueError("a cell is not a JSON object")
    if data.get("nbformat", 4) < 4:
        return nbformat.reads(text, as_version=4)
    return nbformat.from_dict(data)


def _all_zero(lesson: Lesson, submission: str, message: str, seconds: float) -> SubmissionResult:
    tests = [
        TestResult(t.grade_id, 0.0, t.points, False, message, t.has_hidden) for t in lesson.tests
    ]
    return SubmissionResult(submission, lesson.id, tests, message, seconds)


def _kill(pid: int | None, group: bool) -> None:
    if not pid:
        return
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _run_worker(plan: _Plan, settings: GradeSettings) -> tuple[dict[int, dict[str, Any]], str]:
    """Run the plan in a worker; (per-cell reports, reason the run ended early or "")."""
    key = secrets.token_bytes(32)
    from ._worker import verify

    job = {
        "key": key.hex(),
        "notebook": plan.notebook,
        "cell_timeout": max(1, round(settings.cell_timeout)),
        "memory_mb": settings.memory_mb,
        "cpu_seconds": max(5, int(settings.total) + 5),
        "run_as": settings.run_as,
    }
    reports: dict[int, dict[str, Any]] = {}
    state: dict[str, Any] = {"stop": "", "kernel_pid": None, "done": False}
    with (
        tempfile.TemporaryDirectory(prefix="seqlab-grade-") as scratch,
        tempfile.TemporaryFile() as errlog,
    ):
        if settings.run_as:
            os.chmod(scratch, 0o711)  # the learner's user must reach its working folder
        job["scratch"] = scratch
        proc = subprocess.Popen(
            [sys.executable, "-m", "seqlab.grading._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            start_new_session=True,
            text=True,
        )

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                body = verify(key, line.strip())
                if body is None:
                    continue
                if "kernel_pid" in body:
                    state["kernel_pid"] = body["kernel_pid"]
                elif "cell" in body and "status" in body:
                    reports[int(body["cell"])] = body
                elif "dead" in body:
                    state["stop"] = "dead"
                    state["dead_cell"] = body["dead"]
                elif "stopped" in body:
                    state["stop"] = "unresponsive"
                elif "fatal" in body:
                    state["stop"] = "fatal"
                    state["fatal"] = body["fatal"]
                elif body.get("done"):
                    state["done"] = True

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            proc.wait(timeout=settings.total + 30)
        except subprocess.TimeoutExpired:
            state["stop"] = "total-timeout"
        reader.join(timeout=5)
        if proc.poll() is None or state["stop"] == "total-timeout":
            _kill(proc.pid, group=True)
            _kill(state["kernel_pid"], group=True)
            proc.wait()
        else:
            _kill(state["kernel_pid"], group=True)
        if not state["done"] and not state["stop"]:
            errlog.seek(0)
            tail = errlog.read().decode(errors="replace").strip().splitlines()[-3:]
            state["stop"] = "fatal"
            state["fatal"] = "the grading worker ended unexpectedly" + (
                ": " + " / ".join(tail) if tail else ""
            )
    reason = {
        "": "",
        "dead": "The kernel died while running your code (a crash, sys.exit/os._exit, or the "
        f"memory limit of {settings.memory_mb} MiB); checks after that point were not run.",
        "unresponsive": "A cell ran longer than the limit of "
        f"{settings.cell_timeout:g} s and the kernel did not respond to an interrupt; "
        "checks after that point were not run.",
        "total-timeout": f"Grading took longer than the total limit of {settings.total:g} s; "
        "checks after that point were not run.",
        "fatal": f"The grader could not run your notebook: {state.get('fatal', '')}",
    }[state["stop"]]
    return reports, reason


def _describe_error(error: dict[str, Any] | None) -> str:
    if not error:
        return "it failed without an error message"
    ename, evalue = error.get("ename", ""), error.get("evalue", "")
    if ename in ("CheckFailed", "AssertionError") and evalue:
        return evalue
    tb = "\n".join(error.get("traceback", [])[-8:])
    return f"{ename}: {evalue}" + (f"\n{tb}" if tb else "")


def _score(
    lesson: Lesson,
    plan: _Plan,
    reports: dict[int, dict[str, Any]],
    reason: str,
    settings: GradeSettings,
) -> tuple[list[TestResult], list[str]]:
    by_id = {t.grade_id: t for t in lesson.tests}
    solution_notes: dict[str, str] = {}
    results: list[TestResult] = []
    tampered = False
    messages = list(plan.notes)
    pending: TestResult | None = None
    canary_ok = _canary_fine(reports.get(1), plan.nonce)
    if not canary_ok and 1 in reports:
        tampered = True
    for index in sorted(plan.roles):
        role, gid = plan.roles[index]
        report = reports.get(index)
        if role == "solution" and report is not None:
            if report["status"] == "timeout":
                solution_notes[gid] = (
                    f"Your cell {gid!r} ran longer than {settings.cell_timeout:g} s and was "
                    "interrupted."
                )
            elif report["status"] != "ok":
                err = report.get("error") or {}
                if err.get("ename") == "NotImplementedError":
                    solution_notes[gid] = (
                        f"Exercise {gid!r} is not done yet: its cell still raises "
                        "NotImplementedError. Replace the placeholder with your solution."
                    )
                else:
                    solution_notes[gid] = f"Your cell {gid!r} raised " + _describe_error(err)
        elif role == "test":
            spec = by_id[gid]
            pending = TestResult(gid, 0.0, spec.points, False, "", spec.has_hidden)
            results.append(pending)
            note = solution_notes.get(spec.exercise or "", "")
            if report is None:
                pending.output = reason or "This check was not run."
            elif report["status"] == "timeout":
                pending.output = (
                    f"This check ran longer than {settings.cell_timeout:g} s and was stopped."
                )
            elif report["status"] == "ok":
                pending.passed = True
            elif (report.get("error") or {}).get("ename") == "NotImplementedError":
                pending.output = (
                    f"Exercise {spec.exercise or gid!r} is not done yet: it still raises "
                    "NotImplementedError. Replace the placeholder with your solution."
                )
            else:
                pending.output = "This check failed: " + _describe_error(report.get("error"))
            pending.seconds = float(report.get("seconds", 0.0)) if report else 0.0
            if note and not pending.passed:
                pending.output = f"{note}\n{pending.output}"
        elif role == "canary" and gid and pending is not None:
            if tampered or (report is not None and not _canary_fine(report, plan.nonce)):
                if not tampered:
                    messages.append(
                        "The kernel stopped reporting errors while grading (something in the "
                        "submission interferes with how failures are reported); checks from "
                        "that point on score 0."
                    )
                tampered = True
                pending.passed = False
                pending.output = (
                    "Not trusted: the kernel did not report a deliberate failure after this "
                    "check, so its result cannot be believed."
                )
            elif report is None and pending.passed:
                pending.passed = False
                pending.output = reason or "The grader could not confirm this check."
            pending = None
    if pending is not None and pending.passed:
        pending.passed = False
        pending.output = reason or "The grader could not confirm this check."
    for r in results:
        r.score = r.max_score if r.passed else 0.0
        r.output = _clip(r.output)
    if reason:
        messages.append(reason)
    return results, messages


def _canary_fine(report: dict[str, Any] | None, nonce: str) -> bool:
    if report is None:
        return False
    error = report.get("error") or {}
    return (
        report.get("status") == "error"
        and error.get("ename") == "AssertionError"
        and f"seqlab-canary-{nonce}" in str(error.get("evalue", ""))
    )


def grade(
    submission: str | Path, lesson: Lesson, settings: GradeSettings | None = None
) -> SubmissionResult:
    """Grade one submission notebook against ``lesson``; never raises for a bad submission."""
    settings = settings or GradeSettings()
    began = time.monotonic()
    path = Path(submission)
    try:
        nb = _read_submission(path)
    except Exception as exc:
        return _all_zero(
            lesson,
            str(submission),
            f"Your submission could not be read as a notebook ({type(exc).__name__}: {exc}). "
            "Submit the .ipynb file saved by Jupyter.",
            time.monotonic() - began,
        )
    try:
        plan = rebuild(lesson, nb)
        reports, reason = _run_worker(plan, settings)
        tests, messages = _score(lesson, plan, reports, reason, settings)
    except Exception as exc:
        return _all_zero(
            lesson,
            str(submission),
            f"The grader failed on this submission ({type(exc).__name__}: {exc}); "
            "tell your instructor.",
            time.monotonic() - began,
        )
    result = SubmissionResult(
        str(submission), lesson.id, tests, "\n".join(messages), time.monotonic() - began
    )
    summary = f"{result.score:g} of {result.max_score:g} points."
    result.output = summary + ("\n" + result.output if result.output else "")
    return result


def grade_many(
    submissions: Iterable[str | Path],
    lesson: Lesson | Sequence[Lesson],
    settings: GradeSettings | None = None,
    jobs: int = 1,
    progress: Callable[[SubmissionResult], None] | None = None,
) -> Batch:
    """Grade many submissions, ``jobs`` at a time (each in its own worker and kernel).

    ``lesson`` is one lesson for all, or a sequence with one lesson per submission.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    items: Sequence[str | Path] = list(submissions)
    lessons = [lesson] * len(items) if isinstance(lesson, Lesson) else list(lesson)
    if len(lessons) != len(items):
        raise ValueError(f"lesson: {len(lessons)} lessons for {len(items)} submissions")
    began = time.monotonic()

    def one(pair: tuple[str | Path, Lesson]) -> SubmissionResult:
        result = grade(pair[0], pair[1], settings)
        if progress is not None:
            progress(result)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, zip(items, lessons, strict=True)))
    return Batch(results, time.monotonic() - began, jobs)
