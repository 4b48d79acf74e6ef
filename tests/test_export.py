"""ONNX / TorchScript export: parity with EventClassifier.predict_proba (onnxruntime on CPU).

Tolerance: probabilities within 1e-5 absolute (quake.deploy.export.PARITY_ATOL) of predict_proba; a
float32 graph of the same operations measures ~1e-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import obspy
import pytest
import torch
from scipy.signal import butter, sosfiltfilt

from quake.data import PreprocessConfig, WaveformDataAdapter, open_dataset, spectrogram_batch
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
from quake.deploy.onnx import read_export
from quake.models import Backbone, HybridViT

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
    """With the filters on, the graph gives what the members give on windows filtered outside
    it by obspy and scipy, and the sidecar names the filter settings."""
    classifier, out = exported["classifier"], exported["dir"]
    config = classifier.config
    preprocess = read_export(out)["preprocess"]
    if not config.filters_enabled:  # recorded as off
        assert (preprocess["detrend"], preprocess["taper_fraction"]) == ("none", 0.0)
        assert preprocess["bandpass_hz"] is None
        return
    assert preprocess["detrend"] == "linear" and preprocess["taper_fraction"] == 0.05
    assert preprocess["bandpass_hz"] == [1.0, 20.0] and preprocess["bandpass_order"] == 4
    x = parity_windows(config, 4, seed=11)
    outside = np.zeros_like(x)
    sos = butter(4, (1.0, 20.0), btype="bandpass", fs=config.sampling_rate_hz, output="sos")
    for index in np.ndindex(x.shape[:-1]):
        trace = obspy.Trace(x[index].astype(np.float64), {"sampling_rate": 100.0})
        trace.detrend("linear").taper(max_percentage=0.05, type="hann")
        outside[index] = sosfiltfilt(sos, trace.data)
    unfiltered = EventClassifier(classifier.models, PreprocessConfig())
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
    with pytest.raises(ValueError, match="holds an EventClassifier with its own preprocessing"):
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
    assert "onnx: model.onnx, max |diff| vs PyTorch" in printed
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
