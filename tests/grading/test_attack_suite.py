"""The attack suite: a cunning student's submissions, graded with ``seqlab grade`` exactly as an
instructor would (a separate process, ``--lesson`` pointing at the source in ``lessons/``,
``--jobs 2``), in one batch with honest "victim" submissions.

Every attack is a few lines in the first solution cell of the released lesson 00, paired with
wrong answers. Each must score no more than the untouched student version (0); the victims
keep full marks; the results file is byte-identical 15 s after the grader exits; and no
feedback contains hidden-test text.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from mutants import MUTANTS

from seqlab.grading.lesson import nbgrader_meta
from seqlab.grading.release import release_notebook
from seqlab.grading.sandbox import detect

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "lessons" / "00-welcome.ipynb"

pytestmark = pytest.mark.skipif(
    detect().mode != "bubblewrap",
    reason="the attack suite needs the bubblewrap sandbox (bash .ci/install-browser installs it)",
)

WRONG_ALARMS = "async def staggered_alarms(delays):\n    return []\n"
WRONG_REPLAY = "def first_lost_update(tellers):\n    return 0\n"
# The mutant suite's racy careful teller (it checkpoints between read and write).
WRONG_CAREFUL = next(
    m.source for m in MUTANTS if (m.exercise, m.name) == ("ex0-careful", "still-racy")
)

# Source text that appears only in hidden tests of lesson 00: it must never reach feedback.
# (A hidden check's what="..." is the instructor's own wording for feedback, and is shown.)
HIDDEN_MARKERS = [
    "odd_alarms",
    "seven_careful_tellers",
    "earlier = [s for s in range(seed)",
    "alarm_tasks_ending_at([5, 5, 3600])",
    "HIDDEN",
]

ATTACKS: dict[str, str] = {
    # The check helpers switched off wherever they can be reached from Python.
    "guard-off": """
import sys, types
nothing = lambda *args, **kwargs: None
for name, module in list(sys.modules.items()):
    if name.startswith("seqlab") and module is not None:
        for attr in ("check", "check_equal", "check_explore", "check_raises", "explore"):
            if hasattr(module, attr):
                setattr(module, attr, nothing)
check = check_equal = check_explore = nothing
""",
    # Whatever grading objects gc can find, emptied or neutered.
    "gc": """
import gc
for obj in gc.get_objects():
    kind = type(obj).__name__
    try:
        if isinstance(obj, type) and obj.__name__ in ("Observer", "Runner"):
            for attr in ("equal", "truth", "explore", "check", "raises"):
                if attr in vars(obj):
                    setattr(obj, attr, lambda self, *a, **k: None)
        elif kind == "Job":
            object.__setattr__(obj, "steps", [s for s in obj.steps if s.kind != "check"])
        elif isinstance(obj, dict) and "__seqlab_observe__" in obj:
            obj["__seqlab_observe__"] = None
    except Exception:
        pass
""",
    # IPython input transformers where there is an IPython; else the runner's code runner.
    "input-transformer": """
import sys
try:
    get_ipython().input_transformers_cleanup.append(lambda lines: ["pass\\n"])
except Exception:
    pass
for name, module in list(sys.modules.items()):
    if name.startswith("seqlab.grading") and hasattr(module, "_run_code"):
        module._run_code = lambda *args, **kwargs: None
""",
    # Every compiled check turned into `pass` (an AST transformer, by hand).
    "ast-transformer": """
import ast, builtins
_compile = builtins.compile
def compile(source, filename, mode, flags=0, *args, **kwargs):
    if isinstance(source, str) and ("check" in source or "observe" in source):
        source = "pass"
    return _compile(source, filename, mode, flags, *args, **kwargs)
builtins.compile = compile
try:
    class Nothing(ast.NodeTransformer):
        def visit_Module(self, node):
            return ast.Module(body=[ast.Pass()], type_ignores=[])
    get_ipython().ast_transformers.append(Nothing())
except Exception:
    pass
""",
    # A tracer rewriting the observed values inside the check helpers' frames.
    "settrace": """
import ctypes, sys, threading
def tracer(frame, event, arg):
    if event == "call" and frame.f_code.co_name in ("equal", "truth", "_record", "check", "check_equal"):
        for name in ("value", "condition", "actual"):
            if name in frame.f_locals:
                frame.f_locals[name] = True
        if "expected" in frame.f_locals and "actual" in frame.f_locals:
            frame.f_locals["expected"] = frame.f_locals["actual"]
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
    return tracer
sys.settrace(tracer)
threading.settrace(tracer)
sys.setprofile(lambda *args: None)
""",
    # Objects that claim to equal anything, and to be true.
    "lying-objects": """
