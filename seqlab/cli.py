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
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
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


@command(
    "demo",
    "run a small built-in scenario (tellers racing on one account) and print its trace",
    arg("--seed", type=int, default=1, help="scheduling seed (default 1); try others"),
    arg("--tellers", type=int, default=3, help="number of tellers (default 3)"),
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
    arg("--quick", action="store_true", help="smaller workloads, one repeat (a smoke run)"),
    arg("--json", metavar="FILE", help="also write the results as JSON to FILE"),
    arg("--only", metavar="NAME", action="append", help="only this scenario (repeatable)"),
)
def _bench(args: argparse.Namespace) -> int:
    from . import bench

    try:
        results = bench.run_all(quick=args.quick, only=args.only)
    except ValueError as error:
        print(f"seqlab bench: {error}", file=sys.stderr)
        return 2
    print(f"seqlab bench{' --quick' if args.quick else ''} on {bench.machine()}\n")
    print(bench.format_table(results))
    if args.json:
        with open(args.json, "w") as file:
            file.write(bench.to_json(results, quick=args.quick))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
