"""The grader: score submissions against a lesson's source, never against the submission.

Three steps, one job each (as nbgrader splits them):

1. **Rebuild** (:func:`rebuild`). The notebook that runs is built from the lesson *source*:
   every locked and demo cell comes from the source, and from the submission only the
   solution cells, matched by ``grade_id``. Cells the learner added are not run (the report
   says so); a deleted solution cell is replaced by its placeholder. Each check cell is split
   (:mod:`seqlab.grading.checkplan`): what produces observations goes to the sandbox;
   expected values and trace rules stay here.
2. **Run in the sandbox** (:mod:`seqlab.grading.sandbox`, :mod:`seqlab.grading._runner`).
   One runner per submission, ``jobs`` at a time, in its own PID namespace as an
   unprivileged user with no network, a private temp and home, a read-only view of the
   system and the package, and limits on memory, processes, CPU and wall time. Every cell
   runs in a forked copy, so a crash or hang costs one exercise. A check's source is sent
   only when the runner reaches it.
3. **Score from observations** (:func:`judge`). The runner reports values as canonical JSON,
   errors as type and message, traces as event lists (:mod:`seqlab.grading.protocol`); this
   process compares them with the expected values, with its own equality (never a learner
   object's ``__eq__``), and runs the trace rules. Hidden checks' inputs, expected values
   and learner messages never appear in feedback.

Whatever happens (an unreadable notebook, a hang, a crash, a memory blow-up) the result is
complete and valid: checks that did not pass score 0 with a message saying why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkplan import CompiledCheck, LessonError, Site, compile_check
from .lesson import Lesson, TestCell, nbgrader_meta, source_text
from .protocol import (
    CheckSource,
    Done,
    ExplainAnswer,
    Explained,
    ExplainRequest,
    Exploration,
    Job,
    Need,
    Observation,
    ProtocolError,
    Run,
    Step,
    StepReport,
    Unreadable,
    decode_value,
    read_runner_message,
)
from .release import release_notebook
from .sandbox import PROTECTIONS, Sandbox, detect, launch, lease_uid, release_uid

__all__ = [
    "GradeSettings",
    "TestResult",
    "SubmissionResult",
    "Batch",
    "rebuild",
    "judge",
    "grade",
    "grade_many",
    "MAX_NOTEBOOK_BYTES",
    "VISIBILITIES",
]

MAX_NOTEBOOK_BYTES = 20 * 1024 * 1024
_OUTPUT_CHARS = 4000
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


@dataclass(frozen=True)
class GradeSettings:
    """Limits for one submission: seconds per cell, seconds in all, memory in MiB, processes;
    and the Gradescope visibility of checks that have hidden parts."""

    cell_timeout: float = 60.0
    total_timeout: float | None = None
    memory_mb: int = 2048
    processes: int = 64
    hidden_visibility: str = "after_due_date"

    def __post_init__(self) -> None:
        if self.hidden_visibility not in VISIBILITIES:
            raise ValueError(
                f"hidden_visibility must be one of {', '.join(VISIBILITIES)}, "
                f"not {self.hidden_visibility!r}"
            )

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
    visibility: str = "visible"

    def to_gradescope(self, number: int) -> dict[str, Any]:
        return {
            "name": self.grade_id,
            "number": str(number),
            "score": self.score,
            "max_score": self.max_score,
            "status": "passed" if self.passed else "failed",
            "output": self.output,
            "visibility": self.visibility,
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
    sandbox: dict[str, Any] = field(default_factory=dict)

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
            "extra_data": {
                "lesson": self.lesson,
                "max_score": self.max_score,
                "sandbox": self.sandbox,
            },
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
                "sandbox": detect().to_json(),
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
    """The steps to run, and the compiled check of each check step."""

    steps: list[Step]
    checks: dict[int, tuple[TestCell, CompiledCheck]]
    solutions: dict[int, str]  # step index -> exercise grade_id
    notes: list[str] = field(default_factory=list)


_COMPILED: dict[tuple[int, int], dict[str, tuple[CompiledCheck, CompiledCheck | None]]] = {}


def _compiled(lesson: Lesson) -> dict[str, tuple[CompiledCheck, CompiledCheck | None]]:
    """Each check cell split twice when it has hidden parts: its visible part (run first; its
    failures are explained) and the whole cell (run last; its failures say only what failed)."""
    key = (id(lesson), id(lesson.notebook))
    if key not in _COMPILED:
        compiled: dict[str, tuple[CompiledCheck, CompiledCheck | None]] = {}
        for t in lesson.tests:
            if t.has_hidden:
                full = compile_check(t.source, t.grade_id, skip_visible_explores=True)
                full.hidden_lines = set(range(1, t.source.count("\n") + 2))
                for site in full.sites.values():
                    site.hidden = True
                visible = compile_check(t.visible_source, t.grade_id)
            else:
                visible, full = compile_check(t.source, t.grade_id), None
            if any(s.rule is not None for s in visible.sites.values()):
                source = t.visible_source if t.has_hidden else t.source
                visible.explain_source = compile_check(
                    source, t.grade_id, keep_rules=True
                ).worker_source
            compiled[t.grade_id] = (visible, full)
        _COMPILED[key] = compiled
    return _COMPILED[key]


# CPython 3.11 can fail with "SystemError: AST constructor recursion depth mismatch" when two
# threads build or compile ASTs at once (grade_many grades in threads; rebuilding parses every
# cell): rebuilds take turns. It costs milliseconds per submission.
_AST_LOCK = threading.Lock()


def rebuild(lesson: Lesson, submission: Any) -> _Plan:
    """The steps to run: the lesson source with the submission's solution cells in it."""
    with _AST_LOCK:
        return _rebuild(lesson, submission)


