"""Where training holds its windows: in memory, or memory-mapped from a file in the run folder.

Every kept window, trimmed and resampled, is 24.6 kB at the default 20.48 s window: a million
traces take 25 GB, more than most machines hold. With ``run.window_cache`` disk the windows are
written once to ``<run>/windows.npy`` and memory-mapped, so the operating system pages in the
rows a batch needs; ``auto`` chooses disk when the windows would take a large share of the RAM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from quake.data import WaveformDataAdapter
from quake.runtime import write_text_atomic
from quake.training.config import TrainConfig

logger = logging.getLogger(__name__)

WINDOWS_FILE = "windows.npy"  # run.window_cache disk: the checked windows, (N, 3, n) float32
WINDOWS_MARKER = "windows.json"  # written after windows.npy is complete: what it holds
# run.window_cache auto keeps the windows in memory while they take less than this share of RAM
AUTO_MEMORY_FRACTION = 0.25


def map_windows(path: Path) -> torch.Tensor:
    """The ``(N, 3, n)`` windows of a window cache .npy file, memory-mapped, not read: pages
    come from the page cache as rows are indexed. Copy-on-write, so that the tensor behaves as
    an ordinary writable one (a write stays private to this process and never reaches the file).
    """
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def physical_memory_bytes() -> int | None:
    """The machine's RAM, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def resolve_window_cache(
    mode: str, window_bytes: int, processes: int = 1, ram_bytes: int | None = None
) -> str:
    """``run.window_cache`` -> ``memory`` or ``disk``.

    ``auto``: memory while the windows of all ``processes`` on this machine (each torchrun rank
    holds its own copy in memory) take less than :data:`AUTO_MEMORY_FRACTION` of the RAM, else
    disk. ``ram_bytes`` defaults to :func:`physical_memory_bytes`; unknown RAM means memory.
    """
    if mode != "auto":
        return mode
    ram = physical_memory_bytes() if ram_bytes is None else ram_bytes
    if ram is None:
        return "memory"
    return "memory" if window_bytes * max(1, processes) < AUTO_MEMORY_FRACTION * ram else "disk"


class _NpyWriter:
    """What ``load_waveforms(out=...)`` fills for the disk cache: rows appended in order
    straight to an open .npy file with plain writes, so neither the windows nor a writable
    mapping of them ever sit in this process's memory (and a full disk is an OSError, not a
    crash of a mapping)."""

    def __init__(self, handle, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.float32)
        self.rows = 0
        self._handle = handle
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(handle, header)

    def __setitem__(self, key: slice, block: np.ndarray) -> None:
        if not isinstance(key, slice) or key.start != self.rows or key.step not in (None, 1):
            raise ValueError(f"rows must come in order from {self.rows}, got {key!r}")
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape != (key.stop - key.start, *self.shape[1:]):
            raise ValueError(f"block of shape {block.shape} for rows {key.start}:{key.stop}")
        self._handle.write(memoryview(block).cast("B"))
        self.rows = key.stop


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def _windows_fingerprint(adapter: WaveformDataAdapter) -> dict:
    """What a window cache holds: shape, preprocessing and the kept traces, in order."""
    names = adapter.metadata["trace_name"].astype(str)
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    fingerprint = {
        "shape": [len(adapter), 3, adapter.config.window_samples],
        "dtype": "float32",
        "preprocess": adapter.config.to_dict(),
        "trace_names_sha256": digest,
    }
    return json.loads(json.dumps(fingerprint))  # as it reads back from the marker


def _complete_cache(path: Path, marker: Path, fingerprint: dict) -> bool:
    """True when ``path`` is a finished window cache of exactly these windows."""
    if not (path.is_file() and marker.is_file()):
        return False
    try:
        if json.loads(marker.read_text()) != fingerprint:
            return False
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return (
        list(array.shape) == fingerprint["shape"]
        and array.dtype == np.float32
        and path.stat().st_size == array.offset + array.nbytes
    )


def write_window_cache(adapter: WaveformDataAdapter, run_dir: Path, progress: bool) -> Path:
    """``<run_dir>/windows.npy``: every kept window, written once; reused when complete.

    The file is written block by block under a temporary name and renamed when complete, then
    :data:`WINDOWS_MARKER` records what it holds; an interrupted write leaves at most a
    temporary file, removed by the next attempt, never a partial file under the final name.
    """
    path, marker = run_dir / WINDOWS_FILE, run_dir / WINDOWS_MARKER
    fingerprint = _windows_fingerprint(adapter)
    shape = tuple(fingerprint["shape"])
    nbytes = int(np.prod(shape)) * 4
    if _complete_cache(path, marker, fingerprint):
        logger.info("window cache: reusing %s (%d windows, %s)", path, shape[0], _size(nbytes))
        return path
    for stale in sorted(run_dir.glob(f".{WINDOWS_FILE}.*.tmp")):
        logger.info("window cache: removing %s, left by an interrupted write", stale.name)
        stale.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    free = shutil.disk_usage(run_dir).free + (path.stat().st_size if path.is_file() else 0)
    if free < nbytes + 2**26:
        raise ValueError(
            f"run.window_cache disk needs {_size(nbytes)} for {shape[0]} windows in "
            f"{str(run_dir)!r}, which has {_size(free)} free; expected a run folder with "
            "room for them (--out elsewhere) or run.window_cache=memory"
        )
    logger.info("window cache: writing %d windows (%s) to %s", shape[0], _size(nbytes), path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{WINDOWS_FILE}.", suffix=".tmp", dir=run_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            writer = _NpyWriter(handle, shape)
            adapter.load_waveforms(progress=progress, out=writer)
            if writer.rows != shape[0]:
                raise RuntimeError(f"wrote {writer.rows} of {shape[0]} windows to {tmp}")
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the name says it is complete
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_text_atomic(marker, json.dumps(fingerprint, indent=2) + "\n")
    return path


def place_windows(
    adapter: WaveformDataAdapter,
    config: TrainConfig,
    run_dir: Path | None,
    progress: bool,
    processes: int,
) -> Path | None:
    """Decide memory or disk (rank 0 for all ranks); for disk, write or reuse the cache."""
    window_bytes = len(adapter) * 3 * adapter.config.window_samples * 4
    mode = resolve_window_cache(config.run.window_cache, window_bytes, processes)
    if config.run.window_cache == "auto":
        ram = physical_memory_bytes()
        logger.info(
            "window cache: auto -> %s (%s of windows%s, %s of RAM)",
            mode,
            _size(window_bytes),
            f" x {processes} processes" if processes > 1 else "",
            "unknown" if ram is None else _size(ram),
        )
    if mode == "memory":
        return None
    if run_dir is None:
        raise ValueError("run.window_cache disk needs a run folder to write windows.npy to")
    return write_window_cache(adapter, run_dir, progress)
