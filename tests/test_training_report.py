"""The report's explanations on real data (eqnoise-3c, a tiny 2-fold run): the misclassified and
typical-correct grids, the class-mean spectrograms, the operating points, the per-station table,
the AUC / AP / ECE in the plot legends and the deployment advice -- each checked against what the
test computes itself from ``predictions.csv`` and the set's ``metadata.csv``. Breakdowns by
magnitude, distance and SNR, which eqnoise-3c lacks, are checked on a crafted table."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from tiny_run import tiny_run_config

import quake
from quake.probabilities import prob_column
from quake.training import report, train
from quake.training import report_figures as F

FIGURES = ["class_mean_spectrograms.png", "typical_correct.png"]

#: Not the default, so the test sees the configured weight reach the metrics and the model.
HYBRID_WEIGHT = 0.3


@pytest.fixture(scope="module")
def eqnoise_run(real_data_dir, tmp_path_factory):
    data = real_data_dir / "eqnoise-3c"
    out = tmp_path_factory.mktemp("report") / "run"
    config = tiny_run_config(
        data, out, **{"deploy.strategy": "combined", "deploy.hybrid_weight": HYBRID_WEIGHT}
    )
    result = train(config)
    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    table = pd.read_csv(run / "predictions.csv")
    names = metrics["classes"]
    probs = table[[prob_column(c) for c in names]].to_numpy()
    return {
        "run": run,
        "metrics": metrics,
        "explained": metrics["explanations"],
        "report": (run / "report.md").read_text(),
        "table": table,
        "names": names,
        "y": table["y_true"].to_numpy(),
        "probs": probs,
        "pred": table["predicted_class"].map(names.index).to_numpy(),
        "metadata": pd.read_csv(data / "metadata.csv"),
    }


def _png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, path
    assert float(np.ptp(image[..., :3])) > 0.5, f"{path} is blank"
    return image


def test_new_figures_are_written_and_linked_from_the_report(eqnoise_run):
    run, text = eqnoise_run["run"], eqnoise_run["report"]
    wrong = eqnoise_run["explained"]["misclassified"]
    figures = FIGURES + (["misclassified.png"] if wrong["shown"] else [])
    for name in figures:
        _png(run / name)
        assert f"]({name})" in text, name
    assert sorted(eqnoise_run["explained"]["figures"]) == sorted(figures)
    # eqnoise-3c has no magnitude, distance or SNR: no plot, one line naming what is missing
    assert not (run / "performance_by.png").exists()
    assert eqnoise_run["explained"]["breakdowns_missing"] == ["magnitude", "distance", "snr"]
    missing = [line for line in text.splitlines() if line.startswith("Not broken down")]
    assert (
        len(missing) == 1 and "`source_magnitude`" in missing[0] and "`trace_snr_db`" in missing[0]
    )
    assert "### By magnitude" not in text and "### By station" in text


def test_misclassified_grid_holds_exactly_the_most_confident_mistakes(eqnoise_run):
    table, pred = eqnoise_run["table"], eqnoise_run["pred"]
    chosen = eqnoise_run["probs"][np.arange(len(pred)), pred]  # of the class decided
    wrong = table[pred != eqnoise_run["y"]].assign(p=chosen[pred != eqnoise_run["y"]])
    entry = eqnoise_run["explained"]["misclassified"]
    shown = entry["shown"]
    assert entry["n_misclassified"] == len(wrong) > 0
    assert len(shown) == min(F.MISCLASSIFIED_LIMIT, len(wrong))
    names = [s["trace_name"] for s in shown]
    assert len(set(names)) == len(names) and set(names) <= set(wrong["trace_name"])
    # no misclassified trace left out is more confident than one shown
    left_out = wrong[~wrong["trace_name"].isin(names)]
    probabilities = [s["probability"] for s in shown]
    assert probabilities == sorted(probabilities, reverse=True)
    if len(left_out):
        assert left_out["p"].max() <= min(probabilities) + 1e-12
    by_name = wrong.set_index("trace_name")
    baseline = pd.read_csv(eqnoise_run["run"] / "baseline_predictions.csv").set_index("trace_name")
    for s in shown:
        row = by_name.loc[s["trace_name"]]
        assert s["true_class"] == row["true_class"] != s["predicted_class"]
        assert s["probability"] == pytest.approx(row["p"])
        assert s["source_id"] == row["source_id"]
        theirs = baseline.loc[s["trace_name"], prob_column(s["predicted_class"])]
        assert s["baseline_probability"] == pytest.approx(theirs)
        assert (
            f"| `{s['trace_name']}` | {s['station']} | `{s['source_id']}` | {s['true_class']} | "
            f"{s['predicted_class']} | {s['probability']:.3f} | {theirs:.3f} | {s['fold']} |"
        ) in eqnoise_run["report"]
    agreeing = sum(s["baseline_probability"] > 0.5 for s in shown)
    assert f"For {agreeing} of these traces it is above 0.5 as well" in eqnoise_run["report"]


def test_typical_correct_are_the_surest_right_ones_per_class(eqnoise_run):
    y, probs, table = eqnoise_run["y"], eqnoise_run["probs"], eqnoise_run["table"]
    shown = eqnoise_run["explained"]["typical_correct"]["shown"]
    right = eqnoise_run["pred"] == y
    for c, name in enumerate(eqnoise_run["names"]):
        mine = [s for s in shown if s["true_class"] == name]
        surest = np.sort(probs[right & (y == c), c])[::-1][: F.TYPICAL_PER_CLASS]
        assert [s["probability"] for s in mine] == pytest.approx(surest.tolist())
        assert all(s["predicted_class"] == name for s in mine)
        assert set(s["trace_name"] for s in mine) <= set(table.loc[right & (y == c), "trace_name"])


def test_operating_points_match_sklearn(eqnoise_run):
    y, probs, names = eqnoise_run["y"], eqnoise_run["probs"], eqnoise_run["names"]
    points = eqnoise_run["explained"]["operating_points"]
    assert list(points) == names
    for c, name in enumerate(names):
        assert points[name]["support"] == int((y == c).sum())
        assert [p["threshold"] for p in points[name]["points"]] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
        for p in points[name]["points"]:
            flagged = probs[:, c] >= p["threshold"]
            assert p["flagged"] == int(flagged.sum())
            assert p["recall"] == pytest.approx(recall_score(y == c, flagged))
            if flagged.any():
                assert p["precision"] == pytest.approx(precision_score(y == c, flagged))
            else:
                assert p["precision"] is None
    # the report's table shows the same numbers
    row = next(line for line in eqnoise_run["report"].splitlines() if line.startswith("| 0.9 |"))
    for c in range(len(names)):
        flagged = probs[:, c] >= 0.9
        recall = recall_score(y == c, flagged)
        assert f"/ {recall:.3f} ({int(flagged.sum())})" in row


def test_per_station_table_adds_up_to_the_test_predictions(eqnoise_run):
    table, metadata = eqnoise_run["table"], eqnoise_run["metadata"]
    station_table = next(t for t in eqnoise_run["explained"]["breakdowns"] if t["by"] == "station")
    rows = station_table["rows"]
    assert sum(r["n"] for r in rows) == len(table) == eqnoise_run["metrics"]["data"]["n_traces"]
    # counts per NET.STA computed here from metadata.csv
    station = metadata.set_index("trace_name").loc[table["trace_name"]]
    keys = (station["station_network_code"] + "." + station["station_code"]).to_numpy()
    counts = pd.Series(keys).value_counts()
    assert station_table["n_stations"] == len(counts)
    listed = [r for r in rows if not r["bin"].endswith("other stations")]
    assert len(listed) == min(F.STATION_ROWS, len(counts))
    correct = pd.Series(eqnoise_run["pred"] == eqnoise_run["y"]).groupby(keys).sum()
    for r in listed:
        assert r["n"] == counts[r["bin"]]
        assert r["correct"] == correct[r["bin"]]
        assert r["accuracy"] == pytest.approx(correct[r["bin"]] / counts[r["bin"]])
    assert [r["n"] for r in listed] == sorted((r["n"] for r in listed), reverse=True)
    assert min(r["n"] for r in listed) >= counts.drop([r["bin"] for r in listed]).max()


def _ece(y, probs, bins=15):
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (confidence > low) & (confidence <= high) if b else confidence <= high
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_plot_legends_carry_auc_ap_and_ece(eqnoise_run, tmp_path):
    y, probs, names = eqnoise_run["y"], eqnoise_run["probs"], eqnoise_run["names"]
    base = pd.read_csv(eqnoise_run["run"] / "baseline_predictions.csv")
    base_probs = base[[prob_column(c) for c in names]].to_numpy()
    roc = report.plot_roc(y, probs, names, tmp_path / "roc.png", base_probs)
    pr = report.plot_pr(y, probs, names, tmp_path / "pr.png", base_probs)
    reliability = report.plot_reliability(y, probs, tmp_path / "rel.png", base_probs)
    for c, name in enumerate(names):
        assert f"{name} (deployed) AUC {roc_auc_score(y == c, probs[:, c]):.3f}" in roc
        assert f"{name} (forest alone) AUC {roc_auc_score(y == c, base_probs[:, c]):.3f}" in roc
        assert f"{name} (deployed) AP {average_precision_score(y == c, probs[:, c]):.3f}" in pr
    assert reliability == [
        f"deployed, ECE {_ece(y, probs):.3f}",
        f"forest alone, ECE {_ece(y, base_probs):.3f}",
    ]
    _png(tmp_path / "roc.png")


def test_first_lines_name_the_deployed_model_and_the_headline_table(eqnoise_run):
    m = eqnoise_run["metrics"]
    lines = eqnoise_run["report"].splitlines()
    assert lines[0].startswith("# quake training report")
    assert lines[2].startswith("**Deployed model (`model/`): the HybridViT ensemble and the random")
    assert f"the HybridViT with {HYBRID_WEIGHT:g} of the vote" in lines[2]
    assert "as `deploy.strategy: combined` asks" in lines[2]
    thresholds = m["deployed_decision"]["thresholds"]
    assert f"earthquake {thresholds[0]:.3f}, noise {thresholds[1]:.3f}" in lines[2]
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[4:9] if line.startswith("|")}
    folds = [f["event_level"]["folds"] for f in (m, m["hybridvit"], m["baseline"])]
    for label, block, event_folds in zip(
        ("deployed (each fold's own choice)", "HybridViT alone", "forest alone"),
        (m, m["hybridvit"], m["baseline"]),
        folds,
        strict=True,
    ):
        auc = block["event_level"]["aggregate"]["roc_auc"]
        worst = min(f["roc_auc"] for f in event_folds)
        assert f"{auc['mean']:.3f} ± {auc['std']:.3f} ({worst:.3f})" in rows[label], label


def _advice_metrics(model: str, weight: float, losses: dict) -> dict:
    def block(value):
        agg = {"macro_f1": {"mean": value, "std": 0.01}, "roc_auc": {"mean": value, "std": 0.02}}
        folds = [{"macro_f1": value, "roc_auc": value}, {"macro_f1": value - 0.1,
                 "roc_auc": value - 0.1}]  # fmt: skip
        return {"aggregate": agg, "folds": folds, "event_level": {"aggregate": agg, "folds": folds}}

    decision = {"model": model, "hybrid_weight": weight, "thresholds": [0.7, 0.3],
                "prior_power": 1.0, "event_log_loss": losses, "n_events": 12,
                "chosen_on": "out-of-fold"}  # fmt: skip
    return {
        **block(0.8),
        "classes": ["earthquake", "explosion"],
        "deploy": {"strategy": "auto"},
        "deployed_decision": decision,
        "hybridvit": block(0.6),
        "baseline": block(0.8),
    }


def test_the_report_says_first_when_the_forest_is_deployed():
    losses = {"0": 0.41, "0.4": 0.45, "1": 0.69}
    lines = report.deploy_advice(_advice_metrics("forest", 0.0, losses))
    assert lines[0].startswith(
        "**On this data the HybridViT does not help: the deployed model is the forest.**"
    )
    assert "chosen on the out-of-fold predictions of the 2 folds (12 events" in lines[0]
    assert "HybridViT weight 0: 0.410, HybridViT weight 0.4: 0.450" in lines[0]
    assert "earthquake 0.700, explosion 0.300" in lines[0]
    table = "\n".join(lines)
    assert "| HybridViT alone | 0.600 ± 0.010 (0.500) |" in table
    assert "| forest alone | 0.800 ± 0.010 (0.700) |" in table
    combined = report.deploy_advice(_advice_metrics("combined", 0.4, losses))[0]
    assert "does not help" not in combined
    assert "combined, the HybridViT with 0.4 of the vote" in combined
    alone = {**_advice_metrics("HybridViT", 1.0, {"1": 0.5}), "baseline": None}
    lines = report.deploy_advice(alone)
    assert "the HybridViT ensemble alone**, the only model trained" in lines[0]
    assert not any(line.startswith("| forest alone") for line in lines)


def _geometric_mean(hybrid: np.ndarray, forest: np.ndarray, w: float) -> np.ndarray:
    product = (hybrid + 1e-6) ** w * (forest + 1e-6) ** (1 - w)
    return product / product.sum(axis=1, keepdims=True)


def test_combined_metrics_and_model_are_the_geometric_mean_of_both(eqnoise_run, pnw, tmp_path):
    """The default deploy: metrics.json's ``combined`` figures and ``model/`` both give, per
    window, the normalised geometric mean of the HybridViT's and the baseline's probabilities,
    weighted by ``deploy.hybrid_weight``."""
    import obspy

    from quake.deploy.combined import CombinedClassifier
    from quake.deploy.ensemble import EventClassifier
    from quake.deploy.forest import BaselineClassifier

    run, names = eqnoise_run["run"], eqnoise_run["names"]
    columns = [prob_column(c) for c in names]
    ours = pd.read_csv(run / "hybridvit_predictions.csv").sort_values("index")
    theirs = pd.read_csv(run / "baseline_predictions.csv").sort_values("index")
    both = _geometric_mean(ours[columns].to_numpy(), theirs[columns].to_numpy(), HYBRID_WEIGHT)
    deployed_table = eqnoise_run["table"].sort_values("index")
    np.testing.assert_allclose(deployed_table[columns].to_numpy(), both, atol=1e-6)
    for entry in eqnoise_run["metrics"]["folds"]:
        assert entry["decision"]["hybrid_weight"] == HYBRID_WEIGHT
        rows = (ours["fold"] == entry["fold"]).to_numpy()
        y = ours["y_true"].to_numpy()[rows]
        predicted = (both[rows] / np.asarray(entry["decision"]["thresholds"])).argmax(axis=1)
        assert entry["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
        assert entry["roc_auc"] == pytest.approx(roc_auc_score(y, both[rows][:, 1]), abs=1e-9)

    deployed = quake.load(run)
    assert isinstance(deployed, CombinedClassifier)
    assert deployed.hybrid_weight == HYBRID_WEIGHT
    hybrid = EventClassifier.load(run / "model" / "hybridvit")
    forests = BaselineClassifier.load(run / "model" / "baseline")
    assert len(hybrid.models) == len(forests.forests) == 2
    stream = obspy.read(str(pnw / "waveforms" / "uw61362132" / "*.mseed"))
    result = deployed.classify(stream, origin_time="2018-04-11T20:55:29.39Z")
    used = result.stations[result.stations["status"] == "used"]
    assert len(used) > 0 and result.predicted_class in names
    windows = np.random.default_rng(0).normal(size=(6, 3, deployed.config.window_samples))
    expected = _geometric_mean(
        hybrid.predict_proba(windows), forests.predict_proba(windows), HYBRID_WEIGHT
    )
    np.testing.assert_allclose(deployed.predict_proba(windows), expected, atol=1e-6)

    # a folder saved before deploy.hybrid_weight existed: equal votes, as it was deployed
    older = tmp_path / "older"
    shutil.copytree(run / "model", older)
    manifest = json.loads((older / "classifier.json").read_text())
    del manifest["hybrid_weight"]
    (older / "classifier.json").write_text(json.dumps(manifest))
    equal = _geometric_mean(hybrid.predict_proba(windows), forests.predict_proba(windows), 0.5)
    np.testing.assert_allclose(quake.load(older).predict_proba(windows), equal, atol=1e-6)
    assert not np.allclose(np.log(equal), np.log(expected), atol=1e-2)  # the weight matters

    from quake.deploy.export import load_exportable

    assert isinstance(load_exportable(run), CombinedClassifier)  # exports whole (test_export)
    assert isinstance(load_exportable(run / "model" / "hybridvit"), EventClassifier)


def test_breakdowns_by_magnitude_distance_and_snr_on_a_crafted_table():
    from obspy.geodetics import gps2dist_azimuth

    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, n)
    p1 = np.clip(y * 0.6 + rng.uniform(0, 0.5, n), 0, 1)
    frame = F.predicted_frame(
        pd.DataFrame(
            {
                "index": np.arange(n),
                "fold": 0,
                "trace_name": [f"t{i}" for i in range(n)],
                "source_id": [f"e{i // 2}" for i in range(n)],
                "y_true": y,
                "prob_earthquake": 1 - p1,
                "prob_noise": p1,
            }
        ),
        ["earthquake", "noise"],
    )
    magnitude = rng.uniform(0.2, 3.9, n)
    magnitude[:5] = np.nan  # noise windows have none
    distance_km = rng.choice([5.0, 15.0, 35.0, 75.0, 150.0], n)  # well inside the bins
    metadata = pd.DataFrame(
        {
            "station_code": [f"S{i % 7}" for i in range(n)],
            "source_magnitude": magnitude,
            "source_latitude_deg": 46.0,
            "source_longitude_deg": -122.0,
            "station_latitude_deg": 46.0 + distance_km / 111.2,  # due north
            "station_longitude_deg": -122.0,
            "trace_snr_db": [f"[{a:.1f} {a + 2:.1f} {a + 4:.1f}]" for a in rng.uniform(-5, 50, n)],
        }
    )
    tables, missing = F.breakdowns(frame, metadata, ["earthquake", "noise"])
    assert missing == []
    by = {t["by"]: t for t in tables}
    assert set(by) == {"station", "magnitude", "distance", "snr"}
    for t in tables:
        assert sum(r["n"] for r in t["rows"]) == n, t["by"]
    assert by["magnitude"]["rows"][-1] == {**by["magnitude"]["rows"][-1], "bin": "n/a", "n": 5}
    # distances from the coordinates (obspy: within 1 % of those chosen) fall in their bins
    km = np.array(
        [
            gps2dist_azimuth(46.0, -122.0, lat, lon)[0] / 1000
            for lat, lon in metadata[["station_latitude_deg", "station_longitude_deg"]].to_numpy()
        ]
    )
    np.testing.assert_allclose(km, distance_km, rtol=0.01)
    assert by["distance"]["source"] == "source and station coordinates"
    rows = {r["bin"]: r["n"] for r in by["distance"]["rows"]}
    assert rows == {
        "[0, 10)": int((distance_km == 5).sum()),
        "[10, 20)": int((distance_km == 15).sum()),
        "[20, 50)": int((distance_km == 35).sum()),
        "[50, 100)": int((distance_km == 75).sum()),
        "[100, 200)": int((distance_km == 150).sum()),
    }
    # SNR is the mean of the three components
    snr = np.array(
        [np.mean([float(v) for v in s.strip("[]").split()]) for s in metadata["trace_snr_db"]]
    )
    for r in by["snr"]["rows"]:
        if r["bin"].startswith("<"):
            inside = snr < float(r["bin"][2:])
        elif r["bin"].startswith(">="):
            inside = snr >= float(r["bin"][3:])
        else:
            low, high = (float(x) for x in r["bin"].strip("[)").split(", "))
            inside = (snr >= low) & (snr < high)
        assert r["n"] == int(inside.sum()), r["bin"]
        assert r["accuracy"] == pytest.approx(
            float((frame["y_pred"] == frame["y_true"])[inside].mean())
        )
    assert all(not math.isnan(r["accuracy"]) for r in by["station"]["rows"])


def test_a_finished_run_is_rescored_at_any_hybrid_weight(eqnoise_run):
    """``combined_from_predictions`` (benchmarks/bench_combine.py) gives back the run's own
    threshold-free figures: the deployed combination's at its weight, the forest's at 0 and the
    HybridViT's at 1."""
    from quake.training.results import combined_from_predictions

    run, metrics = eqnoise_run["run"], eqnoise_run["metrics"]
    for weight, block in (
        (HYBRID_WEIGHT, metrics),
        (0.0, metrics["baseline"]),
        (1.0, metrics["hybridvit"]),
    ):
        again = combined_from_predictions(run, weight)
        for got, want in zip(again["folds"], block["folds"], strict=True):
            assert got["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-6)
            assert got["log_loss"] == pytest.approx(want["log_loss"], rel=1e-4)  # eps of 0/1


def test_bench_combine_prints_and_keeps_the_figures_of_each_weight(eqnoise_run, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_combine.py"
    spec = importlib.util.spec_from_file_location("bench_combine", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run, metrics = eqnoise_run["run"], eqnoise_run["metrics"]
    out = tmp_path / "w.json"
    assert script.main([f"eq={run}", "--weights", "0", str(HYBRID_WEIGHT), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["eq"]
    for weight, block in (("0.0", metrics["baseline"]), (str(HYBRID_WEIGHT), metrics)):
        want = [f["roc_auc"] for f in block["event_level"]["folds"]]
        assert figures[weight]["event ROC AUC"] == pytest.approx(want, abs=1e-6)
    assert "| 0.3 |" in capsys.readouterr().out
    assert script.main([str(tmp_path)]) == 2
    assert "not a finished training run" in capsys.readouterr().err
    assert script.main([str(run), "--weights", "1.5"]) == 2
    assert "--weights [1.5] out of range" in capsys.readouterr().err
