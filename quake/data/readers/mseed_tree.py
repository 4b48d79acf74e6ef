"""A plain folder tree of miniSEED files, without a catalog: unlabelled recordings.

Every folder under ``root`` (the root included, symbolic links to folders not followed) is
searched for miniSEED files (:data:`quake.data.sources.MSEED_SUFFIXES`). The files of one folder
that hold one station (``NET.STA.LOC``) make one recording; its channel band is chosen as the
catalog reader chooses it (the fastest band >= ``min_sampling_rate_hz``). A recording gives up to
``windows_per_recording`` consecutive windows of ``config.window_s`` seconds from its first
sample (``None``: every whole window it holds, at least one): there is no origin time or pick
to anchor on, so TRIMMING starts each window at its own start (``anchor="offset"`` adds
``offset_s``). Opening reads only headers; samples are read on :meth:`get_sample`, through the
same function as the catalog reader's (:func:`~quake.data.readers.catalog.load_station_files`).

``source_id`` is the folder relative to ``root`` (``.`` for the root itself): the recordings of
one event folder stay together when a set is split. There are no labels.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from quake.data.config import PreprocessConfig
from quake.data.mseed import MSEED_SUFFIXES
from quake.data.readers.base import WaveformDataset
from quake.data.readers.catalog import index_recordings, load_station_files


def mseed_tree_files(root: Path) -> dict[Path, list[Path]]:
    """Folder (relative to ``root``) -> its miniSEED files, sorted; folders without any are left
    out. Symbolic links to folders are not followed, so the walk never leaves ``root``."""
    found: dict[Path, list[Path]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        names = sorted(f for f in files if Path(f).suffix.lower() in MSEED_SUFFIXES)
        paths = [Path(folder) / name for name in names if (Path(folder) / name).is_file()]
        if paths:
            found[Path(folder).relative_to(root)] = paths
    return found


class MseedTreeDataset(WaveformDataset):
    """Recordings of a folder tree of miniSEED files (module docstring); ``root`` is the folder."""

    def __init__(
        self,
        root: str | os.PathLike,
        config: PreprocessConfig | None = None,
        *,
        windows_per_recording: int | None = 1,
    ):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"miniSEED folder {str(root)!r} does not exist or is not a folder")
        if windows_per_recording is not None and (
            isinstance(windows_per_recording, bool)
            or not isinstance(windows_per_recording, int)
            or windows_per_recording < 1
        ):
            raise ValueError(
                f"windows_per_recording must be an integer >= 1 or None, got "
                f"{windows_per_recording!r}"
            )
        config = config or PreprocessConfig()
        self.waveform_dir = root
        self.windows_per_recording = windows_per_recording
        tree = mseed_tree_files(root)
        if not tree:
            raise ValueError(
                f"{str(root)!r} holds no miniSEED file (suffixes {', '.join(MSEED_SUFFIXES)}, "
                "any case) in it or its subfolders"
            )
        rows: list[dict[str, Any]] = []
        skipped: list[tuple[str, str]] = []
        for folder, files in tree.items():
            self._index_folder(folder, files, config, rows, skipped)
        super().__init__(pd.DataFrame(rows), path=root, config=config, skipped=skipped)

    def _index_folder(
        self,
        folder: Path,
        files: list[Path],
        config: PreprocessConfig,
        rows: list[dict[str, Any]],
        skipped: list[tuple[str, str]],
    ) -> None:
        group = folder.as_posix()
        for rec in index_recordings(files, config, skipped, group, lambda st: f"{group}/{st}"):
            station, band, start = rec.station, rec.band, rec.start
            item = f"{group}/{station}"
            names = rec.files
            span_s = rec.end - start
            n_windows = max(1, math.floor(span_s / config.window_s))
            if self.windows_per_recording is not None:
                n_windows = min(n_windows, self.windows_per_recording)
            net, sta, loc = station.split(".")
            for k in range(n_windows):
                rows.append(
                    {
                        "trace_name": f"{item}.{band}" + (f".w{k}" if n_windows > 1 else ""),
                        "source_id": group,
                        "station_network_code": net,
                        "station_code": sta,
                        "station_location_code": loc,
                        "trace_channel": band,
                        "trace_components": rec.components,
                        "trace_sampling_rate_hz": config.sampling_rate_hz,
                        "trace_original_sampling_rate_hz": rec.original_rate_hz,
                        "trace_start_time": str(start + k * config.window_s),
                        "trace_source_files": ";".join(
                            (folder / name).as_posix() for name in names
                        ),
                    }
                )

    def _load(self, row: dict[str, Any]):
        return load_station_files(self.waveform_dir, row, self.config)
