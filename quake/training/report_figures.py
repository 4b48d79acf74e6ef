"""What a seismologist looks at to trust a classifier, beyond the scores: examples and breakdowns.

From the pooled out-of-fold predictions of a run (``predictions.csv``), the kept windows and the
set's metadata, :func:`write_explanations` writes

- ``misclassified.png``: the misclassified test traces, most confident mistakes first, up to a
  limit: Z, N, E waveforms and the Z spectrogram the model sees, true and predicted class, the
  predicted class's probability, station and event;
- ``typical_correct.png``: per class, the correct traces with the highest probability of their
  class;
- ``class_mean_spectrograms.png``: the mean model input of each class side by side (Z, N, E), and
  their time-averaged Z spectra on one axis;
- ``performance_by.png``: accuracy and per-class recall by magnitude, epicentral distance and SNR
  bins, when the metadata give any of them;

and returns, JSON-safe, the traces shown, the operating points of every class and the tables by
station, magnitude, distance and SNR, which :func:`quake.training.report.render_report` writes
into ``report.md``. Only the traces shown are read from the windows (and a bounded sample per
class for the means), so a memory-mapped window cache stays on disk.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from quake.data import PreprocessConfig, TransformOP, spectrogram_batch  # noqa: E402
from quake.probabilities import prob_column  # noqa: E402
from quake.runtime import write_atomic  # noqa: E402
from quake.training.metrics import operating_points  # noqa: E402

logger = logging.getLogger(__name__)

MISCLASSIFIED_FILE = "misclassified.png"
TYPICAL_FILE = "typical_correct.png"
CLASS_MEANS_FILE = "class_mean_spectrograms.png"
BREAKDOWN_FILE = "performance_by.png"
#: Most misclassified traces drawn; the rest are counted in the report.
MISCLASSIFIED_LIMIT = 16
#: Correct traces drawn per class.
TYPICAL_PER_CLASS = 3
#: Traces per class averaged into the class-mean spectrograms (a fixed-seed sample above it).
MEAN_TRACES_PER_CLASS = 512
#: Stations listed one by one in the per-station table; the others share one row.
STATION_ROWS = 25
_GRID_COLUMNS = 4
_BATCH = 256
_EARTH_RADIUS_KM = 6371.0
_KM_PER_DEGREE = math.pi * _EARTH_RADIUS_KM / 180.0

# Bin edges of the continuous breakdowns, trimmed to the range of the data.
_DISTANCE_EDGES_KM = (0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 20100)
_SNR_EDGES_DB = (-math.inf, 0, 10, 20, 30, 40, 60, math.inf)

#: The breakdowns, by key: their name in the report and the metadata (SeisBench names) they come
#: from, the first one found being used.
BREAKDOWN_SOURCES = {
    "station": ("station", "`station_network_code` + `station_code`, or `trace_station_id`"),
    "magnitude": ("magnitude", "`source_magnitude`"),
    "distance": (
        "epicentral distance",
        "`path_ep_distance_km`, `path_ep_distance_deg`, or `source_latitude_deg`, "
        "`source_longitude_deg`, `station_latitude_deg`, `station_longitude_deg`",
    ),
    "snr": ("SNR", "`trace_snr_db` (its mean when it lists one value per component)"),
}


def _save(fig, path: Path, layout: bool = True) -> None:
    if layout:
        fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# ------------------------------------------------------------------------------- the examples
def predicted_frame(predictions: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """``predictions`` (the columns of ``predictions.csv``) with ``y_pred``, ``predicted_class``,
    ``probability`` (of the predicted class) and ``true_probability`` (of the true class). The
    predicted class is the table's own ``predicted_class`` where it has one (the class the
    deployed model's thresholds decide), else the most probable."""
    probs = predictions[[prob_column(c) for c in class_names]].to_numpy(dtype=np.float64)
    y_true = predictions["y_true"].to_numpy(dtype=np.int64)
    if "predicted_class" in predictions.columns:
        index = {name: c for c, name in enumerate(class_names)}
        y_pred = predictions["predicted_class"].map(index).to_numpy(dtype=np.int64)
    else:
        y_pred = probs.argmax(axis=1)
    frame = predictions.copy()
    frame["y_pred"] = y_pred
    frame["predicted_class"] = np.asarray(class_names, dtype=object)[y_pred]
    frame["probability"] = probs[np.arange(len(probs)), y_pred]
    frame["true_probability"] = probs[np.arange(len(probs)), y_true]
    return frame


