"""SeisBench-format sets, read lazily with h5py, in every layout SeisBench writes.

A set is ``metadata.csv`` + ``waveforms.hdf5``, or chunks: a ``chunks`` file naming them (else
the ``metadata<chunk>.csv`` + ``waveforms<chunk>.hdf5`` pairs found), read as one set or only
the chunks named, as :class:`seisbench.data.WaveformDataset` finds them. Each HDF5 file is opened
on first read, once per process (reopened after a fork, so each DataLoader worker has its own
handles).

``data_format`` is read from datasets in the group (SeisBench's form) or from its attributes
(older sets, e.g. ``eqnoise-3c``); the log says which. Resolved as SeisBench resolves it:

- ``component_order`` (``ZNE``, ``ENZ``, ``Z12``, ...; a ``trace_component_order`` column wins per
  trace): rows are reordered to Z, N, E; ``1``/``2`` are taken as N/E with a warning. A set
  with no component order at all is refused (SeisBench keeps the stored rows; quake would guess).
- ``dimension_order``: ``CW`` or ``WC`` (absent: ``CW`` with a warning, as SeisBench assumes).
- the sampling rate: ``trace_sampling_rate_hz``, else ``1 / trace_dt_s``, else
  ``data_format/sampling_rate`` (metadata wins where they disagree, with a warning; quake also
  fills a trace's missing metadata rate from ``data_format``). A trace with no rate is skipped.

Trace names are plain (``data/<trace_name>``) or bucketed (``bucket3$12,:3,:6000`` = row 12 of
``data/bucket3``, first 3 channels, 6000 samples). The first P pick of SeisBench's phase columns
(``trace_P_arrival_sample``, ``trace_Pg_arrival_sample``, ...) becomes
``trace_p_arrival_sample`` where that column is absent or empty. A set that cannot be read
correctly is refused with a ValueError naming the value and what was expected.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
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

# The data_format keys quake uses; others (measurement, unit, ...) are kept as they are.
FORMAT_KEYS = ("component_order", "dimension_order", "sampling_rate")
# Relative difference beyond which two sampling rates of one trace disagree (SeisBench's eps).
RATE_TOLERANCE = 1e-4
# Column of the chunk a trace sits in (SeisBench's name); present for chunked sets only.
CHUNK_COLUMN = "trace_chunk"
P_COLUMN = "trace_p_arrival_sample"


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


def seisbench_chunks(path: str | os.PathLike, *, warn: bool = False) -> list[str] | None:
    """The chunks of a SeisBench-format folder, sorted, found as SeisBench finds them: the lines
    of its ``chunks`` file; else ``[""]`` when it holds ``waveforms.hdf5``; else every
    ``<chunk>`` with both ``metadata<chunk>.csv`` and ``waveforms<chunk>.hdf5``. None when the
    folder is not a SeisBench-format set. ``warn``: log files left out for lack of their pair."""
    path = Path(path)
    if not path.is_dir():
        return None
    listed = path / "chunks"
    if listed.is_file():
        try:
            chunks = [line.strip() for line in listed.read_text().split("\n") if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {listed}: {exc}") from exc
        if chunks:
            return sorted(chunks)
    if (path / "waveforms.hdf5").is_file():
        return [""]
    files = [p.name for p in path.iterdir() if p.is_file()]
    metadata = {n[8:-4] for n in files if n.startswith("metadata") and n.endswith(".csv")}
    waveforms = {n[9:-5] for n in files if n.startswith("waveforms") and n.endswith(".hdf5")}
    chunks = metadata & waveforms
    if warn and chunks:
        for kind, unpaired in (("waveforms", metadata - chunks), ("metadata", waveforms - chunks)):
            if unpaired:
                logger.warning(
                    "%s: chunks %s have no %s file and are left out", path, sorted(unpaired), kind
                )
    return sorted(chunks) or None


def read_data_format(group: h5py.Group | None, where: str) -> tuple[dict[str, Any], str]:
    """``(data_format, form)`` of an HDF5 ``data_format`` group: its datasets (SeisBench's
    form) and its attributes (older sets), values decoded (bytes -> str, arrays -> tuples);
    ``form`` is ``"datasets"``, ``"attributes"``, ``"datasets and attributes"`` or ``"none"``.
    A key stored both ways with two values is refused."""
    if group is None:
        return {}, "none"
    datasets = {
        key: _format_value(group[key][()])
        for key in group.keys()
        if isinstance(group[key], h5py.Dataset)
    }
    attributes = {key: _format_value(value) for key, value in group.attrs.items()}
    for key in sorted(datasets.keys() & attributes.keys()):
        if not _same_value(datasets[key], attributes[key]):
            raise ValueError(
                f"{where}: data_format/{key} is {datasets[key]!r} as a dataset but "
                f"{attributes[key]!r} as an attribute; expected one value"
            )
    form = " and ".join(
        name for name, found in (("datasets", datasets), ("attributes", attributes)) if found
    )
    return {**attributes, **datasets}, form or "none"


def component_rows(order: object, where: str) -> list[int | None]:
    """Row of the Z, N, E output for each stored row of a component order (``"ENZ"`` ->
    ``[2, 1, 0]``); ``1``/``2`` are N/E (with a warning), other letters ``None`` (not used,
    logged). ValueError naming the order when it gives a component twice or has none of them."""
    text = _order_text(order).strip().upper()
    rows: list[int | None] = []
    unused = []
    for letter in text:
        try:
            component = component_of(f"XX{letter}")
        except SkipTrace:
            rows.append(None)
            unused.append(letter)
            continue
        row = COMPONENTS.index(component)
        if row in rows:
            raise ValueError(
                f"{where}: component_order {order!r} gives {component} twice; expected each of "
                "Z, N, E at most once (1 and 2 are read as N and E)"
            )
        rows.append(row)
    if all(row is None for row in rows):
        raise ValueError(
            f"{where}: component_order {order!r} names none of Z, N, E, 1, 2; expected e.g. 'ZNE'"
        )
    if unused:
        logger.warning(
            "%s: component_order %r: %s not used (quake reads Z, N, E)",
            where, order, ", ".join(unused),
        )  # fmt: skip
    return rows


def resolve_sampling_rates(metadata: pd.DataFrame, format_rate: Any, where: str) -> pd.Series:
    """``trace_sampling_rate_hz`` per row, as SeisBench resolves it: the column, its gaps filled
    from ``1 / trace_dt_s``; else ``1 / trace_dt_s``; else ``data_format/sampling_rate``. Where
    the metadata and ``data_format`` disagree the metadata wins (logged); quake also fills a row
    still without a rate from ``data_format``. ValueError when no source of a rate exists."""
    columns = metadata.columns
    if "trace_sampling_rate_hz" not in columns and "trace_dt_s" not in columns:
        if format_rate is None:
            raise ValueError(
                f"{where}: no sampling rate (neither data_format/sampling_rate nor a "
                "trace_sampling_rate_hz or trace_dt_s column)"
            )
    rate = pd.Series(np.nan, index=metadata.index, dtype=float)
    if "trace_sampling_rate_hz" in columns:
        rate = pd.to_numeric(metadata["trace_sampling_rate_hz"], errors="coerce").astype(float)
    if "trace_dt_s" in columns:
        dt = pd.to_numeric(metadata["trace_dt_s"], errors="coerce").astype(float)
        from_dt = 1.0 / dt.where(dt > 0)
        _warn_disagreement(rate, from_dt, "trace_sampling_rate_hz", "1 / trace_dt_s", where)
        rate = rate.fillna(from_dt)
    if format_rate is not None:
        try:
            common = float(format_rate)
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: data_format/sampling_rate {format_rate!r}; expected a number in Hz"
            ) from None
        if not np.isfinite(common) or common <= 0:
            raise ValueError(
                f"{where}: data_format/sampling_rate {format_rate!r}; expected a number > 0 (Hz)"
            )
        _warn_disagreement(rate, common, "the metadata", "data_format/sampling_rate", where)
        rate = rate.fillna(common)
    return rate


def _warn_disagreement(rate: pd.Series, other: Any, first: str, second: str, where: str) -> None:
    both = rate.notna() & (pd.notna(other) if isinstance(other, pd.Series) else True)
    ratio = (rate / other)[both]
    bad = int(((ratio < 1 - RATE_TOLERANCE) | (ratio > 1 + RATE_TOLERANCE)).sum())
    if bad:
        logger.warning(
            "%s: sampling rates of %d traces differ between %s and %s; %s used (as SeisBench does)",
            where, bad, first, second, first,
        )  # fmt: skip


def first_p_pick(metadata: pd.DataFrame) -> tuple[pd.Series | None, list[str]]:
    """The earliest P pick per row over SeisBench's phase columns (``trace_<phase>_arrival_sample``
    with a phase that starts with P: ``P``, ``Pg``, ``Pn``, ``P1``, ``pP``, ...), and the columns
    used; ``(None, [])`` when the set has none."""
    columns = [
        c
        for c in metadata.columns
        if isinstance(c, str)
        and c.startswith("trace_")
        and c.endswith("_arrival_sample")
        and c != P_COLUMN
        and c[6:-15][:1].upper() == "P"
        and c[6:-15].lower() != "phase"
    ]
    if not columns:
        return None, []
    picks = metadata[columns].apply(pd.to_numeric, errors="coerce")
    return picks.min(axis=1, skipna=True), columns


def _format_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _format_value(value[()])
        return tuple(_format_value(v) for v in value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
    except (TypeError, ValueError):
        return str(a) == str(b)


def _order_text(order: Any) -> str:
    return "".join(map(str, order)) if isinstance(order, (tuple, list)) else str(order)


def _shared_data_format(
    path: str | os.PathLike, files: Mapping[str, Path]
) -> tuple[dict, set[str], dict[str, Any]]:
    """The data_format all chunk files share (a chunk that differs is a ValueError), the forms
    it was stored in, and each chunk's waveform keys."""
    data_format, forms, keys = None, set(), {}
    first = ""
    for chunk, file in files.items():
        chunk_format, form, keys[chunk] = _inspect_hdf5(file)
        forms.add(form)
        if data_format is None:
            data_format, first = chunk_format, chunk
            continue
        for key in sorted(set(data_format) | set(chunk_format)):
            a, b = data_format.get(key), chunk_format.get(key)
            if a is None or b is None or not _same_value(a, b):
                raise ValueError(
                    f"{path}: data_format/{key} is {b!r} in {file.name} but {a!r} in "
                    f"{files[first].name}; expected one data_format for all chunks"
                )
    return data_format or {}, forms, keys


