"""quake pretrain: the masked-spectrogram objective, the run folder (save, resume, refuse), the
encoder in a HybridViT (every tensor accounted for, mismatches refused), and the unlabelled
sources (plain miniSEED tree, catalog without event types)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import obspy
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from quake.data import PreprocessConfig, WaveformDataAdapter, spectrogram_batch
from quake.data.readers.catalog import CatalogDataset
from quake.data.readers.mseed_tree import MseedTreeDataset
from quake.models import HybridViT
from quake.models.encoder import ENCODER_FILE, PRETRAIN_FILE, save_encoder
from quake.pretrain import MaskedSpectrogramModel, load_pretrain_config, pretrain
from quake.pretrain.data import open_unlabelled
from quake.pretrain.objective import PATCH, normalise_patches, patchify, random_masking

# 5.12 s windows at 100 Hz, 32-sample STFT: (3, 17, 16) spectrograms, a 3x2 token grid
SMALL = {"window_s": 5.12, "stft_nperseg": 32, "stft_hop": 32}
SMALL_IMG = (17, 16)


def _waves(n: int, seed: int = 0) -> torch.Tensor:
    """Windows with structure to learn: a decaying tone of random pitch and onset, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 100.0
    out = np.zeros((n, 3, 512), dtype=np.float32)
    for i in range(n):
        onset, f = rng.uniform(0.5, 3.0), rng.uniform(3.0, 30.0)
        env = np.where(t > onset, np.exp(-(t - onset) * rng.uniform(0.5, 2.0)), 0.0)
        for c in range(3):
            out[i, c] = env * np.sin(2 * np.pi * f * t + c) + 0.1 * rng.standard_normal(512)
    return torch.from_numpy(out)


def _spectrograms(n: int, seed: int = 0) -> torch.Tensor:
    return spectrogram_batch(_waves(n, seed), PreprocessConfig(**SMALL))


