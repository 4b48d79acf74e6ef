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
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
from obspy import Stream

from quake.data.components import component_of, select_band, station_key
from quake.data.config import PreprocessConfig
from quake.data.quality import COMPONENTS
from quake.data.readers.base import WaveformDataset
from quake.data.readers.catalog import load_station_files
from quake.data.sources import MSEED_SUFFIXES, read_mseed
from quake.data.transforms import SkipTrace


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
        by_station: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
        for f in files:
            rel = (folder / f.name).as_posix()
            try:
                header = read_mseed(f, headonly=True)
            except Exception as exc:  # obspy/libmseed raise several types for corrupt files
                skipped.append((rel, f"unreadable: {type(exc).__name__}: {exc}"))
                continue
            if not len(header):
                skipped.append((rel, "empty: no record in the file"))
            for tr in header:
                by_station[station_key(tr.stats)].append((f, tr))
        group = folder.as_posix()
        for station, entries in sorted(by_station.items()):
            item = f"{group}/{station}"
            try:
                chosen = select_band(Stream([tr for _, tr in entries]), config)
                components = sorted({component_of(tr.stats.channel) for tr in chosen})
            except SkipTrace as exc:
                skipped.append((item, str(exc)))
                continue
            band = chosen[0].stats.channel[:-1]
            names = sorted({f.name for f, tr in entries if tr.stats.channel[:-1] == band})
            start = min(tr.stats.starttime for tr in chosen)
            span_s = max(tr.stats.endtime for tr in chosen) - start
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
                        "trace_components": "".join(c for c in COMPONENTS if c in components),
                        "trace_sampling_rate_hz": config.sampling_rate_hz,
                        "trace_original_sampling_rate_hz": max(
                            float(tr.stats.sampling_rate) for tr in chosen
                        ),
                        "trace_start_time": str(start + k * config.window_s),
                        "trace_source_files": ";".join(
                            (folder / name).as_posix() for name in names
                        ),
                    }
                )

    def _load(self, row: dict[str, Any]):
        return load_station_files(self.waveform_dir, row, self.config)