def _rebuild(lesson: Lesson, submission: Any) -> _Plan:
    student_cells: dict[str, Any] = {}
    extra = 0
    duplicates: set[str] = set()
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
    compiled = _compiled(lesson)
    tests = {t.index: t for t in lesson.tests}
    steps: list[Step] = []
    checks: dict[int, tuple[TestCell, CompiledCheck]] = {}
    solutions: dict[int, str] = {}
    notes: list[str] = []
    for index, cell in enumerate(lesson.notebook.cells):
        if cell.cell_type != "code":
            continue
        meta = nbgrader_meta(cell)
        gid = str(meta.get("grade_id", f"cell-{index}"))
        number = len(steps)
        if meta.get("solution"):
            mine = student_cells.get(gid)
            if mine is None or mine.get("cell_type") != "code":
                notes.append(
                    f"Your notebook has no code cell with grade_id {gid!r} (was it deleted, or "
                    "its metadata lost?); it was graded as not done."
                )
                text = source_text(released.cells[index])
            else:
                text = _python(source_text(mine))
            steps.append(Step(number, "solution", gid, text))
            solutions[number] = gid
        elif index in tests:
            test = tests[index]
            visible, full = compiled[gid]
            steps.append(Step(number, "check", gid))
            checks[number] = (test, visible)
            if full is not None:
                steps.append(Step(number + 1, "check", gid, deferred=True))
                checks[number + 1] = (test, full)
        else:
            steps.append(Step(number, "setup", gid, _python(source_text(cell))))
    steps = _without_unused_demos(steps, plan_checks=checks)
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
    return _Plan(steps, checks, solutions, notes)


def _python(text: str) -> str:
    """A cell's IPython syntax (``%magic``, ``!shell``) as plain Python calls on
    ``get_ipython()``, which the runner answers with no-ops: magics and shell commands are
    for the learner's own notebook and are ignored when grading."""
    if not any(line.lstrip().startswith(("%", "!")) for line in text.splitlines()) and (
        "= %" not in text and "=%" not in text
    ):
        return text
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return str(TransformerManager().transform_cell(text))
    except Exception:
        return text


