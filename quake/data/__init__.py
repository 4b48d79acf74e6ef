"""The data side of quake: readers, component handling, transforms and the adapter.

``quake.data.synthetic`` (the embedded default set) is imported on first use
(``quake.data.synthetic`` attribute access or ``from quake.data import synthetic``).
"""

from __future__ import annotations

import importlib
from typing import Any

from quake.data.adapter import WaveformDataAdapter, anchor_sample_from_metadata, prepare_window
from quake.data.components import (
    COMPONENTS,
    component_of,
    select_band,
    stream_to_array,
    stream_to_array_info,
    window_from_stream,
)
from quake.data.config import DEFAULT_TRANSFORMS, PreprocessConfig, TransformOP
from quake.data.readers import (
    CatalogDataset,
    LabelSpec,
    SeisBenchDataset,
    SteadDataset,
    WaveformDataset,
    open_dataset,
)
from quake.data.seisbench_writer import SeisBenchWriter
from quake.data.transforms import (
    SkipTrace,
    resample_waveform,
    spectrogram_batch,
    trim_window,
    window_from_array,
    zscore_batch,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_TRANSFORMS",
    "CatalogDataset",
    "PreprocessConfig",
    "SeisBenchDataset",
    "SeisBenchWriter",
    "SkipTrace",
    "SteadDataset",
    "TransformOP",
    "WaveformDataAdapter",
    "WaveformDataset",
    "anchor_sample_from_metadata",
    "component_of",
    "open_dataset",
    "LabelSpec",
    "prepare_window",
    "resample_waveform",
    "select_band",
    "spectrogram_batch",
    "stream_to_array",
    "stream_to_array_info",
    "trim_window",
    "window_from_array",
    "window_from_stream",
    "zscore_batch",
]


def __getattr__(name: str) -> Any:
    """Import ``synthetic`` lazily: it may be large, and may not exist in every checkout."""
    if name == "synthetic":
        return importlib.import_module("quake.data.synthetic")
    raise AttributeError(f"module 'quake.data' has no attribute {name!r}")
