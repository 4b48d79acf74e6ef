"""A whole cross-validated run on a tiny generated set: files, schema, leak-free folds, metrics
that scikit-learn reproduces from the saved predictions, resume, and the deployable model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, roc_auc_score
from tiny_run import tiny_run_config

from quake.data import synthetic
from quake.deploy.ensemble import EventClassifier
from quake.training import train
from quake.training.metrics import SCALAR_METRICS

REPO = Path(__file__).resolve().parents[1]
PLOTS = ["confusion_matrix.png", "roc.png", "pr.png", "learning_curves.png", "reliability.png"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny"
    return synthetic.generate_synthetic_set(
        path, n_events_per_class=12, stations_per_event=(1, 2), seed=3
    )


def _config(data, out, **extra):
    return tiny_run_config(data, out, **extra)


@pytest.fixture(scope="module")
def finished_run(tiny_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    return train(_config(tiny_set, out))


def test_run_folder_holds_every_report_file(finished_run):
    run = finished_run.run_dir
    for name in [
        "metrics.json", "report.md", "config.yaml", "fold_indices.json", "versions.json",
        "items.csv", "predictions.csv", "baseline_predictions.csv", "train.log", *PLOTS,
    ]:  # fmt: skip
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0, name
    assert (run / "model" / "classifier.json").is_file()
    report = (run / "report.md").read_text()
    for plot in PLOTS:
        assert f"]({plot})" in report
    assert "baseline" in report and "± " in report
    # the generated set names magnitude, distance and SNR: tables and their plot
    for name in ("class_mean_spectrograms.png", "performance_by.png"):
        assert (run / name).stat().st_size > 0 and f"]({name})" in report, name
    for heading in ("station", "magnitude", "epicentral distance (km)", "SNR (dB)"):
        assert f"### By {heading}" in report, heading
    assert "Deployed model (`model/`)" in report.splitlines()[2]
    card = json.loads((run / "model" / "card.json").read_text())
    assert f"- training events: {len(card['training_events'])}, SHA-256" in report
    assert f"`{card['training_events_sha256'][:16]}...`" in report
    versions = json.loads((run / "versions.json").read_text())
    assert {"python", "torch", "timm", "numpy", "sklearn", "obspy", "quake"} <= set(versions)


def test_metrics_json_schema(finished_run):
    m = json.loads((finished_run.run_dir / "metrics.json").read_text())
    classes = m["classes"]
    assert classes == ["earthquake", "explosion", "noise"]
    assert len(m["folds"]) == 2
    for fold in m["folds"]:
        for key in ["n_train", "n_test", *SCALAR_METRICS, "per_class", "confusion_matrix"]:
            assert key in fold, key
        for name in classes:
            assert set(fold["per_class"][name]) == {"precision", "recall", "f1", "support"}
        assert np.asarray(fold["confusion_matrix"]).shape == (3, 3)
    for section in (m["aggregate"], m["event_level"]["aggregate"], m["baseline"]["aggregate"]):
        for name in SCALAR_METRICS:
            assert set(section[name]) >= {"mean", "std"}
    assert m["pretrained"]["source"] == "none" and m["pretrained"]["requested"] == "none"
    assert m["timings"]["total_this_process_s"] > 0
    assert m["data"]["n_traces"] == sum(f["n_test"] for f in m["folds"])
    assert "dropped" in m and m["deploy"]["members"] == 2


def test_no_event_on_two_sides_of_any_split(finished_run):
    run = finished_run.run_dir
    items = pd.read_csv(run / "items.csv")
    folds = json.loads((run / "fold_indices.json").read_text())["folds"]
    tested = []
    for fold in folds:
        sides = {k: set(items.loc[fold[k], "source_id"]) for k in ("train", "val", "test")}
        assert not sides["train"] & sides["val"]
        assert not sides["train"] & sides["test"]
        assert not sides["val"] & sides["test"]
        tested += fold["test"]
    assert sorted(tested) == list(range(len(items)))


def test_metrics_agree_with_sklearn_on_saved_predictions(finished_run):
    run = finished_run.run_dir
    m = json.loads((run / "metrics.json").read_text())
    prob_cols = ["prob_" + c.replace(" ", "_") for c in m["classes"]]
    sections = (
        ("predictions.csv", m, [f["decision"] for f in m["folds"]]),
        ("hybridvit_predictions.csv", m["hybridvit"], m["hybridvit"]["decisions"]),
        ("baseline_predictions.csv", m["baseline"], m["baseline"]["decisions"]),
    )
    for name, section, decisions in sections:
        table = pd.read_csv(run / name)
        f1s, bals = [], []
        for k, fold in enumerate(section["folds"]):
            part = table[table["fold"] == k]
            y, probs = part["y_true"].to_numpy(), part[prob_cols].to_numpy()
            pred = (probs / np.asarray(decisions[k]["thresholds"])).argmax(axis=1)
            if "predicted_class" in part:  # the deployed model's table says what it decided
                assert part["predicted_class"].tolist() == [m["classes"][p] for p in pred]
            assert fold["n_test"] == len(part)
            assert fold["macro_f1"] == pytest.approx(
                f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0)
            )
            assert fold["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
            assert fold["roc_auc"] == pytest.approx(
                roc_auc_score(y, probs, multi_class="ovr"), abs=1e-9
            )
            clipped = np.clip(probs, 1e-7, 1)
            clipped /= clipped.sum(axis=1, keepdims=True)
            assert fold["log_loss"] == pytest.approx(
                log_loss(y, clipped, labels=[0, 1, 2]), rel=1e-4
            )
            f1s.append(fold["macro_f1"])
            bals.append(fold["balanced_accuracy"])
        assert section["aggregate"]["macro_f1"]["mean"] == pytest.approx(np.mean(f1s))
        assert section["aggregate"]["macro_f1"]["std"] == pytest.approx(np.std(f1s))


def test_deployable_model_reproduces_each_fold_model(finished_run, tiny_set):
    """Member k of model/ is fold k's model: classifying its test traces with the saved
    preprocessing gives the saved fold predictions."""
    from quake.data import WaveformDataAdapter, open_dataset

    run = finished_run.run_dir
    classifier = EventClassifier.load(run)
    assert len(classifier.models) == 2
    adapter = WaveformDataAdapter(
        open_dataset(tiny_set, classifier.config), config=classifier.config
    )
    waveforms = adapter.load_waveforms()
    table = pd.read_csv(run / "hybridvit_predictions.csv")
    prob_cols = ["prob_" + c.replace(" ", "_") for c in classifier.class_names]
    for k in (0, 1):
        part = table[table["fold"] == k]
        member = EventClassifier([classifier.models[k]], classifier.config, classifier.class_names)
        probs = member.predict_proba(waveforms[part["index"].to_numpy()])
        np.testing.assert_allclose(probs, part[prob_cols].to_numpy(), rtol=1e-4, atol=1e-5)
    ensemble = classifier.predict_proba(waveforms[:4])
    np.testing.assert_allclose(ensemble.sum(axis=1), 1.0, rtol=1e-6)


def test_resume_skips_finished_folds_and_gives_the_same_metrics(finished_run, tiny_set, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(finished_run.run_dir, out)
    (out / "folds" / "fold_1" / "fold.json").unlink()  # fold 1 was interrupted
    for name in ("metrics.json", "report.md"):
        (out / name).unlink()
    fold0_model = out / "folds" / "fold_0" / "model" / "model.safetensors"
    mtime = fold0_model.stat().st_mtime_ns
    result = train(_config(tiny_set, out))
    assert result.metrics["resumed_folds"] == [0]
    assert fold0_model.stat().st_mtime_ns == mtime  # fold 0 was not trained again
    before = finished_run.metrics
    for name in SCALAR_METRICS:
        a, b = before["aggregate"][name]["mean"], result.metrics["aggregate"][name]["mean"]
        assert b == pytest.approx(a, abs=1e-6), name


def test_resume_with_another_config_is_refused(finished_run, tiny_set, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(finished_run.run_dir, out)
    with pytest.raises(ValueError, match=r"cannot resume .*optim\.lr: 0\.0005 -> 0\.0002"):
        train(_config(tiny_set, out, **{"optim.lr": 2e-4}))
    # the run section may change between attempts
    train(_config(tiny_set, out, **{"run.eval_batch_size": 32}))


def test_a_run_folder_has_one_writer(finished_run, tiny_set, tmp_path):
    import json
    import os
    import socket

    from quake.training.run import RUN_LOCK_FILE

    out = tmp_path / "locked"
    shutil.copytree(finished_run.run_dir, out)
    assert not (finished_run.run_dir / RUN_LOCK_FILE).exists()  # released when the run ended
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "started": "earlier"}
    (out / RUN_LOCK_FILE).write_text(json.dumps(holder))  # a live process holds it
    with pytest.raises(
        ValueError,
        match=rf"run folder .* is being written by another quake process \(pid {os.getppid()} on",
    ):
        train(_config(tiny_set, out))
    assert json.loads((out / RUN_LOCK_FILE).read_text()) == holder  # not taken from its holder


def test_folds_in_worker_processes_match_serial_training(finished_run, tiny_set, tmp_path):
    """Two folds trained side by side in two processes give the predictions of one process
    training them one after the other (same seeds, one thread each)."""
    serial = train(_config(tiny_set, tmp_path / "serial", **{"run.num_threads": 1}))
    parallel = train(
        _config(tiny_set, tmp_path / "parallel", **{"run.num_threads": 2, "run.parallel_folds": 2})
    )
    assert parallel.metrics["training"]["parallel_folds"] == 2
    assert serial.metrics["training"]["parallel_folds"] == 1
    a = pd.read_csv(serial.run_dir / "predictions.csv")
    b = pd.read_csv(parallel.run_dir / "predictions.csv")
    cols = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-6, atol=1e-7)


def test_out_folder_that_is_not_a_run_is_refused(tiny_set, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a quake run folder"):
        train(_config(tiny_set, out))


@pytest.mark.slow
def test_command_line_end_to_end(tiny_set, tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable, str(REPO / "scripts" / "train.py"), "--data", str(tiny_set),
        "--backbone", "tiny", "--depth", "1", "--folds", "2", "--epochs", "2",
        "--batch-size", "16", "--pretrained", "auto", "--out", str(out), "--device", "cpu",
        "--set", "baseline.n_estimators=20",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "macro_f1" in done.stdout and str(out) in done.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["pretrained"]["requested"] == "auto"
    if m["pretrained"]["source"] == "none":  # offline: one loud warning, then random init
        assert done.stderr.count("PRETRAINED WEIGHTS UNAVAILABLE") == 1
    assert (out / "model" / "classifier.json").is_file()


def test_the_last_log_line_names_the_deployed_model_first(finished_run):
    """A last line that led with the HybridViT alone read as the figure of what ``model/``
    holds."""
    metrics = finished_run.metrics
    decision = metrics["deployed_decision"]
    chosen = decision["model"] + (
        f" {decision['hybrid_weight']:g}" if decision["model"] == "combined" else ""
    )
    done = [
        line
        for line in (finished_run.run_dir / "train.log").read_text().splitlines()
        if "quake.training.run: done in" in line
    ]
    assert len(done) == 1

    def figure(block):
        agg = block["aggregate"]["macro_f1"]
        return f"{agg['mean']:.3f} ± {agg['std']:.3f}"

    assert (
        f"macro-F1 deployed ({chosen}) {figure(metrics)}, "
        f"HybridViT {figure(metrics['hybridvit'])}, forest {figure(metrics['baseline'])}; run folder"
    ) in done[0]
