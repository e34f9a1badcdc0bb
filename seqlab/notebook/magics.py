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
import dataclasses
import difflib
import itertools
import json
import linecache
import shlex
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn

import trio
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .. import __version__
from ..runtime import Deadlock, explore, last_seed, run
from ..schedule import STRATEGIES, Schedule, make_strategy
from ..stepper import STALE_SYNTAX
from ..trace import Recorder
from ._report import SCENARIO_FILE_PREFIX, describe_error, leaves, safe_repr
from .kernel import current_loop

__all__ = ["SeqlabMagics", "USAGE", "VIEWS", "compile_scenario"]

VIEWS = ("timeline", "barrier", "convoy", "ring", "text", "none")

_counter = itertools.count(1)


#: A long text trace in the notebook shows this many lines at its start and at its end.
TRACE_HEAD = 50
TRACE_TAIL = 50
TRACE_SLACK = 20  # a trace only this much longer is shown whole (no point cutting 3 lines)


def cap_lines(text: str, show_all: str, *, head: int = TRACE_HEAD, tail: int = TRACE_TAIL) -> str:
    """``text`` with its middle lines replaced by one line saying how many were left out.

    A 100,000-event trace is megabytes of notebook output that nobody scrolls through; the
    start and the end are what people read, and ``show_all`` (a magic call) prints the rest.
    """
    lines = text.splitlines(keepends=True)
    if len(lines) <= head + tail + TRACE_SLACK:
        return text
    omitted = len(lines) - head - tail
    return (
        "".join(lines[:head])
        + f"... {omitted} lines omitted ({show_all} prints all {len(lines)}) ...\n"
        + "".join(lines[-tail:])
    )


# --------------------------------------------------------------------------- arguments
#
# Each subcommand has a parser factory in _PARSERS. To add an option, add one add_argument
# call to its factory: -h, the usage line in USAGE and %seqlab help follow, and the rules
# below (no abbreviations, no repeats, errors fail the cell) apply to it as well.


class _HelpShown(Exception):
    """``-h`` printed a subcommand's help: nothing else to do for this cell."""


def _usage_error(prog: str, message: str) -> UsageError:
    return UsageError(f"{prog}: {message} (see {prog} -h)")


