"""ONNX / TorchScript export: parity with EventClassifier.predict_proba (onnxruntime on CPU).

Tolerance: probabilities within 1e-5 absolute (quake.deploy.export.PARITY_ATOL) of predict_proba; a
float32 graph of the same operations measures ~1e-7.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import obspy
import pytest
import torch
from scipy.signal import butter, sosfiltfilt

import quake
from quake.data import PreprocessConfig, WaveformDataAdapter, open_dataset, spectrogram_batch
from quake.data.config import FILTERS_OFF
from quake.deploy.combined import CombinedClassifier
from quake.deploy.ensemble import EventClassifier
from quake.deploy.export import (
    PARITY_ATOL,
    SIDECAR_FILE,
    export_classifier,
    load_exportable,
    onnx_predict_proba,
    parity_windows,
    torchscript_predict_proba,
)
from quake.deploy.forest import BaselineClassifier, forest_arrays, forest_graphs
from quake.deploy.onnx import OnnxClassifier, read_export
from quake.models import Backbone, HybridViT
from quake.models.context import FEATURES as CONTEXT_FEATURES
from quake.models.context import ContextModel
from quake.models.forest import forest_estimator, spectral_features

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ["earthquake", "explosion", "noise"]


def _members(
    config: PreprocessConfig, n: int, seed: int = 0, fusion: bool = False
) -> list[HybridViT]:
    torch.manual_seed(seed)
    return [
        HybridViT(
            backbone=Backbone.TINY,
            depth=1,
            num_classes=len(CLASSES),
            img_size=config.spectrogram_shape[1:],
            class_names=CLASSES,
            fusion=fusion,
        )
        for _ in range(n)
    ]


# detrend, taper and band-pass as seismologists use them (1-20 Hz, QuakeXNet's band): the export
# tests run with them too, since the filter is part of the graph; so is the fusion head's
# physical summary of the spectrogram (quake.models.fusion), exported with them
FILTERS = PreprocessConfig(detrend="linear", taper_fraction=0.05, bandpass_hz=(1.0, 20.0))


def _run(tmp_path_factory, config: PreprocessConfig, fusion: bool = False) -> Path:
    """A run folder as training leaves it: ``<run>/model/`` holding a 2-member ensemble."""
    run = tmp_path_factory.mktemp("run")
    EventClassifier(_members(config, 2, fusion=fusion), config).save(run / "model")
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _run(tmp_path_factory, PreprocessConfig())


@pytest.fixture(scope="module", params=["default", "filters+fusion"])
def exported(request, run_dir, tmp_path_factory):
    if request.param == "default":
        run = run_dir
    else:
        run = _run(tmp_path_factory, FILTERS, fusion=True)
        assert all(m.fusion is not None for m in load_exportable(run).models)
    classifier = load_exportable(run)
    out = tmp_path_factory.mktemp("export") / "exported"
    result = export_classifier(classifier, out, source=str(run))
    return {"classifier": classifier, "result": result, "dir": out}


def test_onnx_matches_predict_proba_on_new_batches(exported):
    classifier, out = exported["classifier"], exported["dir"]
    for batch_size in (1, 7, 33):  # none of them the traced size: the batch axis is dynamic
        x = parity_windows(classifier.config, batch_size, seed=100 + batch_size)
        expected = classifier.predict_proba(x)
        got = onnx_predict_proba(out / "model.onnx", x)
        assert got.shape == (batch_size, len(CLASSES))
        np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_graph_averages_the_members(exported):
    """One graph for the ensemble: equal to the mean of each member's own probabilities."""
    classifier, out = exported["classifier"], exported["dir"]
    x = parity_windows(classifier.config, 4, seed=7)
    per_member = [
        EventClassifier([m], classifier.config).predict_proba(x) for m in classifier.models
    ]
    assert np.abs(per_member[0] - per_member[1]).max() > 1e-3  # the members really differ
    np.testing.assert_allclose(
        onnx_predict_proba(out / "model.onnx", x), np.mean(per_member, axis=0), atol=PARITY_ATOL
    )


def test_torchscript_matches_predict_proba(exported):
    classifier, result = exported["classifier"], exported["result"]
    if "torchscript" in result.skipped:
        pytest.skip(f"TorchScript not written: {result.skipped['torchscript']}")
    x = parity_windows(classifier.config, 6, seed=3)
    got = torchscript_predict_proba(exported["dir"] / "model.torchscript.pt", x)
    np.testing.assert_allclose(got, classifier.predict_proba(x), atol=PARITY_ATOL, rtol=0)


