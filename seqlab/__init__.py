"""seqlab: a lab for learning, testing and using ordering primitives on trio.

The public API lives here. Importing seqlab stays light: no Jupyter code is imported until a
notebook loads the extension (``%load_ext seqlab``).
"""

from .barrier import Barrier, BarrierStatistics, BrokenBarrierError, Phaser, PhaserStatistics
from .convoy import (
    Convoy,
    ConvoyStatistics,
    DeadLetter,
    Delivery,
    Undelivered,
    UndeliveredWarning,
    open_convoy,
)
from .runtime import (
    BlockedTask,
    Coverage,
    Deadlock,
    ExploreResult,
    Failure,
    Interrupted,
    current_seed,
    explore,
    last_seed,
    run,
)
from .schedule import Schedule, ScheduleMismatch, Strategy
from .sequence import (
    AlertError,
    InsufficientCapacity,
    Pipeline,
    PipelineStatistics,
    RingBuffer,
    RingBufferStatistics,
    Sequence,
    SequenceBarrier,
    SequenceBarrierStatistics,
    SequenceStatistics,
    Stage,
    StageError,
    StageStatistics,
)
from .sequencer import (
    Dispatcher,
    DispatcherStatistics,
    Sequencer,
    SequencerStatistics,
    TaskCancelledError,
    Ticket,
    open_dispatcher,
    open_sequencer,
)
from .stepper import Stepper, TaskState
from .trace import Recorder, TraceEvent, emit, recording

__version__ = "0.1.0"

__all__ = [
    "AlertError",
    "Barrier",
    "BarrierStatistics",
    "BlockedTask",
    "BrokenBarrierError",
    "Coverage",
    "Convoy",
    "ConvoyStatistics",
    "DeadLetter",
    "Deadlock",
    "Delivery",
    "Dispatcher",
    "DispatcherStatistics",
    "ExploreResult",
    "Failure",
    "InsufficientCapacity",
    "Interrupted",
    "Phaser",
    "PhaserStatistics",
    "Pipeline",
    "PipelineStatistics",
    "Recorder",
    "RingBuffer",
    "Schedule",
    "ScheduleMismatch",
    "RingBufferStatistics",
    "Sequence",
    "SequenceBarrier",
    "SequenceBarrierStatistics",
    "SequenceStatistics",
    "TaskState",
    "Sequencer",
    "SequencerStatistics",
    "Stage",
    "Stepper",
    "Strategy",
    "StageError",
    "StageStatistics",
    "TaskCancelledError",
    "Ticket",
    "TraceEvent",
    "Undelivered",
    "UndeliveredWarning",
    "current_seed",
    "emit",
    "explore",
    "last_seed",
    "open_convoy",
    "open_dispatcher",
    "open_sequencer",
    "recording",
    "run",
    "spawn",
]


def __getattr__(name: str) -> object:
    # seqlab.spawn lives with the teaching kernel; importing it lazily keeps `import seqlab` light.
    if name == "spawn":
        from .notebook.kernel import spawn

        return spawn
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext seqlab``: register the ``%seqlab`` magics (imports Jupyter code only now)."""
    from .notebook.extension import load_ipython_extension as load

    load(ipython)
