"""The Timeline in a real browser: JupyterLab + Debian's chromium, driven by Playwright.

Never downloads a browser: Playwright is pointed at the binary of Debian's ``chromium`` package
(``.ci/install-browser`` installs it). The test skips only when that binary is missing.
It also exports an executed notebook with nbconvert and checks, from a ``file://`` URL with all
network requests refused, that the static SVG fallback is there.
"""

from __future__ import annotations

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

SCENARIO = """\
import trio
import seqlab
from seqlab.notebook.widgets import Timeline


async def main():
    rec = seqlab.Recorder()

    async def worker(i, barrier):
        await trio.sleep(i + 1)
        await barrier.wait()
        await trio.sleep(1)

    barrier = seqlab.Barrier(4, name="phase")
    with seqlab.recording(rec):
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(worker, i, barrier, name=f"worker-{i}")
    return rec


rec = seqlab.run(main, seed=7)
Timeline(rec, title="4 workers meet at a barrier")
"""


OTHER_VIEWS = """\
from seqlab.trace import TraceEvent
from seqlab.notebook.widgets import BarrierView, ConvoyView, RingView

def E(t, task, prim, kind, **data):
    return TraceEvent(t, task, prim, kind, data)

convoy = ConvoyView()
convoy.feed([
    E(0, "main", "Convoy", "send", key="alice", sequence=0),
    E(0, "main", "Convoy", "send", key="bob", sequence=0),
    E(1, "c0", "Convoy", "deliver", key="alice", sequence=0, attempt=1, consumer="c0"),
    E(2, "c0", "Convoy", "retry", key="alice", sequence=0, attempt=1),
])
ring = RingView()
ring.feed([
    E(0, "p", "RingBuffer", "publish", sequence=5, size=16),
    E(0, "persist", "Sequence", "advance", stage="persist", sequence=3),
    E(0, "deliver", "Sequence", "stage", stage="deliver", after=["persist"]),
])
convoy.flush(); ring.flush()
display(BarrierView(rec), convoy, ring)
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

live_rec = seqlab.Recorder()
with live_view("timeline", live_rec, title="live run"):
    seqlab.run(slow, seed=1, virtual_time=False, recorder=live_rec)
"""


def make_notebook(path: Path) -> None:
    cells = [("barrier-scenario", SCENARIO), ("other-views", OTHER_VIEWS), ("live", LIVE)]
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


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_notebook(tmp_path / "barrier.ipynb")
    return tmp_path


