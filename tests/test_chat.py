"""The chat-room example: naive races, glue and sequence barriers agree."""

from __future__ import annotations

import functools
import itertools

import pytest

import seqlab
from seqlab.examples import chat

CORRECT = ["glue", "pipeline", "keyed"]


def _expected(messages: list[chat.Message]) -> dict[str, list[tuple[int, str]]]:
    rooms: dict[str, list[tuple[int, str]]] = {}
    for msg in sorted(messages, key=lambda m: (m.room, m.seq)):
        text = " ".join("***" if w in chat.BLOCKED_WORDS else w for w in msg.text.split())
        rooms.setdefault(msg.room, []).append((msg.seq, text))
    return rooms


def test_make_messages_numbers_each_room_from_zero() -> None:
    messages = chat.make_messages(rooms=2, per_room=3)
    assert [(m.room, m.seq) for m in messages] == [
        ("room-0", 0),
        ("room-1", 0),
        ("room-0", 1),
        ("room-1", 1),
        ("room-0", 2),
        ("room-1", 2),
    ]


def test_correct_versions_deliver_the_same_output_across_seeds() -> None:
    messages = chat.make_messages(rooms=3, per_room=4)
    expected = _expected(messages)
    assert any("***" in text for items in expected.values() for _, text in items)
    for version in CORRECT:
        for seed in range(40):
            delivered = seqlab.run(chat.VERSIONS[version], messages, seed=seed)
            assert chat.by_room(delivered) == expected, (version, seed)
            assert len(delivered) == len(messages)


@pytest.mark.parametrize("version", CORRECT)
def test_correct_versions_pass_exploration(version: str) -> None:
    result = seqlab.explore(functools.partial(chat.checked, version), seeds=range(60))
    assert result.ok, str(result)


def test_naive_version_misorders_for_some_seed() -> None:
    result = seqlab.explore(functools.partial(chat.checked, "naive", 1, 2), seeds=range(40))
    assert not result.ok
    assert 0 < len(result.failures) < 40  # it depends on the schedule
    failure = result.failures[0]
    assert isinstance(failure.error, AssertionError)
    assert "room-0 received [1, 0], expected [0, 1]" in str(failure.error)
    # The failing seed replays exactly.
    with pytest.raises(AssertionError, match="received"):
        seqlab.run(chat.checked, "naive", 1, 2, seed=failure.seed)
    passing = next(s for s in range(40) if s not in result.failing_seeds)
    seqlab.run(chat.checked, "naive", 1, 2, seed=passing)


def test_naive_version_still_moderates_and_delivers_everything() -> None:
    messages = chat.make_messages(2, 3)
    delivered = seqlab.run(chat.run_naive, messages, seed=0)
    assert sorted((d.room, d.seq) for d in delivered) == sorted((m.room, m.seq) for m in messages)
    assert not any("darn" in d.text or "heck" in d.text for d in delivered)


def test_check_order_reports_missing_and_unmoderated() -> None:
    messages = [chat.Message("r", 0, "darn"), chat.Message("r", 1, "ok")]
    with pytest.raises(AssertionError, match=r"r received \[0\], expected \[0, 1\]"):
        chat.check_order(messages, [chat.Delivered("r", 0, "***")])
    with pytest.raises(AssertionError, match="unmoderated"):
        chat.check_order(messages, [chat.Delivered("r", 0, "darn"), chat.Delivered("r", 1, "ok")])


def test_pipeline_version_delivers_in_trace_order() -> None:
    rec = seqlab.Recorder()
    messages = chat.make_messages(2, 3)
    seqlab.run(chat.run_pipeline, messages, seed=7, recorder=rec)
    deliveries = [(e.data["room"], e.data["seq"]) for e in rec.events if e.kind == "deliver"]
    # The pipeline keeps the global arrival order, not only each room's.
    assert deliveries == [(m.room, m.seq) for m in messages]
    persisted = set()
    moderated = set()
    for e in rec.events:
        key = (e.data.get("room"), e.data.get("seq"))
        if e.kind == "persist":
            persisted.add(key)
        elif e.kind == "moderate":
            moderated.add(key)
        elif e.kind == "deliver":
            assert key in persisted and key in moderated
    advances = [e.data for e in rec.events if e.kind == "advance"]
    assert {a["stage"] for a in advances} == {"persist", "moderate", "deliver"}


def test_keyed_version_uses_out_of_order_completion() -> None:
    rec = seqlab.Recorder()
    messages = chat.make_messages(3, 4)
    delivered = seqlab.run(chat.run_keyed, messages, seed=11, recorder=rec)
    assert chat.by_room(delivered) == _expected(messages)
    # Each room's deliverer moved its own 'delivered' sequence to the room's last message.
    finals = {
        e.primitive: e.data["sequence"]
        for e in rec.events
        if e.kind == "advance" and "delivered" in e.primitive
    }
    assert finals == {f"Sequence 'room-{r} delivered'": 3 for r in range(3)}
    # Some worker finished before an earlier one: its sequence then jumped over both at once.
    steps: dict[str, list[int]] = {}
    for e in rec.events:
        if e.kind == "advance" and "delivered" not in e.primitive:
            steps.setdefault(e.primitive, [-1]).append(e.data["sequence"])
    assert any(b - a > 1 for seen in steps.values() for a, b in itertools.pairwise(seen))
