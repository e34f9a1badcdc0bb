"""Fixtures for the grader's tests."""

from __future__ import annotations

import pytest
from grading_support import SOURCE

from seqlab.grading.lesson import Lesson, load_lesson


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "throughput: grades a batch to measure submissions/minute")


@pytest.fixture(scope="session")
def lesson() -> Lesson:
    return load_lesson(SOURCE)