def _names(source: str) -> tuple[set[str], set[str]] | None:
    """(names a cell binds at top level, names it reads anywhere), or None if unparsable."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    bound: set[str] = set()
    for stmt in tree.body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                break
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    # A name the cell binds itself (anywhere: a local, a parameter) is not taken from earlier.
    own = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
    }
    own |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    own |= bound
    return bound, read - own


def _without_unused_demos(
    steps: list[Step], plan_checks: dict[int, tuple[TestCell, CompiledCheck]]
) -> list[Step]:
    """Drop the lesson's ungraded demo cells whose names no later cell reads (they only show
    something); every other cell keeps its place and number."""
    sources = [plan_checks[s.index][0].source if s.kind == "check" else s.source for s in steps]
    parsed = [_names(text) for text in sources]
    keep = [True] * len(steps)
    wanted: set[str] = set()  # names read by the cells kept after this one
    unknown = False  # a later kept cell could not be parsed: keep everything before it
    for i in range(len(steps) - 1, -1, -1):
        step, names = steps[i], parsed[i]
        demo = step.kind == "setup" and step.grade_id.startswith("cell-")
        if demo and names is not None and not unknown and not (names[0] & wanted):
            keep[i] = False
            continue
        if names is None:
            unknown = True
        else:
            wanted |= names[1]
    return [s for s, k in zip(steps, keep, strict=True) if k]


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


def _all_zero(
    lesson: Lesson,
    submission: str,
    message: str,
    seconds: float,
    settings: GradeSettings | None = None,
) -> SubmissionResult:
    hidden = (settings or GradeSettings()).hidden_visibility
    tests = [
        TestResult(
            t.grade_id,
            0.0,
            t.points,
            False,
            message,
            t.has_hidden,
            visibility=hidden if t.has_hidden else "visible",
        )
        for t in lesson.tests
    ]
    return SubmissionResult(submission, lesson.id, tests, message, seconds, detect().to_json())


_MAX_LINE = 16 * 1024 * 1024


def _run_sandbox(
    plan: _Plan, settings: GradeSettings, sandbox: Sandbox
) -> tuple[dict[int, StepReport], str, bool]:
    """Run the plan in a sandbox; (step reports, reason the run ended early or "", whether
    the cgroup limits were in place)."""
    job = Job(
        plan.steps,
        float(settings.cell_timeout),
        settings.memory_mb,
        max(5, int(settings.total) + 5),
        max_report_bytes=_MAX_LINE // 2,
        processes=settings.processes,
    )
    uid = lease_uid() if os.geteuid() == 0 else None
    try:
        return _run_in(plan, job, settings, sandbox, uid)
    finally:
        release_uid(uid)


def _run_in(
    plan: _Plan, job: Job, settings: GradeSettings, sandbox: Sandbox, uid: int | None
) -> tuple[dict[int, StepReport], str, bool]:
    reports: dict[int, StepReport] = {}
    indexes = {s.index for s in plan.steps}
    explainable = {s.index for s in plan.steps if s.kind == "check" and not s.deferred}
    explained: dict[int, Exploration] = {}
    state: dict[str, Any] = {"done": False, "sent": set()}
    with tempfile.TemporaryDirectory(prefix="seqlab-grade-") as scratch:
        proc, cgroup = launch(sandbox, Path(scratch), settings.memory_mb, settings.processes, uid)
        limited = cgroup is not None
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        def answer(index: int) -> None:
            pair = plan.checks.get(index)
            if pair is None or index in state["sent"]:
                return
            state["sent"].add(index)
            line = json.dumps(CheckSource(index, pair[1].worker_source).to_json()) + "\n"
            stdin.write(line.encode())
            stdin.flush()

        def read() -> None:
            while True:
                line = stdout.readline(_MAX_LINE)
                if not line:
                    return
                if not line.endswith(b"\n"):  # too long: skip the rest of it
                    while True:
                        more = stdout.readline(_MAX_LINE)
                        if not more or more.endswith(b"\n"):
                            break
                    continue
                try:
                    message = read_runner_message(json.loads(line))
                    if isinstance(message, Need):
                        answer(message.index)
                    elif isinstance(message, (StepReport, Unreadable)):
                        report = message if isinstance(message, StepReport) else None
                        index = message.index
                        if report is not None and report.index in indexes:
                            reports[report.index] = report
                        if index is not None and index in explainable:
                            explainable.discard(index)
                            request = None
                            compiled = plan.checks[index][1]
                            if report is not None:
                                request = _explain_request(compiled, report)
                            rule = request is not None and request.rule
                            reply = ExplainAnswer(
                                index, request, compiled.explain_source if rule else ""
                            )
                            stdin.write((json.dumps(reply.to_json()) + "\n").encode())
                            stdin.flush()
                    elif isinstance(message, Explained):
                        if message.index in plan.checks:
                            explained[message.index] = message.exploration
                    elif isinstance(message, Done):
                        state["done"] = True
                except Exception:  # a malformed or forged message: ignore it
                    continue

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            stdin.write((json.dumps(job.to_json()) + "\n").encode())
            stdin.flush()
        except OSError:
            pass
        timed_out = False
        try:
            proc.wait(timeout=settings.total)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if cgroup is not None:
            cgroup.kill()
        proc.wait()
        reader.join(timeout=5)
        for stream in (stdin, stdout):
            try:
                stream.close()
            except OSError:
                pass
        if cgroup is not None:
            cgroup.remove()
    if timed_out:
        reason = (
            f"Grading took longer than the total limit of {settings.total:g} s; checks after "
            "that point were not run."
        )
    elif not state["done"]:
        reason = "The grading runner stopped before the end of the notebook; checks after that point were not run."
    else:
        reason = ""
    for index, exploration in explained.items():
        report = reports.get(index)
        if report is not None:
            reports[index] = _with_explanation(plan.checks[index][1], report, exploration)
    return reports, reason, limited


def _explain_request(compiled: CompiledCheck, report: StepReport) -> ExplainRequest | None:
    """For a visible exploration whose first failing run produced a wrong value (no error):
    which run to replay and the wrong value it gave (so the replay can recognise it). For one
    whose first failing run only its trace rule rejected: which run, and ``rule`` (the replay
    then runs the rule, from the visible cell's source, as explore's check)."""
    if report.status != "ok":
        return None
    explorations = {e.site: e for e in report.explorations}
    for site in compiled.sites.values():
        ex = explorations.get(site.id)
        if site.kind != "explore" or site.hidden or ex is None or ex.error is not None:
            continue
        for run in ex.runs:
            try:
                problem = _run_problem(compiled, site, run)
            except _NotDone:
                return None
            if not problem:
                continue
            if run.error is not None or run.explanation:
                return None  # exploration has explained it (or had nothing to say) already
            for obs in run.observations:
                target = compiled.sites.get(obs.site)
                if target is not None and target.kind != "explore" and _compare(target, obs):
                    return ExplainRequest(site.id, run.seed, obs.site, obs.value)
            if compiled.explain_source and problem.startswith(_RULE_REJECTED):
                return ExplainRequest(site.id, run.seed, rule=True)
            return None
    return None


def _with_explanation(
    compiled: CompiledCheck, report: StepReport, exploration: Exploration
) -> StepReport:
    """``report`` with the replayed run's shrunk schedule, explanation and trace copied onto
    the same run, if that run still fails in this process's eyes with them (a replay is made
    in the learner's process: what it sends is believed only when it is a failure too)."""
    replay = next((r for r in exploration.runs if r.explanation), None)
    site = compiled.sites.get(exploration.site)
    if replay is None or site is None or site.kind != "explore":
        return report

    def explained(r: Run) -> Run:
        if r.seed != replay.seed or r.error is not None:
            return r
        shrunk = Run(
            r.seed,
            r.observations,
            None,
            replay.trace or r.trace,
            replay.schedule,
            replay.explanation,
        )
        return shrunk if _run_problem(compiled, site, shrunk) else r

    explorations = []
    for ex in report.explorations:
        if ex.site == exploration.site:
            ex = Exploration(ex.site, [explained(r) for r in ex.runs], ex.error)
        explorations.append(ex)
    return StepReport(
        report.index,
        report.status,
        report.error,
        report.observations,
        explorations,
        report.seconds,
    )


