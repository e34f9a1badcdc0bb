"""What each task did: trace events, the recorder that collects them, and their text form.

Primitives report progress with :func:`emit`. When no recorder is active that costs one
context-variable lookup and nothing else, so tracing can stay in every hot path. With a
recorder active, hot paths record through :meth:`Recorder.add`: one call per event, with the
event's kind and data keys given as a :class:`Shape` declared once at import (and checked
against :mod:`seqlab.trace_schema` there) and the time the caller already read, so nothing
is built or looked up per event but the task's label.

The busiest primitives do not even make that call per event: while nothing else is
recorded they *defer* their events (:meth:`Recorder.defer`) and stage them many at a time,
a barrier from the arrival times it keeps anyway, a dispatcher or a convoy from a list of
rows (:class:`DeferredRun`). Anything else that records or reads the trace stages them
first, so the trace is exactly what it would have been.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import sys
import time
import warnings
import weakref
from array import array
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from itertools import accumulate, islice, repeat
from operator import itemgetter
from operator import sub as _sub
from types import MappingProxyType
from typing import Any, NamedTuple, overload

import trio
from trio._core import _run as _trio_run

from ._callables import is_async_callable
from .trace_schema import check_event
from .waits import describe_wait, wait_detail

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

# trio's default clock, which clock_reader reads faster through perf_counter. It is private,
# so a trio that moved it must not break `import seqlab`: every clock is then read its own way.
_SystemClock: type | None = getattr(
    getattr(getattr(trio, "_core", None), "_run", None), "SystemClock", None
)


__all__ = [
    "Same",
    "TraceEvent",
    "TraceEvents",
    "Recorder",
    "recording",
    "emit",
    "current_recorder",
    "clock_reader",
    "task_label",
    "record_deadlock",
    "Shape",
    "shape",
]

_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "seqlab_recorder", default=None
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_NO_DATA: Mapping[str, Any] = MappingProxyType({})
_current_time = trio.current_time
# One event in Recorder._raw: time, task label, primitive, shape; its values go to
# Recorder._raw_values, flat.
_FIELDS = 4
_BATCH = 512 * _FIELDS  # Recorder._raw is sealed into a chunk once it holds this many fields
_SHAPE_SIZE = itemgetter(3)
# Fewer events than this, staged at once, are copied into Recorder._raw instead of becoming a
# chunk of their own: a chunk costs a few hundred bytes, whatever its size.
_SMALL = 16
# The sequences add_many keeps as they are (and indexes when read).
_SEQUENCES = (list, tuple, range)


class Shape(NamedTuple):
    """What the events recorded at one call site look like: their kind and data keys.

    Made once, at import, with :func:`shape`, and passed to :meth:`Recorder.add` with each
    event's values: a hot path hands the recorder one prepared object instead of a kind, a
    tuple of keys or a dict per event, and the recorder keeps a reference to it per event.
    """

    family: str | None
    kind: str
    keys: tuple[str, ...]
    # How many values an event of this shape carries: len(keys), or more for the shape of a
    # DeferredRun row (see DeferredRun.row_shape), whose last values are padding.
    size: int


def shape(family: str, kind: str, keys: tuple[str, ...] = ()) -> Shape:
    """Declare the kind and data keys of the events a call site records with :meth:`Recorder.add`.

    ``family`` is the primitive family (``"Barrier"``). When :mod:`seqlab.trace_schema`
    declares it, ``kind`` must be declared there and ``keys`` among its keys, or this raises
    :class:`~seqlab.trace_schema.UndeclaredEventError`, at import, where the shape is made.
    """
    _check_label(family, "family")
    _check_label(kind, "kind")
    if not isinstance(keys, tuple) or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"keys must be a tuple of str, got {keys!r}")
    check_event(family, kind, dict.fromkeys(keys))
    return Shape(family, kind, keys, len(keys))


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


class TraceEvents(Sequence[TraceEvent]):
    """The events of a :class:`Recorder`, oldest first: what ``recorder.events`` returns.

    A read-only view, not a copy: it follows the recorder (events recorded later show up in
    it), and each :class:`TraceEvent` is built when it is read, so keeping a million events
    costs the recorder's compact storage only. Index it, slice it (a slice is a list),
    iterate over it, or compare it with a list of events::

        last = rec.events[-1]
        first_ten = rec.events[:10]
        kinds = [e.kind for e in rec.events]
    """

    __slots__ = ("_recorder",)

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def __len__(self) -> int:
        return len(self._recorder)

    @overload
    def __getitem__(self, index: int) -> TraceEvent: ...

    @overload
    def __getitem__(self, index: slice) -> list[TraceEvent]: ...

    def __getitem__(self, index: int | slice) -> TraceEvent | list[TraceEvent]:
        rec = self._recorder
        rec._pack()
        size = rec._sealed
        if isinstance(index, slice):
            return [rec._event(i) for i in range(*index.indices(size))]
        try:
            position = index.__index__()
        except AttributeError:
            raise TypeError(
                f"event indices must be integers or slices, not {type(index).__name__}"
            ) from None
        if position < 0:
            position += size
        if not 0 <= position < size:
            raise IndexError(f"event index {index} out of range ({size} events)")
        return rec._event(position)

    def __iter__(self) -> Iterator[TraceEvent]:
        return self._recorder._iter_events(0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<TraceEvents: {len(self)} events>"


class Same:
    """A column of :meth:`Recorder.add_many` whose events all carry the same ``value``: the
    trace keeps it once, not once per event (``Same(generation)``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Same({self.value!r})"


# A recorder keeps its events in *chunks*, sealed (never changed again) and in order. Each
# is the form its events arrived in, so storing them copies nothing per event; reading
# builds each TraceEvent. Every chunk has ``n`` (its events), ``event(i, t0)`` and
# ``events(start, t0)`` (times are stored on the recorder's clock; t0 is its time zero).


class _Split:
    """Events staged one by one (``Recorder._raw``): four fields each (time, task label,
    primitive, shape) in ``fields``, their values flat in ``values``. The only chunk that
    grows: when it is the last one, the next events staged one by one are appended to it
    (:meth:`extend`), so a trace read after every event does not get a chunk per event."""

    __slots__ = ("_starts", "fields", "n", "values")

    def __init__(self, fields: list[Any], values: list[Any]) -> None:
        self.fields = fields
        self.values = values
        self.n = len(fields) // _FIELDS
        self._starts = array("q")  # where each event's values start, filled in when read

    def extend(self, fields: list[Any], values: list[Any]) -> None:
        self.fields += fields
        self.values += values
        self.n = len(self.fields) // _FIELDS

    def _start_of(self, i: int) -> int:
        starts = self._starts
        done = len(starts)
        if done <= i:
            fields = self.fields
            first = starts[-1] + fields[done * _FIELDS - 1].size if done else 0
            sizes = fields[done * _FIELDS + 3 : len(fields) - _FIELDS : _FIELDS]
            starts.extend(accumulate(map(_SHAPE_SIZE, sizes), initial=first))
        return starts[i]

    def event(self, i: int, t0: float) -> TraceEvent:
        fields, o = self.fields, i * _FIELDS
        made = fields[o + 3]
        keys = made.keys
        start = self._start_of(i) if keys else 0
        data = dict(zip(keys, self.values[start : start + len(keys)], strict=True))
        return TraceEvent(fields[o] - t0, fields[o + 1], fields[o + 2], made.kind, data)

    def events(self, start: int, t0: float) -> Iterator[TraceEvent]:
        fields, values = self.fields, self.values
        offset = self._start_of(start) if start else 0
        for o in range(start * _FIELDS, self.n * _FIELDS, _FIELDS):
            made = fields[o + 3]
            keys = made.keys
            data = dict(zip(keys, values[offset : offset + len(keys)], strict=True))
            offset += made.size  # (a padded shape's values end with padding)
            yield TraceEvent(fields[o] - t0, fields[o + 1], fields[o + 2], made.kind, data)


class _Rows:
    """A :class:`DeferredRun`'s events, as it kept them: rows of ``step`` items (time, task
    label, primitive, shape, then the values, padded to the run's width) in one list."""

    __slots__ = ("n", "rows", "step")

    def __init__(self, rows: list[Any], step: int) -> None:
        self.rows = rows
        self.step = step
        self.n = len(rows) // step

    def event(self, i: int, t0: float) -> TraceEvent:
        rows, o = self.rows, i * self.step
        made = rows[o + 3]
        keys = made.keys
        data = dict(zip(keys, rows[o + 4 : o + 4 + len(keys)], strict=True))
        return TraceEvent(rows[o] - t0, rows[o + 1], rows[o + 2], made.kind, data)

    def events(self, start: int, t0: float) -> Iterator[TraceEvent]:
        rows, step = self.rows, self.step
        for o in range(start * step, len(rows), step):
            made = rows[o + 3]
            keys = made.keys
            data = dict(zip(keys, rows[o + 4 : o + 4 + len(keys)], strict=True))
            yield TraceEvent(rows[o] - t0, rows[o + 1], rows[o + 2], made.kind, data)


class _Columns:
    """Events staged many at once (:meth:`Recorder.add_many`, a barrier's arrivals): one
    primitive and shape for all, and per field one sequence of ``n`` items or a
    :class:`Same`. A barrier generation's index column is a ``range``: nothing per event."""

    __slots__ = ("columns", "made", "n", "names", "primitive", "times")

    def __init__(
        self,
        times: Sequence[float] | Same,
        names: list[str],
        primitive: str,
        made: Shape,
        columns: Sequence[Sequence[Any] | Same],
    ) -> None:
        self.n = len(names)
        self.times = times
        self.names = names
        self.primitive = primitive
        self.made = made
        self.columns = columns

    def event(self, i: int, t0: float) -> TraceEvent:
        times = self.times
        t = times.value if isinstance(times, Same) else times[i]
        values = (c.value if isinstance(c, Same) else c[i] for c in self.columns)
        data = dict(zip(self.made.keys, values, strict=True))
        return TraceEvent(t - t0, self.names[i], self.primitive, self.made.kind, data)

    def events(self, start: int, t0: float) -> Iterator[TraceEvent]:
        left, times = self.n - start, self.times
        made, primitive = self.made, self.primitive
        kind, keys = made.kind, made.keys
        clock = (
            repeat(times.value - t0, left)
            if isinstance(times, Same)
            else map(_sub, times[start:], repeat(t0))
        )
        columns = [
            repeat(c.value, left) if isinstance(c, Same) else c[start : self.n]
            for c in self.columns
        ]
        rows = zip(*columns, strict=True) if columns else repeat((), left)
        for t, name, row in zip(clock, self.names[start:], rows, strict=True):
            yield TraceEvent(t, name, primitive, kind, dict(zip(keys, row, strict=True)))


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

    Every event kind and data key is declared in :mod:`seqlab.trace_schema`.

    ``waits`` decides whether the recorder also traces every block and wake-up of a task
    (``task block`` / ``task wake`` events: what it waits on, trio's own waits included, and
    which task woke it). That watches every scheduling step, which costs far more than the
    primitives' own events, so by default (``waits=None``) it is on under :func:`seqlab.run`
    (the lab, on virtual time) and off in ``recording()`` blocks of your own trio runs; pass
    ``True`` or ``False`` to decide yourself. ``strict=True`` checks every event against the
    schema as it is recorded (the tests use it; it costs a check per event).
    """

    def __init__(self, *, waits: bool | None = None, strict: bool = False) -> None:
        if waits is not None and not isinstance(waits, bool):
            raise TypeError(f"waits must be True, False or None, got {waits!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}")
        self.waits = waits
        self.strict = strict
        #: The seed of the run that filled this recorder, when :func:`seqlab.run` did.
        self.seed: int | None = None
        #: The schedule of that run (a string ``seqlab.run(..., schedule=...)`` replays).
        self.schedule: str | None = None
        self._t0: float | None = None
        self._now: Callable[[], float] = _current_time
        #: The function that reads this recorder's clock (the running trio clock, up to a
        #: constant): what hot paths pass :meth:`add` as the event's time.
        self.clock: Callable[[], float] = _current_time
        # Storage: sealed chunks of events, in order (see _Split), each in the form its
        # events came in, so that keeping them copies nothing per event. Recording one event
        # appends four fields (time, task label, primitive, the event's Shape) to _raw and
        # its values to _raw_values: one extend each, nothing looked up but the label. Every
        # _BATCH fields, and before anything else is staged or read, _pack() seals them (see
        # _Split). Events staged many at once (add_many, deferred ones) become a chunk of
        # their own. A dict given to record() is not kept (184 bytes); reading rebuilds one.
        self._raw: list[Any] = []
        self._raw_values: list[Any] = []  # the values of the events in _raw, flat
        self._chunks: list[_Split | _Rows | _Columns] = []
        self._ends: list[int] = []  # per chunk, how many events end with it
        self._sealed = 0  # events in the chunks
        # The shapes of events recorded with record() / record_fields(), by (kind, keys).
        self._adhoc: dict[tuple[str, tuple[str, ...]], Shape] = {}
        self._view = TraceEvents(self)
        # A weak reference to this recorder, made once: what primitives keep (and compare
        # with ``is``) when they must remember the recorder without keeping its trace alive.
        self._weak = weakref.ref(self)
        # Task labels. _labels holds the tasks that are running (looked up per event, so
        # by the task itself: the cheapest lookup). A task that exits while recorded (the
        # lifecycle instrument sees it), or that is still labelled when the last recording
        # ends, moves to _retired: by id, with a weak reference that drops it when the task
        # object is gone. So the recorder keeps no task alive, a task object still around
        # keeps its label, and _label_counts keeps the numbering ("#n+1") going.
        self._labels: dict[trio.lowlevel.Task, str] = {}
        self._retired: dict[int, tuple[str, Any]] = {}
        self._label_counts: dict[str, int] = {}
        self._listeners: list[Callable[[TraceEvent], object]] = []
        # One lifecycle instrument per recorder, installed while at least one recording
        # (a seqlab.run or a recording() block) uses it: nested recordings of the same
        # recorder must not record each spawn and exit twice.
        # _lifecycle (spawns, exits and, unless waits=False, blocks and wakes) is what
        # seqlab.run installs; recording() installs _lifecycle_plain unless waits=True.
        self._lifecycle = _LifecycleInstrument(self, waits=waits is not False)
        self._lifecycle_plain = (
            self._lifecycle if waits is True else _LifecycleInstrument(self, waits=False)
        )
        self._lifecycle_users = 0
        # Deferred events (see defer()): the one owner whose events are not staged yet, or
        # None; and the same owner in a list, which the recording closures test (a list is
        # the cheapest thing a closure can test for "anything pending?").
        self._pending: Any = None
        self._deferred: list[Any] = []
        # Whether owners may defer: not when every event must be checked (strict) or seen
        # (listeners) as it happens. _install() keeps it up to date.
        self._defers = not strict

    @property
    def events(self) -> TraceEvents:
        """Every event recorded so far, oldest first: a read-only sequence that follows the
        recording (no copy is made; each event is built when it is read)."""
        return self._view

    def __len__(self) -> int:
        if self._deferred:
            self._flush()
        return self._sealed + len(self._raw) // _FIELDS

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self._view)

    def _pack(self) -> None:
        """Seal the events staged one by one (see ``__init__``): appended to the last chunk
        if it holds such events too, else a chunk of their own. Whatever reads the trace
        comes through here, so deferred events are staged first."""
        if self._deferred:
            self._flush()
        raw = self._raw
        if not raw:
            return
        last = self._chunks[-1] if self._chunks else None
        if type(last) is _Split:
            before = last.n
            last.extend(raw, self._raw_values)
            self._sealed += last.n - before
            self._ends[-1] = self._sealed
        else:
            self._seal(_Split(raw[:], self._raw_values[:]))
        raw.clear()
        self._raw_values.clear()

    def _seal(self, chunk: _Split | _Rows | _Columns) -> None:
        """Append ``chunk`` (its events come after every event stored so far)."""
        self._sealed += chunk.n
        self._chunks.append(chunk)
        self._ends.append(self._sealed)

    def _event(self, index: int) -> TraceEvent:
        """Event ``index`` (0 <= index < sealed events), rebuilt from its chunk."""
        ends = self._ends
        k = bisect_right(ends, index)
        t0 = self._t0
        assert t0 is not None
        return self._chunks[k].event(index - ends[k - 1] if k else index, t0)

    def _iter_events(self, start: int) -> Iterator[TraceEvent]:
        """Events from ``start`` on, in order, including those recorded while iterating
        (which may have grown the chunk being read: events are counted as they are read)."""
        self._pack()
        index = start
        while index < self._sealed:
            ends = self._ends
            k = bisect_right(ends, index)
            t0 = self._t0
            assert t0 is not None
            for event in self._chunks[k].events(index - ends[k - 1] if k else index, t0):
                yield event
                index += 1
            if index == self._sealed:
                self._pack()  # what was recorded meanwhile

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
        self._install()

    def unsubscribe(self, listener: Callable[[TraceEvent], object]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)
        self._install()

    def label(self, task: trio.lowlevel.Task) -> str:
        """The name this recorder uses for ``task``; repeated names get ``#2``, ``#3``, ..."""
        return self._labels.get(task) or self._first_label(task)

    def _first_label(self, task: trio.lowlevel.Task) -> str:
        retired = self._retired.pop(id(task), None)
        if retired is not None:  # seen before: labelled again, as it was
            self._labels[task] = retired[0]
            return retired[0]
        return self._new_label(task, task_label(task))

    def _new_label(self, task: trio.lowlevel.Task, base: str) -> str:
        # Tasks are numbered ("#2") in the order they first appear in the trace, so events
        # still deferred must take their labels first, and that may label this very task
        # (first seen in them): it keeps that label.
        if self._deferred:
            self._flush()
            known = self._labels.get(task)
            if known is not None:
                return known
        count = self._label_counts.get(base, 0) + 1
        self._label_counts[base] = count
        label = base if count == 1 else f"{base}#{count}"
        self._labels[task] = label
        self._retired.pop(id(task), None)
        return label

    def _retire(self, task: trio.lowlevel.Task) -> None:
        """Stop holding ``task`` (it exited, or the recording ended); keep its label while the
        task object lives."""
        label = self._labels.pop(task, None)
        if label is None:
            return
        key = id(task)
        try:
            ref: Any = weakref.ref(task, partial(_forget_label, self._retired, key))
        except TypeError:
            self._labels[task] = label  # not weakly referenceable: it stays as it was
            return
        self._retired[key] = (label, ref)

    def _start(self) -> None:
        """Bind to the running trio clock; the first start also sets time zero."""
        self._now = self.clock = clock_reader()
        if self._t0 is None:
            self._t0 = self._now()
        self._install()

    def _install(self) -> None:
        """Put the recording functions for this clock, strictness and listeners in place."""
        # A listener must see each event as it happens: nothing stays deferred from here on.
        self._flush()
        self._defers = not (self.strict or self._listeners)
        if self._t0 is None:
            return  # not started: the first record() starts it
        add, add_many, record, record_fields, record_many, stage = self._recorder_functions()
        self.add = add  # type: ignore[method-assign]
        self.add_many = add_many  # type: ignore[method-assign]
        self._stage = stage  # type: ignore[method-assign]
        self.record = record  # type: ignore[method-assign, assignment]
        self.record_fields = record_fields  # type: ignore[method-assign, assignment]
        self.record_many = record_many  # type: ignore[method-assign, assignment]

    def now(self) -> float:
        """The current time on this recorder's clock (compare it with other ``now()`` values)."""
        return self._now()

    def add(
        self, t: float, task: trio.lowlevel.Task, primitive: str, shape: Shape, /, *values: Any
    ) -> None:
        """Record an event, the cheapest way: ``rec.add(rec.clock(), task, primitive, SHAPE, *values)``.

        ``t`` is the event's time on this recorder's clock: ``rec.clock()``, or a reading of
        the trio clock the caller already took (a primitive that times its own work passes
        that, and the clock is read once). ``shape`` (made once, at import, with
        :func:`shape`) gives the event's kind and data keys; ``values`` are its data, one
        per key, in order. The primitives' hot paths record through this.

        :meth:`_start` replaces this, per instance, by an equivalent closure that skips the
        attribute lookups (as it does :meth:`record`).
        """
        self._start()
        self.add(t, task, primitive, shape, *values)

    def add_many(
        self,
        t: float,
        tasks: Collection[trio.lowlevel.Task],
        primitive: str,
        shape: Shape,
        /,
        *columns: Iterable[Any] | Same,
    ) -> None:
        """:meth:`add` for many tasks at the instant ``t``: one event per task, in order,
        whose values are the matching items of ``columns`` (one per key of ``shape``).

        A column is a :class:`Same` for a value every event shares (kept once), a list,
        tuple or ``range`` as long as ``tasks`` (kept as it is: do not change it afterwards),
        or any other iterable (read up to ``len(tasks)`` items). No Python code runs per
        event: a barrier records the release of its whole generation with one call::

            rec.add_many(now, tasks, label, RELEASE, Same(gen), range(n), waited, Same(by))
        """
        self._start()
        self.add_many(t, tasks, primitive, shape, *columns)

    def record(
        self, task: trio.lowlevel.Task, primitive: str, kind: str, data: Mapping[str, Any]
    ) -> float:
        """Append an event for ``task`` at the current trio time; return that time (``now()``).

        :meth:`_start` replaces this, per instance, by an equivalent closure that skips the
        attribute lookups.
        """
        self._start()
        return self.record(task, primitive, kind, data)

    def record_fields(
        self,
        task: trio.lowlevel.Task,
        primitive: str,
        kind: str,
        keys: tuple[str, ...],
        values: tuple[Any, ...],
    ) -> float:
        """:meth:`record` with the data as ``keys`` and ``values`` (no dict is built).

        ``values`` must have as many items as ``keys``; the event's data is
        ``dict(zip(keys, values))``. (:meth:`add`, with a :func:`shape` made once, is cheaper.)
        """
        self._start()
        return self.record_fields(task, primitive, kind, keys, values)

    def record_many(
        self,
        tasks: Iterable[trio.lowlevel.Task],
        primitive: str,
        kind: str,
        keys: tuple[str, ...],
        rows: list[tuple[Any, ...]],
    ) -> float:
        """:meth:`record_fields` for many tasks at one instant: one event per task, in
        order, whose values are the matching item of ``rows`` (as long as ``tasks``)."""
        self._start()
        return self.record_many(tasks, primitive, kind, keys, rows)

    def _stage(
        self,
        times: Sequence[float] | Same,
        tasks: Sequence[trio.lowlevel.Task],
        primitive: str,
        shape: Shape,
        columns: Sequence[Sequence[Any] | Same],
    ) -> None:
        """Record many events of one primitive and ``shape`` at once, one per task: their
        ``times`` and each value column a sequence as long as ``tasks`` (a ``range`` for an
        index) or a :class:`Same`. The sequences are kept, not copied: the caller must not
        change them afterwards. No check, no listener called: :meth:`add_many` (which
        checks and notifies itself) and owners flushing their deferred events (see
        :meth:`defer`) call this. :meth:`_start` replaces it by a closure."""
        self._start()
        self._stage(times, tasks, primitive, shape, columns)

    def _adopt_rows(self, rows: list[Any], step: int) -> None:
        """Take a :class:`DeferredRun`'s rows (``step`` items per event, a task second) as
        a chunk: the tasks are replaced by their labels, in place; nothing else is copied.
        The caller gives ``rows`` up."""
        tasks = rows[1::step]
        names: list[Any] = list(map(self._labels.get, tasks))
        if not all(names):
            names = [name or self.label(task) for name, task in zip(names, tasks, strict=True)]
        rows[1::step] = names
        if len(names) >= _SMALL:
            self._pack()
            self._seal(_Rows(rows, step))
            return
        raw, values = self._raw, self._raw_values
        for o in range(0, len(rows), step):
            raw += rows[o : o + _FIELDS]
            values += rows[o + _FIELDS : o + step]

    def defer(self, owner: Any) -> bool:
        """Let ``owner`` keep the events it records here, and stage them later in one call.

        Recording an event costs a call into the recorder; a primitive that records one or
        more events per operation pays that per operation. But a primitive often keeps the
        facts of an event anyway (a barrier keeps each waiter's arrival time until the
        release), or can append them to a list of its own far more cheaply than a call. So
        an owner may *defer*: while it is this recorder's pending owner (``rec._pending is
        owner``), it records by keeping the facts, and stages them all at once when asked.

        The trace stays exactly what it would have been, because an owner defers only while
        nothing else is staged: every other staging call (``add``, ``add_many``, ``record``,
        the runtime's and the task instrument's events), every read of the trace (``events``,
        ``len``, the text, JSON and Perfetto forms), a new task label (labels are numbered in
        order of first appearance), ``subscribe`` and the end of ``recording()`` first calls
        ``owner._stage_deferred(rec)``, which stages the deferred events where they belong
        in the order. At most one owner is pending; another one's ``defer`` flushes it.

        ``owner`` has a ``_deferred_in`` attribute (the recorder, weakly, where it has events
        pending, or None: an owner recording into two recorders flushes one before deferring
        into the other) and a ``_stage_deferred(rec)`` method. Returns False, and defers
        nothing, when this recorder must see each event as it happens (``strict=True``, or a
        listener): the owner then records the event at once.
        """
        flush_deferred(owner)
        if not self._defers:
            return False
        if self._pending is not None:
            self._flush()
        self._pending = owner
        self._deferred.append(owner)
        owner._deferred_in = self._weak
        return True

    def _flush(self) -> None:
        """Stage the pending owner's deferred events (see :meth:`defer`), if any."""
        owner = self._pending
        if owner is None:
            return
        self._pending = None
        self._deferred.clear()
        owner._deferred_in = None
        owner._stage_deferred(self)

    def _adhoc_shape(self, kind: str, keys: tuple[str, ...]) -> Shape:
        """The shape of events of ``kind`` with data ``keys`` recorded through record()."""
        made = self._adhoc.get((kind, keys))
        if made is None:
            if type(kind) is not str or not kind:
                _check_label(kind, "kind")
            made = self._adhoc[(kind, keys)] = Shape(None, kind, keys, len(keys))
        return made

    def _recorder_functions(
        self,
    ) -> tuple[
        Callable[..., None],
        Callable[..., None],
        Callable[[trio.lowlevel.Task, str, str, Mapping[str, Any]], float],
        Callable[[trio.lowlevel.Task, str, str, tuple[str, ...], tuple[Any, ...]], float],
        Callable[
            [Iterable[trio.lowlevel.Task], str, str, tuple[str, ...], list[tuple[Any, ...]]],
            float,
        ],
        Callable[..., None],
    ]:
        now, raw = self._now, self._raw
        deferred, flush = self._deferred, self._flush
        extend, pack, seal = raw.extend, self._pack, self._seal
        staged = self._raw_values
        values_extend = staged.extend
        listeners, labels, first_label = self._listeners, self._labels, self._first_label
        label = self.label
        batch = _BATCH
        adhoc, adhoc_shape = self._adhoc, self._adhoc_shape
        strict = self.strict

        # The values are copied out of the caller's tuple at once, so nothing the caller
        # allocated lives on until the next pack (medium-lived objects would make the
        # garbage collector run, and scan the whole heap, far more often).

        def add(
            t: float, task: trio.lowlevel.Task, primitive: str, shape: Shape, /, *values: Any
        ) -> None:
            if deferred:  # someone's deferred events come first (see defer())
                flush()
            try:
                size = shape.size
            except AttributeError:
                size = -1
            if len(values) != size:
                _check_add(primitive, shape, values)
            extend((t, labels.get(task) or first_label(task), primitive, shape))
            values_extend(values)
            if len(raw) >= batch:
                pack()

        if strict or listeners:
            # Checking and notifying cost a little per event: only recorders that need them
            # pay it (subscribe() and unsubscribe() install the functions again).
            plain_add = add

            def add(
                t: float, task: trio.lowlevel.Task, primitive: str, shape: Shape, /, *values: Any
            ) -> None:
                if strict:
                    _check_add(primitive, shape, values)
                plain_add(t, task, primitive, shape, *values)
                if listeners:
                    self._notify_added(t, task, primitive, shape, values)

        def add_many(
            t: float,
            tasks: Collection[trio.lowlevel.Task],
            primitive: str,
            shape: Shape,
            /,
            *columns: Iterable[Any] | Same,
        ) -> None:
            if deferred:
                flush()
            if not isinstance(shape, Shape) or len(columns) != shape.size or strict:
                _check_add(primitive, shape, columns)
            if type(tasks) is not list:
                tasks = list(tasks)
            n = len(tasks)
            kept: Any = columns  # kept as they are when every one is already (see _column)
            for column in columns:
                if type(column) is not Same and (
                    type(column) not in _SEQUENCES or len(column) != n  # type: ignore[arg-type]
                ):
                    kept = [_column(c, n, shape, k) for k, c in enumerate(columns)]
                    break
            stage(Same(t), tasks, primitive, shape, kept)
            if listeners:
                for i, task in enumerate(tasks):
                    row = [c.value if isinstance(c, Same) else c[i] for c in kept]
                    self._notify_added(t, task, primitive, shape, row)

        def record(
            task: trio.lowlevel.Task, primitive: str, kind: str, data: Mapping[str, Any]
        ) -> float:
            # add()'s staging, repeated rather than called: emit() goes through here, and
            # the second call cost about 0.27 us an event (the bench's "events recorded" row).
            if deferred:
                flush()
            keys = tuple(data)
            made = adhoc.get((kind, keys)) or adhoc_shape(kind, keys)
            if strict:
                _check_add(primitive, made, keys)
            t = now()
            extend((t, labels.get(task) or first_label(task), primitive, made))
            values_extend(data.values())
            if len(raw) >= batch:
                pack()
            if listeners:
                self._notify_added(t, task, primitive, made, data.values())
            return t

        def record_fields(
            task: trio.lowlevel.Task,
            primitive: str,
            kind: str,
            keys: tuple[str, ...],
            values: tuple[Any, ...],
        ) -> float:
            if len(keys) != len(values):
                raise ValueError(
                    f"record_fields: keys {keys!r} and values {values!r} differ in length"
                )
            made = adhoc.get((kind, keys)) or adhoc_shape(kind, keys)
            t = now()
            add(t, task, primitive, made, *values)
            return t

        def record_many(
            tasks: Iterable[trio.lowlevel.Task],
            primitive: str,
            kind: str,
            keys: tuple[str, ...],
            rows: list[tuple[Any, ...]],
        ) -> float:
            t = now()
            tasks = list(tasks)
            if len(tasks) != len(rows):
                raise ValueError(f"record_many: {len(tasks)} tasks but {len(rows)} rows")
            if any(len(row) != len(keys) for row in rows):
                raise ValueError(f"record_many: every row must have {len(keys)} values {keys!r}")
            made = adhoc.get((kind, keys)) or adhoc_shape(kind, keys)
            columns = zip(*rows, strict=True) if rows else repeat((), len(keys))
            add_many(t, tasks, primitive, made, *columns)
            return t

        def stage(
            times: Sequence[float] | Same,
            tasks: Sequence[trio.lowlevel.Task],
            primitive: str,
            shape: Shape,
            columns: Sequence[Sequence[Any] | Same],
        ) -> None:
            # Many events at once (add_many's, and deferred ones) become one chunk, kept as
            # given: nothing is copied per event but the tasks' labels. It neither checks
            # nor notifies: add_many does, and deferring recorders need not.
            names: list[Any] = list(map(labels.get, tasks))
            if not all(names):  # (cheaper than `None in names`, which compares every one)
                # A task seen for the first time, maybe on several of these events.
                names = [name or label(task) for name, task in zip(names, tasks, strict=True)]
            n = len(names)
            if n >= _SMALL:
                if raw:
                    pack()
                seal(_Columns(times, names, primitive, shape, columns))
                return
            clock: Iterable[float] = repeat(times.value, n) if isinstance(times, Same) else times
            values = [repeat(c.value, n) if isinstance(c, Same) else c for c in columns]
            rows = zip(*values, strict=True) if values else repeat((), n)
            for t, name, row in zip(clock, names, rows, strict=True):
                extend((t, name, primitive, shape))
                values_extend(row)
            if len(raw) >= batch:
                pack()

        return add, add_many, record, record_fields, record_many, stage

    def _notify_added(
        self,
        t: float,
        task: trio.lowlevel.Task,
        primitive: str,
        shape: Shape,
        values: Iterable[Any],
    ) -> None:
        data = dict(zip(shape.keys, values, strict=True))
        self._notify(TraceEvent(t - self._t0, self.label(task), primitive, shape.kind, data))  # type: ignore[operator]

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

    def to_perfetto(self) -> dict[str, Any]:
        """The trace as Chrome trace-event JSON: open it in https://ui.perfetto.dev or chrome://tracing.

        Returns a dict with ``traceEvents`` (``json.dump`` it to a file): one track (thread)
        per task; slices for each wait, named by what the task waits on, and for running;
        flow arrows from the task that released a wait to the task it woke; counters for ring
        cursors and convoy backlogs; instant events for failures, dead letters and deadlocks.
        """
        from .perfetto import to_perfetto

        return to_perfetto(self.events, seed=self.seed)


def clock_reader() -> Callable[[], float]:
    """The cheapest function that reads the running trio clock, up to a constant offset.

    trio's default SystemClock is ``perf_counter`` plus a constant, so durations measured with
    ``perf_counter`` are the same; any other clock (a MockClock) is read through its own method.
    """
    clock = trio.lowlevel.current_clock()
    if _SystemClock is not None and type(clock) is _SystemClock:
        return time.perf_counter
    return clock.current_time


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


_SPAWN = shape("task", "spawn")
_SPAWN_CHILD = shape("task", "spawn", ("parent",))
_BLOCK = shape("task", "block", ("what", "on"))


class _LifecycleInstrument(trio.abc.Instrument):
    """Records when traced tasks start, block, wake up and exit.

    A task is traced if its context carries the recorder. An exit says how the task ended;
    with ``waits``, each block says what the task waits on and each wake which task woke it.
    Who woke whom is read off trio's run queue: the tasks a step appends to it are the ones
    that step made runnable (a release, a lock hand-off, a child's exit ending a nursery).
    """

    def __init__(self, recorder: Recorder, *, waits: bool) -> None:
        self.recorder = recorder
        # Per nursery, how many of its pending errors were already attributed to a child.
        self._seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        if waits:
            # Instance attributes: trio registers only the hooks an instrument overrides, so a
            # recorder without waits pays nothing per scheduling step.
            self.before_task_step = self._before_step  # type: ignore[method-assign]
            self.after_task_step = self._after_step  # type: ignore[method-assign]
        self._blocked: dict[trio.lowlevel.Task, tuple[float, str]] = {}
        self._woken: dict[trio.lowlevel.Task, tuple[str, float]] = {}
        self._mark = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        rec = self.recorder
        if task.context.get(_RECORDER) is rec:
            parent = task.parent_nursery.parent_task if task.parent_nursery else None
            if parent is None:
                rec.add(rec.clock(), task, "task", _SPAWN)
            else:
                rec.add(rec.clock(), task, "task", _SPAWN_CHILD, rec.label(parent))

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._blocked.pop(task, None)
        self._woken.pop(task, None)
        rec = self.recorder
        if task.context.get(_RECORDER) is rec:
            rec.record(task, "task", "exit", self._outcome(task))
        if task in rec._labels:
            rec._retire(task)

    def _outcome(self, task: trio.lowlevel.Task) -> dict[str, Any]:
        error: BaseException | None = None
        runner = getattr(_trio_run.GLOBAL_RUN_CONTEXT, "runner", None)
        if runner is not None and task is runner.main_task:
            error = getattr(runner.main_task_outcome, "error", None)
        else:
            # trio hands a child's error to its nursery just before telling instruments that
            # the child exited; the error is this task's if its traceback starts in its code.
            nursery = task.parent_nursery
            pending = getattr(nursery, "_pending_excs", None)
            if nursery is not None and pending:
                if len(pending) > self._seen.get(nursery, 0):
                    tb = pending[-1].__traceback__
                    code = getattr(task.coro, "cr_code", None)
                    if tb is not None and tb.tb_frame.f_code is code:
                        error = pending[-1]
                self._seen[nursery] = len(pending)
        return outcome_data(error)

    def _before_step(self, task: trio.lowlevel.Task) -> None:
        self._mark = len(_trio_run.GLOBAL_RUN_CONTEXT.runner.runq)
        blocked = self._blocked.pop(task, None)
        if blocked is None:
            return
        rec = self.recorder
        since, on = blocked
        data: dict[str, Any] = {"waited": rec.now() - since}
        woken = self._woken.pop(task, None)
        if woken is not None:
            data["by"] = woken[0]
            data["at"] = woken[1] - (rec._t0 or 0.0)
        elif on == "sleep":
            data["by"] = "timer"
        rec.record(task, "task", "wake", data)

    def _after_step(self, task: trio.lowlevel.Task) -> None:
        blocked = self._blocked
        if blocked:
            runq = _trio_run.GLOBAL_RUN_CONTEXT.runner.runq
            if len(runq) > self._mark:
                woken = self._woken
                for other in list(runq)[self._mark :]:
                    if other is not task and other in blocked and other not in woken:
                        woken[other] = (self.recorder.label(task), self.recorder.now())
        if task._next_send_fn is not None or task.coro.cr_frame is None:
            return  # still runnable, or finished
        rec = self.recorder
        if task.context.get(_RECORDER) is not rec:
            return
        what, on = wait_detail(task, rec.label, rec._t0 or 0.0)
        t = rec.clock()
        rec.add(t, task, "task", _BLOCK, what, on)
        blocked[task] = (t, on)


def _column(column: Any, n: int, made: Shape, k: int) -> Sequence[Any] | Same:
    """Column ``k`` of an :meth:`Recorder.add_many` call for ``n`` events, as the trace keeps
    it: a :class:`Same`, or a sequence of ``n`` items (a list, tuple or range as long is kept
    as it is; any other iterable is read)."""
    if isinstance(column, Same):
        return column
    if type(column) in _SEQUENCES:
        if len(column) == n:
            return column
        column = column[:n]
    else:
        column = list(islice(column, n))
    if len(column) < n:
        raise ValueError(
            f"add_many: {n} tasks, but the {made.keys[k]!r} column of {made.kind} is shorter"
        )
    return column


def flush_deferred(owner: Any) -> None:
    """Stage ``owner``'s deferred events now, wherever they are pending (see
    :meth:`Recorder.defer`). An owner calls it before it changes the facts its deferred
    events are made from (a barrier before a waiter leaves)."""
    ref = owner._deferred_in
    if ref is not None:
        rec = ref()
        if rec is not None and rec._pending is owner:
            rec._flush()
        owner._deferred_in = None


def row_shape(declared: Shape, width: int) -> Shape:
    """The shape to push ``declared`` events with on a :class:`DeferredRun` of ``width``
    values (made once, at import): the same kind and keys, padded to ``width`` values."""
    if declared.size > width:
        raise ValueError(f"{declared.kind} events carry more than {width} values")
    return declared._replace(size=width)


class DeferredRun:
    """Events an owner defers by appending them to a list: the shared form of
    :meth:`Recorder.defer` for primitives that do not keep the facts of their events anyway.

    An event is a row ``(t, task, primitive, shape, *values)`` of ``width`` values: one
    list, one ``extend`` per event, instead of a call into the recorder. An event with fewer
    values is padded with ``None`` and recorded with ``row_shape(SHAPE, width)``, which says
    so: the padding is kept in the trace's storage (two pointers), and reading skips it,
    which costs far less than cutting it out of every row. A primitive makes one run (a
    convoy for all its consumers, a dispatcher for its sequencers and workers), so that its
    events, whichever task records them, go on one run for as long as nothing else is
    recorded. The hot path is::

        (run.push if rec._pending is run else run.into(rec))((t, task, label, ROW, a, b))

    ``into(rec)`` makes the run ``rec``'s pending owner (or, for a recorder that must see
    every event at once, returns a function that records it at once).
    """

    __slots__ = ("_deferred_in", "_rows", "_width", "push")

    def __init__(self, width: int) -> None:
        self._width = width
        self._rows: list[Any] = []
        self._deferred_in: Any = None
        #: Append one event's row (a tuple): what the hot path calls while the run is pending.
        self.push: Callable[[tuple[Any, ...]], None] = self._rows.extend

    def into(self, rec: Recorder) -> Callable[[tuple[Any, ...]], None]:
        """How to record an event in ``rec`` when the run is not its pending owner."""
        if rec.defer(self):
            return self.push
        return partial(_add_row, rec)

    def _stage_deferred(self, rec: Recorder) -> None:
        rows = self._rows
        if not rows:
            return
        # The rows become the trace's own chunk, as they are: the run starts a new list.
        self._rows = []
        self.push = self._rows.extend
        rec._adopt_rows(rows, _FIELDS + self._width)


def _add_row(rec: Recorder, row: tuple[Any, ...]) -> None:
    """Record a :class:`DeferredRun` row at once, with its declared shape (no padding)."""
    t, task, primitive, made = row[:_FIELDS]
    size = len(made.keys)
    rec.add(t, task, primitive, made._replace(size=size), *row[_FIELDS : _FIELDS + size])


def _check_add(primitive: str, shape: Shape, values: tuple[Any, ...]) -> None:
    """What a strict recorder checks per event, and every recorder when the values do not
    match the shape: raise a clear error, before anything is recorded."""
    if not isinstance(shape, Shape):
        raise TypeError(
            "Recorder.add(task, primitive, shape, *values): shape must be a seqlab.trace.Shape "
            f"(made once with seqlab.trace.shape), got {type(shape).__name__} {shape!r}"
        )
    if len(values) != shape.size:
        raise ValueError(
            f"{shape.kind} events carry {shape.size} values {shape.keys!r}, got {len(values)}"
        )
    if type(primitive) is not str or not primitive:
        _check_label(primitive, "primitive")
    check_event(primitive, shape.kind, dict.fromkeys(shape.keys))


def _forget_label(retired: dict[int, tuple[str, Any]], key: int, ref: Any) -> None:
    """A retired task is gone: forget its label (its weak reference's callback)."""
    entry = retired.get(key)
    if entry is not None and entry[1] is ref:
        del retired[key]


def outcome_data(error: BaseException | None) -> dict[str, Any]:
    """The ``task exit`` data for a task that raised ``error`` (None: it returned)."""
    if error is None:
        return {"outcome": "returned"}
    if _only_cancelled(error):
        return {"outcome": "cancelled"}
    return {"outcome": "raised", "error": _ADDRESS.sub("", f"{type(error).__name__}: {error}")}


def _only_cancelled(error: BaseException) -> bool:
    if isinstance(error, trio.Cancelled):
        return True
    if isinstance(error, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in error.exceptions)
    return False


def record_deadlock(recorder: Recorder, tasks: Iterable[trio.lowlevel.Task]) -> None:
    """Record a ``runtime deadlock`` event on each of ``tasks``, with what it waits on."""
    for task in tasks:
        waits_on, _ = describe_wait(task)
        recorder.record(task, "runtime", "deadlock", {"waits_on": waits_on})


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
    installed = None
    if recorder._lifecycle_users == 0:
        installed = recorder._lifecycle_plain
        trio.lowlevel.add_instrument(installed)
    recorder._lifecycle_users += 1
    try:
        yield recorder
    finally:
        recorder._flush()  # events deferred in this block are staged before it ends
        recorder._lifecycle_users -= 1
        if installed is not None:
            trio.lowlevel.remove_instrument(installed)
            # No instrument sees exits now: hold no task beyond this point.
            for task in list(recorder._labels):
                recorder._retire(task)
        _RECORDER.reset(token)
        recorder._pack()


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
