"""Shortcuts in a training set's metadata: a class told apart by how it was recorded.

When nearly every recording of one class has a sampling rate or a set of components that
nearly no recording of the other classes has (every explosion recorded at 20 Hz and upsampled,
every landslide vertical-only beside three-component earthquakes), a network can learn the
rate's spectral edge or the empty channels instead of the signal, and its cross-validated
figures will not say so. The check reads the metadata only: the original sampling rate of each
recording and its components.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: A value is a shortcut of a class when it covers at least this share of the class's
#: recordings ...
CLASS_SHARE = 0.9
#: ... and at most this share of the other classes' recordings ...
OTHERS_SHARE = 0.1
#: ... and the class and the other classes each have at least this many recordings. With two
#: classes a shortcut is named from both sides (the vertical-only class and the three-component
#: one): both are what the model can learn.
MIN_RECORDINGS = 5


def original_rates(metadata: pd.DataFrame) -> np.ndarray | None:
    """Each recording's sampling rate before resampling (None where unknown): the column
    ``trace_original_sampling_rate_hz`` where a reader filled it, else
    ``trace_sampling_rate_hz`` (a SeisBench set stores its traces at their own rate)."""
    rates = None
    for column in ("trace_sampling_rate_hz", "trace_original_sampling_rate_hz"):
        if column in metadata:
            values = pd.to_numeric(metadata[column], errors="coerce").to_numpy(np.float64)
            rates = values if rates is None else np.where(np.isnan(values), rates, values)
    if rates is None:
        return None
    return np.array([None if np.isnan(r) else float(r) for r in rates], dtype=object)


def _components(metadata: pd.DataFrame) -> np.ndarray | None:
    if "trace_components" not in metadata:
        return None
    return np.array(
        [None if pd.isna(c) or not str(c) else str(c) for c in metadata["trace_components"]],
        dtype=object,
    )


def _describe(attribute: str, value, target_rate_hz: float) -> str:
    """What the recordings with ``value`` have in common, for the warning."""
    if attribute == "components":
        return f"have {'only ' if len(value) < 3 else ''}the components {value}"
    if value == target_rate_hz:
        return f"were recorded at {value:g} Hz (not resampled)"
    return f"were resampled from {value:g} Hz"


def find_shortcuts(
    metadata: pd.DataFrame,
    labels: np.ndarray,
    class_names: list[str],
    target_rate_hz: float,
) -> list[dict]:
    """Every (class, sampling rate or components) pair that is a shortcut by the rule of
    :data:`CLASS_SHARE`, :data:`OTHERS_SHARE` and :data:`MIN_RECORDINGS`, each with the figures
    and a ``text`` that names them."""
    labels = np.asarray(labels)
    attributes = {"sampling rate": original_rates(metadata), "components": _components(metadata)}
    found = []
    for attribute, values in attributes.items():
        if values is None:
            continue
        for k, name in enumerate(class_names):
            mine = labels == k
            n, n_others = int(mine.sum()), int((~mine).sum())
            if min(n, n_others) < MIN_RECORDINGS:  # too few to tell a habit from chance
                continue
            for value, count in Counter(v for v in values[mine] if v is not None).items():
                share, others = count / n, float(np.mean(values[~mine] == value))
                if share < CLASS_SHARE or others > OTHERS_SHARE:
                    continue
                text = (
                    f"class {name}: {share:.0%} of its {n} recordings "
                    f"{_describe(attribute, value, target_rate_hz)}, {others:.0%} of the other "
                    "classes' (a shortcut the model can learn)"
                )
                found.append(
                    {
                        "class": name,
                        "attribute": attribute,
                        "value": value,
                        "share": share,
                        "n_recordings": n,
                        "share_others": others,
                        "text": text,
                    }
                )
    for shortcut in found:
        logger.warning("%s", shortcut["text"])
    return found
