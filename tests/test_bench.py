"""`seqlab bench --quick` produces a well-formed table and JSON (speed targets are not asserted)."""

import json
import subprocess
import sys

import pytest

from seqlab import bench
from seqlab.cli import main

COLUMNS = ["scenario", "seqlab", "peer", "ratio", "target", "result"]


def test_quick_bench_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "seqlab", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scenario"))
    assert lines[header].split() == COLUMNS
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    rows = lines[header + 2 :]
    data = json.loads(out.read_text())
    assert len(rows) == len(data["results"]) >= 12
    groups = {r["group"] for r in data["results"]}
    assert {"barrier", "sequencer", "convoy", "pipeline", "tracing"} <= groups
    for row, result in zip(rows, data["results"]):
        assert row.startswith(f"{result['group']}: {result['scenario']}")
        assert row.rstrip().endswith(("pass", "FAIL", "-"))
        assert result["seqlab"] > 0
        assert result["passed"] in (True, False, None)
    assert data["quick"] is True and "trio" in data["machine"]


def test_only_unknown_scenario_is_a_clear_error(capsys):
    assert main(["bench", "--quick", "--only", "nope"]) == 2
    assert "unknown scenario nope" in capsys.readouterr().err


def test_ratio_direction_and_verdicts():
    faster = bench.Comparison(
        "g", "n", lambda q: 1.0, lambda q: 3.0, "peer", "faster", 2.0, "op", lambda q: 10
    )
    overhead = bench.Comparison(
        "g", "m", lambda q: 2.0, lambda q: 1.0, "floor", "overhead", 1.5, "op", lambda q: 10
    )
    fast, slow = bench.measure(faster, quick=True), bench.measure(overhead, quick=True)
    assert fast.ratio == pytest.approx(3.0) and fast.passed is True
    assert slow.ratio == pytest.approx(2.0) and slow.passed is False
    assert fast.seqlab == pytest.approx(1e5)
    table = bench.format_table([fast, slow])
    assert ">= 2x" in table and "<= 1.5x" in table and "FAIL" in table and "pass" in table
