"""Run the lessons with this interpreter's seqlab kernel: ``pytest --nbval lessons/``.

The lessons' metadata names the ``seqlab`` kernelspec. So that checking them needs no
kernelspec installed beforehand (and never picks up one that points at another Python), the
session installs the spec into a temporary prefix and puts that prefix first on JUPYTER_PATH.
This file is not part of the installed package (only the notebooks are).
"""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from seqlab.notebook.kernel import install_kernel

    prefix = tempfile.mkdtemp(prefix="seqlab-lessons-kernel-")
    install_kernel(prefix=prefix)
    share = os.path.join(prefix, "share", "jupyter")
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = share if not previous else os.pathsep.join([share, previous])
    config._seqlab_kernel_prefix = prefix  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    prefix = getattr(config, "_seqlab_kernel_prefix", None)
    if prefix:
        shutil.rmtree(prefix, ignore_errors=True)
