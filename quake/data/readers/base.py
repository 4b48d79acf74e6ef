"""The dataset object every reader returns: one metadata table drives everything.

Like SeisBench's ``WaveformDataset``: ``metadata`` (SeisBench column names, one row per sample),
``get_sample(i) -> (waveforms, metadata)``, ``filter(mask)`` for subsets. Waveforms are read on
``get_sample``, never all at once, so a set far larger than memory can be used.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quake.classes import ClassNames, validate_class_name
from quake.data.components import StreamArray
from quake.data.config import PreprocessConfig
from quake.data.transforms import SkipTrace

logger = logging.getLogger(__name__)

LABEL_COLUMN = "source_type"
# Key of a sample's metadata dict that holds its StreamArray (quality record, recorded-sample
# mask) when the reader converted an obspy Stream; not a metadata column.
READING_KEY = "reading"
# Text columns with few distinct values (labels, stations, channels, events): kept as pandas
# categories, a 1-4 byte code per row instead of a string object (~60 bytes) per row.
CATEGORY_COLUMNS = (
    "source_id",
    "source_type",
    "source_magnitude_type",
    "station_network_code",
    "station_code",
    "station_location_code",
    "trace_channel",
    "trace_components",
    "trace_category",
    "split",
)


class WaveformDataset:
    """A set of three-component samples with a metadata table.

    Subclasses implement :meth:`_load`, returning the raw ``(3, n)`` float32 Z, N, E array of one
    metadata row at that row's ``trace_sampling_rate_hz`` (not trimmed, not normalised), or the
    :class:`~quake.data.components.StreamArray` of a converted Stream (its quality record then
    travels in the sample's metadata under :data:`READING_KEY`).
    ``skipped`` lists ``(item id, reason)`` for items dropped while opening.
    """

    def __init__(
        self,
        metadata: pd.DataFrame,
        *,
        path: str | os.PathLike | None = None,
        config: PreprocessConfig | None = None,
        skipped: Iterable[tuple[str, str]] = (),
    ):
        self.path = Path(path) if path is not None else None
        self.config = config or PreprocessConfig()
        self.metadata = compact_metadata(metadata.reset_index(drop=True))
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.class_names: ClassNames | None = None
        if LABEL_COLUMN in self.metadata.columns and len(self.metadata):
            self.class_names = ClassNames.from_labels(self.metadata[LABEL_COLUMN])
        for item, reason in self.skipped:
            logger.warning("%s: skipped %s (%s)", self.name, item, reason)
        if self.skipped:
            logger.info("%s: %d samples, %d skipped", self.name, len(self), len(self.skipped))

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else type(self).__name__

    @property
    def labels(self) -> np.ndarray | None:
        """Label (class name) per sample, or None for an unlabelled set."""
        if LABEL_COLUMN not in self.metadata.columns:
            return None
        return self.metadata[LABEL_COLUMN].to_numpy(dtype=object)

    def __len__(self) -> int:
        return len(self.metadata)

    def __repr__(self) -> str:
        classes = self.class_names.to_list() if self.class_names else None
        return f"{type(self).__name__}({self.name!r}, {len(self)} samples, classes={classes})"

    def get_sample(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """``((3, n) float32 Z, N, E raw waveform, metadata row as dict)``.

        Raises :class:`quake.data.SkipTrace` when the item cannot be read.
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample index {i} out of range for {len(self)} samples")
        row = self.row(i)
        loaded = self._load(row)
        if isinstance(loaded, StreamArray):  # read from a Stream: keep what the reading found
            row[READING_KEY] = loaded
            return loaded.data, row
        return loaded, row

    def get_samples(
        self, indices: Sequence[int] | np.ndarray
    ) -> list[tuple[np.ndarray | SkipTrace, dict[str, Any]]]:
        """``(raw waveform, metadata row)`` of several samples, in the order asked; an item that
        cannot be read comes back with the :class:`SkipTrace` saying why in place of its
        waveform, so one bad item never fails a batch.

        Readers that can read neighbours together (HDF5 buckets) override this; here it is one
        :meth:`get_sample` per item.
        """
        out: list[tuple[np.ndarray | SkipTrace, dict[str, Any]]] = []
        for i in indices:
            try:
                out.append(self.get_sample(int(i)))
            except SkipTrace as exc:
                out.append((exc, self.row(int(i))))
        return out

    def get_waveforms(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray | SkipTrace]:
        """The waveforms of :meth:`get_samples` (a SkipTrace for an unreadable item)."""
        return [waveform for waveform, _ in self.get_samples(indices)]

    def row(self, i: int) -> dict[str, Any]:
        """Metadata row ``i`` as a dict (fast: no pandas row object per call)."""
        out = {}
        for name, (values, categories) in self._column_arrays().items():
            if categories is None:
                out[name] = _python_value(values[i])
            else:  # category codes: -1 is a missing value
                code = values[i]
                out[name] = _python_value(categories[code]) if code >= 0 else np.nan
        return out

    def _column_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Per column ``(values, None)``, or ``(codes, categories)`` for a category column, so
        that fast row access costs no per-row object for those."""
        cached = self.__dict__.get("_columns")
        if cached is None or cached[0] is not self.metadata:
            arrays = {}
            for c in self.metadata.columns:
                column = self.metadata[c]
                if isinstance(column.dtype, pd.CategoricalDtype):
                    arrays[c] = (
                        column.cat.codes.to_numpy(),
                        column.cat.categories.to_numpy(dtype=object),
                    )
                else:
                    arrays[c] = (column.to_numpy(), None)
            cached = (self.metadata, arrays)
            self.__dict__["_columns"] = cached
        return cached[1]

    def _load(self, row: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def filter(self, mask: Any) -> WaveformDataset:
        """A subset view: ``mask`` is a boolean array/Series over samples (or an index array)."""
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (len(self),):
                raise ValueError(f"mask must have shape ({len(self)},), got {mask.shape}")
            subset = self.metadata[mask]
        else:
            subset = self.metadata.iloc[mask]
        view = copy.copy(self)
        view.metadata = subset.reset_index(drop=True)
        return view


def compact_metadata(metadata: pd.DataFrame) -> pd.DataFrame:
    """The table with :data:`CATEGORY_COLUMNS` as categories (values and order unchanged).

    For a million-trace set this is most of the metadata's memory: the table is what grows with
    the set, since waveforms are read on demand.
    """
    columns = [
        c
        for c in CATEGORY_COLUMNS
        if c in metadata.columns
        and not isinstance(metadata[c].dtype, pd.CategoricalDtype)
        and not pd.api.types.is_numeric_dtype(metadata[c])
    ]
    if not columns:
        return metadata
    return metadata.astype({c: "category" for c in columns})


def normalize_labels(
    metadata: pd.DataFrame, item_column: str = "trace_name", aliases: dict[str, str] | None = None
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Validate ``source_type`` (after ``aliases``); rows with an unknown label are skipped."""
    if LABEL_COLUMN not in metadata.columns:
        return metadata, []
    aliases = aliases or {}
    normalized: list[str | None] = []
    skipped: list[tuple[str, str]] = []
    cache: dict[Any, str | None] = {}
    for item, label in zip(metadata[item_column], metadata[LABEL_COLUMN], strict=True):
        if label not in cache:
            try:
                key = str(label).strip().lower()
                cache[label] = validate_class_name(aliases.get(key, key))
            except ValueError:
                cache[label] = None
        if cache[label] is None:
            skipped.append(
                (str(item), f"unknown label: {label!r} is not a QuakeML event type or 'noise'")
            )
        normalized.append(cache[label])
    keep = np.array([n is not None for n in normalized], dtype=bool)
    out = metadata.copy()
    out[LABEL_COLUMN] = normalized
    return out[keep].reset_index(drop=True), skipped


def _python_value(value: Any) -> Any:
    """numpy scalar -> Python scalar; pandas missing values -> NaN (as in ``iloc[i].to_dict()``)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or value is pd.NA:
        return np.nan
    return value
