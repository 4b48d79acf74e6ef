"""WaveformDataAdapter: waveforms from any source -> ``(spectrogram, label_index)``.

Per item, in this order: read (reader / Stream conversion), DROP_NAN, resampling to the config's
rate, TRIMMING, then ZSCORE and SPECTROGRAM through :func:`spectrogram_batch`.

Checks happen once, at construction, in a streaming pass over all items: every item is read,
checked and trimmed, and either kept or listed in ``dropped`` with its reason. Memory stays flat
for lazy (HDF5 / miniSEED) sets, because windows of a dataset are not cached by default; they are
read again on access (``cache_windows=True`` keeps them). In-memory inputs (arrays, Streams) keep
their trimmed windows.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from obspy import Stream, UTCDateTime
from torch.utils.data import Dataset

from quake.classes import ClassNames
from quake.data.components import listed_components, stream_to_array_info
from quake.data.config import PreprocessConfig, TransformOP
from quake.data.quality import COMPONENTS, QualityRecord, check_numeric
from quake.data.readers.base import LABEL_COLUMN, READING_KEY, WaveformDataset
from quake.data.transforms import SkipTrace, spectrogram_batch, window_from_array

logger = logging.getLogger(__name__)

UNLABELLED = -1
#: Metadata column of an item's place among its recording's windows (0: the first;
#: ``PreprocessConfig.windows_per_recording``).
WINDOW_COLUMN = "trace_window"
# Items read per batched call while checking and loading (HDF5 bucket rows come in slabs).
READ_BLOCK = 256


def anchor_sample_from_metadata(meta: dict[str, Any], sampling_rate_hz: float) -> float | None:
    """The TRIMMING anchor of one item, in samples of its own rate.

    ``trace_p_arrival_sample`` when present; else the origin time
    (``source_origin_time - trace_start_time``) when both are known; else None (trace start).
    """
    p = meta.get("trace_p_arrival_sample")
    if p is not None and _finite(p):
        return float(p)
    origin, start = meta.get("source_origin_time"), meta.get("trace_start_time")
    if _present(origin) and _present(start):
        try:
            return (UTCDateTime(origin) - UTCDateTime(start)) * sampling_rate_hz
        except (TypeError, ValueError):
            return None
    return None


def prepare_window(
    raw: np.ndarray, meta: dict[str, Any], config: PreprocessConfig, inspect: bool = True
) -> tuple[np.ndarray, QualityRecord]:
    """One raw item -> ``(window (3, window_samples) float32, quality record)``.

    The missing-component policy from ``trace_components``, then
    :func:`~quake.data.transforms.window_from_array` (quality checks and policy, resampling,
    TRIMMING, as classification applies them; a reader that converted a Stream hands its
    reading over in ``meta[READING_KEY]``). Raises SkipTrace with the reason: ``bad shape``,
    ``nan``, ``spike``, ``clipping``, ``too short``, ``gap``, ``dropout``, ``wrong length`` (no
    TRIMMING and the item is not ``window_samples`` long) or ``dead`` (all three channels flat).
    ``inspect=False``: the item was inspected before and found clean (see ``window_from_array``).
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[0] != 3 or raw.shape[1] == 0:
        raise SkipTrace("bad shape", f"waveform shape {raw.shape}; expected (3, samples)")
    check_numeric(raw, "waveform")
    raw = raw.astype(np.float32, copy=False)
    reading = meta.get(READING_KEY)
    copy_z_rows: list[int] = []
    listed = listed_components(meta.get("trace_components"))
    if config.missing_component == "copy_z" and listed is not None and "Z" in listed:
        # the adapter's policy wins even when the reader was opened with another config
        copy_z_rows = [row for row, comp in enumerate(COMPONENTS) if comp not in listed]
    rate = meta.get("trace_sampling_rate_hz")
    rate = float(rate) if rate is not None and _finite(rate) else config.sampling_rate_hz
    window, record = window_from_array(
        raw,
        config,
        sampling_rate_hz=rate,
        anchor_sample=anchor_sample_from_metadata(meta, rate),
        copy_z_rows=copy_z_rows,
        reading=reading,
        missing="".join(c for c in COMPONENTS if c not in listed) if listed is not None else "",
        inspect=inspect,
        window_index=int(meta.get(WINDOW_COLUMN, 0)),
    )
    return window, record


