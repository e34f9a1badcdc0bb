"""The Stepper: a person as the scheduler, stepping real trio code."""

from __future__ import annotations

import pytest
import trio

import seqlab
from seqlab.examples.races import lost_update
from seqlab.stepper import Stepper

# Two tellers read, pause and write back: round-robin stepping loses a deposit.
two_tellers = lost_update


def round_robin(stepper: Stepper) -> None:
    taken: dict[str, int] = {}
    while not stepper.finished:
        name = min(stepper.runnable, key=lambda n: taken.get(n, 0))
        taken[name] = taken.get(name, 0) + 1
        stepper.step(name)


def test_round_robin_loses_an_update_and_the_schedule_replays_it():
    stepper = Stepper(two_tellers)
    assert stepper.runnable == ["lost_update"]
    round_robin(stepper)
    assert isinstance(stepper.error, AssertionError)
    assert "lost update: balance is 10" in str(stepper.error)
    assert stepper.path == [
        "lost_update",
        "teller-0",
        "teller-1",
        "teller-0",
        "teller-1",
        "lost_update",
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
    stepper.step("lost_update")
    states = {t.name: t for t in stepper.tasks}
    assert states["lost_update"].state == "waiting"
    assert states["lost_update"].waits_on == "for its child tasks to finish"
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
    for name in ("lost_update", "teller-0", "teller-1"):
        stepper.step(name)
    stepper.undo()
    assert stepper.path == ["lost_update", "teller-0"]
    assert stepper.runnable == ["teller-0", "teller-1"]
    stepper.reset()
    assert stepper.steps == 0 and stepper.runnable == ["lost_update"]
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


# ---------------------------------------------------------------- follow, goals, levels

LOSING = ["lost_update", "teller-0", "teller-1", "teller-0", "teller-1", "lost_update"]
SAFE = ["lost_update", "teller-0", "teller-0", "teller-1", "teller-1", "lost_update"]


def walk(path: list[str]) -> Stepper:
    stepper = Stepper(two_tellers)
    for name in path:
        stepper.step(name)
    return stepper


def test_follow_replays_a_stepper_schedule_and_leaves_the_path():
    losing = walk(LOSING)
    again = Stepper(two_tellers)
    assert again.follow(losing.schedule) == LOSING
    assert again.finished and isinstance(again.error, AssertionError)
    assert again.schedule == losing.schedule
    again.undo()
    assert again.path == LOSING[:-1] and not again.finished
    assert again.follow(losing.schedule, steps=3) == LOSING[:3]
    assert again.runnable == ["teller-0", "teller-1"]
    again.close()


def test_follow_turns_an_explorer_failure_into_single_steps():
    found = seqlab.explore(two_tellers, seeds=range(20), strategy="auto").failures[0].shrink()
    stepper = Stepper(two_tellers)
    path = stepper.follow(found.schedule)
    assert stepper.finished and "lost update" in str(stepper.error)
    # Both tellers read before either writes: the two reads come first.
    assert path[1:3] in (["teller-0", "teller-1"], ["teller-1", "teller-0"])
    # and the stepper's own schedule replays it too
    with pytest.raises(AssertionError, match="lost update"):
        seqlab.run(two_tellers, schedule=stepper.schedule)


def test_follow_refuses_a_schedule_for_other_code():
    stepper = Stepper(two_tellers)
    with pytest.raises(seqlab.ScheduleMismatch):
        stepper.follow("s1:P40.7|50")
    with pytest.raises(TypeError, match="schedule"):
        stepper.follow(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        stepper.follow(walk(SAFE).schedule, steps=-1)
    stepper.close()


def test_goal_reached_tells_fail_from_deadlock_and_success():
    from seqlab.stepper import goal_reached

    losing, safe = walk(LOSING), walk(SAFE)
    assert goal_reached(losing, "fail") and not goal_reached(losing, "deadlock")
    assert not goal_reached(safe, "fail") and not goal_reached(safe, "deadlock")
    unfinished = Stepper(two_tellers)
    assert not goal_reached(unfinished, "fail")
    assert goal_reached(unfinished, lambda s: s.runnable == ["lost_update"])
    with pytest.raises(ValueError, match="goal"):
        goal_reached(unfinished, "crash")
    with pytest.raises(TypeError, match="goal"):
        goal_reached(unfinished, 3)  # type: ignore[arg-type]
    unfinished.close()


def test_level_reached_grades_the_stored_path():
    from seqlab.stepper import level_reached

    losing, safe = walk(LOSING), walk(SAFE)
    assert level_reached(two_tellers, schedule=losing.schedule, goal="fail")
    assert not level_reached(two_tellers, schedule=safe.schedule, goal="fail")
    assert not level_reached(two_tellers, schedule=losing.schedule, goal="deadlock")
    # A path that stopped before the end scores 0, even with a step count glued on that
    # would let lockstep finish the run.
    partial = Stepper(two_tellers)
    for name in LOSING[:3]:
        partial.step(name)
    assert not level_reached(two_tellers, schedule=partial.schedule, goal="fail")
    glued = partial.schedule + f"|{partial.steps}"
    assert not level_reached(two_tellers, schedule=glued, goal="fail")
    partial.close()
    # A path recorded for other code scores 0.
    assert not level_reached(two_tellers, schedule="s1:P40.7|50", goal="fail")

    def both_read(stepper: Stepper) -> bool:
        lines = {t.name: t.line for t in stepper.tasks}
        return all("sleep" in lines.get(n, "") for n in ("teller-0", "teller-1"))

    reads = Stepper(two_tellers)
    for name in LOSING[:3]:
        reads.step(name)
    assert both_read(reads)
    stored = reads.schedule + f"|{reads.steps}"
    reads.close()
    assert level_reached(two_tellers, schedule=stored, goal=both_read)
    one_read = walk(SAFE[:3]).schedule + "|3"
    assert not level_reached(two_tellers, schedule=one_read, goal=both_read)


def test_a_deadlock_level():
    from seqlab.stepper import level_reached

    async def three_of_four() -> None:
        barrier = seqlab.Barrier(3, name="phase")
        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(barrier.wait, name=f"player-{i}")

    stepper = Stepper(three_of_four)
    while not stepper.finished:
        stepper.step(stepper.runnable[0])
    assert level_reached(three_of_four, schedule=stepper.schedule, goal="deadlock")
    assert not level_reached(three_of_four, schedule=stepper.schedule, goal="fail")


# ------------------------------------------------------------------ the stale-read goal


async def traced_tellers() -> None:
    """Two tellers deposit through a traced Account: a read, a pause, a write each."""
    from seqlab.examples.bank import Account

    account, ledger = Account(), Account()

    async def teller(amount: int) -> None:
        seen = account.read()
        await trio.sleep(0)
        account.write(seen + amount)
        ledger.write(amount)  # a write with no read before it: never stale

    async with trio.open_nursery() as nursery:
        nursery.start_soon(teller, 1, name="teller-0")
        nursery.start_soon(teller, 2, name="teller-1")


def walk_traced(path: list[str]) -> Stepper:
    stepper = Stepper(traced_tellers)
    for name in path:
        stepper.step(name)
    return stepper


# Both read 0; teller-0 writes first, so teller-1 writes from a stale read (and the reverse).
TELLER_1_STALE = [
    "traced_tellers",
    "teller-0",
    "teller-1",
    "teller-0",
    "teller-1",
    "traced_tellers",
]
TELLER_0_STALE = [
    "traced_tellers",
    "teller-0",
    "teller-1",
    "teller-1",
    "teller-0",
    "traced_tellers",
]
# teller-0 runs to its end before teller-1 reads: nobody reads a stale value.
IN_TURN = ["traced_tellers", "teller-0", "teller-0", "teller-1", "teller-1", "traced_tellers"]


def test_parse_goal_reads_the_stale_form_and_names_bad_syntax():
    from seqlab.stepper import StaleRead, parse_goal

    assert parse_goal("stale:teller-1") == StaleRead("teller-1")
    assert parse_goal("stale:teller-1@account") == StaleRead("teller-1", "account")
    assert str(parse_goal("stale:teller-1@account")) == "stale:teller-1@account"
    assert parse_goal("fail") == "fail"
    for bad in ("stale:", "stale:@account", "stale:teller-1@", "stale: "):
        with pytest.raises(ValueError, match=r"goal must be written stale:TASK\[@OBJECT\]"):
            parse_goal(bad)
    with pytest.raises(ValueError, match="goal must be one of fail, deadlock, stale:TASK"):
        parse_goal("stail:teller-1")
    with pytest.raises(TypeError, match="goal"):
        parse_goal(3)
    with pytest.raises(ValueError, match="task"):
        StaleRead("")


def test_a_stale_read_is_reached_when_the_task_writes_over_a_newer_value():
    from seqlab.stepper import goal_reached

    stepper = walk_traced(TELLER_1_STALE[:4])
    # teller-0 has written, teller-1 holds a stale read but has not written it yet
    assert not goal_reached(stepper, "stale:teller-1@account")
    stepper.step("teller-1")
    assert goal_reached(stepper, "stale:teller-1@account")
    assert goal_reached(stepper, "stale:teller-1")  # any object
    assert not goal_reached(stepper, "stale:teller-0@account")
    # the wrong object, and an object written with no read before it, are not the goal
    assert not goal_reached(stepper, "stale:teller-1@ledger")
    stepper.close()
    in_turn = walk_traced(IN_TURN)
    assert in_turn.finished
    for goal in ("stale:teller-0", "stale:teller-1"):
        assert not goal_reached(in_turn, goal)


def test_a_stale_read_level_is_graded_from_its_stored_path():
    from seqlab.notebook import StepperWidget
    from seqlab.stepper import level_reached

    widget = StepperWidget(traced_tellers, goal="stale:teller-1@account")
    assert widget.goal == (
        "make teller-1 write account from a stale read (another task wrote it in between)"
    )
    for name in TELLER_1_STALE[:5]:
        widget.step(name)
    assert widget.goal_reached and not widget.stepper.finished
    level = widget.level
    assert level["reached"] and level["spec"] == "stale:teller-1@account"
    assert level["schedule"].endswith("|5")  # where the path ends: the goal came mid-run
    assert level_reached(traced_tellers, schedule=level["schedule"], goal=level["spec"])
    widget.close()
    # The other teller's stale write, a path in turn, and the winning path stopped one step
    # short all score 0; so does the winning path graded against another task.
    other = walk_traced(TELLER_0_STALE).schedule
    assert not level_reached(traced_tellers, schedule=other, goal="stale:teller-1@account")
    assert level_reached(traced_tellers, schedule=other, goal="stale:teller-0@account")
    in_turn = walk_traced(IN_TURN).schedule
    assert not level_reached(traced_tellers, schedule=in_turn, goal="stale:teller-1")
    short = walk_traced(TELLER_1_STALE[:4])
    short_schedule = short.schedule + "|4"
    short.close()
    # lockstep would go on to the stale write by itself; only the learner's 4 steps count
    assert not level_reached(traced_tellers, schedule=short_schedule, goal="stale:teller-1")
    whole = walk_traced(TELLER_1_STALE).schedule
    assert level_reached(traced_tellers, schedule=whole, goal="stale:teller-1@account")
