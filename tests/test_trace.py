import gc
import json
import tracemalloc
from collections.abc import Sequence
from types import MappingProxyType

import pytest
import trio
import trio.testing

import seqlab
from seqlab.trace import TraceEvent, current_recorder


async def ping_pong() -> None:
    async def player(name: str, send, receive) -> None:
        for rally in range(2):
            if name == "ping":
                await send.send(rally)
                seqlab.emit("ball", "hit", rally=rally)
                await receive.receive()
            else:
                value = await receive.receive()
                seqlab.emit("ball", "return", rally=value)
                await send.send(value)

    a_send, a_recv = trio.open_memory_channel(0)
    b_send, b_recv = trio.open_memory_channel(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(player, "ping", a_send, b_recv, name="ping")
        nursery.start_soon(player, "pong", b_send, a_recv, name="pong")


def test_events_carry_time_task_primitive_kind_data():
    async def main():
        await trio.sleep(2)
        seqlab.emit("Gate 'g'", "open", who="me", count=3)

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    opened = [e for e in rec.events if e.kind == "open"]
    assert opened == [TraceEvent(2.0, "main", "Gate 'g'", "open", {"who": "me", "count": 3})]
    assert [e.kind for e in rec.events] == ["spawn", "block", "wake", "open", "exit"]
    assert rec.events[1].data == {"what": "in trio.sleep until 2.000", "on": "sleep"}
    assert rec.events[2].data == {"waited": 2.0, "by": "timer"}
    assert rec.events[-1].data == {"outcome": "returned"}


def test_to_text_is_aligned_and_stable():
    rec = seqlab.Recorder()
    seqlab.run(ping_pong, seed=11, recorder=rec)
    lines = rec.to_text().splitlines()
    assert len(lines) == len(rec.events)
    # Columns line up: every line's kind column starts at the same offset.
    offsets = {
        line.index(e.kind, len(f"{e.time:.3f}") + 2 + len(e.task))
        for line, e in zip(lines, rec.events)
    }
    assert len(offsets) == 1
    assert "0x" not in rec.to_text()
    again = seqlab.Recorder()
    seqlab.run(ping_pong, seed=11, recorder=again)
    assert again.to_text() == rec.to_text()


def test_text_strips_addresses_and_quotes_spaces():
    class Thing:
        pass

    async def main():
        seqlab.emit("x", "y", obj=Thing(), text="two words", f=0.5)

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    line = rec.to_text().splitlines()[1]
    assert " at 0x" not in line
    assert "text='two words'" in line and "f=0.500" in line


def test_to_json_round_trips():
    rec = seqlab.Recorder()
    seqlab.run(ping_pong, seed=3, recorder=rec)
    data = json.loads(rec.to_json())
    assert len(data) == len(rec.events)
    assert data[0] == {
        "time": 0.0,
        "task": "ping_pong",
        "primitive": "task",
        "kind": "spawn",
        "data": {},
    }
    assert {d["task"] for d in data} == {"ping_pong", "ping", "pong"}


def test_duplicate_task_names_are_numbered():
    async def main():
        async def worker():
            seqlab.emit("w", "go")
            await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(worker)

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    assert {e.task for e in rec.events if e.kind == "go"} == {"worker", "worker#2", "worker#3"}


def test_recording_inside_a_run_traces_only_the_block():
    async def main():
        seqlab.emit("x", "before")
        rec = seqlab.Recorder()
        with seqlab.recording(rec):
            assert current_recorder() is rec
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 1, name="sleeper")
            seqlab.emit("x", "inside")
        seqlab.emit("x", "after")
        assert current_recorder() is None
        return rec

    rec = seqlab.run(main, seed=0)
    assert [(e.task, e.kind) for e in rec.events] == [
        ("sleeper", "spawn"),
        ("sleeper", "exit"),
        ("main", "inside"),
    ]
    assert rec.events[-1].time == 1.0


def test_subscribers_see_every_event():
    rec = seqlab.Recorder()
    seen = []
    rec.subscribe(seen.append)
    seqlab.run(ping_pong, seed=1, recorder=rec)
    assert seen == rec.events
    rec.unsubscribe(seen.append)


def test_recording_rejects_non_recorder():
    with pytest.raises(TypeError, match="recorder must be a seqlab.Recorder"):
        with seqlab.recording("nope"):
            pass


