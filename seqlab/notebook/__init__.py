"""Everything Jupyter: the ``%seqlab`` magics, the teaching kernel and (separately) the widgets.

Importing this package is cheap: nothing from Jupyter is imported until it is used. The magics
load with ``%load_ext seqlab``; the teaching kernel installs with ``seqlab install-kernel``.
``seqlab.notebook.spawn`` starts a background task in the teaching kernel's trio loop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["current_loop", "spawn"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m seqlab.notebook.kernel`` does not import the module twice.
    if name in __all__:
        from . import kernel

        return getattr(kernel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
