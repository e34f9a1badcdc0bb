"""The trace schema is a contract: primitives emit only what it declares, views read only what
is emitted, and every declared kind is emitted by something."""

from __future__ import annotations

import ast
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import seqlab
from seqlab.notebook.views import READS
from seqlab.trace_schema import SCHEMA, UndeclaredEventError, check_event, declared, family

# Kinds no scenario below emits, each with the reason. (None: the controlled scheduler's
# "scheduler decision" comes from replaying a schedule, in the emitted() fixture.)
EMITTED_ELSEWHERE: set[tuple[str, str]] = set()


async def barrier_scenario() -> None:
    b = seqlab.Barrier(2, name="b", action=lambda: None)

    async def worker(delay: float) -> None:
        await trio.sleep(delay)
        await b.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, 0)
        nursery.start_soon(worker, 1)
    with trio.move_on_after(1):
        await b.wait()  # leaves when cancelled
    b.abort()
    b.reset()


async def barrier_deadlock() -> None:
    b = seqlab.Barrier(3, name="stuck")
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(b.wait)


async def phaser_scenario() -> None:
    ph = seqlab.Phaser(1, name="ph")

    async def party() -> None:
        ph.register()
        await ph.arrive_and_wait()
        ph.arrive_and_deregister()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(party)
        await trio.sleep(1)
        await ph.arrive_and_wait()
        ph.arrive_and_deregister()


async def sequencer_scenario() -> None:
    def boom() -> None:
        raise ValueError("boom")

    async with seqlab.open_dispatcher(workers=1, name="d") as d:
        async with seqlab.open_sequencer(name="s", dispatcher=d) as seq:
            ok = seq.submit_nowait(trio.sleep, 1)
            bad = seq.submit_nowait(boom)
            await ok
            with pytest.raises(ValueError):
                await bad
            slow = seq.submit_nowait(trio.sleep, 10)
            queued = seq.submit_nowait(trio.sleep, 10)
            await trio.sleep(1)
            seq.close()
            del slow, queued
            with trio.move_on_after(0):
                pass
        await d.call(lambda: 1)


async def sequencer_cancel() -> None:
    with trio.move_on_after(1):
        async with seqlab.open_sequencer(name="c") as seq:
            seq.submit_nowait(trio.sleep, 10)
            seq.submit_nowait(trio.sleep, 10)


async def convoy_scenario() -> None:
    async def handler(delivery: Any) -> None:
        if delivery.message == "bad":
            raise ValueError(f"cannot handle {delivery.message}")
        if delivery.message == "slow" and delivery.attempt == 1:
            await trio.sleep(10)

    async with seqlab.open_convoy(
        handler, consumers=2, max_attempts=2, lock_timeout=5, dedup_window=60, name="cv"
    ) as convoy:
        await convoy.send("a", "ok", dedup_id=1)
        await convoy.send("a", "ok", dedup_id=1)
        await convoy.send("a", "bad")
        await convoy.send("b", "slow")
        await convoy.join()


async def convoy_undelivered() -> None:
    async def handler(delivery: Any) -> None:
        await trio.sleep(10)

    with trio.move_on_after(1):
        async with seqlab.open_convoy(handler, consumers=1, name="cut") as convoy:
            for i in range(3):
                await convoy.send("k", i)
            await convoy.join()


