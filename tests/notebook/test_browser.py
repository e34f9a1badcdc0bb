"""The Timeline in a real browser: JupyterLab + Debian's chromium, driven by Playwright.

Never downloads a browser: Playwright is pointed at the binary of Debian's ``chromium`` package
(``.ci/install-browser`` installs it). The test skips only when that binary is missing.
It also exports an executed notebook with nbconvert and checks, from a ``file://`` URL with all
network requests refused, that the static SVG fallback is there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/lib/chromium/chrome")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """The real chromium binary of Debian's package (faster to start than the wrapper script)."""
    try:
        listed = subprocess.run(
            ["dpkg", "-L", "chromium"], capture_output=True, text=True, check=False
        ).stdout.split()
    except FileNotFoundError:
        listed = []
    for path in [p for p in listed if p.endswith("/chromium/chromium")] + list(CHROMIUM_CANDIDATES):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (run .ci/install-browser: apt-get install chromium)",
)

FAILURE_AND_DEADLOCK = """\
import trio
import seqlab
from seqlab.notebook.widgets import BarrierView, ConvoyView, RingView, Timeline


async def parse():
    await trio.sleep(0.5)
    raise ValueError("bad input 7")


async def player(i, barrier):
    await trio.sleep(i + 1)
    await barrier.wait()


async def scenario():
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(parse, name="parser")
    except* ValueError:
        pass
    barrier = seqlab.Barrier(4, name="phase")  # four parties, three players: a deadlock
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(player, i, barrier, name=f"player-{i}")


rec = seqlab.Recorder()
try:
    seqlab.run(scenario, seed=2, recorder=rec)
except seqlab.Deadlock as error:
    print(error)
Timeline(rec, title="a failure, then a deadlock")
"""

BARRIER = """\
BarrierView(rec, title="who arrived")
"""

RING = """\
async def chat():
    pipe = seqlab.Pipeline(8, name="chat")

    async def persist(event, seq, end):
        await trio.sleep(0.5)  # a slow disk

    saved = pipe.stage("persist", persist)
    checked = pipe.stage("moderate", lambda event, seq, end: None)
    pipe.stage("deliver", lambda event, seq, end: None, after=(saved, checked))
    async with pipe.run() as publish:
        for i in range(20):
            await publish(i)


ring_rec = seqlab.Recorder()
seqlab.run(chat, seed=0, recorder=ring_rec)
display(Timeline(ring_rec, title="diamond, slow persist"), RingView(ring_rec, title="ring"))
"""

CONVOY = """\
async def orders():
    async def handle(delivery):
        if delivery.message == "poison":
            raise ValueError(f"cannot parse {delivery.message!r}")
        await trio.sleep(0.1)

    async with seqlab.open_convoy(handle, consumers=2, max_attempts=2, name="orders") as convoy:
        for key, message in [("alice", "a1"), ("bob", "poison"), ("alice", "a2"), ("bob", "b2")]:
            await convoy.send(key, message)
        await convoy.join()


convoy_rec = seqlab.Recorder()
seqlab.run(orders, seed=1, recorder=convoy_rec)
ConvoyView(convoy_rec, title="orders")
"""


LIVE = """\
from seqlab.notebook.widgets import live_view

async def slow():
    async def worker(i):
        for j in range(8):
            seqlab.emit("Sequencer 'jobs'", "submit", job=j)
            await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(worker, i, name=f"live-{i}")

live_rec = seqlab.Recorder(waits=False)
with live_view("timeline", live_rec, title="live run"):
    seqlab.run(slow, seed=1, virtual_time=False, recorder=live_rec)
"""

CELLS = [
    ("failure-deadlock", FAILURE_AND_DEADLOCK),
    ("barrier", BARRIER),
    ("ring", RING),
    ("convoy", CONVOY),
    ("live", LIVE),
]


