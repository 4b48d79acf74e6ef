"""Training across processes (DDP over gloo on the CPU) and the precision / compile switches.

Two real processes train the same fold through ``train_fold``: they must end with the same
weights and take the same checkpoint and early-stopping decisions, and the windows they score
must be gathered back complete and in order. The slow test runs ``torchrun --nproc_per_node 2
scripts/train.py`` end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from quake.classes import ClassNames
from quake.data import synthetic
from quake.data.config import FILTERS_OFF
from quake.deploy.ensemble import EventClassifier, weights_digest
from quake.runtime import SINGLE, Ranks, joined_ranks, resolve_precision, torchrun_ranks
from quake.training import load_config
from quake.training.augment import Augmenter
from quake.training.config import AugmentConfig, ModelConfig, OptimConfig
from quake.training.loop import build_model, train_fold

REPO = Path(__file__).resolve().parents[1]
CLASSES = ClassNames(["earthquake", "explosion", "noise"])
WINDOW = 2048


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _preprocess():
    """The default preprocessing, the filters off: these tests compare training paths, and
    the filters' float32 product would add its own rounding to every comparison."""
    config = load_config(overrides={"data.preprocess.stft_hop": 64}).data.preprocess_config()
    return config.replace(**FILTERS_OFF)


def _fold_inputs(seed: int = 0):
    """Waveforms with a class-dependent dominant frequency, so a few steps learn something."""
    rng = np.random.default_rng(seed)
    n = 48
    labels = np.arange(n) % 3
    t = np.arange(WINDOW) / 100.0
    freq = np.array([2.0, 6.0, 15.0])[labels]
    x = np.sin(2 * np.pi * freq[:, None, None] * t) + 0.5 * rng.standard_normal((n, 3, WINDOW))
    return torch.tensor(x, dtype=torch.float32), labels, np.arange(0, 36), np.arange(36, 48)


def _fit(
    dist: Ranks,
    *,
    precision: str = "fp32",
    compile_model: bool = False,
    device: str = "cpu",
    augment: bool = False,
):
    """Three epochs of one fold, seeded; no dropout, and augmentation only when asked."""
    waveforms, labels, train_idx, val_idx = _fold_inputs()
    preprocess = _preprocess()
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(depth=1, pretrained="none", dropout=0.0, drop_path_rate=0.0),
        pretrained=False,
        class_names=CLASSES,
        img_size=tuple(preprocess.spectrogram_shape[1:]),
    )
    augmenter = Augmenter.from_config(
        AugmentConfig(enabled=augment).resolved(windows_follow_picks=False),
        sampling_rate_hz=100.0,
        noise_bank=waveforms[train_idx[labels[train_idx] == 2]],
    )
    optim = OptimConfig(epochs=3, batch_size=8, lr=1e-3, precision=precision, patience=2)
    return train_fold(
        waveforms,
        labels,
        train_idx,
        val_idx,
        model=model,
        optim=optim,
        preprocess=preprocess,
        augmenter=augmenter,
        seed=7,
        device=torch.device(device),
        dist=dist,
        compile_model=compile_model,
    )


def _rank_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    with joined_ranks("cpu") as dist:
        fit = _fit(dist)
        rows = dist.gather_rows(np.arange(10)[dist.shard(10)] * 10)
        total = dist.sum([rank + 1.0])
        (Path(out_dir) / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "digest": weights_digest([fit.model]),
                    "history": [
                        {k: v for k, v in e.items() if k != "seconds"} for e in fit.history
                    ],
                    "best_epoch": fit.best_epoch,
                    "rows": rows.tolist(),
                    "total": total,
                }
            )
        )


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(
        _rank_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn"
    )
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_ranks_end_with_the_same_weights_and_decisions(two_ranks):
    first, second = two_ranks
    assert first["digest"] == second["digest"]
    assert first["history"] == second["history"]  # same metrics, so same early stopping
    assert first["best_epoch"] == second["best_epoch"]
    assert len(first["history"]) >= 1


def test_rows_scored_on_each_rank_are_gathered_complete_and_in_order(two_ranks):
    for result in two_ranks:
        assert result["rows"] == [10 * i for i in range(10)]
        assert result["total"] == [3.0]


def test_two_ranks_learn_like_one_process(two_ranks):
    """Same global batch and schedule as one process. BatchNorm normalises each rank's half of
    the batch (as DDP does on the CPU, where SyncBatchNorm does not run), so the runs are
    close, not identical: both learn the task and end near the same validation loss."""
    single = _fit(SINGLE).history
    multi = two_ranks[0]["history"]
    assert len(multi) == len(single)
    chance = np.log(3)
    assert single[-1]["val_loss"] < 0.5 * chance and multi[-1]["val_loss"] < 0.5 * chance
    assert abs(single[-1]["val_loss"] - multi[-1]["val_loss"]) < 0.15
    assert multi[-1]["val_macro_f1"] >= single[-1]["val_macro_f1"] - 0.1