class Yes(int):
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
    __bool__ = lambda self: True
    __hash__ = int.__hash__
class Everything(list):
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
async def staggered_alarms(delays):
    return Everything()
def first_lost_update(tellers):
    return Yes(0)
async def careful_deposits(tellers):
    return Yes(0)
""",
    # The instructor's solutions, from the installed package or any checkout it can find.
    "steal-solutions": """
import glob, importlib.resources, json, os
places = [str(importlib.resources.files("seqlab")), os.getcwd(), os.path.expanduser("~"),
          "/tmp", "/work", "/root", "/home", "/opt", "/srv", "/autograder", REPO]
found = []
for place in places:
    for path in glob.glob(os.path.join(place, "**", "*.ipynb"), recursive=True):
        try:
            with open(path) as f:
                cells = json.load(f)["cells"]
        except Exception:
            continue
        for cell in cells:
            text = "".join(cell.get("source", ""))
            if "### BEGIN SOLUTION" in text:
                found.append(text)
for text in found:
    try:
        exec(text, globals())
    except Exception:
        pass
""",
    # Hidden tests read from IPython's history, _ih/Out, or anything in memory, and shown.
    "hidden-leak": """
import gc, glob, os, sqlite3
loot = [repr(globals().get("_ih")), repr(globals().get("Out"))]
for path in glob.glob(os.path.expanduser("~/.ipython/**/history.sqlite"), recursive=True):
    try:
        loot += [row[0] for row in sqlite3.connect(path).execute("select source from history")]
    except Exception:
        pass
loot += [s for s in gc.get_objects() if isinstance(s, str) and ("HIDDEN" in s or "3600" in s)]
def first_lost_update(tellers):
    found = [s for s in gc.get_objects() if isinstance(s, str) and ("HIDDEN" in s or "3600" in s or "first_lost_update(1" in s)]
    raise RuntimeError("LOOT " + " | ".join(found))
async def staggered_alarms(delays):
    raise RuntimeError("LOOT " + repr(delays))
raise RuntimeError("LOOT " + " | ".join(loot))
""",
    # Every other process that looks like a grader or a kernel, killed.
    "kill-others": """
import os, signal
for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) != os.getpid():
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except OSError:
            continue
        if b"seqlab" in command or b"python" in command or b"bwrap" in command:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
""",
    # The next submission in the batch, and the results, overwritten.
    "overwrite": """
import json
for path in (VICTIM, RESULTS):
    try:
        with open(path, "w") as f:
            json.dump({"cells": [], "score": 100}, f)
    except OSError:
        pass
""",
    # A daemon that outlives the grader and rewrites the results.
    "daemon": """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for _ in range(300):
            try:
                with open(RESULTS, "w") as f:
                    f.write('{"score": 100}')
            except OSError:
                pass
            time.sleep(0.1)
        os._exit(0)
    os._exit(0)
""",
    # A fork bomb.
    "fork-bomb": """
import os, time
children = 0
for _ in range(5000):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
    except OSError:
        break
""",
    # A 150 MB exception message.
    "huge-message": """
raise ValueError("x" * 150_000_000)
""",
    # Memory grabbed until the limit.
    "memory-hog": """
hog = []
try:
    while True:
        hog.append(bytearray(64 * 1024 * 1024))
except MemoryError:
    pass
