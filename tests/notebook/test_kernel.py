"""The seqlab teaching kernel, driven through jupyter_client like a notebook front end does.

One kernel is shared by most tests (each uses names of its own); tests that end or interrupt
a kernel start their own. The notebook ``kernel_demo.ipynb`` next to this file is checked
with nbval against the same kernel.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from seqlab.cli import main as cli_main
from seqlab.notebook.kernel import DISPLAY_NAME, KERNEL_NAME, kernel_spec

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parents[1]

SETUP = "import trio, seqlab\nfrom seqlab.notebook import spawn, current_loop"


# --------------------------------------------------------------------------- kernelspec


def test_install_kernel_writes_a_kernelspec_that_starts_our_launcher(seqlab_kernelspec):
    spec = json.loads((seqlab_kernelspec / "kernel.json").read_text())
    assert spec["display_name"] == DISPLAY_NAME == "Python 3 (seqlab)"
    assert seqlab_kernelspec.name == KERNEL_NAME == "seqlab"
    assert spec["argv"][1:] == ["-m", "seqlab.notebook.kernel", "-f", "{connection_file}"]
    assert spec["argv"][0] == sys.executable
    assert spec["language"] == "python"
    assert spec == kernel_spec()


def test_install_kernel_rejects_two_locations(capsys):
    assert cli_main(["install-kernel", "--user", "--prefix", "/nonexistent"]) == 2
    assert "at most one of" in capsys.readouterr().err


def test_install_kernel_sys_prefix_flag_is_accepted_by_the_parser():
    from seqlab.cli import build_parser

    args = build_parser().parse_args(["install-kernel", "--sys-prefix"])
    assert (args.sys_prefix, args.user, args.prefix) == (True, False, None)


# --------------------------------------------------------------------------- the loop


def test_top_level_await_runs_in_the_persistent_trio_loop(seqlab_kernel: Any):
    assert seqlab_kernel.run(SETUP).status == "ok"
    cell = seqlab_kernel.run(
        "t0 = trio.current_time()\nawait trio.sleep(0.05)\nprint(trio.current_time() - t0 >= 0.05)"
    )
    assert (cell.status, cell.stdout, cell.stderr) == ("ok", "True\n", "")
    # The value of an awaited last expression is the cell's result, as in any kernel.
    cell = seqlab_kernel.run(
        "async def answer():\n    await trio.sleep(0)\n    return 42\nawait answer()"
    )
    assert cell.results == ["42"]
    # Every awaiting cell runs in the same trio run: a trio token survives between cells.
    first = seqlab_kernel.run("tok = trio.lowlevel.current_trio_token()\nawait trio.sleep(0)")
    assert first.status == "ok"
    same = seqlab_kernel.run("await trio.sleep(0)\ntrio.lowlevel.current_trio_token() is tok")
    assert same.results == ["True"]


def test_errors_in_awaiting_cells_show_the_cell_and_the_loop_survives(seqlab_kernel: Any):
    seqlab_kernel.run(SETUP)
    cell = seqlab_kernel.run(
        "async def broken():\n    await trio.sleep(0)\n    1 / 0\nawait broken()"
    )
    assert (cell.status, cell.ename) == ("error", "ZeroDivisionError")
    assert seqlab_kernel.run("await trio.sleep(0)\nprint('still here')").stdout == "still here\n"


def test_a_spawned_task_keeps_running_across_cells(seqlab_kernel: Any):
    seqlab_kernel.run(SETUP)
    cell1 = seqlab_kernel.run(
        "ticks = []\n"
        "async def ticker():\n"
        "    while True:\n"
        "        ticks.append(trio.current_time())\n"
        "        await trio.sleep(0.01)\n"
        "spawn(ticker)"
    )
    assert cell1.status == "ok"
    cell2 = seqlab_kernel.run("n_after_cell_2 = len(ticks)\nawait trio.sleep(0.1)")
    assert cell2.status == "ok"
    cell3 = seqlab_kernel.run(
        "print(len(ticks) > n_after_cell_2 > 0, 'ticker' in current_loop().background_tasks)"
    )
    assert cell3.stdout == "True True\n"
    # It also advances while the kernel is idle between cells (the host loop runs).
    before = seqlab_kernel.run("print(len(ticks))").stdout
    time.sleep(0.2)
    after = seqlab_kernel.run("print(len(ticks))").stdout
    assert int(after) > int(before)


def test_a_live_view_follows_a_background_task_on_the_persistent_loop(seqlab_kernel: Any):
    seqlab_kernel.run(SETUP)
    started = seqlab_kernel.run(
        "from seqlab.notebook import make_view\n"
        "rec = seqlab.Recorder()\n"
        "view = make_view('barrier', rec)\n"
        "view.show()\n"
        "async def phases():\n"
        "    with seqlab.recording(rec):\n"
        "        barrier = seqlab.Barrier(2, name='tick')\n"
        "        async def party():\n"
        "            for _ in range(5):\n"
        "                await trio.sleep(0.02)\n"
        "                await barrier.wait()\n"
        "        async with trio.open_nursery() as nursery:\n"
        "            nursery.start_soon(party)\n"
        "            nursery.start_soon(party)\n"
        "spawn(phases)"
    )
    assert started.status == "ok"
    time.sleep(1.0)  # the kernel is idle: the background task and the view's updates go on
    done = seqlab_kernel.run("view.finish()\nprint(view.steps, len(rec))")
    steps, events = map(int, done.stdout.split())
    assert steps == events and events >= 20  # 5 generations x 2 parties x (arrive, release)


def test_background_failure_is_reported_and_the_loop_keeps_going(seqlab_kernel: Any):
    seqlab_kernel.run(SETUP)
    seqlab_kernel.run(
        "beats = []\nasync def beat():\n    while True:\n        beats.append(1)\n        await trio.sleep(0.01)\nspawn(beat, name='beat')"
    )
    fail = (
        "async def doomed(delay):\n"
        "    await trio.sleep(delay)\n"
        "    raise ValueError('the ledger is gone')\n"
    )
    # Failing while a cell runs: reported in that cell's stderr.
    cell = seqlab_kernel.run(fail + "spawn(doomed, 0.01)\nawait trio.sleep(0.2)")
    assert cell.status == "ok"
    assert cell.stderr == (
        "seqlab: background task 'doomed' failed:\n"
        "ValueError: the ledger is gone\n"
        "  in doomed, line 3: raise ValueError('the ledger is gone')\n"
    )
    # Failing while the kernel is idle: reported at the start of the next cell.
    assert seqlab_kernel.run("spawn(doomed, 0.01, name='later')").stderr == ""
    time.sleep(0.3)
    cell = seqlab_kernel.run("print('next cell runs')")
    assert cell.status == "ok"
    assert cell.stdout == "next cell runs\n"
    assert cell.stderr.startswith("seqlab: background task 'later' failed:\nValueError")
    # The loop and the other background task are unharmed.
    cell = seqlab_kernel.run(
        "n = len(beats)\nawait trio.sleep(0.05)\n"
        "print(len(beats) > n, current_loop().state, 'beat' in current_loop().background_tasks)"
    )
    assert cell.stdout == "True running True\n"


def test_many_background_failures_are_summarised_after_the_first_few(seqlab_kernel: Any):
    seqlab_kernel.run(SETUP)
    define = "async def flop(i):\n    await trio.sleep(0.001 * i)\n    raise KeyError(i)\n"
    cell = seqlab_kernel.run(
        define + "for i in range(200):\n    spawn(flop, i)\nawait trio.sleep(0.5)"
    )
    assert cell.status == "ok"
    reports = cell.stderr.split("seqlab: background task ")
    assert all(r.startswith("'flop' failed:\nKeyError: ") for r in reports[1:])
    assert len(reports) == 4  # three reports, then one summary line
    assert cell.stderr.endswith(
        "seqlab: 197 more background task failures not shown (KeyError x197); "
        "only the first 3 of a cell are reported in full\n"
    )
    assert len(cell.stderr) < 1000
    # While idle: the next cell gets the first three and one line for the rest.
    assert seqlab_kernel.run("for i in range(50):\n    spawn(flop, i)").stderr == ""
    time.sleep(0.5)
    cell = seqlab_kernel.run("print('next')")
    assert cell.stderr.count("seqlab: background task 'flop' failed:") == 3
    assert cell.stderr.endswith(
        "seqlab: 47 more background task failures not shown (KeyError x47); only the first 3 of a cell are reported in full\n"
    )
    # The count starts again in each cell.
    cell = seqlab_kernel.run("spawn(flop, 0)\nawait trio.sleep(0.1)")
    assert cell.stderr.count("failed:") == 1 and "not shown" not in cell.stderr


def test_spawn_refuses_a_plain_function_without_calling_it(seqlab_kernel: Any):
    seqlab_kernel.run(SETUP)
    cell = seqlab_kernel.run("spawn(print, 'printed anyway')")
    assert (cell.status, cell.ename, cell.stdout) == ("error", "TypeError", "")
    assert "async_fn must be an async function" in (cell.evalue or "")
    assert "print is a plain callable" in (cell.evalue or "")


def test_status_magic_describes_the_loop(seqlab_kernel: Any):
    cell = seqlab_kernel.run("%seqlab status")
    assert cell.status == "ok"
    assert "loop: running (one persistent trio loop in guest mode" in cell.stdout


def test_seqlab_run_in_the_kernel_is_deterministic(seqlab_kernel: Any):
    seqlab_kernel.run("from seqlab.examples.bank import deposits")
    cell = "%%seqlab run --seed 4\nawait trio.sleep(1.5)\nawait deposits(3)"
    first = seqlab_kernel.run(cell)
    second = seqlab_kernel.run(cell)
    assert first.status == second.status == "ok"
    assert first.stdout == second.stdout
    assert first.stdout.startswith("seed: 4\nclock: virtual, 1.500 s\ntasks: 4 (")
    assert "teller-2" in first.stdout
    # The scenario ran on its own thread while the persistent loop lived on.
    loop = seqlab_kernel.run("await trio.sleep(0)\ncurrent_loop().state")
    assert loop.results == ["'running'"]


def test_seqlab_run_views_are_displayed_deterministically(seqlab_kernel: Any):
    cell = "%%seqlab run --seed 1 --view timeline\nimport trio\nawait trio.sleep(1)"
    first, second = seqlab_kernel.run(cell), seqlab_kernel.run(cell)
    assert first.status == second.status == "ok", first.stderr
    assert first.stdout == second.stdout
    assert first.results == second.results
    assert len(first.results) == 1  # one view, displayed once, with a text/plain fallback


def test_a_magic_argument_error_fails_the_cell_in_one_line(seqlab_kernel: Any):
    cell = seqlab_kernel.run("%%seqlab run --seed abc\nawait trio.sleep(1)")
    assert (cell.status, cell.stdout) == ("error", "")
    assert cell.stderr == (
        "UsageError: %%seqlab run: argument --seed: a seed is an int >= 0, got 'abc' "
        "(see %%seqlab run -h)\n"
    )
    assert seqlab_kernel.run("%seqlab replay -3").status == "error"
    assert seqlab_kernel.run("%seqlab help").status == "ok"


def test_run_all_stops_at_a_magic_typo(seqlab_kernelspec):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "seqlab",
        "display_name": DISPLAY_NAME,
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("%%seqlab run --se 3\nawait trio.sleep(1)"),
        nbformat.v4.new_code_cell("print('ran past the typo')"),
    ]
    with pytest.raises(CellExecutionError, match="UsageError"):
        NotebookClient(nb, timeout=60, kernel_name="seqlab").execute()
    assert nb.cells[1].get("outputs", []) == []


def test_a_100k_event_trace_writes_kilobytes_not_megabytes(seqlab_kernel: Any):
    seqlab_kernel.run(SETUP)
    run = seqlab_kernel.run(
        "%%seqlab run --view text\nfor i in range(100_000):\n    seqlab.emit('counter', 'tick', i=i)",
        timeout=120,
    )
    assert run.status == "ok" and "events: 100002" in run.stdout
    assert "... 99902 lines omitted (%seqlab trace --all prints all 100002) ..." in run.stdout
    text = seqlab_kernel.run("%seqlab trace", timeout=60)
    as_json = seqlab_kernel.run("%seqlab trace --json", timeout=60)
    assert len(run.stdout) < 10_000 and len(text.stdout) < 10_000
    assert len(as_json.stdout) < 20_000 and "%seqlab trace --json --all" in as_json.stdout
    assert text.stdout.splitlines()[50].startswith("... 99902 lines omitted")


def test_interrupt_cancels_the_running_await_and_the_kernel_answers(
    fresh_seqlab_kernel: Any,
):
    kernel = fresh_seqlab_kernel
    kernel.run(SETUP)
    kernel.run(
        "beats = []\nasync def beat():\n    while True:\n        beats.append(1)\n"
        "        await trio.sleep(0.01)\nspawn(beat)"
    )
    msg_id = kernel.client.execute(
        "cleaned = []\nasync def long_wait():\n    try:\n        await trio.sleep(3600)\n"
        "    finally:\n        cleaned.append(True)\nawait long_wait()"
    )
    kernel.wait_started(msg_id)
    time.sleep(0.3)
    started = time.monotonic()
    kernel.manager.interrupt_kernel()
    cell = kernel.collect(msg_id, timeout=10)
    assert time.monotonic() - started < 5
    assert (cell.status, cell.ename) == ("error", "KeyboardInterrupt")
    after = kernel.run(
        "n = len(beats)\nawait trio.sleep(0.05)\nprint(cleaned, len(beats) > n, current_loop().state)"
    )
    assert (after.status, after.stdout) == ("ok", "[True] True running\n")


def test_interrupt_also_works_when_nothing_else_wakes_the_loop(fresh_seqlab_kernel: Any):
    # ipykernel 7.4 alone only notices the interrupt at the next loop wake-up; the seqlab
    # kernel wakes the loop itself, so a lone long sleep is interrupted at once.
    kernel = fresh_seqlab_kernel
    kernel.run(SETUP)
    msg_id = kernel.client.execute("await trio.sleep(3600)")
    kernel.wait_started(msg_id)
    time.sleep(0.3)
    kernel.manager.interrupt_kernel()
    assert kernel.collect(msg_id, timeout=10).ename == "KeyboardInterrupt"
    assert kernel.run("await trio.sleep(0)\n1 + 1").results == ["2"]
    # A real-time scenario (a blocking cell: seqlab.run on its own thread) is cancelled too.
    msg_id = kernel.client.execute("%%seqlab run --real-time\nawait trio.sleep(3600)")
    kernel.wait_started(msg_id)
    time.sleep(0.3)
    kernel.manager.interrupt_kernel()
    assert kernel.collect(msg_id, timeout=10).ename == "KeyboardInterrupt"
    assert kernel.run("await trio.sleep(0)\nprint('alive')").stdout == "alive\n"


def error_traceback(kernel: Any, code: str, timeout: float = 20) -> list[str]:
    """The traceback lines of the error ``code`` raises in ``kernel``, t=... rounded."""
    msg_id = kernel.client.execute(code)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        msg = kernel.client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            lines = [re.sub(r"t=1\.\d+", "t=1.000", line) for line in msg["content"]["traceback"]]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    kernel.client.get_shell_msg(timeout=timeout)
    return lines


def test_interrupting_an_await_inside_a_nursery_shows_keyboard_interrupt(
    fresh_seqlab_kernel: Any,
):
    kernel = fresh_seqlab_kernel
    kernel.run(SETUP)
    msg_id = kernel.client.execute(
        "async with trio.open_nursery() as nursery:\n"
        "    nursery.start_soon(trio.sleep, 3600)\n"
        "    nursery.start_soon(trio.sleep, 3600)"
    )
    kernel.wait_started(msg_id)
    time.sleep(0.3)
    kernel.manager.interrupt_kernel()
    cell = kernel.collect(msg_id, timeout=10)
    # Not a group of trio.Cancelled: the cell was interrupted, and says so.
    assert (cell.status, cell.ename) == ("error", "KeyboardInterrupt")
    assert kernel.run("await trio.sleep(0)\nprint('alive')").stdout == "alive\n"


def test_a_cell_nothing_can_wake_is_a_deadlock_and_the_kernel_lives_on(
    fresh_seqlab_kernel: Any,
):
    # A kernel of its own: a background task on a timer (as other tests leave running in the
    # shared kernel) could in principle wake the cell, so no deadlock is declared there.
    seqlab_kernel = fresh_seqlab_kernel
    seqlab_kernel.run(SETUP)
    started = time.monotonic()
    cell = seqlab_kernel.run("await seqlab.Barrier(3, name='phase').wait()", timeout=20)
    assert time.monotonic() - started < 10
    assert (cell.status, cell.ename) == ("error", "Deadlock")
    assert "  the cell waits at Barrier 'phase' (1 of 3 arrived)" in (cell.evalue or "")
    # Shown as the report alone, not a traceback through seqlab's frames.
    assert error_traceback(seqlab_kernel, "await seqlab.Barrier(2).wait()") == [
        "Deadlock: deadlock at t=1.000: every task is blocked and nothing can wake one "
        "(no timer pending, no I/O, no thread running)\n"
        "  the cell waits at Barrier (1 of 2 arrived)\n"
        "the cell waits on something no task, timer, thread or I/O can ever wake; it was "
        "stopped so the kernel stays usable"
    ]
    cell = seqlab_kernel.run(
        "b = seqlab.Barrier(3, name='trio')\n"
        "async with trio.open_nursery() as nursery:\n"
        "    nursery.start_soon(b.wait, name='w1')\n"
        "    nursery.start_soon(b.wait, name='w2')",
        timeout=20,
    )
    assert cell.ename == "Deadlock"
    assert (cell.evalue or "").splitlines()[1:4] == [
        "  w1 waits at Barrier 'trio' (2 of 3 arrived)",
        "  w2 waits at Barrier 'trio' (2 of 3 arrived)",
        "  the cell waits for its child tasks to finish",
    ]
    after = seqlab_kernel.run("await trio.sleep(0)\nprint(current_loop().state)")
    assert (after.status, after.stdout) == ("ok", "running\n")


def test_long_quiet_waits_that_something_will_end_are_not_deadlocks(fresh_seqlab_kernel: Any):
    seqlab_kernel = fresh_seqlab_kernel
    seqlab_kernel.run(SETUP + "\nimport socket, threading, time")
    # A timer, a thread, a background task on a timer, and I/O fed by a foreign thread:
    # each ends the wait after longer than the deadlock grace period.
    cells = [
        "await trio.sleep(1.5)",
        "await trio.to_thread.run_sync(time.sleep, 1.5)",
        "ready = trio.Event()\n"
        "async def later():\n    await trio.sleep(1.5)\n    ready.set()\n"
        "spawn(later)\nawait ready.wait()",
        "a, b = socket.socketpair()\n"
        "threading.Timer(1.5, lambda: b.send(b'x')).start()\n"
        "await trio.socket.from_stdlib_socket(a).recv(1)",
    ]
    for code in cells:
        cell = seqlab_kernel.run(code, timeout=20)
        assert (cell.status, cell.ename) == ("ok", None), (code, cell.evalue)


def gather(kernel: Any, msg_id: str, timeout: float = 20) -> dict[str, Any]:
    """Status, stdout and the error's traceback lines of cell ``msg_id``."""
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {"stdout": "", "stderr": "", "traceback": [], "ename": None}
    while time.monotonic() < deadline:
        msg = kernel.client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            found[content["name"]] += content["text"]
        elif kind == "error":
            found["traceback"], found["ename"] = content["traceback"], content["ename"]
        elif kind == "status" and content["execution_state"] == "idle":
            break
    while True:
        reply = kernel.client.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            found["status"] = reply["content"]["status"]
            return found


