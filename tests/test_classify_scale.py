"""Batch classification at scale: shards over torchrun ranks, merged parts, --precision, --device.

A small SeisBench-format catalog (events matched by ``source_id``) and a random tiny model.
Probability tolerances: 1e-5 between runs in float32 (windows are batched with other
neighbours, which changes the last bits); 0.03 for bf16 autocast against float32.
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

from quake.classify import classify_events, open_source, prob_column, read_catalog
from quake.classify.outputs import lock_path
from quake.classify.run import ClassifySummary, merge_summaries, run_classification
from quake.classify.shard import Shard, merge_parts, seed_part
from quake.data import PreprocessConfig, SeisBenchWriter
from quake.deploy import load
from quake.deploy.ensemble import EventClassifier
from quake.models import Backbone, HybridViT
from quake.runtime import Ranks, amp_dtype, inference_amp

CLASSES = ["earthquake", "explosion", "noise"]
PROBS = [prob_column(c) for c in CLASSES]
N_EVENTS = 13
REPO = Path(__file__).resolve().parents[1]
FP32_ATOL = 1e-5
AMP_ATOL = 0.03


@pytest.fixture(scope="module")
def catalog_set(tmp_path_factory):
    """13 events x 2-3 stations in a SeisBench set, a CSV catalog (plus one event without
    traces) and a random tiny 2-member classifier."""
    root = tmp_path_factory.mktemp("scale")
    config = PreprocessConfig()
    rng = np.random.default_rng(0)
    n = 2600
    with SeisBenchWriter(root / "set", config.sampling_rate_hz) as writer:
        for e in range(N_EVENTS):
            for s in range(2 + e % 2):
                waveform = rng.normal(size=(3, n)).astype(np.float32)
                waveform[:, 400:] *= 5.0 + e
                writer.add(
                    f"ev{e:02d}.S{s}",
                    waveform,
                    source_id=f"ev{e:02d}",
                    station_network_code="XX",
                    station_code=f"S{s}",
                    trace_channel="HH",
                    trace_p_arrival_sample=400,
                )
    ids = [f"ev{e:02d}" for e in range(N_EVENTS)] + ["ev-missing"]
    pd.DataFrame({"event_id": ids, "origin_time": ""}).to_csv(root / "catalog.csv", index=False)
    torch.manual_seed(0)
    models = [
        HybridViT(
            backbone=Backbone.TINY,
            depth=1,
            num_classes=3,
            img_size=config.spectrogram_shape[1:],
            class_names=CLASSES,
        )
        for _ in range(2)
    ]
    EventClassifier(models, config).save(root / "model")
    return root


def _classify_set(catalog_set: Path, out: Path, **options) -> None:
    """Classify the module's catalog with its model in one process, in small batches."""
    options = {"batch_size": 8, "workers": 0, "progress": False, **options}
    device = options.pop("device", "cpu")
    run_classification(
        load(catalog_set / "model", device=device),
        catalog_set / "catalog.csv",
        str(catalog_set / "set"),
        out,
        **options,
    )


@pytest.fixture(scope="module")
def single_run(catalog_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    _classify_set(catalog_set, out / "predictions.csv", stations_out=out / "stations.csv")
    return {
        "predictions": pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False),
        "stations": pd.read_csv(out / "stations.csv", dtype=str, keep_default_na=False),
    }


def _same_table(got: pd.DataFrame, expected: pd.DataFrame, atol: float = FP32_ATOL) -> None:
    assert list(got.columns) == list(expected.columns)
    others = [c for c in expected.columns if c not in PROBS]
    pd.testing.assert_frame_equal(got[others], expected[others])
    used = expected[PROBS[0]] != ""
    assert list(got[PROBS[0]] != "") == list(used)
    np.testing.assert_allclose(
        got.loc[used, PROBS].astype(float).to_numpy(),
        expected.loc[used, PROBS].astype(float).to_numpy(),
        atol=atol,
        rtol=0,
    )


