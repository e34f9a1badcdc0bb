"""Lesson source notebooks: finding them, reading their nbgrader metadata, and the regions
between the ``### BEGIN ...`` / ``### END ...`` markers.

A lesson is an nbgrader-format notebook. Cells carry ``metadata.nbgrader`` with a
``grade_id``; *solution* cells (``solution: true``) hold the learner's code, *test* cells
(``grade: true`` with ``points``) hold checks, and *locked* cells may not be changed. Inside a
solution cell the instructor's answer sits between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; inside a test cell, checks between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS`` are removed from the student version and run only by the grader.

Where lessons live: the *sources* (solutions, hidden checks) are in the repository's
top-level ``lessons/`` folder, outside the package; the package ships only their *student
versions* (``seqlab/lessons/*.ipynb``, written by ``seqlab release``). A lesson is named by a
path to a notebook, or by its ID (``00-welcome``), looked up in a lessons folder given by the
caller, then in the checkout's ``lessons/`` (when seqlab runs from one), then among the
student versions installed with seqlab (enough for ``%seqlab check`` and ``seqlab lab``;
grading insists on a source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Lesson",
    "TestCell",
    "LessonNotFound",
    "installed_lessons",
    "source_dir",
    "load_lesson",
    "nbgrader_meta",
    "strip_region",
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "BEGIN_HIDDEN",
    "END_HIDDEN",
]

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"


class LessonNotFound(LookupError):
    """No installed lesson has that ID and no notebook exists at that path."""


def nbgrader_meta(cell: Any) -> dict[str, Any]:
    """The cell's ``metadata.nbgrader`` dict (empty when the cell has none)."""
    metadata = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    meta = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
    return meta if isinstance(meta, dict) else {}


def source_text(cell: Any) -> str:
    """A cell's source as one string (nbformat allows a list of lines on disk)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def strip_region(text: str, begin: str, end: str, replacement: list[str] | None = None) -> str:
    """Remove every ``begin``...``end`` region of ``text`` (markers included).

    Each region is replaced by ``replacement`` lines, indented like the ``begin`` marker.
    A ``begin`` without its ``end`` runs to the end of the text.
    """
    out: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if not inside and stripped.startswith(begin):
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            for rep in replacement or []:
                out.append(f"{indent}{rep}\n")
            continue
        if inside:
            if stripped.startswith(end):
                inside = False
            continue
        out.append(line)
    result = "".join(out)
    return result.rstrip("\n") if not text.endswith("\n") else result


@dataclass(frozen=True)
class TestCell:
    """One graded check cell of a lesson: its ``grade_id``, its points, and the exercise
    (the ``grade_id`` of the nearest solution cell above it, if any)."""

    grade_id: str
    points: float
    index: int
    exercise: str | None
    source: str

    @property
    def has_hidden(self) -> bool:
        return BEGIN_HIDDEN in self.source

    @property
    def visible_source(self) -> str:
        return strip_region(self.source, BEGIN_HIDDEN, END_HIDDEN)


@dataclass(frozen=True)
class Lesson:
    """A lesson source notebook, read once."""

    id: str
    path: Path
    notebook: Any

    @property
    def tests(self) -> list[TestCell]:
        found: list[TestCell] = []
        exercise: str | None = None
        for index, cell in enumerate(self.notebook.cells):
            meta = nbgrader_meta(cell)
            if meta.get("solution") and meta.get("grade_id"):
                exercise = str(meta["grade_id"])
            if cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution"):
                found.append(
                    TestCell(
                        grade_id=str(meta.get("grade_id", f"cell-{index}")),
                        points=float(meta.get("points", 0) or 0),
                        index=index,
                        exercise=exercise,
                        source=source_text(cell),
                    )
                )
        return found

    @property
    def solution_ids(self) -> list[str]:
        return [
            str(nbgrader_meta(c)["grade_id"])
            for c in self.notebook.cells
            if nbgrader_meta(c).get("solution") and nbgrader_meta(c).get("grade_id")
        ]

    @property
    def max_score(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def is_student_version(self) -> bool:
        """True for a released notebook (no solution regions or hidden checks left in it)."""
        for cell in self.notebook.cells:
            text = source_text(cell)
            if BEGIN_SOLUTION in text or BEGIN_HIDDEN in text:
                return False
        return True


def installed_lessons() -> dict[str, Path]:
    """Lesson ID -> path of the *student version* installed with seqlab."""
    from importlib.resources import files

    root = files("seqlab") / "lessons"
    found: dict[str, Path] = {}
    try:
        entries = list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        name = entry.name
        if name.endswith(".ipynb") and not name.startswith("."):
            found[name[: -len(".ipynb")]] = Path(str(entry))
    return dict(sorted(found.items()))


def source_dir() -> Path | None:
    """The checkout's top-level ``lessons/`` folder (the sources), when seqlab runs from one."""
    import seqlab

    folder = Path(seqlab.__file__).resolve().parent.parent / "lessons"
    return folder if (folder.parent / "pyproject.toml").exists() and folder.is_dir() else None


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_lesson(spec: str | Path, lessons_dir: str | Path | None = None) -> Lesson:
    """Read a lesson given a path to its notebook or its ID (``00-welcome``).

    An ID (or a bare file name that does not exist here) is looked up in ``lessons_dir``, then
    in the checkout's ``lessons/`` (:func:`source_dir`), then among the installed student
    versions. A path with a folder in it must exist.
    """
    import nbformat

    path = Path(spec)
    if path.suffix == ".ipynb" and len(path.parts) > 1 and not path.exists():
        # A path to a notebook that is missing: never grade against a namesake elsewhere.
        raise LessonNotFound(f"no lesson notebook at {str(spec)!r}")
    if not (path.suffix == ".ipynb" and path.exists()):
        key = str(spec)
        if key.endswith(".ipynb"):
            key = Path(key).stem
        folders = [Path(lessons_dir)] if lessons_dir is not None else []
        checkout = source_dir()
        if checkout is not None:
            folders.append(checkout)
        found = [f / f"{key}.ipynb" for f in folders if (f / f"{key}.ipynb").is_file()]
        lessons = installed_lessons()
        if _ID.match(key) and found:
            path = found[0]
        elif _ID.match(key) and key in lessons:
            path = lessons[key]
        else:
            known = ", ".join(lessons) or "none installed"
            raise LessonNotFound(
                f"no lesson {str(spec)!r}: give a lesson ID ({known}) "
                "or the path of a source notebook"
            )
    nb = nbformat.read(str(path), as_version=4)
    return Lesson(id=path.stem, path=path, notebook=nb)
