"""SeisBench sets both ways, against the real ``seisbench`` package.

Sets written by SeisBench's own ``WaveformDataWriter`` from real ``eqnoise-3c`` traces, in the
layouts it produces (component orders ZNE, ENZ, Z12; dimension orders CW and WC; plain and
bucketed trace names; chunks; the sampling rate in the metadata, in ``trace_dt_s`` or only in
``data_format``), are read by quake and compared array by array with the source; sets written
by quake are opened with ``seisbench.data.WaveformDataset`` and drawn through its
``GenericGenerator``. Sets that cannot be read correctly are refused with the reason.
"""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pandas as pd
import pytest

from quake.data import SeisBenchWriter, open_dataset, synthetic
from quake.data.sources import detect_source_kind

sbd = pytest.importorskip("seisbench.data")
sbg = pytest.importorskip("seisbench.generate")

RATE = 100.0
# rows of the stored array for each component order, from a (3, n) Z, N, E array
STORED_ROWS = {"ZNE": [0, 1, 2], "ENZ": [2, 1, 0], "Z12": [0, 1, 2], "NEZ": [1, 2, 0]}
DATA_FORMAT = {"measurement": "velocity", "unit": "counts", "instrument_response": "not restituted"}


@pytest.fixture(scope="module")
def traces(real_data_dir):
    """24 real eqnoise-3c traces (earthquake and noise windows, vertical-only ones among them):
    ``[(metadata dict, (3, n) float32 Z, N, E array)]``, each event in one of train/dev/test."""
    folder = real_data_dir / "eqnoise-3c"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    table = pd.read_csv(folder / "metadata.csv")
    vertical = table.index[table["trace_components"] == "Z"][:4].tolist()
    rows = sorted(set(range(20)) | set(vertical))
    events = list(dict.fromkeys(table.loc[rows, "source_id"]))
    split = {e: ("train", "train", "dev", "test")[i % 4] for i, e in enumerate(events)}
    out = []
    with h5py.File(folder / "waveforms.hdf5", "r") as f:
        for i in rows:
            meta = table.loc[i].dropna().to_dict()
            meta["split"] = split[meta["source_id"]]
            out.append((meta, f["data"][meta["trace_name"]][()].astype(np.float32)))
    assert any(m["trace_components"] == "Z" for m, _ in out)
    assert {m["source_type"] for m, _ in out} == {"earthquake", "noise"}
    return out


def write_with_seisbench(
    folder,
    traces,
    *,
    order="ZNE",
    dims="CW",
    bucketed=False,
    chunk="",
    rate_in="metadata",
    data_format=None,
):
    """Write ``traces`` with SeisBench's WaveformDataWriter, in the layout asked."""
    fmt = {"component_order": order, "dimension_order": dims, **DATA_FORMAT}
    if rate_in == "data_format":
        fmt["sampling_rate"] = RATE
    if data_format is not None:
        fmt = data_format
    metadata_path = folder / f"metadata{chunk}.csv"
    with sbd.WaveformDataWriter(metadata_path, folder / f"waveforms{chunk}.hdf5") as writer:
        writer.data_format = fmt
        writer.bucketer = sbd.GeometricBucketer(axis=0 if dims == "WC" else -1)
        # a bucket of one is stored under the trace's own name (bucketer=None fails in 0.12.6)
        writer.bucket_size = 5 if bucketed else 1
        for meta, zne in traces:
            meta = dict(meta)
            del meta["trace_sampling_rate_hz"]
            if rate_in == "metadata":
                meta["trace_sampling_rate_hz"] = RATE
            elif rate_in == "dt":
                meta["trace_dt_s"] = 1.0 / RATE
            stored = zne[STORED_ROWS[meta.get("trace_component_order", order)]]
            writer.add_trace(meta, stored.T if dims == "WC" else stored)
    return folder


