"""benchmarks/bench_train.py end to end with tiny settings: one process and two (DDP over gloo)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_train.py"


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_one_and_two_processes_report_figures_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    done = _bench(
        "--cases", "2", "4", "--depth", "1", "--steps", "3", "--warmup-steps", "1",
        "--rounds", "1", "--data", "random", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratio 4 / 2" in done.stdout
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"2", "4"}
    for key, processes in (("2", 1), ("4", 2)):
        result = report["results"][key]
        assert result["case"]["processes"] == processes
        assert result["samples_per_s"] > 0 and result["samples_per_cpu_s"] > 0
        (only_round,) = result["rounds"]
        assert len(only_round["step_s"]) == 3  # the warm-up step is left out
        assert len(only_round["cpu_s_per_rank"]) == processes
    assert report["results"]["4"]["precision"] == "bf16"
    assert report["ratios"]["4 / 2"]["samples_per_s"] > 0


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_fails_clearly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load_script().parse_args(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "sees no CUDA device" in capsys.readouterr().err


def test_fp16_on_the_cpu_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load_script().parse_args(["--precision", "fp16"])
    assert exit_info.value.code == 2
    assert "--precision fp16 needs --device cuda" in capsys.readouterr().err
