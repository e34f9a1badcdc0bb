"""The stepper widget in a real kernel: clicks arrive as widget messages over the comm.

The cell that made the widget has returned; each click is a ``comm_msg`` the kernel answers
while idle, by stepping the program (paused on the stepper's own thread) and sending the new
state back. The level is then graded in a fresh kernel from the schedule the widget stored.
"""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
from test_kernel import error_traceback

DEFINE = """\
import trio
ledger = {"balance": 0}

async def two_tellers():
    ledger["balance"] = 0
    async def teller():
        seen = ledger["balance"]
        await trio.sleep(0)
        ledger["balance"] = seen + 10
    async with trio.open_nursery() as nursery:
        nursery.start_soon(teller, name="teller-0")
        nursery.start_soon(teller, name="teller-1")
    assert ledger["balance"] == 20, f"lost update: balance is {ledger['balance']}"
"""

LOSING = ["scenario", "teller-0", "teller-1", "teller-0", "teller-1", "scenario"]
SAFE = ["scenario", "teller-0", "teller-0", "teller-1", "teller-1", "scenario"]


class Remote:
    """The kernel side of one widget, seen from the client: its state and its displays."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.comm_id: str | None = None
        self.state: dict[str, Any] = {}
        self.displays: list[dict[str, Any]] = []

    def absorb(self, msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            state = content["data"].get("state", {})
            if "runnable" in state:  # the stepper's model (not a view another cell made)
                self.comm_id = content["comm_id"]
                self.state.update(state)
        elif kind == "comm_msg" and content.get("comm_id") == self.comm_id:
            data = content["data"]
            if data.get("method") == "update":
                self.state.update(data.get("state", {}))
        elif (
            kind in ("display_data", "update_display_data")
            and "application/vnd.jupyter.widget-view+json" in content["data"]
        ):
            self.displays.append(content)

    def pump(self, msg_id: str, timeout: float = 30) -> None:
        """Absorb iopub messages until the kernel is idle after ``msg_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kernel.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            self.absorb(msg)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return
        raise TimeoutError(f"the kernel did not answer {msg_id}")

    def execute(self, code: str) -> None:
        self.pump(self.kernel.client.execute(code))

    def click(self, action: str, task: str | None = None) -> None:
        """What the front end sends when a button is clicked."""
        content: dict[str, Any] = {"action": action}
        if task is not None:
            content["task"] = task
        client = self.kernel.client
        msg = client.session.msg(
            "comm_msg",
            {"comm_id": self.comm_id, "data": {"method": "custom", "content": content}},
        )
        client.shell_channel.send(msg)
        self.pump(msg["header"]["msg_id"])


@pytest.fixture
def remote(fresh_seqlab_kernel: Any) -> Remote:
    widget = Remote(fresh_seqlab_kernel)
    widget.execute(DEFINE)
    widget.execute("%%seqlab step --watch ledger --goal fail\nawait two_tellers()")
    assert widget.comm_id is not None
    assert widget.state["runnable"] == ["scenario"]
    return widget


