"""One reading layer: training (CatalogDataset + adapter) and classification (EventFolderSource +
prepare_event) see the same stations of the same folder, and ids never leave the waveform root.
Real pnw-eqex recordings (skipped where absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quake.classify.windows import prepare_event
from quake.data import PreprocessConfig, WaveformDataAdapter, open_dataset
from quake.data.catalog import read_catalog
from quake.data.sources import EventFolderSource, EventRequest

EVENTS = ("uw61551907", "uw61722766", "uw61699342")  # a truncated trace, a gap, a clipped station
SUFFIXES = (".mseed", ".MSEED", ".ms", ".msd", ".miniseed")


@pytest.fixture(scope="module")
def folder(real_data_dir, tmp_path_factory) -> Path:
    """Three pnw-eqex events, their files renamed to every accepted suffix (any letter case),
    plus a file that is not miniSEED."""
    pnw = real_data_dir / "pnw-eqex"
    if not pnw.is_dir():
        pytest.skip(f"{pnw} not found")
    root = tmp_path_factory.mktemp("set")
    catalog = pd.read_csv(pnw / "catalog.csv")
    catalog[catalog["event_id"].isin(EVENTS)].to_csv(root / "catalog.csv", index=False)
    k = 0
    for event in EVENTS:
        (root / "waveforms" / event).mkdir(parents=True)
        for f in sorted((pnw / "waveforms" / event).iterdir()):
            shutil.copy(f, root / "waveforms" / event / (f.stem + SUFFIXES[k % len(SUFFIXES)]))
            k += 1
        (root / "waveforms" / event / "notes.txt").write_text("not a waveform\n")
    return root


def test_training_and_classification_see_the_same_stations(folder):
    config = PreprocessConfig()
    dataset = open_dataset(folder / "catalog.csv", config)
    adapter = WaveformDataAdapter(dataset, config=config)
    source = EventFolderSource(folder)
    events = read_catalog(folder / "catalog.csv")
    training_read, training_used = set(), set()
    for name in dataset.metadata["trace_name"].astype(str):
        training_read.add(name.rsplit(".", 1)[0])  # <event>.<NET.STA.LOC>.<band>
    for name in adapter.metadata["trace_name"].astype(str):
        training_used.add(name.rsplit(".", 1)[0])
    training_skips = {item.rsplit(".", 1)[0]: r.split(":")[0] for item, r in adapter.dropped}
    classify_read, classify_used, classify_skips = set(), set(), {}
    for event in events.itertuples():
        prepared = prepare_event(
            source, EventRequest(event.event_id, event.origin_time), event.p_picks, config
        )
        assert not prepared.event_reason
        for station in prepared.stations:
            key = f"{event.event_id}.{station.station_id}"
            classify_read.add(key)
            if station.used:
                classify_used.add(key)
            else:
                classify_skips[key] = station.reason
    assert len(classify_read) > 20
    # every station file of every suffix is read by both sides; notes.txt by neither
    assert training_read | set(dataset_skipped_stations(dataset)) == classify_read
    assert training_used == classify_used
    assert training_skips == {k: v for k, v in classify_skips.items() if k in training_read}
    assert "too short" in training_skips.values() and "clipping" in training_skips.values()


def dataset_skipped_stations(dataset) -> list[str]:
    """Stations the catalog reader skips while indexing (no fast-enough channel, ...)."""
    return [item for item, _ in dataset.skipped if item.count(".") == 3]


@pytest.mark.parametrize("bad_id", ["../outside", "/abs/outside", "a/../../outside"])
def test_event_ids_never_leave_the_waveform_root(folder, tmp_path, bad_id):
    # a real event folder outside the root, which a careless join would read
    root = tmp_path / "root"
    shutil.copytree(folder, root)
    outside = tmp_path / "outside"
    shutil.copytree(root / "waveforms" / EVENTS[0], outside)
    event_id = bad_id.replace("/abs/outside", str(outside))
    catalog = pd.read_csv(root / "catalog.csv")
    catalog.loc[0, "event_id"] = event_id
    catalog.to_csv(root / "catalog.csv", index=False)

    dataset = open_dataset(root / "catalog.csv")
    assert not dataset.metadata["source_id"].astype(str).eq(event_id).any()
    reasons = dict(dataset.skipped)
    assert reasons[event_id].startswith(f"bad event id: event id {event_id!r} is not a folder name")

    prepared = prepare_event(
        EventFolderSource(root), EventRequest(event_id, None), {}, PreprocessConfig(anchor="start")
    )
    assert prepared.event_reason.startswith("bad event id") and not len(prepared.windows)
    assert np.all([not s.used for s in prepared.stations])
