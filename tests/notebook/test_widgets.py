"""The notebook views, Python side: exact state for known traces, bounded messages, stable text."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

import pytest
import trio

import seqlab
from seqlab.notebook.views import BarrierModel, ConvoyModel, RingModel, TimelineModel, _halve
from seqlab.notebook.widgets import (
    BarrierView,
    ConvoyView,
    RingView,
    Timeline,
    make_view,
)
from seqlab.trace import TraceEvent

B = "Barrier 'phase'"


def ev(time: float, task: str, primitive: str, kind: str, **data: Any) -> TraceEvent:
    return TraceEvent(time, task, primitive, kind, data)


# A two-task barrier round: a arrives and blocks, b arrives last and the barrier releases both;
# b then fails.
KNOWN = [
    ev(0.0, "a", "task", "spawn"),
    ev(0.0, "b", "task", "spawn"),
    ev(1.0, "a", B, "arrive", generation=0, index=0, n_waiting=1, parties=2),
    ev(1.0, "a", "task", "block", what=f"at {B} (1 of 2 arrived)", on=B),
    ev(2.0, "b", B, "arrive", generation=0, index=1, n_waiting=2, parties=2),
    ev(2.0, "a", B, "release", generation=0, index=0, waited=1.0, by="b"),
    ev(2.0, "b", B, "release", generation=0, index=1, waited=0.0, by="b"),
    ev(2.0, "a", "task", "wake", waited=1.0, by="b", at=2.0),
    ev(3.0, "a", "task", "exit", outcome="returned"),
    ev(4.0, "b", "task", "exit", outcome="raised", error="ValueError: boom"),
]
WAIT_NOTE = f"at {B} (1 of 2 arrived); waited 1.000 s for b"


def counting(widget: Any) -> list[dict[str, Any]]:
    """Record every message the widget sends over its comm."""
    sent: list[dict[str, Any]] = []

    def send(data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        sent.append(data)

    widget.comm.send = send
    return sent


def scenario(n_workers: int = 4, rounds: int = 1):
    async def main() -> None:
        async def worker(i: int) -> None:
            for g in range(rounds):
                seqlab.emit(B, "arrive", generation=g, index=i, n_waiting=i + 1)
                await trio.sleep(i + 1)
                seqlab.emit(B, "release", generation=g, n_waiting=0)

        async with trio.open_nursery() as nursery:
            for i in range(n_workers):
                nursery.start_soon(worker, i, name=f"worker-{i}")

    return main


# ------------------------------------------------------------------------- exact state


def test_timeline_state_for_known_trace() -> None:
    view = Timeline()
    view.feed(KNOWN)
    view.flush()
    assert view.view_kind == "timeline"
    assert view.lanes == ["a", "b"]
    assert view.states == [
        "running",
        "done",
        "failed",
        "cancelled",
        "deadlocked",
        "sleeping",
        f"waiting on {B}",
    ]
    assert view.spans == [
        [0, 0, 0.0, 1.0, 0, 2, 1, ""],
        [0, 6, 1.0, 1.0, 2, 3, 1, ""],
        [0, 6, 1.0, 2.0, 3, 7, 1, WAIT_NOTE],
        [0, 0, 2.0, 3.0, 7, 8, 1, ""],
        [0, 1, 3.0, 4.0, 8, 10, 1, ""],
        [1, 0, 0.0, 2.0, 1, 4, 1, ""],
        [1, 6, 2.0, 2.0, 4, 5, 1, ""],
        [1, 0, 2.0, 4.0, 5, 9, 1, ""],
        [1, 2, 4.0, 4.0, 9, 10, 1, "ValueError: boom"],
    ]
    assert view.markers == [
        [0, 1.0, 2, "arrive", B, "generation=0 index=0 n_waiting=1 parties=2", "wait"],
        [1, 2.0, 4, "arrive", B, "generation=0 index=1 n_waiting=2 parties=2", "wait"],
        [0, 2.0, 5, "release", B, "generation=0 index=0 waited=1.000 by=b", "release"],
        [1, 2.0, 6, "release", B, "generation=0 index=1 waited=0.000 by=b", "release"],
        [1, 4.0, 9, "exit", "task", "outcome=raised error='ValueError: boom'", "fail"],
    ]
    # The wake-up is linked to the task that released it.
    assert view.links == [[1, 2.0, 6, 0, 2.0, 7, "waited 1.000 s for b"]]
    assert view.outcomes == ["returned", "raised ValueError: boom"]
    assert view.deadlock is None
    assert view.counts == {"arrive": 2, "release": 2}
    assert (view.t_end, view.steps, view.dropped, view.hidden_tasks) == (4.0, 10, 0, 0)


def test_barrier_view_state_for_known_trace() -> None:
    view = BarrierView()
    view.feed(KNOWN)
    view.flush()
    assert view.barriers == [
        {
            "name": B,
            "parties": 2,
            "generation": 0,
            "broken": False,
            "reason": None,
            "deadlock": None,
            "unit": "generation",
            "waiting": [],
            "arrived": "0 of 2 arrived",
            "generations": [
                {
                    "generation": 0,
                    "arrivals": [["a", 0, 1.0, 1.0, "released"], ["b", 1, 2.0, 0.0, "released"]],
                    "outcome": "released",
                    "time": 2.0,
                    "by": "b",
                    "action": None,
                }
            ],
            "hidden_generations": 0,
            "counts": {"arrive": 2, "release": 2},
        }
    ]
    assert repr(view) == (
        "BarrierView: 1 barriers, 10 events\n"
        f"  {B}: parties=2 generation=0 waiting=0\n"
        "    gen 0: released at 2.000 by b: a#0 at 1.000 waited 1.000, b#1 at 2.000 waited 0.000"
    )


def test_barrier_model_waiting_broken_reset_and_missing_data() -> None:
    m = BarrierModel()
    m.feed_all(
        [
            ev(0, "a", "Barrier", "arrive", parties=3),
            ev(0, "b", "Barrier", "arrive"),
            ev(1, "c", "Barrier", "broken"),
            ev(2, "c", "Barrier", "reset"),
            ev(3, "a", "Barrier", "arrive"),
            ev(3, "a", "Barrier", "mystery", anything=object()),
        ]
    )
    st = m.state()["barriers"][0]
    assert st["parties"] == 3
    assert st["waiting"] == ["a"]
    assert st["broken"] is False
    assert [g["outcome"] for g in st["generations"]] == ["broken", "open"]
    assert [g["generation"] for g in st["generations"]] == [0, 1]
    assert m.text() == (
        "BarrierView: 1 barriers, 6 events\n"
        "  Barrier: parties=3 generation=1 waiting=1 (a): 1 of 3 arrived\n"
        "    gen 0: broken at 1.000: a#? at 0.000 (broken), b#? at 0.000 (broken)\n"
        "    gen 1: open: a#? at 3.000"
    )


def test_convoy_view_state() -> None:
    c = "Convoy 'orders'"
    events = [
        ev(0, "main", c, "send", key="k1", sequence=1),
        ev(0, "main", c, "send", key="k1", sequence=2),
        ev(0, "main", c, "send", key="k2", sequence=3),
        ev(0, "main", c, "dedup", key="k2", dedup_id=7),
        ev(1, "consumer-0", c, "lock", key="k1", consumer=0),
        ev(1, "consumer-0", c, "deliver", key="k1", sequence=1, attempt=1, consumer=0),
        ev(2, "consumer-0", c, "retry", key="k1", sequence=1, attempt=1, consumer=0, error="E: x"),
        ev(2, "consumer-0", c, "deliver", key="k1", sequence=1, attempt=2, consumer=0),
        ev(
            3,
            "consumer-0",
            c,
            "dead_letter",
            key="k1",
            sequence=1,
            attempt=2,
            consumer=0,
            error="E: x",
            message="'bad'",
        ),
        ev(3, "consumer-1", c, "lock", key="k2", consumer=1),
        ev(3, "consumer-1", c, "deliver", key="k2", sequence=3, attempt=1, consumer=1),
        ev(4, "consumer-1", c, "done", key="k2", sequence=3, attempt=1, consumer=1),
        ev(4, "consumer-1", c, "unlock", key="k2", consumer=1),
        ev(5, "consumer-0", c, "brand_new_kind"),
    ]
    view = ConvoyView()
    view.feed(events)
    view.flush()
    k1, k2 = view.key_rows
    assert {f: k1[f] for f in ("key", "backlog", "sent", "done", "retries", "dead", "holder")} == {
        "key": "k1",
        "backlog": 1,
        "sent": 2,
        "done": 0,
        "retries": 1,
        "dead": 1,
        "holder": "0",
    }
    assert k1["messages"] == [
        {
            "sequence": 1,
            "fate": "dead-lettered",
            "attempts": 2,
            "error": "E: x",
            "message": "'bad'",
            "history": [
                "attempt 1 by consumer 0: raised E: x",
                "attempt 2 by consumer 0: raised E: x; dead-lettered",
            ],
        },
        {"sequence": 2, "fate": "queued", "attempts": 0, "history": []},
    ]
    assert k1["sessions"] == [["0", 1.0, None]]
    assert (k2["backlog"], k2["done"], k2["holder"]) == (0, 1, None)
    assert k2["messages"][0]["fate"] == "delivered"
    assert k2["sessions"] == [["1", 3.0, 4.0]]  # handed back when its backlog emptied
    assert view.consumers == [["0", "k1"], ["1", None]]
    assert view.totals == {
        "send": 3,
        "deliver": 3,
        "done": 1,
        "retry": 1,
        "dead_letter": 1,
        "lock_lost": 0,
        "dedup": 1,
    }
    assert view.backlog == 1
    assert repr(view) == (
        "ConvoyView: 2 keys, backlog=1\n"
        "  send=3 deliver=3 done=1 retry=1 dead_letter=1 lock_lost=0 dedup=1\n"
        "  key k1: backlog=1 done=0 retries=1 dead=1 held by 0\n"
        "    #1 dead-lettered after 2 attempts: E: x (message 'bad')\n"
        "    #2 queued\n"
        "    sessions: consumer 0 1.000..now\n"
        "  key k2: backlog=0 done=1 retries=0 dead=0\n"
        "    #3 delivered (attempt 1)\n"
        "    sessions: consumer 1 3.000..4.000"
    )


def test_convoy_lost_lock_is_told_as_a_redelivery() -> None:
    c = "Convoy"
    m = ConvoyModel()
    m.feed_all(
        [
            ev(0, "main", c, "send", key="k", sequence=1),
            ev(0, "w", c, "deliver", key="k", sequence=1, attempt=1, consumer=0),
            ev(5, "w", c, "lock_lost", key="k", sequence=1, attempt=1, consumer=0),
            ev(5, "w", c, "deliver", key="k", sequence=1, attempt=2, consumer=1),
            ev(6, "w", c, "done", key="k", sequence=1, attempt=2, consumer=1),
        ]
    )
    (row,) = m.state()["key_rows"]
    assert row["lost"] == 1
    assert "#1 delivered (attempt 2), redelivered after a lost lock" in m.text()
    assert [s[0] for s in row["sessions"]] == ["0", "1"]


def test_convoy_keys_are_bounded() -> None:
    m = ConvoyModel(max_keys=4, max_tracked=16)
    for i in range(1000):
        m.feed(ev(i, "p", "Convoy", "send", key=i))
        m.feed(ev(i, "c", "Convoy", "done", key=i))
    st = m.state()
    assert len(st["key_rows"]) == 4
    assert len(m.keys) <= 16
    assert st["hidden_keys"] == 996
    assert st["totals"]["send"] == 1000


P = "Pipeline 'p'"


def test_ring_view_state() -> None:
    events = [
        ev(0, "main", P, "stage", stage="persist", after=[], size=8),
        ev(0, "main", P, "stage", stage="deliver", after=["persist"], size=8),
        ev(0, "main", P, "claim", lo=0, sequence=1),
        ev(0, "main", P, "publish", lo=0, sequence=1, cursor=1),
        ev(0, "main", P, "claim", sequence=2),
        ev(0, "persist", P, "wait", stage="persist", wanted=0, available=-1),
        ev(1, "persist", P, "advance", stage="persist", sequence=1, batch=2),
        ev(1, "deliver", P, "wait", stage="deliver", wanted=0, available=-1),
        ev(2, "main", P, "full", wanted=9, available=8),
    ]
    view = RingView()
    view.feed(events)
    view.flush()
    assert (view.size, view.size_known, view.cursor, view.claimed) == (8, True, 1, 2)
    assert view.stages == [
        {
            "name": "persist",
            "sequence": 1,
            "waiting_for": None,
            "batches": 1,
            "events": 2,
            "largest": 2,
            "last_batch": 2,
            "after": [],
            "lag": 0,
        },
        {
            "name": "deliver",
            "sequence": -1,
            "waiting_for": 0,
            "batches": 0,
            "events": 0,
            "largest": 0,
            "last_batch": 0,
            "after": ["persist"],
            "lag": 2,
        },
    ]
    assert view.gating == ["deliver"]
    assert view.producer == {"waiting": True, "full": 1, "wanted": 9, "since": 2.0}
    assert repr(view) == (
        "RingView: size=8 cursor=1 claimed=2, 2 stages\n"
        "  persist: sequence=1 lag=0 batches=1 (largest 2, mean 2.0)\n"
        "  deliver: sequence=-1 lag=2 batches=0 after persist waiting for 0\n"
        "  producer WAITING since 2.000: ring full, wants 9, gated by deliver at -1"
    )
    # The next claim means the producer got room.
    view.feed(ev(3, "main", P, "claim", sequence=3))
    view.flush()
    assert view.producer["waiting"] is False
    assert view.producer_text == "producer gated by: deliver at -1 (waited for room 1 times)"


def test_ring_size_inferred_when_unknown() -> None:
    m = RingModel()
    m.feed(ev(0, "p", "RingBuffer", "publish", sequence=20, cursor=20))
    m.feed(ev(0, "s", P, "advance", stage="s", sequence=3, batch=4))
    assert m.state()["size"] == 32
    assert m.state()["size_known"] is False


# ------------------------------------------------------------------------- live updates


def test_live_view_follows_a_run_and_ends_equal_to_a_static_one() -> None:
    rec = seqlab.Recorder()
    live = Timeline(rec)
    assert not live.live  # nothing arrived yet
    seqlab.run(scenario(rounds=3), seed=5, recorder=rec)
    live.flush()
    assert live.live
    live.detach()
    assert not live.live
    static = Timeline(rec, live=False)
    for name in (*live._fields, "steps", "t_end"):
        assert getattr(live, name) == getattr(static, name), name
    assert live.lanes == ["main", "worker-0", "worker-1", "worker-2", "worker-3"]
    assert rec._listeners == []


def test_trailing_update_arrives_without_an_explicit_flush() -> None:
    view = Timeline(interval=0.05)
    sent = counting(view)
    view.feed(KNOWN[:3])
    view.feed(KNOWN[3:])
    deadline = time.monotonic() + 5
    while view._dirty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not view._dirty
    assert view.steps == len(KNOWN)
    assert 1 <= len(sent) <= 2


def test_100k_events_send_a_bounded_number_of_small_messages() -> None:
    n_rounds = 12_500  # 4 workers x 12_500 rounds x 2 events = 100k events

    async def main() -> None:
        async def worker(i: int) -> None:
            for g in range(n_rounds):
                seqlab.emit(B, "arrive", generation=g, index=i)
                seqlab.emit(B, "release", generation=g)
                if g % 50 == 0:
                    await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(worker, i, name=f"w{i}")

    rec = seqlab.Recorder()
    view = Timeline(rec)
    sent = counting(view)
    started = time.monotonic()
    seqlab.run(main, seed=0, recorder=rec)
    elapsed = time.monotonic() - started
    view.finish()
    assert len(rec.events) >= 100_000
    # The first event is sent at once, then at most one message per 0.25 s, a trailing one
    # for the tail, and the final one that also turns the "live" badge off.
    assert len(sent) <= elapsed / 0.25 + 3
    assert len(sent) <= 60
    assert all(m["method"] == "update" for m in sent)
    biggest = max(len(json.dumps(m["state"])) for m in sent)
    assert biggest < 400_000
    assert view.steps == len(rec.events)
    assert len(view.markers) == 2000
    assert view.dropped == view.counts["arrive"] + view.counts["release"] - 2000
    assert all(sum(1 for s in view.spans if s[0] == lane) <= 257 for lane in range(5))


def test_listener_and_flush_from_different_threads_do_not_lose_events() -> None:
    view = Timeline(interval=0.01, max_markers=100)
    counting(view)
    events = [ev(i * 0.001, f"t{i % 3}", B, "arrive" if i % 2 else "release") for i in range(3000)]

    def feed(part: list[TraceEvent]) -> None:
        for e in part:
            view.feed(e)

    threads = [threading.Thread(target=feed, args=(events[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    view.flush()
    assert view.steps == 3000
    assert sum(view.counts.values()) == 3000


def test_halving_keeps_coverage() -> None:
    spans = [[0, i % 2, float(i), float(i + 1), i, i + 1, 1, f"n{i}"] for i in range(5)]
    merged = _halve(spans)
    assert [s[2:4] for s in merged] == [[0.0, 2.0], [2.0, 4.0], [4.0, 5.0]]
    assert sum(s[6] for s in merged) == 5


def test_spans_bounded_per_lane() -> None:
    m = TimelineModel(max_spans=8)
    for i in range(1000):
        m.feed(ev(float(i), "a", B, "arrive" if i % 2 else "release"))
    lane_spans = [s for s in m.spans() if s[0] == 0]
    assert len(lane_spans) <= 9
    assert lane_spans[0][2] == 0.0 and lane_spans[-1][3] == 999.0
    assert sum(s[6] for s in lane_spans) == 1000


def test_lanes_bounded() -> None:
    m = TimelineModel(max_lanes=3)
    for i in range(10):
        m.feed(ev(0.0, f"t{i}", "task", "spawn"))
    assert m.lanes == ["t0", "t1", "t2"]
    assert m.state()["hidden_tasks"] == 7
    assert "(+7 tasks and 7 events not shown)" in m.text()
    assert "(+7 tasks and 7 events not shown)" in m.svg()


# ------------------------------------------------------------------------- text and html


def test_repr_is_deterministic_across_runs() -> None:
    texts = set()
    svgs = set()
    for _ in range(3):
        rec = seqlab.Recorder()
        seqlab.run(scenario(), seed=11, recorder=rec)
        view = Timeline(rec, live=False)
        texts.add(repr(view))
        svgs.add(view.to_svg())
    assert len(texts) == 1 and len(svgs) == 1
    assert texts.pop() == (
        "Timeline: 5 tasks, 28 events, t=0.000..4.000\n"
        "  main      done since 4.000\n"
        "              1 wait, longest: for its child tasks to finish; waited 4.000 s for worker-3\n"
        "  worker-0  done since 1.000  arrivex1 releasex1\n"
        "  worker-1  done since 2.000  arrivex1 releasex1\n"
        "  worker-2  done since 3.000  arrivex1 releasex1\n"
        "  worker-3  done since 4.000  arrivex1 releasex1\n"
        "  1 wake-up linked to the task that released it"
    )


def test_known_trace_text() -> None:
    view = Timeline()
    view.feed(KNOWN)
    assert repr(view) == (
        "Timeline: 2 tasks, 10 events, t=0.000..4.000\n"
        "  a  done since 3.000  arrivex1 releasex1\n"
        f"       1 wait, longest: {WAIT_NOTE}\n"
        "  b  failed at 4.000: ValueError: boom  arrivex1 exitx1 releasex1\n"
        "  1 wake-up linked to the task that released it"
    )


def test_mimebundle_has_widget_text_and_static_svg() -> None:
    view = Timeline()
    view.feed(KNOWN)
    data, _metadata = view._repr_mimebundle_()
    assert set(data) == {
        "text/plain",
        "text/html",
        "application/vnd.jupyter.widget-view+json",
    }
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
    assert data["text/plain"] == repr(view)
    html = data["text/html"]
    assert html.startswith('<div class="seqlab-snapshot"><svg ')
    assert html.count('class="seqlab-lane"') == 2
    assert html.count('data-kind="release"') == 1
    assert "var(--jp-brand-color1" in html
    assert "0x" not in html


@pytest.mark.parametrize("kind", ["timeline", "barrier", "convoy", "ring"])
def test_make_view_every_kind_renders_unknown_events(kind: str) -> None:
    rec = seqlab.Recorder()
    seqlab.run(scenario(), seed=2, recorder=rec)
    view = make_view(kind, rec)
    view.feed(ev(9.0, "x", "Gadget", "frobnicate", weird=[1, 2]))
    view.feed(ev(9.0, "x", "Gadget", "claim"))
    view.flush()
    assert view.view_kind == kind
    assert view.to_svg().startswith("<svg ")
    assert repr(view) == repr(view)
    view.detach()


def test_make_view_validates() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        make_view("pie")
    with pytest.raises(TypeError, match="kind"):
        make_view(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="recorder"):
        Timeline([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        Timeline(interval=0)
    with pytest.raises(ValueError, match="axis"):
        Timeline(axis="diagonal")
    with pytest.raises(ValueError, match="max_markers"):
        Timeline(max_markers=0)
    with pytest.raises(TypeError, match="events"):
        Timeline().feed(["nope"])  # type: ignore[list-item]


def test_static_assets_are_plain_offline_modules() -> None:
    view = Timeline()
    esm = view._esm
    assert "export default" in esm
    assert "import " not in esm and "http" not in esm.replace(SVG_NS, "")
    assert "--jp-" in view._css


SVG_NS = "http://www.w3.org/2000/svg"


def test_live_view_shows_then_finishes(capsys: pytest.CaptureFixture[str]) -> None:
    from seqlab.notebook.widgets import live_view

    updates: list[Any] = []
    rec = seqlab.Recorder()
    with live_view("barrier", rec) as view:
        assert rec._listeners == [view._on_event]
        # Outside a kernel display() returns no handle; stand in for the kernel's one.
        view._display_handle = type("Handle", (), {"update": staticmethod(updates.append)})()
        seqlab.run(scenario(rounds=2), seed=4, recorder=rec)
    assert rec._listeners == []
    assert updates == [view]  # the displayed output is refreshed with the final snapshot
    assert not view.live
    assert view.steps == len(rec.events)
    assert [g["outcome"] for g in view.barriers[0]["generations"]] == ["released", "released"]
    # Outside a kernel, display() prints text/plain: the view as it was when shown.
    assert capsys.readouterr().out == "BarrierView: 0 barriers, 0 events\n"
    with pytest.raises(TypeError, match="recorder"), live_view("timeline", None):  # type: ignore[arg-type]
        pass


def test_barriers_bounded() -> None:
    m = BarrierModel(max_barriers=2)
    for i in range(5):
        m.feed(ev(0.0, "t", f"Barrier 'b{i}'", "arrive"))
    assert [b["name"] for b in m.state()["barriers"]] == ["Barrier 'b0'", "Barrier 'b1'"]
    assert m.hidden_events == 3
    assert m.text().endswith("(3 events on further barriers not shown)")


def test_events_beyond_the_caps_are_counted_in_the_view_and_its_text() -> None:
    barriers = BarrierView(max_barriers=1)
    barriers.feed([ev(0.0, "t", f"Barrier 'b{i}'", "arrive") for i in range(3)])
    ring = RingView(max_stages=2)
    ring.feed([ev(0.0, "s", P, "advance", stage=f"s{i}", sequence=i, batch=1) for i in range(5)])
    for view in (barriers, ring):
        view.flush()
    assert (barriers.hidden_events, ring.hidden_events) == (2, 3)
    assert [s["name"] for s in ring.stages] == ["s0", "s1"]
    assert repr(barriers).endswith("(2 events on further barriers not shown)")
    assert repr(ring).endswith("(3 events on further stages not shown)")


def test_scrubber_replays_a_finished_trace() -> None:
    rec = seqlab.Recorder()
    seqlab.run(scenario(), seed=11, recorder=rec)
    view = BarrierView(rec, live=False)
    assert view.scrubbable
    total = len(rec.events)
    first_release = next(i for i, e in enumerate(rec.events) if e.kind == "release")
    view.replay(first_release)  # every worker has arrived, none released yet
    assert view.steps == first_release
    assert view.barriers[0]["generations"][0]["outcome"] == "open"
    view.replay(None)
    assert view.steps == total
    assert view.barriers[0]["generations"][0]["outcome"] == "released"
    with pytest.raises(ValueError, match="n must be"):
        view.replay(-1)
    # A view that follows a recorder cannot be replayed until it finishes.
    live_rec = seqlab.Recorder()
    live = Timeline(live_rec)
    assert not live.scrubbable
    with pytest.raises(RuntimeError, match="finished"):
        live.replay(1)
    seqlab.run(scenario(), seed=1, recorder=live_rec)
    live.finish()
    assert live.scrubbable
    live.replay(2)
    assert live.steps == 2 and live.lanes == ["main", "worker-0"]  # two spawns


def _deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and everything it refers to (shared strings counted once)."""
    import sys as _sys

    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = _sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset, deque)):
        size += sum(_deep_size(v, seen) for v in obj)
    elif hasattr(obj, "__dict__"):
        size += _deep_size(vars(obj), seen)
    return size


