"""The controlled scheduler, its strategies, schedules as data, shrinking and coverage."""

from __future__ import annotations

import _thread
import concurrent.futures
import importlib.util
import inspect
import subprocess
import sys
import threading
import time

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio._core import _run as trio_run

import seqlab
from seqlab.examples.races import DELAY_RACES, LOCKSTEP_RACES
from seqlab.schedule import Schedule, ScheduleMismatch

RACES = LOCKSTEP_RACES + DELAY_RACES
STRATEGIES = ["auto", "lockstep", "random", "delay", "pct", "exhaustive"]


# --------------------------------------------------------------------------- trio's hook


def test_trio_runs_the_batch_list_it_hands_to_shuffle():
    """Pin the mechanism: under deterministic scheduling trio hands the batch list to
    ``_r.shuffle`` and then runs what that list holds, popping from its end. If a trio
    release changes this, controlled scheduling silently stops working: fail loudly here."""
    source = inspect.getsource(trio_run.unrolled_run)
    assert "batch = list(runner.runq)" in source
    assert "_r.shuffle(batch)" in source
    assert "task = batch.pop()" in source
    assert hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING")


def test_a_held_task_runs_in_a_later_batch():
    """Behaviour, not source: a task taken out of its batch and put back on the run queue
    takes its step later, after the others'."""
    log: list[str] = []

    async def step(name: str) -> None:
        await trio.sleep(0)
        log.append(name)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(step, "a", name="a")
            nursery.start_soon(step, "b", name="b")

    seqlab.run(main, schedule="s1:")
    assert log == ["a", "b"]  # lockstep: creation order
    seqlab.run(main, schedule="s1:H1.1x2")  # hold a (task 1) at step 1 for two steps
    assert log[2:] == ["b", "a"]


def test_holding_never_moves_virtual_time_or_declares_deadlock():
    async def main() -> tuple[float, float]:
        times: dict[str, float] = {}

        async def sleeper() -> None:
            await trio.sleep(5)
            times["sleeper"] = trio.current_time()

        async def spinner() -> None:
            for _ in range(3):
                await trio.sleep(0)
            times["spinner"] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, name="sleeper")
            nursery.start_soon(spinner, name="spinner")
        return times["spinner"], times["sleeper"]

    # spinner (task 2) is held until nothing else can run: the sleeper's timer must not fire
    # meanwhile, so the spinner still finishes at virtual time 0.
    assert seqlab.run(main, schedule="s1:H1.2*") == (0.0, 5.0)


# --------------------------------------------------------------------------- the race suite


@pytest.mark.parametrize("race", RACES, ids=lambda f: f.__name__)
def test_default_strategy_finds_every_race_within_100_runs(race):
    result = seqlab.explore(race, seeds=range(100))
    assert not result.ok, f"{race.__name__}: {result}"
    assert result.strategy == "auto"


@pytest.mark.parametrize("race", DELAY_RACES, ids=lambda f: f.__name__)
def test_random_orders_never_find_a_delay_race(race):
    # This is why strategies matter: no order of lockstep batches shows these races.
    result = seqlab.explore(race, seeds=range(100), strategy="random")
    assert result.ok, result
    assert result.runs == 100


@pytest.mark.parametrize("race", RACES, ids=lambda f: f.__name__)
def test_exhaustive_with_bound_2_finds_every_race_and_finishes(race):
    result = seqlab.explore(race, seeds=range(2000), strategy="exhaustive", bound=2)
    assert result.failures
    assert result.complete is True


def test_exhaustive_says_a_small_correct_program_was_covered_completely():
    async def careful() -> None:
        lock = trio.Lock()
        account = {"balance": 0}

        async def teller() -> None:
            async with lock:
                seen = account["balance"]
                await trio.sleep(0)
                account["balance"] = seen + 10

        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(teller, name=f"teller-{i}")
        assert account["balance"] == 20

    result = seqlab.explore(careful, seeds=range(5000), strategy="exhaustive", bound=2)
    assert result.ok
    assert result.complete is True
    assert result.schedules > 3
    assert str(result) == (
        f"explored all {result.schedules:,} schedules with at most 2 holds: no failure"
    )


def test_exhaustive_reports_a_budget_spent_before_the_space():
    result = seqlab.explore(RACES[-1], seeds=range(3), strategy="exhaustive", bound=2)
    assert result.runs == 3
    assert result.complete is False
    assert "run budget ended" in str(result)