def make_notebook(path: Path) -> None:
    cells = CELLS
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
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = Path(__file__).resolve().parents[2]
#: Screenshots are kept here as test artifacts (the folder is git-ignored).
ARTIFACTS = ROOT / "test-output" / "browser"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lab")
    make_notebook(path / "barrier.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def run_lab(workdir: Path) -> Iterator[str]:
    """A JupyterLab server on a free port, serving ``workdir`` with a home of its own there;
    yields its URL once it answers, and stops it afterwards."""
    home = workdir / "home"
    settings = home / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    # No news pop-up: it would ask the network and cover the screenshot.
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    # No "Select Kernel" dialog: start the notebook's own kernel.
    tracker = home / ".jupyter/lab/user-settings/@jupyterlab/notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"autoStartDefaultKernel": true}')
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    # The kernel imports this checkout's seqlab, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("JUPYTER_CONFIG_DIR", None)
    port = free_port()
    log = (workdir / "jupyterlab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={workdir}",
            "--LabApp.news_url=",
        ],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts JupyterLab slowly
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited early:\n{(workdir / 'jupyterlab.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(url + "api/status", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def lab(workdir: Path) -> Iterator[str]:
    with run_lab(workdir) as url:
        yield url


@pytest.fixture(scope="module")
def browser(workdir: Path) -> Iterator[Any]:
    """A headless chromium with a fresh profile directory (a persistent context, in Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(workdir / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context
        finally:
            context.close()


def export_html(workdir: Path) -> Path:
    """Execute the notebook (no widget state kept) and export it to HTML with nbconvert."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(workdir / "barrier.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    # A saved lesson carries no widget state, so nbconvert falls back to the text/html snapshot.
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = workdir / "barrier.html"
    out.write_text(body)
    return out


def server_sessions(lab: str) -> list[dict[str, Any]]:
    """The Jupyter server's sessions (GET /api/sessions)."""
    with urllib.request.urlopen(lab + "api/sessions", timeout=30) as response:
        found: list[dict[str, Any]] = json.loads(response.read())
    return found


def open_notebook(page: Any, lab: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab and return once the page's own kernel is up.

    JupyterLab 4 starts a session of its own for the page (a kernel started beforehand
    through the REST API is not reused), and its execution indicator reads "idle" before
    that session exists: cells run then race the kernel's start, and those sent to a kernel
    being replaced are lost. So: wait until the server reports a new session for the
    notebook with its kernel idle (the server follows a kernel's status once a client is
    connected), then for the page's indicator.
    """
    known = {s["id"] for s in server_sessions(lab)}
    page.goto(lab + f"lab/tree/{notebook}?reset")
    deadline = time.monotonic() + 180
    while True:
        mine = [s for s in server_sessions(lab) if s["path"] == notebook and s["id"] not in known]
        if mine and all(s["kernel"]["execution_state"] == "idle" for s in mine):
            break
        assert time.monotonic() < deadline, f"no idle kernel for {notebook}: {mine}"
        page.wait_for_timeout(200)  # polling the server's state of the page's session
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)


def run_all_cells(page: Any) -> None:
    """Run menu > Run All Cells, once, waiting on the page's state rather than on the clock.

    The command is enabled once the notebook is JupyterLab's current widget, so the notebook
    is clicked first and the menu opened again until its item is enabled; then one click, and
    a wait (as long as a loaded machine needs) for the first prompt to leave ``[ ]``. Never a
    second click: that would run every cell twice.
    """
    prompt = page.locator(".jp-InputArea-prompt").first
    item = page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells"))
    for _ in range(50):
        page.locator(".jp-Notebook .jp-Cell").first.click()  # make the notebook current
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        item.wait_for()
        if item.get_attribute("aria-disabled") != "true":
            break
        page.keyboard.press("Escape")
        item.wait_for(state="detached")
    else:
        raise AssertionError("Run All Cells stayed disabled")
    item.click()
    page.wait_for_function(
        "el => !/\\[ \\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=120_000
    )


def shot(locator: Any, name: str) -> None:
    """Save a screenshot of ``locator`` as a test artifact."""
    locator.screenshot(path=str(ARTIFACTS / name))


@pytest.fixture(scope="module")
def page(lab: str, browser: Any, workdir: Path) -> Iterator[Any]:
    """The notebook, opened in JupyterLab, with every cell run and every view drawn."""
    errors: list[str] = []
    page = browser.new_page()
    page.on(
        "console",
        lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    open_notebook(page, lab, "barrier.ipynb")
    run_all_cells(page)
    try:
        # Six views: timeline, barrier, timeline + ring, convoy, live timeline.
        page.wait_for_function(
            "() => document.querySelectorAll('.seqlab-view').length >= 6", timeout=120_000
        )
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failure.png"))
        raise AssertionError(
            f"the views did not all appear (see {ARTIFACTS / 'failure.png'}); "
            f"browser errors: {errors}"
        ) from None
    yield page
    # JupyterLab's own debugger complains when the page closes under it; that is not ours.
    ours = [e for e in errors if "debugger state" not in e]
    assert ours == [], ours


def view(page: Any, title: str) -> Any:
    """The view whose toolbar title is ``title``."""
    return page.locator(".seqlab-view").filter(
        has=page.locator(".seqlab-title", has_text=re.compile(f"^{re.escape(title)}$"))
    )


def test_failed_lane_is_red_and_names_the_exception_and_the_deadlock_is_banded(
    page: Any,
) -> None:
    widget = view(page, "a failure, then a deadlock")
    widget.locator(".seqlab-deadlock").first.wait_for()
    lanes = widget.locator(".seqlab-timeline-svg .seqlab-lane")
    names = [lanes.nth(i).get_attribute("data-task") for i in range(lanes.count())]
    assert names == ["scenario", "parser", "player-0", "player-1", "player-2"]
    # The failed task: a red lane, its label red, the exception written on it.
    parser = widget.locator('.seqlab-lane[data-task="parser"]')
    assert "lane-failed" in (parser.get_attribute("class") or "")
    assert parser.get_attribute("data-outcome") == "raised ValueError: bad input 7"
    assert parser.locator(".seqlab-span.state-failed").count() == 1
    assert "ValueError: bad input 7" in (parser.locator(".seqlab-failure").text_content() or "")
    red = parser.locator(".seqlab-lane-label").evaluate("e => getComputedStyle(e).fill")
    assert red in ("rgb(211, 47, 47)", "#d32f2f"), red
    # The deadlock: a band over each stuck player, with the reason.
    bands = widget.locator(".seqlab-deadlock")
    reasons = {bands.nth(i).get_attribute("data-reason") for i in range(bands.count())}
    assert "at Barrier 'phase' (3 of 4 arrived)" in reasons
    assert widget.locator(".seqlab-deadlock-reason").filter(has_text="3 of 4 arrived").count() == 3
    note = widget.locator(".seqlab-deadlock-note").text_content() or ""
    assert "DEADLOCK at 3.500: 4 tasks blocked for good" in note
    shot(widget, "timeline-failure-deadlock.png")


def test_hovering_a_wait_shows_its_cause(page: Any) -> None:
    widget = view(page, "a failure, then a deadlock")
    # The parent waited for its child: the span says so, and an arrow comes from the child.
    wait = widget.locator('.seqlab-lane[data-task="scenario"] .seqlab-span[data-note*="waited"]')
    wait.first.hover()
    tooltip = widget.locator(".seqlab-tooltip")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert "for its child tasks to finish" in text and "waited 0.500 s for parser" in text
    arrow = widget.locator('.seqlab-link[data-from="parser"][data-to="scenario"]')
    assert arrow.count() == 1
    # The tooltip stays inside the widget.
    box, tip = widget.bounding_box(), tooltip.bounding_box()
    assert box is not None and tip is not None
    assert box["x"] <= tip["x"] and tip["x"] + tip["width"] <= box["x"] + box["width"] + 1
    shot(widget, "timeline-hover-cause.png")


def test_barrier_view_shows_parties_and_who_arrived(page: Any) -> None:
    widget = view(page, "who arrived")
    barrier = widget.locator(".seqlab-barrier")
    barrier.wait_for()
    text = barrier.inner_text()
    assert "Barrier 'phase': 4 parties" in text
    assert "3 of 4 arrived" in text and "DEADLOCKED at 3.500" in text
    chips = barrier.locator(".seqlab-chip.arrival-deadlocked")
    assert chips.count() == 3
    shot(widget, "barrier.png")


def test_full_ring_shows_the_producer_waiting_and_the_slow_stage_running(page: Any) -> None:
    timeline = view(page, "diamond, slow persist")
    timeline.locator(".seqlab-span").first.wait_for()
    producer = timeline.locator('.seqlab-lane[data-task="chat"] .seqlab-span')
    waits = [
        (
            float(producer.nth(i).get_attribute("data-t0")),
            float(producer.nth(i).get_attribute("data-t1")),
        )
        for i in range(producer.count())
        if producer.nth(i).get_attribute("data-state") == "waiting on Pipeline 'chat'"
    ]
    lo, hi = max(waits, key=lambda w: w[1] - w[0])
    assert hi - lo >= 2.0, waits  # blocked on the full ring
    persist = timeline.locator(
        ".seqlab-lane[data-task=\"Pipeline 'chat' stage 'persist'\"] .seqlab-span"
    )
    states = [
        persist.nth(i).get_attribute("data-state")
        for i in range(persist.count())
        if float(persist.nth(i).get_attribute("data-t0")) < hi
        and float(persist.nth(i).get_attribute("data-t1")) > lo
    ]
    assert states and set(states) == {"running"}, states  # working through its batch
    label = timeline.locator(
        ".seqlab-lane[data-task=\"Pipeline 'chat' stage 'persist'\"] .seqlab-lane-label"
    )
    # Shortened in the middle: the stage's name survives.
    assert label.evaluate("e => e.firstChild.nodeValue") == "Pipelin\u2026tage 'persist'"
    shot(timeline, "timeline-ring.png")

    ring = view(page, "ring")
    assert ring.locator(".seqlab-stage-cursor").count() == 3
    assert ring.locator(".seqlab-stage-edge").count() == 4  # producer->2, 2->deliver
    assert ring.locator('.seqlab-stage-node.gating[data-stage="deliver"]').count() == 1
    # await publish checkpoints every event, so persist's first batch is event 0 alone, the
    # producer meets a full ring four times for 20 events, and the largest batch is 6.
    assert "waited for room 4 times" in ring.locator(".seqlab-producer").inner_text()
    assert "largest 6" in ring.locator('.seqlab-stage-node[data-stage="persist"]').text_content()
    shot(ring, "ring.png")
    # The scrubber replays the run: early on, the producer is waiting on the full ring.
    slider = ring.locator(".seqlab-scrub")
    assert slider.is_visible()
    slider.fill("400")  # 40% of the events: inside the producer's long wait (t=1..4)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.seqlab-producer')].some("
        "e => e.textContent.includes('WAITING'))"
    )
    shot(ring, "ring-replayed.png")
    slider.fill("1000")
    page.wait_for_function(
        "() => ![...document.querySelectorAll('.seqlab-producer')].some("
        "e => e.textContent.includes('WAITING'))"
    )


def test_convoy_view_tells_each_messages_fate(page: Any) -> None:
    widget = view(page, "orders")
    widget.locator(".seqlab-table").wait_for()
    bob = widget.locator('tr[data-key="bob"]')
    dead = bob.locator('.seqlab-msg[data-fate="dead-lettered"]')
    assert dead.count() == 1
    assert "ValueError: cannot parse 'poison'" in dead.inner_text()
    assert bob.locator('.seqlab-msg[data-fate="delivered"]').count() == 1
    alice = widget.locator('tr[data-key="alice"] .seqlab-msg[data-fate="delivered"]')
    assert [alice.nth(i).inner_text() for i in range(alice.count())] == [
        "#0 delivered",
        "#1 delivered",
    ]
    dead.hover()
    tooltip = widget.locator(".seqlab-tooltip")
    tooltip.wait_for(state="visible")
    assert "attempt 2 by consumer" in tooltip.inner_text()
    box, tip = widget.bounding_box(), tooltip.bounding_box()
    assert box is not None and tip is not None  # the whole tooltip inside the widget
    assert box["x"] <= tip["x"] and tip["x"] + tip["width"] <= box["x"] + box["width"] + 1
    assert page.evaluate(
        "() => { const t = document.querySelector('.seqlab-view .seqlab-tooltip:not([style*=none])');"
        " return t.scrollWidth <= t.clientWidth + 1; }"
    )  # and its text inside the tooltip
    shot(widget, "convoy.png")


def test_live_view_updates_while_the_cell_runs(page: Any) -> None:
    live = view(page, "live run")
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-InputArea-prompt')[4].textContent.includes('5')",
        timeout=60_000,
    )
    live.locator(".seqlab-live").wait_for(state="hidden")
    final = int(re.findall(r"(\d+) events", live.locator(".seqlab-summary").inner_text())[0])
    assert final == 1 + 2 * 3 + 3 * 8 + 1
    assert live.locator(".seqlab-lane").count() == 4  # main and live-0..2
    page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"), full_page=True)


def test_static_export_carries_the_same_pictures(page: Any, browser: Any, workdir: Path) -> None:
    html = export_html(workdir)
    offline = browser.new_page()
    requested: list[str] = []

    def refuse(route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    offline.route("**/*", refuse)
    offline.goto(html.as_uri())
    timelines = offline.locator("svg.seqlab-static.seqlab-timeline")
    timelines.first.wait_for(timeout=10_000)
    assert timelines.count() == 3
    first = timelines.first
    assert first.locator(".seqlab-lane").count() == 5
    assert first.locator(".seqlab-deadlock").count() == 4  # three players and their parent
    assert "ValueError: bad input 7" in (first.text_content() or "")
    assert offline.locator("svg.seqlab-static.seqlab-barrier").count() == 1
    assert "3 of 4 arrived" in (offline.locator("svg.seqlab-barrier").text_content() or "")
    assert offline.locator("svg.seqlab-static.seqlab-ring").count() == 1
    assert "dead-lettered" in (offline.locator("svg.seqlab-convoy").text_content() or "")
    shot(first, "static-timeline.png")