def _log_data_format(path: str | os.PathLike, form: str, data_format: dict) -> None:
    """Say where the data_format came from and the keys of it that quake uses."""
    shown = ", ".join(f"{k}={data_format[k]!r}" for k in FORMAT_KEYS if k in data_format)
    if form == "none":
        logger.info("%s: no data_format in its HDF5 file", Path(path).name)
    else:
        logger.info(
            "%s: data_format read from HDF5 %s (%s)",
            Path(path).name, form, shown or "no key quake uses",
        )  # fmt: skip


def _set_chunk_column(metadata: pd.DataFrame, files: Mapping[str, Path], where: str) -> None:
    """Name each trace's chunk in :data:`CHUNK_COLUMN` (the only chunk when the column is absent)."""
    if CHUNK_COLUMN not in metadata.columns:
        if len(files) > 1:
            raise ValueError(
                f"{where}: {len(files)} chunks but no {CHUNK_COLUMN} column naming each "
                "trace's chunk"
            )
        metadata[CHUNK_COLUMN] = next(iter(files))
    metadata[CHUNK_COLUMN] = metadata[CHUNK_COLUMN].astype(str)


def _per_trace_component_orders(
    path: str | os.PathLike, metadata: pd.DataFrame, order: str | None
) -> pd.Series:
    """Each trace's ``trace_component_order``, ``order`` where blank; a disagreement with
    ``order`` is warned of (the metadata wins), a blank with no ``order`` is a ValueError."""
    per_trace = metadata["trace_component_order"]
    given = per_trace.notna() & (per_trace.astype(str).str.strip() != "")
    if order is None and not given.all():
        raise ValueError(
            f"{path}: {int((~given).sum())} traces have no trace_component_order and "
            "there is no data_format/component_order; expected a component order "
            "(e.g. 'ZNE') for every trace"
        )
    per_trace = per_trace.astype(str).where(given, order).str.strip()
    if order is not None and (per_trace != order).any():
        logger.warning(
            "%s: trace_component_order differs from data_format/component_order %r on "
            "%d traces; the metadata is used (as SeisBench does)",
            Path(path).name, order, int((per_trace != order).sum()),
        )  # fmt: skip
    return per_trace


