import functools
import socket
import threading
import time

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio._core import _run as trio_run

import seqlab
from seqlab.examples.bank import checked_deposits, deposits
from seqlab.runtime import check_trio_hooks


async def three_workers() -> None:
    async def worker(i: int) -> None:
        for step in range(3):
            seqlab.emit("work", "step", worker=i, step=step)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(worker, i, name=f"worker-{i}")


def trace_of(fn, seed, *args):
    rec = seqlab.Recorder()
    seqlab.run(fn, *args, seed=seed, recorder=rec)
    return rec.to_text()


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_trace():
    first = trace_of(three_workers, 42)
    second = trace_of(three_workers, 42)
    assert first == second
    assert first.count(" step ") == 9


def test_seeds_give_different_interleavings():
    traces = {trace_of(three_workers, seed) for seed in range(20)}
    assert len(traces) >= 2


def test_seed_none_is_reported_and_replays():
    rec = seqlab.Recorder()
    seqlab.run(three_workers, recorder=rec)
    assert isinstance(rec.seed, int)
    assert seqlab.last_seed() == rec.seed
    assert trace_of(three_workers, rec.seed) == rec.to_text()


def test_current_seed_inside_run():
    async def main():
        return seqlab.current_seed()

    assert seqlab.run(main, seed=99) == 99
    with pytest.raises(RuntimeError, match="inside seqlab.run"):
        seqlab.current_seed()


def test_returns_result_and_passes_args():
    async def add(a, b):
        await trio.lowlevel.checkpoint()
        return a + b

    assert seqlab.run(add, 2, 3, seed=0) == 5
    assert seqlab.run(functools.partial(add, 2), 5, seed=0) == 7


def test_exception_propagates_bare_with_seed_note():
    async def boom():
        await trio.lowlevel.checkpoint()
        raise KeyError("boom")

    with pytest.raises(KeyError) as info:
        seqlab.run(boom, seed=5)
    assert any("seed=5" in note for note in getattr(info.value, "__notes__", []))


# ---------------------------------------------------------------- virtual time


def test_virtual_sleep_returns_at_once():
    async def main():
        await trio.sleep(3600)
        return trio.current_time()

    start = time.perf_counter()
    now = seqlab.run(main, seed=1)
    assert time.perf_counter() - start < 1.0
    assert now >= 3600


def test_virtual_time_orders_timers_exactly():
    async def main():
        woke = []

        async def sleeper(delay):
            await trio.sleep(delay)
            woke.append((delay, trio.current_time()))

        async with trio.open_nursery() as nursery:
            for delay in (30, 10, 20):
                nursery.start_soon(sleeper, delay)
        return woke

    assert seqlab.run(main, seed=3) == [(10, 10.0), (20, 20.0), (30, 30.0)]


def test_real_time_mode_uses_the_real_clock():
    async def main():
        start = trio.current_time()
        await trio.sleep(0.02)
        return trio.current_time() - start

    assert seqlab.run(main, seed=1, virtual_time=False) >= 0.02


def test_thread_work_is_activity_not_deadlock():
    async def main():
        return await trio.to_thread.run_sync(lambda: time.sleep(0.05) or "done")

    assert seqlab.run(main, seed=1) == "done"


def test_io_wait_is_activity_not_deadlock():
    async def main():
        raw_a, b = socket.socketpair()
        a = trio.socket.from_stdlib_socket(raw_a)
        with a, b:

            def later():
                time.sleep(0.05)
                b.send(b"x")

            threading.Thread(target=later).start()
            return await a.recv(1)

    assert seqlab.run(main, seed=1) == b"x"


# ---------------------------------------------------------------- deadlock


def test_deadlock_names_blocked_tasks():
    async def main():
        never = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(never.wait, name=f"worker-{i}")

    start = time.perf_counter()
    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=1)
    assert time.perf_counter() - start < 1.0
    names = [t.name for t in info.value.tasks]
    assert names[:3] == ["worker-0", "worker-1", "worker-2"]
    for i in range(3):
        assert f"worker-{i} waits on trio.Event" in str(info.value)
    assert "main waits for its child tasks to finish" in str(info.value)


def test_deadlock_after_timers_reports_virtual_time():
    async def main():
        await trio.sleep(5)
        await trio.Event().wait()

    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=1)
    assert info.value.time == 5.0
    assert "t=5.000" in str(info.value)


