"""A trace as Chrome trace-event JSON, for https://ui.perfetto.dev and chrome://tracing.

:meth:`seqlab.Recorder.to_perfetto` calls :func:`to_perfetto`. The result is a dict with
``traceEvents`` (write it with ``json.dump``). What a reader finds in it:

- one process for the run, one thread (track) per task, named after the task;
- on each track, a slice for the task's whole life (``B``/``E``) and, inside it, a slice
  (``X``) for each state it was in: ``running``, ``sleeping``, ``waiting on <what>`` (named by
  what it waited on), ``deadlocked``;
- a flow arrow (``s`` -> ``f``) from the task that released a wait to the task it woke;
- counters (``C``) for ring and stage cursors and for convoy backlogs;
- instant events (``i``) for every primitive event, with failures, dead letters and the
  deadlock named so in red-letter terms ("FAILED", "DEAD LETTER", "DEADLOCK").

Times are microseconds. A run that happened at one virtual instant (every event at t=0) is laid
out one millisecond per event instead, so it can still be read; ``otherData.axis`` says which.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .trace_schema import declared

__all__ = ["to_perfetto"]

_PID = 1
_COUNTERS_TID = 0


def _value(value: Any) -> Any:
    """A JSON-able copy of one data value (the same rules as TraceEvent.to_dict)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    return repr(value)


class _Track:
    """One task's track: its state slices, built as the events go by."""

    def __init__(self, tid: int, name: str, start: float) -> None:
        self.tid = tid
        self.name = name
        self.start = start
        self.end: float | None = None
        self.state = "running"
        self.args: dict[str, Any] = {}
        self.since = start
        self.blocked = False
        self.terminal = False
        self.events: list[dict[str, Any]] = []

    def switch(self, ts: float, state: str, args: dict[str, Any] | None = None) -> None:
        """End the current state's slice at ``ts`` and start ``state``."""
        if ts > self.since or self.state != "running":
            self.events.append(
                {
                    "name": self.state,
                    "cat": "state",
                    "ph": "X",
                    "ts": self.since,
                    "dur": max(0.0, ts - self.since),
                    "pid": _PID,
                    "tid": self.tid,
                    "args": self.args,
                }
            )
        self.state, self.args, self.since = state, args or {}, ts


