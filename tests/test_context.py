"""Catalog context (quake.models.context): features from real QuakeML and CSV catalogs (time zones,
daylight saving, missing depth), the logistic model and its JSON, and a pnw-eqex run with
``context.enabled`` whose classification adds the context as one equal vote."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from quake.data.catalog import read_catalog
from quake.models.context import (
    FEATURES,
    ContextModel,
    context_features,
    parse_timezone,
    predict_context,
)
from quake.training.config import load_config

RENAME = {
    "origin_time": "source_origin_time",
    "longitude": "source_longitude_deg",
    "depth_km": "source_depth_km",
    "magnitude": "source_magnitude",
}


def _hour(row: np.ndarray) -> float:
    return (math.degrees(math.atan2(row[0], row[1])) / 15.0) % 24.0


def _row(events: pd.DataFrame, features: np.ndarray, event_id: str) -> np.ndarray:
    return features[int(np.flatnonzero(events["event_id"] == event_id)[0])]


@pytest.mark.parametrize("name", ["catalog.csv", "catalog.xml"])
def test_local_hour_weekday_depth_from_real_catalogs(pnw, name):
    events = read_catalog(pnw / name).rename(columns=RENAME)
    solar = context_features(events)
    civil = context_features(events, "America/Los_Angeles")
    assert solar.shape == (len(events), len(FEATURES))
    # uw61511322: 2019-02-08 17:41:10 UTC (a Friday), longitude -123.337 -> UTC-8 either way
    for table in (solar, civil):
        row = _row(events, table, "uw61511322")
        assert _hour(row) == pytest.approx(9 + 41 / 60 + 10 / 3600, abs=1e-6)
        assert row[FEATURES.index("working_hours")] == 1.0
        assert row[FEATURES.index("weekend")] == 0.0
        assert row[FEATURES.index("depth_km")] == pytest.approx(-0.44)
        assert row[FEATURES.index("magnitude")] == pytest.approx(0.44)
    # an event of 2020-07-17 19:23:41 UTC at -122.135: solar UTC-8 -> 11:23, civil PDT -> 12:23
    summer = events["source_origin_time"].astype(str).str.startswith("2020-07-17T19:23")
    event_id = events.loc[summer, "event_id"].iloc[0]
    assert _hour(_row(events, solar, event_id)) == pytest.approx(11 + 23 / 60 + 41 / 3600, abs=1e-6)
    assert _hour(_row(events, civil, event_id)) == pytest.approx(12 + 23 / 60 + 41 / 3600, abs=1e-6)


def test_missing_depth_or_time_is_flagged_and_imputed(pnw, tmp_path):
    table = pd.read_csv(pnw / "catalog.csv")
    table.loc[0, "depth_km"] = None
    table.loc[1, "magnitude"] = None
    path = tmp_path / "catalog.csv"
    table.to_csv(path, index=False)
    events = read_catalog(path).rename(columns=RENAME)
    features = context_features(events, "UTC-08:00")
    assert features[0, FEATURES.index("depth_missing")] == 1.0
    assert np.isnan(features[0, FEATURES.index("depth_km")])
    assert features[1, FEATURES.index("magnitude_missing")] == 1.0
    assert features[2, FEATURES.index("depth_missing")] == 0.0
    no_time = context_features(events.drop(columns=["source_origin_time"]))
    assert np.all(no_time[:, :4] == 0.0)  # no origin time: no hour, weekday or working hours
    labels = (table["event_type"] == "explosion").to_numpy().astype(int)
    model = ContextModel.fit(features, labels, 2, "UTC-08:00")
    probs = model.predict_proba(features)
    assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1.0)
    # the imputed event is scored as if it had the training median depth
    filled = features[:1].copy()
    filled[0, FEATURES.index("depth_km")] = model.medians[FEATURES.index("depth_km")]
    np.testing.assert_allclose(model.predict_proba(filled), probs[:1], rtol=1e-12)


def test_context_model_separates_blasts_and_round_trips_through_json():
    rng = np.random.default_rng(0)
    n = 80
    labels = np.arange(n) % 2  # 1: blast, in working hours at the surface
    hours = np.where(labels == 1, rng.uniform(9, 16, n), rng.uniform(0, 24, n))
    features = np.zeros((n, len(FEATURES)))
    features[:, 0], features[:, 1] = np.sin(hours * np.pi / 12), np.cos(hours * np.pi / 12)
    features[:, 2] = (labels == 1) | (rng.uniform(size=n) < 0.3)
    features[:, 4] = np.where(labels == 1, rng.normal(0, 0.3, n), rng.uniform(2, 20, n))
    features[:, 6] = rng.normal(1.0, 0.5, n)
    model = ContextModel.fit(features, labels, 3, None)  # class 2 never seen
    probs = model.predict_proba(features)
    assert (probs[:, :2].argmax(axis=1) == labels).mean() > 0.9
    assert np.all(probs[:, 2] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    again = ContextModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict_proba(features), probs, rtol=1e-12)
    with pytest.raises(ValueError, match="not a catalog context model"):
        ContextModel.from_dict({**model.to_dict(), "features": ["depth_km"]})


@pytest.mark.parametrize("name", ["Mars/Olympus", "UTC+25", "PST8"])
def test_a_bad_timezone_is_refused_naming_it(name):
    with pytest.raises(ValueError, match=re.escape(f"context.timezone={name!r} is invalid")):
        load_config(None, {"context.timezone": name})
    assert parse_timezone("UTC+05:30").utcoffset(None).total_seconds() == 5.5 * 3600


@pytest.mark.slow
def test_a_run_with_context_reports_the_ablation_and_classify_adds_the_vote(pnw, tmp_path):
    import quake
    from quake.classify.run import run_classification
    from quake.probabilities import prob_column

    run = quake.train(data=pnw, model__depth=1, optim__epochs=1, cv__folds=2,
                      model__pretrained="none", baseline__n_estimators=20,
                      context__enabled=True, context__timezone="America/Los_Angeles",
                      run__out=str(tmp_path / "run"), run__quiet=True)  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    ctx = metrics["context"]
    assert ctx["n_events"] == 48 and ctx["events_with_depth"] == 48
    assert len(ctx["event_level"]["folds"]) == len(ctx["context_alone"]["folds"]) == 2
    report = (run / "report.md").read_text()
    assert "### Catalog context (event level)" in report and "**Caution:**" in report
    assert (run / "model" / "context.json").is_file()
    survey = metrics["data"]["onset_survey"]  # origin times only: the window check is reported
    assert survey["n_with_trigger"] > 0 and "- Windows: no P picks in the data" in report

    catalog = pd.read_csv(pnw / "catalog.csv").head(6)
    catalog.to_csv(tmp_path / "six.csv", index=False)
    with_context = quake.load(run)
    waveform_only = quake.load(run)
    waveform_only.context_models = None
    names = list(with_context.class_names)
    columns = [prob_column(c) for c in names]
    tables = []
    for i, clf in enumerate((with_context, waveform_only)):
        run_classification(clf, tmp_path / "six.csv", pnw / "waveforms", tmp_path / f"p{i}.csv",
                           progress=False)  # fmt: skip
        tables.append(pd.read_csv(tmp_path / f"p{i}.csv").set_index("event_id"))
    events = read_catalog(tmp_path / "six.csv").rename(columns=RENAME)
    context = predict_context(with_context.context_models, events)
    for k, event_id in enumerate(events["event_id"]):
        waveform = tables[1].loc[event_id, columns].to_numpy(float)
        expected = np.sqrt((waveform + 1e-6) * (context[k] + 1e-6))
        np.testing.assert_allclose(
            tables[0].loc[event_id, columns].to_numpy(float), expected / expected.sum(), atol=5e-6
        )
