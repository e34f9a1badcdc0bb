"""Phaser: Java's Phaser rules (dynamic parties, non-blocking arrival, termination) on trio."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.barrier import Phaser, PhaserStatistics

SEEDS = range(6)


def run_seeds(fn: Any, seeds: Any = SEEDS) -> list[Any]:
    return [seqlab.run(fn, seed=seed) for seed in seeds]


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("parties", [-1, -5])
def test_negative_parties_is_a_value_error(parties: int) -> None:
    with pytest.raises(ValueError, match="parties must be 0 or more"):
        Phaser(parties)


@pytest.mark.parametrize("parties", [True, 1.0, "2", None])
def test_non_int_parties_is_a_type_error(parties: Any) -> None:
    with pytest.raises(TypeError, match="parties must be an int"):
        Phaser(parties)


def test_bad_on_advance_and_name_are_type_errors() -> None:
    async def on_advance(phase: int, registered: int) -> bool:
        return False

    with pytest.raises(TypeError, match="on_advance must be a plain function"):
        Phaser(1, on_advance="stop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_advance must be a plain \\(non-async\\)"):
        Phaser(1, on_advance=on_advance)
    with pytest.raises(TypeError, match="name must be a str"):
        Phaser(1, name=b"x")  # type: ignore[arg-type]


def test_wait_for_advance_checks_its_phase_argument() -> None:
    async def main() -> None:
        p = Phaser(1)
        with pytest.raises(TypeError, match="phase must be an int"):
            await p.wait_for_advance("0")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="phase must be an int"):
            await p.wait_for_advance(False)
        with pytest.raises(ValueError, match="phase must be 0 or more"):
            await p.wait_for_advance(-1)
        with pytest.raises(ValueError, match="phase 3 has not started yet"):
            await p.wait_for_advance(3)

    run_seeds(main, range(1))


def test_arriving_with_no_registered_party_is_an_error() -> None:
    async def main() -> None:
        p = Phaser(name="empty")
        with pytest.raises(RuntimeError, match="no registered party: call register"):
            p.arrive()
        with pytest.raises(RuntimeError, match="no registered party"):
            p.arrive_and_deregister()
        with pytest.raises(RuntimeError, match="no registered party"):
            await p.arrive_and_wait()
        assert (p.phase, p.registered, p.arrived, p.terminated) == (0, 0, 0, False)

    run_seeds(main, range(1))


def test_fresh_phaser_state_statistics_and_repr() -> None:
    p = Phaser(2, name="steps")
    assert (p.phase, p.registered, p.arrived, p.unarrived, p.terminated) == (0, 2, 0, 2, False)
    stats = p.statistics()
    assert stats == PhaserStatistics(
        phase=0, registered=2, arrived=0, n_waiting=0, terminated=False
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.phase = 1  # type: ignore[misc]
    assert repr(p) == "<Phaser 'steps': phase 0, 0 of 2 arrived>"
    assert p._describe_wait() == "Phaser 'steps' phase 0 (0 of 2 arrived)"


# --------------------------------------------------------------------------- phases


def test_arrive_and_wait_releases_everyone_with_the_new_phase() -> None:
    async def main() -> None:
        p = Phaser(3)
        got: dict[int, list[tuple[int, float]]] = {0: [], 1: [], 2: []}

        async def worker(i: int) -> None:
            for step in range(3):
                await trio.sleep(i + step)
                got[i].append((await p.arrive_and_wait(), trio.current_time()))

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(worker, i)
        # Phase k ends when the slowest worker (i=2) arrives: t=2, then 2+3=5, then 5+4=9.
        for i in range(3):
            assert got[i] == [(1, 2.0), (2, 5.0), (3, 9.0)]
        assert p.phase == 3 and p.arrived == 0 and not p.terminated

    run_seeds(main)


def test_arrive_never_blocks_and_returns_the_phase_arrived_at() -> None:
    async def main() -> None:
        p = Phaser(2)
        assert p.arrive() == 0
        assert p.arrived == 1 and p.phase == 0
        # The second party arrives too: the phase ends without anyone waiting.
        assert p.arrive() == 0
        assert p.phase == 1 and p.arrived == 0
        assert trio.current_time() == 0.0

    run_seeds(main, range(2))


def test_producer_arrives_consumer_waits() -> None:
    async def main() -> None:
        p = Phaser(2)
        seen: list[tuple[int, float]] = []

        async def consumer() -> None:
            for _ in range(3):
                seen.append((await p.arrive_and_wait(), trio.current_time()))

        async def producer() -> None:
            for _ in range(3):
                await trio.sleep(2)
                assert p.arrive() == p.phase - 1  # my arrival ended the phase

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            nursery.start_soon(producer)
        assert seen == [(1, 2.0), (2, 4.0), (3, 6.0)]

    run_seeds(main)


def test_registering_mid_phase_adds_a_party_that_must_arrive() -> None:
    async def main() -> None:
        p = Phaser(1)
        assert p.register() == 0
        assert p.registered == 2
        p.arrive()
        assert p.phase == 0, "the new party has not arrived yet"
        p.arrive()
        assert p.phase == 1

    run_seeds(main, range(1))


def test_deregistered_party_is_no_longer_waited_for() -> None:
    async def main() -> None:
        p = Phaser(3)
        times: list[tuple[int, float]] = []

        async def stayer(delay: float) -> None:
            for _ in range(2):
                await trio.sleep(delay)
                times.append((await p.arrive_and_wait(), trio.current_time()))

        async def leaver() -> None:
            await trio.sleep(5)
            assert p.arrive_and_deregister() == 0

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stayer, 1)
            nursery.start_soon(stayer, 1)
            nursery.start_soon(leaver)
        # Phase 0 waits for the leaver (t=5); phase 1 only for the two stayers (t=6).
        assert sorted(times) == [(1, 5.0), (1, 5.0), (2, 6.0), (2, 6.0)]
        assert p.registered == 2

    run_seeds(main)


def test_last_party_leaving_terminates_by_default() -> None:
    async def main() -> None:
        p = Phaser(name="job")
        p.register()
        p.register()
        assert p.arrive_and_deregister() == 0
        assert not p.terminated
        assert p.arrive_and_deregister() == 0
        assert p.terminated and p.phase == 1 and p.registered == 0
        # A terminated phaser: arrivals do nothing, waits return at once, register refuses.
        assert p.arrive() == 1
        assert p.arrive_and_deregister() == 1
        assert await p.arrive_and_wait() == 1
        assert await p.wait_for_advance(0) == 1
        assert await p.wait_for_advance(1) == 1
        assert await p.wait_for_advance(7) == 1
        with pytest.raises(trio.ClosedResourceError, match="terminated at phase 1"):
            p.register()
        assert trio.current_time() == 0.0
        assert repr(p) == "<Phaser 'job': terminated at phase 1>"
        assert p._describe_wait() == "Phaser 'job' (terminated at phase 1)"

    run_seeds(main, range(2))


def test_on_advance_decides_when_to_stop() -> None:
    calls: list[tuple[int, int]] = []

    def on_advance(phase: int, registered: int) -> bool:
        calls.append((phase, registered))
        return phase >= 2  # run phases 0, 1 and 2

    async def main() -> list[int]:
        p = Phaser(2, on_advance=on_advance)
        done: list[int] = []

        async def worker() -> None:
            rounds = 0
            while not p.terminated:
                await trio.sleep(1)
                await p.arrive_and_wait()
                rounds += 1
            done.append(rounds)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            nursery.start_soon(worker)
        assert p.phase == 3 and p.terminated
        assert trio.current_time() == 3.0
        return done

    for done in run_seeds(main):
        assert done == [3, 3]
    assert calls == [(0, 2), (1, 2), (2, 2)] * len(SEEDS)


def test_raising_on_advance_terminates_and_reaches_the_last_arriver() -> None:
    def on_advance(phase: int, registered: int) -> bool:
        raise KeyError("bookkeeping")

    async def main() -> None:
        p = Phaser(2, on_advance=on_advance)
        waiter_got: list[int] = []

        async def waiter() -> None:
            waiter_got.append(await p.arrive_and_wait())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(1)
            with pytest.raises(KeyError, match="bookkeeping"):
                await p.arrive_and_wait()
        assert waiter_got == [1]
        assert p.terminated and p.phase == 1

    run_seeds(main)


def test_wait_for_advance_observes_without_arriving() -> None:
    async def main() -> None:
        p = Phaser(1)
        seen: list[tuple[int, float]] = []

        async def observer() -> None:
            seen.append((await p.wait_for_advance(0), trio.current_time()))
            # Phase 0 is over: asking again returns at once.
            seen.append((await p.wait_for_advance(0), trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(observer)
            await trio.sleep(4)
            assert p.statistics().n_waiting == 1
            assert p.arrived == 0
            p.arrive()
        assert seen == [(1, 4.0), (1, 4.0)]

    run_seeds(main)


# --------------------------------------------------------------------------- cancellation


def test_cancelled_arrive_and_wait_keeps_its_arrival() -> None:
    async def main() -> None:
        p = Phaser(2)
        outcome: list[str] = []

        async def impatient() -> None:
            with trio.move_on_after(1):
                await p.arrive_and_wait()
                outcome.append("released")
            outcome.append(f"gave up at {trio.current_time()}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(impatient)
            await trio.sleep(2)
            assert p.arrived == 1, "the arrival happened and is not undone"
            assert p.statistics().n_waiting == 0
            assert p.arrive() == 0
        assert outcome == ["gave up at 1.0"]
        assert p.phase == 1

    run_seeds(main)


def test_cancelled_observer_just_leaves() -> None:
    async def main() -> None:
        p = Phaser(1)
        with trio.move_on_after(3) as scope:
            await p.wait_for_advance(0)
        assert scope.cancelled_caught
        assert p.statistics().n_waiting == 0 and p.phase == 0

    run_seeds(main, range(2))


def test_already_cancelled_arrive_and_wait_does_not_arrive() -> None:
    async def main() -> None:
        p = Phaser(2)
        with trio.CancelScope() as scope:
            scope.cancel()
            await p.arrive_and_wait()
        assert p.arrived == 0

    run_seeds(main, range(1))


# --------------------------------------------------------------------------- docs, deadlock, trace


def test_docstring_example_coordinator_and_workers() -> None:
    async def main() -> dict[str, Any]:
        phaser = Phaser(1)
        steps_done: dict[int, int] = {}

        async def worker(phaser: Phaser, steps: int) -> None:
            for _ in range(steps):
                await trio.sleep(1)
                await phaser.arrive_and_wait()
                steps_done[steps] = steps_done.get(steps, 0) + 1
            phaser.arrive_and_deregister()

        async with trio.open_nursery() as nursery:
            for steps in (2, 3):
                phaser.register()
                nursery.start_soon(worker, phaser, steps)
            phaser.arrive_and_deregister()
        return {
            "steps": steps_done,
            "phase": phaser.phase,
            "terminated": phaser.terminated,
            "time": trio.current_time(),
        }

    for result in run_seeds(main):
        # Phases 0 and 1 need both workers, phase 2 only the three-step one, then the
        # last deregistration ends phase 3 and terminates the phaser.
        assert result == {"steps": {2: 2, 3: 3}, "phase": 4, "terminated": True, "time": 3.0}


def test_missing_arrival_is_a_deadlock_naming_the_phaser() -> None:
    async def main() -> None:
        p = Phaser(3, name="steps")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.arrive_and_wait, name="a")
            nursery.start_soon(p.arrive_and_wait, name="b")

    with pytest.raises(seqlab.Deadlock) as info:
        seqlab.run(main, seed=1)
    message = str(info.value)
    assert "a waits at Phaser 'steps' phase 0 (2 of 3 arrived)" in message
    assert "b waits at Phaser 'steps' phase 0 (2 of 3 arrived)" in message


def test_trace_events() -> None:
    async def main() -> None:
        p = Phaser(1, name="ph")
        p.register()
        p.arrive()
        p.arrive_and_deregister()
        p.arrive_and_deregister()

    rec = seqlab.Recorder()
    seqlab.run(main, seed=0, recorder=rec)
    events = [(e.kind, dict(e.data)) for e in rec if e.primitive == "Phaser 'ph'"]
    assert events == [
        ("register", {"phase": 0, "registered": 2}),
        ("arrive", {"phase": 0, "arrived": 1, "registered": 2}),
        ("deregister", {"phase": 0, "arrived": 1, "registered": 1}),
        ("advance", {"phase": 1, "registered": 1, "terminated": False}),
        ("deregister", {"phase": 1, "arrived": 0, "registered": 0}),
        ("advance", {"phase": 2, "registered": 0, "terminated": True}),
    ]


# --------------------------------------------------------------------------- property

OPS = st.sampled_from(["register", "arrive", "deregister", "wait", "observe"])


@settings(max_examples=50, deadline=None)
@given(
    parties=st.integers(0, 3),
    ops=st.lists(OPS, max_size=25),
    stop_after=st.one_of(st.none(), st.integers(0, 4)),
    seed=st.integers(0, 2**16),
)
def test_property_phaser_matches_a_simple_model(
    parties: int, ops: list[str], stop_after: int | None, seed: int
) -> None:
    """Random register/arrive/leave/wait/observe sequences against a counting model."""

    def on_advance(phase: int, registered: int) -> bool:
        return registered == 0 if stop_after is None else phase >= stop_after

    async def main() -> None:
        p = Phaser(parties, on_advance=on_advance)
        model = {"phase": 0, "registered": parties, "arrived": 0, "terminated": False}
        # (phase it waits to end, results list) for every waiting task started.
        waits: list[tuple[int, list[int]]] = []

        def model_arrive(deregister: bool) -> None:
            if deregister:
                model["registered"] -= 1
            else:
                model["arrived"] += 1
            if model["arrived"] == model["registered"]:
                ended = model["phase"]
                model["phase"] += 1
                model["arrived"] = 0
                model["terminated"] = on_advance(ended, model["registered"])

        async def waiting(fn: Any, *args: Any, out: list[int]) -> None:
            out.append(await fn(*args))

        async with trio.open_nursery() as nursery:
            for op in ops:
                if model["terminated"]:
                    if op == "register":
                        with pytest.raises(trio.ClosedResourceError):
                            p.register()
                    else:
                        assert p.arrive() == model["phase"]
                        assert await p.arrive_and_wait() == model["phase"]
                elif op == "register":
                    assert p.register() == model["phase"]
                    model["registered"] += 1
                elif model["registered"] == 0 and op != "observe":
                    with pytest.raises(RuntimeError):
                        p.arrive()
                elif op in ("arrive", "deregister"):
                    phase = model["phase"]
                    method = p.arrive if op == "arrive" else p.arrive_and_deregister
                    assert method() == phase
                    model_arrive(op == "deregister")
                elif op == "wait":
                    out: list[int] = []
                    waits.append((model["phase"], out))
                    nursery.start_soon(functools.partial(waiting, p.arrive_and_wait, out=out))
                    await trio.sleep(1)  # it arrives now
                    model_arrive(False)
                else:  # observe
                    out = []
                    waits.append((model["phase"], out))
                    nursery.start_soon(
                        functools.partial(waiting, p.wait_for_advance, model["phase"], out=out)
                    )
                await trio.sleep(1)
                assert (p.phase, p.registered, p.arrived, p.terminated) == (
                    model["phase"],
                    model["registered"],
                    model["arrived"],
                    model["terminated"],
                )
                assert 0 <= p.arrived <= p.registered or p.terminated
                for waited_phase, results in waits:
                    if waited_phase < p.phase:
                        # Released with the phase that followed (or the final phase).
                        assert results == [waited_phase + 1], (waited_phase, results)
                    else:
                        assert results == []
                assert p.statistics().n_waiting == sum(1 for w, r in waits if not r)
            nursery.cancel_scope.cancel()

    seqlab.run(main, seed=seed)
