"""The check helpers: friendly failures, and no passing by faking equality or truth."""

from __future__ import annotations

import pytest
import trio

from seqlab.grading import CheckFailed, check, check_equal, check_explore, check_raises


class Yes(int):
    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = int.__hash__


class Truthy:
    def __bool__(self) -> bool:
        return True


def test_check_equal_passes_equal_plain_values_and_explains_differences() -> None:
    check_equal([1, (2, "x")], [1, (2, "x")])
    with pytest.raises(CheckFailed, match=r"the total should be 3, but it is 2\."):
        check_equal(2, 3, what="the total")


def test_objects_that_claim_equality_do_not_pass() -> None:
    with pytest.raises(CheckFailed, match="should be 4 \\(a int\\), but it is a Yes"):
        check_equal(Yes(0), 4)
    with pytest.raises(CheckFailed, match="but it is a list"):
        check_equal([Yes(0)], [4])


def test_check_wants_a_plain_truth_value() -> None:
    check(1 + 1 == 2, "arithmetic")
    with pytest.raises(CheckFailed, match="arithmetic"):
        check(False, "arithmetic")
    with pytest.raises(CheckFailed, match="not a Truthy"):
        check(Truthy(), "a flag")


def test_check_raises_reports_wrong_or_missing_exceptions() -> None:
    def boom() -> None:
        raise KeyError("k")

    assert isinstance(check_raises(KeyError, boom), KeyError)
    with pytest.raises(CheckFailed, match="should raise ValueError, but it raised KeyError"):
        check_raises(ValueError, boom)
    with pytest.raises(CheckFailed, match="returned normally"):
        check_raises(ValueError, lambda: None)


async def _unfinished() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_placeholder)


async def _placeholder() -> None:
    raise NotImplementedError("exercise x: replace this line with your solution")


async def _wrong() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fails)


async def _fails() -> None:
    await trio.lowlevel.checkpoint()
    check_equal(1, 2, what="the count")


def test_check_explore_unwraps_nursery_errors_and_names_the_schedule() -> None:
    with pytest.raises(CheckFailed) as info:
        check_explore(_wrong, seeds=range(3), what="the scenario")
    message = str(info.value)
    assert message.startswith(
        "the scenario failed on 3 of 3 schedules. In the simplest failing schedule found, "
        "it raised "
    )
    assert "CheckFailed: the count should be 2, but it is 1." in message
    assert "plain lockstep order fails" in message
    assert "Replay it: seqlab.run(_wrong, schedule='s1:|" in message


def test_check_explore_reports_an_unfinished_exercise_as_such() -> None:
    with pytest.raises(NotImplementedError, match="exercise x"):
        check_explore(_unfinished, seeds=range(2))


async def _short_of(target: int) -> None:
    await trio.lowlevel.checkpoint()
    check_equal(target - 1, target, what="the count")


def test_check_explore_replay_line_passes_the_scenario_arguments() -> None:
    with pytest.raises(CheckFailed) as info:
        check_explore(_short_of, 3, seeds=range(2))
    message = str(info.value)
    assert message.startswith("_short_of failed on 2 of 2 schedules.")
    assert "Replay it: seqlab.run(_short_of, 3, schedule='s1:|" in message


async def _quiet() -> None:
    await trio.lowlevel.checkpoint()


def test_a_rejected_trace_names_the_property_from_the_rule_docstring() -> None:
    def two_barrier_releases(trace: object) -> bool:
        """two tasks released together by one Barrier"""
        return False

    with pytest.raises(CheckFailed) as info:
        check_explore(_quiet, seeds=range(1), check=two_barrier_releases)
    assert "does not show what was required: two tasks released together by one Barrier" in str(
        info.value
    )


def test_a_rule_without_a_docstring_is_named() -> None:
    def every_task_sleeps(trace: object) -> bool:
        return False

    with pytest.raises(CheckFailed) as info:
        check_explore(_quiet, seeds=range(1), check=every_task_sleeps)
    assert (
        "does not show what was required: the rule every_task_sleeps (check=) accepts the trace"
        in str(info.value)
    )