@pytest.mark.parametrize("race", RACES, ids=lambda f: f.__name__)
def test_shrunk_schedule_is_small_replays_and_is_explained(race):
    failure = seqlab.explore(race, seeds=range(100)).failures[0]
    small = failure.shrink()
    assert small.decisions <= 2
    assert len(Schedule.parse(small.schedule)) == small.decisions
    with pytest.raises(Exception) as replayed:
        seqlab.run(race, schedule=small.schedule)
    assert type(replayed.value) is type(small.error)
    text = small.explain()
    assert f"schedule={small.schedule!r}" in text
    named = {e.task for e in small.trace.events if e.primitive == "task"} - {race.__name__}
    if small.decisions:
        # The explanation names the tasks involved, by the names the trace uses.
        assert sum(name in text for name in named) >= 1
        marks = [
            e for e in small.trace.events if (e.primitive, e.kind) == ("scheduler", "decision")
        ]
        assert [m.data["index"] for m in marks][:1] == [1]
    else:
        assert "plain lockstep order fails" in text


def test_delay_race_explanation_says_who_was_held_where():
    from seqlab.examples.races import stale_cache

    small = seqlab.explore(stale_cache, seeds=range(100)).failures[0].shrink()
    text = small.explain()
    assert "writer was held back for" in text
    assert "of races.py" in text
    assert "while refresher ran" in text
    assert "AssertionError: stale cache" in text


def test_every_shrunk_schedule_fails_again_in_a_fresh_process():
    schedules = {
        race.__name__: seqlab.explore(race, seeds=range(100)).failures[0].shrink().schedule
        for race in RACES
    }
    code = (
        "import sys, seqlab\n"
        "from seqlab.examples import races\n"
        "for name, schedule in eval(sys.argv[1]).items():\n"
        "    try:\n"
        "        seqlab.run(getattr(races, name), schedule=schedule)\n"
        "        print(name, 'passed')\n"
        "    except Exception as error:\n"
        "        print(name, type(error).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, repr(schedules)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    outcomes = dict(line.split() for line in done.stdout.splitlines())
    assert set(outcomes) == set(schedules)
    assert "passed" not in outcomes.values(), outcomes


# --------------------------------------------------------------------------- schedules


def test_schedule_strings_round_trip():
    text = "s1:H4.2*;P7.1,0;Q9-15.2;H20.1x3|31"
    assert str(Schedule.parse(text)) == text


@pytest.mark.parametrize(
    "bad", ["H1.1*", "s1:X1", "s1:H1.1x0", "s1:P1.1,1", "s1:Q5-3.1", "s1:H1.1*|x"]
)
def test_malformed_schedule_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="schedule"):
        seqlab.run(RACES[0], schedule=bad)


def test_schedule_from_another_program_says_where_it_diverged():
    from seqlab.examples.races import lock_order_inversion, use_before_init

    small = seqlab.explore(lock_order_inversion, seeds=range(100)).failures[0].shrink()
    with pytest.raises(ScheduleMismatch, match=r"at step \d+") as info:
        seqlab.run(use_before_init, schedule="s1:H3.7*")
    assert "does not fit this program" in str(info.value)
    with pytest.raises(ScheduleMismatch, match="ended after"):
        seqlab.run(use_before_init, schedule=small.schedule.replace("H3", "H300"))


@pytest.mark.parametrize("strategy", ["random", "delay", "pct", "auto"])
def test_replay_by_strategy_and_seed(strategy):
    from seqlab.examples.races import stale_cache

    result = seqlab.explore(stale_cache, seeds=range(60), strategy=strategy)
    for failure in result.failures[:3]:
        with pytest.raises(AssertionError):
            seqlab.run(stale_cache, seed=failure.seed, strategy=strategy)
    assert strategy == "random" or result.failures


def test_every_failure_schedule_replays_to_the_same_trace():
    from seqlab.examples.bank import checked_deposits

    result = seqlab.explore(checked_deposits, 3, seeds=range(40))
    assert result.failures
    for failure in result.failures[:6]:
        again = seqlab.Recorder()
        with pytest.raises(AssertionError):
            seqlab.run(checked_deposits, 3, schedule=failure.schedule, recorder=again)
        assert again.to_text() == failure.trace.to_text()


# --------------------------------------------------------------------------- coverage


