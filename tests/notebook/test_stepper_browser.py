"""Be the scheduler in a real browser: JupyterLab, the seqlab kernel, Debian's chromium.

Lesson 00's level (its own cells): two tellers, one account, the goal "make the program fail".
Playwright clicks the task buttons in an order that loses an update; the widget reports the
goal; the notebook is saved, and the schedule stored in it replays to the same failure in a
fresh kernel. Lesson 01's level (goal ``stale:teller-1@account``) is won the same way in the
same JupyterLab, and the schedule it shows grades ``True`` as the lesson's level.

Every wait is on the page's state, never on the clock. Two things change a stepper's output
after a click, and both are waited for: the widget redraws itself (``data-steps``), and then
the kernel's update of the cell's output makes JupyterLab render a fresh view in its place.
A click that lands while the output is being swapped is lost, so before each click the views
on the page are marked, and after it the test waits for an unmarked view at the new step.
Counts and texts that a redraw may be about to change are asserted with ``expect``, which
waits until they hold.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    open_notebook,
    run_all_cells,
    run_lab,
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (run .ci/install-browser: apt-get install chromium)",
)

# Lesson 00's own cells, from the student copy the package ships.
LESSON = ROOT / "seqlab" / "lessons" / "00-welcome.ipynb"


def lesson_cell(cell_id: str, lesson: Path = LESSON) -> str:
    nb = json.loads(lesson.read_text())
    sources = [c["source"] for c in nb["cells"] if c.get("id") == cell_id]
    assert sources, f"{lesson.name} has no cell {cell_id!r}"
    source = sources[0]
    return source if isinstance(source, str) else "".join(source)


IMPORTS = lesson_cell("lesson0-imports")
LEVEL = lesson_cell("00-level")
# teller-1 starts one checkpoint later; both read 0 before either writes: a lost update.
LOSING = ["scenario", "teller-0", "teller-1", "teller-1", "teller-0", "teller-1", "scenario"]

# Lesson 01's level: both tellers read 0 and wait for the fraud service; teller-0 writes 10,
# then teller-1 writes 10 over it from its stale read.
LESSON_01 = ROOT / "seqlab" / "lessons" / "01-sequencer.ipynb"
CELLS_01 = ("lesson1-imports", "lesson1-slow-deposit", "01-level")
STALE = ["scenario", "teller-0", "teller-1", "teller-0", "teller-1"]


def make_notebook(path: Path, cells: list[tuple[str, str]]) -> None:
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": cell_id,
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for cell_id, source in cells
        ],
        "metadata": {
            "kernelspec": {"display_name": "seqlab", "language": "python", "name": "seqlab"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stepper-lab")
    make_notebook(path / "level.ipynb", [("lesson0-imports", IMPORTS), ("00-level", LEVEL)])
    make_notebook(path / "level01.ipynb", [(cid, lesson_cell(cid, LESSON_01)) for cid in CELLS_01])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def lab(workdir: Path, seqlab_kernelspec: Any) -> Iterator[str]:
    # JUPYTER_PATH (set by seqlab_kernelspec) carries the seqlab kernelspec to the server.
    with run_lab(workdir) as url:
        yield url


def stepper_view(page: Any) -> Any:
    return page.locator(".seqlab-stepper").last


def take_step(page: Any, name: str, n: int) -> None:
    """Click ``name``'s step button; return once a view drawn after the click shows step ``n``.

    The views on the page are marked first: JupyterLab replaces the output's view when the
    kernel updates the cell's display, so an unmarked view at step ``n`` means that swap has
    happened and the next click lands on a view that stays.
    """
    page.evaluate(
        "() => document.querySelectorAll('.seqlab-stepper').forEach(v => { v.dataset.seen = '1'; })"
    )
    stepper_view(page).locator(f'[data-action="step"][data-task="{name}"]').click()
    page.locator(f'.seqlab-stepper:not([data-seen])[data-steps="{n}"]').wait_for(timeout=120_000)


@pytest.fixture(scope="module")
def context(lab: str, workdir: Path) -> Iterator[Any]:
    """One chromium for the module's tests (each opens its own page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(workdir / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def open_level(context: Any, lab: str, notebook: str, errors: list[str]) -> Any:
    """Open ``notebook`` once its own kernel is up (see ``open_notebook``), run all its cells,
    wait for the last cell's prompt to show that it ran, then for the stepper's first button."""
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    try:
        open_notebook(page, lab, notebook)
        run_all_cells(page)
        page.wait_for_function(
            "() => { const p = [...document.querySelectorAll('.jp-InputArea-prompt')];"
            " return p.length > 0 && /\\[\\d+\\]/.test(p[p.length - 1].textContent); }",
            timeout=120_000,
        )
        stepper_view(page).locator('[data-action="step"][data-task="scenario"]').wait_for(
            timeout=120_000
        )
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"stepper-failure-{notebook}.png"))
        raise
    return page


