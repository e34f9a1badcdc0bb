"""seqlab gradescope-bundle: the zip has Gradescope's layout, and run_autograder works.

The bundle is unzipped into a temporary autograder root and run_autograder is run there with
the paths and the interpreter overridden by environment variables (setup.sh is only checked
for syntax: it would pip-install into this environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
from grading_support import DEPOSIT_RACY, DOUBLE, FIXTURES, SOURCE, make_submission

from seqlab.cli import main
from seqlab.grading.sandbox import detect

SCHEMA = json.loads((FIXTURES / "gradescope-results.schema.json").read_text())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    assert main(["gradescope-bundle", str(SOURCE), "--out", str(out), "--timeout", "20"]) == 0
    return out


def _autograder(root: Path, bundle: Path) -> Path:
    source = root / "source"
    source.mkdir(parents=True)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(source)
    for name in ("setup.sh", "run_autograder"):
        (source / name).chmod(0o755)
    shutil.copy(source / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    return root


def _run(root: Path) -> dict[str, object]:
    env = {
        **os.environ,
        "SEQLAB_AUTOGRADER_ROOT": str(root),
        "SEQLAB_PYTHON": sys.executable,
    }
    proc = subprocess.run(
        [str(root / "run_autograder")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, object] = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(data, SCHEMA)
    return data


def test_bundle_has_gradescope_layout(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        config = json.loads(zf.read("config.json"))
    assert {"setup.sh", "run_autograder", "config.json", "lesson/fixture-lesson.ipynb"} <= names
    assert any(n.startswith("seqlab-") and n.endswith(".whl") for n in names)
    assert modes["run_autograder"] == modes["setup.sh"] == 0o755
    assert config["lesson_id"] == "fixture-lesson" and config["timeout"] == 20
    assert config["hidden_visibility"] == "after_due_date"


def test_setup_script_is_valid_bash(bundle: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path)
    for name in ("setup.sh", "run_autograder"):
        subprocess.run(["bash", "-n", str(tmp_path / name)], check=True)


def test_run_autograder_grades_the_submission(bundle: Path, tmp_path: Path) -> None:
    root = _autograder(tmp_path / "autograder", bundle)
    make_submission(
        root / "submission", "fixture-lesson", {"double": DOUBLE, "deposit": DEPOSIT_RACY}
    )
    data = _run(root)
    assert data["score"] == 1, data
    tests = data["tests"]
    assert isinstance(tests, list)
    assert [t["status"] for t in tests] == ["passed", "failed"]
    assert "In the simplest failing schedule found" in tests[1]["output"]
    assert "Replay it: seqlab.run(three_deposits, schedule=" in tests[1]["output"]


def test_run_autograder_without_a_notebook_still_writes_results(
    bundle: Path, tmp_path: Path
) -> None:
    root = _autograder(tmp_path / "autograder", bundle)
    (root / "submission" / "notes.txt").write_text("forgot the notebook")
    data = _run(root)
    assert data["score"] == 0
    assert "No .ipynb file" in str(data["output"])


def test_run_autograder_writes_results_even_when_grading_cannot_start(
    bundle: Path, tmp_path: Path
) -> None:
    root = _autograder(tmp_path / "autograder", bundle)
    (root / "source" / "config.json").write_text("{ broken")
    data = _run(root)
    assert data["score"] == 0 and "could not run" in str(data["output"])


@pytest.mark.skipif(detect().mode != "bubblewrap", reason="needs bubblewrap")
def test_the_lesson_source_in_the_bundle_is_out_of_the_learners_reach(
    bundle: Path, tmp_path: Path
) -> None:
    """run_autograder closes the source folder (0700) and the learner's code, in the sandbox,
    cannot open the lesson source: a ``double`` that must read it first scores 0."""
    root = _autograder(tmp_path / "autograder", bundle)
    lesson = root / "source" / "lesson" / "fixture-lesson.ipynb"
    reader = (
        "def double(x):\n"
        f"    open({str(lesson)!r}).read()  # the solutions and hidden checks are in there\n"
        "    return 2 * x"
    )
    make_submission(root / "submission", "fixture-lesson", {"double": reader})
    data = _run(root)
    assert (root / "source").stat().st_mode & 0o777 == 0o700
    tests = data["tests"]
    assert isinstance(tests, list)
    assert tests[0]["score"] == 0, tests[0]
    assert "FileNotFoundError" in tests[0]["output"] or "PermissionError" in tests[0]["output"]
