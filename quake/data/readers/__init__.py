"""Dataset readers; :func:`open_dataset` picks one by what a folder holds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from quake.data.catalog import CATALOG_FILES, CATALOG_SUFFIXES, find_catalog
from quake.data.config import PreprocessConfig
from quake.data.readers.base import LabelSpec, WaveformDataset
from quake.data.readers.catalog import CatalogDataset
from quake.data.readers.seisbench import (
    SeisBenchDataset,
    is_seisbench_folder,
    parse_trace_name,
    seisbench_chunks,
)
from quake.data.readers.stead import SteadDataset, find_stead_files


def open_dataset(
    path: str | os.PathLike,
    config: PreprocessConfig | None = None,
    labels: LabelSpec | None = None,
    *,
    chunks: Sequence[str] | str | None = None,
) -> WaveformDataset:
    """Open a waveform set by what ``path`` holds.

    - ``metadata.csv`` + ``waveforms.hdf5``, or SeisBench chunks (``metadata<chunk>.csv`` +
      ``waveforms<chunk>.hdf5``, listed in a ``chunks`` file or not): SeisBench format
      (:class:`SeisBenchDataset`; ``chunks`` picks some of them, default all);
    - a catalog (``catalog.xml``, ``.quakeml``, ``.qml`` or ``.csv``) +
      ``waveforms/<event_id>/*.mseed``, or the path of a catalog file (:class:`CatalogDataset`;
      the first of :data:`~quake.data.catalog.CATALOG_FILES` wins,
      :func:`~quake.data.catalog.find_catalog`);
    - one ``*.csv`` + one ``*.hdf5``: STEAD (:class:`SteadDataset`).

    ``labels`` says where the labels are and how the set's names map to class names
    (:class:`~quake.data.readers.base.LabelSpec`).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"dataset path {str(path)!r} does not exist")
    if chunks is not None and not is_seisbench_folder(path):
        raise ValueError(f"chunks={chunks!r}: {path} is not a SeisBench-format set")
    if path.is_file():
        if find_catalog(path) is not None:
            return CatalogDataset(path, config, labels)
        raise ValueError(
            f"{path} is a file; expected a dataset folder or a catalog file "
            f"({', '.join(CATALOG_SUFFIXES)})"
        )
    if is_seisbench_folder(path):
        return SeisBenchDataset(path, config, labels, chunks=chunks)
    if find_catalog(path) is not None:
        return CatalogDataset(path, config, labels)
    if find_stead_files(path) is not None:
        return SteadDataset(path, config, labels)
    raise ValueError(
        f"cannot tell the format of {path}: expected metadata.csv + waveforms.hdf5 or "
        "metadata<chunk>.csv + waveforms<chunk>.hdf5 (SeisBench), "
        f"one of {', '.join(CATALOG_FILES)} + waveforms/ (catalog + miniSEED), or one *.csv + one "
        "*.hdf5 (STEAD)"
    )


__all__ = [
    "CatalogDataset",
    "LabelSpec",
    "SeisBenchDataset",
    "SteadDataset",
    "WaveformDataset",
    "is_seisbench_folder",
    "open_dataset",
    "parse_trace_name",
    "seisbench_chunks",
]
