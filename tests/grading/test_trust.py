"""The parts that make verdicts trustworthy: plain-data observations, check cells split between
sandbox and grader, the sandbox itself, its fallback, visibility, lesson metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from grading_support import DOUBLE, FIXTURES, SOURCE, TINY, make_submission

from seqlab.grading.checkplan import LessonError, compile_check
from seqlab.grading.grader import GradeSettings, grade, judge, same
from seqlab.grading.lesson import load_lesson, nbgrader_meta
from seqlab.grading.protocol import (
    ErrorInfo,
    ExplainRequest,
    NotPlain,
    Observation,
    ProtocolError,
    StepReport,
    decode_value,
    encode_value,
)
from seqlab.grading.sandbox import PROTECTIONS, detect

# ------------------------------------------------------------------ canonical values


def test_plain_values_cross_as_canonical_json_and_come_back_equal() -> None:
    value = {"a": [1, 2.5, None, True], (1, "x"): ("t", [float("inf")]), 3: {}}
    data = encode_value(value)
    assert json.loads(json.dumps(data)) == data
    assert decode_value(json.loads(json.dumps(data))) == value


class Yes(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize(
    ("value", "name"),
    [(Yes(1), "Yes"), ([1, object()], "object"), ({1, 2}, "set"), (b"x", "bytes")],
)
def test_anything_but_plain_data_is_refused_by_name(value: object, name: str) -> None:
    with pytest.raises(NotPlain, match=f"cannot grade a {name}; return plain data"):
        encode_value(value)


def test_messages_from_the_sandbox_are_checked_field_by_field() -> None:
    good = StepReport(3, "ok", observations=[Observation(0, encode_value((1, 2)))]).to_json()
    assert StepReport.from_json(good).observations[0].value == {"tuple": [1, 2]}
    for bad in (
        {**good, "status": "passed"},
        {**good, "index": "3"},
        {**good, "observations": [{"site": 0, "value": {"set": [1]}, "not_plain": None}]},
        [],
    ):
        with pytest.raises(ProtocolError):
            StepReport.from_json(bad)


def test_the_graders_equality_is_strict_about_types() -> None:
    assert same([1, 2.0], [1.0, 2])
    assert not same(True, 1) and not same(1, True)
    assert not same((1, 2), [1, 2])
    assert same({"a": (1, [2])}, {"a": (1, [2])}) and not same({"a": 1}, {"b": 1})


# ------------------------------------------------------------------ splitting a check cell

CELL = """from seqlab.grading import check, check_equal, check_explore


def ends_at(t):
    def rule(trace):
        return trace.events[-1].time == t

    rule.__doc__ = "ends at the right time"
    return rule


async def scenario():
    check_equal(await thing(7), {"secret": 4242},
                what="thing(7)")


check_explore(scenario, seeds=range(3), check=ends_at(9), what="the scenario")
check(flag(), "flag() should be true")
### BEGIN HIDDEN TESTS
check_equal(thing(99), "hidden-answer-31337", what="thing(99)")
### END HIDDEN TESTS
"""


def test_expected_values_and_rules_stay_in_the_grader_and_lines_are_kept() -> None:
    compiled = compile_check(CELL, "c")
    worker = compiled.worker_source
    assert "4242" not in worker and "hidden-answer-31337" not in worker
    assert "ends_at" not in worker and "what=" not in worker
    assert worker.count("\n") == CELL.count("\n")
    assert "thing(99)" in worker  # the hidden call itself must run
    kinds = {s.kind for s in compiled.sites.values()}
    assert kinds == {"equal", "truth", "explore"}
    (hidden,) = [s for s in compiled.sites.values() if s.hidden]
    assert hidden.expected == "hidden-answer-31337" and hidden.what == "thing(99)"
    (explore,) = [s for s in compiled.sites.values() if s.kind == "explore"]
    assert explore.rule_doc == "ends at the right time" and explore.scenario == "scenario"
    compile(worker, "<worker>", "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT


ANSWERED = """from seqlab.grading import check_equal
import seqlab