# --------------------------------------------------------------------------- judging


class TraceView:
    """A run's trace as the grader sees it: ``events`` (:class:`seqlab.trace.TraceEvent`
    built from plain data), for trace rules written against :class:`seqlab.Recorder`."""

    def __init__(self, data: list[Any] | None) -> None:
        from types import MappingProxyType

        from ..trace import TraceEvent

        events = []
        for item in data or []:
            if not isinstance(item, dict):
                continue
            raw = item.get("data")
            events.append(
                TraceEvent(
                    float(item.get("time", 0.0))
                    if isinstance(item.get("time"), (int, float))
                    else 0.0,
                    str(item.get("task", "")),
                    str(item.get("primitive", "")),
                    str(item.get("kind", "")),
                    MappingProxyType(dict(raw) if isinstance(raw, dict) else {}),
                )
            )
        self.events = events

    def __iter__(self) -> Any:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def to_text(self) -> str:
        lines = []
        for e in self.events:
            data = "  ".join(f"{k}={v!r}" for k, v in e.data.items())
            lines.append(f"{e.time:8.3f}  {e.task}  {e.primitive}  {e.kind}  {data}".rstrip())
        return "\n".join(lines)


def _excerpt(trace: TraceView, lines: int = 12) -> str:
    text = trace.to_text().splitlines()
    if len(text) <= lines:
        return "\n".join(text)
    return "\n".join([f"... ({len(text) - lines} earlier events)", *text[-lines:]])


