"""What the live views show, computed from trace events, without any Jupyter import.

Each view has a *model* here: it is fed :class:`~seqlab.trace.TraceEvent` s one at a time
(``model.feed(event)``), keeps a bounded summary of them, and renders that summary three ways:

- ``model.state()``: plain JSON-able data, the traitlets of the widget in the browser;
- ``model.text()``: a deterministic text summary (the widget's ``text/plain``, compared by nbval);
- ``model.svg()``: a static SVG snapshot (the widget's ``text/html``, shown by nbconvert and GitHub).

Memory is bounded whatever the number of events: lanes, spans per lane, markers, generations,
keys and stages are capped, and what falls beyond a cap is summarised (spans are merged pairwise,
old markers are counted instead of kept).

Models are robust to event kinds they do not know and to missing data keys: an unknown kind is
drawn as a plain marker, a missing detail falls back to something sensible.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from ..trace import TraceEvent

__all__ = [
    "TimelineModel",
    "BarrierModel",
    "ConvoyModel",
    "RingModel",
    "VIEW_MODELS",
    "WAIT_KINDS",
    "RELEASE_KINDS",
    "FAIL_KINDS",
]

#: Kinds after which the emitting task waits on the event's primitive until its next event.
WAIT_KINDS = frozenset({"arrive", "wait", "blocked", "acquire_wait", "wait_for"})
#: Kinds that end every wait on the event's primitive (a barrier releases its whole generation).
RELEASE_KINDS = frozenset({"release", "broken", "reset", "alert"})
#: Kinds drawn as failures.
FAIL_KINDS = frozenset({"failed", "broken", "dead_letter", "lock_lost", "error", "alert"})
_EXIT_ERROR_KEYS = ("error", "exception", "failed")

RUNNING, DONE, FAILED = 0, 1, 2
# Beyond this many tasks without a lane, the count of hidden tasks stops growing (memory bound).
_MAX_HIDDEN_NAMES = 100_000
_BASE_STATES = ("running", "done", "failed")

# Colours: a JupyterLab CSS variable and a fallback for pages without JupyterLab's theme.
_COLORS = {
    "running": ("--jp-brand-color1", "#1976d2"),
    "done": ("--jp-border-color1", "#bdbdbd"),
    "failed": ("--jp-error-color1", "#d32f2f"),
    "fail-marker": ("--jp-error-color1", "#d32f2f"),
    "release-marker": ("--jp-success-color1", "#388e3c"),
    "marker": ("--jp-ui-font-color1", "#424242"),
    "text": ("--jp-ui-font-color1", "#212121"),
    "muted": ("--jp-ui-font-color2", "#757575"),
    "grid": ("--jp-border-color2", "#e0e0e0"),
    "panel": ("--jp-layout-color1", "#ffffff"),
    "slot": ("--jp-layout-color3", "#bdbdbd"),
}
_WAIT_COLORS = (
    ("--jp-warn-color1", "#f57c00"),
    ("--jp-warn-color2", "#ffa726"),
    ("--jp-warn-color0", "#bf360c"),
    ("--jp-warn-color3", "#ffe0b2"),
)


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


def describe_event(event: TraceEvent) -> str:
    """One line for a tooltip: ``1.000 worker-1 Barrier 'phase' release generation=0``."""
    details = format_data(event.data)
    head = f"{event.time:.3f} {event.task} {event.primitive} {event.kind}"
    return f"{head} {details}" if details else head


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
        if self.primitive is not None and event.primitive not in (self.primitive, "task"):
            return
        self.n_events += 1
        if event.time > self.t_end:
            self.t_end = event.time
        if event.primitive != "task":
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

    def _counts_text(self, kinds: Iterable[str] | None = None) -> str:
        names = sorted(self.counts) if kinds is None else [k for k in kinds if k in self.counts]
        return " ".join(f"{k}={self.counts[k]}" for k in names)


# --------------------------------------------------------------------------------- timeline


class TimelineModel(_Model):
    """One lane per task; spans of running / waiting on <primitive> / done / failed; markers.

    A task waits on a primitive from an event of a kind in :data:`WAIT_KINDS` until its own next
    event, or until an event of a kind in :data:`RELEASE_KINDS` on the same primitive (a barrier's
    single ``release`` frees everyone in the generation). Each span is
    ``[lane, state, t0, t1, step0, step1, merged]`` where ``step`` counts events, so a run that
    happens at one virtual instant can still be drawn (axis ``"steps"``).
    """

    kind = "timeline"

    def __init__(
        self,
        primitive: str | None = None,
        *,
        max_lanes: int = 64,
        max_spans: int = 256,
        max_markers: int = 2000,
    ) -> None:
        super().__init__(primitive)
        for name, value in (
            ("max_lanes", max_lanes),
            ("max_spans", max_spans),
            ("max_markers", max_markers),
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
        self._spans: list[list[list[Any]]] = []
        self.markers: deque[list[Any]] = deque(maxlen=max_markers)
        self.dropped_markers = 0
        self._waiters: dict[str, set[int]] = {}
        self._hidden: set[str] = set()

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
        self._spans.append([])
        return lane

    def _state_id(self, label: str) -> int:
        sid = self._state_of.get(label)
        if sid is None:
            sid = len(self.states)
            self.states.append(label)
            self._state_of[label] = sid
        return sid

    def _set(self, lane: int, sid: int, t: float, step: int) -> None:
        old = self._current[lane]
        if old == sid:
            return
        t0, s0 = self._since[lane]
        spans = self._spans[lane]
        spans.append([lane, old, _t(t0), _t(t), s0, step, 1])
        if len(spans) > self.max_spans:
            self._spans[lane] = _halve(spans)
        self._current[lane] = sid
        self._since[lane] = (t, step)

    def _feed(self, event: TraceEvent) -> None:
        step = self.n_events - 1
        t = event.time
        lane = self._lane(event.task, t, step)
        if lane is None:
            return
        if event.primitive == "task":
            if event.kind == "exit":
                failed = any(event.data.get(k) for k in _EXIT_ERROR_KEYS)
                self._unwait(lane)
                self._set(lane, FAILED if failed else DONE, t, step)
            elif event.kind == "spawn":
                self._set(lane, RUNNING, t, step)
            return
        if self.markers.maxlen is not None and len(self.markers) == self.markers.maxlen:
            self.dropped_markers += 1
        self.markers.append(
            [lane, _t(t), step, event.kind, event.primitive, format_data(event.data)]
        )
        if event.kind in RELEASE_KINDS:
            for waiter in sorted(self._waiters.pop(event.primitive, ())):
                if self.states[self._current[waiter]].startswith("waiting on "):
                    self._set(waiter, RUNNING, t, step)
        if self._current[lane] in (DONE, FAILED):
            return  # an event reported on behalf of a finished task does not revive it
        self._unwait(lane)
        if event.kind in WAIT_KINDS or event.data.get("waiting") is True:
            self._set(lane, self._state_id(f"waiting on {event.primitive}"), t, step)
            self._waiters.setdefault(event.primitive, set()).add(lane)
        else:
            self._set(lane, RUNNING, t, step)

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
            out.append([lane, self._current[lane], _t(t0), _t(self.t_end), s0, self.n_events, 1])
        return out

    def axis(self) -> str:
        return "time" if self.t_end > 0 else "steps"

    def state(self) -> dict[str, Any]:
        return {
            "lanes": list(self.lanes),
            "states": list(self.states),
            "spans": self.spans(),
            "markers": [list(m) for m in self.markers],
            "counts": dict(sorted(self.counts.items())),
            "t_end": _t(self.t_end),
            "steps": self.n_events,
            "dropped": self.dropped_markers,
            "hidden_tasks": len(self._hidden),
        }

    def text(self) -> str:
        head = (
            f"Timeline: {len(self.lanes)} tasks, {self.n_events} events, t=0.000..{self.t_end:.3f}"
        )
        lines = [head]
        if self._hidden:
            lines[0] += f" (+{len(self._hidden)} tasks not shown)"
        width = max((len(n) for n in self.lanes), default=0)
        per_lane: list[dict[str, int]] = [{} for _ in self.lanes]
        for lane, _t0, _step, kind, _p, _d in self.markers:
            per_lane[lane][kind] = per_lane[lane].get(kind, 0) + 1
        for lane, name in enumerate(self.lanes):
            since = self._since[lane][0]
            status = self.states[self._current[lane]]
            kinds = " ".join(f"{k}x{n}" for k, n in sorted(per_lane[lane].items()))
            row = f"  {name:<{width}}  {status} since {since:.3f}"
            lines.append(f"{row}  {kinds}".rstrip())
        if self.dropped_markers:
            lines.append(f"  ({self.dropped_markers} older markers summarised)")
        return "\n".join(lines)

    def svg(self, width: int = 720) -> str:
        label_w, lane_h, top = 120, 22, 24
        height = top + lane_h * max(1, len(self.lanes)) + 30
        axis = self.axis()
        end = self.t_end if axis == "time" else max(1, self.n_events)
        plot_w = width - label_w - 12

        def x(t: float, s: int) -> float:
            v = t if axis == "time" else s
            return label_w + plot_w * (v / end if end else 0.0)

        parts = [_svg_open(width, height, "seqlab-timeline")]
        unit = "s" if axis == "time" else "events"
        parts.append(_text_el(4, 14, f"{self.n_events} events, {len(self.lanes)} tasks", "muted"))
        parts.append(_text_el(width - 12, 14, f"0 .. {end:g} {unit}", "muted", "end"))
        wait_ids: dict[int, int] = {}
        for lane, name in enumerate(self.lanes):
            y = top + lane * lane_h
            parts.append(
                f'<g class="seqlab-lane" data-task="{escape(name, quote=True)}">'
                + _text_el(4, y + 15, name[:18])
                + f'<line x1="{label_w}" x2="{width - 12}" y1="{y + lane_h - 1}" '
                f'y2="{y + lane_h - 1}" {_paint("grid", "stroke")}/></g>'
            )
        for lane, sid, t0, t1, s0, s1, _n in self.spans():
            y = top + lane * lane_h
            x0, x1 = x(t0, s0), x(t1, s1)
            label = self.states[sid]
            if sid == DONE:
                paint, h, dy = _paint("done"), 4, 8
            elif sid == FAILED:
                paint, h, dy = _paint("failed"), 6, 7
            elif sid == RUNNING:
                paint, h, dy = _paint("running"), 12, 4
            else:
                paint, h, dy = _wait_paint(wait_ids.setdefault(sid, len(wait_ids))), 12, 4
            parts.append(
                f'<rect class="seqlab-span" x="{x0:.1f}" y="{y + dy}" '
                f'width="{max(x1 - x0, 0.8):.1f}" height="{h}" {paint}>'
                f"<title>{escape(f'{self.lanes[lane]}: {label} {t0:.3f}..{t1:.3f}')}</title>"
                "</rect>"
            )
        for lane, t, step, kind, prim, detail in self.markers:
            y = top + lane * lane_h
            cx = x(t, step)
            color = (
                "fail-marker"
                if kind in FAIL_KINDS
                else "release-marker"
                if kind in ("release", "done", "advance")
                else "marker"
            )
            tip = f"{t:.3f} {self.lanes[lane]} {prim} {kind} {detail}".rstrip()
            parts.append(
                f'<path class="seqlab-marker" data-kind="{escape(kind, quote=True)}" '
                f'd="M{cx:.1f} {y + 1} l3 4 l-3 4 l-3 -4 z" {_paint(color)}>'
                f"<title>{escape(tip)}</title></path>"
            )
        legend_y = height - 10
        lx = 4.0
        legend = [("running", _paint("running")), ("done", _paint("done"))]
        legend += [(self.states[s], _wait_paint(i)) for s, i in wait_ids.items()]
        legend.append(("failed", _paint("failed")))
        for label, paint in legend:
            parts.append(f'<rect x="{lx:.1f}" y="{legend_y - 8}" width="10" height="8" {paint}/>')
            parts.append(_text_el(lx + 13, legend_y, label, "muted"))
            lx += 20 + 6.2 * len(label)
        parts.append("</svg>")
        return "".join(parts)


def _halve(spans: list[list[Any]]) -> list[list[Any]]:
    """Merge neighbouring spans pairwise; a merged span takes the state that lasted longest."""
    out: list[list[Any]] = []
    for i in range(0, len(spans) - 1, 2):
        a, b = spans[i], spans[i + 1]
        da, db = (a[3] - a[2], a[5] - a[4]), (b[3] - b[2], b[5] - b[4])
        state = a[1] if da >= db else b[1]
        out.append([a[0], state, a[2], b[3], a[4], b[5], a[6] + b[6]])
    if len(spans) % 2:
        out.append(spans[-1])
    return out


# ---------------------------------------------------------------------------------- barrier

BARRIER_KINDS = frozenset({"arrive", "release", "broken", "reset", "action"})


class BarrierModel(_Model):
    """Per barrier: its generations (who arrived with which index, how it ended), who waits now."""

    kind = "barrier"

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
                "generations": deque(maxlen=self.max_generations),
                "hidden_generations": 0,
                "counts": {},
            }
            self.barriers[name] = b
        return b

    def _open_generation(self, b: dict[str, Any], gen: Any, kind: str) -> dict[str, Any]:
        gens: deque[dict[str, Any]] = b["generations"]
        last = gens[-1] if gens else None
        if gen is None and kind != "arrive" and last is not None:
            return last  # an ending without a generation number ends the latest generation
        if gen is None:
            if last is not None and last["outcome"] == "open":
                return last
            gen = b["generation"] if last is None else last["generation"] + 1
        if last is not None and last["generation"] == gen:
            return last
        for record in gens:
            if record["generation"] == gen:
                return record
        if len(gens) == gens.maxlen:
            b["hidden_generations"] += 1
        record = {"generation": gen, "arrivals": [], "outcome": "open", "time": None}
        gens.append(record)
        b["generation"] = gen if isinstance(gen, int) else b["generation"]
        return record

    def _feed(self, event: TraceEvent) -> None:
        if event.primitive == "task" or event.kind not in BARRIER_KINDS:
            return
        b = self._barrier(event.primitive)
        if b is None:
            return
        b["counts"][event.kind] = b["counts"].get(event.kind, 0) + 1
        data = event.data
        if isinstance(data.get("parties"), int):
            b["parties"] = data["parties"]
        record = self._open_generation(b, data.get("generation"), event.kind)
        if event.kind == "arrive":
            index = data.get("index")
            record["arrivals"].append(
                [event.task, index if isinstance(index, int) else None, _t(event.time)]
            )
        elif event.kind in ("release", "broken", "reset"):
            outcome = {"release": "released", "broken": "broken", "reset": "reset"}[event.kind]
            if record["outcome"] == "open":
                record["outcome"] = outcome
                record["time"] = _t(event.time)
            if event.kind == "broken":
                b["broken"] = True
            elif event.kind == "reset":
                b["broken"] = False
        elif event.kind == "action":
            record["action"] = event.task

    def waiting(self, name: str) -> list[str]:
        gens = self.barriers[name]["generations"]
        if gens and gens[-1]["outcome"] == "open":
            return [a[0] for a in gens[-1]["arrivals"]]
        return []

    def state(self) -> dict[str, Any]:
        out = []
        for name, b in self.barriers.items():
            out.append(
                {
                    "name": name,
                    "parties": b["parties"],
                    "generation": b["generation"],
                    "broken": b["broken"],
                    "waiting": self.waiting(name),
                    "generations": [
                        {k: (list(v) if k == "arrivals" else v) for k, v in g.items()}
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
            lines.append(
                f"  {name}: parties={parties} generation={b['generation']} "
                f"{'BROKEN ' if b['broken'] else ''}waiting={len(waiting)}"
                + (f" ({', '.join(waiting)})" if waiting else "")
            )
            for g in b["generations"]:
                order = ", ".join(
                    f"{task}#{'?' if i is None else i}" for task, i, _ in g["arrivals"]
                )
                when = "" if g["time"] is None else f" at {g['time']:.3f}"
                lines.append(f"    gen {g['generation']}: {g['outcome']}{when}: {order}")
            if b["hidden_generations"]:
                lines.append(f"    ({b['hidden_generations']} older generations summarised)")
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
            head = f"{name}  generation {b['generation']}"
            if b["broken"]:
                head += "  BROKEN"
            parts.append(_text_el(4, y + 14, head, "failed" if b["broken"] else "text"))
            y += row_h
            for g in b["generations"]:
                parts.append(_text_el(14, y + 14, f"gen {g['generation']}", "muted"))
                color = {"released": "release-marker", "broken": "failed", "reset": "muted"}.get(
                    g["outcome"], "running"
                )
                for i, (task, index, _tm) in enumerate(g["arrivals"]):
                    cx = 90 + i * 84
                    if cx > width - 80:
                        break
                    label = task if index is None else f"{task} #{index}"
                    parts.append(
                        f'<rect x="{cx}" y="{y + 2}" width="80" height="16" rx="3" '
                        f"{_paint(color)}><title>{escape(label)}</title></rect>"
                    )
                    parts.append(
                        f'<text x="{cx + 4}" y="{y + 14}" fill="#ffffff">{escape(label[:12])}</text>'
                    )
                y += row_h
        parts.append("</svg>")
        return "".join(parts)


# ----------------------------------------------------------------------------------- convoy

CONVOY_KINDS = frozenset(
    {"send", "lock", "deliver", "done", "retry", "dead_letter", "lock_lost", "dedup", "unlock"}
)


class ConvoyModel(_Model):
    """Keys with a backlog, which consumer holds which key's session, retries and dead letters."""

    kind = "convoy"

    def __init__(
        self, primitive: str | None = None, *, max_keys: int = 32, max_tracked: int = 4096
    ) -> None:
        super().__init__(primitive)
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an int >= 1, got {max_keys!r}")
        if not isinstance(max_tracked, int) or max_tracked < max_keys:
            raise ValueError(f"max_tracked must be an int >= max_keys, got {max_tracked!r}")
        self.max_keys = max_keys
        self.max_tracked = max_tracked
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
                "holder": None,
                "inflight": None,
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

    def _release_holder(self, k: dict[str, Any]) -> None:
        holder = k["holder"]
        if holder is not None and self.consumers.get(holder) == k["key"]:
            self.consumers[holder] = None
        k["holder"] = None

    def _feed(self, event: TraceEvent) -> None:
        if event.primitive == "task" or event.kind not in CONVOY_KINDS:
            return
        data = event.data
        k = self._key(format_value(data.get("key", "?")))
        consumer = str(data.get("consumer", event.task))
        kind = event.kind
        if kind == "send":
            k["sent"] += 1
            k["backlog"] += 1
        elif kind in ("lock", "deliver"):
            previous = self.consumers.get(consumer)
            if previous is not None and previous != k["key"] and previous in self.keys:
                self.keys[previous]["holder"] = None
            if k["holder"] is not None and k["holder"] != consumer:
                self.consumers[k["holder"]] = None
            k["holder"] = consumer
            self.consumers[consumer] = k["key"]
            if kind == "deliver":
                k["inflight"] = [data.get("sequence"), data.get("attempt")]
        elif kind in ("done", "dead_letter"):
            k["backlog"] = max(0, k["backlog"] - 1)
            k["inflight"] = None
            k["done" if kind == "done" else "dead"] += 1
            if k["backlog"] == 0:
                self._release_holder(k)
        elif kind == "retry":
            k["retries"] += 1
        elif kind in ("lock_lost", "unlock"):
            k["inflight"] = None
            self._release_holder(k)

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
        shown = [{f: v for f, v in k.items() if f != "order"} for k in self.shown_keys()]
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
            lines.append(
                f"  key {k['key']}: backlog={k['backlog']} done={k['done']} "
                f"retries={k['retries']} dead={k['dead']}{holder}"
            )
        if st["hidden_keys"]:
            lines.append(f"  ({st['hidden_keys']} more keys summarised)")
        return "\n".join(lines)

    def svg(self, width: int = 720) -> str:
        st = self.state()
        row_h, top = 20, 26
        height = top + row_h * max(1, len(st["key_rows"])) + 10
        parts = [_svg_open(width, height, "seqlab-convoy")]
        totals = " ".join(f"{k}={v}" for k, v in st["totals"].items())
        parts.append(_text_el(4, 16, totals, "muted"))
        most = max([k["backlog"] for k in st["key_rows"]] + [1])
        for i, k in enumerate(st["key_rows"]):
            y = top + i * row_h
            parts.append(_text_el(4, y + 14, f"key {k['key']}"[:20]))
            bar = 200 * k["backlog"] / most
            parts.append(
                f'<rect x="130" y="{y + 3}" width="{max(bar, 1):.1f}" height="14" '
                f"{_paint('running')}><title>backlog {k['backlog']}</title></rect>"
            )
            info = f"backlog {k['backlog']}  done {k['done']}"
            if k["retries"]:
                info += f"  retries {k['retries']}"
            if k["dead"]:
                info += f"  dead {k['dead']}"
            if k["holder"]:
                info += f"  held by {k['holder']}"
            parts.append(_text_el(340, y + 14, info, "failed" if k["dead"] else "text"))
        parts.append("</svg>")
        return "".join(parts)


