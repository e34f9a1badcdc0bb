"""Live notebook views of a trace: a timeline of tasks and one view per primitive.

Every view is an anywidget whose state lives in traitlets (a saved notebook re-renders it), fed
by the same :class:`~seqlab.trace.TraceEvent` s. Give it a finished recorder to draw a run, or a
live one to watch a run happen::

    rec = seqlab.Recorder()
    view = Timeline(rec)          # subscribes to rec: updates while the run records
    view.show()                   # display it (remembering the display, see finish())
    seqlab.run(main, seed=1, recorder=rec)
    view.finish()                 # last update; the saved output gets the final snapshot

Cost is bounded whatever the event rate: events are folded into a bounded summary (see
:mod:`seqlab.notebook.views`) as they arrive, and the browser gets at most one message per
``interval`` seconds (0.25 by default) plus one at the end. The listener runs on the thread
that runs the trio program; a lock serialises it with flushes made by a timer thread.

Besides the live view, each widget's output carries a deterministic ``text/plain`` summary and a
``text/html`` SVG snapshot, which nbconvert's HTML export and GitHub show when the notebook is
saved without widget state.
"""

from __future__ import annotations

import itertools
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from typing import Any

import anywidget
import traitlets

from ..trace import Recorder, TraceEvent
from .views import VIEW_MODELS, BarrierModel, ConvoyModel, RingModel, TimelineModel, _Model

__all__ = [
    "Timeline",
    "BarrierView",
    "ConvoyView",
    "RingView",
    "make_view",
    "live_view",
    "VIEW_KINDS",
]

_STATIC = pathlib.Path(__file__).parent / "static"
# Replaying a trace re-reads it from the start; beyond this many events the scrubber is off.
_MAX_SCRUB_EVENTS = 200_000
VIEW_KINDS = tuple(VIEW_MODELS)