def test_emit_without_recorder_is_a_no_op():
    async def main():
        seqlab.emit("x", "y", a=1)
        return current_recorder()

    assert seqlab.run(main, seed=0) is None


def test_recording_the_active_recorder_again_records_lifecycle_once():
    async def spawn_one(name: str) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 1, name=name)

    async def main():
        rec = current_recorder()
        assert rec is not None
        with seqlab.recording(rec):  # already active through seqlab.run
            with seqlab.recording(rec):
                await spawn_one("inner")
            await spawn_one("middle")
        await spawn_one("outer")  # the run's own recording still sees spawns

    rec = seqlab.Recorder(waits=False)
    seqlab.run(main, seed=0, recorder=rec)
    assert [(e.task, e.kind) for e in rec.events] == [
        ("main", "spawn"),
        ("inner", "spawn"),
        ("inner", "exit"),
        ("middle", "spawn"),
        ("middle", "exit"),
        ("outer", "spawn"),
        ("outer", "exit"),
        ("main", "exit"),
    ]
    assert rec._lifecycle_users == 0


def test_nested_recordings_inside_a_plain_trio_run():
    rec = seqlab.Recorder()

    async def main():
        with seqlab.recording(rec):
            with seqlab.recording(rec):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep, 1, name="a")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 1, name="b")
        async with trio.open_nursery() as nursery:  # no longer recording
            nursery.start_soon(trio.sleep, 1, name="c")

    trio.run(main)
    assert [(e.task, e.kind) for e in rec.events] == [
        ("a", "spawn"),
        ("a", "exit"),
        ("b", "spawn"),
        ("b", "exit"),
    ]


def test_sets_are_rendered_in_a_stable_order():
    # A set of strings iterates in an order that changes with the process's hash seed.
    async def main():
        seqlab.emit(
            "x", "y", names={"pear", "apple", "fig"}, empty=set(), mixed=frozenset({2, "a"})
        )

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    line = rec.to_text().splitlines()[1]
    assert "names={'apple', 'fig', 'pear'} empty=set() mixed={2, 'a'}" in line
    data = json.loads(rec.to_json())[1]["data"]
    assert data == {"names": ["apple", "fig", "pear"], "empty": [], "mixed": [2, "a"]}


async def _named_worker() -> None:
    seqlab.emit("w", "go")


def test_task_labels_keep_hand_given_names():
    # Only trio's default name ("module.qualname") is shortened to the function's name; a
    # name that merely ends with the function's name is the user's and stays as given.
    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_named_worker)
            nursery.start_soon(_named_worker, name="co_named_worker")
            nursery.start_soon(_named_worker, name="_named_worker")

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    labels = sorted(e.task for e in rec.events if e.kind == "go")
    assert labels == ["_named_worker", "_named_worker#2", "co_named_worker"]


def test_a_failing_listener_is_dropped_with_a_warning_and_the_run_goes_on():
    async def main():
        barrier = seqlab.Barrier(3)
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(barrier.wait, name=f"w{i}")
        return barrier.generation

    rec = seqlab.Recorder()
    calls = []

    def broken(event):
        calls.append(event)
        raise ValueError("view went away")

    rec.subscribe(broken)
    with pytest.warns(RuntimeWarning, match="view went away"):
        assert seqlab.run(main, seed=0, recorder=rec) == 1
    assert len(calls) == 1
    assert sum(e.kind == "release" for e in rec.events) == 3


def test_events_is_a_live_read_only_view_not_a_copy():
    rec = seqlab.Recorder()

    async def main():
        with seqlab.recording(rec):
            seqlab.emit("x", "first", n=1)
            view = rec.events
            assert len(view) == 1 and view[-1].kind == "first"
            seqlab.emit("x", "second", n=2)
            # The same view follows the recording.
            assert len(view) == 2 and view[-1].data == {"n": 2}
            assert view is rec.events

    trio.run(main)
    view = rec.events
    assert isinstance(view, Sequence) and not isinstance(view, list)
    assert not hasattr(view, "append") and not hasattr(view, "__setitem__")
    with pytest.raises(TypeError):
        view[0] = view[1]  # type: ignore[index]
    assert [e.kind for e in view] == ["first", "second"]
    assert view[0] == view[-2] and view[1:] == [view[1]]
    assert view == list(view) and list(view) == view
    with pytest.raises(IndexError, match="out of range"):
        view[2]
    with pytest.raises(TypeError, match="integers or slices"):
        view["0"]  # type: ignore[call-overload]