def test_deadlock_in_shielded_wait_still_ends():
    async def main():
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()

    with pytest.raises(seqlab.Deadlock, match="main waits in trio.sleep_forever"):
        seqlab.run(main, seed=1)


def test_primitive_describes_its_wait():
    class Gate:
        def __init__(self):
            self._event = trio.Event()

        def _describe_wait(self):
            return "Gate 'front' (closed)"

        async def pass_through(self):
            await self._event.wait()

    async def main():
        await Gate().pass_through()

    with pytest.raises(seqlab.Deadlock, match=r"main waits at Gate 'front' \(closed\)"):
        seqlab.run(main, seed=1)


def test_deadlock_is_a_failure_in_explore():
    async def main():
        await trio.Event().wait()

    result = seqlab.explore(main, seeds=range(3))
    assert result.runs == 3
    assert [type(f.error) for f in result.failures] == [seqlab.Deadlock] * 3


# ---------------------------------------------------------------- explore


def test_explore_finds_lost_update_and_seed_replays():
    result = seqlab.explore(checked_deposits, seeds=range(50))
    assert not result.ok
    assert result.runs == 50
    assert 0 < len(result.failures) < 50, "the race should depend on the schedule"
    failure = result.failures[0]
    assert isinstance(failure.error, AssertionError)
    assert "lost update" in str(result)
    assert str(failure.seed) in str(result)
    # explore's default strategy is "auto": replay by that strategy and the seed, or exactly
    # by the failure's schedule.
    with pytest.raises(AssertionError, match="lost update"):
        seqlab.run(checked_deposits, seed=failure.seed, strategy="auto")
    replay = seqlab.Recorder()
    with pytest.raises(AssertionError):
        seqlab.run(checked_deposits, schedule=failure.schedule, recorder=replay)
    assert replay.to_text() == failure.trace.to_text()


def test_explore_check_rejects_traces():
    def no_lost_write(rec):
        writes = [e.data["balance"] for e in rec.events if e.kind == "write"]
        return writes == sorted(set(writes))

    result = seqlab.explore(deposits, seeds=range(30), check=no_lost_write)
    assert result.failures
    assert all(f.error is None for f in result.failures)
    assert "check returned false" in str(result.failures[0])
    passing = seqlab.explore(deposits, 1, seeds=range(5), check=no_lost_write)
    assert passing.ok and passing.runs == 5


# ---------------------------------------------------------------- trio's hook and nesting


def test_trio_still_has_the_scheduling_hook():
    # If this fails after a trio upgrade, seqlab's determinism is gone: pin trio.
    check_trio_hooks()
    rng = trio_run._r
    if isinstance(rng, seqlab.runtime._ThreadRandom):
        rng = rng._fallback  # a run in progress elsewhere (a paused Stepper) keeps seqlab's proxy
    assert isinstance(rng, __import__("random").Random)
    assert hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING")
    assert hasattr(trio.lowlevel.Task, "iter_await_frames")
    assert hasattr(trio.testing.MockClock, "jump")


def test_flags_restored_after_run_and_after_error():
    before = (trio_run._r, trio_run._ALLOW_DETERMINISTIC_SCHEDULING)

    async def fail():
        raise ValueError("x")

    seqlab.run(three_workers, seed=1)
    assert (trio_run._r, trio_run._ALLOW_DETERMINISTIC_SCHEDULING) == before
    with pytest.raises(ValueError):
        seqlab.run(fail, seed=1)
    assert (trio_run._r, trio_run._ALLOW_DETERMINISTIC_SCHEDULING) == before


def test_run_inside_a_running_trio_loop_leaves_it_unaffected():
    async def outer():
        ticks = []

        async def ticker():
            for _ in range(3):
                ticks.append(trio.current_time())
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            text = trace_of(three_workers, 7)
            inner_time = seqlab.run(_sleep_and_report, seed=7)
        return text, inner_time, ticks, trio.current_time()

    text, inner_time, ticks, outer_now = trio.run(outer)
    assert text == trace_of(three_workers, 7)
    assert inner_time == 100.0
    assert len(ticks) == 3
    assert outer_now < 1_000_000  # the outer run kept its own real clock


async def _sleep_and_report():
    await trio.sleep(100)
    return trio.current_time()


