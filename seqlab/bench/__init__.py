"""``seqlab bench``: each primitive measured against its peers, as ratios taken in one run.

Absolute times drift on shared machines; ratios measured side by side in one process do not
(much). Each :class:`Comparison` times a seqlab workload and a peer workload alternately,
keeps the best of a few repeats, and checks the ratio against a target:

- ``"faster"``: seqlab must do at least ``target`` times the peer's work per second;
- ``"overhead"``: seqlab may cost at most ``target`` times what the peer costs.

Scenario modules register comparisons with :func:`comparison`; :func:`run_all` measures them.
"""

from __future__ import annotations

import gc
import json
import math
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import trio

__all__ = [
    "Comparison",
    "Limit",
    "Result",
    "comparison",
    "limit",
    "run_all",
    "format_table",
    "to_json",
]

Workload = Callable[[bool], float]
"""A workload takes ``quick`` and returns the seconds one run took (it times itself)."""


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
    """One row: ``seqlab`` and ``peer`` are per-operation costs in microseconds (for a
    :class:`Comparison`), or ``seqlab`` is the measured value in ``unit`` (for a :class:`Limit`)."""

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


_COMPARISONS: list[Comparison | Limit] = []


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


def limit(
    group: str, name: str, *, unit: str, target: float | None, heavy: bool = False
) -> Callable[[Callable[[bool], float]], Callable[[bool], float]]:
    """Register the decorated measurement, which must stay at most ``target`` ``unit``."""

    def register(fn: Callable[[bool], float]) -> Callable[[bool], float]:
        _COMPARISONS.append(Limit(group, name, fn, unit, target, heavy))
        return fn

    return register


def timed_trio(async_fn: Callable[[], object]) -> float:
    """Seconds ``trio.run(async_fn)`` takes, measured inside the run (startup excluded)."""

    async def main() -> float:
        start = time.perf_counter()
        await async_fn()  # type: ignore[misc]
        return time.perf_counter() - start

    return trio.run(main)


def _isolated(workload: Workload, quick: bool) -> float:
    """Run ``workload`` with what earlier scenarios left on the heap out of the GC's way.

    Without this, a scenario's garbage-collection cost grows with everything imported or kept
    alive before it (a full collection scans the whole heap), and results depend on the order.
    """
    gc.collect()
    gc.freeze()
    try:
        return workload(quick)
    finally:
        gc.unfreeze()


def measure(c: Comparison | Limit, quick: bool) -> Result:
    if isinstance(c, Limit):
        value = c.measure(quick)
        passed = None if c.target is None else value <= c.target
        ratio = None if c.target is None else value / c.target
        return Result(c.group, c.name, "-", value, None, c.unit, "limit", ratio, c.target, passed)
    ours, theirs = math.inf, math.inf
    for _ in range(1 if quick else 3):
        # Alternate, so drift in the machine's speed hits both sides alike; keep the best.
        ours = min(ours, _isolated(c.seqlab, quick))
        theirs = min(theirs, _isolated(c.peer, quick))
    ops = c.ops(quick)
    if c.kind == "faster":
        ratio = theirs / ours
        passed = None if c.target is None else ratio >= c.target
    else:
        ratio = ours / theirs
        passed = None if c.target is None else ratio <= c.target
    return Result(
        c.group,
        c.name,
        c.peer_name,
        ours / ops * 1e6,
        theirs / ops * 1e6,
        c.unit,
        c.kind,
        ratio,
        c.target,
        passed,
    )


def _load_scenarios() -> None:
    from . import scenarios  # noqa: F401  (registers the comparisons)


def groups() -> list[str]:
    _load_scenarios()
    return sorted({c.group for c in _COMPARISONS})


def run_all(
    *, quick: bool = False, only: Iterable[str] | None = None, progress: bool = False
) -> list[Result]:
    """Measure every registered comparison (or those whose group is in ``only``)."""
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
            results.append(measure(c, quick))
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
    return (
        name,
        f"{r.seqlab:.2f} us/{r.unit}",
        f"{r.peer}: {r.peer_value:.2f} us/{r.unit}",
        f"{r.ratio:.2f}x {'faster' if r.kind == 'faster' else 'cost'}",
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
    return (
        f"{platform.python_implementation()} {platform.python_version()}, trio {trio.__version__}, "
        f"{platform.machine()}, {platform.system()}"
    )


def to_json(results: list[Result], *, quick: bool) -> str:
    return json.dumps(
        {"machine": machine(), "quick": quick, "results": [asdict(r) for r in results]},
        indent=2,
    )