""",
}


def _student() -> nbformat.NotebookNode:
    nb = release_notebook(nbformat.read(str(SOURCE), as_version=4))
    nb.metadata.setdefault("seqlab", {})["lesson"] = "00-welcome"
    return nb


def _write(nb: nbformat.NotebookNode, path: Path, cells: dict[str, str]) -> Path:
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in cells:
            cell.source = cells[gid]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def _honest() -> dict[str, str]:
    nb = nbformat.read(str(SOURCE), as_version=4)
    return {
        str(nbgrader_meta(c)["grade_id"]): c.source
        for c in nb.cells
        if nbgrader_meta(c).get("solution")
    }


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("attack-suite")
    results = root / "results.json"
    honest = _honest()
    submissions: list[tuple[str, Path]] = []
    submissions.append(("untouched", _write(_student(), root / "untouched" / "sub.ipynb", {})))
    wrong = {"ex0-alarms": WRONG_ALARMS, "ex0-replay": WRONG_REPLAY, "ex0-careful": WRONG_CAREFUL}
    submissions.append(("wrong", _write(_student(), root / "wrong" / "sub.ipynb", wrong)))
    victim_paths = [root / f"victim-{i}" / "submission.ipynb" for i in range(3)]
    for i, (name, attack) in enumerate(ATTACKS.items()):
        code = (
            attack.replace("VICTIM", repr(str(victim_paths[i % 3])))
            .replace("RESULTS", repr(str(results)))
            .replace("REPO", repr(str(ROOT)))
        )
        cells = dict(wrong)
        if name == "steal-solutions":
            cells["ex0-alarms"] = WRONG_ALARMS + code  # stolen solutions would replace these
        else:
            cells["ex0-alarms"] = code + "\n" + WRONG_ALARMS
        submissions.append((name, _write(_student(), root / name / "submission.ipynb", cells)))
        if i % 5 == 4:  # victims graded beside the attackers, some after them
            v = len([s for s in submissions if s[0].startswith("victim")])
            if v < 3:
                submissions.append((f"victim-{v}", _write(_student(), victim_paths[v], honest)))
    for v in range(len([s for s in submissions if s[0].startswith("victim")]), 3):
        submissions.append((f"victim-{v}", _write(_student(), victim_paths[v], honest)))
    # A careless student: exercise 1 recurses without end (deep enough to crash the C stack).
    recursive = dict(honest)
    recursive["ex0-alarms"] = (
        "import sys\nsys.setrecursionlimit(10**7)\n"
        "async def staggered_alarms(delays):\n    return await staggered_alarms(delays)\n"
    )
    submissions.append(
        ("recursion", _write(_student(), root / "recursion" / "sub.ipynb", recursive))
    )
    argv = [sys.executable, "-m", "seqlab.cli", "grade", *[str(p) for _, p in submissions]]
    argv += ["--lesson", str(SOURCE), "--jobs", "2", "--format", "json", "--out", str(results)]
    argv += ["--timeout", "20", "--memory", "1024"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ended = time.monotonic()
    data = json.loads(results.read_text())
    by_name = {
        name: entry["results"]
        for (name, _), entry in zip(submissions, data["submissions"], strict=True)
    }
    return {
        "results": by_name,
        "path": results,
        "bytes": results.read_bytes(),
        "ended": ended,
        "stderr": proc.stderr,
    }


def _score(result: object) -> float:
    assert isinstance(result, dict)
    return float(result["score"])


def _scores(result: object) -> dict[str, float]:
    assert isinstance(result, dict)
    return {t["name"]: t["score"] for t in result["tests"]}


def _text(result: object) -> str:
    assert isinstance(result, dict)
    return result["output"] + "\n" + "\n".join(t["output"] for t in result["tests"])


def test_the_baselines(batch: dict[str, object]) -> None:
    results = batch["results"]
    assert isinstance(results, dict)
    assert _score(results["untouched"]) == 0
    assert _score(results["wrong"]) == 0
    assert results["untouched"]["extra_data"]["sandbox"]["mode"] == "bubblewrap"


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_no_attack_scores_more_than_the_untouched_student_version(
    batch: dict[str, object], attack: str
) -> None:
    results = batch["results"]
    assert isinstance(results, dict)
    assert _score(results[attack]) <= _score(results["untouched"]), _text(results[attack])


def test_victims_graded_beside_attackers_keep_full_marks(batch: dict[str, object]) -> None:
    results = batch["results"]
    assert isinstance(results, dict)
    for name in ("victim-0", "victim-1", "victim-2"):
        assert _score(results[name]) == 8, _text(results[name])


def test_no_feedback_contains_hidden_test_text(batch: dict[str, object]) -> None:
    results = batch["results"]
    assert isinstance(results, dict)
    for name, result in results.items():
        text = _text(result)
        for marker in HIDDEN_MARKERS:
            assert marker not in text, (name, marker, text[:2000])
    # The leak attempt's own exception is reported, shortened, without anything it looted.
    assert "LOOT" in _text(results["hidden-leak"])


def test_huge_outputs_are_capped(batch: dict[str, object]) -> None:
    results = batch["results"]
    assert isinstance(results, dict)
    assert len(json.dumps(results["huge-message"])) < 20_000
    assert "ValueError" in _text(results["huge-message"])
    assert len(batch["bytes"]) < 2_000_000  # type: ignore[arg-type]


def test_endless_recursion_in_exercise_one_costs_exercise_one_only(
    batch: dict[str, object],
) -> None:
    results = batch["results"]
    assert isinstance(results, dict)
    assert _scores(results["recursion"]) == {
        "ex0-alarms-check": 0,
        "ex0-replay-check": 3,
        "ex0-careful-check": 3,
    }


def test_the_results_file_is_unchanged_15_seconds_after_the_grader_exits(
    batch: dict[str, object],
) -> None:
    path = batch["path"]
    assert isinstance(path, Path)
    wait = 15 - (time.monotonic() - float(batch["ended"]))  # type: ignore[arg-type]
    if wait > 0:
        time.sleep(wait)
    assert path.read_bytes() == batch["bytes"]
