"""What a failed concurrency check tells the learner, and how the grader learns it.

- explore hands its ``check`` the run's schedule (``recorder.schedule``): the grading runner
  reads every run's replayable schedule there, through public API only;
- a run that only a trace rule rejects gets what a wrong value gets: the property the rule
  required, the simplest failing schedule found (shrunk), its explanation in words, and a
  replay line that reproduces the rejected trace.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest
import trio

import seqlab
from seqlab.grading.grader import GradeSettings, SubmissionResult, grade_many
from seqlab.grading.lesson import load_lesson
from seqlab.grading.release import release_notebook

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

GRADING = Path(seqlab.__file__).parent / "grading"
PRIVATE = ("_local", "_trace", "rng", "controller")


async def two_writers() -> None:
    """Two tasks taking turns at a shared log; each step is an event in the trace."""

    async def writer(name: str) -> None:
        for i in range(3):
            seqlab.emit("log", "write", who=name, i=i)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "a", name="a")
        nursery.start_soon(writer, "b", name="b")


def _writes(recorder: seqlab.Recorder) -> list[tuple[str, int]]:
    return [(e.data["who"], e.data["i"]) for e in recorder.events if e.primitive == "log"]


def test_explore_gives_check_the_schedule_that_replays_the_run() -> None:
    seen: list[tuple[str | None, list[tuple[str, int]]]] = []

    def rule(recorder: seqlab.Recorder) -> bool:
        seen.append((recorder.schedule, _writes(recorder)))
        return _writes(recorder)[0][0] == "a"  # rejects the runs where b writes first

    result = seqlab.explore(two_writers, seeds=range(24), check=rule)
    assert len(seen) >= 24
    assert len({writes[0][0] for _, writes in seen}) == 2  # both orders were explored
    assert len({tuple(writes) for _, writes in seen}) > 2
    for schedule, writes in seen:
        assert isinstance(schedule, str) and schedule
        again = seqlab.Recorder()
        seqlab.run(two_writers, schedule=schedule, recorder=again)
        assert _writes(again) == writes
    # A failure's schedule is the one its check saw.
    assert result.failures
    rejected = [schedule for schedule, writes in seen if writes[0][0] == "b"]
    assert {f.schedule for f in result.failures} <= set(rejected)


def test_grading_reads_no_private_runtime_state() -> None:
    """grading depends on runtime, trace and primitives through their public names only."""
    for path in sorted(GRADING.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
                raise AssertionError(f"{path.name}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.Constant) and node.value in PRIVATE:  # getattr(x, "_local")
                raise AssertionError(f"{path.name}:{node.lineno} names {node.value!r}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("runtime"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name}:{node.lineno} imports {private}"


# ------------------------------------------------------------------ trace-rule failures

SETUP = """import trio
import seqlab
from seqlab.examples.bank import Account
from seqlab.grading import check_equal, check_explore"""

DEPOSIT = """async def deposit(account, lock, amount):
    ### BEGIN SOLUTION
    async with lock:
        seen = account.read()
        await trio.lowlevel.checkpoint()
        account.write(account.read() + amount)
    ### END SOLUTION"""

# Never loses a deposit (it reads again just before writing), so every value is right; but
# another teller's step can come between its reads and its write, which only the rule sees.
DEPOSIT_UNLOCKED = """async def deposit(account, lock, amount):
    seen = account.read()
    await trio.lowlevel.checkpoint()
    account.write(account.read() + amount)"""

# Right whenever it finishes, but it gives up (raises) when another teller wrote meanwhile.
DEPOSIT_GIVES_UP = """async def deposit(account, lock, amount):
    seen = account.read()
    await trio.lowlevel.checkpoint()
    if account.balance != seen:
        raise RuntimeError("the balance changed under me")
    account.write(seen + amount)"""

CHECK = """async def two_tellers():
    account, lock = Account(), trio.Lock()

    async def teller(warmup):
        for _ in range(warmup):
            await trio.lowlevel.checkpoint()
        await deposit(account, lock, 1)

    async with trio.open_nursery() as nursery:
        for i in range(2):
            nursery.start_soon(teller, i, name=f"teller-{i}")
    check_equal(account.balance, 2, what="the balance after two deposits")


def one_teller_at_a_time(trace):
    \"\"\"each teller's reads and write of the account come together, with no other
    teller's in between\"\"\"
    tasks = [e.task for e in trace.events if e.primitive == "account"]
    runs = [t for i, t in enumerate(tasks) if i == 0 or tasks[i - 1] != t]
    return len(runs) == len(set(runs)) == 2


check_explore(two_tellers, seeds=range(30), check=one_teller_at_a_time, what="two tellers")"""