def test_ctrl_c_in_seqlab_run_prints_one_short_summary(fresh_seqlab_kernel: Any):
    kernel = fresh_seqlab_kernel
    kernel.run(SETUP)
    msg_id = kernel.client.execute(
        "%%seqlab run --real-time --seed 7 --view none\n"
        "async def clerk(n):\n"
        "    for i in range(n):\n"
        "        seqlab.emit('ledger', 'write', i=i)\n"
        "        await trio.sleep(0)\n"
        "    await trio.sleep(3600)  # a timer: no deadlock, only Ctrl-C ends it\n"
        "await clerk(20)"
    )
    kernel.wait_started(msg_id)
    time.sleep(0.5)
    kernel.manager.interrupt_kernel()
    cell = gather(kernel, msg_id)
    assert (cell["status"], cell["ename"]) == ("error", "KeyboardInterrupt")
    assert cell["traceback"] == [
        "KeyboardInterrupt: the scenario was interrupted; the summary above says where"
    ]
    lines = cell["stdout"].splitlines()
    events = re.fullmatch(r"events: (\d+) before the interrupt", lines[3])
    assert events is not None and int(events[1]) >= 21  # spawn and 20 writes at least
    assert lines[0] == "interrupted (KeyboardInterrupt): seed 7, real time"
    assert re.fullmatch(r"schedule: s1:\S*", lines[1])  # from seqlab.Interrupted
    assert lines[2] == "tasks: 1 (scenario)"
    assert lines[4] == "last 5 of the partial trace (%seqlab trace shows it all):"
    assert any("write  i=19" in line for line in lines[5:10])
    assert lines[-1] == "replay: %seqlab replay 7"
    assert len(lines) == 11 and len(cell["stdout"]) < 1000
    status = kernel.run("%seqlab status").stdout.splitlines()
    assert status[-1] == (
        f"last run: seed 7: interrupted (KeyboardInterrupt) after {events[1]} events; "
        "%seqlab trace shows the partial trace"
    )
    assert kernel.run("%seqlab trace").stdout.count(" write ") == 20