def test_clicks_step_undo_reset_and_win_a_level_graded_in_a_fresh_kernel(
    remote: Remote, start_kernel: Any
):
    remote.click("step", "teller-1")  # a stale click: that task cannot step (yet)
    assert "must be one of the tasks that can step now" in remote.state["message"]
    remote.click("run")  # run until something happens: the main task waits for its children
    assert remote.state["path"] == ["scenario"]
    for name in LOSING[1:3]:
        remote.click("step", name)
    assert remote.state["path"] == LOSING[:3]
    states = {t["name"]: t["state"] for t in remote.state["tasks"]}
    assert states == {"scenario": "waiting", "teller-0": "runnable", "teller-1": "runnable"}
    remote.click("undo")
    assert remote.state["path"] == LOSING[:2]
    remote.click("reset")
    assert remote.state["steps"] == 0 and remote.state["runnable"] == ["scenario"]
    # the safe order first: a whole run that does not reach the goal
    for name in SAFE:
        remote.click("step", name)
    assert remote.state["finished"] and not remote.state["goal_reached"]
    safe_schedule = remote.state["level"]["schedule"]
    remote.click("reset")
    for name in LOSING:
        remote.click("step", name)
    assert remote.state["goal_reached"] and remote.state["level"]["reached"]
    assert remote.state["watched"] == [["ledger", "{'balance': 10}"]]
    assert remote.state["outcome"].startswith("failed: AssertionError: lost update")
    schedule = remote.state["level"]["schedule"]
    # the saved output follows the clicks: its text and metadata hold the path
    last = [d for d in remote.displays if "seqlab" in d.get("metadata", {})][-1]
    assert f"schedule: {schedule}" in last["data"]["text/plain"]
    # and the timeline under it shows the run so far, redrawn after the last click
    timeline = [d for d in remote.displays if d["data"]["text/plain"].startswith("Timeline")][-1]
    drawn = timeline["data"]["text/plain"]
    assert "teller-1  done since 0.000" in drawn and "lost update: balance is 10" in drawn
    assert last["metadata"]["seqlab"]["level"]["schedule"] == schedule
    assert remote.kernel.run("print('still answering')").stdout == "still answering\n"
    # A check cell whose placeholder raised inside tasks: the leaf first, no trio frames.
    shown = error_traceback(
        remote.kernel,
        "async def teller():\n"
        "    raise NotImplementedError('exercise 1 is not done yet')\n"
        "async with trio.open_nursery() as nursery:\n"
        "    nursery.start_soon(teller, name='teller-2')\n",
    )
    assert shown[0] == "NotImplementedError: exercise 1 is not done yet", shown
    assert len(shown) == 3 and "trio" not in "".join(shown[1:2]), shown

    grader = start_kernel("seqlab")
    grade = (
        DEFINE
        + "from seqlab.stepper import level_reached\n"
        + f"print(level_reached(two_tellers, schedule={schedule!r}, goal='fail'),"
        + f" level_reached(two_tellers, schedule={safe_schedule!r}, goal='fail'))"
    )
    result = grader.run(grade)
    assert result.stdout == "True False\n", result.stderr + str(result.evalue)


def test_a_plain_python_kernel_steps_too(start_kernel: Any):
    # No persistent trio loop here: the stepper's own thread runs the program between clicks.
    widget = Remote(start_kernel("python3"))
    widget.execute("%load_ext seqlab\n" + DEFINE)
    widget.execute("%%seqlab step --goal fail\nawait two_tellers()")
    assert widget.comm_id is not None
    for name in LOSING:
        widget.click("step", name)
    assert widget.state["goal_reached"] and widget.state["path"] == LOSING


def _execute_in_cell(kernel: Any, code: str, cell_id: str) -> str:
    """Execute ``code`` as JupyterLab does for the cell ``cell_id``; return what it printed."""
    client = kernel.client
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = client.session.msg("execute_request", content, metadata={"cellId": cell_id})
    client.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    printed = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            reply = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if reply["parent_header"].get("msg_id") != msg_id:
            continue
        if reply["msg_type"] == "stream":
            printed.append(reply["content"]["text"])
        elif reply["msg_type"] == "error":
            raise AssertionError("\n".join(reply["content"]["traceback"]))
        elif reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
            return "".join(printed)
    raise TimeoutError(f"the kernel did not answer {msg_id}")


def test_running_a_step_cell_again_ends_the_run_it_left_paused(fresh_seqlab_kernel: Any):
    kernel = fresh_seqlab_kernel
    _execute_in_cell(kernel, DEFINE, "define")
    paused = (
        "import threading\nprint(sum(t.name == 'seqlab.Stepper' for t in threading.enumerate()))"
    )
    step_cell = "%%seqlab step --goal fail\nawait two_tellers()"
    _execute_in_cell(kernel, step_cell, "level")
    assert _execute_in_cell(kernel, paused, "count").strip() == "1"
    for _ in range(3):  # the learner runs the level's cell again: still one paused run
        _execute_in_cell(kernel, step_cell, "level")
    assert _execute_in_cell(kernel, paused, "count").strip() == "1"
    # the same scenario in another cell is another level: both stay playable
    _execute_in_cell(kernel, step_cell, "level-copy")
    assert _execute_in_cell(kernel, paused, "count").strip() == "2"