def _many_events(n: int) -> Any:
    """A mixed stream: barrier rounds with blocks and wakes, convoy traffic, stage batches."""
    c, p = "Convoy 'c'", "Pipeline 'p'"
    for i in range(n):
        t, w, k = i * 0.001, f"w{i % 50}", i % 8
        if k == 0:
            yield ev(t, w, B, "arrive", generation=i, index=0, n_waiting=1, parties=2)
        elif k == 1:
            yield ev(t, w, "task", "block", what=f"at {B} (1 of 2 arrived)", on=B)
        elif k == 2:
            yield ev(t, w, "task", "wake", waited=0.001, by=f"w{(i + 7) % 50}", at=t)
        elif k == 3:
            yield ev(t, w, B, "release", generation=i - 3, index=0, waited=0.0, by=w)
        elif k == 4:
            yield ev(t, w, c, "send", key=f"key{i % 5000}", sequence=i)
        elif k == 5:
            yield ev(
                t,
                w,
                c,
                "deliver",
                key=f"key{(i - 1) % 5000}",
                sequence=i - 1,
                attempt=1,
                consumer=i % 4,
            )
        elif k == 6:
            yield ev(
                t,
                w,
                c,
                "done",
                key=f"key{(i - 2) % 5000}",
                sequence=i - 2,
                attempt=1,
                consumer=i % 4,
            )
        else:
            yield ev(t, w, p, "advance", stage=f"s{i % 40}", sequence=i, batch=3)


