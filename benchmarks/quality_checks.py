"""The quality checks switched off, for ``bench_classify.py`` and ``bench_data.py`` to price them.

A helper beside the benchmark scripts, not part of the package: the scripts import it from
their own folder, and the tests put this folder on ``sys.path`` to check it."""

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