class _LiveView(anywidget.AnyWidget):
    """The machinery every view shares: feeding, coalescing, snapshots, display."""

    _esm = _STATIC / "seqlab.js"
    _css = _STATIC / "seqlab.css"

    view_kind = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    steps = traitlets.Int(0).tag(sync=True)
    t_end = traitlets.Float(0.0).tag(sync=True)
    #: True while events arrive from a recorder the view follows (detach() ends it).
    live = traitlets.Bool(False).tag(sync=True)
    #: Whether the time scrubber can replay this view (a finished recorder it can re-read).
    scrubbable = traitlets.Bool(False).tag(sync=True)
    #: The scrubber's position: show the state after this many events; negative shows the end.
    scrub = traitlets.Float(-1.0).tag(sync=True)

    _model_class: type[_Model] = _Model
    _fields: tuple[str, ...] = ()

    def __init__(
        self,
        recorder: Recorder | None = None,
        *,
        primitive: str | None = None,
        title: str = "",
        interval: float = 0.25,
        live: bool = True,
        **options: Any,
    ) -> None:
        if recorder is not None and not isinstance(recorder, Recorder):
            raise TypeError(
                f"recorder must be a seqlab.Recorder or None, got {type(recorder).__name__}"
            )
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        if not isinstance(title, str):
            raise TypeError(f"title must be a str, got {type(title).__name__}")
        self._trace_model = self._model_class(primitive, **options)
        self._lock = threading.RLock()
        self._interval = float(interval)
        self._last_flush = 0.0
        self._dirty = False
        self._live_events = False
        self._timer: threading.Timer | None = None
        self._recorder: Recorder | None = None
        self._source: Recorder | None = recorder
        self._options = (primitive, options)
        self._display_handle: Any = None
        super().__init__(view_kind=self._trace_model.kind, title=title)
        if recorder is not None:
            self._trace_model.feed_all(list(recorder.events))
            if live:
                self._recorder = recorder
                recorder.subscribe(self._on_event)
        self._push()
        self.observe(self._on_scrub, names="scrub")

    # -- feeding

    def feed(self, events: TraceEvent | list[TraceEvent]) -> None:
        """Add events by hand (without a recorder); the view updates at the next flush."""
        batch = [events] if isinstance(events, TraceEvent) else list(events)
        for event in batch:
            if not isinstance(event, TraceEvent):
                raise TypeError(f"events must be TraceEvents, got {type(event).__name__}")
        for event in batch:
            self._on_event(event)

    def _on_event(self, event: TraceEvent) -> None:
        with self._lock:
            self._trace_model.feed(event)
            self._dirty = True
            self._live_events = True
            now = time.monotonic()
            wait = self._interval - (now - self._last_flush)
            if wait <= 0:
                self._flush_locked(now)
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if not self._dirty:
                return
            now = time.monotonic()
            wait = self._interval - (now - self._last_flush)
            if wait > 0:
                # The listener flushed meanwhile: keep the pace, come back for the tail.
                self._timer = threading.Timer(wait, self._on_timer)
                self._timer.daemon = True
                self._timer.start()
            else:
                self._flush_locked(now)

    def flush(self) -> None:
        """Send the current state to the browser now, if anything changed since the last send."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._dirty:
                self._flush_locked(time.monotonic())

    def _flush_locked(self, now: float) -> None:
        self._last_flush = now
        self._dirty = False
        self._push()

    def _on_scrub(self, change: Any) -> None:
        """Replay the finished trace's first ``scrub`` events (the front end moved the slider)."""
        with self._lock:
            if not self.scrubbable or self._source is None:
                return
            n = change["new"]
            if n < 0:
                self._push()
                return
            primitive, options = self._options
            model = self._model_class(primitive, **options)
            model.feed_all(itertools.islice(self._source.events, int(n)))
            self._push(model, keep_scrub=True)

    def replay(self, n: int | None) -> None:
        """Show the view as it was after the first ``n`` events (``None``: the end), as the
        scrubber does; only for a view of a finished recorder."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"n must be an int >= 0 or None, got {n!r}")
        if not self.scrubbable:
            raise RuntimeError(
                "only a view of a finished recorder can be replayed (none yet, or it is filling)"
            )
        self.scrub = -1.0 if n is None else float(n)

    def _push(self, model: _Model | None = None, keep_scrub: bool = False) -> None:
        state = (model or self._trace_model).state()
        with self.hold_sync():
            # The "live" badge: events are arriving from a recorder this view follows.
            self.live = self._live_events and self._recorder is not None
            # A recorder that is not (or no longer) filling can be replayed with the scrubber.
            self.scrubbable = (
                self._source is not None
                and not (self._recorder is not None and self._live_events)
                and 0 < len(self._source) <= _MAX_SCRUB_EVENTS
            )
            if not keep_scrub:
                self.scrub = -1.0
            for name in self._fields:
                setattr(self, name, state[name])
            self.steps = state["steps"]
            self.t_end = state["t_end"]

    def _unfollow(self) -> None:
        """Unsubscribe from the recorder and cancel a pending flush (call with the lock held)."""
        if self._recorder is not None:
            self._recorder.unsubscribe(self._on_event)
            self._recorder = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def detach(self) -> None:
        """Stop following the recorder and send the final state."""
        with self._lock:
            self._unfollow()
            with self.hold_sync():
                self.live = False
                # Always: the view is finished now, so the scrubber may be offered.
                self._flush_locked(time.monotonic())

    # -- display

    def show(self) -> None:
        """Display the view and remember the display, so :meth:`finish` can update its snapshot."""
        from IPython.display import display

        self._display_handle = display(self, display_id=True)

    def finish(self) -> None:
        """Detach, send the final state, and refresh the displayed text and SVG snapshot."""
        self.detach()
        if self._display_handle is not None:
            self._display_handle.update(self)

    def close(self) -> None:
        if not hasattr(self, "_lock"):  # __init__ failed before the view was complete
            super().close()
            return
        with self._lock:
            self._unfollow()
        super().close()

    def __repr__(self) -> str:
        with self._lock:
            return self._trace_model.text()

    def to_svg(self) -> str:
        """A static SVG picture of the current state (no JavaScript needed)."""
        with self._lock:
            return self._trace_model.svg()

    def to_html(self) -> str:
        title = f'<div class="seqlab-title">{escape(self.title)}</div>' if self.title else ""
        return f'<div class="seqlab-snapshot">{title}{self.to_svg()}</div>'

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        data = dict(data)
        data["text/plain"] = repr(self)
        data["text/html"] = self.to_html()
        return data, metadata


class Timeline(_LiveView):
    """One lane per task over (virtual or real) time: what each task was doing, and when.

    Spans are coloured by state (running, waiting on <primitive>, done, failed); each traced
    event is a marker, and hovering shows it. The view fits its width; zoom with the buttons or
    the mouse wheel. ``axis="auto"`` draws time, or event order when the whole run happened at
    one virtual instant.

    Example::

        rec = seqlab.Recorder()
        seqlab.run(main, seed=3, recorder=rec)
        Timeline(rec)
    """

    _model_class = TimelineModel
    _fields = (
        "lanes",
        "states",
        "spans",
        "markers",
        "links",
        "deadlock",
        "outcomes",
        "counts",
        "dropped",
        "hidden_tasks",
        "hidden_events",
    )

    lanes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    states = traitlets.List(traitlets.Unicode()).tag(sync=True)
    spans: traitlets.List[Any] = traitlets.List().tag(sync=True)
    markers: traitlets.List[Any] = traitlets.List().tag(sync=True)
    #: Arrows from a task that released a wait to the task it woke.
    links: traitlets.List[Any] = traitlets.List().tag(sync=True)
    #: ``{"time", "step", "tasks": [[lane, reason], ...]}`` once the run deadlocked.
    deadlock = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    #: How each lane's task ended ("returned", "raised ValueError: ...", "cancelled", "").
    outcomes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    counts = traitlets.Dict().tag(sync=True)
    dropped = traitlets.Int(0).tag(sync=True)
    hidden_tasks = traitlets.Int(0).tag(sync=True)
    hidden_events = traitlets.Int(0).tag(sync=True)
    axis = traitlets.Enum(("auto", "time", "steps"), default_value="auto").tag(sync=True)

    def __init__(
        self,
        recorder: Recorder | None = None,
        *,
        axis: str = "auto",
        max_lanes: int = 64,
        max_spans: int = 256,
        max_markers: int = 2000,
        **kwargs: Any,
    ) -> None:
        if axis not in ("auto", "time", "steps"):
            raise ValueError(f"axis must be 'auto', 'time' or 'steps', got {axis!r}")
        super().__init__(
            recorder, max_lanes=max_lanes, max_spans=max_spans, max_markers=max_markers, **kwargs
        )
        self.axis = axis


class BarrierView(_LiveView):
    """Each barrier's generations: who arrived with which index, who is waiting, broken or not."""

    _model_class = BarrierModel
    _fields = ("barriers", "hidden_events")

    barriers: traitlets.List[Any] = traitlets.List().tag(sync=True)
    hidden_events = traitlets.Int(0).tag(sync=True)


