"""An SDS archive (SeisComP Data Structure) between two times: unlabelled recordings.

``ROOT/YEAR/NET/STA/CHAN.TYPE/NET.STA.LOC.CHAN.TYPE.YEAR.DOY``: one file per channel and day.
Each day from ``start`` to ``end`` is indexed like a folder of the plain miniSEED tree (headers
read, stations grouped, band chosen by :func:`~quake.data.readers.catalog.index_recordings`);
a station's day, clipped to ``[start, end]``, is one recording. A continuous day holds
thousands of windows, and the first ones (midnight) say little about the rest, so a recording
gives ``windows_per_recording`` **random crops**: distinct, non-overlapping window slots drawn
with a generator seeded by the run seed, the day and the station, so a rerun reads the same
windows. ``source_id`` is ``NET.STA.LOC/YEAR.DOY``. Samples are read on :meth:`get_sample`
through the catalog reader's :func:`~quake.data.readers.catalog.load_station_files`.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from obspy import UTCDateTime

from quake.data.config import PreprocessConfig
from quake.data.readers.base import WaveformDataset
from quake.data.readers.catalog import index_recordings, load_station_files

DAY_S = 86400.0


def parse_time(value: Any, name: str) -> UTCDateTime:
    try:
        return UTCDateTime(value)
    except Exception:
        raise ValueError(
            f"{name}={value!r} is not a time; expected ISO 8601, e.g. 2020-01-31T00:00:00"
        ) from None


def day_files(root: Path, day: UTCDateTime, sds_type: str = "D") -> list[Path]:
    """The SDS files of every channel on ``day`` (sorted)."""
    pattern = f"{day.year}/*/*/*.{sds_type}/*.{sds_type}.{day.year}.{day.julday:03d}"
    return sorted(p for p in root.glob(pattern) if p.is_file())


class SdsDataset(WaveformDataset):
    """Random window crops of an SDS archive's station-days (module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        config: PreprocessConfig | None = None,
        *,
        start: Any,
        end: Any,
        windows_per_recording: int | None = 1,
        seed: int = 0,
        sds_type: str = "D",
    ):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"SDS archive {str(root)!r} does not exist or is not a folder")
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
        if t1 <= t0:
            raise ValueError(f"end {t1} is not after start {t0}; expected a time range")
        config = config or PreprocessConfig()
        self.waveform_dir = root
        rows: list[dict[str, Any]] = []
        skipped: list[tuple[str, str]] = []
        n_files = 0
        day = UTCDateTime(t0.date)
        while day < t1:
            files = day_files(root, day, sds_type)
            n_files += len(files)
            label = f"{day.year}.{day.julday:03d}"
            relative = {f.name: f.relative_to(root).as_posix() for f in files}
            item_of = f"{{}}/{label}".format  # a station's item on this day
            for rec in index_recordings(files, config, skipped, label, item_of):
                begin, finish = max(rec.start, t0), min(rec.end, t1)
                slots = math.floor((finish - begin) / config.window_s)
                item = f"{rec.station}/{label}"
                if slots < 1:
                    skipped.append((item, "too short: less than one window in the time range"))
                    continue
                take = slots if windows_per_recording is None else min(slots, windows_per_recording)
                digest = hashlib.sha256(f"{seed}:{item}".encode()).digest()
                rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
                net, sta, loc = rec.station.split(".")
                for slot in np.sort(rng.choice(slots, size=take, replace=False)):
                    rows.append(
                        {
                            "trace_name": f"{item}.{rec.band}.s{int(slot)}",
                            "source_id": item,
                            "station_network_code": net,
                            "station_code": sta,
                            "station_location_code": loc,
                            "trace_channel": rec.band,
                            "trace_components": rec.components,
                            "trace_sampling_rate_hz": config.sampling_rate_hz,
                            "trace_original_sampling_rate_hz": rec.original_rate_hz,
                            "trace_start_time": str(begin + int(slot) * config.window_s),
                            "trace_source_files": ";".join(relative[n] for n in rec.files),
                        }
                    )
            day += DAY_S
        if n_files == 0:
            raise ValueError(
                f"no SDS day file ({sds_type} type) in {str(root)!r} between {t0} and {t1}; "
                "expected YEAR/NET/STA/CHAN.D/NET.STA.LOC.CHAN.D.YEAR.DOY files in that range"
            )
        super().__init__(pd.DataFrame(rows), path=root, config=config, skipped=skipped)

    def _load(self, row: dict[str, Any]):
        return load_station_files(self.waveform_dir, row, self.config)