def test_ctrl_c_in_an_exploration_says_what_was_explored(fresh_seqlab_kernel: Any):
    kernel = fresh_seqlab_kernel
    kernel.run(SETUP)
    msg_id = kernel.client.execute(
        "%%seqlab run --explore 500 --real-time --view none\nawait trio.sleep(0.02)"
    )
    kernel.wait_started(msg_id)
    time.sleep(1.0)
    kernel.manager.interrupt_kernel()
    cell = gather(kernel, msg_id)
    assert (cell["status"], cell["ename"]) == ("error", "KeyboardInterrupt")
    assert len(cell["traceback"]) == 1
    lines = cell["stdout"].splitlines()
    assert lines[0] == "interrupted (KeyboardInterrupt): exploring 500 schedules (seeds 0-499)"
    status = kernel.run("%seqlab status").stdout.splitlines()[-1]
    assert status.startswith(
        "last run: exploring 500 schedules (seeds 0-499): interrupted (KeyboardInterrupt)"
    )
    # seqlab.Interrupted carries the ExploreResult of the schedules that finished.
    finished = re.fullmatch(r"schedules finished: (\d+) of 500, none failed", lines[1])
    assert finished is not None and 0 < int(finished[1]) < 500
    assert re.fullmatch(r"interrupted while running seed \d+", lines[-1])
    assert status.endswith(f"after {finished[1]}, none failed")