def test_coverage_counts_distinct_schedules_per_strategy():
    from seqlab.examples.races import condition_if_not_while

    result = seqlab.explore(condition_if_not_while, seeds=range(60))
    assert set(result.by_strategy) == {
        "lockstep",
        "random",
        "delay(1)",
        "pct(2)",
        "delay(2)",
        "pct(3)",
    }
    assert sum(c.runs for c in result.by_strategy.values()) == 60
    assert result.by_strategy["lockstep"].schedules == 1  # one fixed schedule, run 10 times
    assert 1 < result.schedules <= 60
    assert sum(c.failures for c in result.by_strategy.values()) == len(result.failures)


# --------------------------------------------------------------------------- processes


def test_workers_give_the_same_result_in_the_same_order():
    from seqlab.examples.races import stale_cache

    one = seqlab.explore(stale_cache, seeds=range(48))
    two = seqlab.explore(stale_cache, seeds=range(48), workers=2)
    assert [(f.seed, f.schedule, type(f.error)) for f in one.failures] == [
        (f.seed, f.schedule, type(f.error)) for f in two.failures
    ]
    assert (one.runs, one.schedules, one.by_strategy) == (two.runs, two.schedules, two.by_strategy)
    assert two.failures[0].trace.to_text() == one.failures[0].trace.to_text()


def test_any_executor_spreads_the_work():
    from seqlab.examples.races import use_before_init

    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        result = seqlab.explore(use_before_init, seeds=range(30), executor=pool)
    assert result.failing_seeds == seqlab.explore(use_before_init, seeds=range(30)).failing_seeds


def test_a_scenario_defined_in_a_cell_still_explores_in_processes():
    # A closure cannot be pickled by reference (like a function defined in a notebook cell).
    limit = 3

    async def local_race() -> None:
        box = {"n": 0}

        async def bump() -> None:
            seen = box["n"]
            await trio.sleep(0)
            box["n"] = seen + 1

        async with trio.open_nursery() as nursery:
            for _ in range(limit - 1):
                nursery.start_soon(bump)
        assert box["n"] == limit - 1

    result = seqlab.explore(local_race, seeds=range(12), workers=2)
    assert result.failures
    assert result.failing_seeds == seqlab.explore(local_race, seeds=range(12)).failing_seeds


@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask[distributed] is not installed (pip install seqlab[distributed])",
)
def test_dask_executor():
    from distributed import Client, LocalCluster

    from seqlab.examples.races import use_before_init

    with LocalCluster(n_workers=2, processes=True) as cluster, Client(cluster) as client:
        result = seqlab.explore(use_before_init, seeds=range(30), executor=client.get_executor())
    assert result.failing_seeds == seqlab.explore(use_before_init, seeds=range(30)).failing_seeds


# --------------------------------------------------------------------------- bad input


async def _fine() -> None:
    await trio.sleep(0)


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda: seqlab.explore(_fine, strategy="chaos"), ValueError, "strategy"),
        (lambda: seqlab.run(_fine, strategy="exhaustive"), ValueError, "strategy 'exhaustive'"),
        (lambda: seqlab.explore(_fine, strategy=3), TypeError, "strategy"),
        (lambda: seqlab.explore(_fine, strategy="pct", bound=-1), ValueError, "bound"),
        (lambda: seqlab.explore(_fine, strategy="pct", bound=1.5), TypeError, "bound"),
        (lambda: seqlab.explore(_fine, strategy="pct", bound=True), TypeError, "bound"),
        (lambda: seqlab.explore(_fine, strategy="random", bound=2), ValueError, "bound"),
        (lambda: seqlab.run(_fine, seed=1, schedule="s1:"), ValueError, "schedule"),
        (lambda: seqlab.run(_fine, schedule=5), TypeError, "schedule"),
        (lambda: seqlab.run(_fine, strategy="delay", schedule="s1:"), ValueError, "schedule"),
        (lambda: seqlab.explore(_fine, workers=0), ValueError, "workers"),
        (lambda: seqlab.explore(_fine, workers="2"), TypeError, "workers"),
        (lambda: seqlab.explore(_fine, executor=object()), TypeError, "executor"),
        (lambda: seqlab.explore(_fine, check=_fine), TypeError, "check"),
        (lambda: seqlab.run(_fine, seed=-5), ValueError, "seed"),
        (lambda: seqlab.explore(_fine, virtual_time="yes"), TypeError, "virtual_time"),
    ],
)
def test_bad_arguments_are_named(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


# --------------------------------------------------------------------------- real time, Ctrl-C


def test_real_time_deadlock_is_reported_not_a_hang():
    async def main() -> None:
        barrier = seqlab.Barrier(3, name="phase")
        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(barrier.wait, name=f"worker-{i}")

    with pytest.raises(seqlab.Deadlock, match="2 of 3 arrived"):
        seqlab.run(main, virtual_time=False)


def test_real_time_sleeps_are_not_a_deadlock():
    async def main() -> float:
        start = trio.current_time()
        await trio.sleep(0.2)
        return trio.current_time() - start

    assert seqlab.run(main, virtual_time=False) >= 0.2


def test_ctrl_c_stops_the_run_before_returning():
    ticks: list[float] = []

    async def forever() -> None:
        while True:
            ticks.append(time.monotonic())
            await trio.sleep(0.01)

    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    with pytest.raises(seqlab.Interrupted) as info:
        seqlab.run(forever, seed=11, virtual_time=False, recorder=seqlab.Recorder())
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.seed == 11
    assert info.value.schedule.startswith("s1:")
    count = len(ticks)
    time.sleep(0.2)
    assert len(ticks) == count  # none of the program's code runs any more


# --------------------------------------------------------------------------- properties

_steps = st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=5)


