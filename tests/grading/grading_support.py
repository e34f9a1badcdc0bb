"""Helpers for the grader's tests: the fixture lessons and submissions made from them."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from seqlab.grading.lesson import nbgrader_meta
from seqlab.grading.release import release_notebook

FIXTURES = Path(__file__).parent / "fixtures"
SOURCE = FIXTURES / "fixture-lesson.ipynb"
TINY = FIXTURES / "tiny-lesson.ipynb"

DOUBLE = "def double(x):\n    return 2 * x"
DOUBLE_WRONG = "def double(x):\n    return 0"
DEPOSIT = (
    "async def deposit(account, amount):\n"
    "    async with account.lock:\n"
    "        seen = account.balance\n"
    "        await trio.lowlevel.checkpoint()\n"
    "        account.balance = seen + amount"
)
# Passes on some seeds (3, for one), loses a deposit on most others.
DEPOSIT_RACY = (
    "async def deposit(account, amount):\n"
    "    seen = account.balance\n"
    "    await trio.lowlevel.checkpoint()\n"
    "    account.balance = seen + amount"
)


def make_submission(
    directory: Path,
    name: str,
    solutions: dict[str, str] | None = None,
    tests: dict[str, str] | None = None,
    extra: list[str] | None = None,
    source: Path = SOURCE,
) -> Path:
    """A learner's notebook: the released lesson with the given cells filled in or edited."""
    nb = release_notebook(nbformat.read(str(source), as_version=4))
    nb = copy.deepcopy(nb)
    changes = {**(solutions or {}), **(tests or {})}
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in changes:
            cell.source = changes[gid]
    for text in extra or []:
        nb.cells.append(nbformat.v4.new_code_cell(text))
    path = directory / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path
