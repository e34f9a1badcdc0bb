"""How :func:`seqlab.explore` spends its runs: one process, many processes, or a search.

Every run is summarised as an :class:`_Outcome` (plain data, so it can come back from another
process). Failures are then run once more here, with a recorder, to keep their trace and
schedule: a run is deterministic, so the repeat is the same run.
"""

from __future__ import annotations

import concurrent.futures
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

from .runtime import (
    Coverage,
    ExploreResult,
    Failure,
    Interrupted,
    _Attempt,
    _probe,
    _Program,
    _Session,
)
from .schedule import ExhaustiveStrategy, Policy, Probe, Strategy

__all__ = ["explore_program"]


@dataclass(frozen=True)
class _Outcome:
    seed: int
    label: str
    signature: int
    failed: bool


def explore_program(
    program: _Program,
    seeds: list[int],
    strategy: Strategy,
    workers: int,
    executor: concurrent.futures.Executor | None,
) -> ExploreResult:
    if isinstance(strategy, ExhaustiveStrategy):
        return _search(program, strategy, budget=len(seeds))
    done: list[_Outcome] = []
    failures: list[Failure] = []

    def each_schedule(session: _Session) -> None:
        probe, rest = None, seeds
        if strategy.needs_probe:
            if strategy.lockstep_at(seeds[0]):
                # The first schedule is the plain lockstep one: it measures the program too.
                log: list[tuple[int, ...]] = []
                attempt = program.attempt(session, seeds[0], Policy(), record=True, present_log=log)
                probe, rest = Probe.of(log), seeds[1:]
                _keep(seeds[0], attempt)
            else:
                probe = _probe(program, session)
        if rest and (workers > 1 or executor is not None):
            found = _in_processes(program, rest, strategy, probe, workers, executor)
            for o in found:
                done.append(o)
                if o.failed:
                    # Found in another process: run it here to keep its error and schedule.
                    policy = strategy.policy(o.seed, probe or Probe())
                    attempt = program.attempt(session, o.seed, policy, record=True)
                    failures.append(_failure(program, strategy, o.seed, attempt))
            return
        for seed in rest:
            attempt = program.attempt(
                session, seed, strategy.policy(seed, probe or Probe()), record=True
            )
            _keep(seed, attempt)

    def _keep(seed: int, attempt: _Attempt) -> None:
        done.append(_summary(seed, strategy, attempt))
        if attempt.failed:
            failures.append(_failure(program, strategy, seed, attempt))

    with _Session() as session:
        try:
            session.call(lambda: each_schedule(session))
        except Interrupted as stop:
            partial = _result(done, [], strategy)
            raise Interrupted(
                f"exploration interrupted (Ctrl-C) after {len(done)} schedules: "
                f"{sum(o.failed for o in done)} failed so far",
                seed=stop.seed,
                schedule=stop.schedule,
                recorder=stop.recorder,
                explored=partial,
            ) from None
    return _result(done, failures, strategy)


def _summary(seed: int, strategy: Strategy, attempt: _Attempt) -> _Outcome:
    return _Outcome(seed, strategy.label(seed), attempt.controller.signature, attempt.failed)


def _failure(program: _Program, strategy: Strategy, seed: int, attempt: _Attempt) -> Failure:
    """A failure keeps its error and schedule; its trace is replayed when first asked for."""
    return Failure(
        seed,
        attempt.error,
        attempt.recorder,
        str(attempt.controller.schedule()),
        strategy.label(seed),
        program,
    )


def _result(done: list[_Outcome], failures: list[Failure], strategy: Strategy) -> ExploreResult:
    by: dict[str, tuple[int, set[int], int]] = {}
    for o in done:
        runs, signatures, failed = by.get(o.label, (0, set(), 0))
        signatures.add(o.signature)
        by[o.label] = (runs + 1, signatures, failed + o.failed)
    coverage = {label: Coverage(r, len(s), f) for label, (r, s, f) in by.items()}
    distinct = len({o.signature for o in done})
    return ExploreResult(
        len(done), failures, strategy.name, distinct, coverage, None, strategy.bound
    )


