"""run.window_cache: the windows memory-mapped from ``<run>/windows.npy`` instead of held in
memory give exactly the same run; the cache is written once, atomically, and reused on resume."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_run import tiny_run_config

from quake.data import WaveformDataAdapter, open_dataset, synthetic
from quake.training import load_config, train
from quake.training.cross_validation import map_windows
from quake.training.window_cache import (
    WINDOWS_FILE,
    WINDOWS_MARKER,
    resolve_window_cache,
    write_window_cache,
)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny"
    return synthetic.generate_synthetic_set(
        path, n_events_per_class=12, stations_per_event=(1, 2), seed=3
    )


def _config(data, out, **extra):
    return tiny_run_config(data, out, **{"run.num_threads": 1, **extra})


@pytest.fixture(scope="module")
def runs(tiny_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    memory = train(_config(tiny_set, root / "memory", **{"run.window_cache": "memory"}))
    disk = train(_config(tiny_set, root / "disk", **{"run.window_cache": "disk"}))
    return memory, disk


@pytest.fixture()
def adapter(tiny_set):
    config = load_config(overrides={"data.path": str(tiny_set)}).data.preprocess_config()
    return WaveformDataAdapter(open_dataset(tiny_set, config), config=config)


def _same_run_results(a, b) -> None:
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert ma["aggregate"] == mb["aggregate"]
    assert ma["event_level"]["aggregate"] == mb["event_level"]["aggregate"]
    assert ma["baseline"]["aggregate"] == mb["baseline"]["aggregate"]
    assert ma["confusion_matrix_total"] == mb["confusion_matrix_total"]
    for name in ("predictions.csv", "baseline_predictions.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(a / name), pd.read_csv(b / name), check_exact=True
        )


def test_disk_cache_gives_exactly_the_results_of_memory(runs):
    memory, disk = runs
    _same_run_results(memory.run_dir, disk.run_dir)
    assert memory.metrics["training"]["window_cache"] == "memory"
    assert disk.metrics["training"]["window_cache"] == "disk"
    assert not (memory.run_dir / WINDOWS_FILE).exists()
    windows = np.load(disk.run_dir / WINDOWS_FILE)
    assert windows.shape == (disk.metrics["data"]["n_traces"], 3, 2048)
    assert windows.dtype == np.float32
    assert not list(disk.run_dir.glob(f".{WINDOWS_FILE}.*.tmp"))
    marker = json.loads((disk.run_dir / WINDOWS_MARKER).read_text())
    assert marker["shape"] == list(windows.shape)


def test_resume_reuses_the_cache(runs, tiny_set, tmp_path):
    _, disk = runs
    out = tmp_path / "resumed"
    shutil.copytree(disk.run_dir, out)
    (out / "folds" / "fold_1" / "fold.json").unlink()  # fold 1 was interrupted
    cache = out / WINDOWS_FILE
    before = cache.stat()
    result = train(_config(tiny_set, out, **{"run.window_cache": "disk"}))
    after = cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    log = (out / "train.log").read_text()
    assert "window cache: reusing" in log
    assert result.metrics["resumed_folds"] == [0]
    _same_run_results(disk.run_dir, out)


def test_resume_may_change_the_window_cache(runs, tiny_set, tmp_path):
    """It decides where the windows live, not what they are: not part of the resume check."""
    memory, _ = runs
    out = tmp_path / "now-on-disk"
    shutil.copytree(memory.run_dir, out)
    result = train(_config(tiny_set, out, **{"run.window_cache": "disk"}))
    assert (out / WINDOWS_FILE).is_file()
    assert result.metrics["resumed_folds"] == [0, 1]
    _same_run_results(memory.run_dir, out)


def test_folds_in_worker_processes_map_the_cache(runs, tiny_set, tmp_path):
    """Workers get the file's path and map it; they predict what one process does."""
    _, disk = runs
    parallel = train(
        _config(
            tiny_set,
            tmp_path / "parallel",
            **{"run.window_cache": "disk", "run.num_threads": 2, "run.parallel_folds": 2},
        )
    )
    assert parallel.metrics["training"]["parallel_folds"] == 2
    a = pd.read_csv(disk.run_dir / "predictions.csv")
    b = pd.read_csv(parallel.run_dir / "predictions.csv")
    cols = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-6, atol=1e-7)