# --- shards and merging, in one process ------------------------------------------------------
@pytest.mark.parametrize("n_events", [0, 1, 2, 7, 100])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shards_cover_every_event_once(n_events, world_size):
    covered = []
    for rank in range(world_size):
        start, stop = Shard(rank, world_size).bounds(n_events)
        assert stop - start in (n_events // world_size, -(-n_events // world_size))
        covered.extend(range(start, stop))
    assert covered == list(range(n_events))


@pytest.mark.parametrize(
    ("rank", "world_size", "match"),
    [
        (0, 0, "world_size must be >= 1, got 0"),
        (2, 2, r"rank must be in \[0, 2\), got 2"),
        (-1, 2, r"rank must be in \[0, 2\), got -1"),
        ("0", 2, "rank must be an integer, got '0'"),
    ],
)
def test_shard_validates(rank, world_size, match):
    with pytest.raises(ValueError, match=match):
        Shard(rank, world_size)


def test_shard_from_torchrun_environment(tmp_path):
    assert Shard.from_env({}) == Shard(0, 1)
    assert Shard.from_env({"RANK": "1", "WORLD_SIZE": "4"}) == Shard(1, 4)
    with pytest.raises(ValueError, match="expected integers"):
        Shard.from_env({"RANK": "one", "WORLD_SIZE": "2"})
    assert Shard(1, 2).part_path(tmp_path / "p.csv") == tmp_path / "p.csv.part1-of2"
    assert Shard.of(Ranks(2, 3)) == Shard(2, 3)


def test_parts_classified_one_by_one_merge_to_the_single_run(catalog_set, single_run, tmp_path):
    """Each rank's work done in turn in this process, then rank 0's merge."""
    classifier = EventClassifier.load(catalog_set / "model")
    events = read_catalog(catalog_set / "catalog.csv")
    source = open_source(str(catalog_set / "set"))
    out, stations = tmp_path / "predictions.csv", tmp_path / "stations.csv"
    world = [Shard(r, 3) for r in range(3)]
    summaries = [
        classify_events(
            classifier,
            s.select(events),
            source,
            s.part_path(out),
            stations_out=s.part_path(stations),
            batch_size=8,
            workers=0,
            progress=False,
        )  # fmt: skip
        for s in world
    ]
    ids = list(events["event_id"])
    merged = merge_parts(out, [s.part_path(out) for s in world], ids)
    merge_parts(stations, [s.part_path(stations) for s in world], ids, one_row_per_event=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "stations.csv"]
    _same_table(merged, single_run["predictions"])
    _same_table(pd.read_csv(stations, dtype=str, keep_default_na=False), single_run["stations"])
    total = merge_summaries(summaries, n_events=len(events))
    assert total.n_events == N_EVENTS + 1 and total.n_classified == N_EVENTS
    assert total.n_unclassified == 1 and total.skip_counts["no traces with this source_id"] == 1
    assert total.total_s == max(s.total_s for s in summaries)


def test_merge_refuses_lost_or_repeated_events(tmp_path):
    columns = ["event_id", "x"]
    pd.DataFrame([["a", "1"], ["b", "2"]], columns=columns).to_csv(tmp_path / "p0", index=False)
    pd.DataFrame([["b", "3"]], columns=columns).to_csv(tmp_path / "p1", index=False)
    pd.DataFrame([["c", "3"]], columns=["event_id", "y"]).to_csv(tmp_path / "p2", index=False)
    parts = [tmp_path / "p0", tmp_path / "p1"]
    with pytest.raises(ValueError, match=r"repeated \['b'\], missing \['c'\]"):
        merge_parts(tmp_path / "out.csv", parts, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"events \['b'\] are not in the catalog"):
        merge_parts(tmp_path / "out.csv", parts, ["a"])
    with pytest.raises(ValueError, match="p2 has columns"):
        merge_parts(tmp_path / "out.csv", [tmp_path / "p0", tmp_path / "p2"], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"part file\(s\) .*nope.* missing"):
        merge_parts(tmp_path / "out.csv", [tmp_path / "nope"], ["a"])
    assert not (tmp_path / "out.csv").exists() and (tmp_path / "p0").exists()


def test_seed_part_takes_over_this_ranks_rows_of_a_previous_output(tmp_path):
    columns = ["event_id", "x"]
    pd.DataFrame([["a", "1"], ["b", "2"], ["c", "3"]], columns=columns).to_csv(
        tmp_path / "out.csv", index=False
    )
    pd.DataFrame([["c", "9"]], columns=columns).to_csv(tmp_path / "part", index=False)
    assert seed_part(tmp_path / "part", tmp_path / "out.csv", ["b", "c"], columns) == 1
    part = pd.read_csv(tmp_path / "part", dtype=str)
    assert list(part["event_id"]) == ["c", "b"] and list(part["x"]) == ["9", "2"]
    assert seed_part(tmp_path / "new", tmp_path / "out.csv", ["a"], ["event_id", "y"]) == 0
    assert seed_part(tmp_path / "new", tmp_path / "none.csv", ["a"], columns) == 0


# --- torchrun: two CPU processes end to end ---------------------------------------------------
def _torchrun(
    catalog_set: Path, out: Path, *extra: str, check: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "scripts" / "classify.py"), "--model", str(catalog_set / "model"),
        "--catalog", str(catalog_set / "catalog.csv"), "--waveforms", str(catalog_set / "set"),
        "--out", str(out / "predictions.csv"), "--stations-out", str(out / "stations.csv"),
        "--batch-size", "8", "--workers", "0", "--no-progress", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_torchrun_two_processes_merge_to_the_single_run_and_resume(
    catalog_set, single_run, tmp_path
):
    result = _torchrun(catalog_set, tmp_path)
    assert f"{N_EVENTS + 1} events -> " in result.stdout and "over 2 processes" in result.stdout
    assert result.stdout.count("events/s") == 1  # only rank 0 prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "stations.csv"]
    merged = pd.read_csv(tmp_path / "predictions.csv", dtype=str, keep_default_na=False)
    _same_table(merged, single_run["predictions"])
    stations = pd.read_csv(tmp_path / "stations.csv", dtype=str, keep_default_na=False)
    _same_table(stations, single_run["stations"])

    # Interrupted after 5 events: --resume over 2 ranks keeps them and finishes the rest.
    lines = (tmp_path / "predictions.csv").read_text().splitlines(keepends=True)
    (tmp_path / "predictions.csv").write_text("".join(lines[: 1 + 5]))
    result = _torchrun(catalog_set, tmp_path, "--resume")
    assert "5 kept from a previous run" in result.stdout
    resumed = pd.read_csv(tmp_path / "predictions.csv", dtype=str, keep_default_na=False)
    _same_table(resumed, single_run["predictions"])
    assert list(resumed["event_id"]) == list(merged["event_id"])

    # Another job (this live process, as far as the lock says) writes the output: both ranks stop.
    lock = lock_path(tmp_path / "predictions.csv")
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    before = (tmp_path / "predictions.csv").read_bytes()
    result = _torchrun(catalog_set, tmp_path, "--resume", check=False)
    assert result.returncode != 0 and "being written by another quake process" in result.stderr
    assert (tmp_path / "predictions.csv").read_bytes() == before and lock.exists()
    assert not list(tmp_path.glob("*.part*")), "a rank started writing its part"


# --- precision and devices --------------------------------------------------------------------
def test_amp_stays_within_tolerance_of_float32(catalog_set, single_run, tmp_path):
    out = tmp_path / "predictions.csv"
    _classify_set(catalog_set, out, amp=True)
    amp = pd.read_csv(out, dtype=str, keep_default_na=False)
    expected = single_run["predictions"]
    _same_table(amp.drop(columns="predicted_class"), expected.drop(columns="predicted_class"),
                atol=AMP_ATOL)  # fmt: skip
    used = expected[PROBS[0]] != ""
    diff = np.abs(
        amp.loc[used, PROBS].astype(float).to_numpy()
        - expected.loc[used, PROBS].astype(float).to_numpy()
    )
    assert diff.max() > 1e-6  # autocast really ran the model in bf16
    assert amp_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="mixed precision on 'meta'"):
        amp_dtype("meta")