def misclassified_items(
    frame: pd.DataFrame, limit: int = MISCLASSIFIED_LIMIT
) -> tuple[pd.DataFrame, int]:
    """The misclassified rows of :func:`predicted_frame` to show: the most confident mistakes
    first (probability of the wrong class, descending; ties by ``index``), at most ``limit``.
    Returns them and how many traces were misclassified in all."""
    wrong = frame[frame["y_pred"] != frame["y_true"]]
    wrong = wrong.sort_values(["probability", "index"], ascending=[False, True], kind="stable")
    return wrong.head(limit), len(wrong)


def typical_correct_items(
    frame: pd.DataFrame, class_names: Sequence[str], per_class: int = TYPICAL_PER_CLASS
) -> pd.DataFrame:
    """Per class (in class order), the ``per_class`` correct rows with the highest probability
    of their class (ties by ``index``)."""
    right = frame[frame["y_pred"] == frame["y_true"]]
    parts = []
    for c in range(len(class_names)):
        mine = right[right["y_true"] == c]
        parts.append(
            mine.sort_values(["probability", "index"], ascending=[False, True], kind="stable").head(
                per_class
            )
        )
    return pd.concat(parts) if parts else right.head(0)


def _spectrogram_config(config: PreprocessConfig) -> PreprocessConfig:
    """The preprocessing with SPECTROGRAM on (what the model sees, also when a config omits it)."""
    if TransformOP.SPECTROGRAM in config.transforms:
        return config
    return config.replace(transforms=config.transforms | TransformOP.SPECTROGRAM)


def _spectrograms(waveforms: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    with torch.no_grad():
        return spectrogram_batch(torch.as_tensor(waveforms), _spectrogram_config(config)).numpy()


def plot_examples(
    items: pd.DataFrame,
    waveforms: np.ndarray,
    config: PreprocessConfig,
    path: Path,
    title: str,
    columns: int = _GRID_COLUMNS,
    cells: Sequence[int] | None = None,
) -> None:
    """A grid with one cell per row of ``items`` (columns of :func:`predicted_frame` plus
    ``station``): the Z, N, E waveforms (scaled together by their largest amplitude, so the
    relative size of the components shows; a dead one is flat) above the Z spectrogram of the
    model input. ``waveforms``: ``(len(items), 3, samples)``, the trimmed windows; ``cells``:
    the grid cell of each item, row by row (default: one after the other)."""
    n = len(items)
    cells = list(range(n)) if cells is None else [int(c) for c in cells]
    columns = max(1, min(columns, max(cells) + 1))
    rows = max(cells) // columns + 1
    spectra = _spectrograms(waveforms, config)
    fs = config.sampling_rate_hz
    seconds = waveforms.shape[-1] / fs
    height = 3.6 * rows + 0.7
    fig = plt.figure(figsize=(4.2 * columns, height))
    # fixed margins, no layout engine: laying out dozens of axes costs seconds
    grid = fig.add_gridspec(
        rows,
        columns,
        left=0.045,
        right=0.99,
        bottom=0.35 / height,
        top=1 - 0.75 / height,
        hspace=0.42,
        wspace=0.22,
    )
    t = np.arange(waveforms.shape[-1]) / fs
    for k, (_, item) in enumerate(items.iterrows()):
        cell = grid[divmod(cells[k], columns)].subgridspec(
            2, 1, height_ratios=[1.3, 1.0], hspace=0.0
        )
        ax_w = fig.add_subplot(cell[0])
        ax_s = fig.add_subplot(cell[1], sharex=ax_w)
        trace = np.asarray(waveforms[k], dtype=np.float64)
        trace = trace - trace.mean(axis=1, keepdims=True)
        scale = np.abs(trace).max()
        trace = trace / scale if scale > 0 else trace
        for j, offset in enumerate((2.0, 0.0, -2.0)):  # Z on top, then N, E
            ax_w.plot(t, trace[j] * 0.9 + offset, lw=0.5, color=f"C{j}")
        ax_w.set_yticks([2.0, 0.0, -2.0], ["Z", "N", "E"])
        ax_w.set_ylim(-3.1, 3.1)
        ax_w.tick_params(bottom=False, labelbottom=False, labelsize=7)
        ax_w.set_title(
            f"true {item['true_class']} -> {item['predicted_class']} (p={item['probability']:.2f})"
            f"\n{item['station']} · {_short(item['source_id'])}",
            fontsize=8,
        )
        ax_s.imshow(
            spectra[k, 0],
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0.0, seconds, 0.0, fs / 2),
        )
        ax_s.set_ylabel("Hz (Z)", fontsize=7)
        ax_s.set_xlabel("s", fontsize=7)
        ax_s.tick_params(labelsize=7)
        # few ticks: drawing them is most of the time a grid of dozens of axes takes
        ax_s.xaxis.set_major_locator(MaxNLocator(5))
        ax_s.yaxis.set_major_locator(MaxNLocator(3))
    fig.suptitle(title, fontsize=11, y=1 - 0.12 / height, va="top")
    _save(fig, path, layout=False)


