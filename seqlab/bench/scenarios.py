"""Every scenario module; importing this registers all comparisons."""

from . import barrier, convoy, grading, lessons, pipeline, sequencer, widgets  # noqa: F401