def test_shutdown_cancels_the_loop_cleanly(fresh_seqlab_kernel: Any, tmp_path):
    kernel = fresh_seqlab_kernel
    marker = tmp_path / "cancelled.txt"
    kernel.run(SETUP)
    cell = kernel.run(
        "async def server():\n"
        "    try:\n"
        "        await trio.sleep_forever()\n"
        "    except trio.Cancelled:\n"
        f"        open({str(marker)!r}, 'w').write('cancelled cleanly')\n"
        "        raise\n"
        "spawn(server)\nawait trio.sleep(0.05)"
    )
    assert cell.status == "ok"
    kernel.client.stop_channels()
    kernel.manager.shutdown_kernel(now=False)
    assert marker.read_text() == "cancelled cleanly"
    assert not kernel.manager.is_alive()


# --------------------------------------------------------------------------- other kernels


def test_plain_python3_kernel_loads_the_extension_and_runs_scenarios(start_kernel):
    kernel = start_kernel("python3")
    assert kernel.run("%load_ext seqlab").status == "ok"
    cell = "%%seqlab run --seed 2\nimport trio\nawait trio.sleep(3)\n'done'"
    first, second = kernel.run(cell), kernel.run(cell)
    assert first.status == "ok"
    assert first.stdout == second.stdout
    assert first.stdout.startswith("seed: 2\nclock: virtual, 3.000 s\n")
    assert "result: 'done'" in first.stdout
    status = kernel.run("%seqlab status").stdout
    assert "loop: none (not the seqlab kernel" in status
    spawn = kernel.run("from seqlab.notebook import spawn\nasync def f():\n    pass\nspawn(f)")
    assert spawn.ename == "RuntimeError"
    assert "seqlab install-kernel" in (spawn.evalue or "")
    # Top-level await keeps IPython's usual (asyncio) behaviour there.
    assert kernel.run("import asyncio\nawait asyncio.sleep(0)\n7").results == ["7"]


