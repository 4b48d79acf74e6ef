"""Streaming large sets: batched bucket reads, DataLoader workers, a compact metadata table."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from quake.data import (
    PreprocessConfig,
    SeisBenchWriter,
    SkipTrace,
    WaveformDataAdapter,
    open_dataset,
)
from quake.data.readers.seisbench import MAX_ROW_GAP

CONFIG = PreprocessConfig(
    sampling_rate_hz=50.0, window_s=2.56, pre_arrival_s=0.5, stft_nperseg=32, stft_hop=16
)
CLASSES = ("earthquake", "explosion", "noise")


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory):
    """95 traces in buckets of 20; traces 60..69 are longer, so they start their own bucket."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("sets") / "bucketed"
    waveforms = []
    with SeisBenchWriter(path, CONFIG.sampling_rate_hz, bucket_size=20) as writer:
        for i in range(95):
            n = 200 if 60 <= i < 70 else 150
            waveform = rng.normal(size=(3, n)).astype(np.float32) * (1 + i)
            waveforms.append(waveform)
            writer.add(
                f"t{i}",
                waveform,
                source_id=f"ev{i // 3}",
                source_type=CLASSES[(i // 3) % 3],
                station_code=f"S{i % 7}",
                trace_p_arrival_sample=30 + i % 10,
            )
    return {"path": path, "waveforms": waveforms}


class _ReadCounter:
    """Counts h5py reads of bucket datasets (the real reads still happen)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = h5py.Dataset.__getitem__

        def counting(dataset, index):
            self.calls += 1
            return original(dataset, index)

        monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)


def test_get_samples_equals_one_by_one_in_any_order(bucketed):
    dataset = open_dataset(bucketed["path"], CONFIG)
    assert dataset.metadata["trace_name"].str.startswith("bucket").all()
    order = np.random.default_rng(1).permutation(len(dataset))
    indices = [*order[:40], 5, 5, -1, 61, 0]
    samples = dataset.get_samples(indices)
    assert len(samples) == len(indices)
    for i, (waveform, row) in zip(indices, samples, strict=True):
        expected, expected_row = dataset.get_sample(int(i))
        np.testing.assert_array_equal(waveform, expected)
        np.testing.assert_array_equal(waveform, bucketed["waveforms"][int(i) % len(dataset)])
        assert row == expected_row
    with pytest.raises(IndexError, match="sample index 95 out of range for 95 samples"):
        dataset.get_samples([0, 95])


def test_neighbouring_rows_of_a_bucket_are_read_as_one_slab(bucketed, monkeypatch):
    dataset = open_dataset(bucketed["path"], CONFIG)
    dataset.get_sample(0)  # open the file and the bucket handle outside the count
    counter = _ReadCounter(monkeypatch)
    dataset.get_samples(range(0, 20))  # all of bucket0
    assert counter.calls == 1
    counter.calls = 0
    dataset.get_samples([0, MAX_ROW_GAP, 2 * MAX_ROW_GAP, 19, 21])  # gaps within the limit
    assert counter.calls == 2  # bucket0 in one slab, bucket1
    counter.calls = 0
    dataset.get_samples([0, 1 + MAX_ROW_GAP])  # a gap past the limit: two reads
    assert counter.calls == 2
    counter.calls = 0
    for i in range(20):
        dataset.get_sample(i)
    assert counter.calls == 20  # what the slab saves


def test_a_bad_row_in_a_batch_comes_back_as_its_skip(bucketed, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "waveforms.hdf5").symlink_to(bucketed["path"] / "waveforms.hdf5")
    metadata = pd.read_csv(bucketed["path"] / "metadata.csv")
    metadata.loc[3, "trace_name"] = "bucket0$57,:3,:150"  # bucket0 has 20 rows
    metadata.to_csv(folder / "metadata.csv", index=False)
    dataset = open_dataset(folder, CONFIG)
    samples = dataset.get_samples([2, 3, 4])
    assert isinstance(samples[1][0], SkipTrace) and samples[1][0].reason == "unreadable"
    assert "bucket0$57" in str(samples[1][0])
    np.testing.assert_array_equal(samples[0][0], bucketed["waveforms"][2])
    np.testing.assert_array_equal(samples[2][0], bucketed["waveforms"][4])
    adapter = WaveformDataAdapter(dataset, config=CONFIG)
    assert len(adapter) == 94
    assert [name for name, _ in adapter.dropped] == ["bucket0$57,:3,:150"]
    assert adapter.dropped[0][1].startswith("unreadable")


def _collate_with_handle_owner(batch):
    """Runs in the worker: the batch, the worker's pid and the pid its HDF5 handle was opened in."""
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset._source.dataset
    return default_collate(batch), os.getpid(), dataset._pid


def test_dataloader_workers_open_their_own_handle_and_read_batches(bucketed):
    dataset = open_dataset(bucketed["path"], CONFIG)
    dataset.get_sample(0)  # the parent holds an open handle before the workers fork
    adapter = WaveformDataAdapter(dataset, config=CONFIG)
    loader = DataLoader(
        adapter, batch_size=16, num_workers=2, collate_fn=_collate_with_handle_owner
    )
    batches = list(loader)
    assert sum(len(labels) for (_, labels), _, _ in batches) == len(adapter)
    worker_pids = {pid for _, pid, _ in batches}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert all(owner == pid for _, pid, owner in batches)  # opened lazily, in the worker
    specs = torch.cat([x for (x, _), _, _ in batches])
    labels = torch.cat([y for (_, y), _, _ in batches])
    expected = adapter.spectrograms(np.arange(len(adapter)))
    # float32 spectrograms: a worker's single thread may sum in another order than this
    # process's threads (differences near 1e-6); a wrong or shuffled trace differs at order 1
    torch.testing.assert_close(specs, expected, rtol=1e-5, atol=1e-6)
    for i in (0, 37, 94):
        torch.testing.assert_close(specs[i], adapter[i][0], rtol=1e-6, atol=1e-6)
    assert labels.tolist() == list(adapter.labels)
    assert dataset._pid == os.getpid()  # the parent's handle is untouched
    np.testing.assert_array_equal(dataset.get_sample(1)[0], bucketed["waveforms"][1])


def test_getitems_and_load_waveforms_match_per_item_access(bucketed):
    adapter = WaveformDataAdapter(open_dataset(bucketed["path"], CONFIG), config=CONFIG)
    indices = [94, 0, 61, 61, 7]
    items = adapter.__getitems__(indices)
    for i, (spec, label) in zip(indices, items, strict=True):
        expected_spec, expected_label = adapter[i]
        torch.testing.assert_close(spec, expected_spec, rtol=1e-6, atol=1e-6)
        assert label == expected_label
    windows = adapter.load_waveforms()
    assert windows.shape == (95, 3, CONFIG.window_samples)
    for i in (0, 60, 94):
        np.testing.assert_array_equal(windows[i], adapter.get_waveform(i))
    with pytest.raises(IndexError, match="item index 95 out of range for 95 items"):
        adapter.get_waveforms([1, 95])


def test_metadata_keeps_repeated_text_as_categories(bucketed):
    dataset = open_dataset(bucketed["path"], CONFIG)
    raw = pd.read_csv(bucketed["path"] / "metadata.csv")
    for column in ("source_id", "source_type", "station_code"):
        assert isinstance(dataset.metadata[column].dtype, pd.CategoricalDtype)
        assert list(dataset.metadata[column].astype(str)) == list(raw[column].astype(str))
    assert not isinstance(dataset.metadata["trace_name"].dtype, pd.CategoricalDtype)
    assert dataset.metadata.memory_usage(deep=True).sum() < raw.memory_usage(deep=True).sum()
    row = dataset.row(4)
    assert row["source_id"] == "ev1" and row["station_code"] == "S4"
    assert type(row["source_type"]) is str and row["trace_p_arrival_sample"] == 34
    subset = dataset.filter(dataset.metadata["source_type"] == "noise")
    assert set(subset.metadata["source_type"]) == {"noise"}
    assert subset.row(0)["source_type"] == "noise"
    assert dataset.class_names.to_list() == sorted(CLASSES)