# --- the objective ------------------------------------------------------------------------------
def test_patches_are_the_token_cells_and_normalised_over_the_inside_pixels():
    spec = torch.randn(2, 3, 33, 32)
    patches, inside = patchify(spec, (5, 4))
    assert patches.shape == (2, 20, 3 * PATCH * PATCH)
    # cell (row 1, column 2) is token 1 * 4 + 2, pixels rows 8..15, columns 16..23, C first
    assert torch.equal(patches[:, 6], spec[:, :, 8:16, 16:24].reshape(2, -1))
    # the last row of cells overhangs the 33 rows by 7: one row of 8 pixels per channel inside
    assert int(inside[16].sum()) == 3 * 8 and int(inside[0].sum()) == 3 * 64
    normed = normalise_patches(patches, inside)
    for cell in (0, 17):
        values = normed[0, cell][inside[cell]]
        assert abs(float(values.mean())) < 1e-5
        assert float(values.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
        assert torch.all(normed[0, cell][~inside[cell]] == 0)


def test_masked_cells_never_reach_the_encoder():
    """Pixels of the masked cells are hidden from the stem: changing them changes the target,
    never the prediction (the stem's receptive field would otherwise leak them)."""
    torch.manual_seed(0)
    model = MaskedSpectrogramModel(HybridViT(depth=1, img_size=(33, 32)), mask_ratio=0.6).eval()
    spec = torch.rand(4, 3, 33, 32)
    keep, masked = random_masking(
        4, model.num_patches, model.keep, torch.Generator().manual_seed(1)
    )
    assert keep.shape == (4, 8) and masked.sum(1).tolist() == [12] * 4
    hidden = masked.view(4, 1, 5, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)[:, :, :33]
    changed = spec + 5.0 * torch.rand_like(spec) * hidden
    with torch.no_grad():
        a = model(spec, masking=(keep, masked))
        b = model(changed, masking=(keep, masked))
    assert torch.equal(a.prediction, b.prediction)
    assert not torch.allclose(a.target[masked], b.target[masked])
    assert torch.equal(a.target[~masked], b.target[~masked])


def fit_on_a_tiny_set(model, held_out_loss, training_loss, steps: int) -> tuple[float, float]:
    """``steps`` AdamW steps of ``training_loss(generator)`` -> the ``held_out_loss()`` before and
    after (eval mode, no grad). Every part of the encoder (stem, CLS token, position embedding,
    blocks) must have moved from its own initial value."""

    def held() -> float:
        model.eval()
        with torch.no_grad():
            loss = float(held_out_loss())
        model.train()
        return loss

    initial = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    before = held()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = training_loss(generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = model.encoder.state_dict()
    for key in ("stem.0.weight", "cls_token", "pos_embed", "blocks.0.attn.qkv.weight"):
        assert not torch.allclose(trained[key], initial[key]), key
    return before, held()


def test_the_objective_learns_on_a_tiny_set():
    torch.manual_seed(0)
    model = MaskedSpectrogramModel(HybridViT(depth=1, img_size=SMALL_IMG), mask_ratio=0.5)
    spec = _spectrograms(32)
    fixed = random_masking(32, model.num_patches, model.keep, torch.Generator().manual_seed(9))
    before, after = fit_on_a_tiny_set(
        model,
        lambda: model(spec, masking=fixed).loss,
        lambda generator: model(spec, generator=generator).loss,
        steps=40,
    )
    assert after < 0.8 * before, (before, after)  # measured: 1.35 -> 0.98


# --- the run folder -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_tree(real_data_dir, tmp_path_factory):
    """Six event folders of unlabelled-pnw copied into a plain tree (no catalog)."""
    source = real_data_dir / "unlabelled-pnw" / "waveforms"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    root = tmp_path_factory.mktemp("tree")
    for event in sorted(p for p in source.iterdir() if p.is_dir())[:6]:
        shutil.copytree(event, root / event.name)
    return root


def _pretrain_config(data, out, **extra):
    overrides = {
        "data.paths": [str(data)],
        "data.preprocess": SMALL,
        "data.val_fraction": 0.2,
        "model.depth": 1,
        "optim.epochs": 2,
        "optim.batch_size": 8,
        "run.out": str(out),
        "run.device": "cpu",
        "run.quiet": True,
        **extra,
    }
    return load_pretrain_config(overrides=overrides)


@pytest.fixture(scope="module")
def finished(small_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    return pretrain(_pretrain_config(small_tree, out))


def test_run_folder_holds_weights_summary_and_loss_curve(finished, small_tree):
    out = finished.out
    for name in (ENCODER_FILE, PRETRAIN_FILE, "loss.json", "loss.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or "lock" in p.name]
    info = json.loads((out / PRETRAIN_FILE).read_text())
    assert info["complete"] is True and info["progress"]["epochs_done"] == 2
    assert info["model"] == {
        "backbone": "tiny", "depth": 1, "in_channels": 3, "img_size": [17, 16], "grid_size": [3, 2]
    }  # fmt: skip
    assert info["preprocess"] == PreprocessConfig(**SMALL).to_dict()
    data = info["data"]
    assert data["sources"][0]["path"] == str(small_tree.resolve())
    assert data["sources"][0]["kind"] == "miniseed-tree"
    assert data["n_train"] + data["n_val"] == data["n_windows"] > 0 and data["n_val"] > 0
    assert data["hours"] == pytest.approx(data["n_windows"] * 5.12 / 3600)
    loss = json.loads((out / "loss.json").read_text())
    assert [h["epoch"] for h in loss["history"]] == [1, 2]
    assert len(loss["step_losses"]) == 2 * (data["n_train"] // 8)
    seen = sum(h["windows"] for h in loss["history"])
    assert info["progress"]["windows_seen"] == seen == 2 * 8 * (data["n_train"] // 8)
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in loss["history"])


def test_an_interrupted_run_resumes_to_the_same_weights(
    finished, small_tree, tmp_path, monkeypatch
):
    from quake.pretrain import run as run_module

    out = tmp_path / "stopped"
    original = run_module.write_loss_plot

    def stop_after_first_epoch(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt  # as SIGTERM does, after epoch 1 was saved

    monkeypatch.setattr(run_module, "write_loss_plot", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_pretrain_config(small_tree, out))
    assert len(json.loads((out / "loss.json").read_text())["history"]) == 1
    assert not (out / "pretrain.lock").exists()
    monkeypatch.setattr(run_module, "write_loss_plot", original)

    resumed = pretrain(_pretrain_config(small_tree, out))
    assert resumed.summary["progress"]["epochs_done"] == 2
    a, b = load_file(str(finished.out / ENCODER_FILE)), load_file(str(out / ENCODER_FILE))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    first = json.loads((finished.out / "loss.json").read_text())["history"]
    again = json.loads((out / "loss.json").read_text())["history"]
    assert [h["train_loss"] for h in again] == pytest.approx([h["train_loss"] for h in first])


def test_a_corrupt_file_is_named_in_the_run_folder(finished, small_tree, tmp_path):
    """A file of random bytes named .mseed is listed in skipped.csv with its reason; every
    other recording gives the windows it gave without it."""
    root = tmp_path / "tree"
    shutil.copytree(small_tree, root)
    event = sorted(p.name for p in root.iterdir())[0]
    (root / event / "XX.JUNK..HHZ.mseed").write_bytes(np.random.default_rng(0).bytes(4096))
    result = pretrain(_pretrain_config(root, tmp_path / "run"))
    assert result.summary["files"]["skipped"] == "skipped.csv"
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv", dtype=str, keep_default_na=False)
    junk = skipped[skipped["item"] == f"{event}/XX.JUNK..HHZ.mseed"]
    assert junk[["source", "reason"]].values.tolist() == [[str(root.resolve()), "unreadable"]]
    assert junk["detail"].iloc[0] != ""
    before = pd.read_csv(finished.out / "skipped.csv", dtype=str, keep_default_na=False)
    assert skipped.drop(index=junk.index)["item"].tolist() == before["item"].tolist()
    data, intact = result.summary["data"], finished.summary["data"]
    assert data["n_windows"] == intact["n_windows"]
    unreadable = intact["dropped"].get("unreadable", 0) + 1
    assert data["dropped"] == {**intact["dropped"], "unreadable": unreadable}


def test_a_different_config_is_refused_naming_the_keys(finished, small_tree):
    config = _pretrain_config(small_tree, finished.out, **{"optim.lr": 1e-3})
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.0005 -> 0\.001"):
        pretrain(config)
    with pytest.raises(ValueError, match="another|apart"):
        pretrain(_pretrain_config(small_tree, small_tree / "out"))  # output inside an input


# --- the encoder in a HybridViT -----------------------------------------------------------------
def test_pretrained_encoder_loads_with_every_tensor_accounted_for(finished):
    saved = load_file(str(finished.out / ENCODER_FILE))
    for pretrained in (finished.out, finished.out / ENCODER_FILE):
        model = HybridViT(depth=1, img_size=SMALL_IMG, num_classes=3, pretrained=str(pretrained))
        state = model.state_dict()
        assert set(saved) == {k for k in state if not k.startswith("head.")}
        for key, value in saved.items():
            assert torch.equal(state[key], value), key
        info = model.pretrained_info
        assert sorted(info["loaded"]) == sorted(saved)
        assert info["not_pretrained"] == ["head.weight", "head.bias"]
        assert info["missing"] == info["unexpected"] == info["resampled"] == []
        assert info["pretrain_run"]["folder"] == str(finished.out)
        assert info["pretrain_run"]["epochs_done"] == 2
    # another input size: the grid changes, the position embedding is resampled, the rest kept
    wide = HybridViT(depth=1, img_size=(17, 32), pretrained=str(finished.out))
    assert wide.pretrained_info["resampled"] == ["pos_embed"]
    assert wide.pos_embed.shape == (1, 1 + 3 * 4, 192)
    torch.testing.assert_close(wide.pos_embed[:, 0], saved["pos_embed"][:, 0])
    assert torch.equal(
        wide.state_dict()["blocks.0.mlp.fc1.weight"], saved["blocks.0.mlp.fc1.weight"]
    )


def test_training_names_the_pretraining_run(finished):
    from quake.classes import ClassNames
    from quake.training.config import ModelConfig
    from quake.training.loop import PretrainedResolver, build_model

    model_config = ModelConfig(depth=1, pretrained=str(finished.out))
    model_config.validate()  # a folder is a valid model.pretrained
    resolver = PretrainedResolver(model_config.pretrained)
    names = ClassNames(["earthquake", "explosion"])
    resolved = resolver.resolve(
        lambda p: build_model(model_config, pretrained=p, class_names=names, img_size=SMALL_IMG)
    )
    assert resolved == str(finished.out)
    assert str(finished.out) in resolver.status["note"]
    assert resolver.status["pretrain_run"]["sources"] == [
        json.loads((finished.out / PRETRAIN_FILE).read_text())["data"]["sources"][0]["path"]
    ]


def test_mismatched_encoders_are_refused(tmp_path):
    folder = tmp_path / "enc"
    folder.mkdir()
    save_encoder(HybridViT(depth=2, img_size=SMALL_IMG), folder / ENCODER_FILE)
    with pytest.raises(ValueError, match=r"depth 2.*this model has.*depth 1.*depth must match"):
        HybridViT(depth=1, img_size=SMALL_IMG, pretrained=str(folder))
    with pytest.raises(ValueError, match=r"backbone 'tiny'.*backbone 'small'"):
        HybridViT(backbone="small", depth=2, img_size=SMALL_IMG, pretrained=str(folder))
    with pytest.raises(ValueError, match="in_channels"):
        HybridViT(depth=2, in_channels=1, img_size=SMALL_IMG, pretrained=str(folder))
    # a tensor missing from the file: refused, not silently left at random init
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(folder / ENCODER_FILE), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(folder / ENCODER_FILE))
    del tensors["blocks.1.norm1.weight"]
    save_file(tensors, str(tmp_path / "cut.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"missing tensors \['blocks\.1\.norm1\.weight'\]"):
        HybridViT(depth=2, img_size=SMALL_IMG, pretrained=str(tmp_path / "cut.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without encoder.safetensors"):
        HybridViT(depth=2, pretrained=str(tmp_path / "empty"))


# --- unlabelled sources -------------------------------------------------------------------------
def test_plain_miniseed_tree_windows_are_the_recordings(small_tree, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(small_tree, root)
    event = sorted(p for p in root.iterdir())[0]
    (event / "notes.txt").write_text("not a waveform")
    (event / "XX.BAD..EHZ.mseed").write_bytes(b"\x00" * 100)
    checked = 0
    for path in sorted(event.glob("UW.*.mseed")):
        stream = obspy.read(str(path))
        if len(stream) != 1:  # a recording with gaps: not a plain slice of one array
            continue
        trace = stream[0]
        rate = float(trace.stats.sampling_rate)
        config = PreprocessConfig(
            sampling_rate_hz=rate, window_s=10.0, stft_nperseg=32, stft_hop=32
        )
        dataset = MseedTreeDataset(root, config, windows_per_recording=3)
        assert dataset.labels is None
        assert set(dataset.metadata["source_id"]) == {p.name for p in root.iterdir()}
        assert [item for item, _ in dataset.skipped if item.endswith("BAD..EHZ.mseed")]
        prefix = f"{event.name}/{trace.stats.network}.{trace.stats.station}.{trace.stats.location}."
        rows = dataset.metadata.index[dataset.metadata["trace_name"].str.startswith(prefix)]
        assert len(rows) == 3
        adapter = WaveformDataAdapter(dataset.filter(np.asarray(rows)), config=config)
        if len(adapter) < 3 or adapter.quality_counts.get("spike"):  # repaired: not raw samples
            continue
        n = config.window_samples
        for k in range(3):  # consecutive windows from the recording's first sample
            expected = trace.data[k * n : (k + 1) * n].astype(np.float32)
            np.testing.assert_allclose(adapter.get_waveform(k)[0], expected, rtol=1e-6)
        one = MseedTreeDataset(root, config)  # one window per recording by default
        assert one.metadata["trace_name"].str.startswith(prefix).sum() == 1
        checked += 1
        break
    assert checked == 1


def test_unlabelled_sources_open_by_what_they_hold(real_data_dir, small_tree):
    config = PreprocessConfig()
    catalog = real_data_dir / "unlabelled-pnw"
    dataset, kind = open_unlabelled(catalog, config)
    assert kind == "catalog" and dataset.labels is None and len(dataset) > 3000
    assert "source_type" not in dataset.metadata.columns
    # the labelled reader still insists on event types
    with pytest.raises(ValueError, match="event_type"):
        CatalogDataset(catalog, config)
    assert open_unlabelled(small_tree, config)[1] == "miniseed-tree"
    eqnoise = real_data_dir / "eqnoise-3c"
    if eqnoise.is_dir():
        dataset, kind = open_unlabelled(eqnoise, config)
        assert kind == "seisbench" and len(dataset) == 308


def test_cross_validated_training_starts_every_fold_from_the_run(finished, tmp_path):
    from quake.data import synthetic
    from quake.training import load_config, train

    data = synthetic.generate_synthetic_set(
        tmp_path / "set", n_events_per_class=12, stations_per_event=(1, 2), seed=3
    )
    config = load_config(
        overrides={
            "data.path": str(data),
            "run.out": str(tmp_path / "run"),
            "run.quiet": True,
            "run.device": "cpu",
            "run.parallel_folds": 1,
            "model.depth": 1,
            "model.pretrained": str(finished.out),
            "cv.folds": 2,
            "optim.epochs": 1,
            "baseline.enabled": False,
        }
    )
    metrics = train(config).metrics
    pretrained = metrics["pretrained"]
    assert pretrained["source"] == f"pretrain-run:{finished.out}"
    assert pretrained["per_fold_source"] == [f"pretrain-run:{finished.out}"] * 2
    assert pretrained["pretrain_run"]["folder"] == str(finished.out)
    # the set's (33, 32) input differs from the run's (17, 16): the grid was resampled
    assert pretrained["resampled"] == ["pos_embed"]
    assert pretrained["n_loaded"] == len(load_file(str(finished.out / ENCODER_FILE)))
    assert str(finished.out) in pretrained["note"]
    assert f"pretrain-run:{finished.out}" in (tmp_path / "run" / "report.md").read_text()


# --- torchrun ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_torchrun_two_processes_pretrain_share_the_batches(small_tree, tmp_path):
    """Two gloo ranks on the CPU: each global batch split over them, one writer, a folder a
    single-process run could resume, and an encoder HybridViT loads."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    config = tmp_path / "small.yaml"
    config.write_text(
        "data:\n  val_fraction: 0.2\n  preprocess:\n"
        + "".join(f"    {k}: {v}\n" for k, v in SMALL.items())
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [
        torchrun, "--nproc_per_node", "2", "--master_port", str(port),
        str(repo / "scripts" / "pretrain.py"), "--config", str(config),
        "--data", str(small_tree), "--out", str(out), "--depth", "1", "--epochs", "2",
        "--batch-size", "8", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=repo)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("pretraining folder:") == 1  # rank 0 alone reports
    info = json.loads((out / PRETRAIN_FILE).read_text())
    assert info["processes"] == 2 and info["backend"] == "gloo"
    assert info["complete"] and info["progress"]["epochs_done"] == 2
    n_train = info["data"]["n_train"]
    assert info["progress"]["windows_seen"] == 2 * 8 * (n_train // 8)  # global batches of 8
    loss = json.loads((out / "loss.json").read_text())
    assert len(loss["step_losses"]) == 2 * (n_train // 8)
    assert all(np.isfinite(v) for v in loss["step_losses"])
    assert not [p.name for p in out.iterdir() if "lock" in p.name or p.name.startswith(".")]
    model = HybridViT(depth=1, img_size=SMALL_IMG, num_classes=2, pretrained=str(out))
    assert len(model.pretrained_info["loaded"]) == len(load_file(out / ENCODER_FILE))
    # the same settings in one process find the run finished: same config, nothing retrained
    again = pretrain(_pretrain_config(small_tree, out))
    assert again.summary["progress"] == info["progress"]
