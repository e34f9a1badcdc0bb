"""The ``%seqlab`` line magic and the ``%%seqlab`` cell magic.

``%%seqlab run`` turns its cell into a scenario::

    %%seqlab run --seed 3
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(teller, account, 1, i, name=f"teller-{i}")
    account.balance

The body becomes the body of ``async def scenario()``, run under :func:`seqlab.run` on its own
thread (so it is safe next to the teaching kernel's loop). Namespaces, like a function
defined in a cell: the body reads the notebook's globals (imports, helpers from earlier
cells); names it assigns are local to the scenario and disappear afterwards (declare
``global name`` to keep one). A final expression is the scenario's result and is shown.

Every output is deterministic for a given seed: a summary (seed, clock, virtual duration,
tasks, events), the trace, and errors as short reports rather than tracebacks.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import linecache
import shlex
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import trio
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .. import __version__
from ..runtime import Deadlock, explore, last_seed, run
from ..trace import Recorder
from ._report import SCENARIO_FILE_PREFIX, describe_error, safe_repr
from .kernel import current_loop

__all__ = ["SeqlabMagics", "USAGE", "VIEWS", "compile_scenario"]

VIEWS = ("timeline", "barrier", "convoy", "ring", "text", "none")

USAGE = {
    "status": "%seqlab [status]",
    "run": "%%seqlab run [--seed N] [--real-time] [--explore K] [--view " + "|".join(VIEWS) + "]",
    "replay": "%seqlab replay SEED",
    "trace": "%seqlab trace [--json]",
    "check": "%seqlab check EXERCISE_ID",
    "help": "%seqlab help",
}

_counter = itertools.count(1)


class _Usage(Exception):
    """Bad arguments: reported as a usage line, never as a traceback."""

    def __init__(self, subcommand: str, message: str) -> None:
        super().__init__(message)
        self.subcommand = subcommand


class _Parser(argparse.ArgumentParser):
    def __init__(self, subcommand: str) -> None:
        super().__init__(prog=f"%seqlab {subcommand}", add_help=False, exit_on_error=False)
        self.subcommand = subcommand

    def error(self, message: str) -> Any:  # argparse would exit the kernel's process
        raise _Usage(self.subcommand, message)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive.__name__ = "positive int"


def _run_parser() -> _Parser:
    p = _Parser("run")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--real-time", action="store_true")
    p.add_argument("--explore", type=_positive, default=None, metavar="K")
    p.add_argument("--view", choices=VIEWS, default="timeline")
    return p


def _replay_parser() -> _Parser:
    p = _Parser("replay")
    p.add_argument("seed", type=int)
    return p


def _trace_parser() -> _Parser:
    p = _Parser("trace")
    p.add_argument("--json", action="store_true")
    return p


@dataclass(frozen=True)
class Scenario:
    """A compiled ``%%seqlab run`` cell and the options it was run with."""

    fn: Callable[[], Coroutine[Any, Any, Any]]
    real_time: bool
    view: str


def compile_scenario(source: str, namespace: dict[str, Any]) -> Callable[[], Any]:
    """Compile ``source`` as the body of ``async def scenario()`` with ``namespace`` as globals.

    A final expression statement becomes ``return <expression>``. Raises :class:`SyntaxError`
    for a body that is not valid as a function body.
    """
    tree = ast.parse(source, SCENARIO_FILE_PREFIX + ">", "exec")
    template = ast.parse("async def scenario():\n    pass\n")
    func = template.body[0]
    assert isinstance(func, ast.AsyncFunctionDef)
    body: list[ast.stmt] = list(tree.body) or [ast.Pass()]
    last = body[-1]
    if isinstance(last, ast.Expr):
        body[-1] = ast.copy_location(ast.Return(value=last.value), last)
    func.body = body
    ast.fix_missing_locations(template)
    filename = f"{SCENARIO_FILE_PREFIX} {next(_counter)}>"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    code = compile(template, filename, "exec")
    scope: dict[str, Any] = {}
    exec(code, namespace, scope)
    fn: Callable[[], Any] = scope["scenario"]
    return fn


def _show_view(kind: str, recorder: Recorder) -> None:
    """Show a finished run's trace as ``kind`` (one of :data:`VIEWS`).

    ``none`` shows nothing and ``text`` prints the trace; the other kinds display a widget
    whose ``text/plain`` fallback keeps the output deterministic.
    """
    if kind == "none":
        return
    if kind == "text":
        print(recorder.to_text(), end="")
        return
    from IPython.display import display

    from .widgets import make_view

    view = make_view(kind, recorder)
    view.finish()
    display(view)


def _live_view(kind: str, recorder: Recorder) -> Any:
    """For a widget ``kind``, display a view now that follows ``recorder`` while it fills."""
    if kind in ("none", "text"):
        return None
    from .widgets import make_view

    view = make_view(kind, recorder)
    view.show()
    return view


@magics_class
class SeqlabMagics(Magics):
    """``%seqlab`` (status, replay, trace, help) and ``%%seqlab run``."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.last_scenario: Scenario | None = None
        self.last_recorder: Recorder | None = None
        self.last_clock: str | None = None

    @line_cell_magic
    def seqlab(self, line: str, cell: str | None = None) -> None:
        """Run trio scenarios deterministically and look at what each task did.

        ``%%seqlab run [--seed N] [--real-time] [--explore K] [--view KIND]`` runs the cell's
        body as ``async def scenario()`` under :func:`seqlab.run` (virtual time, seed 0 unless
        given) and prints the seed, the virtual duration, the tasks, the events and the trace;
        ``--view timeline|barrier|convoy|ring`` shows a live widget instead of the text trace,
        ``--view none`` shows neither; ``--explore K`` runs seeds N .. N+K-1 and lists the
        failing ones.
        ``%seqlab replay SEED`` reruns the last scenario with another seed.
        ``%seqlab trace [--json]`` prints the last trace (``--json``: what the widgets read).
        ``%seqlab check EXERCISE_ID`` runs a lesson's visible checks against your code.
        ``%seqlab`` or ``%seqlab status``: the trio loop, the last seed, clock and trace.
        ``%seqlab help`` prints one usage line per subcommand.
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            _print_usage(None, f"cannot split the arguments: {exc}")
            return
        sub = words[0] if words else "status"
        args = words[1:]
        try:
            if sub == "run":
                if cell is None:
                    raise _Usage(
                        "run", "run is a cell magic: put %%seqlab run on a cell's first line"
                    )
                self._run(args, cell)
                return
            if cell is not None and sub in USAGE:
                raise _Usage(sub, f"{sub} takes no cell body; only %%seqlab run does")
            if sub == "status":
                if args:
                    raise _Usage(sub, f"unexpected arguments: {' '.join(args)}")
                self._status()
            elif sub == "replay":
                self._replay(args)
            elif sub == "trace":
                self._trace(args)
            elif sub == "check":
                if len(args) != 1:
                    raise _Usage(sub, "give exactly one exercise id, e.g. %seqlab check ex1")
                from ..grading.selfcheck import self_check

                namespace = self.shell.user_ns if self.shell is not None else {}
                print(self_check(args[0], namespace))
            elif sub == "help":
                print("\n".join(USAGE.values()))
            else:
                print(
                    f"%seqlab: unknown subcommand {sub!r}; valid subcommands: " + ", ".join(USAGE),
                    file=sys.stderr,
                )
        except _Usage as exc:
            _print_usage(exc.subcommand, str(exc))

    # ----------------------------------------------------------------- subcommands

    def _status(self) -> None:
        loop = current_loop()
        if loop is None:
            loop_line = "none (not the seqlab kernel: no persistent trio loop)"
        else:
            loop_line = loop.describe()
        seed = last_seed()
        rec = self.last_recorder
        print(f"seqlab {__version__}")
        print(f"loop: {loop_line}")
        print(f"seed: {'no run yet' if seed is None else seed}")
        print(f"clock: {self.last_clock or 'virtual (the default for %%seqlab run)'}")
        print(f"recorder: {'no trace yet' if rec is None else f'last trace has {len(rec)} events'}")

    def _run(self, argv: list[str], cell: str) -> None:
        ns = _parse(_run_parser(), argv)
        source = cell
        if self.shell is not None:
            source = self.shell.transform_cell(cell)
        namespace = self.shell.user_ns if self.shell is not None else {}
        try:
            fn = compile_scenario(source, namespace)
        except SyntaxError as exc:
            print(f"scenario: SyntaxError: {exc.msg} (line {exc.lineno})", file=sys.stderr)
            return
        scenario = Scenario(fn, ns.real_time, ns.view)
        self.last_scenario = scenario
        if ns.explore is None:
            seed = 0 if ns.seed is None else ns.seed
            self._run_once(scenario, seed)
        else:
            self._explore(scenario, ns.seed or 0, ns.explore)

    def _replay(self, argv: list[str]) -> None:
        ns = _parse(_replay_parser(), argv)
        if self.last_scenario is None:
            print("%seqlab replay: no scenario yet; run one with %%seqlab run", file=sys.stderr)
            return
        self._run_once(self.last_scenario, ns.seed)

    def _trace(self, argv: list[str]) -> None:
        ns = _parse(_trace_parser(), argv)
        if self.last_recorder is None:
            print("%seqlab trace: no trace yet; run a scenario with %%seqlab run", file=sys.stderr)
            return
        print(self.last_recorder.to_json() if ns.json else self.last_recorder.to_text(), end="")
        if ns.json:
            print()

    # ----------------------------------------------------------------- running

    def _run_once(self, scenario: Scenario, seed: int) -> None:
        recorder = Recorder()
        ended: list[float] = []

        async def main() -> Any:
            try:
                return await scenario.fn()
            finally:
                ended.append(trio.current_time())

        main.__name__ = "scenario"
        error: BaseException | None = None
        value: Any = None
        # Set before the run, so that after an interrupt %seqlab trace shows this scenario's
        # partial trace rather than the previous scenario's.
        self.last_recorder = recorder
        self.last_clock = "real time" if scenario.real_time else "virtual"
        live = _live_view(scenario.view, recorder)
        try:
            value = run(main, seed=seed, virtual_time=not scenario.real_time, recorder=recorder)
        except Exception as exc:
            error = exc
        finally:
            if live is not None:
                live.finish()
        print(f"seed: {seed}")
        if scenario.real_time:
            print("clock: real time (timings vary from run to run)")
        else:
            if isinstance(error, Deadlock):
                duration = error.time
            else:
                duration = (
                    ended[0] if ended else (recorder.events[-1].time if len(recorder) else 0.0)
                )
            print(f"clock: virtual, {duration:.3f} s")
        tasks = [e.task for e in recorder.events if e.primitive == "task" and e.kind == "spawn"]
        print(f"tasks: {len(tasks)} ({', '.join(tasks)})" if tasks else "tasks: 0")
        print(f"events: {len(recorder)}")
        if error is None and value is not None:
            print(f"result: {safe_repr(value)}")
        if scenario.view == "text":
            print()
            _show_view("text", recorder)
        if error is not None:
            print()
            print(describe_error(error), end="")
            print(f"replay: %seqlab replay {seed}")

    def _explore(self, scenario: Scenario, first: int, count: int) -> None:
        seeds = range(first, first + count)

        async def scenario_main() -> Any:
            return await scenario.fn()

        scenario_main.__name__ = "scenario"
        result = explore(scenario_main, seeds=seeds, virtual_time=not scenario.real_time)
        self.last_clock = "real time" if scenario.real_time else "virtual"
        # explore keeps only the failures' traces; an older scenario's trace would mislead.
        self.last_recorder = None
        span = f"seed {first}" if count == 1 else f"seeds {first}-{first + count - 1}"
        if result.ok:
            print(f"explored {count} schedules ({span}): all passed")
            return
        failures = result.failures
        print(f"explored {count} schedules ({span}): {len(failures)} failed")
        print("failing seeds: " + ", ".join(str(f.seed) for f in failures))
        first_failure = failures[0]
        self.last_recorder = first_failure.trace
        print(f"\nfirst failure, seed {first_failure.seed}:")
        if first_failure.error is not None:
            print(describe_error(first_failure.error), end="")
        if scenario.view != "none":
            print()
        _show_view(scenario.view, first_failure.trace)
        print(f"replay: %seqlab replay {first_failure.seed}")


# --------------------------------------------------------------------------- helpers


def _parse(parser: _Parser, argv: list[str]) -> argparse.Namespace:
    try:
        ns, extra = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise _Usage(parser.subcommand, str(exc)) from None
    if extra:
        raise _Usage(parser.subcommand, f"unrecognized arguments: {' '.join(extra)}")
    return ns


def _print_usage(subcommand: str | None, message: str) -> None:
    usage = USAGE.get(subcommand or "", "%seqlab help")
    print(f"usage: {usage}\n%seqlab: {message}", file=sys.stderr)