# --------------------------------------------------------------------------- processes


def _in_processes(
    program: _Program,
    seeds: list[int],
    strategy: Strategy,
    probe: Probe | None,
    workers: int,
    executor: concurrent.futures.Executor | None,
) -> list[_Outcome]:
    payload = _pack((program, strategy, probe))
    if payload is None:
        warnings.warn(
            "seqlab.explore: the scenario cannot be sent to other processes (it was defined "
            "in a notebook cell or holds something that does not pickle): install cloudpickle, "
            "or define it in a module. Running every schedule in this process instead.",
            RuntimeWarning,
            stacklevel=3,
        )
        with _Session() as session:
            return [
                _summary(
                    s, strategy, program.attempt(session, s, strategy.policy(s, probe or Probe()))
                )
                for s in seeds
            ]
    chunks = max(1, workers) * 4
    size = max(1, -(-len(seeds) // chunks))
    parts = [seeds[i : i + size] for i in range(0, len(seeds), size)]
    own = executor is None
    pool = executor or concurrent.futures.ProcessPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(_run_chunk, payload, part) for part in parts]
        done: list[_Outcome] = []
        for future in futures:
            done.extend(_Outcome(*row) for row in future.result())
        return done
    finally:
        if own:
            pool.shutdown(cancel_futures=True)


def _pack(value: Any) -> bytes | None:
    try:
        return b"p" + pickle.dumps(value)
    except Exception:
        pass
    try:
        import cloudpickle  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    try:
        return b"c" + cloudpickle.dumps(value)
    except Exception:
        return None


def _unpack(payload: bytes) -> Any:
    if payload[:1] == b"c":
        import cloudpickle  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return cloudpickle.loads(payload[1:])
    return pickle.loads(payload[1:])


def _run_chunk(payload: bytes, seeds: list[int]) -> list[tuple[int, str, int, bool]]:
    """In a worker process: run ``seeds`` and return plain summaries."""
    program, strategy, probe = _unpack(payload)

    def each_schedule(session: _Session) -> list[tuple[int, str, int, bool]]:
        rows = []
        for seed in seeds:
            attempt = program.attempt(session, seed, strategy.policy(seed, probe or Probe()))
            o = _summary(seed, strategy, attempt)
            rows.append((o.seed, o.label, o.signature, o.failed))
        return rows

    with _Session() as session:
        return session.call(lambda: each_schedule(session))


# --------------------------------------------------------------------------- exhaustive


def _search(program: _Program, strategy: ExhaustiveStrategy, budget: int) -> ExploreResult:
    """Depth-first over every schedule with at most ``strategy.bound`` holds."""
    seen: set[int] = set()
    failures: list[Failure] = []
    stack: list[tuple[Any, ...]] = [()]
    runs = 0
    label = f"exhaustive({strategy.bound})"

    def search(session: _Session) -> None:
        nonlocal runs
        while stack and runs < budget:
            decisions = stack.pop()
            log: list[tuple[int, ...]] = []
            policy = Policy(decisions)
            attempt = program.attempt(session, 0, policy, present_log=log, record=True)
            runs += 1
            signature = attempt.controller.signature
            if signature in seen:
                continue
            seen.add(signature)
            if attempt.failed:
                schedule = str(attempt.controller.schedule())
                failures.append(Failure(runs - 1, attempt.error, None, schedule, label, program))
            stack.extend(reversed(list(strategy.children(decisions, log))))

    with _Session() as session:
        try:
            session.call(lambda: search(session))
        except Interrupted as stop:
            raise Interrupted(
                f"exhaustive search interrupted (Ctrl-C) after {runs} runs",
                seed=stop.seed,
                schedule=stop.schedule,
                recorder=stop.recorder,
            ) from None
    coverage = {label: Coverage(runs, len(seen), len(failures))}
    return ExploreResult(
        runs, failures, strategy.name, len(seen), coverage, not stack, strategy.bound
    )
