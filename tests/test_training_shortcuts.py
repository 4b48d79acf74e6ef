"""A class told apart by how it was recorded is warned about: real pnw-eqex events, one class
resampled to another rate, read by training's own data step."""

from __future__ import annotations

import shutil

import numpy as np
import obspy
import pandas as pd
import pytest

from quake.training.config import load_config
from quake.training.data import load_data, open_training_set
from quake.training.report import _shortcut_lines
from quake.training.shortcuts import find_shortcuts

# six earthquakes' worth of 50 Hz and 100 Hz recordings, nine explosion recordings at 100 Hz
EARTHQUAKES = ["uw61737856", "uw61766977", "uw61752502"]
EXPLOSIONS = ["uw61511322", "uw61660171", "uw61826756"]


def small_set(pnw, root, explosion_rate_hz: float | None = None):
    """Six real events; the explosions' miniSEED resampled to ``explosion_rate_hz``."""
    root.mkdir(parents=True)
    catalog = pd.read_csv(pnw / "catalog.csv")
    catalog[catalog["event_id"].isin(EARTHQUAKES + EXPLOSIONS)].to_csv(
        root / "catalog.csv", index=False
    )
    for event in EARTHQUAKES + EXPLOSIONS:
        shutil.copytree(pnw / "waveforms" / event, root / "waveforms" / event)
    if explosion_rate_hz is not None:
        for event in EXPLOSIONS:
            for path in (root / "waveforms" / event).glob("*.mseed"):
                stream = obspy.read(str(path))
                stream.resample(explosion_rate_hz)
                stream.write(str(path), format="MSEED", encoding="FLOAT64")
    return root


def shortcuts_of(root):
    config = load_config(overrides={"data.path": str(root), "model.pretrained": "none"})
    _, summary, _ = load_data(config, open_training_set(config), progress=False)
    return summary["shortcuts"]


def test_a_class_all_at_another_rate_is_warned_about(pnw, tmp_path, caplog):
    shortcuts = shortcuts_of(small_set(pnw, tmp_path / "resampled", explosion_rate_hz=40.0))
    [shortcut] = shortcuts
    assert shortcut["class"] == "explosion" and shortcut["value"] == 40.0
    expected = (
        "class explosion: 100% of its 9 recordings were resampled from 40 Hz, 0% of the other "
        "classes' (a shortcut the model can learn)"
    )
    assert shortcut["text"] == expected
    assert expected in caplog.text
    assert expected in _shortcut_lines(shortcuts)[0]  # and in the report's data lines


def test_an_ordinary_set_gives_no_warning(pnw, tmp_path, caplog):
    assert shortcuts_of(small_set(pnw, tmp_path / "ordinary")) == []
    assert "shortcut" not in caplog.text


@pytest.mark.parametrize(
    ("n_vertical", "expected"),
    [(5, ["earthquake", "landslide"]), (4, [])],  # fewer than 5 recordings: too few to tell
)
def test_a_class_with_other_components_is_warned_about(n_vertical, expected):
    metadata = pd.DataFrame(
        {"trace_components": ["Z"] * n_vertical + ["ZNE"] * 20, "trace_sampling_rate_hz": 100.0}
    )
    labels = np.array([1] * n_vertical + [0] * 20)
    found = find_shortcuts(metadata, labels, ["earthquake", "landslide"], 100.0)
    assert [s["class"] for s in found if s["attribute"] == "components"] == expected
    if expected:  # with two classes, named from both sides
        assert found[0]["text"].startswith("class earthquake: 100% of its 20 recordings have the "
                                           "components ZNE, 0% of the other classes'")  # fmt: skip
        assert found[1]["text"].startswith(
            f"class landslide: 100% of its {n_vertical} recordings have only the components Z, "
            "0% of the other classes'"
        )
