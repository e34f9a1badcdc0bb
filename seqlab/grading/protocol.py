"""What the sandboxed runner and the grader say to each other: typed records, plain JSON.

The grader (:mod:`seqlab.grading.grader`) never runs learner code and the runner
(:mod:`seqlab.grading._runner`, inside the sandbox) never decides anything. The runner
executes cells and reports *observations*: values as canonical JSON, exceptions as type
and message, traces as lists of events. Every record here is a frozen dataclass with a
``to_json``/``from_json`` pair; ``from_json`` checks every field's type, because the bytes it
reads were written by a process that learner code controls.

Canonical values (:func:`encode_value` / :func:`decode_value`): ``None``, ``bool``, ``int``,
``str`` and finite ``float`` are themselves; a list is a JSON array; a tuple is
``{"tuple": [...]}``; a dict is ``{"dict": [[key, value], ...]}``; a non-finite float is
``{"float": "inf"}``. Only values whose type is *exactly* one of those pass: an ``int``
subclass with its own ``__eq__`` is "not plain data", and so is any other object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NotPlain",
    "encode_value",
    "decode_value",
    "ProtocolError",
    "Step",
    "Job",
    "ErrorInfo",
    "Observation",
    "Run",
    "Exploration",
    "StepReport",
    "ExplainRequest",
    "ExplainAnswer",
    "Explained",
    "Need",
    "Done",
    "Unreadable",
    "CheckSource",
    "RunnerMessage",
    "runner_message_json",
    "read_runner_message",
]

MAX_DEPTH = 40
MAX_ITEMS = 100_000


class NotPlain(TypeError):
    """A value that cannot cross to the grader: its type is named in ``type_name``."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"cannot grade a {type_name}; return plain data")
        self.type_name = type_name


class ProtocolError(ValueError):
    """A message from the runner that does not have the agreed shape."""


