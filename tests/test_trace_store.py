"""How a Recorder keeps its events: chunks in the form the events came in (one by one, a
DeferredRun's rows, add_many's columns), read back by index, slice and iteration alike."""

from __future__ import annotations

import gc
import weakref
from itertools import count, islice, repeat
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab import Barrier, Recorder
from seqlab.trace import DeferredRun, Same, row_shape, shape

SHAPES = [shape("lab", f"k{n}", tuple("abcd"[:n])) for n in range(4)]
WIDTH = 3
ROW_SHAPES = [row_shape(s, WIDTH) for s in SHAPES]

# An operation: ("add", shape index), ("many", n, column forms), ("rows", n, shape index),
# ("read", how many events to read from an iterator started at the first event).
FORMS = ["same", "list", "tuple", "range", "iterable"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 3)),
        st.tuples(
            st.just("many"), st.integers(1, 40), st.lists(st.sampled_from(FORMS), max_size=3)
        ),
        st.tuples(st.just("rows"), st.integers(1, 40), st.integers(0, 3)),
        st.tuples(st.just("read"), st.integers(0, 60)),
    ),
    min_size=1,
    max_size=25,
)


def _column(form: str, values: list[Any]) -> Any:
    if form == "same":
        return Same(values[0])
    if form == "tuple":
        return tuple(values)
    if form == "range":
        return range(values[0], values[0] + len(values))
    if form == "iterable":
        return iter(values)
    return list(values)


