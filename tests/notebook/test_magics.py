"""The ``%seqlab`` magics in an in-process IPython shell (no kernel needed for these)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
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
events: 12

0.000  scenario  task  spawn
0.000  w0        task  spawn  parent=scenario
0.000  w1        task  spawn  parent=scenario
0.000  scenario  task  block  what='for its child tasks to finish' on=children
0.000  w1        task  block  what='in trio.sleep until 2.000' on=sleep
0.000  w0        task  block  what='in trio.sleep until 1.000' on=sleep
1.000  w0        task  wake   waited=1.000 by=timer
1.000  w0        task  exit   outcome=returned
2.000  w1        task  wake   waited=2.000 by=timer
2.000  w1        task  exit   outcome=returned
2.000  scenario  task  wake   waited=2.000 by=w1 at=2.000
2.000  scenario  task  exit   outcome=returned
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

    def fail(self, code: str) -> tuple[str, str, BaseException]:
        """Run ``code`` as a cell that must fail; return (stdout, stderr, the error)."""
        with capture_output(display=False) as out:
            result = self.shell.run_cell(code)
        assert result.error_in_exec is not None, out.stdout + out.stderr
        assert "Traceback" not in out.stdout + out.stderr
        return out.stdout, out.stderr, result.error_in_exec


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
        "events: 4\n"
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
    first = expected.failures[0]
    assert out.startswith(
        f"explored 12 schedules (seeds 0-11; {expected.schedules} distinct, auto): "
        f"{len(expected.failures)} failed\n"
        f"failing seeds: {seeds}\n\nfirst failure, seed {first.seed} ({first.strategy}), "
        "made as simple as it goes:\nAssertionError: lost update"
    )
    assert "This run fails with 1 decisive choice" in out
    schedule = out.rsplit("replay: %seqlab replay ", 1)[1].strip()
    assert schedule.startswith("s1:")
    # The failing schedule replays exactly: its trace is the reported one.
    explored_trace, _ = sh.cell("%seqlab trace")
    replay, _ = sh.cell(f"%seqlab replay {schedule}")
    assert "AssertionError: lost update" in replay
    assert f"schedule: {schedule}" in replay
    assert sh.cell("%seqlab trace")[0] == explored_trace
    assert len(re.findall(r"account +write", explored_trace)) == 3
    assert re.search(r"scheduler +decision +index=1", explored_trace)


def test_explore_with_a_strategy_finds_a_delay_race_random_orders_miss(sh: Shell):
    sh.cell("from seqlab.examples.races import stale_cache")
    out, _ = sh.cell("%%seqlab run --explore 30 --strategy random --view none\nawait stale_cache()")
    assert out.startswith("explored 30 schedules (seeds 0-29; ")
    assert out.endswith(": all passed\n")
    out, _ = sh.cell(
        "%%seqlab run --explore 30 --strategy delay --bound 1 --view none\nawait stale_cache()"
    )
    assert "writer was held back for" in out
    assert "AssertionError: stale cache" in out
    _, _, error = sh.fail(
        "%%seqlab run --explore 3 --strategy random --bound 2\nawait stale_cache()"
    )
    assert "strategy 'random' takes no bound" in str(error)


def test_explore_all_passing_and_explicit_start_seed(sh: Shell):
    sh.cell("%%seqlab run --seed 9\n" + TWO_WORKERS)
    out, _ = sh.cell("%%seqlab run --explore 3 --seed 10\nawait trio.sleep(1)")
    assert out == "explored 3 schedules (seeds 10-12; 1 distinct, auto): all passed\n"
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
    assert [e["task"] for e in events if e["kind"] in ("spawn", "exit")] == [
        "scenario",
        "w0",
        "w1",
        "w0",
        "w1",
        "scenario",
    ]


MANY_EVENTS = """\
for i in range(1000):
    seqlab.emit("counter", "tick", i=i)
