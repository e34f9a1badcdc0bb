"""`seqlab bench`: the table and JSON are well formed, rows are paired and fair peers are all
there. Speed targets are not asserted: a benchmark measures, a test checks structure."""

import json
import subprocess
import sys
import time

import pytest

from seqlab import bench
from seqlab.cli import main

COLUMNS = ["scenario", "seqlab", "peer", "ratio", "target", "result"]

# The fair peers of issue 19, by the peer name their rows carry.
FAIR_PEERS = {
    "pipeline": {"batched channel diamond", "ring loop", "batched channel"},
    "sequencer": {"channel + worker", "fair drain", "bare loop"},
    "convoy": {"draining per-key channels"},
    "barrier": {"raw barrier", "asyncio.Barrier", "threading.Barrier", "Event barrier"},
    "runtime": {"trio.run + MockClock"},
}
SCALING_GROUPS = {"barrier", "sequencer", "convoy", "runtime", "tracing"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "seqlab", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


def test_quick_bench_table_matches_the_json(quick_run):
    stdout, data = quick_run
    lines = stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scenario"))
    assert lines[header].split() == COLUMNS
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    rows = lines[header + 2 :]
    assert len(rows) == len(data["results"]) >= 25
    groups = {r["group"] for r in data["results"]}
    assert {"barrier", "sequencer", "convoy", "pipeline", "tracing", "runtime"} <= groups
    for row, result in zip(rows, data["results"]):
        assert row.startswith(f"{result['group']}: {result['scenario']}")
        assert row.rstrip().endswith(("pass", "FAIL", "-"))
        assert result["seqlab"] > 0
        assert result["passed"] in (True, False, None)
    assert data["quick"] is True and "trio" in data["machine"]
    assert data["pairs"] == 3 and data["cpus"] >= 1 and len(data["load"]) == 2


def test_every_compared_row_carries_its_pairs_median_min_and_max(quick_run):
    _, data = quick_run
    compared = [r for r in data["results"] if r["kind"] in ("faster", "overhead", "scaling")]
    assert compared
    for r in compared:
        pairs = r["pairs"]
        assert len(pairs) == 3, r["scenario"]  # --quick: three pairs
        assert r["min"] == pytest.approx(min(pairs), rel=1e-3)
        assert r["max"] == pytest.approx(max(pairs), rel=1e-3)
        assert r["min"] <= r["median"] <= r["max"]
        assert r["ratio"] == r["median"]
        if r["target"] is not None:
            better = r["median"] >= r["target"] if r["kind"] == "faster" else None
            if better is None:
                better = r["median"] <= r["target"]
            assert r["passed"] is better  # a row passes on its median


def test_each_fair_peer_is_present_with_a_target(quick_run):
    _, data = quick_run
    for group, peers in FAIR_PEERS.items():
        rows = {r["peer"]: r for r in data["results"] if r["group"] == group}
        assert peers <= set(rows), (group, set(rows))
    targeted = {(r["group"], r["peer"]) for r in data["results"] if r["target"] is not None}
    for needed in [
        ("pipeline", "batched channel diamond"),
        ("pipeline", "ring loop"),
        ("pipeline", "batched channel"),
        ("sequencer", "channel + worker"),
        ("sequencer", "bare loop"),
        ("convoy", "draining per-key channels"),
        ("barrier", "raw barrier"),
        ("barrier", "asyncio.Barrier"),
        ("runtime", "trio.run + MockClock"),
    ]:
        assert needed in targeted
    # Old peers stay only as labelled info rows.
    old = [r for r in data["results"] if "(old)" in r["scenario"]]
    assert old and all(r["target"] is None and r["passed"] is None for r in old)
    tracing = {r["scenario"] for r in data["results"] if r["group"] == "tracing"}
    for primitive in ("barrier", "convoy", "pipeline", "sequencer"):
        assert f"{primitive} traced vs untraced" in tracing


def test_scaling_rows_cover_every_dimension_at_three_sizes(quick_run):
    _, data = quick_run
    scaling = [r for r in data["results"] if r["kind"] == "scaling"]
    assert {r["group"] for r in scaling if r["target"] == 1.5} >= SCALING_GROUPS
    for r in scaling:
        assert len(r["points"]) == 3 and r["target"] in (1.5, None)
        sizes = sorted(int(n) for n in r["points"])
        assert r["peer"] == f"n={sizes[0]:,}"
        assert r["seqlab"] == r["points"][str(sizes[-1])]


def test_only_unknown_scenario_is_a_clear_error(capsys):
    assert main(["bench", "--quick", "--only", "nope"]) == 2
    assert "unknown scenario nope" in capsys.readouterr().err


def test_pairs_below_one_is_refused(capsys):
    assert main(["bench", "--quick", "--only", "runtime", "--pairs", "0"]) == 2
    assert "pairs must be at least 1" in capsys.readouterr().err
    with pytest.raises(TypeError, match="pairs must be an int"):
        bench.run_all(quick=True, only=["runtime"], pairs=2.5)  # type: ignore[arg-type]


def test_pairs_are_interleaved_and_the_ratio_is_their_median():
    calls = []
    ours = iter([1.0, 1.0, 1.0, 1.0, 1.0])
    theirs = iter([3.0, 2.0, 9.0, 2.5, 1.0])

    def seqlab_side(quick):
        calls.append("seqlab")
        return next(ours)

    def peer_side(quick):
        calls.append("peer")
        return next(theirs)

    faster = bench.Comparison(
        "g", "n", seqlab_side, peer_side, "peer", "faster", 2.0, "op", lambda q: 10
    )
    result = bench.measure(faster, quick=False)
    assert calls == ["seqlab", "peer"] * 5
    assert result.pairs == [3.0, 2.0, 9.0, 2.5, 1.0]
    assert result.ratio == result.median == 2.5  # not the best pair (9.0), not the mean
    assert (result.min, result.max) == (1.0, 9.0)
    assert result.passed is True
    assert result.seqlab == pytest.approx(1e5) and result.peer_value == pytest.approx(2.5e5)


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
    assert len(fast.pairs) == 3
    table = bench.format_table([fast, slow])
    assert ">= 2x" in table and "<= 1.5x" in table and "FAIL" in table and "pass" in table
    assert "(2.00-2.00)" in table


def _spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_flat_cost_passes_and_a_growing_cost_fails_scaling():
    def flat(n, quick):
        _spin(0.002)
        return 0.002 * n, n

    def quadratic(n, quick):
        return 1e-6 * n * n, n

    sizes = (10, 100, 1000)
    ok = bench.Scaling("g", "flat", flat, "unit", 1.5, sizes, sizes)
    bad = bench.Scaling("g", "quadratic", quadratic, "unit", 1.5, sizes, sizes)
    good, grown = bench.measure(ok, quick=True), bench.measure(bad, quick=True)
    assert good.passed is True and good.ratio == pytest.approx(1.0)
    assert set(good.points) == {"10", "100", "1000"}
    assert grown.passed is False and grown.ratio == pytest.approx(100.0)
    assert grown.points["1000"] == pytest.approx(1000.0)  # microseconds per unit
    assert "growth" in bench.format_table([good, grown])


def test_a_scaling_size_that_runs_too_long_is_stopped_and_fails():
    def hangs_when_big(n, quick):
        if n >= 1000:
            time.sleep(60)
        return 1e-6 * n, n

    sizes = (10, 100, 1000)
    row = bench.Scaling("g", "slow", hangs_when_big, "unit", 1.5, sizes, sizes)
    start = time.monotonic()
    result = bench.measure(row, quick=True, timeout=2.0)
    assert time.monotonic() - start < 30
    assert result.passed is False
    assert "n=1,000 took over 2 s: stopped" in result.scenario
    assert set(result.points) == {"10", "100"}


def test_a_new_scenario_module_is_picked_up_without_registering_it(tmp_path, monkeypatch):
    (tmp_path / "extra_scenario.py").write_text(
        "from seqlab.bench import comparison\n"
        "comparison('extra', 'x vs y', peer_name='y', kind='overhead', target=None,\n"
        "           unit='op', ops=lambda q: 1, peer=lambda q: 1.0)(lambda q: 1.0)\n"
    )
    monkeypatch.setattr(bench, "__path__", [*bench.__path__, str(tmp_path)])
    monkeypatch.setattr(bench, "_COMPARISONS", list(bench._COMPARISONS))
    monkeypatch.delitem(sys.modules, "seqlab.bench.extra_scenario", raising=False)
    assert "extra_scenario" in bench.scenario_modules()
    assert "scenarios" not in bench.scenario_modules()
    try:
        (result,) = bench.run_all(quick=True, only=["extra"])
    finally:
        sys.modules.pop("seqlab.bench.extra_scenario", None)
    assert (result.group, result.scenario, result.ratio) == ("extra", "x vs y", 1.0)
