"""The graded lesson notebooks shipped with seqlab, and what ``seqlab lab`` and Binder do with them.

The notebooks in this folder are the *student versions* (no solutions, no hidden checks, no
outputs), written by ``seqlab release`` from the sources in the repository's top-level
``lessons/`` folder, which never ship (tests/test_lessons.py keeps the two in step, and
tests/grading/test_packaging.py checks the wheel). :func:`copy_student_versions` copies them
into a folder of the learner's own; the installed files are never edited. Example::

    from seqlab.lessons import copy_student_versions, ensure_kernel

    copied, kept = copy_student_versions("my-lessons")
    ensure_kernel()          # the "Python 3 (seqlab)" kernel, for this Python

Imports are absolute and Jupyter code is imported inside the functions, so that importing
this package stays cheap (and works however a test runner names it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["copy_student_versions", "ensure_kernel", "jupyterlab_command", "lesson_sources"]


def lesson_sources() -> dict[str, Path]:
    """Lesson ID (``00-welcome``) -> path of its installed student version, in lesson order."""
    from seqlab.grading.lesson import installed_lessons

    return installed_lessons()


def copy_student_versions(target: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Write the student version of every lesson into ``target`` (created if missing).

    A lesson whose file already exists in ``target`` is left alone: it is the learner's work.
    Returns ``(copied, kept)``, the file names written and the file names kept.
    """
    import nbformat

    from seqlab.grading.release import release_notebook

    folder = Path(target)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"target: {folder} exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    kept: list[str] = []
    for lesson_id, source in lesson_sources().items():
        dest = folder / f"{lesson_id}.ipynb"
        if dest.exists():
            kept.append(dest.name)
            continue
        student = release_notebook(nbformat.read(str(source), as_version=4))
        nbformat.write(student, str(dest))
        copied.append(dest.name)
    return copied, kept


def ensure_kernel() -> str | None:
    """Make sure the ``seqlab`` kernelspec exists and runs this Python; install it if not.

    Installs into this environment when running in a virtual environment, else for the
    current user. Returns the directory written, or ``None`` when nothing had to change.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    from seqlab.notebook.kernel import KERNEL_NAME, install_kernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        spec = None
    current = os.path.realpath(sys.executable)
    if spec is not None and spec.argv and os.path.realpath(spec.argv[0]) == current:
        return None
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    return install_kernel(user=not in_venv, sys_prefix=in_venv)


def jupyterlab_command(
    root: str | os.PathLike[str],
    *,
    no_browser: bool = False,
    port: int | None = None,
) -> list[str]:
    """The command line that starts JupyterLab, with this Python, serving ``root``.

    JupyterLab refuses to run as root unless told to; as root (a container, Binder's build,
    a fresh machine) the user plainly wants it to run, so the command says so.
    """
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={Path(root)}"]
    if no_browser:
        command.append("--no-browser")
    if port is not None:
        command.append(f"--port={port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    return command