def test_a_level_won_by_clicking_steps_is_stored_and_replays(
    lab: str, workdir: Path, context: Any, start_kernel: Any
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page = open_level(context, lab, "level.ipynb", errors)
    try:
        expect(stepper_view(page).locator('[data-goal="open"]')).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "stepper-start.png"))
        for n, name in enumerate(LOSING, start=1):
            take_step(page, name, n)
            if n == 3:  # both tellers have read the balance: each card shows its line
                cards = stepper_view(page).locator(".seqlab-stepper-task")
                expect(cards.nth(1).locator(".seqlab-stepper-code")).to_contain_text("> ")
                stepper_view(page).screenshot(path=str(ARTIFACTS / "stepper-midway.png"))
        widget = stepper_view(page)
        widget.locator('[data-goal="reached"]').wait_for(timeout=60_000)
        expect(widget).to_have_attribute("data-finished", "1")
        expect(widget).to_contain_text("Goal reached")
        expect(widget).to_contain_text("lost update: balance is 1, expected 2")
        expect(widget).to_contain_text(" \u2192 ".join(LOSING))
        watched = widget.locator('[data-watch="account.balance"] td').nth(1)
        expect(watched).to_have_text("1")
        # the timeline under it drew the run: three lanes, the failed one named
        timeline = page.locator(".seqlab-view").filter(
            has=page.locator(".seqlab-title", has_text="the path so far")
        )
        expect(timeline.locator(".seqlab-lane")).to_have_count(3, timeout=60_000)
        expect(timeline.locator('.seqlab-lane[data-task="teller-1"]')).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "stepper-level.png"))
        shown = widget.locator(".seqlab-stepper-schedule").inner_text()
        schedule = shown.removeprefix("schedule: ").strip()
        assert re.fullmatch(r"s1:.*\|\d+", schedule), shown
        # Save; the saved output holds the path (the kernel updated the cell's display, and
        # the last take_step saw the view JupyterLab drew from that update).
        page.locator(".jp-Notebook .jp-Cell").first.click()
        saved = save_and_read_level(page, workdir / "level.ipynb", cell=1)
        assert saved.get("schedule") == schedule and saved["reached"], saved
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "stepper-failure-level.png"))
        raise
    finally:
        page.close()
    assert errors == [], errors
    fresh = start_kernel("seqlab")
    replay = fresh.run(IMPORTS + f"\nseqlab.run(checked_deposits, 2, schedule={schedule!r})")
    assert replay.ename == "AssertionError", replay.stderr
    assert "lost update: balance is 1, expected 2" in str(replay.evalue)


def save_and_read_level(page: Any, path: Path, cell: int) -> dict[str, Any]:
    """Press Ctrl+S and read the level the saved notebook's ``cell`` stores, once the file
    has been written again and reads whole (waiting on the file, not on a clock)."""
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while True:
        if path.stat().st_mtime_ns != before:
            try:
                nb = json.loads(path.read_text())
            except ValueError:
                nb = None  # caught while the server writes it
            if nb is not None:
                outputs = nb["cells"][cell]["outputs"]
                levels = [o.get("metadata", {}).get("seqlab", {}).get("level") for o in outputs]
                return next((level for level in levels if level), {})
        assert time.monotonic() < deadline, f"{path.name} was not saved"
        page.wait_for_timeout(100)  # polling the file the server is writing


def test_lesson_01s_stale_read_level_is_won_by_clicking(
    lab: str, workdir: Path, context: Any
) -> None:
    from playwright.sync_api import expect
    from test_lesson_levels import load_level

    from seqlab.stepper import level_reached

    errors: list[str] = []
    page = open_level(context, lab, "level01.ipynb", errors)
    try:
        widget = stepper_view(page)
        expect(widget.locator('[data-goal="open"]')).to_contain_text(
            "make teller-1 write account from a stale read"
        )
        for n, name in enumerate(STALE[:-1], start=1):
            take_step(page, name, n)
        expect(widget.locator('[data-goal="open"]')).to_have_count(1)  # not before its write
        take_step(page, STALE[-1], len(STALE))
        widget.locator('[data-goal="reached"]').wait_for(timeout=60_000)
        expect(widget.locator('[data-watch="account.balance"] td').nth(1)).to_have_text("10")
        expect(widget).to_have_attribute("data-finished", "0")  # the goal came mid-run
        page.screenshot(path=str(ARTIFACTS / "stepper-level-01.png"))
        shown = widget.locator(".seqlab-stepper-schedule").inner_text()
        schedule = shown.removeprefix("schedule: ").strip()
        assert schedule.endswith(f"|{len(STALE)}"), shown
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "stepper-failure-level01.png"))
        raise
    finally:
        page.close()
    assert errors == [], errors
    # The lesson's own level (source cells, as the grader would rebuild it) grades the path.
    fn, _ = load_level("01-sequencer")
    assert level_reached(fn, schedule=schedule, goal="stale:teller-1@account")
    assert not level_reached(fn, schedule=schedule, goal="stale:teller-0@account")