def test_live_view_memory_is_bounded_at_a_million_events() -> None:
    view = Timeline(interval=1000.0)  # no flushes meanwhile: only the model's memory counts
    stream = _many_events(1_000_000)
    batch: list[TraceEvent] = []
    sizes = []
    for n, event in enumerate(stream, start=1):
        batch.append(event)
        if len(batch) == 10_000:
            view.feed(batch)
            batch = []
        if n in (100_000, 1_000_000):
            sizes.append(_deep_size(view._trace_model))
    view.flush()
    assert view.steps == 1_000_000
    small, big = sizes
    assert big < 8_000_000, big  # a few MB, whatever the number of events
    assert big < small * 1.25, (small, big)  # and it stopped growing
    state = json.dumps({name: getattr(view, name) for name in view._fields})
    assert len(state) < 1_000_000
    # The other views stay bounded too.
    for model in (BarrierModel(), ConvoyModel(), RingModel()):
        model.feed_all(_many_events(1_000_000))
        assert _deep_size(model) < 8_000_000, type(model).__name__


async def _failure_then_deadlock() -> None:
    async def parse() -> None:
        await trio.sleep(0.5)
        raise ValueError("bad input 7")

    async def player(i: int, barrier: seqlab.Barrier) -> None:
        await trio.sleep(i + 1)
        await barrier.wait()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(parse, name="parser")
    except BaseException:
        pass
    barrier = seqlab.Barrier(4, name="phase")
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(player, i, barrier, name=f"player-{i}")


