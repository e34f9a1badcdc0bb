"""``%load_ext seqlab``: register the magics, and hook cells into the teaching kernel's loop."""

from __future__ import annotations

import sys
from typing import Any

from .kernel import attach_shell, current_loop

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%seqlab`` / ``%%seqlab`` in ``ipython``.

    In the seqlab kernel this also makes cells that await run in the persistent trio loop.
    A cell that raises an exception group (a nursery whose tasks failed) shows its leaf
    exceptions first, with the learner's frames only, unless another handler is installed.
    In any other IPython kernel the magics work the same, without the persistent loop.
    """
    from ._report import show_group
    from .magics import SeqlabMagics

    ipython.register_magics(SeqlabMagics)
    if not getattr(ipython, "custom_exceptions", ()):
        # An exception group from a cell: its leaves first, the learner's frames only.
        ipython.set_custom_exc((BaseExceptionGroup,), show_group)
    loop = current_loop()
    if loop is not None:
        attach_shell(ipython, loop)
