"""What a failed concurrency check tells the learner, and how the grader learns it.

- explore hands its ``check`` the run's schedule (``recorder.schedule``): the grading runner
  reads every run's replayable schedule there, through public API only;
"""

from __future__ import annotations

import ast
from pathlib import Path

import trio

import seqlab

GRADING = Path(seqlab.__file__).parent / "grading"
PRIVATE = ("_local", "_trace", "rng", "controller")


async def two_writers() -> None:
    """Two tasks taking turns at a shared log; each step is an event in the trace."""

    async def writer(name: str) -> None:
        for i in range(3):
            seqlab.emit("log", "write", who=name, i=i)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "a", name="a")
        nursery.start_soon(writer, "b", name="b")


def _writes(recorder: seqlab.Recorder) -> list[tuple[str, int]]:
    return [(e.data["who"], e.data["i"]) for e in recorder.events if e.primitive == "log"]


def test_explore_gives_check_the_schedule_that_replays_the_run() -> None:
    seen: list[tuple[str | None, list[tuple[str, int]]]] = []

    def rule(recorder: seqlab.Recorder) -> bool:
        seen.append((recorder.schedule, _writes(recorder)))
        return _writes(recorder)[0][0] == "a"  # rejects the runs where b writes first

    result = seqlab.explore(two_writers, seeds=range(24), check=rule)
    assert len(seen) >= 24
    assert len({writes[0][0] for _, writes in seen}) == 2  # both orders were explored
    assert len({tuple(writes) for _, writes in seen}) > 2
    for schedule, writes in seen:
        assert isinstance(schedule, str) and schedule
        again = seqlab.Recorder()
        seqlab.run(two_writers, schedule=schedule, recorder=again)
        assert _writes(again) == writes
    # A failure's schedule is the one its check saw.
    assert result.failures
    rejected = [schedule for schedule, writes in seen if writes[0][0] == "b"]
    assert {f.schedule for f in result.failures} <= set(rejected)


def test_grading_reads_no_private_runtime_state() -> None:
    """grading depends on runtime, trace and primitives through their public names only."""
    for path in sorted(GRADING.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
                raise AssertionError(f"{path.name}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.Constant) and node.value in PRIVATE:  # getattr(x, "_local")
                raise AssertionError(f"{path.name}:{node.lineno} names {node.value!r}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("runtime"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name}:{node.lineno} imports {private}"