async def sequences_scenario() -> None:
    s = seqlab.Sequence(name="s")
    barrier = seqlab.SequenceBarrier(s, name="sb")
    ring = seqlab.RingBuffer(2, name="r")
    consumer = seqlab.Sequence(name="reader")
    ring.add_gating(consumer)

    async def producer() -> None:
        for _ in range(4):
            seq = await ring.next()
            ring[seq] = seq
            ring.publish(seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(barrier.wait_for, 0)
        nursery.start_soon(producer)
        await trio.sleep(1)
        s.set(0)
        for n in range(4):
            await trio.sleep(1)
            consumer.set(n)


async def pipeline_scenario() -> None:
    pipe = seqlab.Pipeline(2, name="p")

    async def slow(event: Any, seq: int, end: bool) -> None:
        await trio.sleep(1)

    def picky(event: Any, seq: int, end: bool) -> None:
        if event == 3:
            raise ValueError("three")

    a = pipe.stage("a", slow)
    pipe.stage("b", picky, after=[a], on_error="skip")
    async with pipe.run() as publish:
        for i in range(6):
            await publish(i)


SCENARIOS: dict[str, Callable[[], Awaitable[None]]] = {
    "barrier": barrier_scenario,
    "barrier_deadlock": barrier_deadlock,
    "phaser": phaser_scenario,
    "sequencer": sequencer_scenario,
    "sequencer_cancel": sequencer_cancel,
    "convoy": convoy_scenario,
    "convoy_undelivered": convoy_undelivered,
    "sequences": sequences_scenario,
    "pipeline": pipeline_scenario,
}


def run_strict(fn: Callable[[], Awaitable[None]]) -> seqlab.Recorder:
    rec = seqlab.Recorder(strict=True)
    try:
        with pytest.warns() if fn is convoy_undelivered else _nothing():
            seqlab.run(fn, seed=3, recorder=rec)
    except seqlab.Deadlock:
        assert fn is barrier_deadlock
    return rec


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture(scope="module")
def emitted() -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    for fn in SCENARIOS.values():
        rec = run_strict(fn)  # strict: raises on an undeclared kind or key
        seen |= {(family(e.primitive), e.kind) for e in rec.events}
    # The controlled scheduler marks the decisive choices when it replays a schedule.
    from seqlab.examples.bank import checked_deposits

    failure = seqlab.explore(checked_deposits, 3, seeds=range(20)).failures[0]
    rec = seqlab.Recorder(strict=True)
    with pytest.raises(AssertionError):
        seqlab.run(checked_deposits, 3, schedule=failure.schedule, recorder=rec)
    seen |= {(family(e.primitive), e.kind) for e in rec.events}
    return seen


def unemitted(
    schema: dict[str, dict[str, Any]], emitted: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Declared kinds nothing emitted. Families sharing one declaration (a Dispatcher's
    ``done`` is a Sequencer's ``done``) count together."""
    return {
        (f, k)
        for f, kinds in schema.items()
        for k, decl in kinds.items()
        if (f, k) not in EMITTED_ELSEWHERE
        and not any((g, k) in emitted and schema[g].get(k) is decl for g in schema)
    }


def test_every_declared_kind_is_emitted_by_some_primitive(emitted: set[tuple[str, str]]) -> None:
    missing = unemitted(SCHEMA, emitted)
    assert not missing, f"declared but never emitted (delete them or emit them): {sorted(missing)}"
    # The check itself: a kind declared and emitted by nobody is caught.
    fake = {**SCHEMA, "Barrier": {**SCHEMA["Barrier"], "wobble": SCHEMA["Barrier"]["arrive"]}}
    fake["Barrier"]["wobble"] = type(SCHEMA["Barrier"]["arrive"])("made up")
    assert unemitted(fake, emitted) == {("Barrier", "wobble")}


def test_every_kind_emitted_is_declared(emitted: set[tuple[str, str]]) -> None:
    ours = {(f, k) for f, k in emitted if f in SCHEMA}
    assert all(declared(f, k) is not None for f, k in ours)


def test_views_read_only_kinds_that_something_emits(emitted: set[tuple[str, str]]) -> None:
    for view, pairs in READS.items():
        for fam, kind in pairs:
            assert declared(fam, kind) is not None, f"{view} reads undeclared {fam} {kind}"
            assert (fam, kind) in emitted, f"{view} reads {fam} {kind}, which nothing emits"


def _kinds_compared(tree: ast.AST) -> set[str]:
    """The string literals a piece of code compares with some ``.kind`` (==, !=, in)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Attribute) and side.attr == "kind" for side in sides):
                for side in sides:
                    for leaf in ast.walk(side):
                        if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                            found.add(leaf.value)
    return found


def test_lesson_checks_read_only_declared_kinds() -> None:
    """A trace rule or hidden check that reads a kind nothing declares (a typo, a renamed
    kind) would judge every trace alike: the lessons' code cells may read only declared kinds."""
    import nbformat

    known = {kind for kinds in SCHEMA.values() for kind in kinds}
    lessons = sorted((Path(__file__).parent.parent / "lessons").glob("*.ipynb"))
    assert len(lessons) == 6
    read = set()
    for path in lessons:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            python = "\n".join(
                line for line in cell.source.splitlines() if not line.startswith(("%", "!"))
            )
            try:
                tree = ast.parse(python)
            except SyntaxError:  # a cell the lesson shows failing on purpose
                continue
            for kind in _kinds_compared(tree):
                assert kind in known, f"{path.name} reads the undeclared kind {kind!r}"
                read.add(kind)
    # The rules do read the trace: the walk found the kinds they compare.
    assert {"submit", "start", "block", "wake", "arrive", "deliver"} <= read


def test_kinds_compared_finds_a_misspelt_kind() -> None:
    tree = ast.parse("ok = [e for e in trace.events if e.kind in ('arrive', 'arived')]")
    assert _kinds_compared(tree) == {"arrive", "arived"}
    assert "arived" not in {kind for kinds in SCHEMA.values() for kind in kinds}


def test_strict_recorder_rejects_an_undeclared_kind_or_key() -> None:
    async def bad_kind() -> None:
        seqlab.emit("Barrier 'x'", "arived", generation=0)

    async def bad_key() -> None:
        seqlab.emit("Barrier 'x'", "arrive", generation=0, partys=3)

    for fn, word in ((bad_kind, "arived"), (bad_key, "partys")):
        with pytest.raises(UndeclaredEventError, match=word):
            seqlab.run(fn, seed=0, recorder=seqlab.Recorder(strict=True))
    # The same events are recorded as they are without strict (no cost on the hot path).
    rec = seqlab.Recorder()
    seqlab.run(bad_kind, seed=0, recorder=rec)
    assert [e.kind for e in rec.events if e.primitive != "task"] == ["arived"]


def test_user_families_are_free_form_and_the_scheduler_kind_is_declared() -> None:
    check_event("bank", "anything", {"whatever": 1})
    check_event("scheduler", "decision", {"index": 1, "text": "hold worker-1 back"})
    with pytest.raises(UndeclaredEventError):
        check_event("scheduler", "decision", {"index": 1, "why": "?"})


def test_every_declaration_documents_its_keys() -> None:
    for fam, kinds in SCHEMA.items():
        for kind, decl in kinds.items():
            assert decl.doc, (fam, kind)
            assert all(isinstance(v, str) and v for v in decl.keys.values()), (fam, kind)


def test_exit_outcomes_block_wake_and_deadlock_events() -> None:
    async def main() -> None:
        lock = trio.Lock()

        async def holder() -> None:
            async with lock:
                await trio.sleep(2)

        async def taker() -> None:
            await trio.sleep(1)
            async with lock:
                pass

        async def boom() -> None:
            raise KeyError("missing")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder, name="holder")
            nursery.start_soon(taker, name="taker")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(boom, name="boom")
        except BaseException:
            pass
        with trio.move_on_after(1):
            await trio.sleep_forever()
        await barrier_deadlock()

    rec = seqlab.Recorder(strict=True)
    with pytest.raises(seqlab.Deadlock):
        seqlab.run(main, seed=1, recorder=rec)
    by_task: dict[str, list[Any]] = {}
    for e in rec.events:
        by_task.setdefault(e.task, []).append(e)
    exits = {t: dict(es[-1].data) for t, es in by_task.items() if es[-1].kind == "exit"}
    assert exits["holder"] == {"outcome": "returned"}
    assert exits["boom"] == {"outcome": "raised", "error": "KeyError: 'missing'"}
    assert exits["wait"] == {"outcome": "cancelled"}  # Barrier.wait tasks, cancelled by deadlock
    blocks = [(e.task, dict(e.data)) for e in rec.events if e.kind == "block"]
    assert ("taker", {"what": "on trio.Lock held by holder", "on": "trio.Lock"}) in blocks
    wake = next(e for e in by_task["taker"] if e.kind == "wake" and e.time == 2.0)
    assert wake.data["by"] == "holder"
    assert math.isclose(wake.data["waited"], 1.0)
    dead = [(e.task, e.data["waits_on"]) for e in rec.events if e.kind == "deadlock"]
    assert ("wait", "at Barrier 'stuck' (2 of 3 arrived)") in dead
    assert all(e.primitive == "runtime" for e in rec.events if e.kind == "deadlock")


def test_waits_option_decides_whether_blocks_are_traced() -> None:
    async def main() -> None:
        await trio.sleep(1)

    quiet = seqlab.Recorder(waits=False)
    seqlab.run(main, seed=0, recorder=quiet)
    assert [e.kind for e in quiet.events] == ["spawn", "exit"]

    async def plain() -> list[str]:
        default, full = seqlab.Recorder(), seqlab.Recorder(waits=True)
        with seqlab.recording(default):
            await trio.sleep(1)
        with seqlab.recording(full):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 1)
        return [e.kind for e in default.events] + ["|"] + [e.kind for e in full.events]

    kinds = trio.run(plain)
    # recording() in a plain trio run: no blocks unless asked for.
    assert kinds[: kinds.index("|")] == []
    assert "block" in kinds and "wake" in kinds
    with pytest.raises(TypeError, match="waits"):
        seqlab.Recorder(waits="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strict"):
        seqlab.Recorder(strict=1)  # type: ignore[arg-type]