# ------------------------------------------------------------------------------------- ring

RING_KINDS = frozenset({"claim", "publish", "advance", "wait", "stage"})


class RingModel(_Model):
    """A ring's slots, its cursor, each stage's sequence, and which stages gate which."""

    kind = "ring"

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

    def _stage(self, name: str) -> dict[str, Any] | None:
        s = self.stages.get(name)
        if s is None:
            if len(self.stages) >= self.max_stages:
                self.hidden_events += 1
                return None
            s = {"name": name, "sequence": -1, "waiting_for": None, "batches": 0, "after": []}
            self.stages[name] = s
        return s

    def _feed(self, event: TraceEvent) -> None:
        if event.primitive == "task" or event.kind not in RING_KINDS:
            return
        data = event.data
        for key in ("size", "capacity"):
            if isinstance(data.get(key), int) and data[key] > 0:
                self.size = data[key]
        seq = data.get("sequence")
        seq = seq if isinstance(seq, int) else None
        kind = event.kind
        if kind == "claim" and seq is not None:
            self.claimed = max(self.claimed, seq)
        elif kind == "publish" and seq is not None:
            self.cursor = max(self.cursor, seq)
            self.claimed = max(self.claimed, seq)
        elif kind in ("advance", "wait", "stage"):
            s = self._stage(str(data.get("stage", event.primitive)))
            if s is None:
                return
            for key in ("after", "dependencies", "gating"):
                deps = data.get(key)
                if isinstance(deps, (list, tuple)):
                    s["after"] = [str(d) for d in deps]
            if kind == "advance" and seq is not None:
                s["sequence"] = max(s["sequence"], seq)
                s["batches"] += 1
                s["waiting_for"] = None
            elif kind == "wait" and seq is not None:
                s["waiting_for"] = seq

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
            after = f" after {', '.join(s['after'])}" if s["after"] else ""
            waits = "" if s["waiting_for"] is None else f" waiting for {s['waiting_for']}"
            lines.append(
                f"  {s['name']}: sequence={s['sequence']} lag={self.cursor - s['sequence']} "
                f"batches={s['batches']}{after}{waits}"
            )
        if self.stages:
            lines.append(f"  producer gated by: {', '.join(self.gating())}")
        if self.hidden_events:
            lines.append(f"  ({self.hidden_events} events on further stages not shown)")
        return "\n".join(lines)

    def svg(self, width: int = 720) -> str:
        size = self.ring_size()
        shown = min(size, 64)
        height = 260
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
                f"<title>slot {i}</title></circle>"
            )
        parts.append(_text_el(cx, cy - 4, f"cursor {self.cursor}", "text", "middle"))
        parts.append(_text_el(cx, cy + 12, f"size {size}", "muted", "middle"))
        y = 30
        parts.append(_text_el(260, 16, "stage: sequence (lag) after", "muted"))
        for s in self.stages.values():
            after = f"  after {', '.join(s['after'])}" if s["after"] else ""
            gate = "  gates producer" if s["name"] in self.gating() else ""
            text = f"{s['name']}: {s['sequence']} ({self.cursor - s['sequence']}){after}{gate}"
            parts.append(_text_el(260, y, text))
            y += 18
        parts.append("</svg>")
        return "".join(parts)


VIEW_MODELS: dict[str, type[_Model]] = {
    "timeline": TimelineModel,
    "barrier": BarrierModel,
    "convoy": ConvoyModel,
    "ring": RingModel,
}