async def program(n):
    return n * 1000 + 7


def graders_answer(n):
    return seqlab.run(program, n, seed=0)


check_equal(learner_function(program, 3), graders_answer(3), what="learner_function")
"""


def test_a_rule_without_a_docstring_is_named_by_its_check_argument() -> None:
    cell = "def quiet(trace):\n    return True\n\ncheck_explore(scenario, check=quiet, what='w')\n"
    (site,) = compile_check(cell, "c").sites.values()
    assert site.rule_doc == "the rule quiet (check=) accepts the trace"


def test_an_expected_value_may_be_the_graders_own_run_of_a_program_of_the_cell() -> None:
    compiled = compile_check(ANSWERED, "c")
    (site,) = compiled.sites.values()
    assert site.expected == 3007  # worked out here, by running the cell's program
    worker = compiled.worker_source
    assert "3007" not in worker and "graders_answer(3)" not in worker
    assert "async def program(n):" in worker  # the learner's code is pointed at it there
    assert "def graders_answer" not in worker  # the grader's own answer stays here
    with pytest.raises(LessonError, match="functions of this cell"):
        compile_check("check_equal(f(), helper(2))", "c")


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ('check_equal(f(), 1, what=f"{x}")', "what= must be a string literal"),
        ("check(f() == 1, message)", "the message must be a string literal"),
        ("check_equal(f(), learner_value)", "cannot work out the expected value"),
        ("async def s():\n    check_explore(s)", "check_explore must be at top level"),
    ],
)
def test_check_cells_the_grader_cannot_split_are_refused(cell: str, message: str) -> None:
    with pytest.raises(LessonError, match=message):
        compile_check(cell, "c")


def test_every_lesson_check_cell_splits() -> None:
    for path in sorted((Path(__file__).resolve().parents[2] / "lessons").glob("*.ipynb")):
        lesson = load_lesson(path)
        for test in lesson.tests:
            compiled = compile_check(test.source, test.grade_id)
            assert compiled.sites, (path.name, test.grade_id)


# ------------------------------------------------------------------ the sandbox

PROBE = """
import os, socket
facts = {"uid": os.getuid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
facts["visible"] = [p for p in ("/work", "/root/.ssh", "/home", %(repo)r, %(scratch)r) if os.path.exists(p)]
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    facts["net"] = "open"
except OSError as error:
    facts["net"] = type(error).__name__
facts["home"] = os.environ.get("HOME")
facts["writable_usr"] = os.access("/usr", os.W_OK)
raise RuntimeError("FACTS" + repr(facts))
"""


@pytest.mark.skipif(detect().mode != "bubblewrap", reason="needs bubblewrap")
def test_learner_code_runs_unprivileged_alone_offline_and_sees_only_what_it_needs(
    tmp_path: Path,
) -> None:
    import ast

    repo = str(Path(__file__).resolve().parents[2])
    code = PROBE % {"repo": repo, "scratch": str(tmp_path)}
    sub = make_submission(tmp_path, "probe", {"double": code + DOUBLE})
    result = grade(sub, load_lesson(SOURCE), GradeSettings(cell_timeout=20))
    text = "\n".join(t.output for t in result.tests)
    facts = ast.literal_eval(text.split("FACTS", 1)[1].split("\n")[0].rstrip("."))
    assert facts["uid"] >= 61000 if os.geteuid() == 0 else facts["uid"] == 65534
    assert len(facts["pids"]) < 10  # its own few processes, nothing else on the machine
    assert facts["visible"] == []
    assert facts["net"] != "open"
    assert facts["home"].startswith("/tmp") and facts["writable_usr"] is False
    assert result.sandbox == {"mode": "bubblewrap", "missing": []}


def test_without_bwrap_grading_runs_with_a_loud_warning_and_records_the_mode(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results.json"
    sub = tmp_path / "sub.ipynb"
    shutil.copy(TINY, sub)
    env = {**os.environ, "SEQLAB_SANDBOX": "none"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqlab.cli",
            "grade",
            str(sub),
            "--lesson",
            str(TINY),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: grading WITHOUT full isolation" in proc.stderr
    for key in ("pid", "net", "fs", "home"):
        assert PROTECTIONS[key] in proc.stderr
    data = json.loads(out.read_text())
    assert data["score"] == 1
    assert data["extra_data"]["sandbox"]["mode"] == "none"
    assert PROTECTIONS["net"] in data["extra_data"]["sandbox"]["missing"]


# ------------------------------------------------------------------ feedback and metadata


def test_lesson_from_metadata_and_per_test_visibility(tmp_path: Path) -> None:
    from seqlab.cli import main

    released = tmp_path / "released"
    assert main(["release", str(SOURCE), "--out", str(released)]) == 0
    student = nbformat.read(str(released / "fixture-lesson.ipynb"), as_version=4)
    assert student.metadata["seqlab"]["lesson"] == "fixture-lesson"
    sub = make_submission(tmp_path, "submission", {"double": DOUBLE})
    nb = nbformat.read(str(sub), as_version=4)
    nb.metadata["seqlab"] = {"lesson": "fixture-lesson"}
    nbformat.write(nb, str(sub))
    out = tmp_path / "results.json"
    args = ["grade", str(sub), "--lessons", str(FIXTURES), "--out", str(out)]
    assert main(args) == 0
    tests = json.loads(out.read_text())["tests"]
    assert [t["visibility"] for t in tests] == ["after_due_date", "after_due_date"]
    assert main([*args, "--hidden-visibility", "hidden"]) == 0
    assert {t["visibility"] for t in json.loads(out.read_text())["tests"]} == {"hidden"}


def test_grading_refuses_a_student_version_as_the_lesson(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seqlab.cli import main

    released = tmp_path / "released"
    assert main(["release", str(SOURCE), "--out", str(released)]) == 0
    sub = make_submission(tmp_path, "sub", {"double": DOUBLE})
    lesson = str(released / "fixture-lesson.ipynb")
    assert main(["grade", str(sub), "--lesson", lesson]) == 2
    assert "needs the lesson *source*" in capsys.readouterr().err


def test_only_demo_cells_that_nothing_reads_are_left_out(tmp_path: Path) -> None:
    from seqlab.grading.grader import rebuild
    from seqlab.grading.lesson import Lesson

    def meta(gid: str, **kw: object) -> dict[str, object]:
        return {"nbgrader": {"grade_id": gid, "locked": True, "schema_version": 3, **kw}}

    new = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        new("def helper():\n    return 41"),  # a demo cell the solution relies on
        new("print('just a picture')\nshown = 1"),  # a demo cell nothing reads
        new(
            "def answer():\n    ### BEGIN SOLUTION\n    return helper() + 1\n    ### END SOLUTION",
            metadata=meta("ex", solution=True, grade=False, locked=False),
        ),
        new(
            "from seqlab.grading import check_equal\ncheck_equal(answer(), 42, what='answer()')",
            metadata=meta("ex-check", grade=True, solution=False, points=1),
        ),
    ]
    plan = rebuild(Lesson("demo", tmp_path / "demo.ipynb", nb), nb)
    kept = [s.source.splitlines()[0] for s in plan.steps if s.kind == "setup"]
    assert kept == ["def helper():"]


def test_magics_and_displays_in_a_solution_cell_are_ignored_not_fatal(tmp_path: Path) -> None:
    cell = "%seqlab check double\n!echo hi\n" + DOUBLE + "\ndisplay(double(1))\n"
    sub = make_submission(tmp_path, "magics", {"double": cell})
    result = grade(sub, load_lesson(SOURCE), GradeSettings(cell_timeout=20))
    assert {t.grade_id: t.score for t in result.tests}["double-check"] == 1, result.to_text()


def test_a_lesson_whose_checks_cannot_be_split_is_refused_before_grading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seqlab.cli import main

    nb = nbformat.read(str(TINY), as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source += "\ncheck_equal(triple(3), 9, what=f'{triple}')"
    lesson = tmp_path / "bad-lesson.ipynb"
    nbformat.write(nb, str(lesson))
    sub = tmp_path / "sub.ipynb"
    shutil.copy(TINY, sub)
    assert main(["grade", str(sub), "--lesson", str(lesson)]) == 2
    assert "what= must be a string literal" in capsys.readouterr().err


def test_a_wrong_value_in_an_explored_run_is_sent_back_for_replay_and_explanation() -> None:
    from seqlab.grading.grader import _explain_request, _with_explanation
    from seqlab.grading.protocol import Exploration, Run

    compiled = compile_check(CELL, "c")
    explore_site = next(s for s in compiled.sites.values() if s.kind == "explore")
    inner = next(s for s in compiled.sites.values() if s.inside == "scenario")
    good = Run(0, [Observation(inner.id, encode_value({"secret": 4242}))], trace=[{"time": 9.0}])
    wrong = Run(1, [Observation(inner.id, encode_value({"secret": 1}))], trace=[{"time": 9.0}])
    report = StepReport(
        5,
        "ok",
        observations=[
            Observation(s.id, encode_value(True if s.kind == "truth" else s.expected))
            for s in compiled.top_level_sites
        ],
        explorations=[Exploration(explore_site.id, [good, wrong])],
    )
    request = _explain_request(compiled, report)
    assert request == ExplainRequest(explore_site.id, 1, inner.id, {"dict": [["secret", 1]]})
    assert "4242" not in json.dumps(request.to_json())  # the expected value never goes back in
    assert ExplainRequest.from_json(json.loads(json.dumps(request.to_json()))) == request
    story = "b overtook a\nReplay: seqlab.run(..., schedule='a1 b0 a1')"
    replay = Exploration(explore_site.id, [Run(1, schedule="a1 b0 a1", explanation=story)])
    explained = _with_explanation(compiled, report, replay)
    (ex,) = explained.explorations
    assert [r.explanation for r in ex.runs] == [None, story]
    problem = judge(compiled, explained, GradeSettings())
    assert "In the simplest failing schedule found, thing(7) should be" in problem
    assert "\nb overtook a\n" in problem
    assert "Replay it: seqlab.run(scenario, schedule='a1 b0 a1'" in problem
    # A run that failed with an error was explained by exploration itself: nothing to replay.
    erred = Run(1, error=ErrorInfo("ValueError", "boom"))
    assert (
        _explain_request(
            compiled, StepReport(5, "ok", explorations=[Exploration(explore_site.id, [erred])])
        )
        is None
    )


def test_a_run_only_the_trace_rule_rejected_is_replayed_with_the_visible_rule() -> None:
    from seqlab.grading.grader import _explain_request, _with_explanation
    from seqlab.grading.protocol import Exploration, Run

    compiled = compile_check(CELL, "c")
    keeping = compile_check(CELL, "c", keep_rules=True).worker_source
    assert "def ends_at(t):" in keeping and "rule=ends_at(9)" in keeping
    assert "4242" not in keeping and "hidden-answer-31337" not in keeping
    assert keeping.count("\n") == CELL.count("\n")
    compiled.explain_source = keeping
    explore_site = next(s for s in compiled.sites.values() if s.kind == "explore")
    inner = next(s for s in compiled.sites.values() if s.inside == "scenario")
    right = [Observation(inner.id, encode_value({"secret": 4242}))]
    rejected = Run(2, right, trace=[{"time": 3.0}])  # right value, but ends at 3, not 9
    top = [
        Observation(s.id, encode_value(True if s.kind == "truth" else s.expected))
        for s in compiled.top_level_sites
    ]
    report = StepReport(
        5, "ok", observations=top, explorations=[Exploration(explore_site.id, [rejected])]
    )
    assert _explain_request(compiled, report) == ExplainRequest(explore_site.id, 2, rule=True)
    # A replay whose trace still breaks the rule is believed: its shrunk story is shown.
    told = Run(2, trace=[{"time": 4.0}], schedule="s1:H1.1*|4", explanation="a held\nReplay")
    problem = judge(
        compiled,
        _with_explanation(compiled, report, Exploration(explore_site.id, [told])),
        GradeSettings(),
    )
    assert (
        "In the simplest failing schedule found, its trace does not show what was required: ends at the right time"
        in problem
    )
    assert "\na held\n" in problem and "schedule='s1:H1.1*|4'" in problem
    # One whose trace the rule accepts is not: the learner's process made it.
    forged = Run(2, trace=[{"time": 9.0}], schedule="s1:", explanation="nothing wrong\nReplay")
    problem = judge(
        compiled,
        _with_explanation(compiled, report, Exploration(explore_site.id, [forged])),
        GradeSettings(),
    )
    assert (
        "nothing wrong" not in problem and "s1:" not in problem and "ends at the right" in problem
    )
    # Without the rule-keeping source (a hidden check), nothing is replayed.
    compiled.explain_source = ""
    assert _explain_request(compiled, report) is None


def test_a_lesson_cell_with_a_cell_magic_is_neither_an_error_nor_a_reason_to_run_every_demo(
    tmp_path: Path,
) -> None:
    from seqlab.grading.grader import rebuild
    from seqlab.grading.lesson import Lesson

    new = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        new("print('a slow demo')\nshown = 1"),
        new("%%seqlab step --goal fail\nawait something()"),
        new(
            "def answer():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION",
            metadata={"nbgrader": {"grade_id": "ex", "solution": True, "grade": False}},
        ),
    ]
    plan = rebuild(Lesson("demo", tmp_path / "demo.ipynb", nb), nb)
    setups = [s.source for s in plan.steps if s.kind == "setup"]
    assert setups == []  # both demos dropped: nothing reads what they define


def test_a_submission_named_anything_grades_by_its_metadata_with_no_lesson_given(
    tmp_path: Path,
) -> None:
    """``seqlab grade submission.ipynb``: no --lesson, no --lessons; the lesson comes from the
    notebook's metadata and its source from the checkout's lessons/ (not the student copy)."""
    from seqlab.cli import main
    from seqlab.grading.lesson import installed_lessons

    student = nbformat.read(str(installed_lessons()["00-welcome"]), as_version=4)
    for cell in student.cells:
        if nbgrader_meta(cell).get("grade_id") == "ex0-replay":
            cell.source = "def first_lost_update(tellers):\n    return 0 if tellers > 1 else None"
    sub = tmp_path / "submission.ipynb"
    nbformat.write(student, str(sub))
    out = tmp_path / "results.json"
    assert main(["grade", str(sub), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["extra_data"]["lesson"] == "00-welcome"
    scores = {t["name"]: t["score"] for t in data["tests"]}
    # Graded against the source: its hidden checks ran (the student copy has none, and this
    # answer passes every visible check of ex0-replay).
    assert scores == {"ex0-alarms-check": 0, "ex0-replay-check": 0, "ex0-careful-check": 0}
    replay = next(t for t in data["tests"] if t["name"] == "ex0-replay-check")
    assert "A hidden check failed" in replay["output"]


def test_sandbox_user_ids_are_leased_across_grader_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two graders at once never hand out the same sandbox uid (per-uid process limits would
    let one batch's fork bomb starve the other's submissions); a lease ends with its holder."""
    from seqlab.grading import sandbox

    leases = tmp_path / "leases"
    monkeypatch.setattr(sandbox, "UID_LEASES", leases)
    code = (
        "import sys\nfrom seqlab.grading.sandbox import lease_uid\n"
        "print(lease_uid(), flush=True)\nsys.stdin.read()\n"
    )
    env = {**os.environ, "SEQLAB_UID_LEASES": str(leases)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdin is not None
    theirs = int(holder.stdout.readline())
    mine = sandbox.lease_uid()
    assert mine != theirs
    sandbox.release_uid(mine)
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0
    again = sandbox.lease_uid()  # the other grader is gone: its uid is free again
    assert again == theirs == sandbox.SANDBOX_UIDS[0]
    sandbox.release_uid(again)


def test_explain_messages_are_typed_and_checked_field_by_field() -> None:
    from seqlab.grading.protocol import ExplainAnswer, Explained, Exploration, Run

    answer = ExplainAnswer(5, ExplainRequest(3, 7, rule=True), "source with its rules")
    assert ExplainAnswer.from_json(json.loads(json.dumps(answer.to_json()))) == answer
    assert ExplainAnswer.from_json({"answer": 5, "explain": None}) == ExplainAnswer(5, None)
    done = Explained(4, Exploration(3, [Run(7, schedule="s1:|2", explanation="story")]))
    assert Explained.from_json(json.loads(json.dumps(done.to_json()))) == done
    for bad in (
        {"site": 1, "seed": "7"},  # a seed that is not an int
        {"site": 1, "seed": 7, "rule": True, "obs_site": 2},  # a value and a rule at once
        {"site": 1, "seed": 7},  # neither
        {"site": 1, "seed": 7, "obs_site": 2, "value": {"odd": 1}},  # not canonical data
    ):
        with pytest.raises(ProtocolError):
            ExplainRequest.from_json(bad)
    with pytest.raises(ProtocolError):
        Explained.from_json({"index": 1, "exploration": []})


def test_every_runner_message_is_read_into_a_typed_record() -> None:
    from seqlab.grading.protocol import (
        CheckSource,
        Done,
        Need,
        Unreadable,
        read_runner_message,
        runner_message_json,
    )

    report = StepReport(3, "ok", observations=[Observation(0, encode_value([1, 2]))])
    for message in (report, Need(4), Done()):
        line = json.loads(json.dumps(runner_message_json(message)))
        assert read_runner_message(line) == message
    # A forged report keeps only its index (so the grader still answers the runner), if any.
    assert read_runner_message({"report": {"index": 5, "status": 7}}) == Unreadable(5)
    assert read_runner_message({"report": "junk"}) == Unreadable(None)
    for bad in ({"need": "4"}, {"done": 1}, {"report": {}, "need": 1}, {"hello": 1}, [1]):
        with pytest.raises(ProtocolError):
            read_runner_message(bad)
    assert CheckSource.from_json({"check": 2, "source": "x = 1"}) == CheckSource(2, "x = 1")
    with pytest.raises(ProtocolError):
        CheckSource.from_json({"source": 1})


def test_an_answer_that_comes_after_the_runner_gave_up_on_it_is_dropped() -> None:
    """The runner waits for an explain answer only so long; if it comes later, in the same read
    as the next check's source, it must not be taken for that source (nor break it)."""
    from seqlab.grading._runner import Runner
    from seqlab.grading.protocol import CheckSource, ExplainAnswer, Job

    read_end, write_end = os.pipe()
    runner = Runner(Job([], 5.0, 256, 10), read_end, os.open(os.devnull, os.O_WRONLY))
    late = ExplainAnswer(3, None).to_json()
    source = CheckSource(4, "x = 1").to_json()
    os.write(write_end, (json.dumps(late) + "\n" + json.dumps(source) + "\n").encode())
    assert runner.receive(CheckSource, 4, 2.0) == CheckSource(4, "x = 1")
    os.write(write_end, (json.dumps(ExplainAnswer(4, None).to_json()) + "\n").encode())
    assert runner.receive(ExplainAnswer, 4, 2.0) == ExplainAnswer(4, None)
    assert runner.receive(ExplainAnswer, 5, 0.2) is None  # nothing more: gives up in time
    os.close(write_end)
    os.close(read_end)


def test_rebuilding_in_many_threads_at_once_never_fails() -> None:
    """grade_many grades in threads, and CPython 3.11 can raise SystemError ("AST constructor
    recursion depth mismatch") when threads parse at once: a submission then got 0 on every
    check with "The grader failed on this submission" (seen in a batch of lesson 00)."""
    import threading

    from seqlab.grading.grader import rebuild

    path = Path(__file__).resolve().parents[2] / "lessons" / "00-welcome.ipynb"
    lesson = load_lesson(path)
    submission = json.loads(path.read_text())
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(40):
            try:
                rebuild(lesson, submission)
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
