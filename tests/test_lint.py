"""The style and type checks configured in pyproject.toml are part of the suite."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint():
    done = run(sys.executable, "-m", "ruff", "check", "seqlab", "tests")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format():
    done = run(sys.executable, "-m", "ruff", "format", "--check", "seqlab", "tests")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy():
    done = run(sys.executable, "-m", "mypy")
    assert done.returncode == 0, done.stdout + done.stderr
