"""What the live views show, computed from trace events, without any Jupyter import.

Each view has a *model* here: it is fed :class:`~seqlab.trace.TraceEvent` s one at a time
(``model.feed(event)``), keeps a bounded summary of them, and renders that summary three ways:

- ``model.state()``: plain JSON-able data, the traitlets of the widget in the browser;
- ``model.text()``: a deterministic text summary (the widget's ``text/plain``, compared by nbval);
- ``model.svg()``: a static SVG snapshot (the widget's ``text/html``, shown by nbconvert and GitHub).

Memory is bounded whatever the number of events: lanes, spans per lane, markers, generations,
keys and stages are capped, and what falls beyond a cap is summarised (spans are merged pairwise,
old markers are counted instead of kept).

What the events mean comes from :mod:`seqlab.trace_schema`: a model reads kinds through their
declared roles (wait, release, fail, block, wake, exit, deadlock) and lists the (family, kind)
pairs it reads in ``reads`` (collected in :data:`READS`; a test checks each is declared and
emitted). Models are robust to event kinds they do not know and to missing data keys: an
unknown kind is drawn as a plain marker, a missing detail falls back to something sensible.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

from ..trace import TraceEvent
from ..trace_schema import declared, family

__all__ = [
    "TimelineModel",
    "BarrierModel",
    "ConvoyModel",
    "RingModel",
    "VIEW_MODELS",
    "READS",
    "shorten",
    "role_of",
]

# Task states a lane can be in; "waiting on <what>" states are added as they appear.
RUNNING, DONE, FAILED, CANCELLED, DEADLOCKED, SLEEPING = range(6)
_BASE_STATES = ("running", "done", "failed", "cancelled", "deadlocked", "sleeping")
_TERMINAL = frozenset({DONE, FAILED, CANCELLED, DEADLOCKED})
# Beyond this many tasks without a lane, the count of hidden tasks stops growing (memory bound).
_MAX_HIDDEN_NAMES = 100_000

# Colours: a JupyterLab CSS variable and a fallback for pages without JupyterLab's theme.
_COLORS = {
    "running": ("--jp-brand-color1", "#1976d2"),
    "done": ("--jp-border-color1", "#bdbdbd"),
    "failed": ("--jp-error-color1", "#d32f2f"),
    "cancelled": ("--jp-border-color0", "#757575"),
    "deadlocked": ("--jp-error-color1", "#d32f2f"),
    "sleeping": ("--jp-layout-color4", "#90a4ae"),
    "fail-marker": ("--jp-error-color1", "#d32f2f"),
    "release-marker": ("--jp-success-color1", "#388e3c"),
    "marker": ("--jp-ui-font-color1", "#424242"),
    "text": ("--jp-ui-font-color1", "#212121"),
    "muted": ("--jp-ui-font-color2", "#757575"),
    "grid": ("--jp-border-color2", "#e0e0e0"),
    "panel": ("--jp-layout-color1", "#ffffff"),
    "slot": ("--jp-layout-color3", "#bdbdbd"),
    "link": ("--jp-ui-font-color2", "#616161"),
}
_WAIT_COLORS = (
    ("--jp-warn-color1", "#f57c00"),
    ("--jp-warn-color2", "#ffa726"),
    ("--jp-warn-color0", "#bf360c"),
    ("--jp-warn-color3", "#ffe0b2"),
)

_ROLE_CACHE: dict[tuple[str, str], str | None] = {}


def role_of(primitive: str, kind: str) -> str | None:
    """The schema's role of ``kind`` on ``primitive`` (wait, release, fail, ...), or None."""
    key = (primitive, kind)
    try:
        return _ROLE_CACHE[key]
    except KeyError:
        decl = declared(primitive, kind)
        role = None if decl is None else decl.role
        if len(_ROLE_CACHE) < 10_000:
            _ROLE_CACHE[key] = role
        return role


