"""Run the lessons with this interpreter's seqlab kernel: ``pytest --nbval lessons/``.

The lessons' metadata names the ``seqlab`` kernelspec. So that checking them needs no
kernelspec installed beforehand (and never picks up one that points at another Python), the
session installs the spec into a temporary prefix and puts that prefix first on JUPYTER_PATH.

It lives beside the lesson sources, outside the package, and never ships. Nothing imports it; pytest loads it only when it collects this folder, and then it does
nothing unless nbval runs the notebooks (``--nbval`` or ``--nbval-lax``). When it does act,
the prefix is removed and JUPYTER_PATH restored when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# (kernelspec prefix, JUPYTER_PATH before the session), set only when nbval runs.
_STATE = pytest.StashKey[tuple[str, str | None]]()


def _nbval_active(config: pytest.Config) -> bool:
    return any(config.getoption(name, default=False) for name in ("nbval", "nbval_lax"))


def pytest_configure(config: pytest.Config) -> None:
    if not _nbval_active(config):
        return
    from seqlab.notebook.kernel import install_kernel

    prefix = tempfile.mkdtemp(prefix="seqlab-lessons-kernel-")
    install_kernel(prefix=prefix)
    share = os.path.join(prefix, "share", "jupyter")
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = share if not previous else os.pathsep.join([share, previous])
    config.stash[_STATE] = (prefix, previous)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    prefix, previous = state
    if previous is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = previous
    shutil.rmtree(prefix, ignore_errors=True)