@pytest.fixture
def lab(workdir: Path) -> Iterator[str]:
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
        deadline = time.monotonic() + 60
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
        # Start the notebook's kernel before the page opens; JupyterLab then just connects.
        request = urllib.request.Request(
            url + "api/sessions",
            data=json.dumps(
                {"path": "barrier.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
            ).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless chromium with a fresh profile directory (a persistent context, in Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
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


def run_all_cells(page: Any) -> None:
    """Run menu > Run All Cells; again if the click came while the command was still disabled."""
    prompt = page.locator(".jp-InputArea-prompt").first
    for _ in range(5):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        item = page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells"))
        item.wait_for()
        if item.get_attribute("aria-disabled") == "true":
            page.keyboard.press("Escape")
            page.wait_for_timeout(200)
            continue
        item.click()
        try:
            page.wait_for_function(
                "el => !/\\[ \\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=3000
            )
            return
        except Exception:
            continue
    raise AssertionError("Run All Cells never started the cell")


def test_timeline_renders_live_in_jupyterlab_and_static_in_nbconvert(
    lab: str, browser: Any, workdir: Path
) -> None:
    errors: list[str] = []
    page = browser.new_page()
    page.on(
        "console",
        lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    page.goto(lab + "lab/tree/barrier.ipynb?reset")
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=60_000)
    run_all_cells(page)

    widget = page.locator(".seqlab-view").first
    try:
        widget.wait_for(timeout=30_000)
    except Exception:
        page.screenshot(path=str(workdir / "failure.png"))
        raise AssertionError(
            f"no timeline appeared (see {workdir / 'failure.png'}); browser errors: {errors}"
        ) from None
    widget.locator(".seqlab-timeline-svg .seqlab-marker").first.wait_for()
    lanes = widget.locator(".seqlab-timeline-svg .seqlab-lane")
    assert lanes.count() == 4
    names = [lanes.nth(i).get_attribute("data-task") for i in range(4)]
    assert names == ["worker-0", "worker-1", "worker-2", "worker-3"]
    assert widget.locator('.seqlab-marker[data-kind="release"]').count() == 4
    assert widget.locator(".seqlab-span.state-waiting").count() >= 3
    assert "4 workers meet at a barrier" in widget.inner_text()

    # Hover shows the event.
    widget.locator('.seqlab-marker[data-kind="release"]').first.hover()
    tooltip = widget.locator(".seqlab-tooltip")
    assert tooltip.is_visible()
    assert "release" in tooltip.inner_text()

    # Zoom widens the drawing; fit brings it back.
    svg = widget.locator(".seqlab-timeline-svg")
    width = float(svg.get_attribute("width") or 0)
    widget.locator(".seqlab-button", has_text="+").click()
    page.wait_for_function(
        f"document.querySelector('.seqlab-timeline-svg').getAttribute('width') > {width + 1}"
    )
    widget.locator(".seqlab-button", has_text="fit").click()
    page.wait_for_function(
        f"Math.abs(document.querySelector('.seqlab-timeline-svg').getAttribute('width')"
        f" - {width}) < 1"
    )
    widget.screenshot(path=str(workdir / "timeline.png"))

    # The primitive views render too (same module, other renderers).
    page.wait_for_selector(".seqlab-barrier")
    assert page.locator(".seqlab-barrier .seqlab-chip").count() == 4
    assert "released" in page.locator(".seqlab-barrier").inner_text()
    convoy_rows = page.locator(".seqlab-view .seqlab-table").first.locator("tr")
    assert convoy_rows.count() == 3  # header, alice, bob
    assert page.locator(".seqlab-slot").count() == 16
    assert page.locator(".seqlab-slot.slot-published").count() == 6  # 0..5: deliver is at -1
    page.locator(".seqlab-view").nth(3).screenshot(path=str(workdir / "ring.png"))

    # A live run (real time, ~1.6 s): updates reach the page while the cell still runs.
    live = page.locator(".seqlab-view").nth(4)
    live.locator(".seqlab-live").wait_for(state="visible", timeout=30_000)
    partial = int(re.findall(r"(\d+) events", live.locator(".seqlab-summary").inner_text())[0])
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-InputArea-prompt')[2].textContent.includes('3')"
    )
    live.locator(".seqlab-live").wait_for(state="hidden")
    final = int(re.findall(r"(\d+) events", live.locator(".seqlab-summary").inner_text())[0])
    assert 0 < partial < final == 1 + 2 * 3 + 3 * 8 + 1, (partial, final)
    assert live.locator(".seqlab-lane").count() == 4  # main and live-0..2
    page.screenshot(path=str(workdir / "jupyterlab.png"))
    print(f"screenshots: {workdir / 'timeline.png'}, {workdir / 'jupyterlab.png'}")
    assert errors == [], errors

    # The static export: a file URL, every network request refused.
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
    assert offline.locator("svg.seqlab-static.seqlab-barrier").count() == 1
    assert offline.locator("svg.seqlab-static.seqlab-ring").count() == 1
    timelines = offline.locator("svg.seqlab-static.seqlab-timeline")
    timelines.first.wait_for(timeout=10_000)
    assert timelines.count() == 2
    # The live view's snapshot was refreshed when it finished: it shows the whole run.
    assert "32 events, 4 tasks" in (timelines.nth(1).text_content() or "")
    snapshot = timelines.first
    snapshot.wait_for(timeout=10_000)
    assert snapshot.locator(".seqlab-lane").count() == 4
    assert snapshot.locator('.seqlab-marker[data-kind="release"]').count() == 4
    box = snapshot.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 80
    snapshot.screenshot(path=str(workdir / "static.png"))
