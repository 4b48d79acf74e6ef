"""The throughput helpers behind benchmarks/bench_model.py (tiny sizes: plumbing, not speed)."""

from __future__ import annotations

import pytest


@pytest.fixture
def throughput(bench_helper):
    """``benchmarks/model_throughput.py``."""
    return bench_helper("model_throughput")


def tiny_macs_per_window(depth: int, dim: int = 192, heads: int = 3, classes: int = 2) -> int:
    """MACs of TINY on a 33x64 input, written out layer by layer.

    stem: conv7x7 3->64 on a 17x32 output, conv3x3 64->128 on 9x16, conv3x3 128->D on 5x8;
    block (41 tokens): qkv + proj + fc1 + fc2 = 41 * 12 D^2, plus q@k^T and attn@v
    = 2 * heads * 41 * 41 * (D / heads); head: D * classes.
    """
    stem = 17 * 32 * 64 * 3 * 49 + 9 * 16 * 128 * 64 * 9 + 5 * 8 * dim * 128 * 9
    block = 41 * 12 * dim * dim + 2 * heads * 41 * 41 * (dim // heads)
    return stem + depth * block + dim * classes


def test_inference_figures_follow_from_counted_macs(throughput):
    result = throughput.measure_inference("tiny", depth=1, batch=2, repeats=1, img_size=(33, 64))
    assert result.gmacs_per_window * 1e9 == pytest.approx(tiny_macs_per_window(1), rel=1e-6)
    assert result.windows_per_s > 0 and result.windows_per_s_best >= result.windows_per_s
    assert result.gflops_best == pytest.approx(
        2 * result.gmacs_per_window * result.windows_per_s_best, rel=1e-6
    )
    assert result.mode == "inference" and result.precision == "fp32"


def test_training_step_counts_forward_and_backward(throughput):
    result = throughput.measure_training("tiny", depth=1, batch=2, repeats=1, img_size=(33, 64))
    # backward costs about twice the forward, so a training step is about 3x the forward MACs
    ratio = result.gmacs_per_window * 1e9 / tiny_macs_per_window(1)
    assert 2.5 < ratio < 3.1
    assert result.mode == "train" and result.windows_per_s > 0


def test_time_call_validates_repeats(throughput):
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        throughput.time_call(lambda: None, repeats=0)


def test_unknown_precision_is_named(throughput):
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16-autocast', got 'fp8'"):
        throughput.measure_inference("tiny", depth=1, batch=1, repeats=1, precision="fp8")
