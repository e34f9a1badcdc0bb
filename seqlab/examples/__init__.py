"""Runnable scenarios shared by the lessons, the docs, the tests and the benchmarks."""