def _short(text: object, width: int = 38) -> str:
    text = str(text)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _shown(items: pd.DataFrame) -> list[dict]:
    return [
        {
            "index": int(row["index"]),
            "fold": int(row["fold"]),
            "trace_name": str(row["trace_name"]),
            "source_id": str(row["source_id"]),
            "station": str(row["station"]),
            "true_class": str(row["true_class"]),
            "predicted_class": str(row["predicted_class"]),
            "probability": float(row["probability"]),
            "baseline_probability": (
                float(row["baseline_probability"]) if "baseline_probability" in row else None
            ),
        }
        for _, row in items.iterrows()
    ]


def _read_windows(waveforms, indices: np.ndarray) -> np.ndarray:
    """Only the rows ``indices`` of the windows (a tensor, an array or a memory map), read in
    ascending order."""
    indices = np.asarray(indices, dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    if isinstance(waveforms, torch.Tensor):
        picked = waveforms[torch.from_numpy(indices[order])].numpy()
    else:
        picked = np.asarray(waveforms[indices[order]])
    out = np.empty(picked.shape, dtype=np.float32)
    out[order] = picked
    return out


# -------------------------------------------------------------------- class-mean spectrograms
def class_mean_spectrograms(
    waveforms,
    labels: np.ndarray,
    config: PreprocessConfig,
    n_classes: int,
    max_per_class: int = MEAN_TRACES_PER_CLASS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The mean model input ``(n_classes, 3, F, T)`` of each class and how many traces went in
    (all of a class's traces, or a fixed-seed sample of ``max_per_class``); NaN for a class
    without traces."""
    rng = np.random.default_rng(seed)
    config = _spectrogram_config(config)
    means = np.full((n_classes, *config.spectrogram_shape), np.nan, dtype=np.float64)
    counts = np.zeros(n_classes, dtype=np.int64)
    for c in range(n_classes):
        members = np.flatnonzero(np.asarray(labels) == c)
        if len(members) > max_per_class:
            members = np.sort(rng.choice(members, size=max_per_class, replace=False))
        if not len(members):
            continue
        total = np.zeros(config.spectrogram_shape, dtype=np.float64)
        for start in range(0, len(members), _BATCH):
            chunk = _read_windows(waveforms, members[start : start + _BATCH])
            total += _spectrograms(chunk, config).sum(axis=0, dtype=np.float64)
        means[c] = total / len(members)
        counts[c] = len(members)
    return means, counts


def plot_class_means(
    means: np.ndarray,
    counts: np.ndarray,
    class_names: Sequence[str],
    config: PreprocessConfig,
    path: Path,
) -> None:
    """One column per class, rows Z, N, E (one colour scale per row), and below them the
    time-averaged Z spectrum of every class on one axis."""
    present = [c for c in range(len(class_names)) if counts[c] > 0]
    fs = config.sampling_rate_hz
    seconds = config.window_samples / fs
    fig = plt.figure(figsize=(3.4 * len(present) + 1.2, 10))
    grid = fig.add_gridspec(4, len(present), height_ratios=[1, 1, 1, 1.3])
    for row, component in enumerate("ZNE"):
        values = means[present, row]
        vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
        for col, c in enumerate(present):
            ax = fig.add_subplot(grid[row, col])
            image = ax.imshow(
                means[c, row],
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=vmin,
                vmax=vmax,
                extent=(0.0, seconds, 0.0, fs / 2),
            )
            if row == 0:
                ax.set_title(f"{class_names[c]}\n(mean of {counts[c]} traces)", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{component}: Hz")
            if row == 2:
                ax.set_xlabel("s")
        fig.colorbar(image, ax=ax, fraction=0.05)
    ax = fig.add_subplot(grid[3, :])
    freqs = np.linspace(0.0, fs / 2, means.shape[-2])
    for c in present:
        ax.plot(freqs, means[c, 0].mean(axis=-1), label=class_names[c])
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("mean log(1 + |STFT|), Z")
    ax.set_title("Time-averaged Z spectrum of the model input, per class")
    ax.legend(fontsize=8)
    fig.suptitle("Class-mean spectrograms (model input: z-scored trace, log STFT magnitude)")
    _save(fig, path)


# ------------------------------------------------------------------------------- breakdowns
def station_labels(metadata: pd.DataFrame) -> pd.Series | None:
    """``NET.STA`` per row (or the station code alone, or ``trace_station_id``; missing: NA);
    None when the metadata name no station."""
    if "station_code" in metadata:
        station = metadata["station_code"].astype("string")
        if "station_network_code" in metadata:
            network = metadata["station_network_code"].astype("string").fillna("")
            station = (network + ".").where(network != "", "") + station
        return station
    if "trace_station_id" in metadata:
        return metadata["trace_station_id"].astype("string")
    return None


def _numeric(column: pd.Series) -> pd.Series:
    """Numbers from a metadata column; a text of several numbers (``"[12.1 9.8 15.0]"``, one
    per component) gives their mean."""
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(float)

    def parse(value: object) -> float:
        found = [
            float(x) for x in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", str(value))
        ]
        finite = [x for x in found if math.isfinite(x)]
        return float(np.mean(finite)) if finite else math.nan

    return column.map(parse).astype(float)


def _haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(v, dtype=float)) for v in (lat1, lon1, lat2, lon2)
    )
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def continuous_values(metadata: pd.DataFrame) -> dict[str, tuple[pd.Series, str]]:
    """``{"magnitude" | "distance" | "snr": (values, source)}`` for those the metadata give
    (at least one finite value); ``source`` names the column(s) used."""
    found: dict[str, tuple[pd.Series, str]] = {}

    def keep(key: str, values: pd.Series, source: str) -> None:
        if np.isfinite(values.to_numpy(dtype=float)).any():
            found[key] = (values, source)

    if "source_magnitude" in metadata:
        keep("magnitude", _numeric(metadata["source_magnitude"]), "source_magnitude")
    coords = (
        "source_latitude_deg",
        "source_longitude_deg",
        "station_latitude_deg",
        "station_longitude_deg",
    )
    if "path_ep_distance_km" in metadata:
        keep("distance", _numeric(metadata["path_ep_distance_km"]), "path_ep_distance_km")
    if "distance" not in found and "path_ep_distance_deg" in metadata:
        degrees = _numeric(metadata["path_ep_distance_deg"])
        keep("distance", degrees * _KM_PER_DEGREE, "path_ep_distance_deg")
    if "distance" not in found and all(c in metadata for c in coords):
        km = _haversine_km(*(_numeric(metadata[c]) for c in coords))
        keep("distance", pd.Series(km, index=metadata.index), "source and station coordinates")
    if "trace_snr_db" in metadata:
        keep("snr", _numeric(metadata["trace_snr_db"]), "trace_snr_db")
    return found


def _edges(values: np.ndarray, candidates: Sequence[float]) -> list[float]:
    """The stretch of ``candidates`` that covers the finite ``values`` (open-ended beyond)."""
    low, high = float(np.min(values)), float(np.max(values))
    below = [i for i, e in enumerate(candidates) if e <= low]
    above = [i for i, e in enumerate(candidates) if e > high]
    edges = [
        float(e) for e in candidates[below[-1] if below else 0 : above[0] + 1 if above else None]
    ]
    if not below:
        edges.insert(0, -math.inf)
    if not above:
        edges.append(math.inf)
    return edges


def _magnitude_edges(values: np.ndarray) -> list[float]:
    low, high = float(np.min(values)), float(np.max(values))
    for step in (0.5, 1.0, 2.0):
        start, stop = math.floor(low / step) * step, (math.floor(high / step) + 1) * step
        if (stop - start) / step <= 8:
            break
    return [float(x) for x in np.arange(start, stop + step / 2, step)]


def _bin_label(low: float, high: float) -> str:
    """``[low, high)``; ``< high`` / ``>= low`` for an open end."""
    if math.isinf(low):
        return f"< {high:g}"
    if math.isinf(high):
        return f">= {low:g}"
    return f"[{low:g}, {high:g})"


def _group_rows(frame: pd.DataFrame, key: pd.Series, class_names: Sequence[str]) -> list[dict]:
    rows = []
    for value, part in frame.groupby(key, sort=False, dropna=False):
        recall = {}
        for c, name in enumerate(class_names):
            mine = part[part["y_true"] == c]
            if len(mine):
                recall[name] = {
                    "recall": float((mine["y_pred"] == c).mean()),
                    "n": int(len(mine)),
                }
        rows.append(
            {
                "bin": str(value),
                "n": int(len(part)),
                "n_events": int(part["source_id"].nunique()),
                "correct": int((part["y_pred"] == part["y_true"]).sum()),
                "accuracy": float((part["y_pred"] == part["y_true"]).mean()),
                "recall": recall,
            }
        )
    return rows


def breakdowns(
    frame: pd.DataFrame, metadata: pd.DataFrame | None, class_names: Sequence[str]
) -> tuple[list[dict], list[str]]:
    """Tables of accuracy and per-class recall by station, magnitude, epicentral distance and
    SNR. ``frame``: :func:`predicted_frame`; ``metadata``: the set's metadata, one row per
    ``frame`` row (same order). Every test trace is counted once in each table (an ``n/a`` row
    for traces without the value, one row for the stations beyond the :data:`STATION_ROWS`
    largest). Returns the tables and the names of those the metadata cannot give."""
    tables, missing = [], []
    if metadata is None:
        return [], list(BREAKDOWN_SOURCES)
    metadata = metadata.reset_index(drop=True)
    frame = frame.reset_index(drop=True)
    stations = station_labels(metadata)
    if stations is None or stations.isna().all():
        missing.append("station")
    else:
        stations = stations.fillna("n/a")
        sizes = stations.value_counts()
        ranked = sorted(sizes.index, key=lambda s: (-int(sizes[s]), str(s)))
        listed = ranked[:STATION_ROWS]
        others = len(ranked) - len(listed)
        key = stations.where(stations.isin(listed), f"{others} other stations").astype(object)
        rows = _group_rows(frame, key, class_names)
        order = {name: i for i, name in enumerate(listed)}
        rows.sort(key=lambda r: order.get(r["bin"], len(order)))
        tables.append(
            {
                "by": "station",
                "title": "station",
                "source": "station",
                "n_stations": len(ranked),
                "rows": rows,
            }
        )
    values = continuous_values(metadata)
    specs = (
        ("magnitude", "magnitude", None),
        ("distance", "epicentral distance (km)", _DISTANCE_EDGES_KM),
        ("snr", "SNR (dB)", _SNR_EDGES_DB),
    )
    for key_name, title, candidates in specs:
        if key_name not in values:
            missing.append(key_name)
            continue
        series, source = values[key_name]
        numbers = series.to_numpy(dtype=float)
        finite = np.isfinite(numbers)
        edges = (
            _magnitude_edges(numbers[finite])
            if candidates is None
            else _edges(numbers[finite], candidates)
        )
        which = np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, len(edges) - 2)
        labels = np.array(
            [_bin_label(edges[i], edges[i + 1]) for i in range(len(edges) - 1)], dtype=object
        )
        key = pd.Series(np.where(finite, labels[which], "n/a"), index=frame.index)
        rows = _group_rows(frame, key, class_names)
        rank = {label: i for i, label in enumerate(labels)}
        rows.sort(key=lambda r: rank.get(r["bin"], len(rank)))
        tables.append({"by": key_name, "title": title, "source": source, "rows": rows})
    return tables, missing


def plot_breakdowns(tables: Sequence[dict], class_names: Sequence[str], path: Path) -> bool:
    """Accuracy (bars, traces on top) and per-class recall (markers) per bin of the continuous
    breakdowns; False (nothing written) when there is none."""
    panels = [t for t in tables if t["by"] != "station"]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, table in zip(axes[0], panels, strict=True):
        rows = [r for r in table["rows"] if r["bin"] != "n/a"]
        x = np.arange(len(rows))
        bars = ax.bar(x, [r["accuracy"] for r in rows], color="lightgrey", label="accuracy")
        for bar, r in zip(bars, rows, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, 0.02, str(r["n"]), ha="center", fontsize=7)
        for c, name in enumerate(class_names):
            ys = [r["recall"].get(name, {}).get("recall", np.nan) for r in rows]
            if np.isfinite(ys).any():
                ax.plot(x, ys, "o-", color=f"C{c}", label=f"recall {name}")
        ax.set_xticks(x, [r["bin"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(table["title"])
        ax.set_title(f"by {table['title']} (numbers: traces)", fontsize=9)
    axes[0][0].set_ylabel("share (out-of-fold)")
    axes[0][0].legend(fontsize=7)
    _save(fig, path)
    return True


# ------------------------------------------------------------------------------------ entry
def write_explanations(
    run_dir: Path,
    predictions: pd.DataFrame,
    waveforms,
    labels: np.ndarray,
    class_names: Sequence[str],
    config: PreprocessConfig,
    metadata: pd.DataFrame | None = None,
    *,
    misclassified_limit: int = MISCLASSIFIED_LIMIT,
    typical_per_class: int = TYPICAL_PER_CLASS,
    seed: int = 0,
    baseline_predictions: pd.DataFrame | None = None,
    beside: str = "baseline",
) -> dict:
    """Write the example grids, the class means and the breakdown plot into ``run_dir``; return
    what ``report.md`` shows (JSON-safe).

    ``predictions``: the columns of ``predictions.csv`` (``index`` into ``waveforms`` /
    ``labels``); ``waveforms``: ``(N, 3, samples)`` trimmed windows (tensor or memory map; only
    the rows drawn are read); ``metadata``: the set's metadata, one row per window (same
    order), or None. ``baseline_predictions``: another model's (``beside``) ``predictions.csv``
    columns on the same items; each example then carries its probability of the class predicted
    (where it agrees against the label as well, the label is the first thing to check).
    """
    run_dir = Path(run_dir)
    class_names = list(class_names)
    frame = predicted_frame(predictions.reset_index(drop=True), class_names)
    if baseline_predictions is not None:
        theirs = baseline_predictions.set_index("index")[[prob_column(c) for c in class_names]]
        probs = theirs.loc[frame["index"]].to_numpy(dtype=np.float64)
        frame["baseline_probability"] = probs[np.arange(len(frame)), frame["y_pred"]]
    meta = None if metadata is None else metadata.reset_index(drop=True)
    indices = frame["index"].to_numpy(dtype=np.int64)
    item_meta = None if meta is None else meta.iloc[indices].reset_index(drop=True)
    stations = None if item_meta is None else station_labels(item_meta)
    frame["station"] = "n/a" if stations is None else stations.fillna("n/a").to_numpy()
    out: dict = {"figures": []}

    wrong, n_wrong = misclassified_items(frame, misclassified_limit)
    out["misclassified"] = {
        "file": MISCLASSIFIED_FILE if len(wrong) else None,
        "n_misclassified": int(n_wrong),
        "n_predictions": int(len(frame)),
        "limit": int(misclassified_limit),
        "shown": _shown(wrong),
        "beside": beside if baseline_predictions is not None else None,
    }
    typical = typical_correct_items(frame, class_names, typical_per_class)
    out["typical_correct"] = {
        "file": TYPICAL_FILE if len(typical) else None,
        "per_class": int(typical_per_class),
        "shown": _shown(typical),
        "classes_without_correct": [
            name for c, name in enumerate(class_names) if not (typical["y_true"] == c).any()
        ],
    }
    for items, name, title in (
        (
            wrong,
            MISCLASSIFIED_FILE,
            f"Misclassified test traces, most confident first ({len(wrong)} of {n_wrong})",
        ),
        (
            typical,
            TYPICAL_FILE,
            "Typical correct test traces: highest probability of their class, "
            f"{typical_per_class} per class",
        ),
    ):
        if len(items):
            windows = _read_windows(waveforms, items["index"].to_numpy(dtype=np.int64))
            if name == TYPICAL_FILE:  # one row per class
                row = pd.factorize(items["y_true"], sort=True)[0]
                rank = items.groupby("y_true").cumcount().to_numpy()
                layout = {"columns": typical_per_class, "cells": row * typical_per_class + rank}
            else:
                layout = {"columns": _GRID_COLUMNS}
            plot_examples(items, windows, config, run_dir / name, title, **layout)
            out["figures"].append(name)
        else:
            (run_dir / name).unlink(missing_ok=True)  # none to show: no stale grid either

    means, counts = class_mean_spectrograms(waveforms, labels, config, len(class_names), seed=seed)
    plot_class_means(means, counts, class_names, config, run_dir / CLASS_MEANS_FILE)
    out["figures"].append(CLASS_MEANS_FILE)
    out["class_means"] = {
        "file": CLASS_MEANS_FILE,
        "n_traces": {name: int(n) for name, n in zip(class_names, counts, strict=True)},
    }

    probs = frame[[prob_column(c) for c in class_names]].to_numpy(dtype=np.float64)
    out["operating_points"] = operating_points(frame["y_true"].to_numpy(), probs, class_names)

    tables, missing = breakdowns(frame, item_meta, class_names)
    out["breakdowns"] = tables
    out["breakdowns_missing"] = missing
    if plot_breakdowns(tables, class_names, run_dir / BREAKDOWN_FILE):
        out["figures"].append(BREAKDOWN_FILE)
        out["breakdown_plot"] = BREAKDOWN_FILE
    else:
        (run_dir / BREAKDOWN_FILE).unlink(missing_ok=True)
        out["breakdown_plot"] = None
    return out


def item_metadata(metadata: pd.DataFrame, trace_names: Sequence[str]) -> pd.DataFrame:
    """The rows of a set's ``metadata`` for ``trace_names``, in their order (the first row of a
    repeated name; an all-NA row for a name the metadata lack)."""
    table = metadata.drop_duplicates("trace_name")
    table = table.set_axis(pd.Index(table["trace_name"].astype(str), name=None), axis=0)
    return table.reindex(pd.Index(np.asarray(trace_names).astype(str)))
