"""What ships: the wheel carries the student versions of the lessons and nothing to steal.

The lesson sources (solutions between ``### BEGIN SOLUTION``/``### END SOLUTION``, hidden
checks between ``### BEGIN HIDDEN TESTS``/``### END HIDDEN TESTS``) live in the repository's
top-level ``lessons/``; the wheel must contain none of their text.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from seqlab.grading.lesson import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION

ROOT = Path(__file__).resolve().parents[2]


def _regions(text: str) -> list[list[str]]:
    """The stripped lines of each solution and hidden-test region."""
    regions: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith((BEGIN_SOLUTION, BEGIN_HIDDEN)):
            inside = True
            regions.append([])
        elif stripped.startswith((END_SOLUTION, END_HIDDEN)):
            inside = False
        elif inside and stripped:
            regions[-1].append(stripped)
    return regions


def _normal(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy of the project's files (a build/ folder left by an earlier
    # build would otherwise leak stale files into the wheel).
    tree = tmp_path_factory.mktemp("tree")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)]
    # Without build isolation when this environment can build wheels (setuptools + wheel),
    # else the usual isolated build (pip fetches the build requirements from the registry).
    for argv in ([*base, "--no-build-isolation"], base):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("seqlab-*.whl")
    return path


def test_the_wheel_ships_student_versions_and_no_solution_or_hidden_test_text(wheel: Path) -> None:
    regions: list[list[str]] = []
    for source in sorted((ROOT / "lessons").glob("*.ipynb")):
        nb = nbformat.read(str(source), as_version=4)
        for cell in nb.cells:
            regions += [r for r in _regions(cell.source) if r]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        notebooks = sorted(n for n in names if n.endswith(".ipynb"))
        assert notebooks == [
            f"seqlab/lessons/{p.stem}.ipynb" for p in sorted((ROOT / "lessons").glob("*.ipynb"))
        ]
        for name in notebooks:
            text = zf.read(name).decode()
            assert BEGIN_SOLUTION not in text and BEGIN_HIDDEN not in text, name
            assert "NotImplementedError" in text, name  # the placeholders are there
        assert not [n for n in names if n.startswith("lessons/") or "/conftest.py" in n]
        files = {n: zf.read(n).decode(errors="replace") for n in names}
    # No file holds a whole solution or hidden-test region (notebook JSON is read as cells).
    texts = []
    for name, text in files.items():
        if name.endswith(".ipynb"):
            texts += [_normal(c.source) for c in nbformat.reads(text, as_version=4).cells]
        else:
            texts.append(_normal(text))
    everything = "\n\n".join(texts)
    leaked = ["\n".join(r) for r in regions if len(r) >= 2 and "\n".join(r) in everything]
    single = [r[0] for r in regions if len(r) == 1 and len(r[0]) >= 30 and r[0] in everything]
    assert len(regions) >= 30 and not leaked and not single, (leaked + single)[:3]
