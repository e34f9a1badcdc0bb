"""The sandboxed runner: executes one rebuilt notebook's cells and reports observations.

Run by the grader as ``python -m seqlab.grading._runner`` inside the sandbox
(:mod:`seqlab.grading.sandbox`). It reads a :class:`~seqlab.grading.protocol.Job` line on
stdin and writes JSON lines on stdout: ``{"report": StepReport}``, ``{"need": index}`` (asking
for a check cell's source, which the grader sends only then) and ``{"done": true}``. Learner
output goes to ``/dev/null``: nothing learner code prints reaches the grader.

Every step runs in a forked copy of the interpreter, so a crash, hang, recursion or memory
blow-up costs that step only:

- a *setup* or *solution* step runs in a child; when it finishes, the child reports and
  carries on as the main line (its state is the notebook's state from then on) while its
  parent only waits. When it hangs or dies, the parent kills it, reports why, and carries on
  itself, from the state before that cell;
- a *check* step runs in a child that never carries on: it observes (values, explored runs,
  traces, errors), sends its report to its parent over a private pipe, and exits. Nothing a
  check does, and no hidden input it held, is visible to any later cell.

The runner decides nothing; the grader compares observations with what it expects.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from .protocol import (
    CheckSource,
    Done,
    ErrorInfo,
    ExplainAnswer,
    Explained,
    ExplainRequest,
    Exploration,
    Job,
    Need,
    NotPlain,
    Observation,
    Run,
    StepReport,
    clip,
    encode_value,
    runner_message_json,
)

__all__ = ["main"]

MAX_TRACE_EVENTS = 4000
TAIL_EVENTS = 12


def _innermost(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _error_info(error: BaseException, filename: str | None = None) -> ErrorInfo:
    error = _innermost(error)
    line = None
    if filename is not None:
        for frame in traceback.extract_tb(error.__traceback__):
            if frame.filename == filename:
                line = frame.lineno
    try:
        message = str(error)
    except Exception:
        message = "(the exception's message could not be read)"
    return ErrorInfo(clip(type(error).__name__, 200), clip(message), line)


class Observer:
    """``__seqlab_observe__`` in a check cell: records what learner code produced."""

    def __init__(self, target: ExplainRequest | None = None) -> None:
        self.observations: list[Observation] = []
        self.explorations: list[Exploration] = []
        self._run: list[Observation] | None = None
        # Explain mode: replay one failing run of one exploration (see Runner.explain).
        self.target = target

    def _record(self, site: int, value: Any) -> None:
        try:
            obs = Observation(site, encode_value(value))
        except NotPlain as exc:
            obs = Observation(site, None, exc.type_name)
        (self._run if self._run is not None else self.observations).append(obs)

    def equal(self, site: int, value: Any) -> None:
        self._record(site, value)

    def truth(self, site: int, value: Any) -> None:
        self._record(site, value)

    def raises(self, site: int, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._record(site, ("raised", type(exc).__name__, clip(str(exc), 300)))
        else:
            self._record(site, ("returned",))

    def explore(
        self,
        site: int,
        fn: Any,
        *args: Any,
        seeds: Any = range(100),
        trace: bool,
        rule: Any = None,
    ) -> None:
        import seqlab
        from seqlab.runtime import current_seed
        from seqlab.trace import current_recorder

        bad: tuple[int | None, Any] | None = None
        judge_trace: Any = None
        if self.target is not None:
            if site != self.target.site:
                return
            seeds = [self.target.seed]
            if self.target.rule:
                # Only the trace rule rejected the run: the replay fails when the rule (from
                # the visible cell, which the learner has anyway) rejects it again.
                judge_trace = rule if callable(rule) else None
            else:
                # The replay "fails" (for explore, so that it can shrink and explain it) when
                # it gives the same wrong value again: no expected value is needed for that.
                bad = (self.target.obs_site, self.target.value)

        def check_run(run: dict[str, Any], recorder: Any) -> bool:
            if judge_trace is not None:
                try:
                    return bool(judge_trace(recorder))
                except Exception:
                    return False
            return bad is None or not any((o.site, o.value) == bad for o in run["observations"])

        runs: dict[int, dict[str, Any]] = {}
        order: list[dict[str, Any]] = []

        @functools.wraps(fn)
        async def scenario(*a: Any) -> Any:
            try:
                seed = current_seed()
            except Exception:
                seed = -1
            run: dict[str, Any] = {"seed": seed, "observations": [], "error": None}
            runs[id(current_recorder())] = run
            order.append(run)
            self._run = run["observations"]
            try:
                return await fn(*a)
            except Exception as exc:
                run["error"] = _error_info(exc)
                raise
            finally:
                self._run = None

        def keep(recorder: Any) -> bool:
            run = runs.get(id(recorder))
            if run is None:
                return True
            run["seen"] = True  # a run explore counts (not its probe, not a later replay)
            run["trace"] = _trace(recorder, full=trace)
            # explore fills in the run's schedule before it calls its check (this function).
            run["schedule"] = clip(str(recorder.schedule)) if recorder.schedule else None
            return check_run(run, recorder)

        try:
            result = seqlab.explore(scenario, *args, seeds=seeds, check=keep)
        except Exception as exc:
            self.explorations.append(Exploration(site, [], _error_info(exc)))
            return
        for failure in result.failures:
            recorder = failure.trace  # the run's own recorder (explore made one for check)
            run = runs.get(id(recorder))
            if run is None:
                run = {"seed": failure.seed, "observations": [], "error": None}
                order.append(run)
            run["seen"] = True
            if run["error"] is None and failure.error is not None:
                run["error"] = _error_info(failure.error)
            run["trace"] = _trace(recorder, full=trace)
            run["schedule"] = clip(failure.schedule) if failure.schedule else run.get("schedule")
        counted = [r for r in order if r.get("seen")]
        total = getattr(result, "runs", len(counted))
        if isinstance(total, int) and 0 < total < len(counted):
            # Runs explore made before its schedules (a lockstep probe sizing the strategy)
            # are not among the schedules it reports: leave them out too.
            counted = counted[len(counted) - total :]
        if result.failures:  # shrinking re-runs the program: once, for the first failure
            first = result.failures[0]
            run = runs.get(id(first.trace))
            if run is not None:
                try:
                    shrunk = first.shrink()
                    run["explanation"] = clip(shrunk.explain())
                    if shrunk.schedule:
                        run["schedule"] = clip(shrunk.schedule)
                    # The shrunk run's own trace, so that the excerpt shown is of the run the
                    # explanation tells (the grader checks that it still fails).
                    run["trace"] = _trace(shrunk.trace, full=trace)
                except Exception:
                    pass
        self.explorations.append(
            Exploration(
                site,
                [
                    Run(
                        r["seed"],
                        r["observations"],
                        r["error"],
                        r.get("trace"),
                        r.get("schedule"),
                        r.get("explanation"),
                    )
                    for r in counted
                ],
            )
        )


def _trace(recorder: Any, full: bool) -> list[dict[str, Any]]:
    """The run's events as data: all of them (up to a cap) when a trace rule will read them,
    else only the last few, for the excerpt shown with a failure."""
    events = recorder.events
    if full:
        return [e.to_dict() for e in events[:MAX_TRACE_EVENTS]]
    return [e.to_dict() for e in events[-TAIL_EVENTS:]]


def _run_code(source: str, filename: str, ns: dict[str, Any]) -> None:
    import ast

    code = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)
    if result is not None and hasattr(result, "__await__"):
        import trio

        async def wait() -> Any:
            return await result

        trio.run(wait)


def _read_line(fd: int, limit: int) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536 if limit - len(data) > 65536 else max(1, limit - len(data)))
        if not chunk:
            break
        data += chunk
        if len(data) >= limit:
            break
    return data


def _read_all(fd: int, limit: int, deadline: float) -> tuple[bytes, str]:
    """Read ``fd`` to its end; (data, "" or "timeout" or "oversized")."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout"
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), ""
        size += len(chunk)
        if size > limit:
            return b"", "oversized"
        chunks.append(chunk)