def to_perfetto(
    events: Sequence[Any] | Iterable[Any], *, seed: int | None = None
) -> dict[str, Any]:
    """The Chrome trace-event JSON object for ``events`` (a recorder's events, in order)."""
    events = list(events)
    t_end = max((e.time for e in events), default=0.0)
    by_steps = t_end <= 0.0

    def ts_of(index: int, time: float) -> float:
        return float(index * 1000) if by_steps else round(time * 1e6, 3)

    tracks: dict[str, _Track] = {}
    counters: list[dict[str, Any]] = []
    flows: list[tuple[str, float, str, float, str]] = []
    has_wakes = any(e.primitive == "task" and e.kind == "wake" for e in events)
    backlog: dict[str, int] = {}
    deadlock_at: float | None = None

    def track(name: str, ts: float) -> _Track:
        t = tracks.get(name)
        if t is None:
            t = tracks[name] = _Track(len(tracks) + 1, name, ts)
        return t

    def instant(t: _Track, ts: float, name: str, args: dict[str, Any]) -> None:
        t.events.append(
            {
                "name": name,
                "cat": "event",
                "ph": "i",
                "s": "t",
                "ts": ts,
                "pid": _PID,
                "tid": t.tid,
                "args": args,
            }
        )

    def counter(ts: float, name: str, args: dict[str, Any]) -> None:
        counters.append(
            {
                "name": name,
                "cat": "counter",
                "ph": "C",
                "ts": ts,
                "pid": _PID,
                "tid": _COUNTERS_TID,
                "args": args,
            }
        )

    for index, e in enumerate(events):
        ts = ts_of(index, e.time)
        t = track(e.task, ts)
        data = {k: _value(v) for k, v in e.data.items()}
        if e.primitive == "task":
            if e.kind == "exit":
                if data.get("outcome") == "raised":
                    instant(t, ts, f"FAILED: {data.get('error', '?')}", data)
                if not t.terminal:
                    t.switch(ts, "running")  # closes the last state at the exit
                    t.terminal = True
                t.end = ts
            elif e.kind == "block" and not t.terminal:
                on = str(data.get("on", "?"))
                what = str(data.get("what", on))
                state = (
                    "sleeping"
                    if on == "sleep"
                    else "running"
                    if on == "handler"
                    else f"waiting on {on}"
                )
                t.blocked = True
                t.switch(ts, state, {"what": what})
            elif e.kind == "wake" and not t.terminal:
                t.blocked = False
                by = data.get("by")
                if isinstance(by, str) and by in tracks and by != e.task:
                    at = data.get("at")
                    at_ts = ts_of(index, float(at)) if isinstance(at, (int, float)) else ts
                    flows.append((by, min(at_ts, ts), e.task, ts, f"woke {e.task}"))
                t.args = {**t.args, **data}
                t.switch(ts, "running")
            continue
        if e.primitive == "runtime" and e.kind == "deadlock":
            if deadlock_at is None:
                deadlock_at = ts
            instant(t, ts, "DEADLOCK", data)
            t.switch(ts, "deadlocked", {"waits_on": data.get("waits_on")})
            t.terminal = True
            continue
        decl = declared(e.primitive, e.kind)
        role = None if decl is None else decl.role
        name = f"{e.primitive} {e.kind}"
        if e.kind == "dead_letter":
            name = f"DEAD LETTER {e.primitive} key {data.get('key')}"
        elif role == "fail":
            name = f"FAILED {name}"
        instant(t, ts, name, data)
        if not has_wakes and not t.blocked and not t.terminal:
            # Traces without block/wake events: the primitives' own waits and releases.
            if role == "wait":
                t.switch(ts, f"waiting on {e.primitive}", {"kind": e.kind})
            elif t.state != "running":
                t.switch(ts, "running")
            by = data.get("by")
            if role == "release" and isinstance(by, str) and by in tracks and by != e.task:
                flows.append((by, ts, e.task, ts, f"released {e.task}"))
        # Counters: ring and stage cursors, convoy backlogs.
        if e.kind == "publish" and isinstance(data.get("cursor"), int):
            counter(ts, f"{e.primitive} cursor", {"cursor": data["cursor"]})
        elif e.kind == "advance" and "stage" in data and isinstance(data.get("sequence"), int):
            counter(ts, f"{e.primitive} stage {data['stage']}", {"sequence": data["sequence"]})
        elif e.primitive.startswith("Convoy") and e.kind in ("send", "done", "dead_letter"):
            n = backlog.get(e.primitive, 0) + (1 if e.kind == "send" else -1)
            backlog[e.primitive] = n
            counter(ts, f"{e.primitive} backlog", {"messages": n})

    last = ts_of(len(events), t_end) if by_steps else ts_of(0, t_end)
    out: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "pid": _PID,
            "tid": 0,
            "args": {"name": "seqlab run" + ("" if seed is None else f" (seed {seed})")},
        }
    ]
    for t in tracks.values():
        out.append(
            {"name": "thread_name", "ph": "M", "pid": _PID, "tid": t.tid, "args": {"name": t.name}}
        )
        out.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "pid": _PID,
                "tid": t.tid,
                "args": {"sort_index": t.tid},
            }
        )
    flow_events: dict[int, list[dict[str, Any]]] = {}
    for n, (src, ts0, dst, ts1, label) in enumerate(flows, start=1):
        common = {"name": label, "cat": "wake", "id": n, "pid": _PID}
        flow_events.setdefault(tracks[src].tid, []).append(
            {**common, "ph": "s", "ts": ts0, "tid": tracks[src].tid}
        )
        flow_events.setdefault(tracks[dst].tid, []).append(
            {**common, "ph": "f", "bp": "e", "ts": ts1, "tid": tracks[dst].tid}
        )
    for t in tracks.values():
        end = t.end if t.end is not None else last
        t.switch(max(end, t.since), "running")  # close the last slice (deadlocked or not)
        life = [
            {"name": t.name, "cat": "task", "ph": "B", "ts": t.start, "pid": _PID, "tid": t.tid}
        ]
        body = sorted(t.events + flow_events.get(t.tid, []), key=lambda ev: ev["ts"])
        finish = max([end] + [ev["ts"] + ev.get("dur", 0.0) for ev in body])
        out += life + body
        out.append(
            {"name": t.name, "cat": "task", "ph": "E", "ts": finish, "pid": _PID, "tid": t.tid}
        )
    out += counters
    return {
        "traceEvents": out,
        "displayTimeUnit": "ms",
        "otherData": {
            "producer": "seqlab",
            "seed": seed,
            "axis": "events (1 ms each)" if by_steps else "time",
            "deadlock_at_us": deadlock_at,
        },
    }
