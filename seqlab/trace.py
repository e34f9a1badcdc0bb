"""What each task did: trace events, the recorder that collects them, and their text form.

Primitives report progress with :func:`emit`. When no recorder is active that costs one
context-variable lookup and nothing else, so tracing can stay in every hot path.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, NamedTuple

import trio
from trio._core._run import SystemClock

from ._callables import is_async_callable

__all__ = [
    "TraceEvent",
    "Recorder",
    "recording",
    "emit",
    "current_recorder",
    "clock_reader",
    "task_label",
]

_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "seqlab_recorder", default=None
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_NO_DATA: Mapping[str, Any] = MappingProxyType({})
_current_time = trio.current_time
_FIELDS = 5  # time, task label, primitive, kind, data: one event in Recorder._raw


class TraceEvent(NamedTuple):
    """One thing that happened: at ``time``, ``task`` did ``kind`` on ``primitive``.

    ``time`` is seconds since recording started (virtual seconds under :func:`seqlab.run`).
    ``data`` is a small dict of details, such as an arrival index or a queue delay.
    A named tuple, because recording must stay cheap on hot paths.
    """

    time: float
    task: str
    primitive: str
    kind: str
    data: Mapping[str, Any] = _NO_DATA

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "task": self.task,
            "primitive": self.primitive,
            "kind": self.kind,
            "data": {k: _jsonable(v) for k, v in self.data.items()},
        }


def task_label(task: trio.lowlevel.Task) -> str:
    """A short, stable name for ``task``: its own name, without trio's module prefix."""
    name = task.name
    qualname = getattr(task.coro, "__qualname__", None)
    if not qualname:
        return name
    # trio's default name is "module.qualname"; the last part is what people wrote. A name
    # given by hand ("coworker" for a function "worker") is kept as it is.
    frame = getattr(task.coro, "cr_frame", None)
    module = frame.f_globals.get("__name__") if frame is not None else None
    default = name.endswith("." + qualname) if module is None else name == f"{module}.{qualname}"
    return qualname.rsplit(".", 1)[-1] if default or name == qualname else name


