"""Telling async callables from plain ones, the same way everywhere (stdlib only)."""

from __future__ import annotations

import functools
import inspect


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine: an ``async def`` function, also behind
    ``functools.partial`` or a ``functools.wraps`` decorator, or an object with an async
    ``__call__``."""
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            break
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def callable_name(fn: object) -> str:
    """The name a user would recognise ``fn`` by, looking through partials and decorators."""
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            break
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__