def _set_first_p_pick(metadata: pd.DataFrame, path: str | os.PathLike) -> None:
    """Fill :data:`P_COLUMN` from the earliest P-phase pick where the set has phase columns."""
    picks, pick_columns = first_p_pick(metadata)
    if picks is None:
        return
    if P_COLUMN in metadata.columns:
        metadata[P_COLUMN] = pd.to_numeric(metadata[P_COLUMN], errors="coerce")
        metadata[P_COLUMN] = metadata[P_COLUMN].fillna(picks)
    else:
        metadata[P_COLUMN] = picks
    logger.info(
        "%s: %s from the earliest of %s",
        Path(path).name, P_COLUMN, ", ".join(pick_columns),
    )  # fmt: skip


def _set_source_ids(metadata: pd.DataFrame, chunked: bool) -> None:
    """Give a trace without ``source_id`` its own (its name, with its chunk in a chunked set,
    where bucket names repeat from chunk to chunk)."""
    fallback_id = metadata["trace_name"]
    if chunked:
        fallback_id = metadata[CHUNK_COLUMN] + ":" + metadata["trace_name"]
    if "source_id" not in metadata.columns:
        metadata["source_id"] = fallback_id
    else:
        missing_id = metadata["source_id"].isna() | metadata["source_id"].astype(str).isin(
            ["", "None", "nan"]
        )
        metadata["source_id"] = metadata["source_id"].astype(str).where(~missing_id, fallback_id)


