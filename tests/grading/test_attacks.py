"""Tampering and misbehaviour with the small fixture lesson: none of it changes a score.

One submission per attack, graded as one batch. Each attacking submission pairs its attack
with wrong or unfinished solutions, so any score above the honest one means the attack
worked. (The acceptance suite, one case per attack class on lesson 00 through the
``seqlab grade`` command, is tests/grading/test_attack_suite.py.)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import jsonschema
import pytest
from grading_support import DEPOSIT, DEPOSIT_RACY, DOUBLE, DOUBLE_WRONG, FIXTURES, make_submission

from seqlab.grading.grader import GradeSettings, SubmissionResult, grade_many
from seqlab.grading.lesson import Lesson

SCHEMA = json.loads((FIXTURES / "gradescope-results.schema.json").read_text())

REDEFINE = (
    DOUBLE_WRONG
    + """
def check_equal(*args, **kwargs):
    pass
def check_explore(*args, **kwargs):
    pass
check = check_equal
"""
)

MONKEYPATCH = (
    DOUBLE_WRONG
    + """
import seqlab, seqlab.grading, seqlab.grading.checks, seqlab.runtime, sys, types
nothing = lambda *args, **kwargs: None
seqlab.grading.check_equal = nothing
seqlab.grading.check_explore = nothing
seqlab.grading.checks.check_equal = nothing
seqlab.grading.checks.explore = lambda *a, **k: types.SimpleNamespace(ok=True)
seqlab.runtime.explore = seqlab.grading.checks.explore
seqlab.explore = seqlab.grading.checks.explore
seqlab.grading.checks.check_explore.__code__ = nothing.__code__
seqlab.grading.checks.CheckFailed.__init__ = lambda self, *a: None
import seqlab.grading.grader as grader
grader._score = lambda *a, **k: ([], [])
fake = types.ModuleType("seqlab.grading")
fake.check_equal = fake.check_explore = fake.check = nothing
sys.modules["seqlab.grading"] = fake
"""
)

FAKE_RESULTS = (
    DOUBLE_WRONG
    + """
import json, os, tempfile
fake = {"score": 3, "tests": [{"name": "double-check", "score": 1, "max_score": 1, "status": "passed"}]}
print(json.dumps(fake))
print("double-check passed")
for folder in (".", tempfile.gettempdir(), os.environ.get("SEQLAB_FAKE_RESULTS_DIR", ".")):
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(fake, f)
os.write(1, (json.dumps({"mac": "0" * 64, "body": json.dumps({"cell": 4, "status": "ok"})}) + "\\n").encode())
"""
)

HIDE_ERRORS = (
    DOUBLE_WRONG
    + """
ip = get_ipython()
kernel = ip.kernel
original = kernel.do_execute
async def always_ok(*args, **kwargs):
    reply = original(*args, **kwargs)
    if hasattr(reply, "__await__"):
        reply = await reply
    return {"status": "ok", "execution_count": reply.get("execution_count", 0),
            "user_expressions": {}, "payload": []}
kernel.do_execute = always_ok
ip.showtraceback = lambda *a, **k: None
"""
)

PATCHING_THREAD = (
    DOUBLE_WRONG
    + """
import threading, time
import seqlab.grading.checks as checks
nothing = (lambda *args, **kwargs: None).__code__
def keep_patching():
    while True:
        checks.check_equal.__code__ = nothing
        checks.check_explore.__code__ = nothing
        time.sleep(0.0005)
