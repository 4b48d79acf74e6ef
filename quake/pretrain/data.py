"""Unlabelled windows for pretraining, read and cut exactly as training reads and cuts them.

Each ``--data`` path is opened by what it holds, labels ignored:

- a SeisBench-format set (``metadata.csv`` + ``waveforms.hdf5``) or a STEAD pair: the reader
  training uses (rows whose label the set cannot map are still skipped there, with the reason);
- a catalog + miniSEED folder, or the catalog file itself, with or without ``event_type``
  (:class:`~quake.data.readers.catalog.CatalogDataset` with ``unlabelled=True``): windows
  anchored as in training (P pick, else origin time);
- an SDS archive (year folders), read between ``data.start`` and ``data.end``
  (:class:`~quake.data.readers.sds.SdsDataset`): random window crops of each station-day;
- any other folder: a plain tree of miniSEED files
  (:class:`~quake.data.readers.mseed_tree.MseedTreeDataset`), windows from each recording's
  start.

Every item then goes through :class:`~quake.data.WaveformDataAdapter` with the run's
:class:`~quake.data.PreprocessConfig`: the same quality checks and skips (counted per reason),
resampling and TRIMMING as training. The kept windows are held in one ``(N, 3, samples)``
tensor; spectrograms are computed per batch by :func:`~quake.data.spectrogram_batch`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from quake.data import PreprocessConfig, WaveformDataAdapter, WaveformDataset
from quake.data.catalog import CATALOG_SUFFIXES, find_catalog
from quake.data.readers.catalog import CatalogDataset
from quake.data.readers.mseed_tree import MseedTreeDataset
from quake.data.readers.sds import SdsDataset
from quake.data.readers.seisbench import SeisBenchDataset
from quake.data.readers.stead import SteadDataset, find_stead_files
from quake.data.sources import detect_source_kind

logger = logging.getLogger(__name__)


def open_unlabelled(
    path: str | os.PathLike,
    config: PreprocessConfig,
    windows_per_recording: int | None = 1,
    time_range: tuple[str, str] | None = None,
    seed: int = 0,
) -> tuple[WaveformDataset, str]:
    """``(dataset, kind)`` for one ``--data`` path (module docstring); kind is ``seisbench``,
    ``stead``, ``catalog``, ``sds`` (read within ``time_range``) or ``miniseed-tree``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data path {str(path)!r} does not exist")
    if path.is_file():
        if find_catalog(path) is not None:
            return CatalogDataset(path, config, unlabelled=True), "catalog"
        raise ValueError(
            f"{str(path)!r} is a file; expected a folder or a catalog ({', '.join(CATALOG_SUFFIXES)})"
        )
    if (path / "metadata.csv").is_file() and (path / "waveforms.hdf5").is_file():
        return SeisBenchDataset(path, config), "seisbench"
    if find_catalog(path) is not None:
        return CatalogDataset(path, config, unlabelled=True), "catalog"
    if find_stead_files(path) is not None:
        return SteadDataset(path, config), "stead"
    if detect_source_kind(str(path)) == "sds":
        if time_range is None:
            raise ValueError(
                f"{str(path)!r} is an SDS archive (year folders); expected a time range to read "
                "(--start and --end, data.start and data.end)"
            )
        dataset = SdsDataset(
            path,
            config,
            start=time_range[0],
            end=time_range[1],
            windows_per_recording=windows_per_recording,
            seed=seed,
        )
        return dataset, "sds"
    return MseedTreeDataset(path, config, windows_per_recording=windows_per_recording), (
        "miniseed-tree"
    )


@dataclass
class UnlabelledWindows:
    """The kept windows of every source, pooled."""

    waveforms: torch.Tensor  # (N, 3, window_samples) float32
    groups: np.ndarray  # (N,) "<source index>:<source_id>": windows of one event stay together
    sources: list[dict] = field(default_factory=list)  # per path: kind, items, windows, dropped
    skipped: list[dict] = field(
        default_factory=list
    )  # per item dropped: source, item, reason, detail

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    @property
    def dropped(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for source in self.sources:
            for reason, n in source["dropped"].items():
                out[reason] = out.get(reason, 0) + n
        return out


def load_windows(
    paths: list[str],
    config: PreprocessConfig,
    *,
    windows_per_recording: int | None = 1,
    time_range: tuple[str, str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> UnlabelledWindows:
    """Open every path, check every item once, and pool the kept windows."""
    arrays, groups, sources, skipped = [], [], [], []
    for k, path in enumerate(paths):
        dataset, kind = open_unlabelled(path, config, windows_per_recording, time_range, seed)
        adapter = WaveformDataAdapter(dataset, config=config, progress=progress)
        skipped += [_skipped_item(path, item, reason) for item, reason in adapter.dropped]
        windows = adapter.load_waveforms(progress=progress)
        ids = adapter.metadata.get("source_id", adapter.metadata["trace_name"]).astype(str)
        arrays.append(np.asarray(windows, dtype=np.float32))
        groups.append(np.asarray([f"{k}:{g}" for g in ids], dtype=object))
        sources.append(
            {
                "path": str(path),
                "kind": kind,
                "items": len(dataset) + len(dataset.skipped),
                "windows": len(adapter),
                "dropped": adapter.drop_counts(),
            }
        )
        logger.info(
            "%s (%s): %d windows kept, dropped %s",
            path,
            kind,
            len(adapter),
            adapter.drop_counts() or "none",
        )
    waveforms = np.concatenate(arrays) if arrays else np.zeros((0, 3, config.window_samples))
    if len(waveforms) == 0:
        raise ValueError(
            f"no usable window in {paths}: dropped "
            f"{UnlabelledWindows(torch.zeros(0), np.zeros(0), sources).dropped}"
        )
    return UnlabelledWindows(
        waveforms=torch.from_numpy(np.ascontiguousarray(waveforms, dtype=np.float32)),
        groups=np.concatenate(groups),
        sources=sources,
        skipped=skipped,
    )


def _skipped_item(path: str | os.PathLike, item: str, reason: str) -> dict[str, str]:
    """One dropped item as a row of ``skipped.csv``: the ``--data`` path, the item (a file or a
    recording, relative to that path), the reason's category and the rest of its text."""
    category, _, detail = reason.partition(":")
    return {"source": str(path), "item": item, "reason": category, "detail": detail.strip()}


def split_groups(
    groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` indices, whole groups (events) on one side; about ``val_fraction`` of
    the windows in val, none when the fraction is 0 or there is a single group."""
    n = len(groups)
    unique = np.unique(groups)
    if val_fraction <= 0 or len(unique) < 2:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(unique)
    sizes = {g: c for g, c in zip(*np.unique(groups, return_counts=True), strict=True)}
    chosen, total = [], 0
    for g in order[:-1]:  # at least one group stays for training
        if total >= val_fraction * n:
            break
        chosen.append(g)
        total += sizes[g]
    val = np.isin(groups, chosen)
    return np.flatnonzero(~val), np.flatnonzero(val)