def test_reading_events_twice_gives_equal_events_and_fresh_data_dicts():
    rec = seqlab.Recorder()
    seqlab.run(ping_pong, seed=2, recorder=rec)
    first, again = list(rec.events), list(rec.events)
    assert first == again
    first[1].data["scribble"] = True  # a reader's change stays with the reader
    assert "scribble" not in rec.events[1].data


def test_many_events_keep_order_time_and_data_across_storage_batches():
    """record() (with any mapping) and record_fields() interleave over many batches."""
    rec = seqlab.Recorder()
    n = 3000
    odd_keys = ("i", "half")

    async def main():
        task = trio.lowlevel.current_task()
        with seqlab.recording(rec):
            for i in range(n):
                if i % 3 == 0:
                    rec.record(task, "p", "dict", {"i": i, "s": str(i)})
                elif i % 3 == 1:
                    rec.record_fields(task, "p", "fields", odd_keys, (i, i / 2))
                else:
                    rec.record(task, "p", "proxy", MappingProxyType({"i": i}))
                if i % 500 == 0:
                    await trio.lowlevel.checkpoint()

    seqlab.run(main, seed=0, recorder=None)
    events = [e for e in rec.events if e.primitive == "p"]
    assert len(events) == n
    for i, e in enumerate(events):
        assert e.data["i"] == i
        assert e.kind == ("dict", "fields", "proxy")[i % 3]
        if i % 3 == 0:
            assert e.data == {"i": i, "s": str(i)}
        elif i % 3 == 1:
            assert e.data == {"i": i, "half": i / 2}
        else:
            assert e.data == {"i": i}
    assert [e.time for e in rec.events] == sorted(e.time for e in rec.events)
    # Random access agrees with iteration, also for events in the middle of a batch.
    everything = list(rec.events)
    for index in (0, 1, 511, 512, 513, 1700, len(everything) - 1):
        assert rec.events[index] == everything[index]


def test_record_fields_rejects_keys_and_values_of_different_lengths():
    rec = seqlab.Recorder()

    async def main():
        task = trio.lowlevel.current_task()
        rec.record_fields(task, "p", "good", ("a",), (1,))
        with pytest.raises(ValueError, match=r"keys \('a', 'b'\) and values \(1,\) differ"):
            rec.record_fields(task, "p", "bad", ("a", "b"), (1,))
        with pytest.raises(ValueError, match="every row must have 1 values"):
            rec.record_many([task, task], "p", "bad rows", ("a",), [(1,), (2, 3)])
        rec.record(task, "p", "also good", {"b": 2})

    trio.run(main)
    # The malformed events are refused; the others are kept, in order.
    assert [(e.kind, e.data) for e in rec.events] == [("good", {"a": 1}), ("also good", {"b": 2})]


def _memory_of_trace(main, rec):
    """Run ``main(rec)`` under tracemalloc, then read the whole trace. Returns the events,
    the bytes the recorder frees when it goes, and the bytes reading it left behind."""
    gc.collect()
    tracemalloc.start()
    try:
        trio.run(main, rec)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        count = len(rec)
        rec.events[-1]  # reading does not build a copy of the events
        assert sum(1 for _ in rec.events) == count
        gc.collect()
        after_reading = tracemalloc.get_traced_memory()[0]
        del rec
        gc.collect()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return count, freed, after_reading - held