class _Parser(argparse.ArgumentParser):
    """argparse for one subcommand, shaped for a magic.

    An error raises IPython's ``UsageError``: the cell fails (error status, so Run All and
    nbclient stop) and shows one line, never a traceback, and the kernel process never exits.
    Options cannot be abbreviated (``--se`` is not ``--seed``), an option given twice is an
    error rather than "the last one wins", and ``-h`` prints the help.
    """

    def __init__(self, subcommand: str, description: str, *, cell: bool = False) -> None:
        super().__init__(
            prog=("%%seqlab " if cell else "%seqlab ") + subcommand,
            description=description,
            allow_abbrev=False,
            formatter_class=_Formatter,
        )
        self.subcommand = subcommand
        self.given: set[str] = set()
        for name in (None, "store"):
            self.register("action", name, _StoreOnce)
        self.register("action", "store_true", _StoreTrueOnce)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            for word in message.split(": ", 1)[1].split():
                option = word.split("=", 1)[0]
                full = [o for o in self._option_string_actions if o.startswith(option)]
                if option.startswith("--") and len(full) == 1:
                    message += f"; options are not abbreviated: write {full[0]}"
                    break
        raise _usage_error(self.prog, message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # Only -h ends a parse without an error; argparse would exit the kernel's process.
        if status:
            raise _usage_error(self.prog, message or "invalid arguments")
        raise _HelpShown

    def parse(self, argv: list[str]) -> argparse.Namespace:
        self.given = set()
        return self.parse_args(argv)

    def usage_line(self) -> str:
        return " ".join(self.format_usage().split()).removeprefix("usage: ")


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        # A fixed width: help text must not depend on the terminal the kernel started from.
        super().__init__(prog, width=88, max_help_position=28)


def _once(parser: argparse.ArgumentParser, action: argparse.Action, option: str | None) -> None:
    if isinstance(parser, _Parser) and option is not None:
        if action.dest in parser.given:
            parser.error(f"argument {'/'.join(action.option_strings)}: given twice")
        parser.given.add(action.dest)


class _StoreOnce(argparse._StoreAction):
    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        _once(parser, self, option)
        super().__call__(parser, namespace, values, option)


class _StoreTrueOnce(argparse._StoreTrueAction):
    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        _once(parser, self, option)
        super().__call__(parser, namespace, values, option)


def _int_at_least(least: int, what: str = "an int") -> Callable[[str], int]:
    """An argparse type: an int >= ``least``, refused with one line otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} >= {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{what} >= {least}, got {value}")
        return value

    return parse


# A seed is >= 0: random.Random(-5) would silently be Random(5).
_seed = _int_at_least(0, "a seed is an int")
_positive = _int_at_least(1, "expected an int")
_bound = _int_at_least(0, "expected an int")


def _seed_or_schedule(text: str) -> int | str:
    """A seed (an int >= 0) or a schedule string (``s1:...``, from a failure's report)."""
    if text.startswith("s1:"):
        try:
            Schedule.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    try:
        return _seed(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a seed (an int >= 0) or a schedule (s1:...), got {text!r}"
        ) from None


def _goal(text: str) -> Any:
    """A level's goal: fail, deadlock or stale:TASK[@OBJECT] (see seqlab.stepper.StaleRead)."""
    from ..stepper import parse_goal

    try:
        return parse_goal(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected fail, deadlock or {STALE_SYNTAX}, got {text!r}"
        ) from None


def _strategy_option(p: _Parser, default: str | None) -> None:
    p.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        default=default,
        metavar="|".join(STRATEGIES),
        help="how schedules are chosen (explore: auto; one run: random)",
    )


def _status_parser() -> _Parser:
    return _Parser("status", "The trio loop, the last seed, clock and trace.")


def _run_parser() -> _Parser:
    p = _Parser(
        "run",
        "Run the cell's body as async def scenario() under seqlab.run: virtual time, "
        "a seeded schedule, a summary and the trace.",
        cell=True,
    )
    p.add_argument("--seed", type=_seed, default=None, metavar="N", help="schedule seed (0)")
    p.add_argument("--real-time", action="store_true", help="real clock, not virtual time")
    p.add_argument(
        "--explore", type=_positive, default=None, metavar="K", help="try seeds N .. N+K-1"
    )
    _strategy_option(p, None)
    p.add_argument(
        "--bound", type=_bound, default=None, metavar="B", help="delays (delay) or depth (pct)"
    )
    p.add_argument(
        "--view",
        choices=VIEWS,
        default="timeline",
        metavar="|".join(VIEWS),
        help="how to show the trace (timeline)",
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="draw the view once, after the run, instead of live (one output that nbval "
        "compares and nbconvert keeps as it was)",
    )
    return p


def _replay_parser() -> _Parser:
    p = _Parser("replay", "Run the last scenario again with a seed or a failure's schedule.")
    p.add_argument(
        "seed", type=_seed_or_schedule, metavar="SEED|SCHEDULE", help="a seed or s1:... schedule"
    )
    _strategy_option(p, None)
    return p


def _trace_parser() -> _Parser:
    p = _Parser(
        "trace",
        f"Print the last run's trace. A long one shows its first {TRACE_HEAD} and last "
        f"{TRACE_TAIL} lines; --all shows every line.",
    )
    p.add_argument("--json", action="store_true", help="the events as JSON (what views read)")
    p.add_argument("--all", action="store_true", help="every line, however long the trace")
    p.add_argument(
        "--perfetto",
        metavar="FILE",
        default=None,
        help="write the trace as Chrome trace-event JSON to FILE (for ui.perfetto.dev)",
    )
    return p


def _check_parser() -> _Parser:
    p = _Parser("check", "Run a lesson exercise's visible checks against this notebook.")
    p.add_argument("exercise", metavar="EXERCISE_ID", help="e.g. ex0-alarms")
    return p


def _step_parser() -> _Parser:
    p = _Parser(
        "step",
        "You are the scheduler: the cell's body runs as async def scenario(), paused before "
        "every step; a widget shows each task and its line, and its buttons choose who steps.",
        cell=True,
    )
    p.add_argument(
        "--watch",
        default=None,
        metavar="NAMES",
        help="comma-separated names (or expressions) to show between steps, read in the "
        "scenario and then in the notebook",
    )
    p.add_argument(
        "--goal",
        type=_goal,
        default=None,
        metavar="fail|deadlock|" + STALE_SYNTAX,
        help="a level: make the program fail, reach a deadlock, or make TASK write OBJECT "
        "(a traced object, e.g. account) from a stale read: TASK read it, another task wrote "
        "it, then TASK wrote over that",
    )
    return p


def _help_parser() -> _Parser:
    return _Parser("help", "One usage line per subcommand.")


_PARSERS: dict[str, Callable[[], _Parser]] = {
    "status": _status_parser,
    "run": _run_parser,
    "replay": _replay_parser,
    "trace": _trace_parser,
    "check": _check_parser,
    "step": _step_parser,
    "help": _help_parser,
}

#: The subcommands that take a cell body.
_CELL_SUBCOMMANDS = ("run", "step")

#: One usage line per subcommand, from its parser.
USAGE = {name: factory().usage_line() for name, factory in _PARSERS.items()}


@dataclass(frozen=True)
class Scenario:
    """A compiled ``%%seqlab run`` cell and the options it was run with."""

    fn: Callable[[], Coroutine[Any, Any, Any]]
    real_time: bool
    view: str
    strategy: str = "random"
    bound: int | None = None
    static: bool = False  # draw the view after the run instead of live


def compile_scenario(source: str, namespace: dict[str, Any]) -> Callable[[], Any]:
    """Compile ``source`` as the body of ``async def scenario()`` with ``namespace`` as globals.

    A final expression statement becomes ``return <expression>``. Raises :class:`SyntaxError`
    for a body that is not valid as a function body.
    """
    tree = ast.parse(source, SCENARIO_FILE_PREFIX + ">", "exec")
    _refuse_yield(tree)
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


def _refuse_yield(tree: ast.Module) -> None:
    """Raise SyntaxError for a ``yield`` in the body itself (not in a def or lambda inside it).

    Python would turn the scenario into an async generator and complain about its ``return``.
    """
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            error = SyntaxError(
                "'yield' in a scenario: the body runs as async def scenario(), which cannot be "
                "a generator; end with an expression (or return) to give a result"
            )
            error.lineno = node.lineno
            raise error
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def _show_view(kind: str, recorder: Recorder) -> None:
    """Show a finished run's trace as ``kind`` (one of :data:`VIEWS`).

    ``none`` shows nothing and ``text`` prints the trace; the other kinds display a widget
    whose ``text/plain`` fallback keeps the output deterministic.
    """
    if kind == "none":
        return
    if kind == "text":
        print(cap_lines(recorder.to_text(), "%seqlab trace --all"), end="")
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
    """``%seqlab`` (status, replay, trace, check, help), ``%%seqlab run`` and ``%%seqlab step``."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.last_scenario: Scenario | None = None
        self.last_recorder: Recorder | None = None
        self.last_clock: str | None = None
        #: How the last %%seqlab run or replay ended, for %seqlab status.
        self.last_run: str | None = None
        #: The widget of the last %%seqlab step cell (its .level holds the path taken).
        self.last_stepper: Any = None
        # Each %%seqlab step cell's widget, by cell: running the cell again ends the old run.
        self._steppers: dict[str, Any] = {}
        self._own_ns: dict[str, Any] = {}

    @line_cell_magic
    def seqlab(self, line: str, cell: str | None = None) -> None:
        """Run trio scenarios deterministically and look at what each task did.

        ``%%seqlab run [--seed N] [--real-time] [--explore K] [--strategy S] [--bound B]
        [--view KIND]`` runs the cell's body as ``async def scenario()`` under
        :func:`seqlab.run` (virtual time, seed 0 unless given) and prints the seed, the virtual
        duration, the tasks, the events and the trace; ``--view timeline|barrier|convoy|ring``
        shows a live widget instead of the text trace (``--static``: drawn once, after the
        run, which is what a notebook checked with nbval needs), ``--view none`` neither;
        ``--explore K`` runs seeds N .. N+K-1 with the strategy (default ``auto``, which also
        holds tasks back) and explains the simplest failing schedule it finds.
        ``%%seqlab step [--watch NAMES] [--goal fail|deadlock|stale:TASK[@OBJECT]]`` makes you
        the scheduler of the cell's scenario: a widget shows every task and its line, and its
        buttons choose who steps (see :class:`seqlab.notebook.StepperWidget`). ``--goal
        stale:teller-1@account`` is reached when teller-1 writes ``account`` from a stale
        read: it read it, another task wrote it, and teller-1 wrote over that.
        ``%seqlab replay SEED|SCHEDULE`` reruns the last scenario with another seed, or exactly
        the schedule a failure reported.
        ``%seqlab trace [--json]`` prints the last trace (``--json``: what the widgets read);
        ``--perfetto FILE`` writes it for ui.perfetto.dev instead.
        ``%seqlab check EXERCISE_ID`` runs a lesson's visible checks against your code.
        ``%seqlab`` or ``%seqlab status``: the trio loop, the last seed, clock and trace.
        ``%seqlab help`` prints one usage line per subcommand; ``-h`` after a subcommand
        explains its options. A mistyped argument fails the cell with a one-line
        ``UsageError``: options are never abbreviated, never given twice, and seeds are >= 0.
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%seqlab: cannot split the arguments: {exc}") from None
        sub = words[0] if words else "status"
        if sub in ("-h", "--help"):
            print("\n".join(USAGE.values()))
            return
        if cell is not None and (not words or sub.startswith("-")):
            raise UsageError(
                "%%seqlab: a cell body needs a subcommand; to run the body as a scenario, "
                f"put {' '.join(['%%seqlab run', *words])} on the first line"
            )
        factory = _PARSERS.get(sub)
        if factory is None:
            close = difflib.get_close_matches(sub, _PARSERS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(
                f"%seqlab: unknown subcommand {sub!r}; {hint}valid subcommands: "
                + ", ".join(_PARSERS)
            )
        try:
            ns = factory().parse(words[1:])
        except _HelpShown:
            return
        if sub in _CELL_SUBCOMMANDS and cell is None:
            raise UsageError(
                f"%seqlab {sub} is a cell magic: put %%seqlab {sub} on a cell's first line"
            )
        if sub not in _CELL_SUBCOMMANDS and cell is not None:
            raise UsageError(
                f"%%seqlab {sub} takes no cell body; only %%seqlab run and %%seqlab step do"
            )
        if sub == "run":
            assert cell is not None
            self._run(ns, cell)
        elif sub == "step":
            assert cell is not None
            self._step(ns, cell)
        elif sub == "status":
            self._status()
        elif sub == "replay":
            self._replay(ns)
        elif sub == "trace":
            self._trace(ns)
        elif sub == "check":
            from ..grading.selfcheck import self_check

            print(self_check(ns.exercise, self._user_ns))
        elif sub == "help":
            print("\n".join(USAGE.values()))

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
        if self.last_run is not None:
            print(f"last run: {self.last_run}")

    @property
    def _user_ns(self) -> dict[str, Any]:
        """The namespace cells run in: the shell's, or one of our own without a shell."""
        if self.shell is not None:
            return self.shell.user_ns
        return self._own_ns

    def _scenario(self, cell: str) -> Any:
        """The cell's body as an async function of the user's namespace (IPython's input
        transformations applied first); a syntax error is one UsageError line."""
        source = cell
        if self.shell is not None:
            source = self.shell.transform_cell(cell)
        try:
            return compile_scenario(source, self._user_ns)
        except SyntaxError as exc:
            raise UsageError(f"scenario, line {exc.lineno}: SyntaxError: {exc.msg}") from None

    def _run(self, ns: argparse.Namespace, cell: str) -> None:
        fn = self._scenario(cell)
        strategy = ns.strategy or ("random" if ns.explore is None else "auto")
        try:
            # Refuse a bound the strategy takes none of, before anything runs.
            make_strategy(strategy, ns.bound)
        except ValueError as exc:
            raise UsageError(f"%%seqlab run: {exc}") from None
        scenario = Scenario(fn, ns.real_time, ns.view, strategy, ns.bound, ns.static)
        self.last_scenario = scenario
        if ns.explore is None:
            seed = 0 if ns.seed is None else ns.seed
            self._run_once(scenario, seed)
        else:
            self._explore(scenario, ns.seed or 0, ns.explore)

    def _step(self, ns: argparse.Namespace, cell: str) -> None:
        fn = self._scenario(cell)
        try:
            from .stepper_widget import StepperWidget
        except ImportError as exc:
            raise UsageError(
                f"%%seqlab step needs anywidget and ipywidgets ({exc}); install them with "
                "pip install 'seqlab[notebook]' and restart the kernel"
            ) from None
        watch = None if ns.watch is None else [w.strip() for w in ns.watch.split(",")]
        for name in watch or ():
            try:
                compile(name, "<watch>", "eval")
            except SyntaxError:
                raise UsageError(
                    f"%%seqlab step: --watch takes comma-separated names or expressions; "
                    f"cannot read {name!r} in {ns.watch!r}"
                ) from None
        widget = StepperWidget(fn, watch=watch, namespace=self._user_ns, goal=ns.goal)
        key = self._cell_key(cell)
        old = self._steppers.pop(key, None)
        if old is not None:
            old.close()  # its paused program would otherwise wait for a click forever
        self._steppers[key] = self.last_stepper = widget
        widget.show()

    def _cell_key(self, cell: str) -> str:
        """The notebook's id of the running cell (JupyterLab and Notebook 7 send one), else
        the cell's text: what tells a re-run of a cell from another cell."""
        kernel = getattr(self.shell, "kernel", None)
        get_parent = getattr(kernel, "get_parent", None)
        parent = get_parent("shell") if get_parent is not None else None
        metadata = parent.get("metadata", {}) if isinstance(parent, dict) else {}
        cell_id = metadata.get("cellId") if isinstance(metadata, dict) else None
        return f"cell:{cell_id}" if isinstance(cell_id, str) and cell_id else f"text:{cell}"

    def _replay(self, ns: argparse.Namespace) -> None:
        if self.last_scenario is None:
            print("%seqlab replay: no scenario yet; run one with %%seqlab run", file=sys.stderr)
            return
        scenario = self.last_scenario
        if isinstance(ns.seed, str):
            if ns.strategy is not None:
                raise UsageError("%seqlab replay: a schedule replays alone; give no --strategy")
            self._run_once(scenario, None, schedule=ns.seed)
            return
        if ns.strategy is not None:
            scenario = dataclasses.replace(scenario, strategy=ns.strategy, bound=None)
        self._run_once(scenario, ns.seed)

    def _trace(self, ns: argparse.Namespace) -> None:
        if self.last_recorder is None:
            print("%seqlab trace: no trace yet; run a scenario with %%seqlab run", file=sys.stderr)
            return
        rec = self.last_recorder
        if ns.perfetto is not None:
            with open(ns.perfetto, "w", encoding="utf-8") as f:
                json.dump(rec.to_perfetto(), f)
            print(f"wrote {ns.perfetto}: {len(rec)} events; open it in https://ui.perfetto.dev")
            return
        if not ns.json:
            text = rec.to_text()
            print(text if ns.all else cap_lines(text, "%seqlab trace --all"), end="")
        elif ns.all or len(rec) <= TRACE_HEAD + TRACE_TAIL + TRACE_SLACK:
            print(rec.to_json())
        else:
            # One event a line, so that the head and tail can be cut out: a view for reading;
            # --json --all gives the parseable whole.
            events = [json.dumps(e, separators=(",", ":")) for e in json.loads(rec.to_json())]
            lines = "[\n" + ",\n".join(events) + "\n]\n"
            print(cap_lines(lines, "%seqlab trace --json --all", head=TRACE_HEAD + 1), end="")

    # ----------------------------------------------------------------- running

    def _run_once(self, scenario: Scenario, seed: int | None, schedule: str | None = None) -> None:
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
        self.last_run = f"seed {seed}: started, did not finish"
        live = None if scenario.static else _live_view(scenario.view, recorder)
        how: dict[str, Any] = (
            {"schedule": schedule}
            if schedule is not None
            else {"seed": seed, "strategy": scenario.strategy, "bound": scenario.bound}
        )
        try:
            value = run(main, virtual_time=not scenario.real_time, recorder=recorder, **how)
        except BaseException as exc:
            if _interrupted(exc):
                n = _report_run_interrupt(exc, scenario, seed, recorder)
                self.last_run = (
                    f"{_which(seed, schedule)}: interrupted (KeyboardInterrupt) after {n} events; "
                    "%seqlab trace shows the partial trace"
                )
                raise _quiet_interrupt() from None
            if not isinstance(exc, Exception):
                raise
            error = exc
        finally:
            if live is not None:
                live.finish()
        self.last_run = f"{_which(seed, schedule)}: " + (
            "completed"
            if error is None
            else "deadlock"
            if isinstance(error, Deadlock)
            else f"failed ({type(error).__name__})"
        )
        if schedule is not None:
            print(f"schedule: {schedule}")
        elif scenario.strategy != "random":
            print(f"seed: {seed} ({scenario.strategy})")
        else:
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
        elif scenario.static:
            _show_view(scenario.view, recorder)
        if error is not None:
            print()
            print(describe_error(error, recorder), end="")
            if schedule is None and scenario.strategy == "random":
                print(f"replay: %seqlab replay {seed}")
            else:
                print(f"replay: %seqlab replay {recorder.schedule or schedule}")

    def _report_explore_interrupt(
        self, exc: BaseException, scenario: Scenario, count: int, span: str
    ) -> str:
        """Print what an interrupted exploration found; return the line for %seqlab status."""
        explored = getattr(exc, "explored", None)
        print(f"interrupted (KeyboardInterrupt): exploring {count} schedules ({span})")
        if explored is None:
            print("schedules finished before the interrupt: not known (this seqlab's explore")
            print("does not report them)")
            status = f"exploring {count} schedules ({span}): interrupted (KeyboardInterrupt)"
        else:
            failures = list(explored.failures)
            found = f"{len(failures)} failed" if failures else "none failed"
            print(f"schedules finished: {explored.runs} of {count}, {found}")
            status = (
                f"exploring {count} schedules ({span}): interrupted (KeyboardInterrupt) after "
                f"{explored.runs}, {found}"
            )
            if failures:
                print("failing seeds so far: " + _seed_list([f.seed for f in failures]))
                first_failure = failures[0]
                self.last_recorder = first_failure.trace
                print(f"first failure, seed {first_failure.seed} ({first_failure.strategy}):")
                if first_failure.error is not None:
                    print(describe_error(first_failure.error, first_failure.trace), end="")
                print(f"replay: %seqlab replay {first_failure.schedule}")
        seed = getattr(exc, "seed", None)
        if seed is not None:
            print(f"interrupted while running seed {seed}")
        return status

    def _explore(self, scenario: Scenario, first: int, count: int) -> None:
        seeds = range(first, first + count)

        async def scenario_main() -> Any:
            return await scenario.fn()

        scenario_main.__name__ = "scenario"
        span = f"seed {first}" if count == 1 else f"seeds {first}-{first + count - 1}"
        self.last_clock = "real time" if scenario.real_time else "virtual"
        # explore keeps only the failures' traces; an older scenario's trace would mislead.
        self.last_recorder = None
        self.last_run = f"exploring {count} schedules ({span}): started, did not finish"
        try:
            result = explore(
                scenario_main,
                seeds=seeds,
                virtual_time=not scenario.real_time,
                strategy=scenario.strategy,
                bound=scenario.bound,
            )
        except BaseException as exc:
            if not _interrupted(exc):
                raise
            self.last_run = self._report_explore_interrupt(exc, scenario, count, span)
            raise _quiet_interrupt() from None
        self.last_run = f"explored {count} schedules ({span}): " + (
            "all passed" if result.ok else f"{len(result.failures)} failed"
        )
        distinct = f"{result.schedules} distinct, {result.strategy}"
        if result.ok:
            print(f"explored {count} schedules ({span}; {distinct}): all passed")
            return
        failures = result.failures
        print(f"explored {count} schedules ({span}; {distinct}): {len(failures)} failed")
        print("failing seeds: " + _seed_list([f.seed for f in failures]))
        found = failures[0]
        # Shrink it: the fewest decisive choices, said in words, are what a learner can follow.
        first_failure = found.shrink()
        self.last_recorder = first_failure.trace
        print(f"\nfirst failure, seed {found.seed} ({found.strategy}), made as simple as it goes:")
        if first_failure.error is not None:
            print(describe_error(first_failure.error, first_failure.trace), end="")
        print("\n".join(first_failure.explain().splitlines()[:-1]))
        if scenario.view != "none":
            print()
        _show_view(scenario.view, first_failure.trace)
        print(f"replay: %seqlab replay {first_failure.schedule}")


# --------------------------------------------------------------------------- interrupts

#: Lines of the partial trace an interrupted run's summary ends with.
INTERRUPT_TAIL = 5


def _seed_list(seeds: list[int], limit: int = 20) -> str:
    """``seeds`` comma-separated, the first ``limit`` of them and a count of the rest."""
    shown = ", ".join(str(seed) for seed in seeds[:limit])
    return shown + (f", ... ({len(seeds) - limit} more)" if len(seeds) > limit else "")


def _interrupted(error: BaseException) -> bool:
    """Whether ``error`` is, or a group holding, a KeyboardInterrupt (Ctrl-C, or a scenario
    task that raised it)."""
    return any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves(error))


def _quiet_interrupt() -> KeyboardInterrupt:
    """The cell's error after an interrupt summary: KeyboardInterrupt, shown as one line."""
    error = KeyboardInterrupt("the scenario was interrupted; the summary above says where")
    # IPython shows _render_traceback_() instead of the frames (magics, runtime, threading).
    error._render_traceback_ = lambda: [f"KeyboardInterrupt: {error}"]  # type: ignore[attr-defined]
    return error


def _which(seed: int | None, schedule: str | None) -> str:
    return f"seed {seed}" if schedule is None else f"schedule {schedule}"


def _report_run_interrupt(
    error: BaseException, scenario: Scenario, seed: int | None, recorder: Recorder
) -> int:
    """One short summary of an interrupted run: seed, tasks, events, the last trace lines.

    Returns the number of events it reported.
    """
    clock = "real time" if scenario.real_time else "virtual time"
    schedule = getattr(error, "schedule", None)
    print(
        f"interrupted (KeyboardInterrupt): {_which(seed, None if seed is not None else schedule)}, {clock}"
    )
    if schedule is not None:
        print(f"schedule: {schedule}")
    n = len(recorder)  # counted once: the summary describes the first n events
    events = recorder.events[:n]
    tasks = [e.task for e in events if e.primitive == "task" and e.kind == "spawn"]
    print(f"tasks: {len(tasks)} ({', '.join(tasks)})" if tasks else "tasks: 0")
    print(f"events: {n} before the interrupt")
    if n:
        shown = recorder.to_text().splitlines()[max(n - INTERRUPT_TAIL, 0) : n]
        print(f"last {len(shown)} of the partial trace (%seqlab trace shows it all):")
        print("\n".join(shown))
    print(f"replay: %seqlab replay {seed if seed is not None else schedule}")
    return n
