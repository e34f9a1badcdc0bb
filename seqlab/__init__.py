"""seqlab: a lab for learning, testing and using ordering primitives on trio.

The public API lives here. Importing seqlab stays light: no Jupyter code is imported until a
notebook loads the extension (``%load_ext seqlab``).
"""

from .runtime import (
    BlockedTask,
    Deadlock,
    ExploreResult,
    Failure,
    current_seed,
    explore,
    last_seed,
    run,
)
from .trace import Recorder, TraceEvent, emit, recording

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext seqlab``: register the ``%seqlab`` magics (imports Jupyter code only now)."""
    from .notebook.extension import load_ipython_extension as load

    load(ipython)


__all__ = [
    "BlockedTask",
    "Deadlock",
    "ExploreResult",
    "Failure",
    "Recorder",
    "TraceEvent",
    "current_seed",
    "emit",
    "explore",
    "last_seed",
    "recording",
    "run",
]
