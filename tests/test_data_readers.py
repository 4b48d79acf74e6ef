"""Readers on real data (skipped where absent), on sets written here, and on bad input."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import obspy
import pandas as pd
import pytest
from obspy import Stream, Trace, UTCDateTime
from obspy.core.event import Catalog, Event, Origin, Pick, ResourceIdentifier, WaveformStreamID
from torch.utils.data import DataLoader

from quake.data import (
    CatalogDataset,
    PreprocessConfig,
    SeisBenchDataset,
    SeisBenchWriter,
    SkipTrace,
    SteadDataset,
    WaveformDataAdapter,
    open_dataset,
)
from quake.data.catalog import event_id_from_resource_id
from quake.data.readers import parse_trace_name
from quake.training.data import write_trace_quality


# --- real data --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eqnoise(real_data_dir):
    return real_data_dir / "eqnoise-3c"


@pytest.fixture(scope="module")
def pnw(real_data_dir):
    return real_data_dir / "pnw-eqex"


def test_seisbench_reader_on_eqnoise(eqnoise):
    dataset = open_dataset(eqnoise)
    assert isinstance(dataset, SeisBenchDataset)
    table = pd.read_csv(eqnoise / "metadata.csv")
    assert len(dataset) == len(table) and dataset.skipped == []
    assert dataset.class_names == ["earthquake", "noise"]
    with h5py.File(eqnoise / "waveforms.hdf5", "r") as f:
        assert f["data_format"].attrs["component_order"] == "ZNE"
        stored = f["data"][table["trace_name"][5]][()]
    waveform, meta = dataset.get_sample(5)
    assert waveform.shape == (3, 2900) and waveform.dtype == np.float32
    np.testing.assert_array_equal(waveform, stored)
    assert meta["trace_name"] == table["trace_name"][5]
    assert meta["trace_sampling_rate_hz"] == 100.0


def test_eqnoise_feeds_the_adapter(eqnoise):
    dataset = open_dataset(eqnoise)
    adapter = WaveformDataAdapter(dataset)
    assert len(adapter) + len(adapter.dropped) == len(dataset)
    assert adapter.class_names == dataset.class_names
    expected = dataset.class_names.encode(adapter.metadata["source_type"])
    assert adapter.labels.tolist() == expected
    # earthquake windows start pre_arrival_s before P (sample 500): the P sample is inside
    quake_row = int(np.flatnonzero(adapter.metadata["source_type"] == "earthquake")[0])
    raw, _ = dataset.get_sample(quake_row)
    np.testing.assert_array_equal(adapter.get_waveform(quake_row), raw[:, 300:2348])
    spec, _ = adapter[quake_row]
    assert tuple(spec.shape) == adapter.output_shape


def test_vertical_only_traces_follow_copy_z(eqnoise):
    dataset = open_dataset(eqnoise, PreprocessConfig(missing_component="copy_z"))
    z_only = np.flatnonzero(dataset.metadata["trace_components"].astype(str) == "Z")
    assert len(z_only) > 0
    waveform, _ = dataset.get_sample(int(z_only[0]))
    np.testing.assert_array_equal(waveform[1], waveform[0])
    np.testing.assert_array_equal(waveform[2], waveform[0])
    # the adapter applies its own config's policy to a set opened with the default (zeros)
    plain = open_dataset(eqnoise).filter(z_only[:3])
    assert not plain.get_sample(0)[0][1:].any()
    adapter = WaveformDataAdapter(plain, config=PreprocessConfig(missing_component="copy_z"))
    window = adapter.get_waveform(0)
    np.testing.assert_array_equal(window[1], window[0])
    np.testing.assert_array_equal(window[2], window[0])


def test_filter_gives_a_subset_view(eqnoise):
    dataset = open_dataset(eqnoise)
    noise = dataset.filter(dataset.metadata["source_type"] == "noise")
    assert len(noise) == int((dataset.metadata["source_type"] == "noise").sum())
    assert set(noise.metadata["source_type"]) == {"noise"}
    assert noise.class_names == dataset.class_names  # label indices stay stable
    with pytest.raises(ValueError, match="mask must have shape"):
        dataset.filter(np.ones(3, dtype=bool))


def test_dataloader_workers_reopen_the_hdf5_file(eqnoise):
    dataset = open_dataset(eqnoise).filter(np.arange(16))
    dataset.get_sample(0)  # open the file in this process before forking
    adapter = WaveformDataAdapter(dataset)
    loader = DataLoader(adapter, batch_size=8, num_workers=2)
    batches = list(loader)
    assert sum(len(b[1]) for b in batches) == len(adapter)
    for i, (x, _) in enumerate(batches):
        # float32 spectrograms: a worker's single thread sums in another order than this
        # process's threads, and the filters' matrix product rounds by batch (differences
        # near 1e-5); a wrong trace differs at order 1
        np.testing.assert_allclose(x[0].numpy(), adapter[8 * i][0].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("catalog", ["catalog.xml", "catalog.csv"])
def test_catalog_reader_on_pnw(pnw, catalog, caplog):
    dataset = open_dataset(pnw / catalog)
    assert isinstance(dataset, CatalogDataset)
    table = pd.read_csv(pnw / "catalog.csv")
    meta = dataset.metadata
    assert set(meta["source_id"]) <= set(table["event_id"])
    assert set(meta["source_type"]) == {"earthquake", "explosion"}
    assert dataset.class_names == ["earthquake", "explosion"]
    labels = dict(zip(table["event_id"], table["event_type"], strict=True))
    assert all(labels[e] == t for e, t in zip(meta["source_id"], meta["source_type"], strict=True))
    # one sample per station and event; slow bands (LH?, VH?) never chosen
    assert not meta.duplicated(
        ["source_id", "station_network_code", "station_code", "station_location_code"]
    ).any()
    assert not meta["trace_channel"].str[0].isin(["L", "V"]).any()
    assert {40.0, 50.0, 100.0, 500.0} <= set(meta["trace_original_sampling_rate_hz"])
    # raw samples come back at the configured rate, spanning the miniSEED file
    row = int(np.flatnonzero(meta["trace_original_sampling_rate_hz"] == 40.0)[0])
    waveform, info = dataset.get_sample(row)
    original = obspy.read(str(pnw / "waveforms" / info["trace_source_files"]))
    duration = original[0].stats.npts / original[0].stats.sampling_rate
    assert waveform.shape == (3, int(np.ceil(duration * 100)))
    assert not waveform[1:].any()  # vertical only: horizontals are zeros by default


def test_catalog_xml_and_csv_give_the_same_samples(pnw):
    from_xml = open_dataset(pnw).metadata  # catalog.xml wins when both exist
    from_csv = open_dataset(pnw / "catalog.csv").metadata
    assert from_xml["trace_name"].tolist() == from_csv["trace_name"].tolist()
    np.testing.assert_allclose(
        from_xml["source_depth_km"].to_numpy(float), from_csv["source_depth_km"].to_numpy(float)
    )


def test_pnw_feeds_the_adapter_and_reports_truncated_traces(pnw):
    dataset = open_dataset(pnw / "catalog.csv")
    adapter = WaveformDataAdapter(dataset)
    assert len(adapter) + len(adapter.dropped) == len(dataset)
    reasons = dict(adapter.dropped)
    # CC.HIYU's BHZ recording of uw61551907 ends before the origin time
    assert reasons["uw61551907.CC.HIYU..BH"].startswith("too short:")
    assert adapter.drop_counts()["too short"] >= 1
    spec, label = adapter[0]
    assert tuple(spec.shape) == adapter.output_shape
    assert adapter.class_names[label] == adapter.metadata["source_type"][0]


def test_stead_layout_written_from_real_data(eqnoise, tmp_path):
    table = pd.read_csv(eqnoise / "metadata.csv").head(12)
    folder = tmp_path / "stead"
    folder.mkdir()
    with (
        h5py.File(eqnoise / "waveforms.hdf5", "r") as src,
        h5py.File(folder / "chunk1.hdf5", "w") as dst,
    ):
        for name in table["trace_name"]:
            zne = src["data"][name][()]
            enz = np.zeros((6000, 3), dtype=np.float32)
            enz[: zne.shape[1]] = zne[::-1].T  # E, N, Z columns
            dst.create_dataset(f"data/{name}", data=enz)
    stead = pd.DataFrame(
        {
            "trace_name": table["trace_name"],
            "network_code": table["station_network_code"],
            "receiver_code": table["station_code"],
            "receiver_type": table["trace_channel"],
            "p_arrival_sample": table["trace_p_arrival_sample"],
            "source_id": table["source_id"].where(table["source_type"] == "earthquake", "None"),
            "trace_category": table["source_type"].map(
                {"earthquake": "earthquake_local", "noise": "noise"}
            ),
        }
    )
    stead.to_csv(folder / "chunk1.csv", index=False)

    dataset = open_dataset(folder)
    assert isinstance(dataset, SteadDataset)
    assert len(dataset) == 12 and dataset.class_names == ["earthquake", "noise"]
    assert dataset.metadata["station_code"].tolist() == table["station_code"].tolist()
    assert dataset.metadata["source_type"].tolist() == table["source_type"].tolist()
    original = open_dataset(eqnoise)
    for i in (0, 1):
        waveform, meta = dataset.get_sample(i)
        assert waveform.shape == (3, 6000)
        np.testing.assert_array_equal(waveform[:, :2900], original.get_sample(i)[0])
        assert meta["trace_sampling_rate_hz"] == 100.0
    adapter = WaveformDataAdapter(dataset)
    np.testing.assert_array_equal(adapter.get_waveform(0), original.get_sample(0)[0][:, 300:2348])


# --- sets written here ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plain_trace", ("plain_trace", None)),
        ("bucket3$12,:3,:6000", ("bucket3", (12, slice(None, 3), slice(None, 6000)))),
        ("bucket0$0,1:3,100:200", ("bucket0", (0, slice(1, 3), slice(100, 200)))),
    ],
)
def test_parse_trace_name(name, expected):
    assert parse_trace_name(name) == expected


def test_parse_trace_name_rejects_bad_locator():
    with pytest.raises(ValueError, match=r"bad bucket locator in trace name 'bucket1\$x,:3'"):
        parse_trace_name("bucket1$x,:3")


def test_bucketed_seisbench_set_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    waveforms = rng.normal(size=(10, 3, 1000)).astype(np.float32)
    with SeisBenchWriter(tmp_path / "set", sampling_rate_hz=100.0, bucket_size=4) as writer:
        for i, w in enumerate(waveforms):
            writer.add(f"t{i}", w, source_id=f"ev{i // 2}", source_type="earthquake")
    dataset = open_dataset(tmp_path / "set")
    assert dataset.metadata["trace_name"][5] == "bucket1$1,:3,:1000"
    for i in (0, 5, 9):
        np.testing.assert_array_equal(dataset.get_sample(i)[0], waveforms[i])


def test_component_and_dimension_order_attributes_are_respected(tmp_path):
    rng = np.random.default_rng(4)
    zne = rng.normal(size=(3, 500)).astype(np.float32)
    folder = tmp_path / "nez"
    folder.mkdir()
    with h5py.File(folder / "waveforms.hdf5", "w") as f:
        f.create_group("data_format").attrs.update(
            {"component_order": "N2Z", "dimension_order": "WC", "sampling_rate": 100.0}
        )
        f.create_dataset("data/a", data=np.stack([zne[1], zne[2], zne[0]], axis=1))
    pd.DataFrame({"trace_name": ["a"], "source_type": ["noise"]}).to_csv(
        folder / "metadata.csv", index=False
    )
    waveform, meta = open_dataset(folder).get_sample(0)
    np.testing.assert_array_equal(waveform, zne)
    assert meta["source_id"] == "a" and meta["trace_sampling_rate_hz"] == 100.0


def _write_mseed(path, channel, rate, seconds, start, station="ST1", value=None, rng=None):
    n = int(seconds * rate)
    data = (
        (rng.normal(size=n) * 100).astype(np.int32)
        if value is None
        else np.full(n, value, np.int32)
    )
    Trace(
        data,
        header={
            "network": "XX",
            "station": station,
            "location": "",
            "channel": channel,
            "sampling_rate": rate,
            "starttime": start,
        },
    ).write(str(path), format="MSEED")


@pytest.fixture
def catalog_folder(tmp_path):
    """A small QuakeML catalog with a P pick, mixed bands and rates, and the usual faults."""
    rng = np.random.default_rng(5)
    origin = UTCDateTime("2021-06-01T12:00:00")
    start = origin - 50
    folder = tmp_path / "cat"
    for event_id in ("ev1", "ev2", "ev4"):
        (folder / "waveforms" / event_id).mkdir(parents=True)
    w1 = folder / "waveforms" / "ev1"
    for comp in "ZNE":
        _write_mseed(w1 / f"XX.ST1..HH{comp}.mseed", f"HH{comp}", 100.0, 150, start, rng=rng)
    _write_mseed(w1 / "XX.ST1..LHZ.mseed", "LHZ", 1.0, 150, start, rng=rng)
    _write_mseed(w1 / "XX.ST2..BHZ.mseed", "BHZ", 40.0, 150, start, station="ST2", rng=rng)
    _write_mseed(w1 / "XX.ST3..LHZ.mseed", "LHZ", 1.0, 150, start, station="ST3", rng=rng)
    _write_mseed(
        folder / "waveforms" / "ev2" / "XX.ST1..EHZ.mseed", "EHZ", 50.0, 150, start, rng=rng
    )
    (folder / "waveforms" / "ev2" / "XX.ST2..EHZ.mseed").write_bytes(b"not a miniSEED file" * 40)
    _write_mseed(
        folder / "waveforms" / "ev4" / "XX.ST1..HHZ.mseed", "HHZ", 100.0, 150, start, rng=rng
    )

    catalog = Catalog()
    # ev3 has no waveform folder; ev4 has no event type
    for event_id, kind in (
        ("ev1", "earthquake"),
        ("ev2", "explosion"),
        ("ev3", "earthquake"),
        ("ev4", None),
    ):
        event = Event(
            resource_id=ResourceIdentifier(f"smi:test.org/event/{event_id}"), event_type=kind
        )
        event.origins.append(Origin(time=origin, latitude=46.0, longitude=-122.0, depth=5000.0))
        if event_id == "ev1":
            event.picks.append(
                Pick(
                    time=origin + 12.5,
                    phase_hint="P",
                    waveform_id=WaveformStreamID("XX", "ST1", "", "HHZ"),
                )
            )
        catalog.append(event)
    catalog.write(str(folder / "catalog.xml"), format="QUAKEML")
    return folder, origin, start


def test_catalog_reader_chooses_bands_picks_and_skips(catalog_folder):
    folder, origin, start = catalog_folder
    dataset = open_dataset(folder)
    meta = dataset.metadata.set_index("trace_name")
    assert sorted(meta.index) == ["ev1.XX.ST1..HH", "ev1.XX.ST2..BH", "ev2.XX.ST1..EH"]
    reasons = dict(dataset.skipped)
    assert reasons["ev1.XX.ST3."].startswith("low sampling rate: no channel at >= 20 Hz")
    assert reasons["ev2/XX.ST2..EHZ.mseed"].startswith("unreadable:")
    assert reasons["ev3"] == "no waveforms: folder waveforms/ev3 is missing"
    assert reasons["ev4"].startswith("unknown label: event_type None")
    # P pick of ST1 -> sample at the configured rate; no pick -> NaN, origin time kept
    assert meta.loc["ev1.XX.ST1..HH", "trace_p_arrival_sample"] == pytest.approx(62.5 * 100)
    assert np.isnan(meta.loc["ev1.XX.ST2..BH", "trace_p_arrival_sample"])
    assert UTCDateTime(meta.loc["ev1.XX.ST2..BH", "source_origin_time"]) == origin
    assert meta.loc["ev1.XX.ST1..HH", "trace_components"] == "ZNE"
    assert meta.loc["ev1.XX.ST1..HH", "source_depth_km"] == pytest.approx(5.0)

    adapter = WaveformDataAdapter(dataset)
    assert len(adapter) == 3
    assert adapter.class_names == ["earthquake", "explosion"]
    # reader skips are listed with the adapter's own drops
    assert {item for item, _ in adapter.dropped} == {item for item, _ in dataset.skipped}


def test_catalog_csv_event_ids_and_anchor_at_origin(catalog_folder):
    folder, origin, start = catalog_folder
    (folder / "catalog.xml").unlink()
    pd.DataFrame({"event_id": ["ev2"], "time": [str(origin)], "event_type": ["explosion"]}).to_csv(
        folder / "catalog.csv", index=False
    )
    dataset = open_dataset(folder)
    assert dataset.metadata["trace_name"].tolist() == ["ev2.XX.ST1..EH"]
    cfg = dataset.config
    adapter = WaveformDataAdapter(dataset)
    raw, _ = dataset.get_sample(0)
    first = round((50 - cfg.pre_arrival_s) * cfg.sampling_rate_hz)  # origin 50 s after start
    np.testing.assert_array_equal(
        adapter.get_waveform(0), raw[:, first : first + cfg.window_samples]
    )


def test_event_id_from_resource_id():
    assert event_id_from_resource_id("smi:uw.anss.org/event/uw61348817") == "uw61348817"


def test_reading_stays_lazy_and_a_file_broken_after_opening_is_skipped(catalog_folder):
    folder, _, _ = catalog_folder
    dataset = open_dataset(folder)
    row = int(np.flatnonzero(dataset.metadata["trace_name"] == "ev1.XX.ST2..BH")[0])
    (folder / "waveforms" / "ev1" / "XX.ST2..BHZ.mseed").write_bytes(b"\x00" * 10)
    with pytest.raises(SkipTrace, match=r"unreadable: ev1/XX.ST2..BHZ.mseed"):
        dataset.get_sample(row)
    adapter = WaveformDataAdapter(dataset)
    assert "ev1.XX.ST2..BH" in dict(adapter.dropped)


# --- bad input --------------------------------------------------------------------------------
def test_empty_catalog_is_a_clear_error(tmp_path):
    (tmp_path / "waveforms").mkdir()
    Catalog().write(str(tmp_path / "catalog.xml"), format="QUAKEML")
    with pytest.raises(ValueError, match=r"catalog .*catalog.xml holds no event"):
        open_dataset(tmp_path)
    (tmp_path / "catalog.xml").unlink()
    (tmp_path / "catalog.csv").write_text("event_id,time,event_type\n")
    with pytest.raises(ValueError, match=r"catalog .*catalog.csv holds no event"):
        open_dataset(tmp_path)


def test_catalog_csv_without_label_column(tmp_path):
    (tmp_path / "catalog.csv").write_text("event_id,time\nev1,2020-01-01T00:00:00\n")
    with pytest.raises(ValueError, match=r"no 'event_type' column"):
        open_dataset(tmp_path)


def test_corrupt_quakeml_is_a_clear_error(tmp_path):
    (tmp_path / "catalog.xml").write_text("<q:quakeml><eventParameters>")
    with pytest.raises(ValueError, match="cannot read QuakeML catalog"):
        open_dataset(tmp_path)


def test_truncated_quakeml_gives_the_xml_parsers_message(pnw, tmp_path):
    text = (pnw / "catalog.xml").read_text()
    (tmp_path / "catalog.xml").write_text(text[: len(text) // 2])  # cut mid-file
    with pytest.raises(ValueError, match=r"catalog.xml: not well-formed XML: .*line \d+") as err:
        open_dataset(tmp_path)
    assert "Unknown format" not in str(err.value)


def test_corrupt_hdf5_is_a_clear_error(tmp_path):
    pd.DataFrame({"trace_name": ["a"]}).to_csv(tmp_path / "metadata.csv", index=False)
    (tmp_path / "waveforms.hdf5").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match=r"cannot read HDF5 file .*waveforms.hdf5"):
        open_dataset(tmp_path)


def test_missing_traces_and_unknown_labels_are_skipped(tmp_path):
    rng = np.random.default_rng(6)
    with SeisBenchWriter(tmp_path / "set", sampling_rate_hz=100.0) as writer:
        writer.add("a", rng.normal(size=(3, 3000)), source_type="earthquake")
        writer.add("b", rng.normal(size=(3, 3000)), source_type="tremor")
        writer.add("c", rng.normal(size=(3, 3000)), source_type="noise")
    table = pd.read_csv(tmp_path / "set" / "metadata.csv")
    extra = table.iloc[[0]].assign(trace_name="ghost")
    pd.concat([table, extra]).to_csv(tmp_path / "set" / "metadata.csv", index=False)
    dataset = open_dataset(tmp_path / "set")
    assert dataset.metadata["trace_name"].tolist() == ["a", "c"]
    reasons = dict(dataset.skipped)
    assert reasons["ghost"] == "missing waveform: no data/ghost in waveforms.hdf5"
    assert reasons["b"].startswith("unknown label: 'tremor'")
    assert WaveformDataAdapter(dataset).drop_counts() == {"missing waveform": 1, "unknown label": 1}


def test_a_row_without_its_waveform_is_a_named_skip_in_training(damaged_eqnoise, tmp_path):
    """The row whose HDF5 dataset is absent is dropped with its event and reason, counted in
    the run's skip counts and listed in trace_quality.csv beside the bad-shape trace."""
    missing, bad_shape = damaged_eqnoise["missing"], damaged_eqnoise["bad_shape"]
    dataset = open_dataset(damaged_eqnoise["damaged"])
    assert len(dataset) == len(open_dataset(damaged_eqnoise["intact"])) - 1
    assert dataset.skipped_rows.to_dict("records") == [
        {
            "trace_name": missing,
            "source_id": damaged_eqnoise["source_ids"][1],
            "reason": f"missing waveform: no data/{missing} in waveforms.hdf5",
        }
    ]
    adapter = WaveformDataAdapter(dataset)
    counts = adapter.drop_counts()
    assert (counts["missing waveform"], counts["bad shape"]) == (1, 1)
    write_trace_quality(adapter, tmp_path / "trace_quality.csv")
    table = pd.read_csv(tmp_path / "trace_quality.csv").set_index("trace_name")
    assert table.loc[missing, ["status", "reason"]].tolist() == ["skipped", "missing waveform"]
    assert table.loc[missing, "detail"] == f"no data/{missing} in waveforms.hdf5"
    assert table.loc[bad_shape, ["status", "reason"]].tolist() == ["skipped", "bad shape"]


