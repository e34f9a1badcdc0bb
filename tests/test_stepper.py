"""The Stepper: a person as the scheduler, stepping real trio code."""

from __future__ import annotations

import pytest
import trio

import seqlab
from seqlab.stepper import Stepper


async def two_tellers() -> None:
    account = {"balance": 0}

    async def teller() -> None:
        seen = account["balance"]
        await trio.sleep(0)
        account["balance"] = seen + 10

    async with trio.open_nursery() as nursery:
        nursery.start_soon(teller, name="teller-0")
        nursery.start_soon(teller, name="teller-1")
    assert account["balance"] == 20, f"lost update: balance is {account['balance']}"


def round_robin(stepper: Stepper) -> None:
    taken: dict[str, int] = {}
    while not stepper.finished:
        name = min(stepper.runnable, key=lambda n: taken.get(n, 0))
        taken[name] = taken.get(name, 0) + 1
        stepper.step(name)


def test_round_robin_loses_an_update_and_the_schedule_replays_it():
    stepper = Stepper(two_tellers)
    assert stepper.runnable == ["two_tellers"]
    round_robin(stepper)
    assert isinstance(stepper.error, AssertionError)
    assert "lost update: balance is 10" in str(stepper.error)
    assert stepper.path == [
        "two_tellers",
        "teller-0",
        "teller-1",
        "teller-0",
        "teller-1",
        "two_tellers",
    ]
    with pytest.raises(AssertionError, match="balance is 10"):
        seqlab.run(two_tellers, schedule=stepper.schedule)


def test_one_teller_at_a_time_is_correct():
    stepper = Stepper(two_tellers)
    while not stepper.finished:
        stepper.step(stepper.runnable[-1])  # the newest task first, to its end
    assert stepper.error is None
    assert stepper.finished
    seqlab.run(two_tellers, schedule=stepper.schedule)  # passes


def test_tasks_show_state_line_and_what_they_wait_on():
    stepper = Stepper(two_tellers)
    stepper.step("two_tellers")
    states = {t.name: t for t in stepper.tasks}
    assert states["two_tellers"].state == "waiting"
    assert states["two_tellers"].waits_on == "for its child tasks to finish"
    assert states["teller-0"].state == "runnable"
    stepper.step("teller-0")
    teller = {t.name: t for t in stepper.tasks}["teller-0"]
    assert "await trio.sleep(0)" in teller.line
    assert any(line.startswith(">") and "await trio.sleep(0)" in line for line in teller.context)
    stepper.step("teller-0")
    assert {t.name: t.state for t in stepper.tasks}["teller-0"] == "done"
    stepper.close()


def test_undo_and_reset_replay_the_path():
    stepper = Stepper(two_tellers)
    for name in ("two_tellers", "teller-0", "teller-1"):
        stepper.step(name)
    stepper.undo()
    assert stepper.path == ["two_tellers", "teller-0"]
    assert stepper.runnable == ["teller-0", "teller-1"]
    stepper.reset()
    assert stepper.steps == 0 and stepper.runnable == ["two_tellers"]
    stepper.close()


def test_a_deadlock_reached_by_hand_is_the_error():
    async def three_of_four() -> None:
        barrier = seqlab.Barrier(3, name="phase")
        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(barrier.wait, name=f"player-{i}")

    stepper = Stepper(three_of_four)
    while not stepper.finished:
        stepper.step(stepper.runnable[0])
    assert isinstance(stepper.error, seqlab.Deadlock)
    assert "2 of 3 arrived" in str(stepper.error)


def test_bad_choices_are_named():
    stepper = Stepper(two_tellers)
    with pytest.raises(ValueError, match="name must be one of the tasks that can step now"):
        stepper.step("teller-9")
    with pytest.raises(TypeError, match="name"):
        stepper.step(0)  # type: ignore[arg-type]
    stepper.close()
    with pytest.raises(TypeError, match="async_fn"):
        Stepper(print)  # type: ignore[arg-type]