class WaveformDataAdapter(Dataset):
    """A torch Dataset of ``(spectrogram (3, F, T) float32, label index)``.

    ``events``: a list of obspy Streams (one station each), a list or array of ``(3, n)`` Z, N, E
    arrays (at ``config.sampling_rate_hz``), or a :class:`WaveformDataset` (then ``labels=None``
    uses its ``source_type``). ``stft_nperseg``, ``stft_hop`` and ``transforms`` override the
    config's fields when given. ``class_names`` given: labels are encoded with it (an unknown
    label is a ValueError); otherwise the sorted set of labels. Without any labels every item
    gets label index -1 (for classification).
    """

    def __init__(
        self,
        events: Any,
        labels: Sequence[Any] | np.ndarray | None = None,
        stft_nperseg: int | None = None,
        stft_hop: int | None = None,
        transforms: TransformOP | None = None,
        config: PreprocessConfig | None = None,
        class_names: ClassNames | Sequence[str] | None = None,
        progress: bool = False,
        cache_windows: bool | None = None,
    ):
        config = config or PreprocessConfig()
        overrides = {
            k: v
            for k, v in (
                ("stft_nperseg", stft_nperseg),
                ("stft_hop", stft_hop),
                ("transforms", transforms),
            )
            if v is not None
        }
        self.config = config.replace(**overrides) if overrides else config
        self._source = _make_items(events, self.config)
        n_items = len(self._source)

        raw_labels = self._source.labels() if labels is None else list(labels)
        if raw_labels is not None and len(raw_labels) != n_items:
            raise ValueError(
                f"got {len(raw_labels)} labels for {n_items} events; expected one per event"
            )
        self.class_names, encoded = _encode_labels(raw_labels, class_names, self._source)

        cache = self._source.in_memory if cache_windows is None else bool(cache_windows)
        self.dropped: list[tuple[str, str]] = list(self._source.skipped)
        kept: list[int] = []
        inspect_again: list[bool] = []  # the inspection found something to repair or keep
        padded: list[bool] = []
        flat: list[str] = []
        quality: list[str] = []
        self.quality_counts: Counter[str] = Counter()  # quality flag -> items kept with it
        windows: list[np.ndarray] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_items, desc="checking waveforms", unit="item")
        for start in range(0, n_items, READ_BLOCK):
            block = range(start, min(start + READ_BLOCK, n_items))
            for i, (raw, meta) in zip(block, self._source.load_many(block), strict=True):
                try:
                    if isinstance(raw, SkipTrace):
                        raise raw
                    window, record = prepare_window(raw, meta, self.config)
                except SkipTrace as exc:
                    self.dropped.append((self._source.item_id(i), str(exc)))
                    continue
                kept.append(i)
                inspect_again.append(
                    bool(record.spikes or record.clipped or record.non_finite or record.dropouts)
                )
                padded.append(record.padded)
                flat.append(record.dead)
                quality.append(record.describe())
                self.quality_counts.update(record.flags())
                if cache:
                    windows.append(window)
            if bar is not None:
                bar.update(len(block))
        if bar is not None:
            bar.close()

        self._kept = np.asarray(kept, dtype=np.int64)
        # a window is read again every epoch: a trace found clean is not inspected again
        self._inspect = np.asarray(inspect_again, dtype=bool)
        self._windows: np.ndarray | None = np.stack(windows) if cache and windows else None
        if cache and not windows:
            self._windows = np.zeros((0, 3, self.config.window_samples), dtype=np.float32)
        self.labels = encoded[self._kept] if len(encoded) else np.zeros(0, dtype=np.int64)
        meta = self._source.metadata(self._kept)
        meta["trace_padded"] = np.asarray(padded, dtype=bool)
        meta["trace_flat_channels"] = pd.Categorical(flat)
        meta["trace_quality"] = pd.Categorical(quality)
        if raw_labels is not None and self.class_names is not None:
            meta[LABEL_COLUMN] = self.class_names.decode(self.labels)
        self.metadata = meta.reset_index(drop=True)
        self.output_shape: tuple[int, ...] = self.config.output_shape

        if self.quality_counts:
            logger.info(
                "quality flags on %d kept items: %s",
                len(kept),
                ", ".join(f"{f} x{n}" for f, n in self.quality_counts.most_common()),
            )
        if self.dropped:
            logger.warning(
                "dropped %d of %d items: %s",
                len(self.dropped),
                n_items,
                ", ".join(f"{r} x{c}" for r, c in self.drop_counts().items()),
            )

    # --- Dataset protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        window = torch.from_numpy(self.get_waveform(i))[None]
        return spectrogram_batch(window, self.config)[0], int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole DataLoader batch at once (torch calls this when it exists): one batched read
        (neighbouring rows of an HDF5 bucket in one slab) and one batched spectrogram."""
        specs = self.spectrograms(indices)
        return [(specs[k], int(self.labels[i])) for k, i in enumerate(indices)]

    # --- access ------------------------------------------------------------------------------
    def get_waveform(self, i: int) -> np.ndarray:
        """``(3, window_samples)`` float32 after DROP_NAN / components / resampling / TRIMMING,
        before ZSCORE and SPECTROGRAM (what waveform augmentation works on)."""
        i = self._check_index(i)
        if self._windows is not None:
            return self._windows[i]
        raw, meta = self._source.load(int(self._kept[i]))
        window, _ = prepare_window(raw, meta, self.config, inspect=bool(self._inspect[i]))
        return window

    def get_waveforms(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Several windows ``(len(indices), 3, window_samples)``, read in one batched call."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self._windows is not None:
            return self._windows[idx]
        n = len(self)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise IndexError(f"item index {bad} out of range for {n} items")
        out = np.empty((len(idx), 3, self.config.window_samples), dtype=np.float32)
        rows = idx % n if n else idx
        for k, (raw, meta) in enumerate(self._source.load_many(self._kept[rows])):
            if isinstance(raw, SkipTrace):
                raise raw
            out[k] = prepare_window(raw, meta, self.config, inspect=bool(self._inspect[rows[k]]))[0]
        return out

    def load_waveforms(self, progress: bool = False, out: Any = None) -> Any:
        """All kept windows as one ``(N, 3, window_samples)`` float32 array.

        ``out``: fill this instead of a new array, block by block in row order, and return it:
        an array of that shape and dtype (a memmap, say), or any object with those ``shape`` and
        ``dtype`` that takes ``out[start:stop] = block`` (a writer streaming to a file), so that
        a set larger than memory never has to be held whole.
        """
        shape = (len(self), 3, self.config.window_samples)
        if out is not None and (
            tuple(out.shape) != shape or np.dtype(out.dtype) != np.dtype(np.float32)
        ):
            raise ValueError(
                f"out has shape {tuple(out.shape)} and dtype {np.dtype(out.dtype)}; "
                f"expected {shape} float32"
            )
        if self._windows is not None:
            if out is None:
                return self._windows
            out[0 : len(self)] = self._windows
            return out
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self), desc="loading waveforms", unit="item")
        for start in range(0, len(self), READ_BLOCK):
            stop = min(start + READ_BLOCK, len(self))
            out[start:stop] = self.get_waveforms(np.arange(start, stop))
            if bar is not None:
                bar.update(stop - start)
        if bar is not None:
            bar.close()
        return out

    def spectrograms(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Spectrograms of several items in one batched call: ``(len(indices), 3, F, T)``."""
        batch = self.get_waveforms(indices)
        if not len(batch):
            return torch.zeros((0, *self.output_shape), dtype=torch.float32)
        return spectrogram_batch(torch.from_numpy(np.ascontiguousarray(batch)), self.config)

    def drop_counts(self) -> dict[str, int]:
        """Reason category -> number of dropped items (for reports)."""
        return dict(Counter(reason.split(":", 1)[0] for _, reason in self.dropped))

    def __repr__(self) -> str:
        classes = self.class_names.to_list() if self.class_names else None
        return (
            f"WaveformDataAdapter({len(self)} items, {len(self.dropped)} dropped, "
            f"classes={classes}, output_shape={self.output_shape})"
        )

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"item index {i} out of range for {n} items")
        return i % n if n else i


