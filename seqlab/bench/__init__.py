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

__all__ = ["Comparison", "Result", "comparison", "run_all", "format_table", "to_json"]

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
class Result:
    group: str
    scenario: str
    peer: str
    seqlab_us_per_op: float
    peer_us_per_op: float
    unit: str
    kind: str
    ratio: float
    target: float | None
    passed: bool | None


_COMPARISONS: list[Comparison] = []


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


def timed_trio(async_fn: Callable[[], object]) -> float:
    """Seconds ``trio.run(async_fn)`` takes, measured inside the run (startup excluded)."""

    async def main() -> float:
        start = time.perf_counter()
        await async_fn()  # type: ignore[misc]
        return time.perf_counter() - start

    return trio.run(main)


def measure(c: Comparison, quick: bool) -> Result:
    ours, theirs = math.inf, math.inf
    for _ in range(1 if quick else 3):
        # Alternate, so drift in the machine's speed hits both sides alike; keep the best.
        gc.collect()
        ours = min(ours, c.seqlab(quick))
        gc.collect()
        theirs = min(theirs, c.peer(quick))
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
        if wanted is None or c.group in wanted:
            if progress:
                print(f"  measuring {c.group}: {c.name} ...", flush=True)
            results.append(measure(c, quick))
    return results


def _target_text(r: Result) -> str:
    if r.target is None:
        return "(info)"
    return f">= {r.target:g}x" if r.kind == "faster" else f"<= {r.target:g}x"


def format_table(results: list[Result]) -> str:
    """The results as one aligned table: scenario, seqlab, peer, ratio, target, pass/fail."""
    header = ("scenario", "seqlab", "peer", "ratio", "target", "result")
    rows = [header]
    for r in results:
        verdict = {True: "pass", False: "FAIL", None: "-"}[r.passed]
        ratio = f"{r.ratio:.2f}x {'faster' if r.kind == 'faster' else 'cost'}"
        rows.append(
            (
                f"{r.group}: {r.scenario}",
                f"{r.seqlab_us_per_op:.2f} us/{r.unit}",
                f"{r.peer}: {r.peer_us_per_op:.2f} us/{r.unit}",
                ratio,
                _target_text(r),
                verdict,
            )
        )
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
