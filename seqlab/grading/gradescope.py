"""Gradescope autograder bundles (``seqlab gradescope-bundle LESSON --out autograder.zip``).

The zip holds, at its root (Gradescope's layout):

- ``setup.sh``: run once when Gradescope builds the image; installs the bundled seqlab wheel,
  the Jupyter pieces the grader needs, and Debian's ``bubblewrap`` (the sandbox learner code
  runs in, as an unprivileged user: :mod:`seqlab.grading.sandbox`);
- ``run_autograder``: run for each submission; grades the ``.ipynb`` in
  ``/autograder/submission`` against the bundled lesson source and writes
  ``/autograder/results/results.json``. If grading itself cannot run, it still writes a
  valid results file with score 0 and the reason;
- ``seqlab-*.whl``: seqlab built from the current source (``pip wheel --no-deps``), so the
  bundle does not depend on a published release;
- ``lesson/<ID>.ipynb``: the lesson source with solutions and hidden checks. ``run_autograder``
  makes the source directory readable by its owner only before any learner code runs, and
  learner code runs in a sandbox that does not even contain that directory, as an
  unprivileged user;
- ``config.json``: the lesson file name and the limits.

Every path can be overridden with an environment variable, which is how the bundle is tested
outside Gradescope: ``SEQLAB_AUTOGRADER_ROOT`` (default ``/autograder``), or individually
``SEQLAB_AUTOGRADER_SOURCE``, ``SEQLAB_AUTOGRADER_SUBMISSION``, ``SEQLAB_AUTOGRADER_RESULTS``;
``SEQLAB_PYTHON`` picks the interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .lesson import load_lesson

__all__ = ["BundleError", "build_bundle", "build_wheel", "run_autograder", "main"]

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
SOURCE="${SEQLAB_AUTOGRADER_SOURCE:-${SEQLAB_AUTOGRADER_ROOT:-/autograder}/source}"
PYTHON="${SEQLAB_PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    apt-get install -y python3 python3-pip python3-venv
fi
"$PYTHON" -m pip install "$SOURCE"/seqlab-*.whl "nbformat>=5.9" "jupyter_client>=8"
if ! command -v bwrap >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends bubblewrap
fi
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this, as root, for every submission.
set -uo pipefail
ROOT="${SEQLAB_AUTOGRADER_ROOT:-/autograder}"
SOURCE="${SEQLAB_AUTOGRADER_SOURCE:-$ROOT/source}"
SUBMISSION="${SEQLAB_AUTOGRADER_SUBMISSION:-$ROOT/submission}"
RESULTS="${SEQLAB_AUTOGRADER_RESULTS:-$ROOT/results}"
PYTHON="${SEQLAB_PYTHON:-python3}"
mkdir -p "$RESULTS"
rm -f "$RESULTS/results.json"
cd "$SOURCE" || exit 0
"$PYTHON" -m seqlab.grading.gradescope --source "$SOURCE" --submission "$SUBMISSION" \\
    --results "$RESULTS"
if [ ! -s "$RESULTS/results.json" ]; then
    printf '%s\\n' '{"score": 0, "output": "The autograder could not run (see the autograder output for the instructor). Your submission was not graded; tell your instructor.", "tests": []}' > "$RESULTS/results.json"
fi
exit 0
"""


class BundleError(RuntimeError):
    """The bundle could not be built (the message says what to do)."""


def _project_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def build_wheel(directory: Path) -> Path:
    """Build a wheel of this seqlab from its source tree with ``pip wheel --no-deps``."""
    root = _project_root()
    if root is None:
        raise BundleError(
            "seqlab is not installed from a source tree, so no wheel can be built here: pass "
            "--wheel PATH/TO/seqlab-*.whl"
        )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(directory), str(root)],
        capture_output=True,
        text=True,
    )
    wheels = sorted(directory.glob("seqlab-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BundleError(
            f"pip wheel failed ({proc.stderr.strip()[-500:]}); build one yourself and pass --wheel"
        )
    return wheels[-1]


def build_bundle(
    lesson_spec: str | Path,
    out: str | Path,
    *,
    wheel: str | Path | None = None,
    timeout: float = 60.0,
    memory_mb: int = 2048,
    hidden_visibility: str = "after_due_date",
) -> Path:
    """Write the Gradescope autograder zip for one lesson (its *source*); returns its path.

    ``hidden_visibility`` is the Gradescope visibility of checks with hidden parts."""
    from .grader import VISIBILITIES

    if hidden_visibility not in VISIBILITIES:
        raise BundleError(f"--hidden-visibility must be one of {', '.join(VISIBILITIES)}")
    lesson = load_lesson(lesson_spec)
    if lesson.is_student_version:
        raise BundleError(
            f"{lesson.path} is a student version; bundle the lesson source (lessons/{lesson.id}"
            ".ipynb in the repository)"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="seqlab-bundle-") as tmp:
        if wheel is None:
            wheel_path = build_wheel(Path(tmp))
        else:
            wheel_path = Path(wheel)
            if not wheel_path.is_file() or not wheel_path.name.startswith("seqlab-"):
                raise BundleError(f"--wheel {wheel}: not a seqlab wheel file")
        lesson_name = f"lesson/{lesson.id}.ipynb"
        config = {
            "lesson": lesson_name,
            "lesson_id": lesson.id,
            "timeout": timeout,
            "memory_mb": memory_mb,
            "hidden_visibility": hidden_visibility,
        }
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, text in (
                ("setup.sh", SETUP_SH),
                ("run_autograder", RUN_AUTOGRADER),
            ):
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o755 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, text)
            zf.write(wheel_path, wheel_path.name)
            zf.write(lesson.path, lesson_name)
            zf.writestr("config.json", json.dumps(config, indent=2) + "\n")
    return out


def _pick_submission(directory: Path, lesson_id: str) -> tuple[Path | None, str]:
    notebooks = sorted(p for p in directory.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        return None, f"No .ipynb file was found in your submission; submit {lesson_id}.ipynb."
    for nb in notebooks:
        if nb.stem == lesson_id:
            return nb, ""
    note = "" if len(notebooks) == 1 else f" ({len(notebooks)} notebooks submitted)"
    return notebooks[0], f"Graded {notebooks[0].name}{note}; expected {lesson_id}.ipynb."


def run_autograder(source: Path, submission: Path, results: Path) -> int:
    """Grade the submission directory into ``results/results.json``; always writes it."""
    from .grader import GradeSettings, SubmissionResult, _all_zero, grade

    results.mkdir(parents=True, exist_ok=True)
    target = results / "results.json"
    os.chmod(source, 0o700)
    config = json.loads((source / "config.json").read_text())
    lesson = load_lesson(source / config["lesson"])
    picked, note = _pick_submission(submission, lesson.id)
    result: SubmissionResult
    if picked is None:
        result = _all_zero(lesson, str(submission), note, 0.0)
    else:
        settings = GradeSettings(
            cell_timeout=float(config.get("timeout", 60)),
            memory_mb=int(config.get("memory_mb", 2048)),
            hidden_visibility=str(config.get("hidden_visibility", "after_due_date")),
        )
        from .sandbox import detect

        warning = detect().warning()
        if warning:
            print(warning, file=sys.stderr)
        result = grade(picked, lesson, settings)
        if note:
            result.output = f"{note}\n{result.output}"
    data = result.to_gradescope()
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, target)
    print(result.to_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlab.grading.gradescope")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--submission", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    args = parser.parse_args(argv)
    return run_autograder(args.source, args.submission, args.results)


if __name__ == "__main__":
    sys.exit(main())