# --------------------------------------------------------------------------- run_code copy

NOTHING = "async def nothing():\n    return None\n"
RUN_CODE_BRANCHES = {
    "value": "value = await nothing()\nprint(value)",
    "error": "if await nothing() is None:\n    1 / 0",
    "system-exit": "if await nothing() is None:\n    raise SystemExit(3)",
    "custom": (
        "def on_lookup(shell, etype, value, tb, tb_offset=None):\n"
        "    print('custom handler:', etype.__name__)\n"
        "get_ipython().set_custom_exc((LookupError,), on_lookup)\n"
        "if await nothing() is None:\n    raise KeyError('k')"
    ),
    "excepthook": (
        "import sys\n"
        "if await nothing() is None:\n    inside = sys.excepthook\n"
        "print(inside == get_ipython().excepthook, get_ipython().sys_excepthook != inside)"
    ),
}


def test_the_run_code_copy_was_checked_against_this_ipython():
    import IPython

    from seqlab.notebook.kernel import RUN_CODE_CHECKED, run_code_digest

    assert run_code_digest() in RUN_CODE_CHECKED, (
        f"IPython {IPython.__version__} changed InteractiveShell.run_code: compare it with "
        "seqlab.notebook.kernel._run_code_in_loop, update the copy, add the new digest"
    )


