"""Recorder.to_perfetto(): Chrome trace-event JSON, checked by a structural validator written
from the format's documentation (the Trace Event Format document that chrome://tracing and
Perfetto's JSON importer follow)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_trace_schema import SCENARIOS, run_strict

import seqlab

ROOT = Path(__file__).resolve().parent.parent
PHASES = set("BEXiIsCtfM")
SCOPES = {"g", "p", "t"}
METADATA = {"process_name", "thread_name", "thread_sort_index", "process_sort_index"}


def validate(trace: Any) -> list[str]:
    """Every way ``trace`` breaks the trace-event format; empty when it is well formed.

    - the JSON object form: a dict whose ``traceEvents`` is a list of event dicts;
    - every event: a known one-letter ``ph``, ``pid`` and ``tid`` ints, a ``name`` string;
      every non-metadata event a numeric ``ts`` >= 0 (microseconds);
    - ``X`` (complete): a numeric ``dur`` >= 0; ``B``/``E`` (duration) balanced per thread,
      each ``E`` closing the latest open ``B``; slices on one thread nest (no partial overlap);
    - ``i``/``I`` (instant): scope ``s`` in g/p/t when given;
    - ``C`` (counter): ``args`` a non-empty dict of numbers;
    - ``s``/``t``/``f`` (flow): an ``id`` and a ``cat``; each id has exactly one start and one
      finish, the start not later than the finish, and each binds to a slice that encloses its
      timestamp on its thread (``bp: "e"`` for the finish);
    - ``M`` (metadata): a known name and an ``args`` dict;
    - per thread, timestamps in file order never go backwards.
    """
    errors: list[str] = []
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["the trace must be a dict with a traceEvents list"]
    json.dumps(trace)  # must be JSON as it is
    last_ts: dict[tuple[int, int], float] = {}
    open_b: dict[tuple[int, int], list[tuple[str, float]]] = {}
    slices: dict[tuple[int, int], list[tuple[float, float]]] = {}
    flows: dict[Any, dict[str, list[dict[str, Any]]]] = {}
    for n, ev in enumerate(trace["traceEvents"]):
        where = f"event {n} ({ev.get('ph')!r} {ev.get('name')!r})"
        ph = ev.get("ph")
        if ph not in PHASES:
            errors.append(f"{where}: unknown phase")
            continue
        if not isinstance(ev.get("pid"), int) or not isinstance(ev.get("tid"), int):
            errors.append(f"{where}: pid and tid must be ints")
            continue
        if not isinstance(ev.get("name"), str):
            errors.append(f"{where}: name must be a string")
        track = (ev["pid"], ev["tid"])
        if ph == "M":
            if ev.get("name") not in METADATA or not isinstance(ev.get("args"), dict):
                errors.append(f"{where}: metadata needs a known name and args")
            continue
        ts = ev.get("ts")
        if not isinstance(ts, (int, float)) or ts < 0:
            errors.append(f"{where}: ts must be a number >= 0")
            continue
        if ts < last_ts.get(track, 0.0):
            errors.append(f"{where}: ts goes backwards on thread {track}")
        last_ts[track] = ts
        if ph == "X":
            dur = ev.get("dur")
            if not isinstance(dur, (int, float)) or dur < 0:
                errors.append(f"{where}: complete events need dur >= 0")
            else:
                slices.setdefault(track, []).append((ts, ts + dur))
        elif ph == "B":
            open_b.setdefault(track, []).append((ev["name"], ts))
        elif ph == "E":
            stack = open_b.get(track)
            if not stack:
                errors.append(f"{where}: E without an open B")
            else:
                name, begin = stack.pop()
                if ev.get("name") not in (None, name):
                    errors.append(f"{where}: E closes {name!r}")
                slices.setdefault(track, []).append((begin, ts))
        elif ph in "iI":
            if "s" in ev and ev["s"] not in SCOPES:
                errors.append(f"{where}: instant scope must be g, p or t")
        elif ph == "C":
            args = ev.get("args")
            if (
                not isinstance(args, dict)
                or not args
                or not all(isinstance(v, (int, float)) for v in args.values())
            ):
                errors.append(f"{where}: counters need numeric args")
        elif ph in "stf":
            if "id" not in ev or not isinstance(ev.get("cat"), str):
                errors.append(f"{where}: flow events need an id and a cat")
                continue
            flows.setdefault(ev["id"], {}).setdefault(ph, []).append(ev)
    for track, stack in open_b.items():
        if stack:
            errors.append(f"thread {track}: {len(stack)} B event(s) never closed")
    for track, spans in slices.items():
        ordered = sorted(spans, key=lambda s: (s[0], -s[1]))
        stack: list[tuple[float, float]] = []
        for lo, hi in ordered:
            while stack and stack[-1][1] <= lo:
                stack.pop()
            if stack and hi > stack[-1][1] + 1e-6:
                errors.append(f"thread {track}: slice {lo}..{hi} overlaps {stack[-1]}")
            stack.append((lo, hi))

    def enclosed(ev: dict[str, Any]) -> bool:
        spans = slices.get((ev["pid"], ev["tid"]), [])
        return any(lo <= ev["ts"] <= hi for lo, hi in spans)

    for flow_id, parts in flows.items():
        starts, finishes = parts.get("s", []), parts.get("f", [])
        if len(starts) != 1 or len(finishes) != 1:
            errors.append(f"flow {flow_id}: needs one start and one finish")
            continue
        if starts[0]["ts"] > finishes[0]["ts"]:
            errors.append(f"flow {flow_id}: finishes before it starts")
        for ev in (*starts, *parts.get("t", []), *finishes):
            if not enclosed(ev):
                errors.append(f"flow {flow_id}: {ev['ph']} at {ev['ts']} binds to no slice")
        if finishes[0].get("bp") != "e":
            errors.append(f"flow {flow_id}: the finish should bind to its enclosing slice")
    return errors


@pytest.fixture(scope="module")
def traces() -> dict[str, dict[str, Any]]:
    return {name: run_strict(fn).to_perfetto() for name, fn in SCENARIOS.items()}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_primitive_scenario_exports_a_valid_trace(
    traces: dict[str, dict[str, Any]], name: str
) -> None:
    trace = traces[name]
    assert validate(trace) == []
    phases = {ev["ph"] for ev in trace["traceEvents"]}
    assert {"M", "B", "E", "X", "i"} <= phases


def test_tracks_slices_flows_counters_instants(traces: dict[str, dict[str, Any]]) -> None:
    barrier = traces["barrier"]["traceEvents"]
    threads = {ev["args"]["name"] for ev in barrier if ev["name"] == "thread_name"}
    assert {"barrier_scenario", "worker", "worker#2"} <= threads
    waits = [ev for ev in barrier if ev["ph"] == "X" and ev["name"].startswith("waiting on")]
    assert any(ev["name"] == "waiting on Barrier 'b'" and ev["dur"] == 1e6 for ev in waits)
    # The release is an arrow from the last arriver to the task it woke.
    tids = {ev["tid"]: ev["args"]["name"] for ev in barrier if ev["name"] == "thread_name"}
    flows = {ev["id"]: ev for ev in barrier if ev["ph"] == "s"}
    ends = {ev["id"]: ev for ev in barrier if ev["ph"] == "f"}
    pairs = {(tids[flows[i]["tid"]], tids[ends[i]["tid"]]) for i in flows}
    assert ("worker#2", "worker") in pairs

    pipeline = traces["pipeline"]["traceEvents"]
    counters = {ev["name"] for ev in pipeline if ev["ph"] == "C"}
    assert {"Pipeline 'p' cursor", "Pipeline 'p' stage a", "Pipeline 'p' stage b"} <= counters
    assert any(ev["name"] == "FAILED Pipeline 'p' error" for ev in pipeline if ev["ph"] == "i")

    convoy = traces["convoy"]["traceEvents"]
    backlog = [ev["args"]["messages"] for ev in convoy if ev["name"] == "Convoy 'cv' backlog"]
    assert max(backlog) >= 2 and backlog[-1] == 0
    assert any(ev["name"] == "DEAD LETTER Convoy 'cv' key a" for ev in convoy)

    dead = traces["barrier_deadlock"]
    assert any(ev["name"] == "DEADLOCK" for ev in dead["traceEvents"])
    assert any(ev["name"] == "deadlocked" and ev["ph"] == "X" for ev in dead["traceEvents"])
    assert dead["otherData"]["seed"] == 3


def test_failures_are_instants_on_the_failed_task() -> None:
    async def main() -> None:
        import trio

        async def boom() -> None:
            await trio.sleep(1)
            raise RuntimeError("no")

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(boom)
        except BaseException:
            pass

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    trace = rec.to_perfetto()
    assert validate(trace) == []
    failed = [ev for ev in trace["traceEvents"] if ev["name"] == "FAILED: RuntimeError: no"]
    assert len(failed) == 1 and failed[0]["ts"] == 1e6


def test_a_run_at_one_instant_is_laid_out_by_event_order() -> None:
    from seqlab.examples.bank import deposits

    rec = seqlab.Recorder()
    seqlab.run(deposits, 3, seed=1, recorder=rec)
    trace = rec.to_perfetto()
    assert validate(trace) == []
    assert trace["otherData"]["axis"] == "events (1 ms each)"
    assert max(ev.get("ts", 0) for ev in trace["traceEvents"]) > 0


BROKEN: list[tuple[str, Callable[[list[dict[str, Any]]], None]]] = [
    ("E without an open B", lambda evs: evs.remove(next(e for e in evs if e["ph"] == "B"))),
    ("never closed", lambda evs: evs.remove(next(e for e in evs if e["ph"] == "E"))),
    ("one start and one finish", lambda evs: evs.remove(next(e for e in evs if e["ph"] == "f"))),
    ("ts goes backwards", lambda evs: next(e for e in evs if e["ph"] == "E").update(ts=0.5)),
    ("dur >= 0", lambda evs: next(e for e in evs if e["ph"] == "X").pop("dur")),
    ("numeric args", lambda evs: next(e for e in evs if e["ph"] == "C").update(args={"a": "x"})),
    ("unknown phase", lambda evs: evs[0].update(ph="Q")),
    ("need an id", lambda evs: next(e for e in evs if e["ph"] == "s").pop("id")),
]


@pytest.mark.parametrize("why, breaks", BROKEN, ids=[b[0] for b in BROKEN])
def test_the_validator_rejects_broken_traces(
    traces: dict[str, dict[str, Any]], why: str, breaks: Callable[[list[Any]], None]
) -> None:
    trace = copy.deepcopy(traces["pipeline" if "args" in why else "barrier"])
    breaks(trace["traceEvents"])
    assert any(why in error for error in validate(trace)), validate(trace)


def test_demo_writes_a_perfetto_file(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    done = subprocess.run(
        [sys.executable, "-m", "seqlab", "demo", "--seed", "2", "--perfetto", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    trace = json.loads(out.read_text())
    assert validate(trace) == []
    assert f"wrote {out}" in done.stdout
