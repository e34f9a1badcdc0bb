"""The seqlab teaching kernel: one persistent trio loop living inside ipykernel's asyncio loop.

ipykernel 7 runs on asyncio. Its ``trio_loop`` option does not work on 7.x, and
``%autoawait trio`` starts a fresh :func:`trio.run` per cell, so tasks die with their cell.
The seqlab kernel instead starts trio in *guest mode* (:func:`trio.lowlevel.start_guest_run`)
on the kernel's running asyncio loop, once, when the kernel starts. Then:

- A cell that awaits at top level has each awaiting statement run as a trio task in that loop
  (the statement's coroutine is handed to trio and the asyncio side awaits its outcome), so
  ``await trio.sleep(1)`` works and so does everything built on trio.
- :func:`spawn` starts a background task in the same loop; it keeps running after the cell.
  If it fails, the error is printed to stderr in the running cell, or in the next cell when
  the kernel is idle, and the loop keeps going.
- Interrupting the kernel cancels the running cell's trio work (the cell shows
  ``KeyboardInterrupt``, also when it awaited inside a nursery); background tasks keep running.
- A cell that awaits something nothing can ever wake (``await seqlab.Barrier(3).wait()``) ends
  with :class:`seqlab.Deadlock` naming its tasks and what each waits on, once the whole loop
  has been blocked for :data:`DEADLOCK_GRACE` seconds with no timer pending, no thread running
  and no task waiting on I/O; the loop lives on. A background task on a timer could in
  principle wake the cell, so while one runs no deadlock is declared. Something the loop does
  not know about (a widget callback setting a trio Event directly) looks like nothing: give
  such a wait a timeout.
- Shutting the kernel down cancels every task and lets the loop finish cleanly.

Rules of thumb, which follow from running trio on top of asyncio:

- Only a cell that awaits lets the loop run. A cell that blocks (``time.sleep``, a long
  computation) freezes background tasks until it returns.
- Cells cannot await asyncio objects (they run in trio); ``trio.run`` cannot be called in
  this kernel (a trio loop is already running on this thread). :func:`seqlab.run` can: it runs
  on its own thread.

This module imports only trio and the standard library at import time; Jupyter code is
imported by the functions that need it.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import outcome
import trio

from .._callables import callable_name, is_async_callable
from ..trace import task_label
from ..waits import WAITS_FOR_CHILDREN, describe_wait
from ._report import describe_error

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "GuestLoop",
    "current_loop",
    "spawn",
    "install_kernel",
    "KERNEL_NAME",
    "DISPLAY_NAME",
    "main",
]

KERNEL_NAME = "seqlab"
DISPLAY_NAME = "Python 3 (seqlab)"

# ipykernel routes a stream write or a display to a cell through these context variables;
# background tasks must not inherit them from the cell that spawned them, so that their
# output goes to whichever cell is running when they write.
_ROUTING_VARS = frozenset({"parent_header", "shell_parent", "shell_parent_ident"})

#: Background failures reported in full per cell; the rest are counted in one summary line.
REPORT_LIMIT = 3

#: Seconds the whole loop must stay blocked, with nothing pending, before a cell that awaits is
#: declared deadlocked (a short quiet spell is normal; a timer or thread rules it out anyway).
DEADLOCK_GRACE = 1.0

_current: GuestLoop | None = None


def current_loop() -> GuestLoop | None:
    """The teaching kernel's persistent trio loop, or ``None`` outside the seqlab kernel."""
    return _current


@dataclass
class _CellRun:
    """One awaiting statement of a cell, handed from asyncio to trio."""

    coro: Coroutine[Any, Any, Any]
    context: list[tuple[contextvars.ContextVar[Any], Any]]
    future: asyncio.Future[outcome.Outcome[Any]]
    scope: trio.CancelScope | None = None
    cancel_requested: bool = False
    interrupts: int = 0
    task: trio.lowlevel.Task | None = None
    started_at: float = 0.0
    deadlock: BaseException | None = None