def test_sidecar_holds_classes_preprocessing_and_parity(exported):
    classifier, out = exported["classifier"], exported["dir"]
    sidecar = read_export(out)
    assert sidecar == json.loads((out / SIDECAR_FILE).read_text())
    assert sidecar["class_names"] == CLASSES
    assert PreprocessConfig.from_dict(sidecar["preprocess"]) == classifier.config
    assert sidecar["model_id"] == classifier.model_id and sidecar["members"] == 2
    assert sidecar["input"]["shape"] == ["batch", 3, classifier.config.window_samples]
    assert sidecar["output"]["shape"] == ["batch", len(CLASSES)]
    assert sidecar["files"]["onnx"] == "model.onnx"
    assert 0 <= sidecar["parity"]["onnx"]["max_abs_diff"] <= PARITY_ATOL
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [SIDECAR_FILE, *sidecar["files"].values()]
    )


def test_the_filters_are_in_the_graph(exported):
    """The graph gives what the members give on windows filtered outside it by obspy and
    scipy, and the sidecar names the filter settings (the default run: the default 1 Hz
    band-pass, its open high corner at 0.9 x Nyquist; the other: QuakeXNet's 1-20 Hz)."""
    classifier, out = exported["classifier"], exported["dir"]
    config = classifier.config
    preprocess = read_export(out)["preprocess"]
    assert config.filters_enabled
    assert preprocess["detrend"] == "linear" and preprocess["taper_fraction"] == 0.05
    assert preprocess["bandpass_hz"] == list(config.bandpass_hz)
    assert preprocess["bandpass_order"] == 4
    low, high = config.bandpass_hz
    high = 0.9 * config.sampling_rate_hz / 2 if high is None else high
    x = parity_windows(config, 4, seed=11)
    outside = np.zeros_like(x)
    sos = butter(4, (low, high), btype="bandpass", fs=config.sampling_rate_hz, output="sos")
    for index in np.ndindex(x.shape[:-1]):
        trace = obspy.Trace(x[index].astype(np.float64), {"sampling_rate": 100.0})
        trace.detrend("linear").taper(max_percentage=0.05, type="hann")
        outside[index] = sosfiltfilt(sos, trace.data)
    unfiltered = EventClassifier(classifier.models, config.replace(**FILTERS_OFF))
    got = onnx_predict_proba(out / "model.onnx", x)
    np.testing.assert_allclose(got, unfiltered.predict_proba(outside), atol=1e-4, rtol=0)
    assert np.abs(got - unfiltered.predict_proba(x)).max() > 1e-3  # the filter matters here


def test_onnx_on_real_windows(exported, real_data_dir):
    """Windows of the real eqnoise-3c set, cut by the adapter as training does."""
    path = real_data_dir / "eqnoise-3c"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    classifier = exported["classifier"]
    dataset = open_dataset(path, classifier.config).filter(np.arange(40))
    windows = WaveformDataAdapter(dataset, config=classifier.config).load_waveforms()
    np.testing.assert_allclose(
        onnx_predict_proba(exported["dir"] / "model.onnx", windows),
        classifier.predict_proba(windows),
        atol=PARITY_ATOL,
        rtol=0,
    )


def test_export_leaves_the_eager_spectrogram_working(exported):
    """Tracing must not leave a traced STFT window in spectrogram_batch's cache."""
    config = exported["classifier"].config
    x = torch.from_numpy(parity_windows(config, 2, seed=5))
    spec = spectrogram_batch(x, config)
    assert type(spec) is torch.Tensor and torch.isfinite(spec).all()


def test_single_hybrid_vit_folder_with_its_preprocessing(tmp_path):
    config = PreprocessConfig(window_s=10.24, stft_nperseg=32, stft_hop=16)
    model = _members(config, 1, seed=3)[0]
    model.save(tmp_path / "vit")
    with pytest.raises(ValueError, match=r"takes \(17, 63\) spectrograms; the preprocessing makes"):
        load_exportable(tmp_path / "vit")  # the default PreprocessConfig does not fit it
    classifier = load_exportable(tmp_path / "vit", config)
    result = export_classifier(classifier, tmp_path / "out", formats=["onnx"])
    assert set(result.files) == {"onnx"}
    x = parity_windows(config, 3, seed=9)
    np.testing.assert_allclose(
        onnx_predict_proba(tmp_path / "out" / "model.onnx", x),
        classifier.predict_proba(x),
        atol=PARITY_ATOL,
    )
    assert read_export(tmp_path / "out")["preprocess"]["window_s"] == 10.24


