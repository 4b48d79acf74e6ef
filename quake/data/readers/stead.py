"""STEAD sets: one ``*.csv`` + one ``*.hdf5`` with ``data/<trace_name>`` arrays of shape
(6000, 3) in E, N, Z order at 100 Hz, labelled by ``trace_category``.

STEAD's column names are renamed to SeisBench's (``receiver_code`` -> ``station_code``,
``p_arrival_sample`` -> ``trace_p_arrival_sample``, ...), and ``trace_category``
(``earthquake_local``, ``noise``) becomes ``source_type`` (``earthquake``, ``noise``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from quake.data.config import PreprocessConfig
from quake.data.readers.base import LabelSpec
from quake.data.readers.seisbench import HDF5Dataset

STEAD_SAMPLING_RATE_HZ = 100.0

STEAD_TO_SEISBENCH = {
    "network_code": "station_network_code",
    "receiver_code": "station_code",
    "receiver_type": "trace_channel",
    "receiver_latitude": "station_latitude_deg",
    "receiver_longitude": "station_longitude_deg",
    "receiver_elevation_m": "station_elevation_m",
    "p_arrival_sample": "trace_p_arrival_sample",
    "s_arrival_sample": "trace_s_arrival_sample",
    "p_weight": "trace_p_weight",
    "s_weight": "trace_s_weight",
    "source_latitude": "source_latitude_deg",
    "source_longitude": "source_longitude_deg",
    "source_magnitude_type": "source_magnitude_type",
    "source_distance_km": "path_ep_distance_km",
    "back_azimuth_deg": "path_back_azimuth_deg",
    "snr_db": "trace_snr_db",
    "coda_end_sample": "trace_coda_end_sample",
}


def find_stead_files(path: Path) -> tuple[Path, Path] | None:
    """The one ``*.csv`` and one ``*.hdf5`` of a STEAD folder, or None."""
    csvs = sorted(p for p in path.glob("*.csv") if p.name != "metadata.csv")
    hdf5s = sorted(p for p in path.glob("*.hdf5") if p.name != "waveforms.hdf5")
    hdf5s += sorted(path.glob("*.h5"))
    if len(csvs) == 1 and len(hdf5s) == 1:
        return csvs[0], hdf5s[0]
    return None


class SteadDataset(HDF5Dataset):
    """A STEAD folder (or chunk): lazy, like the SeisBench reader."""

    default_component_order = "ENZ"
    default_dimension_order = "WC"

    def __init__(
        self,
        path: str | os.PathLike,
        config: PreprocessConfig | None = None,
        labels: LabelSpec | None = None,
    ):
        path = Path(path)
        files = find_stead_files(path)
        if files is None:
            raise ValueError(
                f"{path} is not a STEAD set: expected exactly one *.csv and one *.hdf5"
            )
        csv, hdf5 = files
        try:
            metadata = pd.read_csv(csv, low_memory=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {csv}: {exc}") from exc
        metadata = metadata.rename(columns=STEAD_TO_SEISBENCH)
        if "trace_category" in metadata.columns:
            metadata["source_type"] = metadata["trace_category"]
        super().__init__(
            path,
            metadata,
            hdf5,
            config,
            default_sampling_rate_hz=STEAD_SAMPLING_RATE_HZ,
            labels=labels,
        )