def _lesson_notebook() -> nbformat.NotebookNode:
    def meta(grade_id: str, **extra: object) -> dict[str, object]:
        nbgrader = {"grade": False, "solution": False, "locked": True, "schema_version": 3}
        return {"nbgrader": {**nbgrader, "grade_id": grade_id, **extra}}

    nb = nbformat.v4.new_notebook()
    nb.metadata["seqlab"] = {"lesson": "trace-rules"}
    nb.cells = [
        nbformat.v4.new_code_cell(SETUP, metadata=meta("setup")),
        nbformat.v4.new_code_cell(DEPOSIT, metadata=meta("deposit", solution=True, locked=False)),
        nbformat.v4.new_code_cell(CHECK, metadata=meta("deposit-check", grade=True, points=2)),
    ]
    return nb


def _namespace(deposit: str) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(SETUP + "\n" + deposit + "\n" + CHECK.rsplit("\n\n\ncheck_explore", 1)[0], namespace)
    return namespace


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SubmissionResult]:
    folder = tmp_path_factory.mktemp("trace-rules")
    source = folder / "trace-rules.ipynb"
    nbformat.write(_lesson_notebook(), str(source))
    subs = {}
    for name, text in (
        ("honest", DEPOSIT),
        ("unlocked", DEPOSIT_UNLOCKED),
        ("gives-up", DEPOSIT_GIVES_UP),
    ):
        nb = release_notebook(_lesson_notebook())
        nb.cells[1].source = text
        subs[name] = folder / f"{name}.ipynb"
        nbformat.write(nb, str(subs[name]))
    batch = grade_many(subs.values(), load_lesson(source), GradeSettings(cell_timeout=30), jobs=2)
    return dict(zip(subs, batch.results, strict=True))


def test_the_wrong_answer_is_caught_only_by_the_rule_and_only_on_some_schedules() -> None:
    """The premise of the tests below: values are right on every schedule; the rule rejects
    some schedules and accepts others."""
    ns = _namespace(DEPOSIT_UNLOCKED)
    rule, scenario = ns["one_teller_at_a_time"], ns["two_tellers"]
    result = seqlab.explore(scenario, seeds=range(30))  # type: ignore[arg-type]
    assert result.ok  # no value check fails, on any schedule
    judged = seqlab.explore(scenario, seeds=range(30), check=rule)  # type: ignore[arg-type]
    assert 0 < len(judged.failures) < judged.runs


def test_a_trace_rule_failure_shows_the_property_schedule_explanation_and_replay(
    graded: dict[str, SubmissionResult],
) -> None:
    assert graded["honest"].score == 2, graded["honest"].to_text()
    (test,) = graded["unlocked"].tests
    assert test.score == 0
    output = test.output
    assert re.search(r"two tellers failed on \d+ of 30 schedules\.", output), output
    assert (
        "In the simplest failing schedule found, its trace does not show what was required: "
        "each teller's reads and write of the account come together, with no other teller's "
        "in between" in output
    ), output
    assert "This run fails with" in output  # the shrunk run, in words
    assert "at line 3 of <your cell deposit>" in output  # where the learner's code was held
    assert "End of its trace" in output
    replay = re.search(r"Replay it: seqlab.run\(two_tellers, schedule='(s1:[^']*)'", output)
    assert replay is not None, output
    # The replay line reproduces a trace the rule rejects (the values are still right).
    ns = _namespace(DEPOSIT_UNLOCKED)
    recorder = seqlab.Recorder()
    seqlab.run(ns["two_tellers"], schedule=replay.group(1), recorder=recorder)  # type: ignore[arg-type]
    assert ns["one_teller_at_a_time"](recorder) is False  # type: ignore[operator]


def test_an_error_on_some_schedules_shows_it_with_the_shrunk_schedule_and_replay(
    graded: dict[str, SubmissionResult],
) -> None:
    (test,) = graded["gives-up"].tests
    assert test.score == 0
    output = test.output
    assert (
        "In the simplest failing schedule found, it raised RuntimeError: the balance changed "
        "under me" in output
    ), output
    assert "This run fails with" in output
    assert "Then: RuntimeError: the balance changed under me" in output
    replay = re.search(r"Replay it: seqlab.run\(two_tellers, schedule='(s1:[^']*)'", output)
    assert replay is not None, output
    ns = _namespace(DEPOSIT_GIVES_UP)
    with pytest.raises(BaseExceptionGroup) as info:
        seqlab.run(ns["two_tellers"], schedule=replay.group(1))  # type: ignore[arg-type]
    assert info.group_contains(RuntimeError, match="balance changed", depth=1)