def test_precision_option_of_the_command(catalog_set, single_run, tmp_path):
    """``--precision fp32`` (the default) gives float32's table, ``bf16`` autocast's, the same
    as ``--amp``; ``auto`` is one of the two, as the CPU decides (quake annotate's spelling)."""
    from quake.commands.classify import main

    def command(name: str, *options: str) -> pd.DataFrame:
        out = tmp_path / f"{name}.csv"
        argv = ["--model", str(catalog_set / "model"), "--catalog", str(catalog_set / "catalog.csv"),
                "--waveforms", str(catalog_set / "set"), "--out", str(out), "--batch-size", "8",
                "--workers", "0", "--no-progress", *options]  # fmt: skip
        assert main(argv) == 0
        return pd.read_csv(out, dtype=str, keep_default_na=False)

    _same_table(command("default"), single_run["predictions"])
    bf16 = command("bf16", "--precision", "bf16")
    pd.testing.assert_frame_equal(bf16, command("amp", "--amp"))
    used = bf16[PROBS[0]] != ""
    diff = np.abs(
        bf16.loc[used, PROBS].astype(float).to_numpy()
        - single_run["predictions"].loc[used, PROBS].astype(float).to_numpy()
    )
    assert 1e-6 < diff.max() < AMP_ATOL
    auto = command("auto", "--precision", "auto")
    expected = bf16 if inference_amp("auto", "cpu") else single_run["predictions"]
    pd.testing.assert_frame_equal(auto, expected)
    with pytest.raises(SystemExit):
        command("bad", "--precision", "fp16")


def test_summary_of_one_shard_is_itself():
    summary = ClassifySummary(n_events=4, n_classified=3, n_unclassified=1, total_s=2.0)
    merged = merge_summaries([summary], n_events=4)
    assert merged.to_dict() == summary.to_dict()


def test_cuda_without_a_gpu_is_a_clear_error(catalog_set, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="device 'cuda' was asked for, but torch sees no CUDA"):
        _classify_set(catalog_set, tmp_path / "p.csv", device="cuda")
    assert Ranks(1, 2, local_rank=1).device("auto") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_matches_cpu(catalog_set, single_run, tmp_path, amp):
    out = tmp_path / "predictions.csv"
    _classify_set(catalog_set, out, device="cuda", amp=amp)
    got = pd.read_csv(out, dtype=str, keep_default_na=False)
    atol = AMP_ATOL if amp else 1e-4  # TF32/cuDNN kernels differ from CPU in the last bits
    expected = single_run["predictions"]
    _same_table(got.drop(columns="predicted_class"), expected.drop(columns="predicted_class"),
                atol=atol)  # fmt: skip


def test_part_files_do_not_linger_after_a_single_process_run(catalog_set, tmp_path):
    shutil.copy(catalog_set / "catalog.csv", tmp_path / "catalog.csv")
    run_classification(load(catalog_set / "model"), tmp_path / "catalog.csv",
                       str(catalog_set / "set"), tmp_path / "p.csv", workers=0,
                       progress=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.csv", "p.csv"]
