"""The ``seqlab`` command.

Each subcommand is one function decorated with :func:`command`; its arguments are declared
with :func:`arg`. Adding a subcommand is writing one such function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    handler: Handler
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]


_COMMANDS: dict[str, _Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One argument of a subcommand, with :meth:`argparse.ArgumentParser.add_argument`'s args."""
    return flags, kwargs


def command(
    name: str, help: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]
) -> Callable[[Handler], Handler]:
    """Register ``handler(args) -> exit code`` as ``seqlab NAME``."""

    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = _Command(name, help, handler, arguments)
        return handler

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqlab",
        description="seqlab: a lab for ordering primitives on trio.",
    )
    parser.add_argument("--version", action="version", version=f"seqlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for cmd in _COMMANDS.values():
        # argparse %-formats help strings; the magics are named with a literal %.
        p = sub.add_parser(cmd.name, help=cmd.help.replace("%", "%%"), description=cmd.help)
        for flags, kwargs in cmd.arguments:
            p.add_argument(*flags, **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return _COMMANDS[args.command].handler(args)


# --------------------------------------------------------------------------- subcommands


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _bound(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


@command(
    "explore",
    "explore the schedules of your own async function (MODULE:FUNCTION) and report races",
    arg("target", metavar="MODULE:FUNCTION", help="e.g. myapp.tests:transfer_race"),
    arg("--strategy", default="auto", help="auto (default), random, delay, pct or exhaustive"),
    arg("--bound", type=_bound, default=None, help="delays (delay, exhaustive) or depth (pct)"),
    arg("--runs", type=_positive, default=100, help="schedules to run (default 100)"),
    arg("--workers", type=_positive, default=1, help="processes to run them in (default 1)"),
    arg("--real-time", action="store_true", help="use the real clock, not virtual time"),
)
def _explore(args: argparse.Namespace) -> int:
    import importlib

    from .runtime import explore
    from .schedule import STRATEGIES

    module_name, _, attribute = args.target.partition(":")
    if not module_name or not attribute:
        print(f"seqlab explore: expected MODULE:FUNCTION, got {args.target!r}", file=sys.stderr)
        return 2
    if args.strategy not in STRATEGIES:
        names = ", ".join(STRATEGIES)
        print(f"seqlab explore: --strategy must be one of {names}", file=sys.stderr)
        return 2
    sys.path.insert(0, "")
    try:
        fn: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as exc:
        print(f"seqlab explore: cannot find {args.target}: {exc}", file=sys.stderr)
        return 2
    try:
        result = explore(
            fn,
            seeds=range(args.runs),
            strategy=args.strategy,
            bound=args.bound,
            workers=args.workers,
            virtual_time=not args.real_time,
        )
    except (TypeError, ValueError) as exc:
        print(f"seqlab explore: {exc}", file=sys.stderr)
        return 2
    print(result)
    for label, coverage in result.by_strategy.items():
        print(
            f"  {label}: {coverage.runs} runs, {coverage.schedules} distinct schedules, "
            f"{coverage.failures} failed"
        )
    if result.ok:
        return 0
    failure = result.failures[0].shrink()
    print()
    print(failure.explain())
    print(f"\nschedule: {failure.schedule}")
    return 1


@command(
    "demo",
    "run a small built-in scenario (tellers racing on one account) and print its trace",
    arg("--seed", type=int, default=1, help="scheduling seed (default 1); try others"),
    arg("--tellers", type=int, default=3, help="number of tellers (default 3)"),
    arg(
        "--perfetto",
        metavar="FILE",
        default=None,
        help="also write the trace as Chrome trace-event JSON to FILE (open it in "
        "https://ui.perfetto.dev or chrome://tracing)",
    ),
)
def _demo(args: argparse.Namespace) -> int:
    from . import Recorder, run
    from .examples.bank import deposits

    if args.tellers < 1:
        print("seqlab demo: --tellers must be at least 1", file=sys.stderr)
        return 2
    recorder = Recorder()
    balance = run(deposits, args.tellers, seed=args.seed, recorder=recorder)
    print(f"seed {args.seed}: {args.tellers} tellers deposit 1 each into an empty account\n")
    print(recorder.to_text())
    verdict = "correct" if balance == args.tellers else "a deposit was lost (a race)"
    print(f"final balance: {balance} (expected {args.tellers}): {verdict}")
    print(f"replay exactly: seqlab demo --seed {args.seed} --tellers {args.tellers}")
    if args.perfetto is not None:
        import json

        with open(args.perfetto, "w", encoding="utf-8") as f:
            json.dump(recorder.to_perfetto(), f)
        print(f"wrote {args.perfetto}: open it in https://ui.perfetto.dev")
    return 0


@command(
    "install-kernel",
    'install the Jupyter kernel "Python 3 (seqlab)": ipykernel with %seqlab loaded and one '
    "persistent trio loop",
    arg("--user", action="store_true", help="install for the current user only"),
    arg("--sys-prefix", action="store_true", help="install into this Python environment"),
    arg("--prefix", metavar="DIR", default=None, help="install into DIR/share/jupyter/kernels"),
)
def _install_kernel(args: argparse.Namespace) -> int:
    from .notebook.kernel import DISPLAY_NAME, install_kernel

    if sum([args.user, args.sys_prefix, args.prefix is not None]) > 1:
        print(
            "seqlab install-kernel: give at most one of --user, --sys-prefix, --prefix",
            file=sys.stderr,
        )
        return 2
    path = install_kernel(user=args.user, sys_prefix=args.sys_prefix, prefix=args.prefix)
    print(f"installed kernelspec seqlab ({DISPLAY_NAME}) in {path}")
    return 0


@command(
    "bench",
    "measure each primitive against its peers and print one table of ratios",
    arg("--quick", action="store_true", help="smaller workloads, 3 pairs a row (a smoke run)"),
    arg("--json", metavar="FILE", help="also write the results as JSON to FILE"),
    arg("--only", metavar="NAME", action="append", help="only this scenario (repeatable)"),
    arg(
        "--pairs",
        metavar="N",
        type=int,
        default=None,
        help="interleaved seqlab/peer pairs per row; the row's ratio is their median "
        "(default 5, 3 with --quick)",
    ),
)
def _bench(args: argparse.Namespace) -> int:
    from . import bench

    load_before = bench.load_average()
    try:
        results = bench.run_all(quick=args.quick, only=args.only, pairs=args.pairs)
    except ValueError as error:
        print(f"seqlab bench: {error}", file=sys.stderr)
        return 2
    load = (load_before, bench.load_average())
    print(f"seqlab bench{' --quick' if args.quick else ''} on {bench.machine()}")
    print(f"load average {load[0]:.1f} before, {load[1]:.1f} after; ratios: median of pairs\n")
    print(bench.format_table(results))
    if args.json:
        with open(args.json, "w") as file:
            file.write(bench.to_json(results, quick=args.quick, pairs=args.pairs, load=load))
    return 0


@command(
    "release",
    "write student versions of lesson source notebooks (solutions and hidden tests removed)",
    arg("sources", nargs="+", metavar="SOURCE", help="source notebook path or lesson ID"),
    arg("--out", metavar="DIR", required=True, help="directory for the student notebooks"),
    arg("--lessons", metavar="DIR", help="folder of lesson sources that IDs are looked up in"),
)
def _release(args: argparse.Namespace) -> int:
    from .grading.commands import release_command

    return release_command(args)


@command(
    "grade",
    "grade submitted notebooks against a lesson's source in a sandbox, one per submission",
    arg("submissions", nargs="+", metavar="SUBMISSION", help="submitted .ipynb files"),
    arg(
        "--lesson",
        metavar="ID",
        help="lesson ID or source notebook path (default: each notebook's metadata.seqlab.lesson)",
    ),
    arg(
        "--lessons",
        metavar="DIR",
        help="folder of lesson sources (default: the checkout's lessons/)",
    ),
    arg("--out", metavar="FILE", help="write results here (default: stdout)"),
    arg(
        "--format",
        choices=["gradescope", "json", "text"],
        default=None,
        help="gradescope (one submission's results.json), json (a batch) or text",
    ),
    arg("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)"),
    arg("--timeout", type=float, default=60.0, help="seconds per cell (default 60)"),
    arg(
        "--total-timeout",
        type=float,
        default=None,
        help="seconds per submission (default 10 x --timeout)",
    ),
    arg(
        "--memory",
        type=int,
        default=2048,
        metavar="MIB",
        help="memory limit in MiB for each submission's sandbox (default 2048)",
    ),
    arg(
        "--hidden-visibility",
        choices=["hidden", "after_due_date", "after_published", "visible"],
        default="after_due_date",
        help="Gradescope visibility of checks with hidden parts (default after_due_date)",
    ),
)
def _grade(args: argparse.Namespace) -> int:
    from .grading.commands import grade_command

    return grade_command(args)


@command(
    "gradescope-bundle",
    "write a Gradescope autograder.zip (setup.sh, run_autograder, lesson, seqlab wheel)",
    arg("lesson", metavar="LESSON", help="lesson ID or source notebook path"),
    arg("--out", metavar="ZIP", default="autograder.zip", help="default autograder.zip"),
    arg("--wheel", metavar="WHL", help="bundle this seqlab wheel instead of building one"),
    arg("--timeout", type=float, default=60.0, help="seconds per cell (default 60)"),
    arg("--memory", type=int, default=2048, metavar="MIB", help="sandbox memory limit in MiB"),
    arg(
        "--hidden-visibility",
        choices=["hidden", "after_due_date", "after_published", "visible"],
        default="after_due_date",
        help="Gradescope visibility of checks with hidden parts (default after_due_date)",
    ),
)
def _gradescope_bundle(args: argparse.Namespace) -> int:
    from .grading.commands import bundle_command

    return bundle_command(args)


def _port(text: str) -> int:
    """A TCP port, 1-65535. JupyterLab would quietly pick another port for a bad one and the
    link printed would lead nowhere."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a port is an int from 1 to 65535, got {text!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is an int from 1 to 65535, got {port}")
    return port


@command(
    "lab",
    "copy the lessons (student versions) into DIR, make sure the seqlab kernel is installed, "
    "and start JupyterLab there",
    arg(
        "dir",
        nargs="?",
        default="seqlab-lessons",
        metavar="DIR",
        help="working folder for your copies of the lessons (default ./seqlab-lessons); "
        "lessons already there are kept, never overwritten",
    ),
    arg("--no-browser", action="store_true", help="start the server without opening a browser"),
    arg(
        "--port",
        type=_port,
        default=None,
        help="port for JupyterLab, 1-65535 (default: its own choice)",
    ),
)
def _lab(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    from pathlib import Path

    from .lessons import copy_student_versions, ensure_kernel, jupyterlab_command, lesson_sources

    if importlib.util.find_spec("jupyterlab") is None:
        print(
            "seqlab lab: JupyterLab is not installed; install it with: pip install 'seqlab[lab]'",
            file=sys.stderr,
        )
        return 1
    if not lesson_sources():
        print("seqlab lab: no lessons found in the installed seqlab package", file=sys.stderr)
        return 1
    workdir = Path(args.dir).expanduser().resolve()
    try:
        copied, kept = copy_student_versions(workdir)
    except NotADirectoryError:
        print(f"seqlab lab: {workdir} exists and is not a directory", file=sys.stderr)
        return 2
    if copied:
        print(f"copied {len(copied)} lessons into {workdir}: {', '.join(copied)}")
    if kept:
        print(f"kept your own copies of: {', '.join(kept)}")
    installed = ensure_kernel()
    if installed is not None:
        print(f"installed the seqlab kernel in {installed}")

    command_line = jupyterlab_command(workdir, no_browser=args.no_browser, port=args.port)
    print("starting JupyterLab; stop it with Ctrl-C")
    sys.stdout.flush()
    if os.name == "posix":
        os.chdir(workdir)
        os.execv(sys.executable, command_line)
    import subprocess

    try:
        return subprocess.call(command_line, cwd=workdir)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