def _replay(ops: list[tuple[Any, ...]]) -> tuple[Recorder, list[tuple[Any, ...]]]:
    """Record ``ops`` (from four tasks, in turn); return the recorder and, per event, what it
    must read back: (time on the recorder's clock, task label, primitive, kind, data).
    Iterators started by "read" operations are drained at the end: each that was not
    exhausted then must give every event, those recorded after it started included."""
    rec = Recorder(waits=False)
    expected: list[tuple[Any, ...]] = []
    serial = count(1000)
    readers: list[tuple[int, list[Any], Any]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(trio.sleep_forever, name=f"t{i}")
            await trio.testing.wait_all_tasks_blocked()
            tasks = list(nursery.child_tasks)
            labels = {task: rec.label(task) for task in tasks}
            run = DeferredRun(WIDTH)
            for step, op in enumerate(ops):
                task = tasks[step % 4]
                if op[0] == "read":
                    assert len(rec.events) == len(rec)
                    if len(rec):
                        assert rec.events[-1] == rec.events[len(rec) - 1]
                    reader = iter(rec.events)
                    readers.append((op[1], list(islice(reader, op[1])), reader))
                elif op[0] == "add":
                    made = SHAPES[op[1]]
                    values = [next(serial) for _ in made.keys]
                    t = rec.clock()
                    rec.add(t, task, "lab", made, *values)
                    expected.append(
                        (t, labels[task], "lab", made.kind, dict(zip(made.keys, values)))
                    )
                elif op[0] == "many":
                    n, forms = op[1], op[2]
                    made = SHAPES[len(forms)]
                    whose = [tasks[(step + i) % 4] for i in range(n)]
                    columns = []
                    for form in forms:
                        first = next(serial)
                        values = [first] * n if form == "same" else list(range(first, first + n))
                        columns.append(values)
                    t = rec.clock()
                    rec.add_many(
                        t, whose, "lab", made, *(_column(f, c) for f, c in zip(forms, columns))
                    )
                    for i, who in enumerate(whose):
                        data = {k: c[i] for k, c in zip(made.keys, columns)}
                        expected.append((t, labels[who], "lab", made.kind, data))
                else:
                    n, made = op[1], SHAPES[op[2]]
                    for _ in range(n):
                        values = [next(serial) for _ in made.keys]
                        padding = [None] * (WIDTH - len(values))
                        t = rec.clock()
                        push = run.push if rec._pending is run else run.into(rec)
                        push((t, task, "lab", ROW_SHAPES[op[2]], *values, *padding))
                        data = dict(zip(made.keys, values))
                        expected.append((t, labels[task], "lab", made.kind, data))
            nursery.cancel_scope.cancel()

    seqlab.run(main, recorder=rec, seed=0)
    everything = list(rec.events)
    for wanted, head, reader in readers:
        if len(head) < wanted:  # it read every event there was, and ended
            assert head == everything[: len(head)]
            assert list(reader) == []
        else:
            assert head + list(reader) == everything
    return rec, expected


@settings(max_examples=60, deadline=None)
@given(operations)
def test_events_read_back_as_recorded_whatever_form_they_were_kept_in(ops):
    rec, expected = _replay(ops)
    ours = [e for e in rec.events if e.primitive == "lab"]
    assert [(e.task, e.primitive, e.kind, e.data) for e in ours] == [x[1:] for x in expected]
    # Times: as recorded, measured from the recorder's time zero (the same for every event).
    zero = {round(x[0] - e.time, 6) for e, x in zip(ours, expected)}
    assert len(zero) == (1 if expected else 0)
    # Every way of reading gives the same events.
    events = list(rec.events)
    assert len(rec.events) == len(events) == len(rec)
    assert [rec.events[i] for i in range(len(events))] == events
    assert [rec.events[i - len(events)] for i in range(len(events))] == events
    assert rec.events[1::3] == events[1::3]
    assert rec.events[::-2] == events[::-2]
    with pytest.raises(IndexError):
        rec.events[len(events)]


def test_iterating_sees_the_events_recorded_meanwhile_across_chunks():
    rec = Recorder(waits=False)
    release = shape("Barrier", "release", ("generation", "index", "waited", "by"))
    made = SHAPES[1]
    seen: list[str] = []

    async def main() -> None:
        me = trio.lowlevel.current_task()
        rec.add(rec.clock(), me, "lab", made, 0)
        for event in rec.events:
            seen.append(event.kind)
            if len(seen) == 1:  # a chunk of columns, then events one by one after it
                many = [me] * 20
                rec.add_many(
                    rec.clock(),
                    many,
                    "Barrier 'b'",
                    release,
                    Same(0),
                    range(20),
                    repeat(0.0),
                    Same("x"),
                )
                rec.add(rec.clock(), me, "lab", made, 1)

    seqlab.run(main, recorder=rec, seed=0)
    assert seen.count("release") == 20
    assert seen.count("k1") == 2
    assert seen[-1] == "k1"


def test_add_many_keeps_sequences_as_given_and_reads_other_iterables():
    rec = Recorder(waits=False)
    release = shape("Barrier", "release", ("generation", "index", "waited", "by"))

    async def main() -> None:
        tasks = [trio.lowlevel.current_task()] * 20

        def many(*columns: Any, n: int = 20) -> None:
            rec.add_many(rec.clock(), tasks[:n], "Barrier 'b'", release, *columns)

        many(Same(3), range(20), [0.5] * 20, "abcdefghijklmnopqrst")
        with pytest.raises(ValueError, match="'waited' column of release is shorter"):
            many(Same(3), range(20), [0.0] * 19, Same("x"))
        with pytest.raises(ValueError, match="'index' column of release is shorter"):
            many(Same(3), iter(range(5)), [0.0] * 20, Same("x"))
        many([1, 1, 1], (0, 1, 2), [0.5] * 20, Same("y"), n=2)  # longer ones are cut

    seqlab.run(main, recorder=rec, seed=0)
    released = [e for e in rec.events if e.kind == "release"]
    assert len(released) == 22
    assert [e.data["by"] for e in released[:20]] == list("abcdefghijklmnopqrst")
    assert [e.data for e in released[20:]] == [
        {"generation": 1, "index": i, "waited": 0.5, "by": "y"} for i in range(2)
    ]


def test_a_barrier_keeps_no_finished_task_alive():
    """Kept park messages hold their tasks weakly, traced or not: a barrier that lives on
    keeps neither the tasks that waited at it nor (through their contexts) their traces."""
    barrier = Barrier(3)
    refs: list[weakref.ref[trio.lowlevel.Task]] = []

    async def party() -> None:
        refs.append(weakref.ref(trio.lowlevel.current_task()))
        for _ in range(3):
            await barrier.wait()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(party)

    async def traced(rec: Recorder) -> None:
        with seqlab.recording(rec):
            await main()

    trio.run(main)
    rec = Recorder()
    rec_ref = weakref.ref(rec)
    trio.run(traced, rec)
    del rec
    gc.collect()
    assert len(refs) == 6
    assert [r() for r in refs] == [None] * 6
    assert rec_ref() is None
    assert barrier.statistics().n_waiting == 0