def _kill(pid: int) -> None:
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGKILL:
            return "it was killed (SIGKILL: usually the memory or process limit)"
        if sig == signal.SIGXCPU:
            return "it used up its CPU time limit"
        return f"it crashed ({name})"
    if os.WIFEXITED(status):
        return f"it ended the process (exit status {os.WEXITSTATUS(status)})"
    return "it stopped unexpectedly"


class _NoShell:
    """What ``get_ipython()`` returns while grading: magics, shell commands and displays in a
    learner's cell do nothing (the grader turned ``%magic`` lines into calls on this)."""

    def run_line_magic(self, *args: Any, **kwargs: Any) -> None:
        return None

    def run_cell_magic(self, *args: Any, **kwargs: Any) -> None:
        return None

    def system(self, *args: Any, **kwargs: Any) -> None:
        return None

    def getoutput(self, *args: Any, **kwargs: Any) -> list[str]:
        return []


def _no_display(*args: Any, **kwargs: Any) -> None:
    return None


class Runner:
    def __init__(self, job: Job, inp: int, out: int) -> None:
        self.job = job
        self.inp = inp
        self.out = out
        self.buffer = b""  # bytes read from the grader and not yet used
        shell = _NoShell()
        self.ns: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": builtins,
            "get_ipython": lambda: shell,
            "display": _no_display,
        }

    def receive(self, kind: Any, index: int, seconds: float) -> Any:
        """The grader's next message of ``kind`` (:class:`CheckSource` or
        :class:`ExplainAnswer`) for step ``index``, or ``None`` after ``seconds``. Anything else
        read meanwhile (an answer that came after its wait was given up) is dropped."""
        deadline = time.monotonic() + seconds
        while True:
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                ready, _, _ = select.select([self.inp], [], [], left)
                if not ready:
                    return None
                chunk = os.read(self.inp, 1 << 16)
                if not chunk or len(self.buffer) > self.job.max_report_bytes:
                    return None
                self.buffer += chunk
            line, _, self.buffer = self.buffer.partition(b"\n")
            try:
                message = kind.from_json(json.loads(line))
            except ValueError:  # not this kind (ProtocolError), or not JSON
                continue
            if message.index == index:
                return message

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self.out, view)
            view = view[written:]

    def run(self) -> None:
        snapshots: list[tuple[int, int]] = []  # (its "go" pipe, its "finished" pipe)
        for step in self.job.steps:
            if step.kind == "check" and step.deferred:
                snapshots.append(self.snapshot(step.index, step.grade_id))
            elif step.kind == "check":
                self.check(step.index, step.grade_id, explainable=True)
            else:
                self.carry(step.index, step.kind, step.source, step.grade_id)
        for go, finished in snapshots:
            os.write(go, b"g")
            os.close(go)
            while os.read(finished, 64):  # returns b"" once the snapshot has exited
                pass
            os.close(finished)
        self.send(runner_message_json(Done()))

    def snapshot(self, index: int, grade_id: str) -> tuple[int, int]:
        """Keep a copy of the notebook as it is now; it runs check ``index`` when told to."""
        go_read, go_write = os.pipe()
        finished_read, finished_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            os.close(finished_read)
            if os.read(go_read, 1) == b"g":
                self.check(index, grade_id)
            os._exit(0)
        os.close(go_read)
        os.close(finished_write)
        return go_write, finished_read

    def carry(self, index: int, kind: str, source: str, grade_id: str = "") -> None:
        """Run a setup or solution step in a child that carries on as the main line."""
        read_end, write_end = os.pipe()
        began = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.setpgid(0, 0)
            try:
                # Named as the learner knows the cell (explanations and tracebacks show it).
                owner = "your cell" if kind == "solution" else "lesson cell"
                _run_code(source, f"<{owner} {grade_id or index}>", self.ns)
                report = StepReport(index, "ok", seconds=time.monotonic() - began)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt included
                report = StepReport(
                    index, "error", _error_info(exc), seconds=time.monotonic() - began
                )
            self.send(runner_message_json(report))
            os.write(write_end, b"k")
            os.close(write_end)
            return  # carry on as the main line
        os.close(write_end)
        data, problem = _read_all(read_end, 16, began + self.job.cell_timeout)
        os.close(read_end)
        if data == b"k":
            os.waitpid(pid, 0)
            os._exit(0)
        _kill(pid)
        _, status = os.waitpid(pid, 0)
        seconds = time.monotonic() - began
        if problem == "timeout":
            report = StepReport(index, "timeout", seconds=seconds)
        else:
            report = StepReport(
                index, "crashed", ErrorInfo("Crash", _death(status)), seconds=seconds
            )
        self.send(runner_message_json(report))

    def check(self, index: int, grade_id: str, explainable: bool = False) -> None:
        """Run a check step in a throwaway child; forward its report. When ``explainable``, the
        grader then answers whether one failing run should be replayed and explained."""
        self.send(runner_message_json(Need(index)))
        given = self.receive(CheckSource, index, self.job.cell_timeout)
        if given is None:
            report = StepReport(index, "crashed", ErrorInfo("Protocol", "no source"))
            self.send(runner_message_json(report))
            return
        source = given.source
        began = time.monotonic()

        def run_check() -> bytes:
            filename = f"<check {grade_id}>"
            observer = Observer()
            self.ns["__seqlab_observe__"] = observer
            try:
                _run_code(source, filename, self.ns)
                outcome, error = "ok", None
            except BaseException as exc:
                outcome, error = "error", _error_info(exc, filename)
            report = StepReport(
                index,
                outcome,
                error,
                observer.observations,
                observer.explorations,
                time.monotonic() - began,
            )
            data = json.dumps(report.to_json(), separators=(",", ":")).encode()
            if len(data) > self.job.max_report_bytes:
                data = json.dumps(StepReport(index, "oversized").to_json()).encode()
            return data

        data, problem, status = self._throwaway(run_check, began)
        seconds = time.monotonic() - began
        message: dict[str, Any]
        if problem == "timeout":
            message = StepReport(index, "timeout", seconds=seconds).to_json()
        elif problem == "oversized":
            message = StepReport(index, "oversized", seconds=seconds).to_json()
        else:
            try:
                message = json.loads(data)
            except ValueError:
                message = StepReport(
                    index, "crashed", ErrorInfo("Crash", _death(status)), seconds=seconds
                ).to_json()
        # Forwarded as the child wrote it (a StepReport's JSON): the grader checks it.
        self.send({"report": message})
        if explainable:
            self.explain(index, grade_id, source)

    def explain(self, index: int, grade_id: str, source: str) -> None:
        """Wait for the grader's answer to a check's report; when it names a failing run (an
        exploration site, its seed, and the wrong value it produced, or that its trace rule
        rejected it), replay that run in a throwaway child so that exploration can shrink it
        and give its schedule and explanation."""
        answer = self.receive(ExplainAnswer, index, 10.0)
        if answer is None:
            return
        target = answer.request
        if target is None:
            return
        if target.rule:
            # A run only a trace rule rejected: replay it from the visible cell's source with
            # its rules kept (the grader sends it only now, and only for visible checks).
            if not answer.source:
                return
            source = answer.source

        def replay() -> bytes:
            observer = Observer(target)
            self.ns["__seqlab_observe__"] = observer
            try:
                _run_code(source, f"<check {grade_id}>", self.ns)
            except BaseException:
                pass
            found = [e.to_json() for e in observer.explorations if e.site == target.site]
            data = json.dumps(found[:1], separators=(",", ":")).encode()
            return data[: self.job.max_report_bytes]

        data, problem, _ = self._throwaway(replay, time.monotonic())
        try:
            found = json.loads(data) if not problem else []
        except ValueError:
            found = []
        if found:
            try:
                self.send(runner_message_json(Explained(index, Exploration.from_json(found[0]))))
            except ValueError:
                pass

    def _throwaway(self, produce: Callable[[], bytes], began: float) -> tuple[bytes, str, int]:
        """Call ``produce`` in a throwaway child (a process group of its own, cut off from
        the grader's pipes) and read what it returns, until ``cell_timeout`` after ``began``.

        Returns the bytes, the problem reading them ("", "timeout" or "oversized"; a child
        with a problem is killed) and the child's exit status. The child never returns into
        the runner's code, whatever ``produce`` does.
        """
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                os.close(self.inp)
                os.close(self.out)
                os.setpgid(0, 0)
                view = memoryview(produce())
                while view:
                    view = view[os.write(write_end, view) :]
            finally:
                os._exit(0)
        os.close(write_end)
        data, problem = _read_all(
            read_end, self.job.max_report_bytes, began + self.job.cell_timeout
        )
        os.close(read_end)
        if problem:
            _kill(pid)
        _, status = os.waitpid(pid, 0)
        return data, problem, status