def test_shards_cover_every_item_once():
    for n in (0, 1, 5, 16, 17):
        for world in (1, 2, 3):
            parts = [Ranks(r, world).shard(n) for r in range(world)]
            covered = np.concatenate([np.arange(n)[p] for p in parts])
            assert covered.tolist() == list(range(n))


def test_single_process_needs_no_process_group():
    assert torchrun_ranks({}) == SINGLE
    with joined_ranks("cpu", environ={}) as ranks:
        assert ranks is SINGLE and ranks.gather("x") == ["x"]
        assert ranks.device("cpu") == torch.device("cpu")
        ranks.barrier()
    assert SINGLE.on_main(lambda: 42) == 42
    assert SINGLE.sum([1.0, 2.0]) == [1.0, 2.0]
    assert not SINGLE.any(False) and SINGLE.any(True)


def test_on_main_hands_the_error_to_the_caller():
    def fail():
        raise ValueError("run folder cannot be resumed")

    with pytest.raises(ValueError, match="cannot be resumed"):
        SINGLE.on_main(fail)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"WORLD_SIZE": "two"}, "expected integers"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "0 <= RANK < WORLD_SIZE"),
    ],
)
def test_bad_torchrun_environment_is_named(environ, message):
    with pytest.raises(ValueError, match=message):
        torchrun_ranks(environ)


def test_batch_too_small_for_the_processes_is_refused():
    waveforms, labels, train_idx, val_idx = _fold_inputs()
    with pytest.raises(ValueError, match="cannot be split over 4 processes"):
        train_fold(
            waveforms,
            labels,
            train_idx,
            val_idx,
            model=build_model(
                ModelConfig(depth=1, pretrained="none"),
                pretrained=False,
                class_names=CLASSES,
                img_size=(33, 32),
            ),
            optim=OptimConfig(epochs=1, batch_size=2),
            preprocess=_preprocess(),
            augmenter=Augmenter.from_config(
                AugmentConfig(enabled=False),
                sampling_rate_hz=100.0,
                missing_component="zeros",
                noise_bank=None,
            ),
            seed=0,
            device=torch.device("cpu"),
            dist=Ranks(rank=0, world_size=4),
        )


# --- precision and compile: results equal within tolerance ---------------------------------


def test_fp16_on_the_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_training_follows_fp32():
    fp32 = _fit(SINGLE, precision="fp32")
    bf16 = _fit(SINGLE, precision="bf16")
    for a, b in zip(fp32.history, bf16.history, strict=False):
        assert abs(a["val_loss"] - b["val_loss"]) < 0.05, (a, b)
        assert b["skipped_steps"] == 0


@pytest.mark.slow
def test_compiled_training_follows_eager():
    eager = _fit(SINGLE)
    compiled = _fit(SINGLE, compile_model=True)
    assert len(eager.history) == len(compiled.history)
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-4, (a, b)
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4, (a, b)


# --- torchrun end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny"
    return synthetic.generate_synthetic_set(
        path, n_events_per_class=10, stations_per_event=(1, 2), seed=5
    )


def _torchrun(data: Path, out: Path) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [
        torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()),
        str(REPO / "scripts" / "train.py"),
        "--data", str(data), "--out", str(out), "--depth", "1", "--pretrained", "none",
        "--folds", "2", "--epochs", "2", "--device", "cpu", "--quiet",
        "--set", "baseline.n_estimators=20",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


@pytest.mark.slow
def test_torchrun_two_processes_end_to_end(tiny_set, tmp_path):
    out = tmp_path / "run"
    done = _torchrun(tiny_set, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # rank 0 alone reports

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["processes"] == 2
    assert metrics["training"]["backend"] == "gloo"
    assert len(metrics["folds"]) == 2
    predictions = pd.read_csv(out / "predictions.csv")
    items = pd.read_csv(out / "items.csv")
    assert sorted(predictions["index"]) == items["index"].tolist()  # every trace tested once
    for fold in (0, 1):
        test_events = set(predictions.loc[predictions["fold"] == fold, "source_id"])
        train_events = set(predictions.loc[predictions["fold"] != fold, "source_id"])
        assert not test_events & train_events  # folds stay grouped by event
    assert not [p.name for p in out.rglob("*") if ".tmp" in p.name]  # nothing half-written
    classifier = EventClassifier.load(out)  # model/, model/hybridvit or model_hybridvit
    assert len(classifier.models) == 2

    again = _torchrun(tiny_set, out)  # resumes: both folds read back, nothing retrained
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["resumed_folds"] == [0, 1]
    assert resumed["aggregate"] == metrics["aggregate"]


# --- CUDA (skipped without a GPU) -----------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_follows_cpu_fp32(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    # augmentation on, so that its random draws meet the GPU batch
    cpu = _fit(SINGLE, augment=True).history
    gpu = _fit(SINGLE, precision=precision, device="cuda", augment=True).history
    assert len(gpu) == len(cpu)  # the same augmentation on both: drawn from one CPU generator
    for a, b in zip(cpu, gpu, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 0.05, (a, b)
