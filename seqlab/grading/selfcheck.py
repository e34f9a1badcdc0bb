"""``%seqlab check EXERCISE_ID``: run an exercise's visible checks in the learner's notebook.

The checks come from the student version installed with seqlab (which has only the visible
checks), not from the learner's copy, and run in the learner's namespace so they see the learner's code. The answer
is a short, friendly report rather than a traceback.

Example (in a lesson notebook)::

    %seqlab check deposit          # the exercise's solution grade_id, or
    %seqlab check deposit-check    # one check cell's grade_id
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

from .checks import CheckFailed
from .lesson import Lesson, LessonNotFound, TestCell, installed_lessons, load_lesson

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["self_check", "find_checks"]


def _candidates(lesson: str | Path | None, user_ns: dict[str, Any]) -> list[Lesson]:
    if lesson is not None:
        return [load_lesson(lesson)]
    session = str(user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME") or "")
    known = installed_lessons()
    stem = Path(session).stem if session else ""
    if stem in known:
        return [load_lesson(known[stem])]
    return [load_lesson(path) for path in known.values()]


def find_checks(
    exercise_id: str, user_ns: dict[str, Any], lesson: str | Path | None = None
) -> tuple[Lesson, list[TestCell]]:
    """The lesson and check cells for ``exercise_id`` (a solution or a check ``grade_id``)."""
    for candidate in _candidates(lesson, user_ns):
        tests = [t for t in candidate.tests if exercise_id in (t.grade_id, t.exercise)]
        if tests:
            return candidate, tests
    raise LessonNotFound(f"no exercise or check called {exercise_id!r} in the lesson")


def _run(cell: TestCell, user_ns: dict[str, Any]) -> None:
    code = compile(
        cell.visible_source,
        f"<check {cell.grade_id}>",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    result = eval(code, user_ns)
    if result is not None and hasattr(result, "close"):
        result.close()
        raise RuntimeError(
            "this check awaits at top level, which a magic cannot do: run its check cell instead"
        )


def self_check(exercise_id: str, user_ns: dict[str, Any], lesson: str | Path | None = None) -> str:
    """Run the visible checks for ``exercise_id`` in ``user_ns``; return a friendly report."""
    exercise_id = exercise_id.strip()
    if not exercise_id:
        return (
            "Which exercise? Use: %seqlab check EXERCISE_ID (the id is in the exercise's heading)."
        )
    try:
        found, tests = find_checks(exercise_id, user_ns, lesson)
    except LessonNotFound as error:
        return f"Cannot check {exercise_id!r}: {error}."
    lines: list[str] = []
    passed = 0
    for cell in tests:
        try:
            _run(cell, user_ns)
        except CheckFailed as failure:
            lines.append(f"✗ {cell.grade_id}: not yet.\n{_indent(str(failure))}")
        except NotImplementedError:
            lines.append(_NOT_DONE.format(cell.grade_id))
        except BaseExceptionGroup as group:
            # The placeholder raised inside tasks: trio gathers their errors in a group.
            inner = _leaves(group)
            if any(isinstance(leaf, NotImplementedError) for leaf in inner):
                lines.append(_NOT_DONE.format(cell.grade_id))
            elif not all(isinstance(leaf, Exception) for leaf in inner):
                raise
            else:
                first = inner[0]
                more = f" (and {len(inner) - 1} more)" if len(inner) > 1 else ""
                lines.append(
                    f"✗ {cell.grade_id}: your code raised {type(first).__name__}: {first}{more}"
                )
        except NameError as error:
            lines.append(
                f"✗ {cell.grade_id}: {error}. Did you run the exercise's cell (and the cells "
                "above it)?"
            )
        except Exception as error:
            lines.append(f"✗ {cell.grade_id}: your code raised {type(error).__name__}: {error}")
        else:
            passed += 1
            lines.append(f"✓ {cell.grade_id}: passed.")
    hidden = any(cell.has_hidden for cell in tests)
    head = f"{exercise_id} ({found.id}): {passed} of {len(tests)} visible check(s) passed."
    tail = (
        "\nThe grader runs more checks than these (and more schedules), so keep your solution "
        "general."
        if hidden and passed == len(tests)
        else ""
    )
    return "\n".join([head, *lines]) + tail


_NOT_DONE = (
    "✗ {}: the exercise is not done yet (its placeholder still raises NotImplementedError). "
    "Write your solution, run its cell, then check again."
)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in _leaves(e)]
    return [error]


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