_MIB = 1024 * 1024


def apply_limits(memory_mb: int | None, cpu_seconds: int | None) -> None:
    """Lower this process's limits (inherited by every process it starts): address space,
    CPU seconds, no core files, files of at most 64 MiB."""
    import resource

    def lower(which: int, soft: int, hard: int) -> None:
        _, cur_hard = resource.getrlimit(which)
        if cur_hard != resource.RLIM_INFINITY:
            hard, soft = min(hard, cur_hard), min(soft, cur_hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass

    if memory_mb:
        lower(resource.RLIMIT_AS, memory_mb * _MIB, memory_mb * _MIB)
    if cpu_seconds:
        lower(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 5)
    lower(resource.RLIMIT_CORE, 0, 0)
    lower(resource.RLIMIT_FSIZE, 64 * _MIB, 64 * _MIB)


def _drop_privileges() -> bool:
    """Become the sandbox's user (when started as root inside the sandbox); True if done."""
    uid = os.environ.get("SEQLAB_SANDBOX_UID")
    if uid and os.getuid() == 0:
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))
        return True
    return False


def main() -> None:
    dropped = _drop_privileges()
    inp = os.dup(0)
    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    job = Job.from_json(json.loads(_read_line(inp, 64 * 1024 * 1024)))
    apply_limits(job.memory_mb, job.cpu_seconds)
    if dropped:
        # A second cap on processes (threads count too), for machines without a pids cgroup.
        # Only for the sandbox's own user: as anyone else it would count unrelated processes.
        import resource

        limit = 4 * job.processes
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    work = os.path.join(os.environ.get("TMPDIR") or "/tmp", "work")
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    # Loaded once, before the first fork. trio.testing (virtual time) would import pytest just
    # for a helper it can do without; grading does not need pytest, so it is kept out (-0.3 s).
    sys.modules.setdefault("pytest", None)  # type: ignore[arg-type]
    import trio.testing  # noqa: F401

    import seqlab  # noqa: F401

    Runner(job, inp, out).run()
    os._exit(0)


if __name__ == "__main__":
    main()
