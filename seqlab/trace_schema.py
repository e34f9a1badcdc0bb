"""The trace's vocabulary, declared once: every event kind of every primitive, and its data keys.

A :class:`~seqlab.trace.TraceEvent` says that ``task`` did ``kind`` on ``primitive``; the
primitive's *family* is the first word of its label (``"Barrier 'phase'"`` belongs to
``"Barrier"``; a pipeline's ring, barriers and stages all report as ``"Pipeline '...'"``).
This module is the contract between the code that emits events (the primitives, the runtime,
the trace's own task instrument) and the code that reads them (the views, the Perfetto export,
lesson checks): it lists, per family, each kind, what it means, and each data key.

Nothing here runs on the hot path. A recorder made with ``Recorder(strict=True)`` checks every
event against these declarations as it is recorded (the test suite runs every primitive that
way), and :func:`check_event` does the same for one event. Families that are not declared here
(your own ``seqlab.emit("bank", "read", ...)``) are free-form.

Roles tell readers how a kind changes what a task is doing:

- ``wait``: after it the task waits on the primitive until a ``release`` of that primitive,
  its own next event, or a ``wake``;
- ``release``: ends every wait on the primitive (a barrier releases its whole generation);
- ``fail``: something went wrong (drawn in red);
- ``block`` / ``wake``: the task blocked (on anything, trio's own waits included) / resumed;
- ``exit``: the task finished (``outcome`` says how);
- ``deadlock``: the run declared a deadlock while this task was blocked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Kind",
    "SCHEMA",
    "family",
    "declared",
    "check_event",
    "kinds_with_role",
    "UndeclaredEventError",
]


@dataclass(frozen=True)
class Kind:
    """One event kind: what it means, its data keys (name -> meaning), its role for readers."""

    doc: str
    keys: Mapping[str, str] = field(default_factory=dict)
    role: str | None = None


_ROLES = frozenset({"wait", "release", "fail", "block", "wake", "exit", "deadlock"})

_GEN = "the barrier's generation (0, 1, ...)"
_TICKET = "the ticket's number in its sequencer, or its dispatcher for a direct task (0, 1, ...)"
_KEY = "the message's key"
_SEQ = "the message's number among its key's messages (0, 1, ...)"
_CONSUMER = "the consumer's index (0 .. consumers-1)"
_ATTEMPT = "which delivery attempt of the message (1, 2, ...)"
_STAGE = "the pipeline stage's name"
_RANGE_LO = "the first sequence of a range (absent when the range is one sequence)"

_BARRIER: dict[str, Kind] = {
    "arrive": Kind(
        "the task arrived at the barrier; all but the last arriver now wait",
        {
            "generation": _GEN,
            "index": "its arrival index in the generation (0 .. parties-1)",
            "n_waiting": "how many have arrived in this generation, this task included",
            "parties": "how many must arrive to release the generation",
        },
        "wait",
    ),
    "leave": Kind(
        "a waiting task was cancelled and left the barrier (which stays usable)",
        {"generation": _GEN, "n_waiting": "how many still wait"},
    ),
    "action": Kind("the last arriver runs the barrier's action", {"generation": _GEN}),
    "release": Kind(
        "the generation is complete: this task goes on with its index",
        {
            "generation": _GEN,
            "index": "the task's arrival index",
            "waited": "seconds the task waited at the barrier",
            "by": "the task whose arrival completed the generation",
        },
        "release",
    ),
    "broken": Kind(
        "the barrier broke (abort(), or its action raised); waiters get BrokenBarrierError",
        {"generation": _GEN, "reason": "why it broke"},
        "fail",
    ),
    "reset": Kind(
        "reset(): a new, empty generation; tasks that waited get BrokenBarrierError",
        {"generation": "the new generation", "broken_out": "how many waiters were thrown out"},
        "release",
    ),
}

_PHASE_KEYS = {
    "phase": "the phase the task arrived at",
    "arrived": "parties arrived in this phase",
    "registered": "parties registered",
}
_PHASER: dict[str, Kind] = {
    "register": Kind(
        "a party joined", {"phase": "the current phase", "registered": "parties registered"}
    ),
    "arrive": Kind("a party arrived at the current phase", _PHASE_KEYS),
    "deregister": Kind("a party arrived and left the phaser", _PHASE_KEYS),
    "advance": Kind(
        "the phase ended: every registered party arrived; waiters go on",
        {
            "phase": "the new phase",
            "registered": "parties registered",
            "terminated": "whether the phaser terminated",
        },
        "release",
    ),
}

_TICKET_END = {
    "ticket": _TICKET,
    "duration": "seconds the task ran",
    "error": "`Type: message` of what it raised (failed only)",
}
_SEQUENCER: dict[str, Kind] = {
    "submit": Kind(
        "a task was queued", {"ticket": _TICKET, "pending": "tasks queued and not yet started"}
    ),
    "start": Kind(
        "a worker started the task (on the dispatcher's turn)",
        {"ticket": _TICKET, "delay": "seconds it spent queued"},
    ),
    "done": Kind("the task returned", _TICKET_END),
    "failed": Kind("the task raised", _TICKET_END, "fail"),
    "cancelled": Kind("the task was cancelled (queued or running)", _TICKET_END),
}

_MESSAGE = {"key": _KEY, "sequence": _SEQ, "attempt": _ATTEMPT, "consumer": _CONSUMER}
_CONVOY: dict[str, Kind] = {
    "send": Kind("a message was sent", {"key": _KEY, "sequence": _SEQ}),
    "dedup": Kind(
        "a message was dropped as a repeat inside the dedup window",
        {"key": _KEY, "dedup_id": "its dedup_id"},
    ),
    "lock": Kind("a consumer took the key's session", {"key": _KEY, "consumer": _CONSUMER}),
    "deliver": Kind("the handler was called with the message", _MESSAGE),
    "done": Kind("the handler returned: the message is delivered", _MESSAGE),
    "retry": Kind(
        "the handler raised; the message will be delivered again",
        {**_MESSAGE, "error": "`Type: message` of what the handler raised"},
    ),
    "lock_lost": Kind(
        "the handler ran past lock_timeout: it was cancelled and the key's session lost",
        _MESSAGE,
        "fail",
    ),
    "dead_letter": Kind(
        "the message failed max_attempts times and became a DeadLetter",
        {
            **_MESSAGE,
            "error": "`Type: message` of the last failure",
            "message": "the message, shortened",
        },
        "fail",
    ),
    "unlock": Kind(
        "the consumer gave the key's session back", {"key": _KEY, "consumer": _CONSUMER}
    ),
    "undelivered": Kind(
        "the convoy exited early with messages nobody handled",
        {"count": "how many were undelivered"},
        "fail",
    ),
}

_SEQUENCE: dict[str, Kind] = {
    "advance": Kind("the sequence's value moved forward", {"sequence": "the new value"}),
}

_WAIT_FOR = {
    "wanted": "the sequence the task waits for",
    "available": "the highest sequence available when it started waiting",
    "stage": "the pipeline stage waiting (pipelines only)",
}
_SEQUENCE_BARRIER: dict[str, Kind] = {
    "wait": Kind("wait_for(n) had to wait: a dependency is behind n", _WAIT_FOR, "wait"),
}

_RING: dict[str, Kind] = {
    "full": Kind(
        "a producer waits for room: the gating sequences have not passed the slot",
        {
            "wanted": "the highest sequence the producer wants to claim",
            "available": "the highest sequence it could claim now",
        },
        "wait",
    ),
    "claim": Kind(
        "a producer claimed slots",
        {"sequence": "the last claimed sequence", "lo": _RANGE_LO},
    ),
    "publish": Kind(
        "a producer published slots: consumers may read them",
        {"sequence": "the last published sequence", "lo": _RANGE_LO, "cursor": "the cursor after"},
    ),
}

_PIPELINE: dict[str, Kind] = {
    **_RING,
    **_SEQUENCE_BARRIER,
    "drain": Kind("the pipeline waits for its last stages to finish", _WAIT_FOR, "wait"),
    "stage": Kind(
        "the pipeline started a stage",
        {
            "stage": _STAGE,
            "after": "the stages it comes after (empty: it reads the producer's cursor)",
            "size": "the ring's size",
        },
    ),
    "advance": Kind(
        "a stage finished a batch (or, on the pipeline's cursor, the cursor moved)",
        {
            "stage": _STAGE,
            "sequence": "the stage's sequence after the batch",
            "batch": "how many events the batch had",
        },
    ),
    "error": Kind(
        "a stage's handler raised",
        {
            "stage": _STAGE,
            "sequence": "the event's sequence",
            "error": "repr of the exception",
            "action": "what the pipeline did: stop, or skip the event",
        },
        "fail",
    ),
}

_TASK: dict[str, Kind] = {
    "spawn": Kind("the task started", {"parent": "the task whose nursery started it"}),
    "exit": Kind(
        "the task finished",
        {
            "outcome": "returned, raised or cancelled",
            "error": "`Type: message` of what it raised (raised only)",
        },
        "exit",
    ),
    "block": Kind(
        "the task blocked (Recorder(waits=...) records these)",
        {
            "what": "the wait in words: 'at Barrier 'b' (3 of 4 arrived)', 'in trio.sleep until 2.000'",
            "on": "a short name for what it waits on, to group waits ('trio.Lock', 'sleep', ...)",
        },
        "block",
    ),
    "wake": Kind(
        "the task resumed after blocking",
        {
            "waited": "seconds it was blocked",
            "by": "the task that woke it, when known, or 'timer' for a deadline",
            "at": "when the waker woke it (trace time)",
        },
        "wake",
    ),
}

_RUNTIME: dict[str, Kind] = {
    "deadlock": Kind(
        "seqlab.run declared a deadlock while this task was blocked",
        {"waits_on": "what the task waits on, as in the Deadlock report"},
        "deadlock",
    ),
}

_SCHEDULER: dict[str, Kind] = {
    "decision": Kind(
        "the controlled scheduler held this task back: a decisive choice of the schedule",
        {"index": "the choice's number in the schedule (1-based)", "text": "the choice in words"},
    ),
}

#: family -> kind -> declaration. A family is the first word of a primitive's label.
SCHEMA: dict[str, dict[str, Kind]] = {
    "task": _TASK,
    "runtime": _RUNTIME,
    "scheduler": _SCHEDULER,
    "Barrier": _BARRIER,
    "Phaser": _PHASER,
    "Sequencer": _SEQUENCER,
    "Dispatcher": _SEQUENCER,
    "Convoy": _CONVOY,
    "Sequence": _SEQUENCE,
    "SequenceBarrier": _SEQUENCE_BARRIER,
    "RingBuffer": {**_RING, "advance": _SEQUENCE["advance"]},
    "Pipeline": _PIPELINE,
}

for _kinds in SCHEMA.values():
    for _kind in _kinds.values():
        assert _kind.role is None or _kind.role in _ROLES, _kind


class UndeclaredEventError(ValueError):
    """An event of a declared family used a kind or a data key the schema does not declare."""


def family(primitive: str) -> str:
    """The family of a primitive's label: ``"Barrier 'phase'"`` -> ``"Barrier"``."""
    return primitive.split(" ", 1)[0]