def _readable_traces(
    metadata: pd.DataFrame,
    files: Mapping[str, Path],
    keys: Mapping[str, Any],
    chunked: bool,
    rate: pd.Series,
    where: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows whose waveform is in their file and whose sampling rate is known, and the
    others as a :func:`skipped_table`."""
    chunks = metadata[CHUNK_COLUMN] if chunked else pd.Series("", index=metadata.index)
    unknown_chunks = sorted(set(chunks) - set(files))
    if unknown_chunks:
        raise ValueError(
            f"{where}: {CHUNK_COLUMN} names chunks {unknown_chunks} that have no waveform "
            f"file; expected one of {sorted(files)}"
        )
    keys_of_rows = [parse_trace_name(n)[0] for n in metadata["trace_name"]]
    present = np.array(
        [key in keys[c] for key, c in zip(keys_of_rows, chunks, strict=True)], dtype=bool
    )
    reasons = pd.Series("", index=metadata.index)
    for row in np.flatnonzero(~present):
        key, chunk = keys_of_rows[row], chunks.iloc[row]
        reasons.iloc[row] = f"missing waveform: no data/{key} in {files[chunk].name}"
    has_rate = np.isfinite(rate.to_numpy()) & (rate.to_numpy() > 0)
    reasons[present & ~has_rate] = (
        "no sampling rate: neither the metadata nor data_format gives one"
    )
    return metadata[present & has_rate], skipped_table(metadata, reasons)


def skipped_table(metadata: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    """The rows of ``metadata`` with a non-empty reason: ``trace_name``, ``source_id``, ``reason``."""
    dropped = reasons != ""
    table = metadata.loc[dropped, ["trace_name", "source_id"]].assign(reason=reasons[dropped])
    return table.reset_index(drop=True)


class HDF5Dataset(WaveformDataset):
    """Shared lazy HDF5 access for SeisBench-format (plain or chunked) and STEAD sets.

    ``hdf5_path`` is one file, or ``{chunk: file}`` with a :data:`CHUNK_COLUMN` in ``metadata``
    naming each trace's chunk. ``default_component_order``/``default_dimension_order`` apply
    when ``data_format`` does not say (None: the set is refused without one).
    """

    default_component_order: str | None = None
    default_dimension_order = "CW"

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: pd.DataFrame,
        hdf5_path: str | os.PathLike | Mapping[str, str | os.PathLike],
        config: PreprocessConfig | None = None,
        default_sampling_rate_hz: float | None = None,
        labels: LabelSpec | None = None,
    ):
        if isinstance(hdf5_path, Mapping):
            files = {str(chunk): Path(f) for chunk, f in hdf5_path.items()}
        else:
            files = {"": Path(hdf5_path)}
        if not files:
            raise ValueError(f"{path}: no waveform file given")
        self.hdf5_paths = files
        self.hdf5_path = next(iter(files.values()))
        self._h5: dict[str, h5py.File] = {}
        self._pid: int | None = None
        self._datasets: dict[tuple[str, str], h5py.Dataset] = {}

        data_format, forms, keys = _shared_data_format(path, files)
        self.data_format = data_format
        self.data_format_form = " / ".join(sorted(forms))
        _log_data_format(path, self.data_format_form, data_format)
        self.dimension_order = self._dimension_order(path, data_format)

        metadata = metadata.reset_index(drop=True)  # a copy, with one label per row
        if "trace_name" not in metadata.columns:
            raise ValueError(f"{path}: metadata has no 'trace_name' column")
        metadata["trace_name"] = metadata["trace_name"].astype(str)
        self._chunked = set(files) != {""}
        if self._chunked:
            _set_chunk_column(metadata, files, str(path))
        self._set_component_orders(path, metadata, data_format)

        rate = resolve_sampling_rates(
            metadata, data_format.get("sampling_rate", default_sampling_rate_hz), str(path)
        )
        metadata["trace_sampling_rate_hz"] = rate
        _set_first_p_pick(metadata, path)
        if LABEL_COLUMN not in metadata.columns and "trace_category" in metadata.columns:
            metadata[LABEL_COLUMN] = metadata["trace_category"]
        _set_source_ids(metadata, self._chunked)
        metadata, unreadable = _readable_traces(
            metadata, files, keys, self._chunked, rate, str(path)
        )
        labelled, bad_labels = normalize_labels(metadata, labels or LabelSpec())
        unlabelled = pd.Series("", index=metadata.index)
        unlabelled[metadata.index.difference(labelled.index)] = [r for _, r in bad_labels]
        # The rows dropped here, with their event: a source names them in that event's row.
        self.skipped_rows = pd.concat(
            [unreadable, skipped_table(metadata, unlabelled)], ignore_index=True
        )
        skipped = list(
            zip(self.skipped_rows["trace_name"], self.skipped_rows["reason"], strict=True)
        )
        super().__init__(labelled, path=path, config=config, skipped=skipped)

    def _dimension_order(self, path: str | os.PathLike, data_format: dict) -> str:
        """``'CW'`` or ``'WC'``: the data_format's dimension order, else the class default."""
        dims = data_format.get("dimension_order")
        if dims is None:
            dims = self.default_dimension_order
            if self.default_component_order is None:  # SeisBench's own default, not a format's
                logger.warning(
                    "%s: no data_format/dimension_order; taken as %r, as SeisBench does",
                    Path(path).name, dims,
                )  # fmt: skip
        dims_text = _order_text(dims).strip().upper().replace("N", "")
        if dims_text not in ("CW", "WC"):
            raise ValueError(f"{path}: data_format/dimension_order {dims!r}; expected 'CW' or 'WC'")
        return dims_text

    def _set_component_orders(
        self, path: str | os.PathLike, metadata: pd.DataFrame, data_format: dict
    ) -> None:
        """The component order: the data_format's, or per trace from ``trace_component_order``
        (written back into ``metadata``); the rows of each order in ``self._orders``."""
        where = str(path)
        order = data_format.get("component_order", self.default_component_order)
        if order is not None:
            order = _order_text(order)
        self.component_order = order
        if "trace_component_order" in metadata.columns:
            per_trace = _per_trace_component_orders(path, metadata, order)
            metadata["trace_component_order"] = per_trace
            orders = sorted(per_trace.unique())
        elif order is None:
            raise ValueError(
                f"{where}: no component order (neither data_format/component_order in "
                f"{self.hdf5_path.name} nor a trace_component_order column); expected one, "
                "e.g. 'ZNE', since the stored rows cannot be told apart otherwise"
            )
        else:
            orders = [order]
        self._orders = {o: component_rows(o, where) for o in orders}
        if order is not None and order not in self._orders:
            self._orders[order] = component_rows(order, where)

    def _file(self, chunk: str = "") -> h5py.File:
        if self._pid != os.getpid():  # a new process (DataLoader worker): its own handles
            self._h5, self._datasets, self._pid = {}, {}, os.getpid()
        handle = self._h5.get(chunk)
        if handle is None:
            handle = h5py.File(self.hdf5_paths[chunk], "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            self._h5[chunk] = handle
        return handle

    def _dataset(self, key: str, chunk: str = "") -> h5py.Dataset:
        """``data/<key>`` of a chunk's file; bucket handles are kept (a group lookup costs more
        than the read), plain per-trace handles are not, so memory does not grow with the set."""
        data = self._file(chunk)["data"]
        if not key.startswith("bucket"):
            return data[key]
        handle = self._datasets.get((chunk, key))
        if handle is None:
            if len(self._datasets) >= MAX_OPEN_BUCKETS:
                self._datasets.clear()
            handle = self._datasets[(chunk, key)] = data[key]
        return handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = {}
        state["_pid"] = None
        state["_datasets"] = {}
        state.pop("_columns", None)  # rebuilt from metadata on first use
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle in self._h5.values():
                handle.close()
        self._h5 = {}
        self._datasets = {}

    def _chunk(self, row: dict[str, Any]) -> str:
        return str(row[CHUNK_COLUMN]) if self._chunked else ""

    def _where(self, row: dict[str, Any]) -> str:
        return self.hdf5_paths.get(self._chunk(row), self.hdf5_path).name

    def _load(self, row: dict[str, Any]) -> np.ndarray:
        name = row["trace_name"]
        try:
            key, index = parse_trace_name(name)
            dataset = self._dataset(key, self._chunk(row))
            data = dataset[()] if index is None else dataset[index]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise SkipTrace("unreadable", f"{name} in {self._where(row)}: {exc}") from None
        return self._arrange(data, row)

    def get_samples(
        self, indices: Sequence[int] | np.ndarray
    ) -> list[tuple[np.ndarray | SkipTrace, dict[str, Any]]]:
        """``(raw waveform, metadata row)`` of several samples; rows of one bucket that lie
        close together (gaps of at most :data:`MAX_ROW_GAP` rows) are read as one slab, one h5py
        read, instead of one read per row. An unreadable item has its SkipTrace as waveform."""
        out: list[np.ndarray | SkipTrace | None] = [None] * len(indices)
        rows: list[dict[str, Any]] = []
        by_bucket: dict[tuple[str, str], list[tuple[int, tuple[Any, ...], dict[str, Any]]]]
        by_bucket = defaultdict(list)
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
            if index is None or not isinstance(index[0], int) or index[0] < 0:
                out[pos] = self._load_or_skip(row)
            else:
                by_bucket[(self._chunk(row), key)].append((pos, index, row))
        for (chunk, key), items in by_bucket.items():
            items.sort(key=lambda item: item[1][0])
            for run in _row_runs(items):
                self._read_run(chunk, key, run, out)
        return list(zip(out, rows, strict=True))  # type: ignore[arg-type]

    def _read_run(self, chunk, key, run, out) -> None:
        """One slab read for ``run`` (items of one bucket sorted by row), then per-item arranging."""
        first, last = run[0][1][0], run[-1][1][0]
        try:
            block = self._dataset(key, chunk)[first : last + 1]
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
                if isinstance(exc, SkipTrace):
                    out[pos] = exc
                    continue
                out[pos] = SkipTrace(
                    "unreadable", f"{row['trace_name']} in {self._where(row)}: {exc}"
                )

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
        order = row.get("trace_component_order", self.component_order)
        if not isinstance(order, str):
            order = self.component_order
        rows = self._orders[order]
        if data.shape[0] > len(rows):
            raise SkipTrace(
                "bad shape",
                f"{name}: {data.shape[0]} channels but component_order {order!r}",
            )
        out = np.zeros((3, data.shape[1]), dtype=np.float32)
        present = set()
        for src, dst in enumerate(rows[: data.shape[0]]):
            if dst is None:
                continue
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


def _inspect_hdf5(file: Path) -> tuple[dict[str, Any], str, set[str]]:
    """``(data_format, its form, names under data/)`` of one waveform file."""
    try:
        with h5py.File(file, "r") as f:
            group = f["data_format"] if "data_format" in f else None
            data_format, form = read_data_format(group, str(file))
            if "data" not in f:
                raise ValueError(f"{file} has no 'data' group; expected data/<trace_name>")
            keys = set(f["data"].keys())
    except OSError as exc:
        raise ValueError(f"cannot read HDF5 file {file}: {exc}") from exc
    return data_format, form, keys


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
    """A SeisBench-format folder: ``metadata.csv`` + ``waveforms.hdf5``, or chunks
    (``metadata<chunk>.csv`` + ``waveforms<chunk>.hdf5``; a ``chunks`` file lists them).

    ``chunks``: the chunks to read (default: all, as one set); each trace's chunk is then in
    the ``trace_chunk`` column, as in SeisBench.
    """

    default_component_order = None
    default_dimension_order = "CW"

    def __init__(
        self,
        path: str | os.PathLike,
        config: PreprocessConfig | None = None,
        labels: LabelSpec | None = None,
        chunks: Sequence[str] | str | None = None,
    ):
        path = Path(path)
        available = seisbench_chunks(path, warn=True)
        if available is None:
            raise ValueError(
                f"{path} is not a SeisBench-format set: expected metadata.csv + waveforms.hdf5, "
                "or chunks (metadata<chunk>.csv + waveforms<chunk>.hdf5)"
            )
        if chunks is not None:
            asked = [chunks] if isinstance(chunks, str) else [str(c) for c in chunks]
            unknown = [c for c in asked if c not in available]
            if unknown or not asked:
                raise ValueError(
                    f"{path}: chunks {unknown or asked!r} not in the set; expected some of "
                    f"{available}"
                )
            available = sorted(set(asked))
        tables, files = [], {}
        for chunk in available:
            csv, hdf5 = path / f"metadata{chunk}.csv", path / f"waveforms{chunk}.hdf5"
            for f in (csv, hdf5):
                if not f.is_file():
                    raise ValueError(f"{path} is not a SeisBench-format set: {f.name} is missing")
            try:
                table = pd.read_csv(csv, low_memory=False)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read {csv}: {exc}") from exc
            if available != [""]:
                table[CHUNK_COLUMN] = chunk
            tables.append(table)
            files[chunk] = hdf5
        metadata = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        self.chunks = available
        super().__init__(path, metadata, files, config, labels=labels)


def is_seisbench_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a SeisBench-format set (plain or chunked)."""
    try:
        return seisbench_chunks(path) is not None
    except ValueError:
        return True  # an unreadable chunks file: let the reader say so