def encode_value(value: Any) -> Any:
    """``value`` as canonical JSON data, or :class:`NotPlain` naming the first odd type."""
    budget = [MAX_ITEMS]

    def enc(v: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise NotPlain(f"value with more than {MAX_ITEMS} parts")
        if depth > MAX_DEPTH:
            raise NotPlain(f"value nested more than {MAX_DEPTH} deep")
        t = type(v)
        if v is None or t is bool or t is int or t is str:
            return v
        if t is float:
            return v if math.isfinite(v) else {"float": repr(v)}
        if t is list:
            return [enc(x, depth + 1) for x in v]
        if t is tuple:
            return {"tuple": [enc(x, depth + 1) for x in v]}
        if t is dict:
            return {"dict": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        raise NotPlain(getattr(t, "__name__", "value") if isinstance(t, type) else "value")

    return enc(value, 0)


def decode_value(data: Any) -> Any:
    """The Python value of canonical JSON ``data`` (raises :class:`ProtocolError`)."""

    def dec(d: Any, depth: int) -> Any:
        if depth > MAX_DEPTH + 1:
            raise ProtocolError("value nested too deep")
        if d is None or isinstance(d, (bool, int, str)):
            return d
        if isinstance(d, float):
            return d
        if isinstance(d, list):
            return [dec(x, depth + 1) for x in d]
        if isinstance(d, dict) and len(d) == 1:
            (tag, body), *_ = d.items()
            if tag == "tuple" and isinstance(body, list):
                return tuple(dec(x, depth + 1) for x in body)
            if tag == "dict" and isinstance(body, list):
                out = {}
                for pair in body:
                    if not (isinstance(pair, list) and len(pair) == 2):
                        raise ProtocolError("a dict entry is not a [key, value] pair")
                    key = dec(pair[0], depth + 1)
                    try:
                        out[key] = dec(pair[1], depth + 1)
                    except TypeError as exc:  # an unhashable key
                        raise ProtocolError(f"unusable dict key: {exc}") from None
                return out
            if tag == "float" and body in ("inf", "-inf", "nan"):
                return float(body)
        raise ProtocolError(f"not a canonical value: {type(d).__name__}")

    return dec(data, 0)


def _get(data: Any, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if not isinstance(data, dict):
        raise ProtocolError(f"expected an object, got {type(data).__name__}")
    if key not in data:
        if default is ...:
            raise ProtocolError(f"missing field {key!r}")
        return default
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


@dataclass(frozen=True)
class Step:
    """One cell to run. ``kind``: ``setup`` (lesson code), ``solution`` (learner code, kept
    when it finishes) or ``check`` (runs in a throwaway copy; its source is sent only when the
    runner reaches it, so no earlier cell can read it). A ``deferred`` check (the full cell,
    hidden parts included) runs from a snapshot of the notebook at its place, but only after
    every other step: nothing learner code could learn from it reaches any later feedback."""

    index: int
    kind: str
    grade_id: str
    source: str = ""
    deferred: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "grade_id": self.grade_id,
            "source": self.source,
            "deferred": self.deferred,
        }

    @classmethod
    def from_json(cls, data: Any) -> Step:
        kind = _get(data, "kind", str)
        if kind not in ("setup", "solution", "check"):
            raise ProtocolError(f"unknown step kind {kind!r}")
        return cls(
            _get(data, "index", int),
            kind,
            _get(data, "grade_id", str),
            _get(data, "source", str, ""),
            _get(data, "deferred", bool, False),
        )


@dataclass(frozen=True)
class Job:
    """Everything the runner needs: the steps (check sources left out) and the limits."""

    steps: list[Step]
    cell_timeout: float
    memory_mb: int
    cpu_seconds: int
    max_report_bytes: int = 8 * 1024 * 1024
    processes: int = 64

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": [s.to_json() for s in self.steps],
            "cell_timeout": self.cell_timeout,
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            "max_report_bytes": self.max_report_bytes,
            "processes": self.processes,
        }

    @classmethod
    def from_json(cls, data: Any) -> Job:
        steps = [Step.from_json(s) for s in _get(data, "steps", list)]
        return cls(
            steps,
            float(_get(data, "cell_timeout", (int, float))),
            _get(data, "memory_mb", int),
            _get(data, "cpu_seconds", int),
            _get(data, "max_report_bytes", int, 8 * 1024 * 1024),
            _get(data, "processes", int, 64),
        )


MAX_MESSAGE = 2000


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 30] + " ... (shortened)"


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as data: its type name, its message (shortened) and, when it happened in
    a check cell, the line of that cell."""

    type: str
    message: str
    line: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "line": self.line}

    @classmethod
    def from_json(cls, data: Any) -> ErrorInfo:
        line = _get(data, "line", (int, type(None)), None)
        return cls(clip(_get(data, "type", str))[:200], clip(_get(data, "message", str)), line)


@dataclass(frozen=True)
class Observation:
    """What learner code produced at a check site: a canonical ``value``, or the name of the
    type that could not be sent (``not_plain``)."""

    site: int
    value: Any = None
    not_plain: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "value": self.value, "not_plain": self.not_plain}

    @classmethod
    def from_json(cls, data: Any) -> Observation:
        not_plain = _get(data, "not_plain", (str, type(None)), None)
        value = _get(data, "value", object, None)
        if not_plain is None:
            decode_value(value)  # validated here; decoded again where compared
        return cls(
            _get(data, "site", int), value, not_plain if not_plain is None else clip(not_plain, 200)
        )


@dataclass(frozen=True)
class Run:
    """One explored schedule: its seed, observations, error and (when a rule needs it) trace."""

    seed: int
    observations: list[Observation] = field(default_factory=list)
    error: ErrorInfo | None = None
    trace: list[dict[str, Any]] | None = None
    schedule: str | None = None
    explanation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "observations": [o.to_json() for o in self.observations],
            "error": self.error.to_json() if self.error else None,
            "trace": self.trace,
            "schedule": self.schedule,
            "explanation": self.explanation,
        }

    @classmethod
    def from_json(cls, data: Any) -> Run:
        error = _get(data, "error", (dict, type(None)), None)
        trace = _get(data, "trace", (list, type(None)), None)
        schedule = _get(data, "schedule", (str, type(None)), None)
        explanation = _get(data, "explanation", (str, type(None)), None)
        return cls(
            _get(data, "seed", int),
            [Observation.from_json(o) for o in _get(data, "observations", list, [])],
            ErrorInfo.from_json(error) if error is not None else None,
            trace,
            clip(schedule) if schedule else None,
            clip(explanation) if explanation else None,
        )


@dataclass(frozen=True)
class Exploration:
    """The runs of one ``check_explore`` site (or the error that stopped it starting)."""

    site: int
    runs: list[Run] = field(default_factory=list)
    error: ErrorInfo | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "runs": [r.to_json() for r in self.runs],
            "error": self.error.to_json() if self.error else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> Exploration:
        error = _get(data, "error", (dict, type(None)), None)
        return cls(
            _get(data, "site", int),
            [Run.from_json(r) for r in _get(data, "runs", list, [])],
            ErrorInfo.from_json(error) if error is not None else None,
        )


STATUSES = ("ok", "error", "timeout", "crashed", "oversized")


@dataclass(frozen=True)
class StepReport:
    """How one step ended (``status``: ok, error, timeout, crashed, oversized) and, for a check
    step, what it observed."""

    index: int
    status: str
    error: ErrorInfo | None = None
    observations: list[Observation] = field(default_factory=list)
    explorations: list[Exploration] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "error": self.error.to_json() if self.error else None,
            "observations": [o.to_json() for o in self.observations],
            "explorations": [e.to_json() for e in self.explorations],
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Any) -> StepReport:
        status = _get(data, "status", str)
        if status not in STATUSES:
            raise ProtocolError(f"unknown status {status!r}")
        error = _get(data, "error", (dict, type(None)), None)
        return cls(
            _get(data, "index", int),
            status,
            ErrorInfo.from_json(error) if error is not None else None,
            [Observation.from_json(o) for o in _get(data, "observations", list, [])],
            [Exploration.from_json(e) for e in _get(data, "explorations", list, [])],
            float(_get(data, "seconds", (int, float), 0.0)),
        )


@dataclass(frozen=True)
class ExplainRequest:
    """The grader asks the runner to replay one failing run of a visible exploration (``site``,
    ``seed``) so that exploration can shrink and explain it. The replay fails again when it
    gives the wrong value ``value`` at ``obs_site`` (no expected value needed), or, with
    ``rule``, when the visible trace rule (sent with the answer) rejects its trace."""

    site: int
    seed: int
    obs_site: int | None = None
    value: Any = None
    rule: bool = False

    def __post_init__(self) -> None:
        if self.rule == (self.obs_site is not None):
            raise ProtocolError("an explain request names a wrong value or a rule, not both")

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "seed": self.seed,
            "obs_site": self.obs_site,
            "value": self.value,
            "rule": self.rule,
        }

    @classmethod
    def from_json(cls, data: Any) -> ExplainRequest:
        value = _get(data, "value", object, None)
        decode_value(value)
        return cls(
            _get(data, "site", int),
            _get(data, "seed", int),
            _get(data, "obs_site", (int, type(None)), None),
            value,
            _get(data, "rule", bool, False),
        )


@dataclass(frozen=True)
class ExplainAnswer:
    """The grader's answer to check step ``index``'s report: the run to replay (or ``None``)
    and, for a rule's replay, the visible cell's source with its rules kept. Tagged with the
    step, so that an answer arriving after the runner stopped waiting for it is recognised and
    dropped instead of being read as the next check's source."""

    index: int
    request: ExplainRequest | None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.index,
            "explain": self.request.to_json() if self.request else None,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Any) -> ExplainAnswer:
        request = _get(data, "explain", (dict, type(None)), None)
        return cls(
            _get(data, "answer", int),
            ExplainRequest.from_json(request) if request is not None else None,
            _get(data, "source", str, ""),
        )