def declared(primitive: str, kind: str) -> Kind | None:
    """The declaration of ``kind`` for ``primitive`` (a label), or None if there is none."""
    kinds = SCHEMA.get(family(primitive))
    return None if kinds is None else kinds.get(kind)


def check_event(primitive: str, kind: str, data: Mapping[str, Any]) -> None:
    """Raise :class:`UndeclaredEventError` if a declared family's event breaks the schema."""
    kinds = SCHEMA.get(family(primitive))
    if kinds is None:
        return  # a user's own family: free-form
    decl = kinds.get(kind)
    if decl is None:
        raise UndeclaredEventError(
            f"{primitive} emitted kind {kind!r}, which seqlab.trace_schema does not declare "
            f"for {family(primitive)} (declared: {', '.join(sorted(kinds))})"
        )
    extra = sorted(set(data) - set(decl.keys))
    if extra:
        raise UndeclaredEventError(
            f"{primitive} {kind} carries undeclared data key(s) {', '.join(extra)} "
            f"(declared: {', '.join(decl.keys) or 'none'})"
        )


def kinds_with_role(role: str, families: Iterable[str] | None = None) -> frozenset[str]:
    """Every kind (of the given families, or all) whose declaration has ``role``."""
    if role not in _ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(_ROLES))}, got {role!r}")
    names = SCHEMA if families is None else families
    return frozenset(k for f in names for k, d in SCHEMA[f].items() if d.role == role)