def test_cache_holds_the_windows_and_is_reused(adapter, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="quake")
    path = write_window_cache(adapter, tmp_path, progress=False)
    assert path == tmp_path / WINDOWS_FILE
    np.testing.assert_array_equal(np.load(path), adapter.load_waveforms())
    mapped = map_windows(path)
    assert isinstance(mapped, torch.Tensor) and mapped.dtype == torch.float32
    np.testing.assert_array_equal(mapped[[3, 0, 5]].numpy(), adapter.load_waveforms()[[3, 0, 5]])
    inode = path.stat().st_ino
    caplog.clear()
    assert write_window_cache(adapter, tmp_path, progress=False) == path
    assert "reusing" in caplog.text and path.stat().st_ino == inode


def test_interrupted_write_is_not_taken_for_a_cache(adapter, tmp_path, caplog):
    """A temporary file left by a killed writer is removed and the cache written again."""
    caplog.set_level(logging.INFO, logger="quake")
    stale = tmp_path / f".{WINDOWS_FILE}.k3j9x2ab.tmp"
    stale.write_bytes(b"\x93NUMPY half a file")
    path = write_window_cache(adapter, tmp_path, progress=False)
    assert f"removing {stale.name}" in caplog.text and "writing" in caplog.text
    assert not stale.exists()
    np.testing.assert_array_equal(np.load(path), adapter.load_waveforms())


@pytest.mark.parametrize("damage", ["no marker", "truncated", "other traces"])
def test_incomplete_or_foreign_cache_is_written_again(adapter, tmp_path, caplog, damage):
    caplog.set_level(logging.INFO, logger="quake")
    path = write_window_cache(adapter, tmp_path, progress=False)
    marker = tmp_path / WINDOWS_MARKER
    if damage == "no marker":  # killed between the rename and the marker
        marker.unlink()
    elif damage == "truncated":
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    else:
        saved = json.loads(marker.read_text())
        saved["trace_names_sha256"] = "0" * 64
        marker.write_text(json.dumps(saved))
    caplog.clear()
    write_window_cache(adapter, tmp_path, progress=False)
    assert "writing" in caplog.text and "reusing" not in caplog.text
    np.testing.assert_array_equal(np.load(path), adapter.load_waveforms())


def test_load_waveforms_fills_out_and_checks_its_shape(adapter):
    out = np.zeros((len(adapter), 3, adapter.config.window_samples), dtype=np.float32)
    assert adapter.load_waveforms(out=out) is out
    np.testing.assert_array_equal(out, adapter.load_waveforms())
    with pytest.raises(ValueError, match=r"out has shape .*expected"):
        adapter.load_waveforms(out=out[:-1])
    with pytest.raises(ValueError, match=r"float64; expected .* float32"):
        adapter.load_waveforms(out=out.astype(np.float64))


def test_auto_keeps_the_windows_in_memory_below_a_quarter_of_the_ram():
    gb = 10**9
    assert resolve_window_cache("auto", 1 * gb, ram_bytes=16 * gb) == "memory"
    assert resolve_window_cache("auto", 5 * gb, ram_bytes=16 * gb) == "disk"
    assert resolve_window_cache("auto", 1 * gb, processes=8, ram_bytes=16 * gb) == "disk"
    assert resolve_window_cache("memory", 100 * gb, ram_bytes=16 * gb) == "memory"
    assert resolve_window_cache("disk", 1, ram_bytes=16 * gb) == "disk"


def test_bad_window_cache_value_is_named():
    with pytest.raises(ValueError, match=r"run\.window_cache='ssd'.*'auto', 'memory', 'disk'"):
        load_config(overrides={"run.window_cache": "ssd"})
