"""Kernel side of the grader: undo the learner's monkeypatching before each check runs.

The grader's first cell (before any learner code) calls :func:`install`, which snapshots the
functions, classes and submodules of ``seqlab``, ``trio`` and ``outcome``: every function's
code, defaults and closure-free identity, every class attribute that is a function or
descriptor, and every module attribute that is a function, class or module, plus
``builtins``. Before each check cell, the grader's prefix calls :meth:`Guard.restore`, which
puts all of that back and rebinds the grading helpers (``check_equal`` and friends) in the
user namespace. So ``check_equal = lambda *a, **k: None``, ``seqlab.grading.check = ...``,
``seqlab.runtime.explore = ...`` or ``f.__code__ = ...`` in learner code no longer matter
when the check runs. Each check cell ends by verifying that nothing in the snapshot changed
while it ran (a learner's background thread re-patching it); if something did, the cell
fails.

This is a defence against tampering from ordinary Python code, not a sandbox: code running in
the same process can in principle find and disable this object too. The grader therefore
also verifies, with canary cells that must fail, that the kernel still reports failures
(see :mod:`seqlab.grading.grader`).
"""

from __future__ import annotations

import builtins
import sys
import types
from typing import Any

__all__ = ["Guard", "install"]

_PREFIXES = ("seqlab", "trio", "outcome")
_FN_ATTRS = ("__code__", "__defaults__", "__kwdefaults__")


def _watched(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _PREFIXES)


def _restorable(value: object) -> bool:
    return isinstance(
        value,
        (
            types.FunctionType,
            types.BuiltinFunctionType,
            type,
            types.ModuleType,
            staticmethod,
            classmethod,
            property,
        ),
    )


class Guard:
    """A snapshot of the grading machinery, and the means to put it back."""

    def __init__(self) -> None:
        self._modules: dict[str, types.ModuleType] = {}
        self._module_attrs: list[tuple[dict[str, Any], str, Any]] = []
        self._class_attrs: list[tuple[type, str, Any]] = []
        self._functions: list[tuple[types.FunctionType, tuple[Any, ...]]] = []
        self._builtins = dict(builtins.__dict__)
        seen: set[int] = set()
        for name, module in list(sys.modules.items()):
            if module is None or not _watched(name):
                continue
            self._modules[name] = module
            for attr, value in list(vars(module).items()):
                if _restorable(value):
                    self._module_attrs.append((vars(module), attr, value))
                    self._remember(value, seen)

    def _remember(self, value: object, seen: set[int]) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, types.FunctionType):
            self._functions.append((value, tuple(getattr(value, a) for a in _FN_ATTRS)))
        elif isinstance(value, type) and _watched(getattr(value, "__module__", "") or ""):
            for attr, member in list(vars(value).items()):
                if attr in ("__dict__", "__weakref__"):
                    continue
                if _restorable(member):
                    self._class_attrs.append((value, attr, member))
                    fn = getattr(member, "__func__", member)
                    if isinstance(fn, types.FunctionType):
                        self._remember(fn, seen)
                    elif isinstance(member, property):
                        for part in (member.fget, member.fset, member.fdel):
                            if isinstance(part, types.FunctionType):
                                self._remember(part, seen)

    def restore(self, namespace: dict[str, Any] | None = None) -> None:
        """Undo learner changes to the snapshot, then rebind the helpers in ``namespace``."""
        builtins.__dict__.update(self._builtins)
        sys.modules.update(self._modules)
        for module_dict, attr, value in self._module_attrs:
            module_dict[attr] = value
        for cls, attr, value in self._class_attrs:
            if cls.__dict__.get(attr) is not value:
                try:
                    type.__setattr__(cls, attr, value)
                except (TypeError, AttributeError):
                    pass
        for fn, saved in self._functions:
            for attr, value in zip(_FN_ATTRS, saved, strict=True):
                if getattr(fn, attr) is not value:
                    setattr(fn, attr, value)
        if namespace is not None:
            grading = self._modules.get("seqlab.grading")
            if grading is not None:
                for name in getattr(grading, "__all__", ()):
                    namespace[name] = getattr(grading, name)
            if "seqlab" in self._modules and "seqlab" in namespace:
                namespace["seqlab"] = self._modules["seqlab"]
            if "trio" in self._modules and "trio" in namespace:
                namespace["trio"] = self._modules["trio"]


class TamperedError(RuntimeError):
    """The grading machinery changed while a check ran (a learner thread patching it)."""


def _verify(guard: Guard) -> None:
    changed = [
        f"{name}"
        for module_dict, name, value in guard._module_attrs
        if module_dict.get(name) is not value
    ]
    changed += [
        f"{cls.__name__}.{name}"
        for cls, name, value in guard._class_attrs
        if cls.__dict__.get(name) is not value
    ]
    changed += [
        fn.__qualname__
        for fn, saved in guard._functions
        if any(getattr(fn, a) is not v for a, v in zip(_FN_ATTRS, saved, strict=True))
    ]
    if changed:
        raise TamperedError(
            "the grading helpers were changed while this check ran ("
            + ", ".join(sorted(set(changed))[:5])
            + "); the check does not count"
        )


def install(nonce: str) -> Guard:
    """Snapshot now and keep the guard where the grader's prefix will look for it."""
    import seqlab  # the snapshot covers whatever is imported now
    import seqlab.grading
    import seqlab.runtime  # noqa: F401

    guard = Guard()
    holder = types.ModuleType(f"_seqlab_guard_{nonce}")
    holder.restore = guard.restore  # type: ignore[attr-defined]
    holder.verify = lambda: _verify(guard)  # type: ignore[attr-defined]
    sys.modules[holder.__name__] = holder
    return guard