def test_export_validates_its_arguments(run_dir, exported, tmp_path):
    classifier = exported["classifier"]
    with pytest.raises(ValueError, match=r"unknown export format\(s\) \['tflite'\]"):
        export_classifier(classifier, tmp_path / "a", formats=["tflite"])
    with pytest.raises(ValueError, match="atol must be > 0, got 0"):
        export_classifier(classifier, tmp_path / "a", atol=0)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export_classifier(classifier, exported["dir"])
    with pytest.raises(FileNotFoundError, match="nothing to export in"):
        load_exportable(tmp_path)
    with pytest.raises(ValueError, match="holds a classifier with its own preprocessing"):
        load_exportable(run_dir, PreprocessConfig())
    with pytest.raises(FileNotFoundError, match="expected a folder written by scripts/export.py"):
        read_export(tmp_path)
    assert not (tmp_path / "a").exists()


def _load_cli():
    from quake.commands import export

    return export


def test_cli_exports_and_reports_errors(run_dir, tmp_path, capsys):
    cli = _load_cli()
    out = tmp_path / "cli"
    assert cli.main(["--model", str(run_dir), "--out", str(out), "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    assert "onnx export: max |diff| vs predict_proba" in printed
    assert read_export(out)["source"] == str(run_dir)
    assert cli.main(["--model", str(run_dir), "--out", str(out), "--format", "onnx"]) == 2
    assert "exists; pass overwrite=True" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "nothing to export" in capsys.readouterr().err
    # --overwrite never replaces the model it exports, nor a folder holding it
    for target in (run_dir, run_dir.parent, run_dir / "model"):
        args = ["--model", str(run_dir), "--out", str(target), "--overwrite", "--format", "onnx"]
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "--model" in err and "expected an output apart" in err
    assert (run_dir / "model" / "classifier.json").is_file()
    assert not list(tmp_path.glob(".cli.*.tmp"))  # no staging folder left behind


def test_cli_reads_preprocessing_from_a_training_config(tmp_path):
    cli = _load_cli()
    (tmp_path / "train.yaml").write_text(
        "seed: 1\ndata:\n  preprocess:\n    window_s: 10.24\n    stft_hop: 16\n"
    )
    assert cli.read_preprocess(str(tmp_path / "train.yaml")) == PreprocessConfig(
        window_s=10.24, stft_hop=16
    )
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="holds list; expected a mapping"):
        cli.read_preprocess(str(tmp_path / "list.yaml"))


# --------------------------------------------------------------- the forests and their combination
@pytest.fixture(scope="module")
def real_windows(real_data_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Trimmed windows and class indices (CLASSES) of the real pnw-eqex and eqnoise-3c sets."""
    config = PreprocessConfig()
    out = {}
    for name in ("pnw-eqex", "eqnoise-3c"):
        if not (real_data_dir / name).is_dir():
            pytest.skip(f"{real_data_dir / name} not found")
        adapter = WaveformDataAdapter(open_dataset(real_data_dir / name, config), config=config)
        labels = np.array([CLASSES.index(t) for t in adapter.metadata["source_type"]])
        out[name] = (adapter.load_waveforms(), labels)
    return out


def _baseline(config: PreprocessConfig, real_windows, n_estimators: int = 40):
    """Two fold forests as training leaves them: one fitted on eqnoise-3c alone (it never sees
    'explosion'), one on both sets."""
    quakes, quake_labels = real_windows["pnw-eqex"]
    noise, noise_labels = real_windows["eqnoise-3c"]
    folds = [(noise, noise_labels),
             (np.concatenate([noise, quakes]), np.concatenate([noise_labels, quake_labels]))]  # fmt: skip
    forests = [
        forest_estimator(n_estimators=n_estimators, seed=k).fit(
            spectral_features(x, config.sampling_rate_hz), y
        )
        for k, (x, y) in enumerate(folds)
    ]
    return BaselineClassifier(
        [forest_arrays(f, len(CLASSES)) for f in forests],
        config,
        CLASSES,
        model_id="real-rf",
        graphs=forest_graphs(forests),
    )


@pytest.fixture(scope="module")
def combined_run(tmp_path_factory, real_windows) -> Path:
    """A run folder deploying the combined model (2 HybridViTs + 2 forests)."""
    config = PreprocessConfig()
    hybrid = EventClassifier(_members(config, 2), config, CLASSES, model_id="real-vit")
    run = tmp_path_factory.mktemp("combined-run")
    CombinedClassifier(hybrid, _baseline(config, real_windows)).save(run / "model")
    return run


def test_combined_export_matches_on_real_windows(combined_run, real_windows, tmp_path):
    """One export folder; loaded by quake.load, it gives the Python model's probabilities on
    every real pnw-eqex and eqnoise-3c window."""
    classifier = load_exportable(combined_run)
    assert isinstance(classifier, CombinedClassifier)
    assert classifier.baseline.graphs[0].classes == (0, 2)  # fold 0 never saw an explosion
    result = export_classifier(classifier, tmp_path / "export")
    assert result.skipped["torchscript"].startswith("TorchScript holds a HybridViT ensemble only")
    exported = quake.load(tmp_path / "export")
    assert isinstance(exported, OnnxClassifier) and exported.class_names == CLASSES
    assert exported.config == classifier.config
    for name, (windows, _) in real_windows.items():
        expected = classifier.predict_proba(windows)
        got = exported.predict_proba(windows)
        assert got.shape == (len(windows), len(CLASSES)), name
        np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0, err_msg=name)
    # both parts vote: the export differs from either part alone
    windows = real_windows["pnw-eqex"][0][:50]
    for part in (classifier.hybrid, classifier.baseline):
        assert np.abs(exported.predict_proba(windows) - part.predict_proba(windows)).max() > 1e-3
    sidecar = read_export(tmp_path / "export")
    assert sidecar["kind"] == "combined" and sidecar["hybrid_weight"] == classifier.hybrid_weight
    assert sidecar["features"]["function"] == "quake.models.forest.spectral_features"
    assert sidecar["forests"]["files"] == ["forest_0.onnx", "forest_1.onnx"]
    assert 0 <= sidecar["parity"]["onnx"]["max_abs_diff"] <= PARITY_ATOL
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(
        [SIDECAR_FILE, "model.onnx", "forest_0.onnx", "forest_1.onnx", "forest_leaves.safetensors"]
    )


def test_cli_exports_a_combined_run(combined_run, tmp_path, capsys):
    out = tmp_path / "cli"
    assert _load_cli().main(["--model", str(combined_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(2 HybridViT member(s) + 2 forest(s))" in printed
    assert "forests: forest_0.onnx, forest_1.onnx" in printed
    assert "onnx export: max |diff| vs predict_proba" in printed
    assert read_export(out)["source"] == str(combined_run)
    assert isinstance(quake.load(out), OnnxClassifier)


def test_baseline_only_model_exports(combined_run, real_windows, tmp_path):
    baseline = BaselineClassifier.load(combined_run / "model" / "baseline")
    export_classifier(baseline, tmp_path / "export", formats=["onnx"])
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(
        [SIDECAR_FILE, "forest_0.onnx", "forest_1.onnx", "forest_leaves.safetensors"]
    )
    exported = quake.load(tmp_path / "export")
    windows = real_windows["eqnoise-3c"][0]
    np.testing.assert_allclose(
        exported.predict_proba(windows), baseline.predict_proba(windows), atol=PARITY_ATOL, rtol=0
    )
    assert read_export(tmp_path / "export")["kind"] == "baseline"
    with pytest.raises(ValueError, match="exports to ONNX only"):
        export_classifier(baseline, tmp_path / "ts", formats=["torchscript"])


def test_context_trained_model_is_refused(combined_run, tmp_path):
    classifier = load_exportable(combined_run)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, len(CONTEXT_FEATURES)))
    classifier.context_models = [ContextModel.fit(features, np.arange(20) % 2, 3, None)]
    classifier.save(tmp_path / "model")
    with pytest.raises(ValueError, match="trained with catalog context, which needs catalog"):
        export_classifier(load_exportable(tmp_path), tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_forests_saved_without_their_graphs_are_refused(combined_run, tmp_path, capsys):
    """A model folder from before the forests' ONNX graphs still loads, but does not export."""
    old = tmp_path / "old"
    shutil.copytree(combined_run, old)
    manifest_path = old / "model" / "baseline" / "classifier.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["onnx"]
    manifest_path.write_text(json.dumps(manifest))
    for graph in (old / "model" / "baseline").glob("forest_*.onnx"):
        graph.unlink()
    assert quake.load(old).baseline.graphs is None  # classifies as before
    assert _load_cli().main(["--model", str(old), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "saved without their ONNX graphs" in err and "retrain it" in err
    assert len(err.strip().splitlines()) == 1