"""


def test_a_long_trace_shows_its_head_and_tail_and_the_rest_one_call_away(sh: Shell, ipython):
    sh.cell("import seqlab")
    out, _ = sh.cell("%%seqlab run --view text\n" + MANY_EVENTS)
    full, _ = sh.cell("%seqlab trace --all")
    lines = full.splitlines(keepends=True)
    assert len(lines) == 1002  # spawn, 1000 ticks, exit
    capped, _ = sh.cell("%seqlab trace")
    assert capped == (
        "".join(lines[:50])
        + "... 902 lines omitted (%seqlab trace --all prints all 1002) ...\n"
        + "".join(lines[-50:])
    )
    assert out.endswith("\n\n" + capped)  # the run's own text view is capped the same way
    assert "i=499" in full and "i=499" not in capped
    # --json: the whole, parseable, with --all; a readable cut without it.
    everything = json.loads(sh.cell("%seqlab trace --json --all")[0])
    assert len(everything) == 1002 and everything[500]["data"] == {"i": 499}
    cut, _ = sh.cell("%seqlab trace --json")
    cut_lines = cut.splitlines()
    assert cut_lines[0] == "[" and cut_lines[-1] == "]"
    assert cut_lines[51] == "... 903 lines omitted (%seqlab trace --json --all prints all 1004) ..."
    assert json.loads(cut_lines[1].rstrip(",")) == everything[0]
    assert json.loads(cut_lines[-2]) == everything[-1]
    assert len(cut) < len(json.dumps(everything)) / 5


def test_a_trace_a_little_over_the_cap_is_shown_whole(sh: Shell):
    sh.cell("import seqlab")
    sh.cell("%%seqlab run --view none\nfor i in range(115):\n    seqlab.emit('c', 't')")
    out, _ = sh.cell("%seqlab trace")
    assert len(out.splitlines()) == 117 and "omitted" not in out
    assert json.loads(sh.cell("%seqlab trace --json")[0])[-1]["kind"] == "exit"


def test_trace_perfetto_writes_chrome_trace_json(sh: Shell, tmp_path: Any):
    sh.cell("%%seqlab run --seed 9 --view none\n" + TWO_WORKERS)
    target = tmp_path / "run.json"
    out, err = sh.cell(f"%seqlab trace --perfetto {target}")
    assert (out, err) == (f"wrote {target}: 12 events; open it in https://ui.perfetto.dev\n", "")
    trace = json.loads(target.read_text())
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert names == {"scenario", "w0", "w1"}
    sleeps = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "sleeping"]
    assert sorted(e["dur"] for e in sleeps) == [1e6, 2e6]


def test_a_keyboard_interrupt_in_a_scenario_is_one_short_summary(sh: Shell):
    sh.cell("import seqlab")
    out, err, error = sh.fail(
        "%%seqlab run --seed 4 --view none\n"
        "async def stopper():\n"
        "    seqlab.emit('desk', 'open')\n"
        "    await trio.sleep(2)\n"
        "    raise KeyboardInterrupt\n"
        "async with trio.open_nursery() as nursery:\n"
        "    nursery.start_soon(stopper)\n"
        "    nursery.start_soon(trio.sleep_forever, name='idler')"
    )
    assert type(error) is KeyboardInterrupt
    lines = out.splitlines()
    assert lines[:4] == [
        "interrupted (KeyboardInterrupt): seed 4, virtual time",
        "tasks: 3 (scenario, stopper, idler)",
        f"events: {len(sh.shell.magics_manager.registry['SeqlabMagics'].last_recorder)} before the interrupt",
        "last 5 of the partial trace (%seqlab trace shows it all):",
    ]
    assert lines[-2:] == [
        "replay: %seqlab replay 4",
        # The error, in one line: no traceback through magics.py, runtime.py, threading.py.
        "KeyboardInterrupt: the scenario was interrupted; the summary above says where",
    ]
    assert len(lines) == 11 and any("stopper" in line for line in lines[4:9])
    assert all(line.startswith("2.000  ") for line in lines[4:9])
    assert err == ""
    status, _ = sh.cell("%seqlab status")
    assert status.splitlines()[-1] == (
        f"last run: seed 4: interrupted (KeyboardInterrupt) after {lines[2].split()[1]} events; "
        "%seqlab trace shows the partial trace"
    )
    trace, _ = sh.cell("%seqlab trace")
    assert "desk      open" in trace or "desk  open" in trace


def test_status_tells_how_the_last_run_ended(sh: Shell):
    sh.cell("%%seqlab run --seed 2 --view none\nawait trio.sleep(1)")
    assert sh.cell("%seqlab status")[0].splitlines()[-1] == "last run: seed 2: completed"
    sh.cell("%%seqlab run --seed 3 --view none\nraise ValueError('no')")
    assert sh.cell("%seqlab status")[0].splitlines()[-1] == "last run: seed 3: failed (ValueError)"
    sh.cell("%%seqlab run --explore 3 --view none\nawait trio.sleep(1)")
    assert sh.cell("%seqlab status")[0].splitlines()[-1] == (
        "last run: explored 3 schedules (seeds 0-2): all passed"
    )


def test_many_errors_and_failing_seeds_are_counted_not_listed(sh: Shell):
    out, _ = sh.cell(
        "%%seqlab run --seed 1 --view none\n"
        "async def fail(i):\n"
        "    raise ValueError(i)\n"
        "async with trio.open_nursery() as nursery:\n"
        "    for i in range(50):\n"
        "        nursery.start_soon(fail, i)"
    )
    assert out.count("ValueError: ") == 3
    assert "\n... and 47 more errors (ValueError x47)\nreplay: %seqlab replay 1\n" in out
    out, _ = sh.cell("%%seqlab run --explore 30 --view none\nraise KeyError('always')")
    assert out.splitlines()[:2] == [
        "explored 30 schedules (seeds 0-29; 1 distinct, auto): 30 failed",
        "failing seeds: " + ", ".join(str(s) for s in range(20)) + ", ... (10 more)",
    ]


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
    ("cell", "message"),
    [
        (
            "%%seqlab run --seed x\npass",
            "%%seqlab run: argument --seed: a seed is an int >= 0, got 'x'",
        ),
        (
            "%%seqlab run --seed -5\npass",
            "%%seqlab run: argument --seed: a seed is an int >= 0, got -5",
        ),
        (
            "%seqlab replay -1",
            "%seqlab replay: argument SEED|SCHEDULE: expected a seed (an int >= 0) or a "
            "schedule (s1:...), got '-1'",
        ),
        (
            "%seqlab replay one",
            "%seqlab replay: argument SEED|SCHEDULE: expected a seed (an int >= 0) or a "
            "schedule (s1:...), got 'one'",
        ),
        (
            "%seqlab replay s1:Z",
            "%seqlab replay: argument SEED|SCHEDULE: schedule: cannot read the decision 'Z' "
            "in 's1:Z'",
        ),
        ("%seqlab replay", "%seqlab replay: the following arguments are required: SEED|SCHEDULE"),
        ("%%seqlab run --view pie\npass", "%%seqlab run: argument --view: invalid choice: 'pie'"),
        (
            "%%seqlab run --explore 0\npass",
            "%%seqlab run: argument --explore: expected an int >= 1, got 0",
        ),
        ("%%seqlab run --bogus\npass", "%%seqlab run: unrecognized arguments: --bogus"),
        # No abbreviations: argparse would take --se for --seed and --ex for --explore.
        (
            "%%seqlab run --se 3\npass",
            "%%seqlab run: unrecognized arguments: --se 3; options are not abbreviated: write --seed",
        ),
        (
            "%%seqlab run --ex 2\npass",
            "%%seqlab run: unrecognized arguments: --ex 2; options are not abbreviated: write --explore",
        ),
        (
            "%seqlab trace --js",
            "%seqlab trace: unrecognized arguments: --js; options are not abbreviated: write --json",
        ),
        # A repeated option is an error, not "the last one wins".
        ("%%seqlab run --seed 3 --seed 4\npass", "%%seqlab run: argument --seed: given twice"),
        (
            "%%seqlab run --real-time --real-time\npass",
            "%%seqlab run: argument --real-time: given twice",
        ),
        (
            "%%seqlab run --view none --view=text\npass",
            "%%seqlab run: argument --view: given twice",
        ),
        ("%seqlab run", "%seqlab run is a cell magic"),
        ("%seqlab step", "%seqlab step is a cell magic"),
        (
            "%%seqlab step --goal win\npass",
            "%%seqlab step: argument --goal: expected fail, deadlock or stale:TASK[@OBJECT], "
            "got 'win'",
        ),
        (
            "%%seqlab step --goal stale:\npass",
            "%%seqlab step: argument --goal: expected fail, deadlock or stale:TASK[@OBJECT], "
            "got 'stale:'",
        ),
        (
            "%%seqlab step --goal stale:teller-1@\npass",
            "%%seqlab step: argument --goal: expected fail, deadlock or stale:TASK[@OBJECT], "
            "got 'stale:teller-1@'",
        ),
        ("%%seqlab step --watch 'a,b c'\npass", "%%seqlab step: --watch takes comma-separated"),
        ("%%seqlab step --watch a --watch b\npass", "%%seqlab step: argument --watch: given twice"),
        ("%seqlab trace --xml", "%seqlab trace: unrecognized arguments: --xml"),
        ("%seqlab status now", "%seqlab status: unrecognized arguments: now"),
        ("%seqlab check", "%seqlab check: the following arguments are required: EXERCISE_ID"),
        (
            "%%seqlab trace\nbody",
            "%%seqlab trace takes no cell body; only %%seqlab run and %%seqlab step do",
        ),
        ("%seqlab replay 'unbalanced", "%seqlab: cannot split the arguments"),
        ("%seqlab frobnicate", "%seqlab: unknown subcommand 'frobnicate'; valid subcommands: "),
        ("%seqlab trase", "%seqlab: unknown subcommand 'trase'; did you mean 'trace'?"),
        # A body without a subcommand is a scenario missing its "run".
        (
            "%%seqlab\nawait trio.sleep(1)",
            "%%seqlab: a cell body needs a subcommand; to run the body as a scenario, put %%seqlab run on the first line",
        ),
        (
            "%%seqlab --seed 3\nawait trio.sleep(1)",
            "%%seqlab: a cell body needs a subcommand; to run the body as a scenario, put %%seqlab run --seed 3 on the first line",
        ),
    ],
)
def test_bad_arguments_fail_the_cell_with_one_line(sh: Shell, cell, message):
    out, err, error = sh.fail(cell)
    assert type(error) is UsageError  # IPython shows exactly this type as one line
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n")
    assert err.startswith(f"UsageError: {message}")


def test_a_bad_argument_runs_nothing(sh: Shell, ipython):
    ipython.user_ns.pop("ran_it", None)
    for cell in ("%%seqlab run --seed 3 --seed 4\n", "%%seqlab run --se 3\n", "%%seqlab\n"):
        sh.fail(cell + "global ran_it\nran_it = True")
        assert "ran_it" not in ipython.user_ns
    # The previous scenario is kept for replay; the failed cell did not replace it.
    sh.cell("%%seqlab run --seed 1 --view none\nawait trio.sleep(2)")
    sh.fail("%%seqlab run --seed x\nawait trio.sleep(5)")
    assert sh.cell("%seqlab replay 1")[0].splitlines()[1] == "clock: virtual, 2.000 s"


def test_usage_lines_come_from_the_parsers():
    assert USAGE["run"] == (
        "%%seqlab run [-h] [--seed N] [--real-time] [--explore K] "
        "[--strategy auto|lockstep|random|delay|pct|exhaustive] [--bound B] "
        "[--view timeline|barrier|convoy|ring|text|none] [--static]"
    )
    assert USAGE["replay"] == (
        "%seqlab replay [-h] [--strategy auto|lockstep|random|delay|pct|exhaustive] SEED|SCHEDULE"
    )
    assert list(USAGE) == ["status", "run", "replay", "trace", "check", "step", "help"]
    assert USAGE["step"] == (
        "%%seqlab step [-h] [--watch NAMES] [--goal fail|deadlock|stale:TASK[@OBJECT]]"
    )


def test_dash_h_explains_a_subcommand_and_runs_nothing(sh: Shell, ipython):
    ipython.user_ns.pop("ran_it", None)
    out, err = sh.cell("%%seqlab run -h\nglobal ran_it\nran_it = True")
    assert out.startswith("usage: %%seqlab run [-h] [--seed N]")
    assert "  --seed N " in out and "  --explore K " in out and "  --view " in out
    assert err == "" and "ran_it" not in ipython.user_ns
    out, _ = sh.cell("%seqlab replay --help")
    assert out.startswith("usage: %seqlab replay [-h] [--strategy ")
    assert "SEED|SCHEDULE" in out
    out, _ = sh.cell("%seqlab -h")
    assert out.splitlines() == list(USAGE.values())


def test_yield_in_a_body_is_explained(sh: Shell):
    _, err, _ = sh.fail("%%seqlab run\nawait trio.sleep(1)\nyield 5")
    assert err == (
        "UsageError: scenario, line 2: SyntaxError: 'yield' in a scenario: the body runs as "
        "async def scenario(), which cannot be a generator; end with an expression (or return) "
        "to give a result\n"
    )
    _, err, _ = sh.fail("%%seqlab run\nx = [(yield from y) for y in ()]")
    assert "SyntaxError" in err
    # A generator defined inside the body is fine.
    out, _ = sh.cell("%%seqlab run --view none\ndef gen():\n    yield 5\nlist(gen())")
    assert "result: [5]" in out


def test_unknown_subcommand_lists_the_valid_ones(sh: Shell):
    _, err, _ = sh.fail("%seqlab frobnicate")
    assert err == (
        "UsageError: %seqlab: unknown subcommand 'frobnicate'; valid subcommands: "
        "status, run, replay, trace, check, step, help\n"
    )
    out, _ = sh.cell("%seqlab help")
    assert out.splitlines() == list(USAGE.values())


def test_syntax_error_in_the_scenario_fails_the_cell_in_one_line(sh: Shell):
    _, err, _ = sh.fail("%%seqlab run\nx = (\n")
    assert err == "UsageError: scenario, line 1: SyntaxError: '(' was never closed\n"


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
    # It saw every event (spawn, block, wake, exit) and was finished.
    assert view.steps == 4 and not view.live
    assert "task  spawn" not in out  # the view, not the text, shows the trace
    out, _ = sh.cell("%%seqlab run --view text\nawait trio.sleep(1)")
    assert "scenario  task  spawn" in out and len(made) == 1
    out, _ = sh.cell("%%seqlab run --view none\nawait trio.sleep(1)")
    assert out.endswith("events: 4\n") and len(made) == 1


def test_a_static_view_is_drawn_once_after_the_run(ipython, monkeypatch):
    from IPython.display import DisplayHandle

    from seqlab.notebook import widgets

    made: list[tuple[str, int]] = []
    real = widgets.make_view

    def spy(kind: str, recorder: Any, **options: Any) -> Any:
        made.append((kind, len(recorder)))
        return real(kind, recorder, **options)

    updates: list[Any] = []
    monkeypatch.setattr(widgets, "make_view", spy)
    monkeypatch.setattr(DisplayHandle, "update", lambda self, obj, **kw: updates.append(obj))
    body = (
        "await trio.sleep(1)\nasync with trio.open_nursery() as n:\n    n.start_soon(trio.sleep, 1)"
    )
    with capture_output() as out:
        ipython.run_cell("%%seqlab run --static\n" + body)
    # made after the run, from the whole trace, shown once and never updated: what nbval
    # sees while the cell runs is what nbclient stores
    assert made == [("timeline", 10)] and updates == []
    assert out.stdout.startswith("seed: 0\nclock: virtual, 2.000 s\n")
    shown = [o.data["text/plain"] for o in out.outputs]
    assert len(shown) == 1 and shown[0].startswith("Timeline: 2 tasks, 10 events")
    # live (the default): made before the run with no events, then updated
    with capture_output() as out:
        ipython.run_cell("%%seqlab run\n" + body)
    assert made[-1] == ("timeline", 0) and len(updates) == 1
    assert out.outputs[0].data["text/plain"].startswith("Timeline: 0 tasks, 0 events")


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
    _, err, _ = sh.fail("%seqlab check")
    assert "EXERCISE_ID" in err
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


# ---------------------------------------------------------------- %%seqlab step

TELLERS = """\
ledger = {"balance": 0}
async def teller():
    seen = ledger["balance"]
    await trio.sleep(0)
    ledger["balance"] = seen + 10