class GuestLoop:
    """One trio run in guest mode on an asyncio loop, kept alive until :meth:`stop`.

    States: ``"not started"``, ``"starting"``, ``"running"``, ``"stopping"``, ``"stopped"``
    and ``"crashed"`` (the run ended with an error; cells then run on plain asyncio again).
    """

    def __init__(self) -> None:
        self.state = "not started"
        self.error: BaseException | None = None
        self._host: asyncio.AbstractEventLoop | None = None
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._done = threading.Event()
        self._ready = asyncio.Event()  # binds to the host loop when first awaited
        self._background: list[str] = []
        self._cells = 0
        self._busy = False
        self._root: trio.lowlevel.Task | None = None
        self._pending_reports: list[str] = []
        self._reports_shown = 0
        self._not_shown: collections.Counter[str] = collections.Counter()

    # ----------------------------------------------------------------- lifecycle

    def start(self, host: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the trio guest run on ``host`` (default: the running asyncio loop)."""
        if self.state != "not started":
            raise RuntimeError(f"this loop was already started (state: {self.state})")
        self._host = host if host is not None else asyncio.get_running_loop()
        self.state = "starting"
        # SIGINT belongs to ipykernel, which routes it to the running cell. trio takes it over
        # when it finds Python's default handler, which ipykernel sets while it handles a
        # message, so hide that handler from trio for the moment the run starts.
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if on_main_thread else None
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            # The loop's tasks start from an empty context: nothing of the cell that happens
            # to be current leaks into them (cells pass their own context explicitly).
            contextvars.Context().run(
                trio.lowlevel.start_guest_run,
                self._main,
                run_sync_soon_threadsafe=self._host.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=self._host.call_soon,
                done_callback=self._finished,
                host_uses_signal_set_wakeup_fd=True,
            )
        finally:
            if previous is signal.default_int_handler:
                signal.signal(signal.SIGINT, previous)

    async def wait_ready(self) -> None:
        """Wait (on the asyncio side) until a starting loop runs or has ended."""
        if self.state == "starting":
            await self._ready.wait()

    async def _main(self) -> None:
        self._root = trio.lowlevel.current_task()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            if self.state == "starting":
                self.state = "running"
            else:  # stop() was called while the loop was starting
                nursery.cancel_scope.cancel()
            self._ready.set()
            await trio.sleep_forever()

    def _finished(self, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error) and not _only_cancelled(result.error):
            self.state = "crashed"
            self.error = result.error
            self._report(
                "seqlab: the trio loop stopped with an error:\n" + describe_error(result.error)
            )
        else:
            self.state = "stopped"
        self._nursery = None
        self._done.set()
        self._ready.set()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def stop(self) -> None:
        """Ask the loop to cancel every task and finish (returns at once; thread-safe)."""
        if self.state == "starting":
            self.state = "stopping"  # _main sees this and cancels at once
        elif self.state == "running" and self._token is not None:
            self.state = "stopping"
            try:
                self._token.run_sync_soon(self._cancel_all)
            except trio.RunFinishedError:
                pass

    def _cancel_all(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the run has finished (from a thread other than the loop's)."""
        return self._done.wait(timeout)

    def finish(self, timeout: float = 5.0) -> None:
        """Stop the loop and drive the (no longer running) host loop until trio is done."""
        host = self._host
        if host is None or self._done.is_set():
            return
        self.stop()

        async def wait_done() -> None:
            while not self._done.is_set():
                await asyncio.sleep(0.01)

        if host.is_running():
            raise RuntimeError("finish() needs the host loop stopped; use stop() instead")
        host.run_until_complete(asyncio.wait_for(wait_done(), timeout))

    # ----------------------------------------------------------------- statistics

    @property
    def background_tasks(self) -> list[str]:
        """Names of the background tasks started by :func:`spawn` that are still running."""
        return sorted(self._background)

    def describe(self) -> str:
        """One line for ``%seqlab status``."""
        if self.state == "running":
            n = len(self._background)
            tasks = "no background tasks" if n == 0 else f"{n} background task" + "s" * (n > 1)
            return f"running (one persistent trio loop in guest mode, {tasks})"
        if self.state == "crashed":
            return f"crashed ({type(self.error).__name__}); cells run on asyncio again"
        return self.state

    # ----------------------------------------------------------------- cells

    async def run_cell_coroutine(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a cell's coroutine as a trio task in this loop and return its result.

        Called on the asyncio side. An interrupt (SIGINT while the cell awaits) cancels the
        trio task; once it has finished, ``KeyboardInterrupt`` is raised. A second interrupt
        stops waiting for a task that ignores cancellation (it keeps running).
        """
        __tracebackhide__ = True
        assert self._host is not None
        cell = _CellRun(coro, list(contextvars.copy_context().items()), self._host.create_future())
        self._submit(self._start_cell, cell)
        restore = self._catch_sigint(cell)
        try:
            while True:
                try:
                    result = await asyncio.shield(cell.future)
                    break
                except asyncio.CancelledError:
                    # ipykernel cancels the awaiting asyncio task on an interrupt; our own
                    # SIGINT handler, when in place, has already counted that interrupt.
                    if cell.interrupts == 0:
                        self._interrupt(cell)
        finally:
            if restore is not None:
                restore()
        if isinstance(result, outcome.Value):
            return result.value
        assert isinstance(result, outcome.Error)
        error = result.error
        del result
        if cell.deadlock is not None and _only_cancelled(error):
            raise cell.deadlock from None
        if cell.interrupts and _only_cancelled(error):
            # Show where the cell was waiting, as a plain interrupted cell would (not the
            # trio.Cancelled, or the group of them a nursery in the cell gathers).
            raise KeyboardInterrupt().with_traceback(_user_part(error.__traceback__)) from None
        raise error

    def _catch_sigint(self, cell: _CellRun) -> Callable[[], None] | None:
        """Route SIGINT to ``cell`` while it runs; return the function that undoes it.

        ipykernel 7.4's own handler cancels the cell only when the asyncio loop next wakes
        up (it schedules with a non-threadsafe ``call_soon`` from the signal handler), which
        may be never while the cell sleeps; this one wakes the loop.
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        host = self._host
        assert host is not None
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            if callable(previous) and previous is not signal.default_int_handler:
                previous(signum, frame)
            host.call_soon_threadsafe(self._interrupt, cell)

        signal.signal(signal.SIGINT, on_sigint)

        def restore() -> None:
            if signal.getsignal(signal.SIGINT) is on_sigint:
                signal.signal(signal.SIGINT, previous)

        return restore

    def _interrupt(self, cell: _CellRun) -> None:
        cell.interrupts += 1
        if cell.interrupts == 1:
            self._submit(self._cancel_cell, cell)
        else:
            message = "the cell's trio task ignores cancellation; it keeps running"
            _set(cell.future, outcome.Error(KeyboardInterrupt(message)))

    def _submit(self, fn: Callable[..., object], *args: Any) -> None:
        if self._token is None or not self.running:
            raise RuntimeError("the seqlab trio loop is not running")
        self._token.run_sync_soon(fn, *args)

    def _start_cell(self, cell: _CellRun) -> None:
        if self._nursery is None:
            cell.coro.close()
            _set(cell.future, outcome.Error(RuntimeError("the seqlab trio loop has stopped")))
            return
        self._cells += 1
        self._nursery.start_soon(self._cell_task, cell, name=f"cell-{self._cells}")
        self._nursery.start_soon(
            self._watch_cell, cell, name=f"<seqlab deadlock watch {self._cells}>"
        )

    def _cancel_cell(self, cell: _CellRun) -> None:
        cell.cancel_requested = True
        if cell.scope is not None:
            cell.scope.cancel()

    async def _cell_task(self, cell: _CellRun) -> None:
        __tracebackhide__ = True
        cell.task = trio.lowlevel.current_task()
        cell.started_at = trio.current_time()
        for var, value in cell.context:
            var.set(value)
        with trio.CancelScope() as scope:
            cell.scope = scope
            if cell.cancel_requested:
                scope.cancel()
            try:
                value = await cell.coro
            except BaseException as exc:
                result: outcome.Outcome[Any] = outcome.Error(exc)
            else:
                result = outcome.Value(value)
        if cell.deadlock is not None and isinstance(result, outcome.Value):
            # The cell caught the cancellation that ended its deadlock: still report it.
            result = outcome.Error(cell.deadlock)
        _set(cell.future, result)

    async def _watch_cell(self, cell: _CellRun) -> None:
        """Declare a deadlock when ``cell`` waits on something nothing can wake.

        That is: every task in the loop (the cell's, the background ones) has been blocked for
        :data:`DEADLOCK_GRACE` seconds, no timer is pending, no task waits on I/O or a thread,
        and nothing was handed to the loop from outside. Then the cell ends with
        :class:`seqlab.Deadlock` naming its tasks and what each waits on, and the loop lives on.
        """
        from trio.testing import wait_all_tasks_blocked

        declared_at = None
        while not cell.future.done():
            await wait_all_tasks_blocked(DEADLOCK_GRACE)
            if cell.future.done() or cell.task is None:
                return
            stats = trio.lowlevel.current_statistics()
            if (
                stats.tasks_runnable
                or stats.run_sync_soon_queue_size
                or stats.seconds_to_next_deadline < float("inf")
                or _io_waiters() > 1  # trio's own wake-up socket is always there
            ):
                continue
            blocked = self._blocked_cell_tasks(cell)
            if blocked is None:  # a thread or I/O may still wake someone
                continue
            if cell.deadlock is None:
                elapsed = trio.current_time() - cell.started_at
                cell.deadlock = _deadlock(blocked, elapsed)
                declared_at = trio.current_time()
                if cell.scope is not None:
                    cell.scope.cancel()
            elif declared_at is not None:
                # Cancelling did not end the cell (a wait shielded from cancellation): end
                # the cell's wait from here; its task stays, as after a second interrupt.
                _set(cell.future, outcome.Error(cell.deadlock))
                return

    def _blocked_cell_tasks(self, cell: _CellRun) -> list[Any] | None:
        """``cell``'s tasks and what each waits on; ``None`` if any task in the loop waits
        on a thread or on I/O (outside activity that may wake the cell)."""
        assert cell.task is not None
        root = self._root if self._root is not None else cell.task
        me = trio.lowlevel.current_task()
        for task in _task_tree(root):
            if task is not me and describe_wait(task)[1]:
                return None
        blocked = []
        for task in _task_tree(cell.task):
            waits_on, _ = describe_wait(task)
            name = "the cell" if task is cell.task else task_label(task)
            blocked.append((name, waits_on))
        # Tasks waiting on something first, those waiting for their children after.
        blocked.sort(key=lambda item: item[1] == WAITS_FOR_CHILDREN)
        return blocked

    # ----------------------------------------------------------------- background tasks

    def spawn(
        self, async_fn: Callable[..., Awaitable[object]], *args: Any, name: str | None = None
    ) -> None:
        """See :func:`spawn`."""
        label = name or getattr(async_fn, "__name__", type(async_fn).__name__)
        # Refused before calling it: a plain function (print) would run, here, first.
        if not is_async_callable(async_fn):
            raise TypeError(
                f"async_fn must be an async function (defined with `async def`); "
                f"{label} is a plain callable, and spawn does not call it"
            )
        # Called here, as trio's start_soon does, so that its errors (wrong arguments)
        # show in the cell that passed it rather than later in the loop.
        awaitable = async_fn(*args)
        if not inspect.isawaitable(awaitable):
            raise TypeError(
                f"async_fn must be an async function; {label}(...) returned "
                f"{type(awaitable).__name__}, not a coroutine"
            )
        ctx = contextvars.Context()
        for var, value in contextvars.copy_context().items():
            if var.name not in _ROUTING_VARS:
                ctx.run(var.set, value)
        try:
            self._submit(self._start_background, ctx, awaitable, label)
        except RuntimeError:
            _close(awaitable)
            raise

    def _start_background(
        self, ctx: contextvars.Context, awaitable: Awaitable[object], label: str
    ) -> None:
        nursery = self._nursery
        if nursery is None:
            _close(awaitable)
            return

        def start() -> None:
            nursery.start_soon(self._background_task, awaitable, label, name=label)

        # The task's context is a copy of the one current when start_soon is called.
        ctx.run(start)

    async def _background_task(self, awaitable: Awaitable[object], label: str) -> None:
        self._background.append(label)
        try:
            await awaitable
        except trio.Cancelled:
            raise
        except BaseException as exc:
            rest: BaseException | None = exc
            cancelled: BaseException | None = None
            if isinstance(exc, BaseExceptionGroup):
                cancelled, rest = exc.split(trio.Cancelled)
            if rest is not None:
                self._background_failed(label, rest)
            if cancelled is not None:
                raise cancelled from None
        finally:
            self._background.remove(label)

    # ----------------------------------------------------------------- error reports

    def cell_started(self) -> None:
        """The kernel began executing a cell: print reports that arrived while idle."""
        self._busy = True
        self._reports_shown = 0
        pending, self._pending_reports = self._pending_reports, []
        for text in pending:
            self._report(text)
        self._print_summary()

    def cell_finished(self) -> None:
        """The cell's code is done: summarise the failures not shown one by one."""
        self._print_summary()
        self._busy = False

    def _background_failed(self, label: str, error: BaseException) -> None:
        # Past the first few reports of a cell (or of an idle spell), failures are only
        # counted: a thousand failing tasks must not write a thousand reports into the notebook.
        shown = self._reports_shown if self._busy else len(self._pending_reports)
        if shown >= REPORT_LIMIT:
            self._not_shown[type(error).__name__] += 1
            return
        self._report(f"seqlab: background task {label!r} failed:\n" + describe_error(error))

    def _report(self, text: str) -> None:
        if self._busy:
            self._reports_shown += 1
            print(text, file=sys.stderr, end="")
        else:
            self._pending_reports.append(text)

    def _print_summary(self) -> None:
        if not self._not_shown:
            return
        total = sum(self._not_shown.values())
        kinds = ", ".join(f"{name} x{n}" for name, n in sorted(self._not_shown.items()))
        self._not_shown.clear()
        print(
            f"seqlab: {total} more background task failure{'s' * (total > 1)} not shown "
            f"({kinds}); only the first {REPORT_LIMIT} of a cell are reported in full\n",
            file=sys.stderr,
            end="",
        )


def _deadlock(blocked: list[tuple[str, str]], elapsed: float) -> BaseException:
    from .. import BlockedTask, Deadlock

    tasks = [BlockedTask(name, waits_on) for name, waits_on in blocked]
    error = Deadlock(tasks, elapsed, None)
    hint = (
        "the cell waits on something no task, timer, thread or I/O can ever wake; "
        "it was stopped so the kernel stays usable"
    )
    error.args = (f"{error}\n{hint}",)
    # IPython shows this instead of a traceback (which would only show seqlab's frames).
    error._render_traceback_ = lambda: [f"Deadlock: {error}"]  # type: ignore[attr-defined]
    return error


def _task_tree(root: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    """``root`` and every task below it, in creation order within each nursery."""
    found = [root]
    for task in found:
        for nursery in task.child_nurseries:
            found.extend(sorted(nursery.child_tasks, key=lambda t: getattr(t, "_counter", 0)))
    return found


def _io_waiters() -> int:
    io = trio.lowlevel.current_statistics().io_statistics
    return sum(
        getattr(io, name, 0)
        for name in ("tasks_waiting_read", "tasks_waiting_write", "tasks_waiting", "monitors")
    )


def _user_part(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` cut after its last frame outside trio (where the cell was waiting)."""
    libraries = (os.path.dirname(trio.__file__), os.path.dirname(outcome.__file__))
    last_user = None
    walk = tb
    while walk is not None:
        if not walk.tb_frame.f_code.co_filename.startswith(libraries):
            last_user = walk
        walk = walk.tb_next
    if last_user is not None:
        last_user.tb_next = None
    return tb


def _close(awaitable: Awaitable[object]) -> None:
    """Close a coroutine that will never run (no "never awaited" warning)."""
    if isinstance(awaitable, Coroutine):
        awaitable.close()


def _set(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


def spawn(async_fn: Callable[..., Awaitable[object]], *args: Any, name: str | None = None) -> None:
    """Start ``async_fn(*args)`` as a background task in the seqlab kernel's trio loop.

    The task keeps running after the cell that started it, like a task started in a nursery
    that lives as long as the kernel. Use it for a producer that keeps feeding a live view, or
    a server you talk to from later cells::

        async def ticker(n):
            for i in range(n):
                await trio.sleep(1)
                print("tick", i)

        from seqlab.notebook import spawn
        spawn(ticker, 10)

    If the task raises, a short report (the error and the lines of your code it came
    through) is printed to stderr, in the running cell or, when the kernel is idle, in the
    next one; the loop and the other tasks keep going. ``async_fn(*args)`` is called at
    once, as trio's ``start_soon`` does: a plain function is refused with ``TypeError``.
    Cancellation: interrupting a cell does not cancel background tasks; shutting down or
    restarting the kernel does.
    Works only in the seqlab kernel ("Python 3 (seqlab)"), which hosts the persistent loop.
    """
    if isinstance(async_fn, Coroutine):
        async_fn.close()
        raise TypeError(
            "async_fn must be the async function, with its arguments passed after it, not a "
            "coroutine: spawn(fn, x), not spawn(fn(x))"
        )
    if not callable(async_fn):
        raise TypeError(f"async_fn must be an async function, got {type(async_fn).__name__}")
    if not is_async_callable(async_fn):
        raise TypeError(
            f"async_fn must be an async function (defined with `async def`); "
            f"{callable_name(async_fn)} is a plain callable, and spawn does not call it"
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    loop = _current
    if loop is None or not loop.running:
        raise RuntimeError(
            "seqlab.spawn needs the seqlab kernel's persistent trio loop, and "
            + ("this is not the seqlab kernel" if loop is None else f"the loop is {loop.state}")
            + ". Install it with `seqlab install-kernel --user` and pick the kernel "
            f"{DISPLAY_NAME!r}; in other kernels use a nursery inside one cell."
        )
    loop.spawn(async_fn, *args, name=name)


# --------------------------------------------------------------------------- IPython glue


# IPython has no public hook to run a cell's top-level awaits in another event loop, so
# _run_code_in_loop is a copy of InteractiveShell.run_code with one line changed. These are the
# SHA-256 digests of the run_code sources it was checked against, line by line; for any other
# IPython, attach_shell warns (the kernel still works as long as run_code's contract holds) and
# tests/notebook/test_kernel.py fails until the copy is checked again and the digest added.
RUN_CODE_CHECKED = {
    "7db2a3844091e22a018e76921b469ecdc454ceeecac482e198b74ae447ae6029": "IPython 8.12",
}


def run_code_digest(shell_class: type | None = None) -> str:
    """SHA-256 of the source of ``shell_class.run_code`` (IPython's InteractiveShell)."""
    import hashlib

    if shell_class is None:
        from IPython.core.interactiveshell import InteractiveShell

        shell_class = InteractiveShell
    source = inspect.getsource(shell_class.run_code)  # type: ignore[attr-defined]
    return hashlib.sha256(source.encode()).hexdigest()


def attach_shell(shell: Any, loop: GuestLoop) -> None:
    """Make ``shell`` run the awaiting statements of its cells in ``loop`` (idempotent)."""
    if getattr(shell, "_seqlab_guest_loop", None) is loop:
        return
    shell._seqlab_guest_loop = loop
    try:
        digest = run_code_digest()
    except (OSError, TypeError):  # no source available (a frozen install)
        digest = "unknown"
    if digest not in RUN_CODE_CHECKED:
        import warnings

        import IPython

        warnings.warn(
            f"seqlab: IPython {IPython.__version__}'s InteractiveShell.run_code is not the one "
            "seqlab's kernel copy was checked against ("
            + ", ".join(RUN_CODE_CHECKED.values())
            + "); awaiting cells may report errors differently",
            RuntimeWarning,
            stacklevel=2,
        )
    original = shell.run_code

    async def run_code(code_obj: Any, result: Any = None, *, async_: bool = False) -> bool:
        if async_:
            await loop.wait_ready()
        if not async_ or not loop.running:
            return bool(await original(code_obj, result, async_=async_))
        return await _run_code_in_loop(shell, loop, code_obj, result)

    shell.run_code = run_code
    shell.events.register("pre_execute", loop.cell_started)
    shell.events.register("post_execute", loop.cell_finished)


async def _run_code_in_loop(shell: Any, loop: GuestLoop, code_obj: Any, result: Any) -> bool:
    """IPython's ``run_code`` for an awaiting statement, with the await done in trio.

    A copy of ``InteractiveShell.run_code`` (see :data:`RUN_CODE_CHECKED`), branch for branch,
    with ``await eval(...)`` replaced by ``await loop.run_cell_coroutine(eval(...))``.
    """
    import bdb
    from warnings import warn

    # IPython hides this frame and everything above it in tracebacks.
    __tracebackhide__ = "__ipython_bottom__"
    old_excepthook, sys.excepthook = sys.excepthook, shell.excepthook
    shell.sys_excepthook = old_excepthook
    failed = True
    try:
        try:
            await loop.run_cell_coroutine(eval(code_obj, shell.user_global_ns, shell.user_ns))
        finally:
            sys.excepthook = old_excepthook
    except SystemExit as e:
        if result is not None:
            result.error_in_exec = e
        shell.showtraceback(exception_only=True)
        warn("To exit: use 'exit', 'quit', or Ctrl-D.", stacklevel=1)
    except bdb.BdbQuit:
        if result is not None:
            result.error_in_exec = sys.exc_info()[1]
    except shell.custom_exceptions:
        etype, value, tb = sys.exc_info()
        if result is not None:
            result.error_in_exec = value
        shell.CustomTB(etype, value, tb)
    except BaseException:
        if result is not None:
            result.error_in_exec = sys.exc_info()[1]
        shell.showtraceback(running_compiled_code=True)
    else:
        failed = False
    return failed


# --------------------------------------------------------------------------- kernelspec


def kernel_spec() -> dict[str, Any]:
    """The ``kernel.json`` of the seqlab kernel, for this Python."""
    return {
        "argv": [sys.executable, "-m", "seqlab.notebook.kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }


def install_kernel(
    *, user: bool = False, sys_prefix: bool = False, prefix: str | None = None
) -> str:
    """Install the ``seqlab`` kernelspec and return the directory it was written to.

    Exactly one of ``user`` (your home's Jupyter directory), ``sys_prefix`` (this Python's
    environment) or ``prefix`` (``PREFIX/share/jupyter/kernels``) may be given; with none,
    the system-wide location is used, as ``jupyter kernelspec install`` does.
    """
    import json

    from jupyter_client.kernelspec import KernelSpecManager

    if sum([bool(user), bool(sys_prefix), prefix is not None]) > 1:
        raise ValueError("give at most one of user, sys_prefix and prefix")
    if sys_prefix:
        prefix = sys.prefix
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(kernel_spec(), f, indent=1)
            f.write("\n")
        return str(
            KernelSpecManager().install_kernel_spec(tmp, KERNEL_NAME, user=user, prefix=prefix)
        )


# --------------------------------------------------------------------------- launcher


def _kernel_class() -> type:
    from ipykernel.ipkernel import IPythonKernel

    class SeqlabKernel(IPythonKernel):
        """ipykernel's Python kernel, whose shutdown also stops the persistent trio loop."""

        def do_shutdown(self, restart: bool) -> Any:
            loop = current_loop()
            if loop is not None:
                loop.stop()
                if threading.current_thread() is not threading.main_thread():
                    loop.wait_stopped(timeout=3.0)
            return super().do_shutdown(restart)

    return SeqlabKernel


def main(argv: list[str] | None = None) -> None:
    """Start the seqlab kernel: ipykernel + ``%load_ext seqlab`` + one persistent trio loop."""
    global _current
    from ipykernel.kernelapp import IPKernelApp
    from tornado.ioloop import IOLoop

    loop = GuestLoop()
    _current = loop
    app = IPKernelApp.instance(kernel_class=_kernel_class())
    app.initialize(["--ext=seqlab", *(sys.argv[1:] if argv is None else argv)])
    host = IOLoop.current()
    host.add_callback(lambda: loop.start(asyncio.get_running_loop()))
    try:
        app.start()
    finally:
        asyncio_loop = getattr(host, "asyncio_loop", None)
        if asyncio_loop is not None and not asyncio_loop.is_closed():
            try:
                loop.finish()
            except (RuntimeError, TimeoutError):
                pass


if __name__ == "__main__":
    # Run the real module's main, not this __main__ copy, so the extension finds the loop.
    from seqlab.notebook.kernel import main as _main

    _main()