class ConvoyView(_LiveView):
    """Keys with a backlog, which consumer holds which session, retries and dead letters."""

    _model_class = ConvoyModel
    _fields = ("key_rows", "hidden_keys", "consumers", "totals", "backlog")

    key_rows: traitlets.List[Any] = traitlets.List().tag(sync=True)
    hidden_keys = traitlets.Int(0).tag(sync=True)
    consumers: traitlets.List[Any] = traitlets.List().tag(sync=True)
    totals = traitlets.Dict().tag(sync=True)
    backlog = traitlets.Int(0).tag(sync=True)


class RingView(_LiveView):
    """A ring buffer's slots and cursor, each stage's sequence, and which stages gate whom."""

    _model_class = RingModel
    _fields = (
        "size",
        "size_known",
        "cursor",
        "claimed",
        "stages",
        "gating",
        "producer",
        "producer_text",
        "hidden_events",
        "counts",
    )

    size = traitlets.Int(8).tag(sync=True)
    size_known = traitlets.Bool(False).tag(sync=True)
    cursor = traitlets.Int(-1).tag(sync=True)
    claimed = traitlets.Int(-1).tag(sync=True)
    stages: traitlets.List[Any] = traitlets.List().tag(sync=True)
    gating: traitlets.List[Any] = traitlets.List().tag(sync=True)
    producer = traitlets.Dict().tag(sync=True)
    producer_text = traitlets.Unicode("").tag(sync=True)
    hidden_events = traitlets.Int(0).tag(sync=True)
    counts = traitlets.Dict().tag(sync=True)


_VIEWS: dict[str, Callable[..., _LiveView]] = {
    "timeline": Timeline,
    "barrier": BarrierView,
    "convoy": ConvoyView,
    "ring": RingView,
}


def make_view(kind: str, recorder: Recorder | None = None, **options: Any) -> _LiveView:
    """The view named ``kind`` (``timeline``, ``barrier``, ``convoy`` or ``ring``) on ``recorder``.

    ``%%seqlab run --view KIND`` uses this. Extra keyword arguments go to the view's class.
    """
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    try:
        factory = _VIEWS[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {', '.join(VIEW_KINDS)}; got {kind!r}") from None
    return factory(recorder, **options)


@contextmanager
def live_view(kind: str, recorder: Recorder, **options: Any) -> Iterator[_LiveView]:
    """Show a view of ``recorder`` now, update it while the block runs, finish it at the end.

    Example::

        rec = seqlab.Recorder()
        with live_view("timeline", rec):
            seqlab.run(main, recorder=rec, virtual_time=False)

    The final state is sent, and the displayed text and SVG snapshot refreshed, even when the
    block raises.
    """
    if not isinstance(recorder, Recorder):
        raise TypeError(f"recorder must be a seqlab.Recorder, got {type(recorder).__name__}")
    view = make_view(kind, recorder, **options)
    view.show()
    try:
        yield view
    finally:
        view.finish()
