"""What a blocked trio task waits on, read from its await frames (trio only, no seqlab imports).

Both the deadlock report (:mod:`seqlab.runtime`) and the trace (:mod:`seqlab.trace`, which
records when a task blocks and what woke it) describe waits the same way:

- a seqlab primitive describes itself through its ``_describe_wait()`` method; the outermost
  such frame wins, because it is the call the user wrote ("at Barrier 'phase' (3 of 4 arrived)");
- otherwise the outermost trio object or function ("on trio.Lock", "in trio.sleep()");
- a parent in ``async with trio.open_nursery()`` waits "for its child tasks to finish";
- a thread (``trio.to_thread``) or I/O is *outside activity*: it can wake the task by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

__all__ = ["describe_wait", "wait_detail", "WAITS_FOR_CHILDREN"]

#: What a task blocked in ``async with trio.open_nursery()`` waits for.
WAITS_FOR_CHILDREN = "for its child tasks to finish"


def describe_wait(task: trio.lowlevel.Task) -> tuple[str, bool]:
    """What ``task`` is blocked on, and whether that is outside activity (a thread or I/O).

    A seqlab primitive describes itself through ``_describe_wait()``; the outermost such frame
    wins because it is the call the user wrote. Otherwise the outermost trio object or function.
    """
    described = None
    trio_part = None
    for frame, _ in task.iter_await_frames():
        module = frame.f_globals.get("__name__", "")
        if module == "trio._threads" or module.startswith("trio._core._io"):
            return "on a thread or I/O", True
        me: Any = frame.f_locals.get("self")
        if described is None and hasattr(me, "_describe_wait"):
            described = f"at {me._describe_wait()}"
        if trio_part is None and module.partition(".")[0] == "trio":
            kind = type(me).__name__
            if kind in ("NurseryManager", "Nursery"):
                trio_part = WAITS_FOR_CHILDREN
            elif type(me).__module__.startswith("trio"):
                trio_part = f"on trio.{kind.lstrip('_')}"
            else:
                trio_part = f"in trio.{frame.f_code.co_name}()"
    return described or trio_part or "on something outside seqlab and trio", False


def wait_detail(
    task: trio.lowlevel.Task,
    name_of: Callable[[trio.lowlevel.Task], str],
    t0: float = 0.0,
) -> tuple[str, str]:
    """A wait described for a trace: ``(what, on)``.

    ``what`` is the sentence of :func:`describe_wait`, made more precise where trio lets us see
    more: a sleep says until when (``t0`` is the trace's time zero on the trio clock), a lock
    says who holds it (``name_of`` names a task), a thread or I/O says which. ``on`` is a short,
    stable name for the object waited on, so that a view can group the waits on one thing:
    ``"Barrier 'phase'"``, ``"trio.Lock"``, ``"sleep"``, ``"children"``, ``"thread"``, ``"I/O"``.
    """
    described = None
    on = None
    trio_part = None
    trio_on = None
    for frame, _ in task.iter_await_frames():
        module = frame.f_globals.get("__name__", "")
        if module == "trio._threads":
            return "on a thread (trio.to_thread)", "thread"
        if module.startswith("trio._core._io"):
            return f"on I/O ({frame.f_code.co_name})", "I/O"
        # Reading f_locals builds a dict of the frame's locals: only do it for methods (and
        # for trio's sleep_until, below), since this runs at every block of a traced task.
        code = frame.f_code
        method = code.co_argcount > 0 and code.co_varnames[0] == "self"
        me: Any = frame.f_locals.get("self") if method else None
        if described is None and hasattr(me, "_describe_wait"):
            described = f"at {me._describe_wait()}"
            # A pipeline stage waits on what it reads: the stages before it, or the cursor.
            deps = getattr(getattr(me, "barrier", None), "_deps", None)
            on = (
                getattr(me, "_label", None)
                or (deps and ", ".join(str(getattr(d, "_label", d)) for d in deps))
                or type(me).__name__
            )
        if trio_part is None and module.partition(".")[0] == "trio":
            kind = type(me).__name__
            if kind in ("NurseryManager", "Nursery"):
                trio_part, trio_on = WAITS_FOR_CHILDREN, "children"
            elif type(me).__module__.startswith("trio"):
                name = kind.lstrip("_")
                trio_part, trio_on = f"on trio.{name}", f"trio.{name}"
                owner = getattr(me, "_owner", None)
                if isinstance(owner, trio.lowlevel.Task) and owner is not task:
                    trio_part += f" held by {name_of(owner)}"
            else:
                trio_part = f"in trio.{frame.f_code.co_name}()"
                trio_on = "sleep" if frame.f_code.co_name.startswith("sleep") else trio_part[3:]
        if trio_on == "sleep" and code.co_name == "sleep_until":
            deadline = frame.f_locals.get("deadline")
            if isinstance(deadline, (int, float)):
                trio_part = f"in trio.sleep until {deadline - t0:.3f}"
    if described is not None:
        if "(in its handler" in described and trio_part is not None:
            # A stage whose handler awaits is working, not waiting on the pipeline.
            return f"{described}: {trio_part}", "handler"
        return described, str(on)
    if trio_part is not None:
        return trio_part, str(trio_on)
    return "on something outside seqlab and trio", "other"
