"""The dataset object every reader returns: one metadata table drives everything.

Like SeisBench's ``WaveformDataset``: ``metadata`` (SeisBench column names, one row per sample),
``get_sample(i) -> (waveforms, metadata)``, ``filter(mask)`` for subsets. Waveforms are read on
``get_sample``, never all at once, so a set far larger than memory can be used.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
# names sets use for quake's classes, understood without a data.label_map
BUILTIN_LABEL_ALIASES = {"earthquake_local": "earthquake", "earthquake_regional": "earthquake"}
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
    "trace_component_order",
    "trace_chunk",
    "split",
)


@dataclass(frozen=True)
class LabelSpec:
    """Where a set's labels are and how its names become quake's class names.

    ``column``: the metadata column of SeisBench-format and STEAD sets that holds the label
    (``source_type``, as SeisBench names it; e.g. ``trace_category`` or ``label``); catalogs
    take theirs from ``event_type``. ``mapping``: a set's own names -> class names (QuakeML event
    types or ``noise``), e.g. ``{"eq": "earthquake", "surface event": "landslide"}``; matched
    case-insensitively, after the built-in aliases (``earthquake_local`` -> ``earthquake``).
    """

    column: str = LABEL_COLUMN
    mapping: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        normalized = {}
        for name, target in dict(self.mapping).items():
            try:
                normalized[str(name).strip().lower()] = validate_class_name(target)
            except ValueError as err:
                raise ValueError(f"data.label_map {name!r}: {err}") from None
        object.__setattr__(self, "mapping", normalized)

    def class_name(self, label: object) -> str | None:
        """The class name of a set's ``label``, or None when it is not one (nor mapped to one)."""
        key = str(label).strip().lower()
        try:
            return validate_class_name(self.mapping.get(key) or BUILTIN_LABEL_ALIASES.get(key, key))
        except ValueError:
            return None


def unknown_label_reason(label: object, where: str = "") -> str:
    return (
        f"unknown label: {where}{label!r} is not a QuakeML event type or 'noise' "
        "(map it with data.label_map)"
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
            logger.debug("%s: skipped %s (%s)", self.name, item, reason)
        if self.skipped:  # one line for the lot: a set with 10,000 unknown labels is one problem
            counts = Counter(reason for _, reason in self.skipped).most_common()
            shown = "; ".join(f"{reason} x{n}" for reason, n in counts[:10])
            more = f"; and {len(counts) - 10} other reasons" if len(counts) > 10 else ""
            logger.warning(
                "%s: %d samples, %d skipped: %s%s",
                self.name, len(self), len(self.skipped), shown, more,
            )  # fmt: skip

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
    metadata: pd.DataFrame, labels: LabelSpec, item_column: str = "trace_name"
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """``source_type`` from ``labels.column``, as class names (``labels.mapping``); rows with an
    unknown label are skipped. A set without the column is returned as is (unlabelled), unless
    the column was asked for by name. The kept rows keep their index labels."""
    if labels.column not in metadata.columns:
        if labels.column != LABEL_COLUMN:
            raise ValueError(
                f"data.label_column {labels.column!r} is not a metadata column; expected one of "
                f"{sorted(map(str, metadata.columns))}"
            )
        return metadata, []
    normalized: list[str | None] = []
    skipped: list[tuple[str, str]] = []
    cache: dict[Any, str | None] = {}
    for item, label in zip(metadata[item_column], metadata[labels.column], strict=True):
        if label not in cache:
            cache[label] = labels.class_name(label)
        if cache[label] is None:
            skipped.append((str(item), unknown_label_reason(label)))
        normalized.append(cache[label])
    keep = np.array([n is not None for n in normalized], dtype=bool)
    out = metadata.copy()
    out[LABEL_COLUMN] = normalized
    return out[keep], skipped


def _python_value(value: Any) -> Any:
    """numpy scalar -> Python scalar; pandas missing values -> NaN (as in ``iloc[i].to_dict()``)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or value is pd.NA:
        return np.nan
    return value