# --- the items a set is made of (arrays, streams, a reader's traces) ---------------------------
class _Items:
    in_memory = True
    skipped: Sequence[tuple[str, str]] = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def load_many(self, indices: Sequence[int]) -> list[tuple[np.ndarray | SkipTrace, dict]]:
        """``load`` of several items; an unreadable one comes back as its SkipTrace."""
        out: list[tuple[np.ndarray | SkipTrace, dict]] = []
        for i in indices:
            try:
                out.append(self.load(int(i)))
            except SkipTrace as exc:
                out.append((exc, {}))
        return out

    def item_id(self, i: int) -> str:
        return f"item{i}"

    def labels(self) -> list[Any] | None:
        return None

    def metadata(self, kept: np.ndarray) -> pd.DataFrame:
        raise NotImplementedError


class _ArrayItems(_Items):
    def __init__(self, arrays: Sequence[Any], config: PreprocessConfig):
        self.arrays = arrays
        self.rate = config.sampling_rate_hz

    def __len__(self) -> int:
        return len(self.arrays)

    def load(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        return np.asarray(self.arrays[i]), {"trace_sampling_rate_hz": self.rate}

    def metadata(self, kept: np.ndarray) -> pd.DataFrame:
        names = [self.item_id(int(i)) for i in kept]
        return pd.DataFrame(
            {
                "trace_name": names,
                "source_id": names,
                "trace_sampling_rate_hz": [self.rate] * len(names),
            }
        )


class _StreamItems(_Items):
    def __init__(self, streams: Sequence[Stream], config: PreprocessConfig):
        self.streams = streams
        self.config = config
        self._rows: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def load(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        info = stream_to_array_info(self.streams[i], self.config)
        net, sta, loc = info.station.split(".")
        channel = next(iter(info.channels.values()), "")
        row = {
            "trace_name": f"{info.station}.{channel[:-1]}.{info.starttime.isoformat()}",
            "source_id": self.item_id(i),
            "station_network_code": net,
            "station_code": sta,
            "station_location_code": loc,
            "trace_channel": channel[:-1],
            "trace_components": "".join(c for c in COMPONENTS if c in info.channels),
            "trace_start_time": str(info.starttime),
            "trace_sampling_rate_hz": info.sampling_rate_hz,
            "trace_original_sampling_rate_hz": info.original_sampling_rate_hz,
        }
        self._rows[i] = row
        return info.data, {"trace_sampling_rate_hz": info.sampling_rate_hz, READING_KEY: info}

    def metadata(self, kept: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame([self._rows[int(i)] for i in kept])


class _DatasetItems(_Items):
    in_memory = False

    def __init__(self, dataset: WaveformDataset):
        self.dataset = dataset
        self.skipped = dataset.skipped
        self._names = dataset.metadata["trace_name"].astype(str).to_numpy()

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        return self.dataset.get_sample(i)

    def load_many(self, indices: Sequence[int]) -> list[tuple[np.ndarray | SkipTrace, dict]]:
        return self.dataset.get_samples(indices)

    def item_id(self, i: int) -> str:
        return str(self._names[i])

    def labels(self) -> list[Any] | None:
        labels = self.dataset.labels
        return None if labels is None else list(labels)

    def metadata(self, kept: np.ndarray) -> pd.DataFrame:
        table = self.dataset.metadata
        if len(kept) == len(table) and np.array_equal(kept, np.arange(len(table))):
            meta = table.copy(deep=False)  # nothing dropped: share the columns (copy on write)
        else:
            meta = table.iloc[kept].reset_index(drop=True)
        if "source_id" not in meta.columns:
            meta["source_id"] = meta["trace_name"]
        return meta


class _RecordingWindows(_Items):
    """Each recording of ``items`` as ``n`` items, its consecutive windows
    (``windows_per_recording``): item ``i`` is window ``i % n`` of recording ``i // n``, read
    once per block. The first window keeps the recording's name, the others add ``_w<k>``."""

    def __init__(self, items: _Items, n: int):
        self.items, self.n = items, n
        self.in_memory = items.in_memory
        self.skipped = items.skipped

    def __len__(self) -> int:
        return len(self.items) * self.n

    def load(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        raw, meta = self.items.load(i // self.n)
        return raw, {**meta, WINDOW_COLUMN: i % self.n}

    def load_many(self, indices: Sequence[int]) -> list[tuple[np.ndarray | SkipTrace, dict]]:
        idx = np.asarray(indices, dtype=np.int64)
        recordings, where = np.unique(idx // self.n, return_inverse=True)
        loaded = self.items.load_many(recordings)
        return [
            (loaded[w][0], {**loaded[w][1], WINDOW_COLUMN: int(i % self.n)})
            for i, w in zip(idx, where.reshape(-1), strict=True)
        ]

    def item_id(self, i: int) -> str:
        name, k = self.items.item_id(i // self.n), i % self.n
        return name if k == 0 else f"{name}_w{k}"

    def labels(self) -> list[Any] | None:
        labels = self.items.labels()
        return None if labels is None else [label for label in labels for _ in range(self.n)]

    def metadata(self, kept: np.ndarray) -> pd.DataFrame:
        kept = np.asarray(kept, dtype=np.int64)
        meta = self.items.metadata(kept // self.n).reset_index(drop=True)
        index = kept % self.n
        meta[WINDOW_COLUMN] = index
        if "trace_name" in meta.columns:
            names = meta["trace_name"].astype(str)
            meta["trace_name"] = names.where(index == 0, names + "_w" + index.astype(str))
        return meta


def _make_items(events: Any, config: PreprocessConfig) -> _Items:
    items = _items_of(events, config)
    n = config.windows_per_recording
    return items if n == 1 else _RecordingWindows(items, n)


def _items_of(events: Any, config: PreprocessConfig) -> _Items:
    if isinstance(events, WaveformDataset):
        return _DatasetItems(events)
    if isinstance(events, Stream):
        raise ValueError("events is one obspy Stream; expected a list of Streams (one per station)")
    if isinstance(events, np.ndarray):
        if events.ndim != 3 or events.shape[1] != 3:
            raise ValueError(
                f"events array must have shape (items, 3, samples), got {events.shape}"
            )
        return _ArrayItems(events, config)
    if isinstance(events, (list, tuple)):
        if events and all(isinstance(e, Stream) for e in events):
            return _StreamItems(events, config)
        if any(isinstance(e, Stream) for e in events):
            raise ValueError("events mixes obspy Streams and arrays; expected one kind")
        return _ArrayItems(events, config)
    raise ValueError(
        f"events of type {type(events).__name__}; expected a list of obspy Streams, a list/array "
        "of (3, n) arrays, or a dataset from quake.data.open_dataset"
    )


def _encode_labels(
    raw_labels: list[Any] | None,
    class_names: ClassNames | Sequence[str] | None,
    source: _Items,
) -> tuple[ClassNames | None, np.ndarray]:
    names = None
    if class_names is not None:
        names = class_names if isinstance(class_names, ClassNames) else ClassNames(class_names)
    if raw_labels is None:
        return names, np.full(len(source), UNLABELLED, dtype=np.int64)
    if names is None and isinstance(source, _DatasetItems) and source.dataset.class_names:
        names = source.dataset.class_names
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw_labels):
        if names is None:
            raise ValueError("integer labels need class_names to say what each index means")
        bad = [v for v in raw_labels if not 0 <= int(v) < len(names)]
        if bad:
            raise ValueError(f"label index {bad[0]!r} out of range; expected 0..{len(names) - 1}")
        return names, np.asarray(raw_labels, dtype=np.int64)
    if names is None:
        names = ClassNames.from_labels(str(v) for v in raw_labels)
    return names, np.asarray(names.encode(str(v) for v in raw_labels), dtype=np.int64)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value).strip() not in ("", "nan", "NaT", "None")
