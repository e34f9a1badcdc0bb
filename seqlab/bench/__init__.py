"""``seqlab bench``: each primitive measured against fair peers, as ratios taken in one run.

Absolute times drift on shared machines; ratios measured side by side in one process do not
(much), and CPU-bound rows are timed in CPU seconds of this process (:data:`cpu_time`). Each :class:`Comparison` times a seqlab workload and a peer workload in interleaved
pairs (seqlab, peer, seqlab, peer, ...): each pair gives one ratio, and the row's ratio is the
median of at least five pairs (three with ``--quick``), with the smallest and largest kept in
the JSON. A row passes on its median:

- ``"faster"``: seqlab must do at least ``target`` times the peer's work per second;
- ``"overhead"``: seqlab may cost at most ``target`` times what the peer costs.

A :class:`Scaling` row measures one workload at several sizes ``n`` (interleaved the same
way) and checks that the cost per unit stays flat: its ratio is the largest per-unit cost at a
bigger ``n`` over the per-unit cost at the smallest ``n``. A :class:`Limit` is an absolute
target with no peer.

Scenario modules live in this package and register rows with :func:`comparison`,
:func:`scaling` and :func:`limit` when imported; every module of the package is imported by
:func:`run_all`, so adding a scenario is adding a module. Peers are what a user would write to
do the same job well; a peer kept from older versions of this bench is an info row (no target)
with "(old)" in its name.
"""

from __future__ import annotations

import gc
import importlib
import json
import multiprocessing
import os
import pkgutil
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import trio

__all__ = [
    "Comparison",
    "Limit",
    "Result",
    "Scaling",
    "comparison",
    "limit",
    "scaling",
    "run_all",
    "format_table",
    "to_json",
]

Workload = Callable[[bool], float]
"""A workload takes ``quick`` and returns the seconds one run took (it times itself)."""

SizedWorkload = Callable[[int, bool], tuple[float, int]]
"""A scaling workload takes ``(n, quick)`` and returns ``(seconds, units of work done)``."""

PAIRS = 5
QUICK_PAIRS = 3

SCALING_TIMEOUT = 120.0
"""Seconds one size of a scaling row may take (wall clock) before it is stopped and fails:
a cost that grows faster than the work can take hours at n = 100,000."""


@dataclass(frozen=True)
class Comparison:
    group: str
    name: str
    seqlab: Workload
    peer: Workload
    peer_name: str
    kind: Literal["faster", "overhead"]
    target: float | None
    unit: str
    ops: Callable[[bool], int]


@dataclass(frozen=True)
class Scaling:
    """``measure(n, quick)`` at each of ``sizes`` (``quick_sizes`` with ``--quick``): the cost
    per unit at the larger sizes may be at most ``target`` times the cost at the smallest."""

    group: str
    name: str
    measure: SizedWorkload
    unit: str
    target: float | None
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]


@dataclass(frozen=True)
class Limit:
    """An absolute target with no peer: ``measure(quick)`` must stay at most ``target``
    (or, with ``target=None``, is reported for information). ``heavy`` ones run only when
    asked for by name or in a full run, never in ``--quick``."""

    group: str
    name: str
    measure: Callable[[bool], float]
    unit: str
    target: float | None
    heavy: bool


@dataclass(frozen=True)
class Result:
    """One row.

    For a :class:`Comparison`, ``seqlab`` and ``peer_value`` are the median per-operation
    costs in microseconds, ``pairs`` the ratio of each interleaved pair, ``ratio`` (also
    ``median``) their median, ``min`` and ``max`` their extremes. For a :class:`Scaling` row,
    ``points`` maps each size to its median cost per unit (microseconds), ``seqlab`` is the
    cost at the largest size and ``peer_value`` at the smallest. For a :class:`Limit`,
    ``seqlab`` is the measured value in ``unit``.
    """

    group: str
    scenario: str
    peer: str
    seqlab: float
    peer_value: float | None
    unit: str
    kind: str
    ratio: float | None
    target: float | None
    passed: bool | None
    pairs: list[float] = field(default_factory=list)
    median: float | None = None
    min: float | None = None
    max: float | None = None
    points: dict[str, float] = field(default_factory=dict)


_COMPARISONS: list[Comparison | Limit | Scaling] = []


def comparison(
    group: str,
    name: str,
    *,
    peer_name: str,
    kind: Literal["faster", "overhead"],
    target: float | None,
    unit: str,
    ops: Callable[[bool], int],
    peer: Workload,
) -> Callable[[Workload], Workload]:
    """Register the decorated seqlab workload against ``peer``."""

    def register(fn: Workload) -> Workload:
        _COMPARISONS.append(Comparison(group, name, fn, peer, peer_name, kind, target, unit, ops))
        return fn

    return register


def scaling(
    group: str,
    name: str,
    *,
    unit: str,
    target: float | None = 1.5,
    sizes: tuple[int, ...] = (10, 1_000, 100_000),
    quick_sizes: tuple[int, ...] = (10, 1_000, 10_000),
) -> Callable[[SizedWorkload], SizedWorkload]:
    """Register the decorated ``measure(n, quick) -> (seconds, units)`` as a scaling row."""

    def register(fn: SizedWorkload) -> SizedWorkload:
        _COMPARISONS.append(Scaling(group, name, fn, unit, target, sizes, quick_sizes))
        return fn

    return register


