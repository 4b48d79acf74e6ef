"""Measurement helpers behind ``scripts/bench_*.py``: kept apart from the model and data code,
importable so that tests can check the figures they print follow from what they count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from quake.data import quality


@contextlib.contextmanager
def quality_checks_off() -> Iterator[None]:
    """Inspection of every channel (spikes, clipping, non-finite samples, dropouts) replaced by
    "found nothing", to measure what the quality checks cost in one run. For benchmarks only: a
    process that forks inside the block (a reader worker) inherits it."""
    originals = quality.inspect_channel, quality.dropout_runs

    def found_nothing(x, span=None):
        return quality.ChannelFindings()

    def no_dropouts(x, rate_hz, clipped=()):
        return []

    quality.inspect_channel, quality.dropout_runs = found_nothing, no_dropouts
    try:
        yield
    finally:
        quality.inspect_channel, quality.dropout_runs = originals