def test_unknown_folder_layout_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the format"):
        open_dataset(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        open_dataset(tmp_path / "nope")


def test_a_moved_catalog_folder_still_reads(catalog_folder, tmp_path):
    """The dataset keeps file paths relative to its folder, so a moved set still reads."""
    folder, _, _ = catalog_folder
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    dataset = open_dataset(moved)
    shutil.rmtree(folder)
    assert dataset.get_sample(0)[0].shape[0] == 3


def test_catalog_windows_match_window_from_stream(pnw):
    """Training (adapter over the catalog reader) and catalog classification
    (window_from_stream on the station's files) cut the very same window."""
    from quake.data import window_from_stream

    dataset = open_dataset(pnw / "catalog.csv")
    adapter = WaveformDataAdapter(dataset.filter(np.arange(40)))
    for i in (0, 7, 23):
        row = adapter.metadata.iloc[i]
        station = (
            f"{row['station_network_code']}.{row['station_code']}.{row['station_location_code']}"
        )
        folder = pnw / "waveforms" / row["source_id"]
        stream = Stream()
        for f in sorted(folder.glob(f"{station}.*.mseed")):  # every band of the station
            stream += obspy.read(str(f))
        window, _ = window_from_stream(
            stream, adapter.config, origin_time=UTCDateTime(row["source_origin_time"])
        )
        np.testing.assert_array_equal(window, adapter.get_waveform(i))
