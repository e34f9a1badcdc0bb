"""Grading a batch of 50 submissions with --jobs 2: it finishes, and reports throughput."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from grading_support import TINY

from seqlab.cli import main


@pytest.mark.throughput
def test_fifty_copies_with_two_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    submissions = []
    for i in range(50):
        path = tmp_path / f"student-{i:02d}.ipynb"
        shutil.copy(TINY, path)
        submissions.append(str(path))
    out = tmp_path / "batch.json"
    args = ["grade", *submissions, "--lesson", str(TINY), "--jobs", "2", "--out", str(out)]
    assert main([*args, "--timeout", "30"]) == 0
    data = json.loads(out.read_text())
    summary = data["summary"]
    assert summary["count"] == 50 and summary["jobs"] == 2
    assert all(s["results"]["score"] == 1 for s in data["submissions"])
    err = capsys.readouterr().err
    assert "graded 50 submissions in" in err and "submissions per minute" in err
    with capsys.disabled():
        print(f"\nthroughput: {summary['submissions_per_minute']} submissions/minute (--jobs 2)")
