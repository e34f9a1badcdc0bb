"""Be the scheduler in a real browser: JupyterLab, the seqlab kernel, Debian's chromium.

Lesson 00's level (its own cells): two tellers, one account, the goal "make the program fail".
Playwright clicks the task buttons in an order that loses an update; the widget reports the
goal; the notebook is saved, and the schedule stored in it replays to the same failure in a
fresh kernel. Every wait is on the page's state, never on the clock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, run_all_cells

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (run .ci/install-browser: apt-get install chromium)",
)

# Lesson 00's own cells, from the student copy the package ships.
LESSON = ROOT / "seqlab" / "lessons" / "00-welcome.ipynb"


def lesson_cell(cell_id: str) -> str:
    nb = json.loads(LESSON.read_text())
    sources = [c["source"] for c in nb["cells"] if c.get("id") == cell_id]
    assert sources, f"lesson 00 has no cell {cell_id!r}"
    source = sources[0]
    return source if isinstance(source, str) else "".join(source)


IMPORTS = lesson_cell("lesson0-imports")
LEVEL = lesson_cell("00-level")
# teller-1 starts one checkpoint later; both read 0 before either writes: a lost update.
LOSING = ["scenario", "teller-0", "teller-1", "teller-1", "teller-0", "teller-1", "scenario"]


def make_notebook(path: Path) -> None:
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
            for cell_id, source in (("lesson0-imports", IMPORTS), ("00-level", LEVEL))
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
    make_notebook(path / "level.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def lab(workdir: Path, seqlab_kernelspec: Any) -> Iterator[str]:
    home = workdir / "home"
    settings = home / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    tracker = home / ".jupyter/lab/user-settings/@jupyterlab/notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"autoStartDefaultKernel": true}')
    # JUPYTER_PATH (set by seqlab_kernelspec) carries the seqlab kernelspec to the server.
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"))
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
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited:\n{(workdir / 'jupyterlab.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(url + "api/status", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        request = urllib.request.Request(
            url + "api/sessions",
            data=json.dumps(
                {"path": "level.ipynb", "type": "notebook", "kernel": {"name": "seqlab"}}
            ).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
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


def stepper_view(page: Any) -> Any:
    return page.locator(".seqlab-stepper").last


def test_a_level_won_by_clicking_steps_is_stored_and_replays(
    lab: str, workdir: Path, start_kernel: Any
) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(workdir / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.goto(lab + "lab/tree/level.ipynb?reset")
            page.wait_for_selector(
                '.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=60_000
            )
            run_all_cells(page)
            widget = stepper_view(page)
            try:
                widget.locator('[data-action="step"][data-task="scenario"]').wait_for(
                    timeout=120_000
                )
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "stepper-failure.png"))
                raise
            assert widget.locator('[data-goal="open"]').count() == 1
            page.screenshot(path=str(ARTIFACTS / "stepper-start.png"))
            for n, name in enumerate(LOSING, start=1):
                stepper_view(page).locator(f'[data-action="step"][data-task="{name}"]').click()
                page.wait_for_selector(f'.seqlab-stepper[data-steps="{n}"]', timeout=30_000)
                if n == 3:  # both tellers have read the balance: each card shows its line
                    cards = stepper_view(page).locator(".seqlab-stepper-task")
                    assert "> " in cards.nth(1).locator(".seqlab-stepper-code").inner_text()
                    stepper_view(page).screenshot(path=str(ARTIFACTS / "stepper-midway.png"))
            widget = stepper_view(page)
            widget.locator('[data-goal="reached"]').wait_for(timeout=30_000)
            assert widget.get_attribute("data-finished") == "1"
            text = widget.inner_text()
            assert "Goal reached" in text and "lost update: balance is 1, expected 2" in text
            watched = widget.locator('[data-watch="account.balance"] td').nth(1).inner_text()
            assert watched == "1"
            assert " \u2192 ".join(LOSING) in text
            # the timeline under it drew the run: three lanes, the failed one named
            timeline = page.locator(".seqlab-view").filter(
                has=page.locator(".seqlab-title", has_text="the path so far")
            )
            timeline.locator('.seqlab-lane[data-task="teller-1"]').wait_for(timeout=30_000)
            assert timeline.locator(".seqlab-lane").count() == 3
            page.screenshot(path=str(ARTIFACTS / "stepper-level.png"))
            shown = widget.locator(".seqlab-stepper-schedule").inner_text()
            schedule = shown.removeprefix("schedule: ").strip()
            assert re.fullmatch(r"s1:.*\|\d+", schedule), shown
            # Save; the saved output holds the path (the kernel updated the cell's display).
            page.locator(".jp-Notebook .jp-Cell").first.click()
            page.keyboard.press("Control+s")
            saved: dict[str, Any] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                nb = json.loads((workdir / "level.ipynb").read_text())
                outputs = nb["cells"][1]["outputs"]
                levels = [o.get("metadata", {}).get("seqlab", {}).get("level") for o in outputs]
                saved = next((level for level in levels if level), {})
                if saved.get("reached"):
                    break
                page.wait_for_timeout(200)  # polling the file the page is writing
            assert saved.get("schedule") == schedule and saved["reached"], saved
        finally:
            context.close()
    assert errors == [], errors
    fresh = start_kernel("seqlab")
    replay = fresh.run(IMPORTS + f"\nseqlab.run(checked_deposits, 2, schedule={schedule!r})")
    assert replay.ename == "AssertionError", replay.stderr
    assert "lost update: balance is 1, expected 2" in str(replay.evalue)