async with trio.open_nursery() as nursery:
    nursery.start_soon(teller, name="teller-0")
    nursery.start_soon(teller, name="teller-1")
assert ledger["balance"] == 20, f"lost update: balance is {ledger['balance']}"
"""


def test_step_shows_a_stepper_widget_on_the_scenario(sh: Shell, ipython):
    with capture_output() as out:
        result = ipython.run_cell("%%seqlab step --watch ledger --goal fail\n" + TELLERS)
    assert result.error_in_exec is None, out.stderr
    widget = ipython.magics_manager.registry["SeqlabMagics"].last_stepper
    assert widget.runnable == ["scenario"]
    shown = out.outputs[0].data["text/plain"]
    assert shown.startswith("You are the scheduler: scenario: step 0; goal: make the program fail")
    assert "  ledger = (not defined yet)" in shown
    for name in ["scenario", "teller-0", "teller-1", "teller-0", "teller-1", "scenario"]:
        widget.step(name)
    # the scenario's own locals are watched, and the level is reached
    assert widget.watched == [["ledger", "{'balance': 10}"]]
    assert widget.goal_reached and widget.level["reached"]
    tasks = {t["name"]: t for t in widget.tasks}
    assert tasks["teller-0"]["state"] == "done"
    # the line names no scenario counter (it changes with the cell order)
    widget.reset()
    widget.step("scenario")
    line = {t["name"]: t for t in widget.tasks}["scenario"]["line"]
    assert line.startswith("line ") and "seqlab scenario" not in line


def test_step_goal_stale_is_a_level_on_a_traced_object(sh: Shell, ipython):
    traced = "from seqlab.examples.bank import Account\n" + TELLERS.replace(
        'ledger = {"balance": 0}', "ledger = Account()"
    ).replace('seen = ledger["balance"]', "seen = ledger.read()").replace(
        'ledger["balance"] = seen + 10', "ledger.write(seen + 10)"
    ).replace("ledger['balance']", "ledger.balance").replace('ledger["balance"]', "ledger.balance")
    with capture_output() as out:
        result = ipython.run_cell(
            "%%seqlab step --watch ledger.balance --goal stale:teller-0@account\n" + traced
        )
    assert result.error_in_exec is None, out.stderr
    widget = ipython.magics_manager.registry["SeqlabMagics"].last_stepper
    assert widget.goal.startswith("make teller-0 write account from a stale read")
    # teller-0 writes first: teller-1 is the stale one, not the goal
    for name in ["scenario", "teller-0", "teller-1", "teller-0", "teller-1"]:
        widget.step(name)
    assert not widget.goal_reached and widget.watched == [["ledger.balance", "10"]]
    widget.reset()
    for name in ["scenario", "teller-0", "teller-1", "teller-1", "teller-0"]:
        widget.step(name)
    assert widget.goal_reached and widget.level["spec"] == "stale:teller-0@account"
    assert "goal reached" in widget.message
    widget.close()


def test_step_reports_a_syntax_error_in_one_line(sh: Shell):
    _, err, error = sh.fail("%%seqlab step\nawait = 3")
    assert type(error) is UsageError
    assert err.startswith("UsageError: scenario, line 1: SyntaxError")


def test_errors_from_child_tasks_name_the_task_and_trim_to_the_learners_frames(sh: Shell):
    sh.cell(
        "def deposit(account, amount):\n"
        "    raise NotImplementedError('exercise 1 is not done yet')\n"
    )
    out, _ = sh.cell(
        "%%seqlab run --seed 0 --view none\n"
        "async def teller(i):\n"
        "    await trio.sleep(i)\n"
        "    if i == 2:\n"
        "        deposit(None, 10)\n"
        "async with trio.open_nursery() as nursery:\n"
        "    for i in range(3):\n"
        "        nursery.start_soon(teller, i, name=f'teller-{i}')\n"
    )
    report = out.split("\n\n", 1)[1]
    assert report == (
        "teller-2 raised NotImplementedError: exercise 1 is not done yet\n"
        "  in teller, line 4: deposit(None, 10)\n"
        "  in deposit, line 2: raise NotImplementedError('exercise 1 is not done yet')\n"
        "replay: %seqlab replay 0\n"
    )
    assert "ExceptionGroup" not in out and "trio" not in report


def test_errors_in_an_exploration_name_their_tasks_too(sh: Shell):
    out, _ = sh.cell(
        "%%seqlab run --explore 2 --view none\n"
        "async def teller(i):\n"
        "    raise KeyError(i)\n"
        "async with trio.open_nursery() as nursery:\n"
        "    nursery.start_soon(teller, 7, name='clerk')\n"
    )
    assert "clerk raised KeyError: 7\n  in teller, line 2: raise KeyError(i)\n" in out


def test_a_cell_raising_an_exception_group_shows_its_leaves_first(ipython):
    code = (
        "def deposit():\n"
        "    raise NotImplementedError('exercise 1 is not done yet')\n"
        "async def teller(i):\n"
        "    await trio.sleep(i)\n"
        "    deposit()\n"
        "async def day():\n"
        "    async with trio.open_nursery() as nursery:\n"
        "        nursery.start_soon(teller, 0, name='teller-0')\n"
        "trio.run(day)\n"
    )
    with capture_output() as out:
        result = ipython.run_cell(code)
    assert type(result.error_in_exec).__name__ == "ExceptionGroup"
    shown = out.stdout + out.stderr
    lines = [line for line in shown.splitlines() if line.strip()]
    assert lines[0] == "NotImplementedError: exercise 1 is not done yet"
    assert lines[1].startswith("  in teller, line 5: deposit()")
    assert lines[2].startswith("  in deposit, line 2: raise NotImplementedError(")
    assert "(ExceptionGroup of 1 error from tasks; %tb prints the full traceback)" in lines[3]
    assert "trio/_core" not in shown and len(lines) == 4
    with capture_output() as out:
        ipython.run_line_magic("tb", "")
    assert "ExceptionGroup" in out.stdout + out.stderr and "_core" in out.stdout + out.stderr


def test_a_group_holding_a_keyboard_interrupt_is_shown_the_usual_way(ipython):
    with capture_output() as out:
        ipython.run_cell("raise BaseExceptionGroup('stop', [KeyboardInterrupt()])")
    assert "Traceback" in out.stdout + out.stderr
