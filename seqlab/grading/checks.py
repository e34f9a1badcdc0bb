"""Checks used by graded lesson cells: friendly when they fail, strict about what they accept.

A check cell passes when it runs without raising. Every check raises :class:`CheckFailed`
(an ``AssertionError``, as nbgrader expects) with a message written for the learner: what was
expected, what happened, and for concurrency checks the seed that fails and how to replay it.

Example (a check cell in a lesson)::

    from seqlab.grading import check_equal, check_explore

    check_equal(total_after_deposits(), 300, what="the balance after three deposits")
    check_explore(deposit_race_fixed, seeds=range(100), what="your fixed deposit scenario")
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..runtime import Deadlock, ExploreResult, explore
from ..trace import Recorder

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["CheckFailed", "check", "check_equal", "check_raises", "check_explore", "excerpt"]

_EXCERPT_LINES = 12


class CheckFailed(AssertionError):
    """A lesson check did not pass; the message says why and what to try."""


_PLAIN = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)
_PLAIN_DEPTH = 20


def _plain(value: object, depth: int = 0) -> bool:
    """True for values built only from built-in types (whose ``==`` learner code cannot fake)."""
    if type(value) not in _PLAIN or depth > _PLAIN_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_plain(item, depth + 1) for item in value)
    return True


def check(condition: object, message: str) -> None:
    """Pass when ``condition`` is true; otherwise fail with ``message``.

    ``condition`` must be a built-in value (``True``/``False``, a number, a list, ...): an
    object of a learner's class could claim to be true whatever it holds.
    """
    if not _plain(condition):
        raise CheckFailed(
            f"{message} (the check expected True or False, not a {type(condition).__name__})"
        )
    if not condition:
        raise CheckFailed(message)


def check_equal(actual: object, expected: object, *, what: str = "the result") -> None:
    """Pass when ``actual == expected``.

    When ``expected`` is a built-in value, ``actual`` must be one too (an object whose
    ``__eq__`` always says yes does not pass).
    """
    if _plain(expected) and not _plain(actual):
        raise CheckFailed(
            f"{what} should be {expected!r} (a {type(expected).__name__}), but it is a "
            f"{type(actual).__name__}: {actual!r}."
        )
    if not expected == actual:
        raise CheckFailed(f"{what} should be {expected!r}, but it is {actual!r}.")


def check_raises(
    expected: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[..., Any],
    *args: Any,
    what: str | None = None,
) -> BaseException:
    """Pass when ``fn(*args)`` raises ``expected``; return the exception for further checks."""
    label = what or f"{getattr(fn, '__name__', 'the call')}()"
    names = (
        " or ".join(e.__name__ for e in expected)
        if isinstance(expected, tuple)
        else expected.__name__
    )
    try:
        fn(*args)
    except expected as exc:
        return exc
    except Exception as exc:
        raise CheckFailed(
            f"{label} should raise {names}, but it raised {type(exc).__name__}: {exc}"
        ) from exc
    raise CheckFailed(f"{label} should raise {names}, but it returned normally.")


def excerpt(trace: Recorder, lines: int = _EXCERPT_LINES) -> str:
    """The last ``lines`` lines of a trace, the part that usually shows what went wrong."""
    text = trace.to_text().splitlines()
    if len(text) <= lines:
        return "\n".join(text)
    return "\n".join([f"... ({len(text) - lines} earlier events)", *text[-lines:]])


def _innermost(error: BaseException | None) -> BaseException | None:
    """The one exception inside nested single-member exception groups (nurseries make them)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def check_explore(
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
    seeds: Iterable[int] = range(100),
    check: Callable[[Recorder], Any] | None = None,
    what: str | None = None,
) -> ExploreResult:
    """Pass when ``async_fn(*args)`` succeeds (and ``check`` accepts its trace) on every seed.

    A racy solution passes some schedules and fails others; this runs many of them with
    :func:`seqlab.explore`. The failure names the first failing seed, shows the end of its
    trace, and gives the line that replays it in the notebook.
    """
    result = explore(async_fn, *args, seeds=seeds, check=check)
    if result.ok:
        return result
    first = result.failures[0].shrink(budget=60)
    name = getattr(async_fn, "__name__", "the scenario")
    label = what or f"{name}"
    error = _innermost(first.error)
    if isinstance(error, NotImplementedError):
        # An exercise left undone: say so plainly rather than as a schedule failure.
        raise error
    replay = ", ".join([name, *(repr(arg) for arg in args)])
    if error is None:
        name = getattr(check, "__name__", None) or repr(check)
        rule = " ".join((getattr(check, "__doc__", None) or "").split()) or (
            f"the rule {name} (check=) accepts the trace"
        )
        reason = f"its trace does not show what was required: {rule}"
    elif isinstance(error, Deadlock):
        reason = f"it deadlocked:\n{error}"
    else:
        reason = f"it raised {type(error).__name__}: {error}"
    story = "\n".join(first.explain().splitlines()[:-1])  # its replay line is given below
    raise CheckFailed(
        f"{label} failed on {len(result.failures)} of {result.runs} schedules. "
        f"In the simplest failing schedule found, {reason}\n{story}\n"
        f"End of its trace:\n{excerpt(first.trace)}\n"
        f"Replay it: seqlab.run({replay}, schedule={first.schedule!r}, "
        "recorder=seqlab.Recorder())"
    ) from first.error
