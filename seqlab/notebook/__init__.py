"""Everything Jupyter: the ``%seqlab`` magics, the teaching kernel and (separately) the widgets.

Importing this package is cheap: nothing from Jupyter is imported until it is used. The magics
load with ``%load_ext seqlab``; the teaching kernel installs with ``seqlab install-kernel``.
``seqlab.notebook.spawn`` starts a background task in the teaching kernel's trio loop;
``seqlab.notebook.Timeline`` and the other views draw a trace.
"""

from __future__ import annotations

from typing import Any

_KERNEL = ("current_loop", "spawn")
_WIDGETS = ("Timeline", "BarrierView", "ConvoyView", "RingView", "make_view", "live_view")
_STEPPER = ("StepperWidget",)
__all__ = [*_KERNEL, *_WIDGETS, *_STEPPER]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m seqlab.notebook.kernel`` does not import the module twice and
    # anywidget loads only when a view is wanted.
    if name in _KERNEL:
        from . import kernel

        return getattr(kernel, name)
    if name in _STEPPER:
        from . import stepper_widget

        return getattr(stepper_widget, name)
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