def test_attach_shell_warns_for_an_unchecked_ipython(monkeypatch):
    from seqlab.notebook import kernel

    class Events:
        def register(self, name: str, fn: Any) -> None:
            pass

    class FakeShell:
        events = Events()

        async def run_code(self, code_obj: Any, result: Any = None, *, async_: bool = False):
            return False

    monkeypatch.setattr(kernel, "RUN_CODE_CHECKED", {})
    with pytest.warns(RuntimeWarning, match="run_code is not the one seqlab's kernel copy"):
        kernel.attach_shell(FakeShell(), kernel.GuestLoop())


def test_the_run_code_copy_behaves_like_ipythons(start_kernel):
    # The same awaiting cells in a python3 kernel (IPython's own run_code, on asyncio) and in
    # the seqlab kernel (the copy, awaiting in trio): the same status, outputs and error.
    kernels = {name: start_kernel(name) for name in ("python3", "seqlab")}
    seen: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, kernel in kernels.items():
        assert kernel.run(NOTHING).status == "ok"
        seen[name] = {}
        for branch, code in RUN_CODE_BRANCHES.items():
            cell = kernel.run(code)
            # A warning names the file it came from (IPython's or seqlab's): leave that out.
            stderr = re.sub(r"^\S+\.py:\d+: ", "", cell.stderr, flags=re.M)
            seen[name][branch] = (cell.status, cell.ename, cell.stdout, stderr)
    assert seen["seqlab"] == seen["python3"]
    assert seen["seqlab"]["value"][:3] == ("ok", None, "None\n")
    assert seen["seqlab"]["error"][:2] == ("error", "ZeroDivisionError")
    assert "To exit: use 'exit'" in seen["seqlab"]["system-exit"][3]
    assert seen["seqlab"]["custom"][2] == "custom handler: KeyError\n"
    assert seen["seqlab"]["excepthook"][2] == "True True\n"


