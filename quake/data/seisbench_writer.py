"""Write waveform sets in SeisBench format (``metadata.csv`` + ``waveforms.hdf5``).

The layout is the one SeisBench's ``WaveformDataWriter`` produces, so that
``seisbench.data.WaveformDataset`` opens the set and its generators iterate it: ``data_format``
as datasets in the group (``component_order`` ``ZNE``, ``dimension_order`` ``CW``,
``sampling_rate``, ``measurement``, ``unit``), ``data/<trace_name>`` or ``data/bucket<k>``
arrays with ``bucket<k>$<i>,:3,:<n>`` trace names (the name given kept as
``trace_name_original``), and a ``trace_sampling_rate_hz`` column.

Used by the embedded synthetic set, the benchmarks and the tests. The folder is built under a
temporary name and renamed into place on success, so a crash never leaves a half-written set
that looks complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np
import pandas as pd

from quake.data.quality import COMPONENTS
from quake.runtime import staging_dir

logger = logging.getLogger(__name__)

COMPONENT_ORDER = COMPONENTS
# data_format written with every set (the sampling rate is the writer's)
DATA_FORMAT = {
    "component_order": COMPONENT_ORDER,
    "dimension_order": "CW",
    "measurement": "velocity",
    "unit": "counts",
}


class SeisBenchWriter:
    """Stream traces into a new SeisBench-format folder.

    ``bucket_size=None`` stores each trace as ``data/<trace_name>``; an integer groups traces of
    equal length into ``data/bucket<k>`` arrays and names them ``bucket<k>$<i>,:3,:<n>`` (the
    name given is kept as ``trace_name_original``), as SeisBench does for large sets. Memory use
    stays at one bucket, whatever the set's size.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sampling_rate_hz: float,
        *,
        bucket_size: int | None = None,
        overwrite: bool = False,
    ):
        if sampling_rate_hz <= 0:
            raise ValueError(f"sampling_rate_hz must be > 0, got {sampling_rate_hz!r}")
        if bucket_size is not None and bucket_size < 1:
            raise ValueError(f"bucket_size must be None or >= 1, got {bucket_size!r}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.bucket_size = bucket_size
        self._tmp = staging_dir(self.path)
        self._h5 = h5py.File(self._tmp / "waveforms.hdf5", "w")
        fmt = self._h5.create_group("data_format")
        for key, value in DATA_FORMAT.items():  # as datasets, where SeisBench reads them
            fmt.create_dataset(key, data=value)
        fmt.create_dataset("sampling_rate", data=self.sampling_rate_hz)
        self._data = self._h5.create_group("data")
        self._rows: list[dict] = []
        self._bucket: list[np.ndarray] = []
        self._bucket_rows: list[dict] = []
        self._n_buckets = 0
        self._closed = False

    def add(self, trace_name: str, waveform: np.ndarray, **metadata) -> None:
        """Add one trace: ``waveform`` is ``(3, samples)`` in Z, N, E order."""
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 2 or waveform.shape[0] != 3:
            raise ValueError(f"waveform must have shape (3, samples), got {waveform.shape}")
        row = {
            "trace_name": trace_name,
            "trace_sampling_rate_hz": self.sampling_rate_hz,
            "trace_npts": waveform.shape[1],
            **metadata,
        }
        if self.bucket_size is None:
            if not trace_name or "$" in trace_name or "/" in trace_name:
                raise ValueError(
                    f"trace name {trace_name!r}: expected a non-empty name without '$' (SeisBench's "
                    "bucket marker) or '/' (an HDF5 group separator)"
                )
            self._data.create_dataset(trace_name, data=waveform)
            self._rows.append(row)
            return
        if self._bucket and self._bucket[0].shape != waveform.shape:
            self._flush_bucket()
        self._bucket.append(waveform)
        self._bucket_rows.append(row)
        if len(self._bucket) >= self.bucket_size:
            self._flush_bucket()

    def _flush_bucket(self) -> None:
        if not self._bucket:
            return
        name = f"bucket{self._n_buckets}"
        self._data.create_dataset(name, data=np.stack(self._bucket))
        n = self._bucket[0].shape[1]
        for i, row in enumerate(self._bucket_rows):
            row["trace_name_original"] = row["trace_name"]
            row["trace_name"] = f"{name}${i},:3,:{n}"
            self._rows.append(row)
        self._n_buckets += 1
        self._bucket, self._bucket_rows = [], []

    def close(self) -> Path:
        """Finish the files and move the folder into place; returns its path."""
        if self._closed:
            return self.path
        self._flush_bucket()
        self._h5.close()
        pd.DataFrame(self._rows).to_csv(self._tmp / "metadata.csv", index=False)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self._tmp, self.path)
        self._closed = True
        logger.info("wrote %d traces to %s", len(self._rows), self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        if not self._closed:
            self._h5.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._closed = True

    def __enter__(self) -> SeisBenchWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