@pytest.mark.parametrize("parties", [2, 5, 16, 100])
def test_a_recorded_event_costs_at_most_120_bytes(parties):
    """The trace of a barrier (20,000 events) keeps under 120 bytes an event, for groups
    small and large (a few events staged at once must not cost a chunk of storage each);
    the events used to be kept as dicts, at about 280 bytes each."""

    async def main(rec):
        barrier = seqlab.Barrier(parties)

        async def party():
            for _ in range(10_000 // parties):
                await barrier.wait()

        with seqlab.recording(rec):
            async with trio.open_nursery() as nursery:
                for _ in range(parties):
                    nursery.start_soon(party)

    count, freed, read = _memory_of_trace(main, seqlab.Recorder())
    assert count >= 20_000
    assert freed / count <= 120
    assert read / count <= 10  # at most an offset per event


def test_a_trace_read_after_every_event_keeps_little_per_event():
    """Reading stages what was recorded one by one; that must not cost storage per read."""

    async def main(rec):
        with seqlab.recording(rec):
            for i in range(5000):
                seqlab.emit("lab", "go", i=i)
                assert rec.events[-1].data == {"i": i}

    count, freed, _ = _memory_of_trace(main, seqlab.Recorder())
    assert count >= 5000
    assert freed / count < 150


def test_record_many_records_one_event_per_task_at_one_instant():
    rec = seqlab.Recorder()
    seen = []
    rec.subscribe(seen.append)

    async def main():
        async def sleeper():
            await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(sleeper, name="w")
            await trio.testing.wait_all_tasks_blocked()
            tasks = list(nursery.child_tasks)
            keys = ("generation", "index")
            rec.record_many(tasks, "B", "release", keys, [(0, i) for i in range(3)])
            with pytest.raises(ValueError, match="3 tasks but 2 rows"):
                rec.record_many(tasks, "B", "release", keys, [(0, 0), (0, 1)])

    seqlab.run(main, seed=0, recorder=rec)
    released = [e for e in rec.events if e.kind == "release"]
    assert [e.data for e in released] == [{"generation": 0, "index": i} for i in range(3)]
    assert len({e.time for e in released}) == 1
    assert sorted(e.task for e in released) == ["w", "w#2", "w#3"]
    assert [e for e in seen if e.kind == "release"] == released


# --------------------------------------------------------------------- the add() hot path

_GO = seqlab.trace.shape("bank", "go", ("amount", "who"))


def test_shape_is_checked_against_the_schema_where_it_is_made():
    arrive = seqlab.trace.shape("Barrier", "arrive", ("generation", "index"))
    assert (arrive.kind, arrive.keys, arrive.size) == ("arrive", ("generation", "index"), 2)
    with pytest.raises(seqlab.trace_schema.UndeclaredEventError, match="arived"):
        seqlab.trace.shape("Barrier", "arived", ("generation",))
    with pytest.raises(seqlab.trace_schema.UndeclaredEventError, match="partys"):
        seqlab.trace.shape("Barrier", "arrive", ("partys",))
    with pytest.raises(TypeError, match="keys must be a tuple of str"):
        seqlab.trace.shape("bank", "go", ["amount"])
    with pytest.raises(ValueError, match="kind must be a non-empty str"):
        seqlab.trace.shape("bank", "")
    assert seqlab.trace.shape("bank", "anything", ("x",)).family == "bank"  # free-form family


def test_add_records_an_event_at_the_time_it_is_given():
    rec = seqlab.Recorder()

    async def main():
        task = trio.lowlevel.current_task()
        await trio.sleep(1)
        rec.add(rec.clock(), task, "bank", _GO, 5, "ann")
        t = rec.clock()
        await trio.sleep(2)
        rec.add(t, task, "bank", _GO, 7, "bob")  # a reading taken earlier

    seqlab.run(main, seed=0, recorder=rec)
    gos = [e for e in rec.events if e.kind == "go"]
    assert [(e.time, e.primitive, e.data) for e in gos] == [
        (1.0, "bank", {"amount": 5, "who": "ann"}),
        (1.0, "bank", {"amount": 7, "who": "bob"}),
    ]


def test_add_refuses_values_that_do_not_match_the_shape_and_records_nothing():
    rec = seqlab.Recorder()
    seen = []
    rec.subscribe(seen.append)

    async def main():
        task = trio.lowlevel.current_task()
        with pytest.raises(
            ValueError, match=r"go events carry 2 values \('amount', 'who'\), got 1"
        ):
            rec.add(rec.clock(), task, "bank", _GO, 5)
        with pytest.raises(ValueError, match="got 3"):
            rec.add(rec.clock(), task, "bank", _GO, 5, "ann", "extra")
        with pytest.raises(TypeError, match="shape must be a seqlab.trace.Shape"):
            rec.add(rec.clock(), task, "bank", ("go", ("amount", "who"), 2, 2), 5, "ann")
        rec.add(rec.clock(), task, "bank", _GO, 1, "ok")

    trio.run(main)
    assert [(e.kind, e.data) for e in rec.events] == [("go", {"amount": 1, "who": "ok"})]
    assert seen == list(rec.events)


def test_strict_add_checks_the_primitive_family_too():
    # A shape made for one family and used for a declared one breaks the schema there.
    stray = seqlab.trace.shape("bank", "arrive", ("partys",))
    rec = seqlab.Recorder(strict=True)

    async def main():
        task = trio.lowlevel.current_task()
        with pytest.raises(seqlab.trace_schema.UndeclaredEventError, match="partys"):
            rec.add(rec.clock(), task, "Barrier 'b'", stray, 4)
        rec.add(rec.clock(), task, "bank", stray, 4)  # its own family is free-form

    trio.run(main)
    assert [e.primitive for e in rec.events] == ["bank"]


def test_add_many_assembles_one_event_per_task_from_columns():
    from itertools import count, repeat

    rec = seqlab.Recorder()
    seen = []
    rec.subscribe(seen.append)
    release = seqlab.trace.shape("Barrier", "release", ("generation", "index", "waited", "by"))

    async def main():
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(trio.sleep, 1, name="w")
            await trio.testing.wait_all_tasks_blocked()
            tasks = list(nursery.child_tasks)
            now = rec.clock()
            waited = [0.5, 0.25, 0.0]
            rec.add_many(
                now, tasks, "Barrier 'b'", release, repeat(7), count(), waited, repeat("x")
            )
            with pytest.raises(ValueError, match="column of release is shorter"):
                rec.add_many(
                    now, tasks, "Barrier 'b'", release, repeat(7), count(), [1.0], repeat("x")
                )
            with pytest.raises(ValueError, match="carry 4 values"):
                rec.add_many(now, tasks, "Barrier 'b'", release, repeat(7), count())

    seqlab.run(main, seed=0, recorder=rec)
    released = [e for e in rec.events if e.kind == "release"]
    assert [e.data for e in released] == [
        {"generation": 7, "index": i, "waited": w, "by": "x"}
        for i, w in enumerate([0.5, 0.25, 0.0])
    ]
    assert len({e.time for e in released}) == 1
    assert sorted(e.task for e in released) == ["w", "w#2", "w#3"]
    assert [e for e in seen if e.kind == "release"] == released


# --------------------------------------------------------------------------- task labels


def test_a_recorder_keeps_no_task_alive():
    """Labels are kept per live task: once a traced task is gone, the recorder holds nothing
    of it (it used to keep every task it had labelled for its whole life)."""
    import weakref

    rec = seqlab.Recorder()
    refs = []

    async def worker():
        refs.append(weakref.ref(trio.lowlevel.current_task()))
        seqlab.emit("w", "go")
        await trio.sleep(0)

    async def main():
        with seqlab.recording(rec):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(worker)

    trio.run(main)
    gc.collect()
    assert len(refs) == 50
    assert all(r() is None for r in refs)
    assert len([e for e in rec.events if e.kind == "go"]) == 50
    assert rec._labels == {}
    # The names stay taken: the workers of a second run are worker#51 .. worker#100.
    trio.run(main)
    second = {e.task for e in list(rec.events)[len(rec.events) // 2 :] if e.kind == "go"}
    assert second == {f"worker#{i}" for i in range(51, 101)}


def test_a_live_task_keeps_its_label_across_recordings():
    rec = seqlab.Recorder()

    async def main():
        for _ in range(2):
            with seqlab.recording(rec):
                seqlab.emit("w", "go")
            await trio.sleep(0)

    trio.run(main)
    assert [e.task for e in rec.events if e.kind == "go"] == ["main", "main"]


def test_tasks_are_labelled_in_the_order_they_first_appear():
    # Labels are looked up when the staged events are packed; asking for a label first
    # must not let a later task take the plain name.
    rec = seqlab.Recorder()

    async def main():
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(trio.sleep_forever, name="w")
            await trio.testing.wait_all_tasks_blocked()
            first, second = sorted(nursery.child_tasks, key=lambda t: t.name)[:2]
            with seqlab.recording(rec):
                rec.add(rec.clock(), first, "bank", _GO, 1, "a")
                assert rec.label(second) == "w#2"
                assert rec.label(first) == "w"
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert [e.task for e in rec.events if e.kind == "go"] == ["w"]


def test_a_hand_given_name_survives_when_the_label_is_taken_after_the_task_ended():
    # The task's name is read when it is spawned: once it has finished, its coroutine no
    # longer tells its module, and "pool._named_worker" would pass for trio's default name.
    rec = seqlab.Recorder()

    async def main():
        with seqlab.recording(rec):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_named_worker, name="pool._named_worker")

    trio.run(main)
    assert [e.task for e in rec.events if e.kind == "go"] == ["pool._named_worker"]