class Recorder:
    """Collects the :class:`TraceEvent` s of a run, in the order they happened.

    Pass it to :func:`seqlab.run` (``seqlab.run(main, recorder=rec)``) to trace the whole run,
    or use ``with seqlab.recording(rec):`` inside a run to trace a part of it. Tasks started
    while the recorder is active are traced too, including when they start and exit.

    Example::

        rec = seqlab.Recorder()
        seqlab.run(main, seed=1, recorder=rec)
        print(rec.to_text())

    Under :func:`seqlab.run`, the same program and seed give a byte-identical ``to_text()``.
    """

    def __init__(self) -> None:
        #: The seed of the run that filled this recorder, when :func:`seqlab.run` did.
        self.seed: int | None = None
        self._t0: float | None = None
        self._now: Callable[[], float] = _current_time
        # Events are kept as plain tuples of strings and numbers and turned into TraceEvents on
        # demand: that keeps recording cheap, also for the garbage collector, which soon stops
        # tracking such tuples (a reference to a task would keep it scanning every one).
        self._raw: list[Any] = []
        self._events: list[TraceEvent] = []
        self._labels: dict[trio.lowlevel.Task, str] = {}
        self._label_counts: dict[str, int] = {}
        self._listeners: list[Callable[[TraceEvent], object]] = []
        # One lifecycle instrument per recorder, installed while at least one recording
        # (a seqlab.run or a recording() block) uses it: nested recordings of the same
        # recorder must not record each spawn and exit twice.
        self._lifecycle = _LifecycleInstrument(self)
        self._lifecycle_users = 0

    @property
    def events(self) -> list[TraceEvent]:
        """Every event recorded so far, oldest first."""
        raw = self._raw
        done = len(self._events) * _FIELDS
        if done < len(raw):
            if self._t0 is None:
                self._t0 = raw[0]
            t0 = self._t0
            self._events.extend(
                TraceEvent(raw[i] - t0, raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4])
                for i in range(done, len(raw), _FIELDS)
            )
        return self._events

    def __len__(self) -> int:
        return len(self._raw) // _FIELDS

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def __repr__(self) -> str:
        return f"<Recorder: {len(self)} events>"

    def subscribe(self, listener: Callable[[TraceEvent], object]) -> None:
        """Call ``listener(event)`` for every event recorded from now on (live views use it).

        A listener that raises is unsubscribed, with a ``RuntimeWarning``; the run goes on.
        It is called in the middle of a primitive's work, so it must be a plain function.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        if is_async_callable(listener):
            raise TypeError(
                "listener must be a plain function, called as listener(event); an async one "
                "would never run (nothing awaits it)"
            )
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[TraceEvent], object]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def label(self, task: trio.lowlevel.Task) -> str:
        """The name this recorder uses for ``task``; repeated names get ``#2``, ``#3``, ..."""
        return self._labels.get(task) or self._first_label(task)

    def _first_label(self, task: trio.lowlevel.Task) -> str:
        return self._new_label(task, task_label(task))

    def _new_label(self, task: trio.lowlevel.Task, base: str) -> str:
        count = self._label_counts.get(base, 0) + 1
        self._label_counts[base] = count
        label = base if count == 1 else f"{base}#{count}"
        self._labels[task] = label
        return label

    def _start(self) -> None:
        """Bind to the running trio clock; the first start also sets time zero."""
        self._now = clock_reader()
        if self._t0 is None:
            self._t0 = self._now()
        self.record = self._recorder_function()  # type: ignore[method-assign, assignment]

    def now(self) -> float:
        """The current time on this recorder's clock (compare it with other ``now()`` values)."""
        return self._now()

    def record(
        self, task: trio.lowlevel.Task, primitive: str, kind: str, data: Mapping[str, Any]
    ) -> float:
        """Append an event for ``task`` at the current trio time; return that time (``now()``).

        Primitives call this on hot paths; :meth:`_start` replaces it, per instance, by an
        equivalent closure that skips the attribute lookups.
        """
        self._start()
        return self.record(task, primitive, kind, data)

    def _recorder_function(
        self,
    ) -> Callable[[trio.lowlevel.Task, str, str, Mapping[str, Any]], float]:
        now, extend, labels = self._now, self._raw.extend, self._labels
        first_label, listeners = self._first_label, self._listeners

        def record(
            task: trio.lowlevel.Task, primitive: str, kind: str, data: Mapping[str, Any]
        ) -> float:
            t = now()
            extend((t, labels.get(task) or first_label(task), primitive, kind, data))
            if listeners:
                self._notify(self.events[-1])
            return t

        return record

    def _notify(self, event: TraceEvent) -> None:
        # A listener runs in the middle of a primitive's bookkeeping; letting its error through
        # would leave the primitive half updated. As trio does with a failing instrument, it
        # is reported and dropped instead.
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                self._listeners.remove(listener)
                warnings.warn(
                    f"seqlab: trace listener {listener!r} raised {type(exc).__name__}: {exc}; "
                    "it is unsubscribed and will get no more events",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def to_text(self) -> str:
        """One aligned line per event: time, task, primitive, kind, details.

        Deterministic for a deterministic run: no addresses, no wall-clock times.
        """
        if not self.events:
            return "(no events)\n"
        rows = [
            (
                f"{e.time:.3f}",
                e.task,
                e.primitive,
                e.kind,
                " ".join(f"{k}={_text(v)}" for k, v in e.data.items()),
            )
            for e in self.events
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = []
        for row in rows:
            head = f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  "
            lines.append((head + f"{row[3]:<{widths[3]}}  {row[4]}").rstrip())
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """The events as a JSON array of objects (what the widgets consume)."""
        return json.dumps([e.to_dict() for e in self.events], separators=(",", ":"))


def clock_reader() -> Callable[[], float]:
    """The cheapest function that reads the running trio clock, up to a constant offset.

    trio's default SystemClock is ``perf_counter`` plus a constant, so durations measured with
    ``perf_counter`` are the same; any other clock (a MockClock) is read through its own method.
    """
    clock = trio.lowlevel.current_clock()
    return time.perf_counter if type(clock) is SystemClock else clock.current_time


def current_recorder() -> Recorder | None:
    """The recorder active in the calling task, or ``None``."""
    return _RECORDER.get()


def emit(primitive: str, kind: str, **data: Any) -> None:
    """Record that the current task did ``kind`` on ``primitive``, if a recorder is active.

    Hot paths should test :func:`current_recorder` first and skip building ``data`` when it
    is ``None``; this function is the convenient form for everything else.
    """
    if type(primitive) is not str or type(kind) is not str or not primitive or not kind:
        _check_label(primitive, "primitive")
        _check_label(kind, "kind")
    rec = _RECORDER.get()
    if rec is not None:
        rec.record(trio.lowlevel.current_task(), primitive, kind, data)


def _check_label(value: Any, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a non-empty str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{name} must be a non-empty str, got ''")


class _LifecycleInstrument(trio.abc.Instrument):
    """Records when traced tasks start and exit: a task is traced if it carries the recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.context.get(_RECORDER) is self.recorder:
            parent = task.parent_nursery.parent_task if task.parent_nursery else None
            data = {"parent": self.recorder.label(parent)} if parent is not None else {}
            self.recorder.record(task, "task", "spawn", data)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task.context.get(_RECORDER) is self.recorder:
            self.recorder.record(task, "task", "exit", {})


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Trace what the current task, and every task it starts meanwhile, does.

    Use inside a trio run::

        rec = seqlab.Recorder()
        with seqlab.recording(rec):
            async with trio.open_nursery() as nursery:
                ...
        print(rec.to_text())
    """
    if not isinstance(recorder, Recorder):
        raise TypeError(f"recorder must be a seqlab.Recorder, got {type(recorder).__name__}")
    recorder._start()
    token = _RECORDER.set(recorder)
    if recorder._lifecycle_users == 0:
        trio.lowlevel.add_instrument(recorder._lifecycle)
    recorder._lifecycle_users += 1
    try:
        yield recorder
    finally:
        recorder._lifecycle_users -= 1
        if recorder._lifecycle_users == 0:
            trio.lowlevel.remove_instrument(recorder._lifecycle)
        _RECORDER.reset(token)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if value and " " not in value and "=" not in value else repr(value)
    if isinstance(value, (set, frozenset)) and value:
        return "{" + ", ".join(_ADDRESS.sub("", repr(v)) for v in _sorted(value)) + "}"
    return _ADDRESS.sub("", repr(value))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_jsonable(v) for v in _sorted(value)]
    return _ADDRESS.sub("", repr(value))


def _sorted(items: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's items in a stable order: iteration order depends on string hashing, which
    changes from one process to the next, and traces must not."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=lambda v: (type(v).__name__, _ADDRESS.sub("", repr(v))))