def same(a: Any, b: Any) -> bool:
    """Structural equality of plain data, decided here: a bool is not a number, an int equals
    the float of the same value, containers must have the same type."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


class _NotDone(Exception):
    pass


def _compare(site: Site, obs: Observation) -> str:
    """ "" when the observation satisfies the site, else what went wrong (for the learner)."""
    secret = site.hidden
    if obs.not_plain is not None:
        return (
            f"{site.what or 'the value'}: cannot grade a {obs.not_plain}; return plain data "
            "(None, bool, int, float, str, list, tuple, dict)."
        )
    try:
        value = decode_value(obs.value)
    except ProtocolError as exc:
        return f"{site.what}: the value could not be read ({exc})."
    if site.kind == "equal":
        if same(value, site.expected):
            return ""
        if secret:
            return f"A hidden check failed: {site.what} is not what it should be."
        return f"{site.what} should be {site.expected!r}, but it is {value!r}."
    if site.kind == "truth":
        if value is True:
            return ""
        if type(value) is not bool:
            return f"{site.what} (the check expected True or False, not a {type(value).__name__})"
        return ("A hidden check failed: " if secret else "") + site.what
    if site.kind == "raises":
        names = " or ".join(site.expected)
        if isinstance(value, tuple) and len(value) >= 2 and value[0] == "raised":
            if value[1] in site.expected:
                return ""
            shown = f"{value[1]}" if secret else f"{value[1]}: {value[2] if len(value) > 2 else ''}"
            return f"{site.what} should raise {names}, but it raised {shown}"
        return f"{site.what} should raise {names}, but it returned normally."
    return f"unknown check kind {site.kind!r}"


def _error_text(error: Any, secret: bool) -> str:
    if error.type == "NotImplementedError":
        raise _NotDone
    if error.type == "Deadlock":
        return "it deadlocked" + ("" if secret else f":\n{error.message}")
    if secret:
        return f"it raised {error.type} (the message is not shown: a hidden check)"
    return f"it raised {error.type}: {error.message}"


_RULE_REJECTED = "its trace does not show what was required: "


def _run_problem(compiled: CompiledCheck, site: Site, run: Run) -> str:
    if run.error is not None:
        return _error_text(run.error, site.hidden)
    seen: set[int] = set()
    for obs in run.observations:
        target = compiled.sites.get(obs.site)
        if target is None or target.kind == "explore":
            continue
        seen.add(obs.site)
        problem = _compare(target, obs)
        if problem:
            return problem
    for required in compiled.scenario_sites(site.scenario):
        if required.kind != "explore" and required.id not in seen:
            return f"it never reached the check of {required.what or 'its result'}"
    if site.rule is not None:
        try:
            accepted = bool(site.rule(TraceView(run.trace)))
        except Exception:
            accepted = False
        if not accepted:
            return f"{_RULE_REJECTED}{site.rule_doc or '(the trace rule)'}"
    return ""


def _judge_exploration(compiled: CompiledCheck, site: Site, ex: Exploration | None) -> str:
    if ex is None:
        return f"{site.what} was not explored (the check stopped before it)."
    if ex.error is not None:
        return f"{site.what} could not be explored: " + _error_text(ex.error, site.hidden)
    if not ex.runs:
        return f"{site.what} was not explored (no runs were reported)."
    failing = []
    for run in ex.runs:
        problem = _run_problem(compiled, site, run)
        if problem:
            failing.append((run, problem))
    if not failing:
        return ""
    run, problem = failing[0]
    text = f"{site.what} failed on {len(failing)} of {len(ex.runs)} schedules. "
    if site.hidden:
        return "A hidden check failed: " + text + f"In one of them, {problem}"
    if run.explanation:
        story = "\n".join(run.explanation.splitlines()[:-1])  # its replay line is given below
        text += f"In the simplest failing schedule found, {problem}\n{story}"
    elif run.schedule:
        text += f"In one of them, {problem}"
    else:
        text += f"With seed {run.seed}, {problem}"
    if run.trace:
        text += f"\nEnd of its trace:\n{_excerpt(TraceView(run.trace))}"
    how = f"schedule={run.schedule!r}" if run.schedule else f"seed={run.seed}"
    text += f"\nReplay it: seqlab.run({site.replay}, {how}, recorder=seqlab.Recorder())"
    return text


def judge(
    compiled: CompiledCheck, report: StepReport | None, settings: GradeSettings, reason: str = ""
) -> str:
    """ "" when the check passed, else the feedback saying why not."""
    if report is None:
        return reason or "This check was not run."
    if report.status == "timeout":
        return f"This check ran longer than {settings.cell_timeout:g} s and was stopped."
    if report.status == "oversized":
        return "This check produced more data than the grader accepts; return smaller values."
    if report.status == "crashed":
        why = report.error.message if report.error else "it stopped unexpectedly"
        return f"This check could not finish: {why}."
    try:
        if report.status == "error":
            assert report.error is not None
            secret = report.error.line in compiled.hidden_lines
            if report.error.type == "NotImplementedError":
                raise _NotDone
            if secret:
                return f"A hidden check raised {report.error.type} (its message is not shown)."
            return f"This check raised {report.error.type}: {report.error.message}"
        for site in compiled.top_level_sites:
            seen = [o for o in report.observations if o.site == site.id]
            if not seen:
                return f"The check of {site.what or 'a result'} was never reached."
            for obs in seen:
                problem = _compare(site, obs)
                if problem:
                    return problem
        explorations = {e.site: e for e in report.explorations}
        for site in compiled.sites.values():
            if site.kind == "explore":
                problem = _judge_exploration(compiled, site, explorations.get(site.id))
                if problem:
                    return problem
    except _NotDone:
        return (
            "This exercise is not done yet: it still raises NotImplementedError. Replace the "
            "placeholder with your solution."
        )
    return ""


def _score(
    lesson: Lesson,
    plan: _Plan,
    reports: dict[int, StepReport],
    reason: str,
    settings: GradeSettings,
) -> tuple[list[TestResult], list[str]]:
    messages = list(plan.notes)
    solution_notes: dict[str, str] = {}
    for index, gid in plan.solutions.items():
        report = reports.get(index)
        if report is None or report.status == "ok":
            continue
        if report.status == "timeout":
            solution_notes[gid] = (
                f"Your cell {gid!r} ran longer than {settings.cell_timeout:g} s and was stopped; "
                "the checks ran without it."
            )
        elif report.status == "crashed":
            why = report.error.message if report.error else "it stopped unexpectedly"
            solution_notes[gid] = (
                f"Your cell {gid!r} did not finish: {why}; the checks ran without it."
            )
        elif report.error is not None and report.error.type == "NotImplementedError":
            solution_notes[gid] = (
                f"Exercise {gid!r} is not done yet (its cell still raises NotImplementedError)."
            )
        elif report.error is not None:
            solution_notes[gid] = (
                f"Your cell {gid!r} raised {report.error.type}: {report.error.message}"
            )
        else:
            solution_notes[gid] = f"Your cell {gid!r} did not finish."
    results: list[TestResult] = []
    parts: dict[str, list[tuple[TestCell, CompiledCheck, StepReport | None]]] = {}
    for index, (test, compiled) in sorted(plan.checks.items()):
        parts.setdefault(test.grade_id, []).append((test, compiled, reports.get(index)))
    for runs in parts.values():
        test = runs[0][0]
        problem = ""
        for _, compiled, report in runs:
            problem = judge(compiled, report, settings, reason)
            if problem:
                break
        report = runs[0][2]
        note = solution_notes.get(test.exercise or "", "")
        output = f"{note}\n{problem}" if note and problem else problem
        results.append(
            TestResult(
                test.grade_id,
                0.0 if problem else test.points,
                test.points,
                not problem,
                _clip(output),
                test.has_hidden,
                report.seconds if report else 0.0,
                settings.hidden_visibility if test.has_hidden else "visible",
            )
        )
    if reason:
        messages.append(reason)
    return results, messages


def grade(
    submission: str | Path, lesson: Lesson, settings: GradeSettings | None = None
) -> SubmissionResult:
    """Grade one submission notebook against ``lesson``; never raises for a bad submission."""
    settings = settings or GradeSettings()
    sandbox = detect()
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
            settings,
        )
    try:
        plan = rebuild(lesson, nb)
        reports, reason, limited = _run_sandbox(plan, settings, sandbox)
        tests, messages = _score(lesson, plan, reports, reason, settings)
        mode = sandbox.to_json()
        if not limited and PROTECTIONS["cgroup"] not in mode["missing"]:
            mode["missing"].append(PROTECTIONS["cgroup"])  # the cgroup could not be made
    except LessonError:
        raise
    except Exception as exc:
        return _all_zero(
            lesson,
            str(submission),
            f"The grader failed on this submission ({type(exc).__name__}: {exc}); "
            "tell your instructor.",
            time.monotonic() - began,
            settings,
        )
    result = SubmissionResult(
        str(submission),
        lesson.id,
        tests,
        "\n".join(messages),
        time.monotonic() - began,
        mode,
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
    """Grade many submissions, ``jobs`` at a time (each in its own sandbox).

    ``lesson`` is one lesson for all, or a sequence with one lesson per submission.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    items: Sequence[str | Path] = list(submissions)
    lessons = [lesson] * len(items) if isinstance(lesson, Lesson) else list(lesson)
    if len(lessons) != len(items):
        raise ValueError(f"lesson: {len(lessons)} lessons for {len(items)} submissions")
    for each in {id(x): x for x in lessons}.values():
        _compiled(each)  # a lesson whose checks cannot be split fails here, before any grading
    began = time.monotonic()

    def one(pair: tuple[str | Path, Lesson]) -> SubmissionResult:
        result = grade(pair[0], pair[1], settings)
        if progress is not None:
            progress(result)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, zip(items, lessons, strict=True)))
    return Batch(results, time.monotonic() - began, jobs)