# --------------------------------------------------------------------------- nbval


def test_demo_notebook_passes_nbval_with_the_seqlab_kernel(seqlab_kernelspec):
    notebook = HERE / "kernel_demo.ipynb"
    assert json.loads(notebook.read_text())["metadata"]["kernelspec"]["name"] == "seqlab"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "-p",
            "no:cacheprovider",
            "-q",
            str(notebook),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "JUPYTER_PATH": os.environ["JUPYTER_PATH"]},
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


@pytest.mark.parametrize("module", ["seqlab", "seqlab.notebook", "seqlab.notebook.kernel"])
def test_importing_stays_light(module):
    heavy = ("IPython", "ipykernel", "ipywidgets", "anywidget", "jupyter_client", "tornado")
    code = f"import sys, {module}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- in-process


def test_guest_loop_on_a_plain_asyncio_loop(capsys):
    """The loop's machinery without a kernel: cells, errors, background reports, stop."""
    import asyncio

    import trio

    from seqlab.notebook.kernel import GuestLoop

    async def cell(value):
        await trio.sleep(0.01)
        return value, trio.lowlevel.current_trio_token()

    async def broken():
        await trio.sleep(0)
        raise LookupError("nothing here")

    async def fails_later():
        await trio.sleep(0.01)
        raise ValueError("late")

    async def main():
        loop = GuestLoop()
        assert loop.state == "not started"
        loop.start()
        await loop.wait_ready()
        assert loop.running
        first, token = await loop.run_cell_coroutine(cell("a"))
        second, token2 = await loop.run_cell_coroutine(cell("b"))
        assert (first, second, token is token2) == ("a", "b", True)
        with pytest.raises(LookupError, match="nothing here"):
            await loop.run_cell_coroutine(broken())

        # Cancelling the awaiting asyncio task (what ipykernel does on an interrupt)
        # cancels the trio side and surfaces as KeyboardInterrupt.
        async def interrupted_cell():
            try:
                await loop.run_cell_coroutine(trio.sleep(3600))
            except KeyboardInterrupt:  # IPython's run_code catches it the same way
                return "interrupted"

        waiting = asyncio.ensure_future(interrupted_cell())
        await asyncio.sleep(0.05)
        waiting.cancel()
        assert await waiting == "interrupted"
        loop.spawn(fails_later, name="late")
        assert loop.background_tasks == []  # not started until the loop runs it
        # A plain function is refused in the cell that passed it, not later in the loop.
        with pytest.raises(TypeError, match=r"async_fn must be an async function.*len is a plain"):
            loop.spawn(len, [])
        await asyncio.sleep(0.1)
        assert capsys.readouterr().err == ""  # idle: kept for the next cell
        loop.cell_started()
        report = capsys.readouterr().err
        assert report.startswith("seqlab: background task 'late' failed:\nValueError: late\n")
        assert report.endswith(': raise ValueError("late")\n')
        loop.cell_finished()
        assert loop.running
        loop.stop()
        while loop.state != "stopped":
            await asyncio.sleep(0.01)
        assert loop.describe() == "stopped"

    asyncio.run(main())


def test_spawn_outside_the_seqlab_kernel_says_what_to_do():
    from seqlab.notebook import spawn

    async def task():
        pass

    with pytest.raises(RuntimeError, match="seqlab install-kernel"):
        spawn(task)
    with pytest.raises(TypeError, match="not a coroutine"):
        spawn(task())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async_fn must be"):
        spawn(3)  # type: ignore[arg-type]
