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


def describe_error(error: BaseException) -> str:
    """Each leaf exception of ``error`` with the user's own frames, one line each.

    Past :data:`LEAF_LIMIT` leaves (a group from a nursery of a thousand failing tasks), one
    line counts the rest by type.

    Example::

        ValueError: boom
          in scenario, line 3: await worker()
          in worker, line 2: raise ValueError("boom")
    """
    from ..runtime import Deadlock

    if isinstance(error, Deadlock):
        return f"{error}\n"
    lines: list[str] = []
    found = leaves(error)
    for leaf in found[:LEAF_LIMIT]:
        message = str(leaf)
        name = type(leaf).__name__
        lines.append(f"{name}: {_ADDRESS.sub('', message)}" if message else name)
        for frame in traceback.extract_tb(leaf.__traceback__):
            filename = frame.filename
            if not filename.startswith("<"):
                filename = os.path.abspath(filename)
                if filename.startswith(_LIBRARY_DIRS) or "site-packages" in filename:
                    continue
            name = "scenario" if filename.startswith(SCENARIO_FILE_PREFIX) else frame.name
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


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``, with exception groups flattened."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]