# ---------------------------------------------------------------- bad arguments


def test_sync_function_is_rejected_naming_the_argument():
    def not_async():
        pass

    with pytest.raises(TypeError, match="async_fn must be an async function"):
        seqlab.run(not_async)
    with pytest.raises(TypeError, match="not a call"):
        seqlab.run(not_async, seed=1)
    with pytest.raises(TypeError, match="async_fn"):
        seqlab.explore(42)


def test_coroutine_object_is_rejected():
    coro = _sleep_and_report()
    try:
        with pytest.raises(TypeError, match="async_fn"):
            seqlab.run(coro)
    finally:
        coro.close()


@pytest.mark.parametrize("seed", ["1", 1.5, True, [1]])
def test_non_int_seed_is_rejected(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        seqlab.run(three_workers, seed=seed)


def test_bad_seeds_for_explore():
    with pytest.raises(ValueError, match="seeds is empty"):
        seqlab.explore(three_workers, seeds=range(0))
    with pytest.raises(TypeError, match="seeds must be an iterable"):
        seqlab.explore(three_workers, seeds=5)
    with pytest.raises(TypeError, match="each of seeds must be an int"):
        seqlab.explore(three_workers, seeds=[1, "2"])
    with pytest.raises(TypeError, match="check must be a callable"):
        seqlab.explore(three_workers, seeds=[1], check="yes")


def test_bad_recorder_and_virtual_time():
    with pytest.raises(TypeError, match="recorder must be a seqlab.Recorder"):
        seqlab.run(three_workers, recorder=[])
    with pytest.raises(TypeError, match="virtual_time"):
        seqlab.run(three_workers, virtual_time="yes")


def test_program_waiting_for_idleness_is_not_a_deadlock():
    async def main():
        from trio.testing import wait_all_tasks_blocked

        done = []

        async def worker():
            await trio.sleep(1)
            done.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            await wait_all_tasks_blocked()
            before = list(done)
            await wait_all_tasks_blocked(0.01)
        return before, done

    for seed in range(10):
        before, done = seqlab.run(main, seed=seed)
        assert before == [] and done == [1.0]


# ---------------------------------------------------------------- property: random programs

# A program is a list of tasks; each task is a list of steps: a sleep (in quarter seconds, so
# sums are exact in binary floating point) or a bare checkpoint (None).
_steps = st.lists(st.one_of(st.none(), st.integers(0, 12)), max_size=6)


def _random_program(tasks: list[list[int | None]]):
    async def program() -> tuple[float, dict[str, float]]:
        finished: dict[str, float] = {}

        async def task(name: str, steps: list[int | None]) -> None:
            for n, step in enumerate(steps):
                seqlab.emit("program", "step", n=n)
                if step is None:
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.sleep(step / 4)
            finished[name] = trio.current_time()

        async with trio.open_nursery() as nursery:
            for i, steps in enumerate(tasks):
                nursery.start_soon(task, f"t{i}", steps, name=f"t{i}")
        return trio.current_time(), finished

    return program


@settings(max_examples=50, deadline=None)
@given(tasks=st.lists(_steps, min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_property_random_programs_replay_exactly(tasks, seed):
    program = _random_program(tasks)
    first, again = seqlab.Recorder(), seqlab.Recorder()
    end, finished = seqlab.run(program, seed=seed, recorder=first)
    assert seqlab.run(program, seed=seed, recorder=again) == (end, finished)
    assert first.to_text() == again.to_text()
    assert first.to_json() == again.to_json()

    # Virtual time is exact: each task ends at the sum of its sleeps, the run at the largest.
    expected = {
        f"t{i}": sum(s for s in steps if s is not None) / 4 for i, steps in enumerate(tasks)
    }
    assert finished == expected
    assert end == max(expected.values())
    assert first.events[-1].time == end
    steps_traced = sum(len(steps) for steps in tasks)
    assert sum(e.kind == "step" for e in first.events) == steps_traced
    assert sum(e.kind == "spawn" for e in first.events) == len(tasks) + 1


def test_decorated_async_function_is_accepted():
    def logged(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            return fn(*args)

        return wrapper

    @logged
    async def main(x):
        await trio.sleep(1)
        return x * 2

    assert seqlab.run(main, 21, seed=0) == 42