def shorten(name: str, limit: int) -> str:
    """``name`` cut in the middle to ``limit`` characters, so both ends survive.

    ``"Pipeline 'chat' stage 'persist'"`` -> ``"Pipeline '…e 'persist'"``: the end usually
    tells tasks apart (the stage, the worker number), the start says what they are.
    """
    if len(name) <= limit:
        return name
    head = max(1, (limit - 1) // 3)
    tail = limit - 1 - head
    return name[:head] + "\u2026" + name[len(name) - tail :]


def _paint(name: str, prop: str = "fill") -> str:
    var, fallback = _COLORS[name]
    return f'{prop}="{fallback}" style="{prop}:var({var},{fallback})"'


def _wait_paint(i: int, prop: str = "fill") -> str:
    var, fallback = _WAIT_COLORS[i % len(_WAIT_COLORS)]
    return f'{prop}="{fallback}" style="{prop}:var({var},{fallback})"'


def format_value(value: Any) -> str:
    """A short, deterministic text for one data value."""
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if value and " " not in value and "=" not in value else repr(value)
    text = repr(value)
    # Addresses differ between runs; they never belong in a deterministic rendering.
    at = text.find(" at 0x")
    return text if at < 0 else text[:at] + ">"


def format_data(data: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in data.items())


def _t(value: float) -> float:
    """Times rounded so that float noise never shows up in state or text."""
    return round(float(value), 9)


def _svg_open(width: int, height: int, cls: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="seqlab-static {cls}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11">'
        f'<rect x="0" y="0" width="{width}" height="{height}" {_paint("panel")}/>'
    )


def _text_el(x: float, y: float, text: str, color: str = "text", anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {_paint(color)}>'
        f"{escape(text)}</text>"
    )


class _Model:
    """Common part of the view models: counting kinds, the ``primitive`` filter."""

    kind = ""
    #: The (family, kind) pairs of the trace schema this model reads.
    reads: frozenset[tuple[str, str]] = frozenset()

    def __init__(self, primitive: str | None = None) -> None:
        if primitive is not None and not isinstance(primitive, str):
            raise TypeError(f"primitive must be a str or None, got {type(primitive).__name__}")
        self.primitive = primitive
        self.n_events = 0
        self.counts: dict[str, int] = {}
        self.t_end = 0.0

    def feed_all(self, events: Iterable[TraceEvent]) -> None:
        for event in events:
            self.feed(event)

    def feed(self, event: TraceEvent) -> None:
        if self.primitive is not None and event.primitive not in (
            self.primitive,
            "task",
            "runtime",
        ):
            return
        self.n_events += 1
        if event.time > self.t_end:
            self.t_end = event.time
        if event.primitive not in ("task", "runtime"):
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        self._feed(event)

    def _feed(self, event: TraceEvent) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def text(self) -> str:
        raise NotImplementedError

    def svg(self) -> str:
        raise NotImplementedError


# --------------------------------------------------------------------------------- timeline


class TimelineModel(_Model):
    """One lane per task: what it was doing when, what it waited on, and what released it.

    A lane's state comes from the runtime where the trace has it: ``task block`` / ``task wake``
    (what the task waits on, trio's own waits included, and who woke it), ``task exit`` (returned,
    raised, cancelled) and ``runtime deadlock``. Traces without block events (``recording()``
    in a plain trio run) fall back on the primitives' own events: after a kind whose schema role
    is ``wait`` the task waits on that primitive until a ``release`` of it or its own next event.

    Each span is ``[lane, state, t0, t1, step0, step1, merged, note]`` (``step`` counts events,
    so a run that happens at one virtual instant can still be drawn, axis ``"steps"``); ``note``
    says what a wait waited on and what ended it. Each link is
    ``[from_lane, t, step, to_lane, t, step, text]``: an arrow from the task that released a
    wait to the task it woke.
    """

    kind = "timeline"
    reads = frozenset({("task", k) for k in ("spawn", "exit", "block", "wake")}) | {
        ("runtime", "deadlock")
    }

    def __init__(
        self,
        primitive: str | None = None,
        *,
        max_lanes: int = 64,
        max_spans: int = 256,
        max_markers: int = 2000,
        max_links: int = 2000,
    ) -> None:
        super().__init__(primitive)
        for name, value in (
            ("max_lanes", max_lanes),
            ("max_spans", max_spans),
            ("max_markers", max_markers),
            ("max_links", max_links),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ValueError(f"{name} must be an int >= 2, got {value!r}")
        self.max_lanes = max_lanes
        self.max_spans = max_spans
        self.lanes: list[str] = []
        self._lane_of: dict[str, int] = {}
        self.states: list[str] = list(_BASE_STATES)
        self._state_of: dict[str, int] = {s: i for i, s in enumerate(_BASE_STATES)}
        self._current: list[int] = []
        self._since: list[tuple[float, int]] = []
        self._note: list[str] = []
        self._last_step: list[int] = []
        self._blocked: list[bool] = []
        self._waits: list[int] = []
        self._longest: list[tuple[float, str] | None] = []
        self.outcomes: list[str] = []
        self._spans: list[list[list[Any]]] = []
        self.markers: deque[list[Any]] = deque(maxlen=max_markers)
        self.dropped_markers = 0
        self.links: deque[list[Any]] = deque(maxlen=max_links)
        self.dropped_links = 0
        self.deadlock: dict[str, Any] | None = None
        self._waiters: dict[str, set[int]] = {}
        self._hidden: set[str] = set()
        self.hidden_events = 0

    # -- feeding

    def _lane(self, task: str, t: float, step: int) -> int | None:
        lane = self._lane_of.get(task)
        if lane is not None:
            return lane
        if len(self.lanes) >= self.max_lanes:
            if len(self._hidden) < _MAX_HIDDEN_NAMES:
                self._hidden.add(task)
            return None
        lane = len(self.lanes)
        self.lanes.append(task)
        self._lane_of[task] = lane
        self._current.append(RUNNING)
        self._since.append((t, step))
        self._note.append("")
        self._last_step.append(step)
        self._blocked.append(False)
        self._waits.append(0)
        self._longest.append(None)
        self.outcomes.append("")
        self._spans.append([])
        return lane

    def _state_id(self, label: str) -> int:
        sid = self._state_of.get(label)
        if sid is None:
            sid = len(self.states)
            self.states.append(label)
            self._state_of[label] = sid
        return sid

    def _set(self, lane: int, sid: int, t: float, step: int, note: str = "") -> None:
        old = self._current[lane]
        if old == sid and note == self._note[lane]:
            return
        t0, s0 = self._since[lane]
        spans = self._spans[lane]
        spans.append([lane, old, _t(t0), _t(t), s0, step, 1, self._note[lane]])
        if len(spans) > self.max_spans:
            self._spans[lane] = _halve(spans)
        self._current[lane] = sid
        self._since[lane] = (t, step)
        self._note[lane] = note

    def _marker(self, lane: int, event: TraceEvent, step: int, role: str | None) -> None:
        if self.markers.maxlen is not None and len(self.markers) == self.markers.maxlen:
            self.dropped_markers += 1
        # The data is formatted when drawn, not here: most markers are dropped before that.
        self.markers.append(
            [lane, event.time, step, event.kind, event.primitive, event.data, role or ""]
        )

    def _feed(self, event: TraceEvent) -> None:
        step = self.n_events - 1
        t = event.time
        lane = self._lane(event.task, t, step)
        if lane is None:
            self.hidden_events += 1
            return
        self._last_step[lane] = step
        terminal = self._current[lane] in _TERMINAL
        primitive, kind, data = event.primitive, event.kind, event.data
        if primitive == "task":
            if kind == "spawn":
                self._set(lane, RUNNING, t, step)
            elif kind == "exit":
                self._exit(lane, event, step)
            elif terminal:
                return  # a cancelled, deadlocked task's last wake-up changes nothing
            elif kind == "block":
                self._block(lane, event, step)
            elif kind == "wake":
                self._wake(lane, event, step)
            return
        if primitive == "runtime" and kind == "deadlock":
            reason = str(data.get("waits_on", "?"))
            if self.deadlock is None:
                self.deadlock = {"time": _t(t), "step": step, "tasks": []}
            self.deadlock["tasks"].append([lane, reason])
            self._unwait(lane)
            self._set(lane, DEADLOCKED, t, step, reason)
            return
        role = role_of(primitive, kind)
        self._marker(lane, event, step, role)
        if role == "release":
            for waiter in sorted(self._waiters.pop(primitive, ())):
                if not self._blocked[waiter] and self._current[waiter] not in _TERMINAL:
                    self._set(waiter, RUNNING, t, step)
        if terminal or self._blocked[lane]:
            return  # reported on behalf of a finished or blocked task: its state stands
        self._unwait(lane)
        if role == "wait":
            self._set(lane, self._state_id(f"waiting on {primitive}"), t, step)
            self._waiters.setdefault(primitive, set()).add(lane)
        else:
            self._set(lane, RUNNING, t, step)

    def _exit(self, lane: int, event: TraceEvent, step: int) -> None:
        data = event.data
        outcome = str(data.get("outcome", "returned"))
        error = data.get("error")
        self._blocked[lane] = False
        self._unwait(lane)
        if outcome == "raised":
            text = str(error or "raised")
            self.outcomes[lane] = f"raised {text}"
            self._marker(lane, event, step, "fail")
            self._set(lane, FAILED, event.time, step, text)
        elif self._current[lane] == DEADLOCKED:
            self.outcomes[lane] = f"deadlocked, then {outcome}"
        elif outcome == "cancelled":
            self.outcomes[lane] = "cancelled"
            self._set(lane, CANCELLED, event.time, step)
        else:
            self.outcomes[lane] = "returned"
            self._set(lane, DONE, event.time, step)

    def _block(self, lane: int, event: TraceEvent, step: int) -> None:
        on = str(event.data.get("on", "?"))
        what = str(event.data.get("what", on))
        if on == "sleep":
            sid = SLEEPING
        elif on == "handler":
            sid = RUNNING  # a pipeline stage's handler awaiting: the stage is working
        else:
            sid = self._state_id(f"waiting on {on}")
        self._unwait(lane)
        self._blocked[lane] = True
        self._set(lane, sid, event.time, step, what)

    def _wake(self, lane: int, event: TraceEvent, step: int) -> None:
        data = event.data
        if not self._blocked[lane]:
            return
        self._blocked[lane] = False
        waited = data.get("waited")
        waited_f = float(waited) if isinstance(waited, (int, float)) else 0.0
        by = data.get("by")
        if by == "timer":
            cause = f"woke by its timer after {waited_f:.3f} s"
        elif by is not None:
            cause = f"waited {waited_f:.3f} s for {by}"
        else:
            cause = f"waited {waited_f:.3f} s"
        what = self._note[lane]
        self._note[lane] = f"{what}; {cause}" if what else cause
        if self._current[lane] not in (RUNNING, SLEEPING):
            self._waits[lane] += 1
            longest = self._longest[lane]
            if longest is None or waited_f > longest[0]:
                self._longest[lane] = (waited_f, self._note[lane])
        src = self._lane_of.get(str(by)) if by is not None else None
        if src is not None and src != lane:
            at = data.get("at")
            t_from = float(at) if isinstance(at, (int, float)) else event.time
            if self.links.maxlen is not None and len(self.links) == self.links.maxlen:
                self.dropped_links += 1
            self.links.append(
                [src, _t(t_from), self._last_step[src], lane, _t(event.time), step, cause]
            )
        self._set(lane, RUNNING, event.time, step)

    def _unwait(self, lane: int) -> None:
        label = self.states[self._current[lane]]
        if label.startswith("waiting on "):
            waiters = self._waiters.get(label[len("waiting on ") :])
            if waiters is not None:
                waiters.discard(lane)

    # -- rendering

    def spans(self) -> list[list[Any]]:
        """All spans, the open ones (each lane's current state) closed at the end of the trace."""
        out: list[list[Any]] = []
        for lane, spans in enumerate(self._spans):
            out.extend(spans)
            t0, s0 = self._since[lane]
            out.append(
                [
                    lane,
                    self._current[lane],
                    _t(t0),
                    _t(self.t_end),
                    s0,
                    self.n_events,
                    1,
                    self._note[lane],
                ]
            )
        return out

    def axis(self) -> str:
        return "time" if self.t_end > 0 else "steps"

    def drawn_markers(self) -> list[list[Any]]:
        """The markers as drawn: ``[lane, t, step, kind, primitive, details, role]``."""
        return [[m[0], _t(m[1]), m[2], m[3], m[4], format_data(m[5]), m[6]] for m in self.markers]

    def lane_status(self, lane: int) -> str:
        """The lane's current state in words, with its reason or exception."""
        status = self.states[self._current[lane]]
        note = self._note[lane]
        since = self._since[lane][0]
        if self._current[lane] in (FAILED, DEADLOCKED) and note:
            return f"{status} at {since:.3f}: {note}"
        return f"{status} since {since:.3f}"

    def state(self) -> dict[str, Any]:
        return {
            "lanes": list(self.lanes),
            "states": list(self.states),
            "spans": self.spans(),
            "markers": self.drawn_markers(),
            "links": [list(link) for link in self.links],
            "deadlock": None
            if self.deadlock is None
            else {**self.deadlock, "tasks": [list(x) for x in self.deadlock["tasks"]]},
            "outcomes": list(self.outcomes),
            "counts": dict(sorted(self.counts.items())),
            "t_end": _t(self.t_end),
            "steps": self.n_events,
            "dropped": self.dropped_markers,
            "hidden_tasks": len(self._hidden),
            "hidden_events": self.hidden_events,
        }

    def _hidden_text(self) -> str:
        if not self._hidden:
            return ""
        return f" (+{len(self._hidden)} tasks and {self.hidden_events} events not shown)"

    def text(self) -> str:
        head = (
            f"Timeline: {len(self.lanes)} tasks, {self.n_events} events, t=0.000..{self.t_end:.3f}"
        )
        lines = [head + self._hidden_text()]
        if self.deadlock is not None:
            lines.append(
                f"  DEADLOCK at {self.deadlock['time']:.3f}: "
                f"{len(self.deadlock['tasks'])} tasks blocked for good"
            )
        width = max((len(n) for n in self.lanes), default=0)
        per_lane: list[dict[str, int]] = [{} for _ in self.lanes]
        for marker in self.markers:
            counts = per_lane[marker[0]]
            counts[marker[3]] = counts.get(marker[3], 0) + 1
        for lane, name in enumerate(self.lanes):
            kinds = " ".join(f"{k}x{n}" for k, n in sorted(per_lane[lane].items()))
            row = f"  {name:<{width}}  {self.lane_status(lane)}"
            lines.append(f"{row}  {kinds}".rstrip())
            longest = self._longest[lane]
            if longest is not None:
                waits = self._waits[lane]
                lines.append(
                    f"  {'':<{width}}    {waits} wait{'s' if waits != 1 else ''}, longest: {longest[1]}"
                )
        if self.links:
            n = len(self.links)
            lines.append(
                f"  {n} wake-up{'s' if n != 1 else ''} linked to the task that released "
                f"{'them' if n != 1 else 'it'}"
            )
        if self.dropped_markers:
            lines.append(f"  ({self.dropped_markers} older markers summarised)")
        return "\n".join(lines)

    def svg(self, width: int = 720) -> str:
        label_w, lane_h, top = 150, 22, 24
        band_w = 150 if self.deadlock is not None else 0
        height = top + lane_h * max(1, len(self.lanes)) + 30
        axis = self.axis()
        end = self.t_end if axis == "time" else max(1, self.n_events)
        plot_w = width - label_w - 12 - band_w

        def x(t: float, s: int) -> float:
            v = t if axis == "time" else s
            return label_w + plot_w * (v / end if end else 0.0)

        parts = [_svg_open(width, height, "seqlab-timeline")]
        unit = "s" if axis == "time" else "events"
        summary = f"{self.n_events} events, {len(self.lanes)} tasks" + self._hidden_text()
        parts.append(_text_el(4, 14, summary, "muted"))
        parts.append(_text_el(width - 12, 14, f"0 .. {end:g} {unit}", "muted", "end"))
        for lane, name in enumerate(self.lanes):
            y = top + lane * lane_h
            sid = self._current[lane]
            color = "failed" if sid in (FAILED, DEADLOCKED) else "text"
            parts.append(
                f'<g class="seqlab-lane" data-task="{escape(name, quote=True)}">'
                + _text_el(4, y + 15, shorten(name, 22), color)
                + f"<title>{escape(name + ': ' + self.lane_status(lane))}</title>"
                + f'<line x1="{label_w}" x2="{width - 12}" y1="{y + lane_h - 1}" '
                f'y2="{y + lane_h - 1}" {_paint("grid", "stroke")}/></g>'
            )
        wait_ids: dict[int, int] = {}
        for lane, sid, t0, t1, s0, s1, _n, note in self.spans():
            y = top + lane * lane_h
            x0, x1 = x(t0, s0), x(t1, s1)
            label = self.states[sid]
            if sid in (DONE, CANCELLED):
                paint, h, dy = _paint(label), 4, 8
            elif sid == FAILED:
                paint, h, dy = _paint(label), 5, 2  # at the top: the exception goes below
            elif sid == DEADLOCKED:
                paint, h, dy = _paint(label), 6, 7
            elif sid == RUNNING:
                paint, h, dy = _paint("running"), 12, 4
            elif sid == SLEEPING:
                paint, h, dy = _paint("sleeping"), 8, 6
            else:
                paint, h, dy = _wait_paint(wait_ids.setdefault(sid, len(wait_ids))), 12, 4
            tip = f"{self.lanes[lane]}: {label} {t0:.3f}..{t1:.3f}" + (f" ({note})" if note else "")
            parts.append(
                f'<rect class="seqlab-span" data-state="{escape(label, quote=True)}" '
                f'x="{x0:.1f}" y="{y + dy}" width="{max(x1 - x0, 0.8):.1f}" height="{h}" {paint}>'
                f"<title>{escape(tip)}</title></rect>"
            )
            if sid == FAILED and note:
                # The exception, written on the lane where the task ended.
                failure_x = max(
                    label_w, min(x0 + 4, width - 12 - band_w - 6.2 * min(len(note), 40))
                )
                parts.append(
                    f'<text x="{failure_x:.1f}" y="{y + 18}" font-weight="bold" font-size="10" '
                    f'stroke="#ffffff" stroke-width="3" paint-order="stroke" {_paint("failed")}>'
                    f"{escape(shorten(note, 40))}</text>"
                )
        for src, tf, sf, dst, tt, st, text in self.links:
            x0, x1 = x(tf, sf), x(tt, st)
            y0, y1 = top + src * lane_h + 11, top + dst * lane_h + 11
            parts.append(
                f'<line class="seqlab-link" x1="{x0:.1f}" y1="{y0}" x2="{x1:.1f}" y2="{y1}" '
                f'stroke-width="1" {_paint("link", "stroke")}>'
                f"<title>{escape(f'{self.lanes[dst]} {text}')}</title></line>"
            )
        for group in _stack_markers(self.drawn_markers(), lambda m: x(m[1], m[2])):
            lane, t, step, role = group[-1][0], group[-1][1], group[-1][2], group[-1][6]
            y = top + lane * lane_h
            cx = x(t, step)
            color = (
                "fail-marker"
                if any(m[6] == "fail" for m in group)
                else "release-marker"
                if role == "release"
                else "marker"
            )
            tip = "\n".join(
                f"{m[1]:.3f} {self.lanes[m[0]]} {m[4]} {m[3]} {m[5]}".rstrip() for m in group
            )
            kinds = " ".join(sorted({m[3] for m in group}))
            parts.append(
                f'<path class="seqlab-marker" data-kind="{escape(kinds, quote=True)}" '
                f'd="M{cx:.1f} {y + 1} l3 4 l-3 4 l-3 -4 z" {_paint(color)}>'
                f"<title>{escape(tip)}</title></path>"
            )
            if len(group) > 1:
                parts.append(_text_el(cx + 4, y + 8, f"\u00d7{len(group)}", "muted"))
        if self.deadlock is not None:
            bx = x(self.deadlock["time"], self.deadlock["step"])
            for lane, reason in self.deadlock["tasks"]:
                y = top + lane * lane_h
                parts.append(
                    f'<rect class="seqlab-deadlock" x="{bx:.1f}" y="{y + 2}" '
                    f'width="{width - 12 - bx:.1f}" height="{lane_h - 4}" fill-opacity="0.25" '
                    f"{_paint('deadlocked')}><title>{escape(f'deadlocked: {reason}')}</title></rect>"
                )
                parts.append(_text_el(bx + 4, y + 15, shorten(reason, 26), "failed"))
        legend_y = height - 10
        lx = 4.0
        legend = [("running", _paint("running")), ("sleeping", _paint("sleeping"))]
        legend += [(self.states[s], _wait_paint(i)) for s, i in wait_ids.items()]
        legend += [(s, _paint(s)) for s in ("done", "failed", "cancelled", "deadlocked")]
        for label, paint in legend:
            if lx > width - 40:
                break
            parts.append(f'<rect x="{lx:.1f}" y="{legend_y - 8}" width="10" height="8" {paint}/>')
            parts.append(_text_el(lx + 13, legend_y, shorten(label, 30), "muted"))
            lx += 20 + 6.2 * len(shorten(label, 30))
        parts.append("</svg>")
        return "".join(parts)


def _stack_markers(
    markers: Iterable[list[Any]], x: Callable[[list[Any]], float], px: float = 6.0
) -> list[list[list[Any]]]:
    """Markers of one lane closer than ``px`` pixels, grouped (drawn once, with a count).

    A failure in a group is drawn on top, so a dead letter never hides under a delivery.
    """
    groups: dict[tuple[int, int], list[list[Any]]] = {}
    for m in markers:
        groups.setdefault((m[0], int(x(m) // px)), []).append(m)
    out = []
    for group in groups.values():
        group.sort(key=lambda m: m[6] == "fail")
        out.append(group)
    return out


def _halve(spans: list[list[Any]]) -> list[list[Any]]:
    """Merge neighbouring spans pairwise; a merged span takes the state that lasted longest."""
    out: list[list[Any]] = []
    for i in range(0, len(spans) - 1, 2):
        a, b = spans[i], spans[i + 1]
        da, db = (a[3] - a[2], a[5] - a[4]), (b[3] - b[2], b[5] - b[4])
        keep = a if da >= db else b
        out.append([a[0], keep[1], a[2], b[3], a[4], b[5], a[6] + b[6], keep[7]])
    if len(spans) % 2:
        out.append(spans[-1])
    return out


# ---------------------------------------------------------------------------------- barrier


class BarrierModel(_Model):
    """Per barrier: its parties, each generation's arrivals (when, with which index, how long
    each waited), who released everyone, broken/reset, and tasks stuck in a deadlock.

    Each arrival is ``[task, index, time, waited, status]``; status is ``waiting``,
    ``released``, ``left`` (cancelled while waiting), ``broken`` or ``deadlocked``.
    """

    kind = "barrier"
    reads = frozenset(
        {("Barrier", k) for k in ("arrive", "leave", "action", "release", "broken", "reset")}
        | {("Phaser", k) for k in ("register", "arrive", "deregister", "advance")}
        | {("runtime", "deadlock")}
    )

    def __init__(
        self, primitive: str | None = None, *, max_generations: int = 32, max_barriers: int = 16
    ) -> None:
        super().__init__(primitive)
        if not isinstance(max_generations, int) or max_generations < 1:
            raise ValueError(f"max_generations must be an int >= 1, got {max_generations!r}")
        if not isinstance(max_barriers, int) or max_barriers < 1:
            raise ValueError(f"max_barriers must be an int >= 1, got {max_barriers!r}")
        self.max_generations = max_generations
        self.max_barriers = max_barriers
        self.barriers: dict[str, dict[str, Any]] = {}
        self.hidden_events = 0

    def _barrier(self, name: str) -> dict[str, Any] | None:
        b = self.barriers.get(name)
        if b is None:
            if len(self.barriers) >= self.max_barriers:
                self.hidden_events += 1
                return None
            b = {
                "name": name,
                "parties": None,
                "generation": 0,
                "broken": False,
                "reason": None,
                "deadlock": None,
                "unit": "generation",
                "generations": deque(maxlen=self.max_generations),
                "hidden_generations": 0,
                "counts": {},
            }
            self.barriers[name] = b
        return b

    def _generation(self, b: dict[str, Any], gen: Any, kind: str) -> dict[str, Any]:
        gens: deque[dict[str, Any]] = b["generations"]
        if not isinstance(gen, int):
            # Without a number: an ending ends the latest generation, an arrival joins the
            # open one or opens the next.
            if gens and (kind != "arrive" or gens[-1]["outcome"] == "open"):
                return gens[-1]
            gen = gens[-1]["generation"] + 1 if gens else b["generation"]
        for record in reversed(gens):
            if record["generation"] == gen:
                return record
        if len(gens) == gens.maxlen:
            b["hidden_generations"] += 1
        record = {
            "generation": gen,
            "arrivals": [],
            "outcome": "open",
            "time": None,
            "by": None,
            "action": None,
        }
        gens.append(record)
        b["generation"] = max(b["generation"], gen)
        return record

    def _feed(self, event: TraceEvent) -> None:
        if (family(event.primitive), event.kind) not in self.reads:
            return
        if event.primitive == "runtime":
            self._deadlock(event)
            return
        b = self._barrier(event.primitive)
        if b is None:
            return
        kind, data = event.kind, event.data
        b["counts"][kind] = b["counts"].get(kind, 0) + 1
        if family(event.primitive) == "Phaser":
            self._phaser(b, event)
            return
        if isinstance(data.get("parties"), int):
            b["parties"] = data["parties"]
        if kind == "reset":
            for record in b["generations"]:
                if record["outcome"] == "open":
                    self._end(record, "reset", event)
            b["broken"], b["reason"] = False, None
            b["generation"] = max(b["generation"], int(data.get("generation", 0) or 0))
            return
        record = self._generation(b, data.get("generation"), kind)
        if kind == "arrive":
            index = data.get("index")
            record["arrivals"].append(
                [
                    event.task,
                    index if isinstance(index, int) else None,
                    _t(event.time),
                    None,
                    "waiting",
                ]
            )
        elif kind == "leave":
            arrival = _find_arrival(record, event.task)
            if arrival is not None and arrival[4] == "waiting":
                arrival[4] = "left"  # (a deadlocked task cancelled afterwards stays deadlocked)
        elif kind == "action":
            record["action"] = event.task
        elif kind == "release":
            arrival = _find_arrival(record, event.task)
            if arrival is not None:
                waited = data.get("waited")
                arrival[3] = _t(waited) if isinstance(waited, (int, float)) else None
                arrival[4] = "released"
            if record["outcome"] == "open":
                self._end(record, "released", event)
                record["by"] = data.get("by", event.task)
        elif kind == "broken":
            b["broken"], b["reason"] = True, str(data.get("reason", ""))
            if record["outcome"] == "open":
                self._end(record, "broken", event)

    def _phaser(self, b: dict[str, Any], event: TraceEvent) -> None:
        """A Phaser's phases drawn as generations: its registered parties, who arrived (or
        arrived and left), and which task's arrival advanced the phase."""
        b["unit"] = "phase"
        kind, data = event.kind, event.data
        if isinstance(data.get("registered"), int):
            b["parties"] = data["registered"]
        if kind == "register":
            return
        if kind == "advance":
            phase = data.get("phase")
            if isinstance(phase, int):
                record = self._generation(b, phase - 1, kind)
                if record["outcome"] == "open":
                    self._end(record, "released", event)
                    record["by"] = event.task
                b["generation"] = max(b["generation"], phase)
            if data.get("terminated"):
                b["reason"] = "terminated"
            return
        record = self._generation(b, data.get("phase"), "arrive")
        status = "waiting" if kind == "arrive" else "left"
        record["arrivals"].append([event.task, None, _t(event.time), None, status])

    @staticmethod
    def _end(record: dict[str, Any], outcome: str, event: TraceEvent) -> None:
        record["outcome"] = outcome
        record["time"] = _t(event.time)
        for arrival in record["arrivals"]:
            if arrival[4] == "waiting":
                arrival[4] = outcome

    def _deadlock(self, event: TraceEvent) -> None:
        for b in self.barriers.values():
            gens = b["generations"]
            if gens and gens[-1]["outcome"] == "open":
                arrival = _find_arrival(gens[-1], event.task)
                if arrival is not None and arrival[4] == "waiting":
                    arrival[4] = "deadlocked"
                    b["deadlock"] = _t(event.time)

    def waiting(self, name: str) -> list[str]:
        gens = self.barriers[name]["generations"]
        if gens and gens[-1]["outcome"] == "open":
            return [a[0] for a in gens[-1]["arrivals"] if a[4] in ("waiting", "deadlocked")]
        return []

    def arrived_text(self, name: str) -> str:
        """``"3 of 4 arrived"`` for the open generation (``?`` when parties are unknown)."""
        b = self.barriers[name]
        parties = "?" if b["parties"] is None else b["parties"]
        return f"{len(self.waiting(name))} of {parties} arrived"

    def state(self) -> dict[str, Any]:
        out = []
        for name, b in self.barriers.items():
            out.append(
                {
                    "name": name,
                    "parties": b["parties"],
                    "generation": b["generation"],
                    "broken": b["broken"],
                    "reason": b["reason"],
                    "deadlock": b["deadlock"],
                    "unit": b["unit"],
                    "waiting": self.waiting(name),
                    "arrived": self.arrived_text(name),
                    "generations": [
                        {k: ([list(a) for a in v] if k == "arrivals" else v) for k, v in g.items()}
                        for g in b["generations"]
                    ],
                    "hidden_generations": b["hidden_generations"],
                    "counts": dict(sorted(b["counts"].items())),
                }
            )
        return {
            "barriers": out,
            "hidden_events": self.hidden_events,
            "t_end": _t(self.t_end),
            "steps": self.n_events,
        }

    def text(self) -> str:
        lines = [f"BarrierView: {len(self.barriers)} barriers, {self.n_events} events"]
        for name, b in self.barriers.items():
            parties = "?" if b["parties"] is None else b["parties"]
            waiting = self.waiting(name)
            head = (
                f"  {name}: parties={parties} {b['unit']}={b['generation']} "
                f"{'BROKEN ' if b['broken'] else ''}waiting={len(waiting)}"
            )
            if waiting:
                head += f" ({', '.join(waiting)}): {self.arrived_text(name)}"
            if b["deadlock"] is not None:
                head += f", DEADLOCKED at {b['deadlock']:.3f}"
            if b["reason"] and (b["broken"] or b["unit"] == "phase"):
                head += f" ({b['reason']})"
            lines.append(head)
            if b["hidden_generations"]:
                lines.append(f"    ({b['hidden_generations']} older generations summarised)")
            for g in b["generations"]:
                lines.append("    " + _generation_text(g, b["unit"]))
        if self.hidden_events:
            lines.append(f"  ({self.hidden_events} events on further barriers not shown)")
        return "\n".join(lines)

    def svg(self, width: int = 720) -> str:
        row_h, top = 20, 8
        rows = sum(1 + len(b["generations"]) for b in self.barriers.values())
        height = top + row_h * max(1, rows) + 8
        parts = [_svg_open(width, height, "seqlab-barrier")]
        y = top
        for name, b in self.barriers.items():
            parties = "?" if b["parties"] is None else b["parties"]
            head = f"{name}  parties {parties}  {b['unit']} {b['generation']}"
            if self.waiting(name):
                head += f"  {self.arrived_text(name)}"
            if b["deadlock"] is not None:
                head += f"  DEADLOCKED at {b['deadlock']:.3f}"
            if b["broken"]:
                head += "  BROKEN" + (f" ({b['reason']})" if b["reason"] else "")
            bad = b["broken"] or b["deadlock"] is not None
            parts.append(_text_el(4, y + 14, head, "failed" if bad else "text"))
            y += row_h
            for g in b["generations"]:
                short = "gen" if b["unit"] == "generation" else "phase"
                parts.append(_text_el(14, y + 14, f"{short} {g['generation']}", "muted"))
                cx = 70
                for task, index, t, waited, status in g["arrivals"]:
                    if cx > width - 170:
                        parts.append(_text_el(cx, y + 14, "\u2026", "muted"))
                        break
                    color = {
                        "released": "release-marker",
                        "waiting": "running",
                        "left": "done",
                    }.get(status, "failed")
                    label = task if index is None else f"{task} #{index}"
                    tip = f"{label} arrived at {t:.3f}; {status}"
                    if waited is not None:
                        tip += f" after waiting {waited:.3f} s"
                    parts.append(
                        f'<rect x="{cx}" y="{y + 2}" width="80" height="16" rx="3" '
                        f"{_paint(color)}><title>{escape(tip)}</title></rect>"
                    )
                    parts.append(
                        f'<text x="{cx + 4}" y="{y + 14}" fill="#ffffff">'
                        f"{escape(shorten(label, 12))}</text>"
                    )
                    cx += 84
                parts.append(_text_el(width - 4, y + 14, _generation_end(g), "muted", "end"))
                y += row_h
        parts.append("</svg>")
        return "".join(parts)


def _find_arrival(record: dict[str, Any], task: str) -> list[Any] | None:
    for arrival in reversed(record["arrivals"]):
        if arrival[0] == task:
            return arrival
    return None


def _generation_end(g: dict[str, Any]) -> str:
    if g["outcome"] == "open":
        return "open"
    text = f"{g['outcome']} at {g['time']:.3f}"
    if g["by"] is not None:
        text += f" by {g['by']}"
    return text


def _generation_text(g: dict[str, Any], unit: str = "generation") -> str:
    arrivals = []
    for task, index, t, waited, status in g["arrivals"]:
        text = f"{task}#{'?' if index is None else index} at {t:.3f}"
        if waited is not None:
            text += f" waited {waited:.3f}"
        if status not in ("released", "waiting"):
            text += f" ({status})"
        arrivals.append(text)
    action = f", action by {g['action']}" if g["action"] else ""
    short = "gen" if unit == "generation" else "phase"
    return f"{short} {g['generation']}: {_generation_end(g)}{action}: {', '.join(arrivals)}"


# ----------------------------------------------------------------------------------- convoy

_CONVOY_READ = ("send", "dedup", "lock", "deliver", "done", "retry", "lock_lost", "dead_letter")


class ConvoyModel(_Model):
    """Per key: its messages in order with their fate, its backlog, and the session hand-offs.

    A message's fate is ``queued``, ``in flight``, ``retrying``, ``delivered``,
    ``dead-lettered`` or ``redelivering`` (after the handler lost the session's lock); its
    ``history`` says what each attempt did. ``sessions`` lists which consumer held the key when.
    """

    kind = "convoy"
    reads = frozenset({("Convoy", k) for k in (*_CONVOY_READ, "unlock")})

    def __init__(
        self,
        primitive: str | None = None,
        *,
        max_keys: int = 32,
        max_tracked: int = 4096,
        max_messages: int = 12,
        max_sessions: int = 6,
    ) -> None:
        super().__init__(primitive)
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an int >= 1, got {max_keys!r}")
        if not isinstance(max_tracked, int) or max_tracked < max_keys:
            raise ValueError(f"max_tracked must be an int >= max_keys, got {max_tracked!r}")
        for name, value in (("max_messages", max_messages), ("max_sessions", max_sessions)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.max_keys = max_keys
        self.max_tracked = max_tracked
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self.keys: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.consumers: dict[str, str | None] = {}
        self._order = 0
        self.forgotten_keys = 0

    def _key(self, key: str) -> dict[str, Any]:
        k = self.keys.get(key)
        if k is None:
            k = {
                "key": key,
                "backlog": 0,
                "sent": 0,
                "done": 0,
                "retries": 0,
                "dead": 0,
                "lost": 0,
                "holder": None,
                "inflight": None,
                "messages": OrderedDict(),
                "hidden_messages": 0,
                "sessions": deque(maxlen=self.max_sessions),
                "hidden_sessions": 0,
                "order": self._order,
            }
            self._order += 1
            self.keys[key] = k
            if len(self.keys) > self.max_tracked:
                self._forget()
        else:
            self.keys.move_to_end(key)
        return k

    def _forget(self) -> None:
        for name in list(self.keys):
            if len(self.keys) <= self.max_tracked:
                break
            k = self.keys[name]
            if k["backlog"] == 0 and k["holder"] is None:
                del self.keys[name]
                self.forgotten_keys += 1

    def _message(self, k: dict[str, Any], seq: Any) -> dict[str, Any]:
        messages: OrderedDict[Any, dict[str, Any]] = k["messages"]
        m = messages.get(seq)
        if m is None:
            m = {"sequence": seq, "fate": "queued", "attempts": 0, "history": []}
            messages[seq] = m
            while len(messages) > self.max_messages:
                # Settled messages go first; a key's open messages are what a reader needs.
                oldest = next(
                    (s for s, v in messages.items() if v["fate"] in ("delivered", "dead-lettered")),
                    next(iter(messages)),
                )
                del messages[oldest]
                k["hidden_messages"] += 1
        return m

    def _release_holder(self, k: dict[str, Any], t: float) -> None:
        holder = k["holder"]
        if holder is not None and self.consumers.get(holder) == k["key"]:
            self.consumers[holder] = None
        if holder is not None and k["sessions"] and k["sessions"][-1][2] is None:
            k["sessions"][-1][2] = _t(t)
        k["holder"] = None

    def _take(self, k: dict[str, Any], consumer: str, t: float) -> None:
        if k["holder"] == consumer:
            return
        previous = self.consumers.get(consumer)
        if previous is not None and previous != k["key"] and previous in self.keys:
            self._release_holder(self.keys[previous], t)
        if k["holder"] is not None:
            self._release_holder(k, t)
        k["holder"] = consumer
        self.consumers[consumer] = k["key"]
        sessions = k["sessions"]
        if len(sessions) == sessions.maxlen:
            k["hidden_sessions"] += 1
        sessions.append([consumer, _t(t), None])

    def _feed(self, event: TraceEvent) -> None:
        if (family(event.primitive), event.kind) not in self.reads:
            return
        data = event.data
        k = self._key(format_value(data.get("key", "?")))
        consumer = str(data.get("consumer", event.task))
        kind, t = event.kind, event.time
        seq = data.get("sequence")
        attempt = data.get("attempt")
        if kind == "send":
            k["sent"] += 1
            k["backlog"] += 1
            self._message(k, seq)
        elif kind == "lock":
            self._take(k, consumer, t)
        elif kind == "deliver":
            self._take(k, consumer, t)
            k["inflight"] = [seq, attempt]
            m = self._message(k, seq)
            m["fate"] = "in flight"
            m["attempts"] = attempt if isinstance(attempt, int) else m["attempts"] + 1
        elif kind in ("done", "dead_letter", "retry", "lock_lost"):
            m = self._message(k, seq)
            if not isinstance(attempt, int):
                attempt = m["attempts"]
            step = f"attempt {attempt} by consumer {consumer}"
            if kind == "done":
                m["fate"] = "delivered"
                m["history"].append(f"{step}: delivered at {t:.3f}")
            elif kind == "retry":
                m["fate"] = "retrying"
                m["history"].append(f"{step}: raised {data.get('error', '?')}")
            elif kind == "lock_lost":
                m["fate"] = "redelivering"
                m["history"].append(f"{step}: ran past lock_timeout, lost the session")
                k["lost"] += 1
            else:
                m["fate"] = "dead-lettered"
                m["error"] = str(data.get("error", "?"))
                if "message" in data:
                    m["message"] = str(data["message"])
                m["history"].append(f"{step}: raised {m['error']}; dead-lettered")
            del m["history"][:-8]
            if kind == "retry":
                k["retries"] += 1
            elif kind == "lock_lost":
                k["inflight"] = None
                self._release_holder(k, t)
            else:
                k["backlog"] = max(0, k["backlog"] - 1)
                k["inflight"] = None
                k["done" if kind == "done" else "dead"] += 1
                if k["backlog"] == 0:
                    self._release_holder(k, t)
        elif kind == "unlock":
            k["inflight"] = None
            self._release_holder(k, t)

    def shown_keys(self) -> list[dict[str, Any]]:
        ranked = sorted(
            self.keys.values(),
            key=lambda k: (
                k["holder"] is None,
                -k["backlog"],
                -k["dead"],
                -k["retries"],
                k["order"],
            ),
        )
        return ranked[: self.max_keys]

    def state(self) -> dict[str, Any]:
        shown = []
        for k in self.shown_keys():
            row = {f: v for f, v in k.items() if f not in ("order", "messages", "sessions")}
            row["messages"] = [dict(m, history=list(m["history"])) for m in k["messages"].values()]
            row["sessions"] = [list(s) for s in k["sessions"]]
            shown.append(row)
        totals = {
            kind: self.counts.get(kind, 0)
            for kind in ("send", "deliver", "done", "retry", "dead_letter", "lock_lost", "dedup")
        }
        return {
            "key_rows": shown,
            "hidden_keys": len(self.keys) - len(shown) + self.forgotten_keys,
            "consumers": sorted([c, k] for c, k in self.consumers.items()),
            "totals": totals,
            "backlog": sum(k["backlog"] for k in self.keys.values()),
            "t_end": _t(self.t_end),
            "steps": self.n_events,
        }

    def text(self) -> str:
        st = self.state()
        totals = " ".join(f"{k}={v}" for k, v in st["totals"].items())
        lines = [
            f"ConvoyView: {len(self.keys) + self.forgotten_keys} keys, backlog={st['backlog']}"
        ]
        lines.append(f"  {totals}")
        for k in st["key_rows"]:
            holder = f" held by {k['holder']}" if k["holder"] else ""
            lost = f" lost_locks={k['lost']}" if k["lost"] else ""
            lines.append(
                f"  key {k['key']}: backlog={k['backlog']} done={k['done']} "
                f"retries={k['retries']} dead={k['dead']}{lost}{holder}"
            )
            if k["hidden_messages"]:
                lines.append(f"    ({k['hidden_messages']} earlier messages summarised)")
            for m in k["messages"]:
                lines.append(f"    {_message_text(m)}")
            if k["sessions"]:
                sessions = ", ".join(_session_text(s) for s in k["sessions"])
                more = f" (+{k['hidden_sessions']} earlier)" if k["hidden_sessions"] else ""
                lines.append(f"    sessions{more}: {sessions}")
        if st["hidden_keys"]:
            lines.append(f"  ({st['hidden_keys']} more keys summarised)")
        return "\n".join(lines)

    def svg(self, width: int = 720) -> str:
        st = self.state()
        row_h, top = 18, 26
        rows = sum(1 + len(k["messages"]) for k in st["key_rows"])
        height = top + row_h * max(1, rows) + 10
        parts = [_svg_open(width, height, "seqlab-convoy")]
        totals = " ".join(f"{k}={v}" for k, v in st["totals"].items())
        parts.append(_text_el(4, 16, totals, "muted"))
        y = top
        for k in st["key_rows"]:
            info = f"key {k['key']}: backlog {k['backlog']}  done {k['done']}"
            if k["retries"]:
                info += f"  retries {k['retries']}"
            if k["dead"]:
                info += f"  dead {k['dead']}"
            if k["holder"]:
                info += f"  held by {k['holder']}"
            if k["sessions"]:
                info += "  sessions: " + ", ".join(_session_text(s) for s in k["sessions"])
            parts.append(_text_el(4, y + 13, info, "failed" if k["dead"] else "text"))
            y += row_h
            for m in k["messages"]:
                color = {"dead-lettered": "failed", "delivered": "release-marker"}.get(
                    m["fate"], "running"
                )
                parts.append(
                    f'<rect x="16" y="{y + 3}" width="10" height="10" rx="2" {_paint(color)}>'
                    f"<title>{escape('; '.join(m['history']) or m['fate'])}</title></rect>"
                )
                parts.append(_text_el(32, y + 13, _message_text(m), "text"))
                y += row_h
        parts.append("</svg>")
        return "".join(parts)


def _message_text(m: dict[str, Any]) -> str:
    head = f"#{m['sequence']} {m['fate']}"
    if m["fate"] == "dead-lettered":
        head += f" after {m['attempts']} attempts: {m.get('error', '?')}"
        if "message" in m:
            head += f" (message {m['message']})"
    elif m["attempts"]:
        head += f" (attempt {m['attempts']})"
    if any("lost the session" in h for h in m["history"]):
        head += ", redelivered after a lost lock" if m["fate"] != "redelivering" else ""
    return head


def _session_text(s: list[Any]) -> str:
    end = "now" if s[2] is None else f"{s[2]:.3f}"
    return f"consumer {s[0]} {s[1]:.3f}..{end}"


# ------------------------------------------------------------------------------------- ring

_RING_READ = ("claim", "publish", "advance", "wait", "stage", "full")


class RingModel(_Model):
    """A ring's slots and cursor, every stage's cursor on it, who comes after whom, the
    producer's gating (waiting on a full ring for the slowest final stage) and batch sizes."""

    kind = "ring"
    reads = frozenset(
        {("Pipeline", k) for k in _RING_READ}
        | {("RingBuffer", k) for k in ("claim", "publish", "full")}
    )

    def __init__(self, primitive: str | None = None, *, max_stages: int = 32) -> None:
        super().__init__(primitive)
        if not isinstance(max_stages, int) or max_stages < 1:
            raise ValueError(f"max_stages must be an int >= 1, got {max_stages!r}")
        self.max_stages = max_stages
        self.size: int | None = None
        self.cursor = -1
        self.claimed = -1
        self.stages: dict[str, dict[str, Any]] = {}
        self.hidden_events = 0
        #: The producer: is it waiting for room now, how often it had to, what it wanted.
        self.producer: dict[str, Any] = {"waiting": False, "full": 0, "wanted": None, "since": None}

    def _stage(self, name: str) -> dict[str, Any] | None:
        s = self.stages.get(name)
        if s is None:
            if len(self.stages) >= self.max_stages:
                self.hidden_events += 1
                return None
            s = {
                "name": name,
                "sequence": -1,
                "waiting_for": None,
                "batches": 0,
                "events": 0,
                "largest": 0,
                "last_batch": 0,
                "after": [],
            }
            self.stages[name] = s
        return s

    def _feed(self, event: TraceEvent) -> None:
        if (family(event.primitive), event.kind) not in self.reads:
            return
        data = event.data
        if isinstance(data.get("size"), int) and data["size"] > 0:
            self.size = data["size"]
        seq = data.get("sequence")
        seq = seq if isinstance(seq, int) else None
        kind = event.kind
        producer = self.producer
        if kind == "full":
            producer["waiting"] = True
            producer["full"] += 1
            producer["wanted"] = data.get("wanted")
            producer["since"] = _t(event.time)
        elif kind in ("claim", "publish") and seq is not None:
            producer["waiting"] = False
            self.claimed = max(self.claimed, seq)
            if kind == "publish":
                self.cursor = max(self.cursor, seq)
        elif "stage" in data:
            s = self._stage(str(data["stage"]))
            if s is None:
                return
            if isinstance(data.get("after"), (list, tuple)):
                s["after"] = [str(d) for d in data["after"]]
            if kind == "advance" and seq is not None:
                batch = data.get("batch")
                batch = batch if isinstance(batch, int) else max(0, seq - s["sequence"])
                s["sequence"] = max(s["sequence"], seq)
                s["batches"] += 1
                s["events"] += batch
                s["last_batch"] = batch
                s["largest"] = max(s["largest"], batch)
                s["waiting_for"] = None
            elif kind == "wait" and isinstance(data.get("wanted"), int):
                s["waiting_for"] = data["wanted"]

    def ring_size(self) -> int:
        if self.size is not None:
            return self.size
        low = min((s["sequence"] for s in self.stages.values()), default=self.cursor)
        need = max(8, self.claimed - low)
        return 1 << (need - 1).bit_length()

    def gating(self) -> list[str]:
        """The stages that gate the producer: those no other stage comes after."""
        followed = {d for s in self.stages.values() for d in s["after"]}
        return [name for name in self.stages if name not in followed]

    def producer_text(self) -> str:
        """The producer's gating in words."""
        p = self.producer
        gates = ", ".join(f"{name} at {self.stages[name]['sequence']}" for name in self.gating())
        if p["waiting"]:
            text = f"producer WAITING since {p['since']:.3f}: ring full, wants {p['wanted']}"
            return text + (f", gated by {gates}" if gates else "")
        text = f"producer gated by: {gates or '-'}"
        if p["full"]:
            text += f" (waited for room {p['full']} times)"
        return text

    def state(self) -> dict[str, Any]:
        return {
            "size": self.ring_size(),
            "size_known": self.size is not None,
            "cursor": self.cursor,
            "claimed": self.claimed,
            "stages": [
                dict(s, after=list(s["after"]), lag=self.cursor - s["sequence"])
                for s in self.stages.values()
            ],
            "gating": self.gating(),
            "producer": dict(self.producer),
            "producer_text": self.producer_text(),
            "hidden_events": self.hidden_events,
            "counts": dict(sorted(self.counts.items())),
            "t_end": _t(self.t_end),
            "steps": self.n_events,
        }

    def text(self) -> str:
        size = self.ring_size()
        lines = [
            f"RingView: size={size}{'' if self.size else '?'} cursor={self.cursor} "
            f"claimed={self.claimed}, {len(self.stages)} stages"
        ]
        for s in self.stages.values():
            lines.append("  " + _stage_text(s, self.cursor))
        if self.stages or self.producer["full"]:
            lines.append("  " + self.producer_text())
        if self.hidden_events:
            lines.append(f"  ({self.hidden_events} events on further stages not shown)")
        return "\n".join(lines)

    def svg(self, width: int = 720) -> str:
        size = self.ring_size()
        shown = min(size, 64)
        columns = self._stage_columns()
        graph_h = 44 * max([len(c) for c in columns] + [1]) + 16 if self.stages else 0
        # The ring at the top left, its stage graph beside it, one line per stage below both.
        height = max(260, graph_h + 16) + 18 * (len(self.stages) + 2) + 8
        cx, cy, r = 130, 130, 95
        parts = [_svg_open(width, height, "seqlab-ring")]
        low = min((s["sequence"] for s in self.stages.values()), default=self.cursor)
        for i in range(shown):
            # Slot i stands for the sequences congruent to i (or a group of them on big rings).
            seq = self.cursor - ((self.cursor - i) % shown) if self.cursor >= 0 else i - shown
            if low < seq <= self.cursor:
                paint = _paint("running")
            elif self.cursor < seq <= self.claimed:
                paint = _wait_paint(0)
            else:
                paint = _paint("slot")
            angle = 2 * math.pi * i / shown - math.pi / 2
            x, y = cx + r * math.cos(angle), cy + r * math.sin(angle)
            parts.append(
                f'<circle class="seqlab-slot" cx="{x:.1f}" cy="{y:.1f}" '
                f'r="{max(3.0, min(10.0, 280 / shown)):.1f}" {paint}>'
                f"<title>slot {i}: sequence {seq}</title></circle>"
            )
        # Each stage's cursor: a tick pointing at the slot of its sequence.
        for n, s in enumerate(self.stages.values()):
            if s["sequence"] < 0:
                continue
            angle = 2 * math.pi * ((s["sequence"] % shown) + 0.5) / shown - math.pi / 2
            r0 = r - 16 - 7 * (n % 4)
            x0, y0 = cx + r0 * math.cos(angle), cy + r0 * math.sin(angle)
            x1, y1 = cx + (r - 9) * math.cos(angle), cy + (r - 9) * math.sin(angle)
            parts.append(
                f'<line class="seqlab-stage-cursor" x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" '
                f'y2="{y1:.1f}" stroke-width="2" {_wait_paint(n, "stroke")}>'
                f"<title>{escape(str(s['name']) + ' at ' + str(s['sequence']))}</title></line>"
            )
        parts.append(_text_el(cx, cy - 4, f"cursor {self.cursor}", "text", "middle"))
        parts.append(_text_el(cx, cy + 12, f"size {size}", "muted", "middle"))
        y = max(260, graph_h + 16) + 14
        for s in self.stages.values():
            parts.append(_text_el(4, y, _stage_text(s, self.cursor)))
            y += 18
        color = "failed" if self.producer["waiting"] else "muted"
        parts.append(_text_el(4, y + 4, self.producer_text(), color))
        if self.stages:
            parts.append(self._graph_svg(columns, top=8, left=250))
        parts.append("</svg>")
        return "".join(parts)

    def _stage_columns(self) -> list[list[str]]:
        """The stages by depth: first those that read the producer's cursor, then the rest."""
        depth: dict[str, int] = {}

        def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
            if name not in depth:
                after = [a for a in self.stages[name]["after"] if a in self.stages]
                if name in seen or not after:
                    return depth.setdefault(name, 1)
                depth[name] = 1 + max(depth_of(a, seen | {name}) for a in after)
            return depth[name]

        columns: dict[int, list[str]] = {}
        for name in self.stages:
            columns.setdefault(depth_of(name), []).append(name)
        return [columns[d] for d in sorted(columns)]

    def _graph_svg(self, columns: list[list[str]], top: float, left: float) -> str:
        """Producer -> stages -> the stages after them: boxes and arrows (the static graph)."""
        box_w, box_h, gap = 112, 30, 28
        rows = max(len(c) for c in columns)
        at: dict[str, tuple[float, float]] = {}

        def place(name: str, col: int, row: int, n: int) -> None:
            span = 44 * rows
            at[name] = (left + col * (box_w + gap), top + span * (row + 0.5) / n - box_h / 2)

        place("producer", 0, 0, 1)
        for c, names in enumerate(columns, start=1):
            for r, name in enumerate(names):
                place(name, c, r, len(names))
        parts = ['<g class="seqlab-stage-graph" transform="translate(0 8)">']
        for name, s in self.stages.items():
            sources = [a for a in s["after"] if a in at] or ["producer"]
            for src in sources:
                (x0, y0), (x1, y1) = at[src], at[name]
                parts.append(
                    f'<line class="seqlab-stage-edge" x1="{x0 + box_w:.1f}" '
                    f'y1="{y0 + box_h / 2:.1f}" x2="{x1:.1f}" y2="{y1 + box_h / 2:.1f}" '
                    f'stroke-width="1.2" {_paint("link", "stroke")}>'
                    f"<title>{escape(f'{src} -> {name}')}</title></line>"
                )
        gates = set(self.gating())
        for name, (x, y) in at.items():
            if name == "producer":
                label = (
                    "WAITING: ring full" if self.producer["waiting"] else f"cursor {self.cursor}"
                )
                color = "failed" if self.producer["waiting"] else "muted"
            else:
                s = self.stages[name]
                label = f"at {s['sequence']}" + ("  gates producer" if name in gates else "")
                color = "muted"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="4" '
                f'fill-opacity="0.2" {_paint("slot")}/>'
            )
            parts.append(_text_el(x + 4, y + 12, shorten(name, 20)))
            parts.append(_text_el(x + 4, y + 25, label, color))
        parts.append("</g>")
        return "".join(parts)


def _stage_text(s: dict[str, Any], cursor: int) -> str:
    after = f" after {', '.join(s['after'])}" if s["after"] else ""
    waits = "" if s["waiting_for"] is None else f" waiting for {s['waiting_for']}"
    batches = f"batches={s['batches']}"
    if s["batches"]:
        batches += f" (largest {s['largest']}, mean {s['events'] / s['batches']:.1f})"
    return f"{s['name']}: sequence={s['sequence']} lag={cursor - s['sequence']} {batches}{after}{waits}"


#: The model of each view kind.
VIEW_MODELS: dict[str, type[_Model]] = {
    "timeline": TimelineModel,
    "barrier": BarrierModel,
    "convoy": ConvoyModel,
    "ring": RingModel,
}
#: Every (family, kind) each view reads; the schema test checks each is declared and emitted.
READS: dict[str, frozenset[tuple[str, str]]] = {
    name: model.reads for name, model in VIEW_MODELS.items()
}
