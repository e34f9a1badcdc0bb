"""Checks for graded lessons, and (in submodules) the grader and its adapters.

Importing this package imports only the checks; the grader, which drives Jupyter kernels,
lives in submodules imported on demand.
"""

from .checks import CheckFailed, check, check_equal, check_explore, check_raises, excerpt

__all__ = ["CheckFailed", "check", "check_equal", "check_explore", "check_raises", "excerpt"]
