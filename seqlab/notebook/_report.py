"""Short, deterministic error reports for notebook output (no paths, no addresses)."""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Any

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

SCENARIO_FILE_PREFIX = "<seqlab scenario"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

# Frames from these directories (the standard library, trio, seqlab) are left out of reports:
# a report shows the code the user wrote.
_LIBRARY_DIRS = tuple(
    directory + os.sep
    for directory in (
        os.path.dirname(os.path.abspath(os.__file__)),
        os.path.dirname(os.path.abspath(trio.__file__)),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
)


def safe_repr(value: Any) -> str:
    """``value`` on one line as IPython shows it (sets sorted), without memory addresses.

    Plain ``repr`` of a set of strings changes order from one process to the next (string
    hashing is randomised), which would make a stored notebook output fail nbval.
    """
    from IPython.lib.pretty import pretty

    return _ADDRESS.sub("", pretty(value, max_width=sys.maxsize))


#: describe_error reports this many leaves of an exception group in full, then counts the rest.
LEAF_LIMIT = 3


def describe_error(error: BaseException, recorder: Any = None) -> str:
    """Each leaf exception of ``error`` with the user's own frames, one line each.

    An exception group (a nursery whose tasks failed) is never shown as itself: its leaves
    are, each first. Given the run's ``recorder`` (a :class:`seqlab.Recorder`), a leaf that a
    child task raised is named after that task, as the trace's exit event says.
    Past :data:`LEAF_LIMIT` leaves (a group from a nursery of a thousand failing tasks), one
    line counts the rest by type.

    Example::

        teller-2 raised NotImplementedError: exercise 1 is not done yet
          in teller, line 3: deposit(account, 10)
          in deposit, line 2: raise NotImplementedError("exercise 1 is not done yet")
    """
    from ..runtime import Deadlock

    if isinstance(error, Deadlock):
        return f"{error}\n"
    lines: list[str] = []
    found = leaves(error)
    raisers = _raisers(recorder) if isinstance(error, BaseExceptionGroup) else []
    for leaf in found[:LEAF_LIMIT]:
        message = str(leaf)
        name = type(leaf).__name__
        text = f"{name}: {_ADDRESS.sub('', message)}" if message else name
        task = _take_raiser(raisers, text)
        lines.append(f"{task} raised {text}" if task else text)
        for frame in traceback.extract_tb(leaf.__traceback__):
            filename = frame.filename
            if not filename.startswith("<"):
                filename = os.path.abspath(filename)
                if filename.startswith(_LIBRARY_DIRS) or "site-packages" in filename:
                    continue
            # A function defined in the scenario keeps its own name; the body is "scenario".
            name = frame.name
            code = f": {frame.line.strip()}" if frame.line else ""
            lines.append(f"  in {name}, line {frame.lineno}{code}")
    rest = found[LEAF_LIMIT:]
    if rest:
        counts: dict[str, int] = {}
        for leaf in rest:
            counts[type(leaf).__name__] = counts.get(type(leaf).__name__, 0) + 1
        kinds = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
        lines.append(f"... and {len(rest)} more error{'s' * (len(rest) > 1)} ({kinds})")
    return "\n".join(lines) + "\n"


def _raisers(recorder: Any) -> list[tuple[str, str]]:
    """(task, "Type: message") for each task the trace saw end by raising, in order."""
    if recorder is None:
        return []
    return [
        (event.task, str(event.data["error"]))
        for event in recorder.events
        if event.primitive == "task"
        and event.kind == "exit"
        and event.data.get("outcome") == "raised"
        and event.data.get("error")
    ]


def _take_raiser(raisers: list[tuple[str, str]], text: str) -> str | None:
    """The first task (not yet named) whose exit said ``text``; it is used up."""
    for i, (task, error) in enumerate(raisers):
        if error.removesuffix(": ") == text:
            del raisers[i]
            return task
    return None


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``, with exception groups flattened."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]


def show_group(
    shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
) -> Any:
    """IPython's handler for an exception group raised by a cell (a nursery whose tasks failed).

    The learner sees the leaf exceptions first, each with their own frames only (see
    :func:`describe_error`), instead of trio's nested group traceback of library frames.
    ``%tb`` still prints the whole traceback. A group holding a KeyboardInterrupt (or another
    non-Exception) is shown the usual way.
    """
    found = leaves(value)
    if not all(isinstance(leaf, Exception) for leaf in found):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # for %tb
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    count = len(found)
    lines = describe_error(value).rstrip("\n").splitlines()
    lines.append(
        f"({type(value).__name__} of {count} error{'s' * (count != 1)} from tasks; "
        "%tb prints the full traceback)"
    )
    shell._showtraceback(etype, value, lines)
    return None
