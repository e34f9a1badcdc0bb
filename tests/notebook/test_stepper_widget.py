"""The stepper widget, Python side: buttons as messages, watched state, goals, static forms."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import seqlab
from seqlab.notebook.stepper_widget import StepperWidget
from seqlab.stepper import Stepper, level_reached

account: dict[str, int] = {"balance": 0}


async def two_tellers() -> None:
    ledger = {"balance": 0}

    async def teller() -> None:
        seen = ledger["balance"]
        await trio.sleep(0)
        ledger["balance"] = seen + 10

    async with trio.open_nursery() as nursery:
        nursery.start_soon(teller, name="teller-0")
        nursery.start_soon(teller, name="teller-1")
    assert ledger["balance"] == 20, f"lost update: balance is {ledger['balance']}"


LOSING = ["two_tellers", "teller-0", "teller-1", "teller-0", "teller-1", "two_tellers"]


def click(widget: StepperWidget, action: str, task: str | None = None) -> None:
    """What the front end's button sends."""
    content: dict[str, Any] = {"action": action}
    if task is not None:
        content["task"] = task
    widget._handle_custom_msg(content, [])


def test_clicks_lose_an_update_and_the_level_stores_a_path_that_grades():
    widget = StepperWidget(two_tellers, watch="ledger['balance']", goal="fail")
    assert widget.runnable == ["two_tellers"]
    assert widget.watched == [["ledger['balance']", "(not defined yet)"]]
    for name in LOSING[:3]:
        click(widget, "step", name)
    assert widget.watched == [["ledger['balance']", "0"]]
    tasks = {t["name"]: t for t in widget.tasks}
    assert tasks["two_tellers"]["state"] == "waiting"
    assert "child tasks" in tasks["two_tellers"]["waits_on"]
    assert any(line.startswith(">") and "sleep" in line for line in tasks["teller-0"]["context"])
    assert not widget.goal_reached and widget.level["reached"] is False
    for name in LOSING[3:]:
        click(widget, "step", name)
    assert widget.watched == [["ledger['balance']", "10"]]
    assert widget.finished and widget.goal_reached
    assert widget.message == "goal reached: make the program fail"
    assert widget.outcome.startswith("failed: AssertionError: lost update: balance is 10")
    assert widget.level["reached"] and widget.level["path"] == LOSING
    assert level_reached(two_tellers, schedule=widget.level["schedule"], goal="fail")
    text = repr(widget)
    assert "goal: make the program fail (REACHED)" in text
    assert "path: " + ", ".join(LOSING) in text
    assert f"schedule: {widget.schedule}" in text
    html = widget.to_html()
    assert "teller-1" in html and widget.schedule in html and "<script" not in html


def test_a_stale_click_is_a_message_not_an_error_and_undo_reset_work():
    widget = StepperWidget(two_tellers)
    click(widget, "step", "teller-0")
    assert "must be one of the tasks that can step now" in widget.message
    click(widget, "step", "two_tellers")
    click(widget, "step", "teller-1")
    click(widget, "undo")
    assert widget.path == ["two_tellers"] and widget.message == ""
    click(widget, "reset")
    assert widget.steps == 0 and widget.runnable == ["two_tellers"]
    click(widget, "dance")
    assert widget.message == "unknown action 'dance'"
    widget.close()


def test_run_until_something_happens_stops_at_each_change():
    widget = StepperWidget(two_tellers)
    assert widget.run_until() == 1  # the main task starts the tellers and waits for them
    assert {t["name"]: t["state"] for t in widget.tasks}["two_tellers"] == "waiting"
    # round-robin from here: teller-0, teller-1 read, then teller-0 writes and is done
    assert widget.run_until() == 3
    assert widget.path == LOSING[:4]
    assert {t["name"]: t["state"] for t in widget.tasks}["teller-0"] == "done"
    while not widget.finished:
        widget.run_until()
    assert "lost update" in widget.outcome


def test_run_until_stops_at_the_goal():
    def both_read(stepper: Stepper) -> bool:
        """both tellers have read the balance"""
        lines = {t.name: t.line for t in stepper.tasks}
        return all("sleep" in lines.get(n, "") for n in ("teller-0", "teller-1"))

    widget = StepperWidget(two_tellers, goal=both_read)
    widget.run_until()
    widget.run_until()
    assert widget.goal_reached and widget.path == LOSING[:3]
    assert widget.goal == "both tellers have read the balance"
    assert widget.level["schedule"].endswith("|3")
    assert level_reached(two_tellers, schedule=widget.level["schedule"], goal=both_read)
    widget.close()


def test_the_explorer_finds_the_failure_and_it_replays_step_by_step():
    widget = StepperWidget(two_tellers, goal="fail")
    click(widget, "explore")
    assert widget.plan and widget.steps == 0
    assert "the explorer found AssertionError" in widget.message
    while not widget.finished:
        click(widget, "replay")
    assert widget.path == widget.plan and widget.goal_reached
    click(widget, "replay")
    assert "the program has finished" in widget.message or "all replayed" in widget.message


def test_watching_a_callable_and_globals():
    state = {"n": 0}
    widget = StepperWidget(two_tellers, watch=lambda: {"n": state["n"]})
    assert widget.watched == [["n", "0"]]
    widget = StepperWidget(two_tellers, watch=["account"], namespace=globals())
    assert widget.watched == [["account", "{'balance': 0}"]]
    bad = StepperWidget(two_tellers, watch=lambda: 3)
    assert bad.watched == [["watch()", "returned int, not a dict"]]


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="async_fn"):
        StepperWidget(print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="goal"):
        StepperWidget(two_tellers, goal="win")
    with pytest.raises(TypeError, match="watch"):
        StepperWidget(two_tellers, watch=3)
    with pytest.raises(TypeError, match="namespace"):
        StepperWidget(two_tellers, namespace=[])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="explore_seeds"):
        StepperWidget(two_tellers, explore_seeds=0)


def test_a_deadlock_goal():
    async def three_of_four() -> None:
        barrier = seqlab.Barrier(3, name="phase")
        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(barrier.wait, name=f"player-{i}")

    widget = StepperWidget(three_of_four, goal="deadlock")
    while not widget.finished:
        widget.run_until()
    assert widget.goal_reached and widget.outcome.startswith("deadlock: ")
    assert level_reached(three_of_four, schedule=widget.level["schedule"], goal="deadlock")


def test_watch_reads_names_in_the_functions_the_program_awaits():
    from seqlab.examples.bank import checked_deposits

    async def scenario() -> None:
        await checked_deposits(2)

    widget = StepperWidget(scenario, watch="account.balance", goal="fail")
    assert widget.watched == [["account.balance", "(not defined yet)"]]
    seen = []
    for name in ["scenario", "teller-0", "teller-1", "teller-1", "teller-0", "teller-1"]:
        widget.step(name)
        seen.append(widget.watched[0][1])
    assert seen == ["0", "0", "0", "0", "1", "1"]  # teller-1 wrote 0 + 1 over teller-0's 1
    widget.step("scenario")
    assert widget.goal_reached and widget.watched == [["account.balance", "1"]]