threading.Thread(target=keep_patching, daemon=True).start()
"""
)

LOOP = "while True:\n    pass"
STUBBORN_LOOP = "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except BaseException:\n        pass"


@pytest.fixture(scope="module")
def attacked(
    tmp_path_factory: pytest.TempPathFactory, lesson: Lesson
) -> dict[str, SubmissionResult]:
    d = tmp_path_factory.mktemp("attacks")
    subs = {
        "edit-locked": make_submission(
            d,
            "edit-locked",
            {"double": DOUBLE_WRONG, "deposit": DEPOSIT_RACY},
            tests={"double-check": "pass", "deposit-check": "print('all checks passed')"},
        ),
        "redefine": make_submission(d, "redefine", {"double": REDEFINE, "deposit": DEPOSIT_RACY}),
        "monkeypatch": make_submission(
            d, "monkeypatch", {"double": MONKEYPATCH, "deposit": DEPOSIT_RACY}
        ),
        "fake-results": make_submission(
            d, "fake-results", {"double": FAKE_RESULTS, "deposit": DEPOSIT_RACY}
        ),
        "hide-errors": make_submission(
            d, "hide-errors", {"double": HIDE_ERRORS, "deposit": DEPOSIT_RACY}
        ),
        "patching-thread": make_submission(
            d, "patching-thread", {"double": PATCHING_THREAD, "deposit": DEPOSIT_RACY}
        ),
        "loop": make_submission(d, "loop", {"double": LOOP, "deposit": DEPOSIT}),
        "stubborn-loop": make_submission(
            d, "stubborn", {"double": DOUBLE, "deposit": STUBBORN_LOOP}
        ),
        "sys-exit": make_submission(
            d, "sys-exit", {"double": "import sys\nsys.exit(0)\n" + DOUBLE, "deposit": DEPOSIT}
        ),
        "os-exit": make_submission(
            d, "os-exit", {"double": DOUBLE, "deposit": "import os\nos._exit(0)\n" + DEPOSIT}
        ),
        "crash": make_submission(
            d,
            "crash",
            {"double": DOUBLE, "deposit": "import ctypes\nctypes.string_at(0)\n" + DEPOSIT},
        ),
        "memory": make_submission(
            d, "memory", {"double": DOUBLE, "deposit": "hog = bytearray(8 * 1024**3)\n" + DEPOSIT}
        ),
        "evil-eq": make_submission(
            d,
            "evil-eq",
            {
                "double": "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
                "    __ne__ = lambda self, other: False\n"
                "def double(x):\n    return Yes(0)",
                "deposit": DEPOSIT_RACY,
            },
        ),
    }
    settings = GradeSettings(cell_timeout=4, total_timeout=60, memory_mb=1024)
    # The fake-results attack also drops a results.json in the shared temp folder; it must
    # not outlive the test.
    planted = Path(tempfile.gettempdir()) / "results.json"
    was_there = planted.exists()
    try:
        batch = grade_many(subs.values(), lesson, settings, jobs=2)
    finally:
        if not was_there:
            planted.unlink(missing_ok=True)
    results = dict(zip(subs, batch.results))
    for result in results.values():
        jsonschema.validate(result.to_gradescope(), SCHEMA)
    return results


def _scores(result: SubmissionResult) -> dict[str, float]:
    return {t.grade_id: t.score for t in result.tests}


def _outputs(result: SubmissionResult) -> str:
    return result.output + "\n" + "\n".join(t.output for t in result.tests)


@pytest.mark.parametrize(
    "attack",
    [
        "edit-locked",
        "redefine",
        "monkeypatch",
        "fake-results",
        "hide-errors",
        "evil-eq",
        "patching-thread",
    ],
)
def test_tampering_with_wrong_solutions_scores_zero(
    attacked: dict[str, SubmissionResult], attack: str
) -> None:
    result = attacked[attack]
    assert result.score == 0, result.to_text()
    assert result.max_score == 3


def test_wrong_answers_are_reported_despite_tampering(
    attacked: dict[str, SubmissionResult],
) -> None:
    for attack in ("edit-locked", "redefine", "monkeypatch", "fake-results"):
        text = _outputs(attacked[attack])
        assert "double(2) should be 4, but it is 0" in text, (attack, text)
    for attack in ("edit-locked", "redefine", "fake-results"):
        text = _outputs(attacked[attack])
        assert "failed on" in text and "Replay it" in text, (attack, text)
    # Patching seqlab.explore in the learner's process breaks the exploration; it never
    # makes it pass.
    assert "could not be explored" in _outputs(attacked["monkeypatch"]) or "raised" in _outputs(
        attacked["monkeypatch"]
    )


def test_fake_results_files_are_left_where_the_learner_put_them(
    attacked: dict[str, SubmissionResult],
) -> None:
    # Learner code runs in a sandbox with a private temp folder; nothing it writes is read back.
    assert not Path("results.json").exists()


def test_infinite_loop_is_stopped_and_later_checks_still_count(
    attacked: dict[str, SubmissionResult],
) -> None:
    result = attacked["loop"]
    assert _scores(result) == {"double-check": 0, "deposit-check": 2}
    assert "ran longer than 4 s" in _outputs(result)


def test_loop_that_swallows_interrupts_costs_only_its_exercise(
    attacked: dict[str, SubmissionResult],
) -> None:
    result = attacked["stubborn-loop"]
    assert _scores(result) == {"double-check": 1, "deposit-check": 0}
    assert "ran longer than 4 s" in _outputs(result)


def test_sys_exit_in_a_cell_costs_only_that_exercise(attacked: dict[str, SubmissionResult]) -> None:
    result = attacked["sys-exit"]
    assert _scores(result) == {"double-check": 0, "deposit-check": 2}


@pytest.mark.parametrize("attack", ["os-exit", "crash"])
def test_a_dying_cell_costs_only_its_exercise_and_says_why(
    attacked: dict[str, SubmissionResult], attack: str
) -> None:
    result = attacked[attack]
    assert _scores(result) == {"double-check": 1, "deposit-check": 0}
    assert "Your cell 'deposit' did not finish" in _outputs(result)


def test_memory_limit_fails_the_exercise_not_the_grader(
    attacked: dict[str, SubmissionResult],
) -> None:
    result = attacked["memory"]
    assert _scores(result) == {"double-check": 1, "deposit-check": 0}
    assert "MemoryError" in _outputs(result) or "did not finish" in _outputs(result)
