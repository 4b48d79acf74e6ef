"""SeisBench-format sets (``metadata.csv`` + ``waveforms.hdf5``), read lazily with h5py.

The HDF5 file is opened on first read, once per process (reopened after a fork, so each
DataLoader worker has its own handle). ``data_format`` attributes are respected:
``component_order`` (e.g. ``ZNE``, ``ENZ``, ``Z12``; reordered to Z, N, E), ``dimension_order``
(``CW`` or ``WC``) and ``sampling_rate``. Trace names are plain (``data/<trace_name>``) or
bucketed (``bucket3$12,:3,:6000`` = row 12 of ``data/bucket3``, first 3 channels, 6000 samples).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from quake.data.components import COMPONENTS, component_of, listed_components
from quake.data.config import PreprocessConfig
from quake.data.quality import check_numeric
from quake.data.readers.base import LABEL_COLUMN, LabelSpec, WaveformDataset, normalize_labels
from quake.data.transforms import SkipTrace

logger = logging.getLogger(__name__)

# Open bucket dataset handles kept per process (a handle costs little; a lookup costs ~80 us).
MAX_OPEN_BUCKETS = 256
# Batched reads: rows of one bucket at most this far apart are read as one slab (reading a few
# unneeded rows costs less than another read call).
MAX_ROW_GAP = 8
# HDF5 chunk cache per open file: room for the chunks of a batch of a chunked, compressed set,
# so that neighbouring traces do not decompress the same chunk again (h5py's default is 1 MiB).
CHUNK_CACHE_BYTES = 32 * 1024 * 1024

# Labels of other conventions that mean a QuakeML type (STEAD's trace_category values).


def parse_trace_name(trace_name: str) -> tuple[str, tuple[Any, ...] | None]:
    """``"bucket3$12,:3,:6000"`` -> ``("bucket3", (12, slice(None, 3), slice(None, 6000)))``;
    a plain name -> ``(name, None)``. ValueError naming the bad locator otherwise."""
    key, sep, locator = str(trace_name).partition("$")
    if not sep:
        return key, None
    index: list[Any] = []
    try:
        for part in locator.split(","):
            part = part.strip()
            if ":" in part:
                pieces = [int(p) if p.strip() else None for p in part.split(":")]
                index.append(slice(*pieces))
            else:
                index.append(int(part))
    except ValueError:
        raise ValueError(
            f"bad bucket locator in trace name {trace_name!r}; expected e.g. 'bucket3$12,:3,:6000'"
        ) from None
    return key, tuple(index)


class HDF5Dataset(WaveformDataset):
    """Shared lazy HDF5 access for SeisBench-format and STEAD sets."""

    default_component_order = "ZNE"
    default_dimension_order = "CW"

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: pd.DataFrame,
        hdf5_path: Path,
        config: PreprocessConfig | None = None,
        default_sampling_rate_hz: float | None = None,
        labels: LabelSpec | None = None,
    ):
        self.hdf5_path = Path(hdf5_path)
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._group: h5py.Group | None = None
        try:
            with h5py.File(self.hdf5_path, "r") as f:
                attrs = dict(f["data_format"].attrs) if "data_format" in f else {}
                if "data" not in f:
                    raise ValueError(
                        f"{self.hdf5_path} has no 'data' group; expected data/<trace_name>"
                    )
                keys = set(f["data"].keys())
        except OSError as exc:
            raise ValueError(f"cannot read HDF5 file {self.hdf5_path}: {exc}") from exc
        order = _attr_str(attrs.get("component_order"), self.default_component_order)
        dims = _attr_str(attrs.get("dimension_order"), self.default_dimension_order).upper()
        dims = dims.replace("N", "")
        if dims not in ("CW", "WC"):
            raise ValueError(f"{self.hdf5_path}: dimension_order {dims!r}; expected 'CW' or 'WC'")
        self.component_order = order
        self.dimension_order = dims
        # Row of the stored array -> row of the Z, N, E output.
        self._rows = [COMPONENTS.index(component_of(f"XX{c}")) for c in order]
        rate = attrs.get("sampling_rate", default_sampling_rate_hz)

        metadata = metadata.copy()
        if "trace_name" not in metadata.columns:
            raise ValueError(f"{path}: metadata has no 'trace_name' column")
        metadata["trace_name"] = metadata["trace_name"].astype(str)
        if "trace_sampling_rate_hz" not in metadata.columns:
            if rate is None:
                raise ValueError(
                    f"{path}: no sampling rate (neither data_format/sampling_rate nor a "
                    "trace_sampling_rate_hz column)"
                )
            metadata["trace_sampling_rate_hz"] = float(rate)
        elif rate is not None:
            metadata["trace_sampling_rate_hz"] = metadata["trace_sampling_rate_hz"].fillna(
                float(rate)
            )
        if LABEL_COLUMN not in metadata.columns and "trace_category" in metadata.columns:
            metadata[LABEL_COLUMN] = metadata["trace_category"]
        if "source_id" not in metadata.columns:
            metadata["source_id"] = metadata["trace_name"]
        else:
            missing_id = metadata["source_id"].isna() | metadata["source_id"].astype(str).isin(
                ["", "None", "nan"]
            )
            metadata["source_id"] = (
                metadata["source_id"].astype(str).where(~missing_id, metadata["trace_name"])
            )

        skipped: list[tuple[str, str]] = []
        present = np.array(
            [parse_trace_name(n)[0] in keys for n in metadata["trace_name"]], dtype=bool
        )
        for name in metadata["trace_name"][~present]:
            skipped.append(
                (
                    name,
                    f"missing waveform: no data/{parse_trace_name(name)[0]} in {self.hdf5_path.name}",
                )
            )
        metadata = metadata[present]
        metadata, bad_labels = normalize_labels(metadata, labels or LabelSpec())
        super().__init__(metadata, path=path, config=config, skipped=skipped + bad_labels)

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.hdf5_path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            self._pid = os.getpid()
            self._datasets = {}
            self._group = self._h5["data"]
        return self._h5

    def _dataset(self, key: str) -> h5py.Dataset:
        """``data/<key>``; bucket handles are kept (a group lookup costs more than the read),
        plain per-trace handles are not, so memory does not grow with the set."""
        self._file()
        data = self._group
        if not key.startswith("bucket"):
            return data[key]
        if key not in self._datasets:
            if len(self._datasets) >= MAX_OPEN_BUCKETS:
                self._datasets.clear()
            self._datasets[key] = data[key]
        return self._datasets[key]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_pid"] = None
        state["_datasets"] = {}
        state["_group"] = None
        state.pop("_columns", None)  # rebuilt from metadata on first use
        return state

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None
        self._datasets = {}
        self._group = None

    def _load(self, row: dict[str, Any]) -> np.ndarray:
        name = row["trace_name"]
        try:
            key, index = parse_trace_name(name)
            dataset = self._dataset(key)
            data = dataset[()] if index is None else dataset[index]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise SkipTrace("unreadable", f"{name} in {self.hdf5_path.name}: {exc}") from None
        return self._arrange(data, row)

    def get_samples(
        self, indices: Sequence[int] | np.ndarray
    ) -> list[tuple[np.ndarray | SkipTrace, dict[str, Any]]]:
        """``(raw waveform, metadata row)`` of several samples; rows of one bucket that lie
        close together (gaps of at most :data:`MAX_ROW_GAP` rows) are read as one slab, one h5py
        read, instead of one read per row. An unreadable item has its SkipTrace as waveform."""
        out: list[np.ndarray | SkipTrace | None] = [None] * len(indices)
        rows: list[dict[str, Any]] = []
        by_bucket: dict[str, list[tuple[int, tuple[Any, ...], dict[str, Any]]]] = defaultdict(list)
        for pos, i in enumerate(indices):
            i = int(i)
            if not -len(self) <= i < len(self):
                raise IndexError(f"sample index {i} out of range for {len(self)} samples")
            row = self.row(i)
            rows.append(row)
            try:
                key, index = parse_trace_name(row["trace_name"])
            except ValueError:
                index = None
            if index is None or not isinstance(index[0], int):
                out[pos] = self._load_or_skip(row)
            else:
                by_bucket[key].append((pos, index, row))
        for key, items in by_bucket.items():
            items.sort(key=lambda item: item[1][0])
            for run in _row_runs(items):
                self._read_run(key, run, out)
        return list(zip(out, rows, strict=True))  # type: ignore[arg-type]

    def _read_run(self, key, run, out) -> None:
        """One slab read for ``run`` (items of one bucket sorted by row), then per-item arranging."""
        first, last = run[0][1][0], run[-1][1][0]
        try:
            block = self._dataset(key)[first : last + 1]
        except (OSError, KeyError, ValueError, TypeError):
            for pos, _, row in run:  # read them one by one: each gets its own reason
                out[pos] = self._load_or_skip(row)
            return
        for pos, index, row in run:
            try:
                if not 0 <= index[0] - first < len(block):
                    raise IndexError(f"row {index[0]} is past the end of {key}")
                out[pos] = self._arrange(block[(index[0] - first, *index[1:])], row)
            except (IndexError, ValueError, TypeError) as exc:
                out[pos] = SkipTrace(
                    "unreadable", f"{row['trace_name']} in {self.hdf5_path.name}: {exc}"
                )
            except SkipTrace as exc:
                out[pos] = exc

    def _load_or_skip(self, row: dict[str, Any]) -> np.ndarray | SkipTrace:
        try:
            return self._load(row)
        except SkipTrace as exc:
            return exc

    def _arrange(self, data: Any, row: dict[str, Any]) -> np.ndarray:
        """A stored array -> ``(3, n)`` float32 Z, N, E, with the missing-component policy."""
        name = row["trace_name"]
        data = np.asarray(data)
        check_numeric(data, name)
        data = data.astype(np.float32, copy=False)
        if data.ndim != 2:
            raise SkipTrace(
                "bad shape", f"{name}: stored array has shape {data.shape}; expected 2-D"
            )
        if self.dimension_order == "WC":
            data = data.T
        if data.shape[0] > len(self._rows):
            raise SkipTrace(
                "bad shape",
                f"{name}: {data.shape[0]} channels but component_order {self.component_order!r}",
            )
        out = np.zeros((3, data.shape[1]), dtype=np.float32)
        present = set()
        for src, dst in enumerate(self._rows[: data.shape[0]]):
            out[dst] = data[src]
            present.add(COMPONENTS[dst])
        listed = listed_components(row.get("trace_components"))
        if listed is not None:
            present &= listed
        for comp in "NE":
            if comp not in present:
                out[COMPONENTS.index(comp)] = (
                    out[0] if self.config.missing_component == "copy_z" else 0.0
                )
        return out


def _row_runs(items: list) -> list[list]:
    """Split items sorted by bucket row into runs whose rows are at most MAX_ROW_GAP apart."""
    runs: list[list] = []
    for item in items:
        if runs and item[1][0] - runs[-1][-1][1][0] <= MAX_ROW_GAP:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


class SeisBenchDataset(HDF5Dataset):
    """A SeisBench-format folder: ``metadata.csv`` + ``waveforms.hdf5``."""

    def __init__(
        self,
        path: str | os.PathLike,
        config: PreprocessConfig | None = None,
        labels: LabelSpec | None = None,
    ):
        path = Path(path)
        csv, hdf5 = path / "metadata.csv", path / "waveforms.hdf5"
        for f in (csv, hdf5):
            if not f.is_file():
                raise ValueError(f"{path} is not a SeisBench-format set: {f.name} is missing")
        try:
            metadata = pd.read_csv(csv, low_memory=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {csv}: {exc}") from exc
        super().__init__(path, metadata, hdf5, config, labels=labels)


def _attr_str(value: Any, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