def assert_reads_back(dataset, traces):
    """Every trace of ``dataset`` equals its source array; rate and split as written."""
    source = {m["trace_name"]: (m, w) for m, w in traces}
    assert len(dataset) == len(traces) and dataset.skipped == []
    seen = set()
    for i in range(len(dataset)):
        waveform, meta = dataset.get_sample(i)
        original = meta.get("trace_name_original", meta["trace_name"])
        if not isinstance(original, str):  # a trace written alone keeps its own name
            original = meta["trace_name"]
        expected_meta, expected = source[original]
        assert waveform.dtype == np.float32 and waveform.shape == expected.shape
        np.testing.assert_array_equal(waveform, expected, err_msg=original)
        assert meta["trace_sampling_rate_hz"] == RATE
        assert meta["split"] == expected_meta["split"]
        assert meta["source_type"] == expected_meta["source_type"]
        seen.add(original)
    assert seen == set(source)
    # the batched path reads the same arrays
    batch = dataset.get_waveforms(np.arange(len(dataset))[::-1])
    for i, waveform in zip(range(len(dataset) - 1, -1, -1), batch, strict=True):
        np.testing.assert_array_equal(waveform, dataset.get_sample(i)[0])


LAYOUTS = {
    "ZNE-CW-plain-rate-in-data_format": dict(order="ZNE", dims="CW", rate_in="data_format"),
    "ENZ-WC-bucketed": dict(order="ENZ", dims="WC", bucketed=True),
    "Z12-CW-bucketed-rate-from-dt": dict(order="Z12", dims="CW", bucketed=True, rate_in="dt"),
    "NEZ-WC-plain": dict(order="NEZ", dims="WC"),
    "ZNE-CW-bucketed": dict(order="ZNE", dims="CW", bucketed=True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sets_written_by_seisbench_read_back_exactly(layout, traces, tmp_path, caplog):
    folder = write_with_seisbench(tmp_path / "set", traces, **LAYOUTS[layout])
    with caplog.at_level(logging.INFO, logger="quake.data.readers.seisbench"):
        dataset = open_dataset(folder)
    assert "data_format read from HDF5 datasets" in caplog.text
    assert_reads_back(dataset, traces)
    if LAYOUTS[layout].get("bucketed"):  # a bucket left with one trace keeps the trace's name
        in_buckets = dataset.metadata["trace_name"].str.contains(r"^bucket\d+\$", regex=True)
        assert in_buckets.sum() >= 20
    # the same rows, in the same order, as SeisBench's own reader
    theirs = sbd.WaveformDataset(folder, component_order="ZNE", dimension_order="NCW")
    assert dataset.metadata["trace_name"].tolist() == theirs.metadata["trace_name"].tolist()
    np.testing.assert_allclose(
        dataset.metadata["trace_sampling_rate_hz"], theirs.metadata["trace_sampling_rate_hz"]
    )
    if LAYOUTS[layout]["order"] != "Z12":  # SeisBench does not take 1/2 as N/E; quake does
        for i in (0, len(dataset) - 1):
            np.testing.assert_array_equal(dataset.get_sample(i)[0], theirs.get_waveforms(i))


def test_a_trace_component_order_column_wins_per_trace(traces, tmp_path):
    """SeisBench's per-trace ``trace_component_order`` overrides data_format, in both readers."""
    mixed = [
        ({**m, "trace_component_order": "ENZ" if i % 2 else "ZNE"}, w)
        for i, (m, w) in enumerate(traces)
    ]
    folder = write_with_seisbench(tmp_path / "set", mixed, order="ZNE", bucketed=True)
    dataset = open_dataset(folder)
    assert_reads_back(dataset, mixed)
    theirs = sbd.WaveformDataset(folder, component_order="ZNE", dimension_order="NCW")
    for i in (0, 1):
        np.testing.assert_array_equal(dataset.get_sample(i)[0], theirs.get_waveforms(i))


@pytest.mark.parametrize("listed", [True, False], ids=["chunks-file", "chunks-from-names"])
def test_chunked_sets_read_as_one_set_or_by_chunk(listed, traces, tmp_path):
    folder = tmp_path / "chunked"
    parts = {"_a": traces[:9], "_b": traces[9:]}
    for chunk, part in parts.items():  # bucket names repeat in each chunk: bucket0$0,...
        write_with_seisbench(folder, part, order="ENZ", bucketed=True, chunk=chunk)
    if listed:
        (folder / "chunks").write_text("_b\n_a\n")
    assert detect_source_kind(str(folder)) == "seisbench"
    dataset = open_dataset(folder)
    assert_reads_back(dataset, traces)
    assert dataset.metadata["trace_chunk"].tolist() == ["_a"] * 9 + ["_b"] * (len(traces) - 9)
    theirs = sbd.WaveformDataset(folder, component_order="ZNE", dimension_order="NCW")
    assert dataset.metadata["trace_name"].tolist() == theirs.metadata["trace_name"].tolist()
    assert set(dataset.metadata["trace_name"][:9]) & set(dataset.metadata["trace_name"][9:])
    only_b = open_dataset(folder, chunks=["_b"])
    assert_reads_back(only_b, parts["_b"])
    with pytest.raises(ValueError, match=r"chunks \['_c'\] not in the set; expected some of"):
        open_dataset(folder, chunks=["_c"])


def test_eqnoise_keeps_reading_with_data_format_as_attributes(real_data_dir, caplog):
    folder = real_data_dir / "eqnoise-3c"
    with caplog.at_level(logging.INFO, logger="quake.data.readers.seisbench"):
        dataset = open_dataset(folder)
    assert "eqnoise-3c: data_format read from HDF5 attributes" in caplog.text
    assert "component_order='ZNE'" in caplog.text
    assert len(dataset) == len(pd.read_csv(folder / "metadata.csv")) and dataset.skipped == []


def test_seisbench_phase_columns_give_the_first_p_pick(traces, tmp_path, caplog):
    picked = []
    for i, (m, w) in enumerate(traces[:4]):
        m = {k: v for k, v in m.items() if k != "trace_p_arrival_sample"}
        m.update(trace_Pg_arrival_sample=400.0 + i, trace_Pn_arrival_sample=[380.0, None][i % 2])
        m["trace_S_arrival_sample"] = 100.0  # an S pick is never taken for P
        picked.append((m, w))
    folder = write_with_seisbench(tmp_path / "set", picked)
    with caplog.at_level(logging.INFO, logger="quake.data.readers.seisbench"):
        dataset = open_dataset(folder)
    assert dataset.metadata["trace_p_arrival_sample"].tolist() == [380.0, 401.0, 380.0, 403.0]
    assert "trace_p_arrival_sample from the earliest of" in caplog.text


# --- refused, with the reason -----------------------------------------------------------------
def test_a_set_without_a_component_order_is_refused(traces, tmp_path):
    folder = write_with_seisbench(
        tmp_path / "set", traces[:3], data_format={"dimension_order": "CW", **DATA_FORMAT}
    )
    with pytest.raises(ValueError, match=r"no component order .*expected one, e.g. 'ZNE'"):
        open_dataset(folder)


@pytest.mark.parametrize(
    ("fmt", "match"),
    [
        ({"component_order": "ZNN"}, r"component_order 'ZNN' gives N twice"),
        ({"component_order": "XY"}, r"component_order 'XY' names none of Z, N, E"),
        ({"dimension_order": "CHW"}, r"dimension_order 'CHW'; expected 'CW' or 'WC'"),
        ({"sampling_rate": "fast"}, r"data_format/sampling_rate 'fast'; expected a number"),
    ],
)
def test_bad_data_format_values_are_refused(fmt, match, traces, tmp_path):
    full = {"component_order": "ZNE", "dimension_order": "CW", **fmt}
    folder = write_with_seisbench(tmp_path / "set", traces[:3], data_format=full)
    with pytest.raises(ValueError, match=match):
        open_dataset(folder)


def test_disagreeing_data_formats_are_refused(traces, tmp_path):
    folder = write_with_seisbench(tmp_path / "set", traces[:3], order="ZNE")
    with h5py.File(folder / "waveforms.hdf5", "a") as f:
        f["data_format"].attrs["component_order"] = "ENZ"
    with pytest.raises(ValueError, match=r"'ZNE' as a dataset but 'ENZ' as an attribute"):
        open_dataset(folder)
    chunked = tmp_path / "chunked"
    write_with_seisbench(chunked, traces[:3], order="ZNE", chunk="_a")
    write_with_seisbench(chunked, traces[3:6], order="ENZ", chunk="_b")
    with pytest.raises(ValueError, match=r"component_order is 'ENZ' in waveforms_b.hdf5 but 'ZNE'"):
        open_dataset(chunked)


def test_a_trace_without_a_sampling_rate_is_skipped_with_its_reason(traces, tmp_path):
    folder = write_with_seisbench(tmp_path / "set", traces[:4], rate_in="dt")
    table = pd.read_csv(folder / "metadata.csv")
    table.loc[1, "trace_dt_s"] = np.nan
    table.to_csv(folder / "metadata.csv", index=False)
    dataset = open_dataset(folder)
    assert len(dataset) == 3
    assert dataset.skipped == [
        (
            table.loc[1, "trace_name"],
            "no sampling rate: neither the metadata nor data_format gives one",
        )
    ]


# --- quake-written sets in SeisBench ----------------------------------------------------------
@pytest.mark.parametrize("bucket_size", [None, 4], ids=["plain", "bucketed"])
def test_sets_written_by_quake_open_in_seisbench(bucket_size, traces, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "set"
    with SeisBenchWriter(path, RATE, bucket_size=bucket_size) as writer:
        for meta, zne in traces:
            extra = {k: v for k, v in meta.items() if k not in ("trace_name", "trace_npts")}
            extra.pop("trace_sampling_rate_hz")
            writer.add(meta["trace_name"], zne, **extra)
    with h5py.File(path / "waveforms.hdf5", "r") as f:  # data_format as datasets, not attributes
        assert f["data_format"]["component_order"][()] == b"ZNE"
        assert dict(f["data_format"].attrs) == {}
    theirs = sbd.WaveformDataset(path, component_order="ZNE", dimension_order="NCW")
    assert len(theirs) == len(traces)
    assert (theirs.metadata["trace_sampling_rate_hz"] == RATE).all()
    assert len(theirs.test()) == sum(m["split"] == "test" for m, _ in traces)
    generator = sbg.GenericGenerator(theirs)
    loader = torch.utils.data.DataLoader(generator, batch_size=len(traces), shuffle=False)
    batch = next(iter(loader))["X"].numpy()
    assert batch.shape == (len(traces), 3, traces[0][1].shape[1])
    for row, (_, zne) in enumerate(traces):
        np.testing.assert_array_equal(batch[row], zne)
    # and quake reads its own set back the same
    assert_reads_back(open_dataset(path), traces)


def test_the_synthetic_set_opens_in_seisbench(tmp_path):
    path = synthetic.generate_synthetic_set(
        tmp_path / "synthetic", n_events_per_class=2, stations_per_event=(1, 2), seed=1
    )
    ours = open_dataset(path)
    theirs = sbd.WaveformDataset(path, component_order="ZNE", dimension_order="NCW")
    assert theirs.metadata["trace_name"].tolist() == ours.metadata["trace_name"].tolist()
    generator = sbg.GenericGenerator(theirs)
    for i in range(len(ours)):
        np.testing.assert_array_equal(generator[i]["X"], ours.get_sample(i)[0])
    assert json.loads((path / synthetic.STAMP_FILE).read_text())["layout_version"] == 2


# --- training on a set's own split ------------------------------------------------------------
def test_training_uses_the_split_column_with_cv_strategy_predefined(traces, tmp_path):
    from quake.training import load_config, train

    folder = write_with_seisbench(tmp_path / "set", traces, order="ENZ", bucketed=True)
    overrides = {
        "data.path": str(folder),
        "run.out": str(tmp_path / "run"),
        "run.quiet": True,
        "run.device": "cpu",
        "model.depth": 1,
        "model.pretrained": "none",
        "cv.strategy": "predefined",
        "optim.epochs": 1,
        "optim.batch_size": 8,
        "baseline.n_estimators": 10,
        "run.parallel_folds": 1,
    }
    result = train(load_config(overrides=overrides))
    saved = json.loads((result.run_dir / "fold_indices.json").read_text())
    assert saved["strategy"] == "predefined" and saved["n_folds"] == 1
    items = pd.read_csv(result.run_dir / "items.csv")
    split = pd.read_csv(folder / "metadata.csv").set_index("trace_name")["split"]
    (fold,) = saved["folds"]
    for part, name in (("train", "train"), ("val", "dev"), ("test", "test")):
        assert set(split[items["trace_name"][fold[part]]]) == {name}
    assert len(fold["train"]) + len(fold["val"]) + len(fold["test"]) == len(items)
    assert len(result.metrics["folds"]) == 1
    # a set without the column is refused before any run folder exists
    plain = write_with_seisbench(
        tmp_path / "plain", [({k: v for k, v in m.items() if k != "split"}, w) for m, w in traces]
    )
    overrides.update({"data.path": str(plain), "run.out": str(tmp_path / "run2")})
    with pytest.raises(ValueError, match=r"needs a 'split' column"):
        train(load_config(overrides=overrides))
    assert not (tmp_path / "run2").exists()
