"""Import every scenario module of :mod:`seqlab.bench` (each registers its rows)."""

from . import _load_scenarios

_load_scenarios()
