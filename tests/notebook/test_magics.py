"""The ``%seqlab`` magics in an in-process IPython shell (no kernel needed for these)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import seqlab
from seqlab.examples.bank import checked_deposits, deposits
from seqlab.notebook import magics
from seqlab.notebook.magics import USAGE, SeqlabMagics, compile_scenario

TWO_WORKERS = """\
async def worker(seconds):
    await trio.sleep(seconds)
async with trio.open_nursery() as nursery:
    for i in range(2):
        nursery.start_soon(worker, i + 1, name=f"w{i}")
"""

TWO_WORKERS_OUTPUT = """\
seed: 1
clock: virtual, 2.000 s
tasks: 3 (scenario, w0, w1)
events: 6

0.000  scenario  task  spawn
0.000  w0        task  spawn  parent=scenario
0.000  w1        task  spawn  parent=scenario
1.000  w0        task  exit
2.000  w1        task  exit
2.000  scenario  task  exit
"""


class Shell:
    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell

    def cell(self, code: str) -> tuple[str, str]:
        """Run ``code`` as a cell; return (stdout, stderr). Fails on an uncaught error."""
        with capture_output(display=False) as out:
            result = self.shell.run_cell(code)
        assert result.error_in_exec is None, out.stdout + out.stderr
        assert result.error_before_exec is None, out.stdout + out.stderr
        assert "Traceback" not in out.stdout + out.stderr
        return out.stdout, out.stderr


@pytest.fixture(scope="module")
def ipython() -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.history_manager.enabled = False
    shell.run_line_magic("load_ext", "seqlab")
    shell.run_cell("import trio\nfrom seqlab.examples.bank import deposits, checked_deposits")
    return shell


@pytest.fixture
def sh(ipython: InteractiveShell) -> Iterator[Shell]:
    # Fresh magics per test: no scenario or trace left over from another test.
    ipython.register_magics(SeqlabMagics(ipython))
    yield Shell(ipython)


def test_run_prints_a_deterministic_summary_and_trace(sh: Shell):
    out, err = sh.cell("%%seqlab run --seed 1 --view text\n" + TWO_WORKERS)
    assert (out, err) == (TWO_WORKERS_OUTPUT, "")
    assert sh.cell("%%seqlab run --seed 1 --view text\n" + TWO_WORKERS) == (out, err)


def test_default_seed_is_zero_so_outputs_are_reproducible(sh: Shell):
    out, _ = sh.cell("%%seqlab run --view text\nawait trio.sleep(1)")
    assert out.startswith("seed: 0\nclock: virtual, 1.000 s\ntasks: 1 (scenario)\n")


def test_scenario_sees_notebook_globals_and_keeps_its_own_names(sh: Shell, ipython):
    sh.cell("helper_value = 20\ndef helper(x):\n    return x + 1")
    out, _ = sh.cell("%%seqlab run\nlocal_name = helper(helper_value)\nlocal_name * 2")
    assert "result: 42\n" in out
    assert "local_name" not in ipython.user_ns
    sh.cell("%%seqlab run\nglobal kept\nkept = 'visible'")
    assert ipython.user_ns["kept"] == "visible"
    out, _ = sh.cell("%%seqlab run\nx = 1")
    assert "result:" not in out


def test_result_is_shown_the_same_in_every_process(sh: Shell):
    # repr() of a set of strings depends on the process's hash seed; the result line must not.
    out, _ = sh.cell("%%seqlab run\n[{'pear', 'apple', 'fig'}, frozenset({'b', 'a'}), object()]")
    assert "result: [{'apple', 'fig', 'pear'}, frozenset({'a', 'b'}), <object>]\n" in out


def test_errors_are_short_reports_with_the_users_frames(sh: Shell):
    sh.cell("def check(n):\n    if n:\n        raise ValueError(f'bad {n}')")
    out, err = sh.cell("%%seqlab run --seed 3 --view none\nawait trio.sleep(0.5)\ncheck(7)")
    assert out == (
        "seed: 3\n"
        "clock: virtual, 0.500 s\n"
        "tasks: 1 (scenario)\n"
        "events: 2\n"
        "\n"
        "ValueError: bad 7\n"
        "  in scenario, line 2: check(7)\n"
        "  in check, line 3: raise ValueError(f'bad {n}')\n"
        "replay: %seqlab replay 3\n"
    )
    assert err == ""


def test_deadlock_is_reported_with_the_blocked_tasks(sh: Shell):
    out, _ = sh.cell(
        "%%seqlab run --view none\nev = trio.Event()\n"
        "async with trio.open_nursery() as n:\n    n.start_soon(ev.wait, name='waiter')"
    )
    assert "deadlock at t=0.000" in out
    assert "  waiter waits on trio.Event\n" in out
    assert out.endswith("replay: %seqlab replay 0\n")


def test_explore_reports_the_failing_seeds(sh: Shell):
    out, _ = sh.cell("%%seqlab run --explore 12 --view none\nawait checked_deposits(3)")
    expected = seqlab.explore(checked_deposits, 3, seeds=range(12))
    seeds = ", ".join(str(s) for s in expected.failing_seeds)
    first = expected.failing_seeds[0]
    assert out.startswith(
        f"explored 12 schedules (seeds 0-11): {len(expected.failures)} failed\n"
        f"failing seeds: {seeds}\n\nfirst failure, seed {first}:\nAssertionError: lost update"
    )
    assert out.endswith(f"replay: %seqlab replay {first}\n")
    # The failing run replays exactly: its trace is the explored one.
    explored_trace, _ = sh.cell("%seqlab trace")
    replay, _ = sh.cell(f"%seqlab replay {first}")
    assert "AssertionError: lost update" in replay
    assert sh.cell("%seqlab trace")[0] == explored_trace
    assert explored_trace.count("account  write") == 3


def test_explore_all_passing_and_explicit_start_seed(sh: Shell):
    sh.cell("%%seqlab run --seed 9\n" + TWO_WORKERS)
    out, _ = sh.cell("%%seqlab run --explore 3 --seed 10\nawait trio.sleep(1)")
    assert out == "explored 3 schedules (seeds 10-12): all passed\n"
    # A passing exploration keeps no trace; the earlier scenario's is not passed off as its own.
    _, err = sh.cell("%seqlab trace")
    assert err == "%seqlab trace: no trace yet; run a scenario with %%seqlab run\n"


def test_replay_and_trace(sh: Shell):
    _, err = sh.cell("%seqlab replay 1")
    assert err == "%seqlab replay: no scenario yet; run one with %%seqlab run\n"
    _, err = sh.cell("%seqlab trace")
    assert err == "%seqlab trace: no trace yet; run a scenario with %%seqlab run\n"
    sh.cell("%%seqlab run --seed 9 --view text\n" + TWO_WORKERS)
    replay, _ = sh.cell("%seqlab replay 1")
    assert replay == TWO_WORKERS_OUTPUT
    trace, _ = sh.cell("%seqlab trace")
    assert trace == TWO_WORKERS_OUTPUT.split("\n\n", 1)[1]
    as_json, _ = sh.cell("%seqlab trace --json")
    events = json.loads(as_json)
    assert [e["task"] for e in events] == ["scenario", "w0", "w1", "w0", "w1", "scenario"]


def test_status_outside_the_seqlab_kernel(sh: Shell):
    out, _ = sh.cell("%seqlab")
    assert out.splitlines()[1] == "loop: none (not the seqlab kernel: no persistent trio loop)"
    assert out.splitlines()[4] == "recorder: no trace yet"
    sh.cell("%%seqlab run --seed 6 --real-time\nawait trio.sleep(0)")
    out, _ = sh.cell("%seqlab status")
    assert "seed: 6\nclock: real time\nrecorder: last trace has 2 events\n" in out


def test_real_time_runs_show_no_duration(sh: Shell):
    out, _ = sh.cell("%%seqlab run --real-time --view none\nawait trio.sleep(0.01)")
    assert out.splitlines()[1] == "clock: real time (timings vary from run to run)"


@pytest.mark.parametrize(
    ("cell", "usage", "message"),
    [
        ("%%seqlab run --seed x\npass", "run", "argument --seed: invalid int value: 'x'"),
        ("%%seqlab run --view pie\npass", "run", "argument --view: invalid choice: 'pie'"),
        ("%%seqlab run --explore 0\npass", "run", "argument --explore: invalid positive int"),
        ("%%seqlab run --bogus\npass", "run", "unrecognized arguments: --bogus"),
        ("%seqlab run", "run", "run is a cell magic"),
        ("%seqlab replay", "replay", "the following arguments are required: seed"),
        ("%seqlab replay one", "replay", "argument seed: invalid int value: 'one'"),
        ("%seqlab trace --xml", "trace", "unrecognized arguments: --xml"),
        ("%seqlab status now", "status", "unexpected arguments: now"),
        ("%%seqlab trace\nbody", "trace", "trace takes no cell body"),
        ("%seqlab replay 'unbalanced", "help", "cannot split the arguments"),
    ],
)
def test_bad_arguments_print_a_usage_line_not_a_traceback(sh: Shell, cell, usage, message):
    out, err = sh.cell(cell)
    assert out == ""
    first, second = err.splitlines()
    assert first == f"usage: {USAGE[usage]}"
    assert second.startswith(f"%seqlab: {message}")


def test_unknown_subcommand_lists_the_valid_ones(sh: Shell):
    _, err = sh.cell("%seqlab frobnicate")
    assert err == (
        "%seqlab: unknown subcommand 'frobnicate'; valid subcommands: "
        "status, run, replay, trace, check, help\n"
    )
    out, _ = sh.cell("%seqlab help")
    assert out.splitlines() == list(USAGE.values())


def test_syntax_error_in_the_scenario_is_one_line(sh: Shell):
    _, err = sh.cell("%%seqlab run\nx = (\n")
    assert err == "scenario: SyntaxError: '(' was never closed (line 1)\n"


def test_widget_views_are_shown_before_the_run_and_follow_it(sh: Shell, monkeypatch):
    from seqlab.notebook import widgets

    made: list[tuple[str, Any, int]] = []
    real = widgets.make_view

    def spy(kind: str, recorder: Any, **options: Any) -> Any:
        view = real(kind, recorder, **options)
        made.append((kind, view, len(recorder)))
        return view

    monkeypatch.setattr(widgets, "make_view", spy)
    out, _ = sh.cell("%%seqlab run --view barrier\nawait trio.sleep(1)")
    assert [(kind, events) for kind, _, events in made] == [("barrier", 0)]  # before the run
    sh.cell("%%seqlab run\nawait trio.sleep(1)")
    assert made[-1][0] == "timeline"  # the default view
    del made[-1]
    view = made[0][1]
    assert view.steps == 2 and not view.live  # it saw both events and was finished
    assert "task  spawn" not in out  # the view, not the text, shows the trace
    out, _ = sh.cell("%%seqlab run --view text\nawait trio.sleep(1)")
    assert "scenario  task  spawn" in out and len(made) == 1
    out, _ = sh.cell("%%seqlab run --view none\nawait trio.sleep(1)")
    assert out.endswith("events: 2\n") and len(made) == 1


def test_compile_scenario_returns_an_async_function_with_the_given_globals():
    namespace: dict[str, Any] = {"base": 40}
    fn = compile_scenario("value = base + 2\nvalue", namespace)
    assert fn.__name__ == "scenario"
    assert fn.__globals__ is namespace
    assert seqlab.run(fn, seed=0) == 42
    assert "value" not in namespace and "scenario" not in namespace
    with pytest.raises(SyntaxError):
        compile_scenario("yield 1\nawait x", {})


def test_show_view_text_prints_the_trace(capsys):
    rec = seqlab.Recorder()
    seqlab.run(deposits, 2, seed=1, recorder=rec)
    magics._show_view("text", rec)
    magics._show_view("none", rec)
    assert capsys.readouterr().out == rec.to_text()


def test_check_runs_a_lessons_visible_checks_in_the_notebook(sh: Shell):
    _, err = sh.cell("%seqlab check")
    assert "%seqlab check EXERCISE_ID" in err
    sh.cell("import trio, seqlab")
    out, _ = sh.cell("%seqlab check ex0-alarms")
    assert "ex0-alarms-check" in out and "✗" in out
    sh.cell(
        "async def staggered_alarms(delays):\n"
        "    rang = []\n"
        "    async def alarm(delay):\n"
        "        await trio.sleep(delay)\n"
        "        rang.append(trio.current_time())\n"
        "    async with trio.open_nursery() as nursery:\n"
        "        for delay in delays:\n"
        "            nursery.start_soon(alarm, delay)\n"
        "    return rang\n"
    )
    out, _ = sh.cell("%seqlab check ex0-alarms")
    assert "1 of 1 visible check(s) passed" in out