@dataclass(frozen=True)
class Explained:
    """The runner's replay of an :class:`ExplainRequest`: the exploration of that one run, with
    its shrunk schedule, explanation and trace, for check step ``index``."""

    index: int
    exploration: Exploration

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "exploration": self.exploration.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> Explained:
        return cls(_get(data, "index", int), Exploration.from_json(_get(data, "exploration", dict)))


# --------------------------------------------------------------------------- the envelope
#
# The runner writes one JSON object per line: ``{"report": StepReport}``, ``{"need": index}``,
# ``{"explained": Explained}`` or ``{"done": true}``. The grader writes the Job, then
# ``CheckSource`` when asked, and an ``ExplainAnswer`` after each visible check's report.


@dataclass(frozen=True)
class Need:
    """The runner reached check step ``index`` and asks for its source."""

    index: int


@dataclass(frozen=True)
class Done:
    """The runner has run every step."""


@dataclass(frozen=True)
class Unreadable:
    """A report without the agreed shape (the runner is a process learner code controls):
    scored as a check that did not finish; ``index`` when it names one."""

    index: int | None


@dataclass(frozen=True)
class CheckSource:
    """Check step ``index``'s code for the sandbox, sent only when the runner reaches it."""

    index: int
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.index, "source": self.source}

    @classmethod
    def from_json(cls, data: Any) -> CheckSource:
        return cls(_get(data, "check", int), _get(data, "source", str))


RunnerMessage = StepReport | Need | Done | Explained | Unreadable


def runner_message_json(message: RunnerMessage) -> dict[str, Any]:
    """``message`` as the runner writes it."""
    if isinstance(message, StepReport):
        return {"report": message.to_json()}
    if isinstance(message, Need):
        return {"need": message.index}
    if isinstance(message, Explained):
        return {"explained": message.to_json()}
    if isinstance(message, Done):
        return {"done": True}
    raise TypeError(f"the runner does not send a {type(message).__name__}")


def read_runner_message(data: Any) -> RunnerMessage:
    """One line from the runner, checked; :class:`ProtocolError` if it is none of them."""
    if not isinstance(data, dict) or len(data) != 1:
        raise ProtocolError("a runner message is an object with one field")
    ((kind, body),) = data.items()
    if kind == "report":
        try:
            return StepReport.from_json(body)
        except ProtocolError:
            index = body.get("index") if isinstance(body, dict) else None
            ok = isinstance(index, int) and not isinstance(index, bool)
            return Unreadable(index if ok else None)
    if kind == "need":
        return Need(_get(data, "need", int))
    if kind == "explained":
        return Explained.from_json(body)
    if kind == "done" and body is True:
        return Done()
    raise ProtocolError(f"unknown runner message {kind!r}")