def _svg_text(svg: str) -> str:
    """Everything a reader of the SVG can see or hover: its texts and titles, unescaped."""
    import html
    import re as _re

    return html.unescape(" ".join(_re.findall(r">([^<>]+)<", svg)))


def test_text_and_svg_carry_the_same_facts_deterministically() -> None:
    rec = seqlab.Recorder()
    with pytest.raises(seqlab.Deadlock):
        seqlab.run(_failure_then_deadlock, seed=2, recorder=rec)
    again = seqlab.Recorder()
    with pytest.raises(seqlab.Deadlock):
        seqlab.run(_failure_then_deadlock, seed=2, recorder=again)
    facts = {
        TimelineModel: [
            "ValueError: bad input 7",
            "at Barrier 'phase' (3 of 4 arrived)",
            "waited 0.500 s for parser",
            "5 tasks",
        ],
        BarrierModel: ["Barrier 'phase'", "3 of 4 arrived", "DEADLOCKED at 3.500", "player-2"],
    }
    for model_class, wanted in facts.items():
        forms = []
        for r in (rec, again):
            model = model_class()
            model.feed_all(r.events)
            forms.append((model.text(), model.svg()))
        # Deterministic. (Not the SVG here: after a deadlock, trio cancels the stuck tasks in
        # the order of a set of tasks, so their "leave" events come in varying order; the
        # runtime, not the view, would have to fix that. test_repr_is_deterministic_across_runs
        # covers the SVG.)
        assert forms[0][0] == forms[1][0]
        text, svg = forms[0]
        for fact in wanted:
            assert fact in text, (model_class.__name__, fact)
            assert fact in _svg_text(svg), (model_class.__name__, fact)
    timeline = TimelineModel()
    timeline.feed_all(rec.events)
    assert "DEADLOCK at 3.500" in timeline.text()
    assert _svg_text(timeline.svg()).count("deadlocked: ") == 4  # a band per stuck task

    # Hidden lanes and events are counted in both forms.
    small = TimelineModel(max_lanes=2)
    small.feed_all(rec.events)
    hidden = f"(+3 tasks and {small.hidden_events} events not shown)"
    assert hidden in small.text() and hidden in _svg_text(small.svg())

    convoy_events = [
        ev(0, "main", "Convoy 'c'", "send", key="k", sequence=0),
        ev(1, "c0", "Convoy 'c'", "deliver", key="k", sequence=0, attempt=1, consumer=0),
        ev(
            2,
            "c0",
            "Convoy 'c'",
            "dead_letter",
            key="k",
            sequence=0,
            attempt=1,
            consumer=0,
            error="ValueError: nope",
            message="'m'",
        ),
    ]
    convoy = ConvoyModel()
    convoy.feed_all(convoy_events)
    for fact in ("key k", "#0 dead-lettered after 1 attempts: ValueError: nope", "consumer 0"):
        assert fact in convoy.text() and fact in _svg_text(convoy.svg()), fact

    ring = RingModel()
    ring.feed_all(
        [
            ev(0, "main", P, "stage", stage="persist", after=[], size=8),
            ev(0, "main", P, "stage", stage="deliver", after=["persist"], size=8),
            ev(1, "persist", P, "advance", stage="persist", sequence=7, batch=8),
            ev(2, "main", P, "full", wanted=16, available=15),
        ]
    )
    for fact in (
        "persist: sequence=7",
        "largest 8",
        "after persist",
        "producer WAITING since 2.000: ring full, wants 16, gated by deliver at -1",
    ):
        assert fact in ring.text() and fact in _svg_text(ring.svg()), fact


def test_barrier_view_draws_a_phasers_phases() -> None:
    async def main() -> None:
        ph = seqlab.Phaser(1, name="ph")

        async def party() -> None:
            ph.register()
            await ph.arrive_and_wait()
            ph.arrive_and_deregister()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(party)
            await trio.sleep(1)
            await ph.arrive_and_wait()
            ph.arrive_and_deregister()

    rec = seqlab.Recorder()
    seqlab.run(main, seed=3, recorder=rec)
    model = BarrierModel()
    model.feed_all(rec.events)
    (b,) = model.state()["barriers"]
    assert (b["name"], b["unit"], b["generation"], b["reason"]) == (
        "Phaser 'ph'",
        "phase",
        2,
        "terminated",
    )
    first, second = b["generations"]
    assert [a[0] for a in first["arrivals"]] == ["party", "main"]
    assert (first["outcome"], first["time"], first["by"]) == ("released", 1.0, "main")
    assert [a[4] for a in second["arrivals"]] == ["left", "left"]  # arrived and deregistered
    assert model.text().splitlines()[1] == "  Phaser 'ph': parties=0 phase=2 waiting=0 (terminated)"
    svg = model.svg()
    assert ">phase 0<" in svg and ">released at 1.000 by main<" in svg