def _program(tasks: list[list[int | None]]):
    async def program() -> dict[str, float]:
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
        return finished

    return program


@settings(max_examples=25, deadline=None)
@given(
    tasks=st.lists(_steps, min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    strategy=st.sampled_from(["auto", "lockstep", "random", "delay", "pct"]),
)
def test_property_held_tasks_never_fake_deadlock_or_move_time(tasks, seed, strategy):
    program = _program(tasks)
    first, again = seqlab.Recorder(), seqlab.Recorder()
    finished = seqlab.run(program, seed=seed, strategy=strategy, recorder=first)
    # Virtual time is exact whatever was held: each task ends at the sum of its own sleeps.
    assert finished == {
        f"t{i}": sum(s for s in steps if s is not None) / 4 for i, steps in enumerate(tasks)
    }
    # Replaying by strategy and seed, and by the run's schedule, gives the same bytes.
    seqlab.run(program, seed=seed, strategy=strategy, recorder=again)
    assert again.to_text() == first.to_text()


@settings(max_examples=25, deadline=None)
@given(
    tasks=st.lists(_steps, min_size=2, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    strategy=st.sampled_from(["random", "delay", "pct"]),
)
def test_property_a_runs_schedule_replays_byte_identically(tasks, seed, strategy):
    program = _program(tasks)
    first = seqlab.Recorder()
    finished = seqlab.run(program, seed=seed, strategy=strategy, recorder=first)
    assert first.schedule is not None and first.schedule.startswith("s1:")
    again, third = seqlab.Recorder(), seqlab.Recorder()
    assert seqlab.run(program, schedule=first.schedule, recorder=again) == finished
    seqlab.run(program, schedule=first.schedule, recorder=third)
    assert again.to_text() == third.to_text()
    assert again.schedule == third.schedule == first.schedule
    # The replay is the same run: the same events, plus marks at its decisive choices.
    assert [e for e in again.events if e.primitive != "scheduler"] == list(first.events)


def test_the_trace_after_a_deadlock_is_the_same_every_time():
    # trio cancels a scope's tasks in set order, which follows memory addresses; a barrier
    # records 'leave' as each waiter is cancelled. The deadlock cancels oldest first instead.
    async def eight_of_nine() -> None:
        barrier = seqlab.Barrier(9, name="phase")
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(barrier.wait, name=f"player-{i}")

    traces = set()
    ballast = []
    for n in range(12):
        ballast.append([object() for _ in range(n * 41)])  # shift where new tasks live
        rec = seqlab.Recorder()
        with pytest.raises(seqlab.Deadlock):
            seqlab.run(eight_of_nine, seed=3, recorder=rec)
        traces.add(rec.to_text())
    assert len(traces) == 1
    leaves = [e.task for e in rec.events if e.kind == "leave"]
    assert leaves == [f"player-{i}" for i in range(8)]


def test_a_scenario_that_cannot_travel_runs_here_with_a_warning(monkeypatch):
    import seqlab.exploration as exploration
    from seqlab.examples.races import use_before_init

    monkeypatch.setattr(exploration, "_pack", lambda value: None)  # as without cloudpickle
    with pytest.warns(RuntimeWarning, match="cannot be sent to other processes"):
        result = seqlab.explore(use_before_init, seeds=range(12), workers=2)
    assert result.failing_seeds == seqlab.explore(use_before_init, seeds=range(12)).failing_seeds