def limit(
    group: str, name: str, *, unit: str, target: float | None, heavy: bool = False
) -> Callable[[Callable[[bool], float]], Callable[[bool], float]]:
    """Register the decorated measurement, which must stay at most ``target`` ``unit``."""

    def register(fn: Callable[[bool], float]) -> Callable[[bool], float]:
        _COMPARISONS.append(Limit(group, name, fn, unit, target, heavy))
        return fn

    return register


cpu_time = time.process_time
"""The clock of CPU-bound rows: this process's CPU seconds. On a shared machine other
processes barely move it, where they can double wall-clock times; rows whose work is waiting
(a handler that sleeps) time themselves with ``time.perf_counter`` instead."""


def timed_trio(async_fn: Callable[[], object], **kwargs: object) -> float:
    """CPU seconds ``trio.run(async_fn)`` takes, measured inside the run (startup excluded)."""

    async def main() -> float:
        start = cpu_time()
        await async_fn()  # type: ignore[misc]
        return cpu_time() - start

    return trio.run(main, **kwargs)  # type: ignore[arg-type]


def _isolated(workload: Callable[[], float]) -> float:
    """Run ``workload`` with what earlier scenarios left on the heap out of the GC's way.

    Without this, a scenario's garbage-collection cost grows with everything imported or kept
    alive before it (a full collection scans the whole heap), and results depend on the order.
    """
    gc.collect()
    gc.freeze()
    try:
        return workload()
    finally:
        gc.unfreeze()


def _check_pairs(pairs: int | None, quick: bool) -> int:
    if pairs is None:
        return QUICK_PAIRS if quick else PAIRS
    if isinstance(pairs, bool) or not isinstance(pairs, int):
        raise TypeError(f"pairs must be an int, got {type(pairs).__name__} {pairs!r}")
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1, got {pairs}")
    return pairs


def _spread(ratios: Sequence[float]) -> dict[str, float | list[float]]:
    """The JSON fields that show how a row's pairs agree."""
    return {
        "pairs": [round(r, 4) for r in ratios],
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }


def measure(
    c: Comparison | Limit | Scaling,
    quick: bool,
    pairs: int | None = None,
    *,
    timeout: float = SCALING_TIMEOUT,
) -> Result:
    """Measure one row: ``pairs`` interleaved pairs (default 5, or 3 with ``quick``); a
    scaling row measures each size in a process of its own, for at most ``timeout`` s."""
    count = _check_pairs(pairs, quick)
    if isinstance(c, Limit):
        value = c.measure(quick)
        passed = None if c.target is None else value <= c.target
        ratio = None if c.target is None else value / c.target
        return Result(c.group, c.name, "-", value, None, c.unit, "limit", ratio, c.target, passed)
    if isinstance(c, Scaling):
        return _measure_scaling(c, quick, count, timeout)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(count):
        # Interleaved: drift in the machine's speed hits both sides of a pair alike.
        ours.append(_isolated(lambda: c.seqlab(quick)))
        theirs.append(_isolated(lambda: c.peer(quick)))
    if c.kind == "faster":
        ratios = [b / a for a, b in zip(ours, theirs, strict=True)]
    else:
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    spread = _spread(ratios)
    ratio = statistics.median(ratios)
    if c.target is None:
        passed = None
    else:
        passed = ratio >= c.target if c.kind == "faster" else ratio <= c.target
    ops = c.ops(quick)
    return Result(
        c.group,
        c.name,
        c.peer_name,
        statistics.median(ours) / ops * 1e6,
        statistics.median(theirs) / ops * 1e6,
        c.unit,
        c.kind,
        ratio,
        c.target,
        passed,
        **spread,  # type: ignore[arg-type]
    )


