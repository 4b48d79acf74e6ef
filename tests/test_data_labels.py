"""A set's own labels: another label column, a label map (QuakeXNet's "surface event"), and one
aggregated warning for unknown labels. Real eqnoise-3c and pnw-eqex files, relabelled."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from quake.data import LabelSpec, open_dataset
from quake.training.config import load_config


@pytest.fixture
def relabelled(real_data_dir, tmp_path) -> Path:
    """eqnoise-3c with its labels in a column ``label`` and QuakeXNet-style names: every third
    earthquake recording called a "surface event", the others "eq"."""
    source = real_data_dir / "eqnoise-3c"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    metadata = pd.read_csv(source / "metadata.csv")
    quake_rows = metadata.index[metadata["source_type"] == "earthquake"]
    names = metadata["source_type"].copy()
    names[quake_rows] = "eq"
    names[quake_rows[::3]] = "surface event"
    metadata = metadata.drop(columns=["source_type", "trace_category"], errors="ignore")
    metadata["label"] = names
    folder = tmp_path / "set"
    folder.mkdir()
    metadata.to_csv(folder / "metadata.csv", index=False)
    (folder / "waveforms.hdf5").symlink_to(source / "waveforms.hdf5")
    return folder


def test_a_label_column_and_map_give_the_class_names(relabelled):
    labels = LabelSpec("label", {"EQ": "earthquake", "surface event": "landslide"})
    dataset = open_dataset(relabelled, labels=labels)
    raw = pd.read_csv(relabelled / "metadata.csv")["label"]
    expected = raw.map({"eq": "earthquake", "surface event": "landslide", "noise": "noise"})
    assert list(dataset.metadata["source_type"].astype(str)) == list(expected)
    assert list(dataset.class_names) == ["earthquake", "landslide", "noise"]
    assert not dataset.skipped


def test_unknown_labels_are_one_warning_with_counts(relabelled, caplog):
    raw = pd.read_csv(relabelled / "metadata.csv")["label"]
    with caplog.at_level(logging.WARNING, logger="quake"):
        dataset = open_dataset(relabelled, labels=LabelSpec("label"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    n_eq, n_surface = int((raw == "eq").sum()), int((raw == "surface event").sum())
    assert f"{n_eq + n_surface} skipped" in warnings[0]
    assert (
        f"unknown label: 'eq' is not a QuakeML event type or 'noise' (map it with data.label_map) x{n_eq}"
        in warnings[0]
    )
    assert (
        f"'surface event' is not a QuakeML event type or 'noise' (map it with data.label_map) x{n_surface}"
        in warnings[0]
    )
    assert len(dataset) == int((raw == "noise").sum())


def test_a_missing_label_column_or_a_bad_target_is_named(relabelled):
    with pytest.raises(ValueError, match=r"data.label_column 'labels' is not a metadata column"):
        open_dataset(relabelled, labels=LabelSpec("labels"))
    with pytest.raises(ValueError, match=r"data.label_map 'eq': unknown class name 'quake'"):
        LabelSpec("label", {"eq": "quake"})
    with pytest.raises(ValueError, match=r"data.label_map 'eq': unknown class name 'quake'"):
        load_config(None, {"data.label_map": {"eq": "quake"}})


def test_a_catalog_with_its_own_type_names(real_data_dir, tmp_path):
    pnw = real_data_dir / "pnw-eqex"
    if not pnw.is_dir():
        pytest.skip(f"{pnw} not found")
    catalog = pd.read_csv(pnw / "catalog.csv")
    catalog["event_type"] = catalog["event_type"].map({"earthquake": "eq", "explosion": "px"})
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    (tmp_path / "waveforms").symlink_to(pnw / "waveforms")
    mapped = open_dataset(
        tmp_path, labels=LabelSpec(mapping={"eq": "earthquake", "px": "explosion"})
    )
    original = open_dataset(pnw / "catalog.csv")
    assert list(mapped.metadata["source_type"]) == list(original.metadata["source_type"])
    assert len(open_dataset(tmp_path)) == 0  # unmapped: every event skipped, named


def test_training_refuses_a_set_without_labels_before_making_a_run_folder(relabelled, tmp_path):
    from quake.training.run import open_training_set

    config = load_config(None, {"data.path": str(relabelled), "run.out": str(tmp_path / "run")})
    with pytest.raises(ValueError, match=r"has no 'source_type' labels; expected a labelled set"):
        open_training_set(config)
    config = load_config(None, {"data.path": str(relabelled), "data.label_column": "label",
                                "data.label_map": {"eq": "earthquake"}})  # fmt: skip
    assert list(open_training_set(config).class_names) == ["earthquake", "noise"]
