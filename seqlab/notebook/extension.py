"""``%load_ext seqlab``: register the magics, and hook cells into the teaching kernel's loop."""

from __future__ import annotations

from typing import Any

from .kernel import attach_shell, current_loop


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%seqlab`` / ``%%seqlab`` in ``ipython``.

    In the seqlab kernel this also makes cells that await run in the persistent trio loop.
    In any other IPython kernel the magics work the same, without the persistent loop.
    """
    from .magics import SeqlabMagics

    ipython.register_magics(SeqlabMagics)
    loop = current_loop()
    if loop is not None:
        attach_shell(ipython, loop)