def _in_child(c: Scaling, n: int, quick: bool, timeout: float) -> float | None:
    """Cost per unit of ``c`` at size ``n``, measured in a forked process (its memory and
    its garbage go with it); ``None`` if it took longer than ``timeout`` seconds."""

    def one() -> float:
        seconds, units = c.measure(n, quick)
        return seconds / units

    try:
        context = multiprocessing.get_context("fork")
    except ValueError:  # no fork on this platform: measure here, without a time limit
        return _isolated(one)
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        send.send(_isolated(one))

    process = context.Process(target=child, daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(timeout):
            return None
        cost: float = receive.recv()
        return cost
    except EOFError:
        raise RuntimeError(f"{c.group}: {c.name} at n={n:,} failed in its process") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receive.close()


def _measure_scaling(c: Scaling, quick: bool, count: int, timeout: float) -> Result:
    sizes = c.quick_sizes if quick else c.sizes
    costs: dict[int, list[float]] = {n: [] for n in sizes}
    ratios = []
    too_slow: int | None = None
    for _ in range(count):
        round_costs = {}
        for n in sizes:
            cost = _in_child(c, n, quick, timeout)
            if cost is None:
                too_slow = n
                break
            round_costs[n] = cost
            costs[n].append(cost)
        if too_slow is not None:
            break
        ratios.append(max(round_costs[n] for n in sizes[1:]) / round_costs[sizes[0]])
    points = {f"{n}": statistics.median(costs[n]) * 1e6 for n in sizes if costs[n]}
    name = c.name
    if too_slow is not None:
        # Report what was measured; the row fails.
        name = f"{c.name} [n={too_slow:,} took over {timeout:g} s: stopped]"
        largest = max(int(n) for n in points)
        ratios = [points[f"{largest}"] / points[f"{sizes[0]}"]] if largest != sizes[0] else [0.0]
    ratio = statistics.median(ratios)
    return Result(
        c.group,
        name,
        f"n={sizes[0]:,}",
        points[max(points, key=int)],
        points[f"{sizes[0]}"],
        c.unit,
        "scaling",
        ratio,
        c.target,
        False if too_slow is not None else None if c.target is None else ratio <= c.target,
        points=points,
        **_spread(ratios),  # type: ignore[arg-type]
    )


SUPPORT_MODULES = frozenset({"scenarios"})


def scenario_modules() -> list[str]:
    """The package's scenario modules, in name order: every module but the support ones."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_") and info.name not in SUPPORT_MODULES
    )


def _load_scenarios() -> None:
    for name in scenario_modules():
        importlib.import_module(f"{__name__}.{name}")  # registers its rows


def groups() -> list[str]:
    _load_scenarios()
    return sorted({c.group for c in _COMPARISONS})


def run_all(
    *,
    quick: bool = False,
    only: Iterable[str] | None = None,
    progress: bool = False,
    pairs: int | None = None,
) -> list[Result]:
    """Measure every registered row (or those whose group is in ``only``), each from
    ``pairs`` interleaved pairs (default 5, or 3 with ``quick``)."""
    _check_pairs(pairs, quick)
    _load_scenarios()
    wanted = set(only) if only is not None else None
    if wanted is not None:
        unknown = wanted - {c.group for c in _COMPARISONS}
        if unknown:
            raise ValueError(
                f"only: unknown scenario {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(groups())}"
            )
    results = []
    for c in _COMPARISONS:
        skip_heavy = quick and isinstance(c, Limit) and c.heavy
        if (wanted is None and not skip_heavy) or (wanted is not None and c.group in wanted):
            if progress:
                print(f"  measuring {c.group}: {c.name} ...", flush=True)
            results.append(measure(c, quick, pairs))
    return results


def _cells(r: Result) -> tuple[str, str, str, str, str, str]:
    verdict = {True: "pass", False: "FAIL", None: "-"}[r.passed]
    name = f"{r.group}: {r.scenario}"
    if r.kind == "limit":
        target = "(info)" if r.target is None else f"<= {r.target:g} {r.unit}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x of limit"
        return name, f"{r.seqlab:.2f} {r.unit}", "-", ratio, target, verdict
    assert r.peer_value is not None and r.ratio is not None
    if r.target is None:
        target = "(info)"
    else:
        target = f">= {r.target:g}x" if r.kind == "faster" else f"<= {r.target:g}x"
    word = {"faster": "faster", "overhead": "cost", "scaling": "growth"}[r.kind]
    spread = "" if r.min is None or r.max is None else f" ({r.min:.2f}-{r.max:.2f})"
    ours = f"{r.seqlab:.2f} us/{r.unit}"
    if r.kind == "scaling":
        ours = f"n={int(max(r.points, key=int)):,}: {ours}"
    return (
        name,
        ours,
        f"{r.peer}: {r.peer_value:.2f} us/{r.unit}",
        f"{r.ratio:.2f}x {word}{spread}",
        target,
        verdict,
    )


def format_table(results: list[Result]) -> str:
    """The results as one aligned table: scenario, seqlab, peer, ratio, target, pass/fail."""
    header = ("scenario", "seqlab", "peer", "ratio", "target", "result")
    rows = [header, *(_cells(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    """Python, trio, the CPU and how many cores: what the numbers depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return (
        f"{platform.python_implementation()} {platform.python_version()}, trio {trio.__version__}, "
        f"{cpu}, {os.cpu_count()} cores, {platform.system()}"
    )


def load_average() -> float:
    """The machine's one-minute load average (0.0 where the system does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def to_json(
    results: list[Result],
    *,
    quick: bool,
    pairs: int | None = None,
    load: tuple[float, float] | None = None,
) -> str:
    """The results with the conditions they were taken in: the machine, its CPU count, the
    pairs per row and the load average before and after the run."""
    return json.dumps(
        {
            "machine": machine(),
            "quick": quick,
            "pairs": _check_pairs(pairs, quick),
            "cpus": os.cpu_count() or 1,
            "load": list(load) if load is not None else [load_average()] * 2,
            "clock": "process CPU time (wall time for rows that wait)",
            "results": [asdict(r) for r in results],
        },
        indent=2,
    )
