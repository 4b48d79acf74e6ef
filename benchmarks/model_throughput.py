"""Throughput of a HybridViT on this machine, beside its arithmetic and the machine's peak.

Windows per second alone do not say whether a model is fast; dividing the FLOPs of a batch by
its time gives achieved GFLOP/s, and a large matmul measured in the same run gives the
machine's practical peak, so the ratio says how much of the hardware the model uses.

A helper of ``bench_model.py`` and ``bench_classify.py``, which import it from their own folder.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from quake.data.config import DEFAULT_SPECTROGRAM_SIZE
from quake.models.backbones import Backbone
from quake.models.hybrid_vit import HybridViT


@dataclass(frozen=True)
class Timing:
    median_s: float
    best_s: float
    best_cpu_s: float  # process CPU time of the fastest call: robust to other load on 1 thread
    repeats: int


@dataclass(frozen=True)
class ModelThroughput:
    backbone: str
    depth: int
    mode: str  # "inference" or "train"
    precision: str  # "fp32" or "bf16-autocast"
    compiled: bool
    threads: int
    batch: int
    params: int
    gmacs_per_window: float
    windows_per_s: float  # from the median batch time
    windows_per_s_best: float  # from the fastest batch (least disturbed by other load)
    gflops: float  # achieved, median
    gflops_best: float
    gflops_per_cpu_s: float  # FLOPs / CPU seconds of the fastest batch

    def as_dict(self) -> dict:
        return asdict(self)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 2) -> Timing:
    """Median and best wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    for _ in range(warmup):
        fn()
    times, cpu_times = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    return Timing(statistics.median(times), min(times), min(cpu_times), repeats)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (a multiply-add counts 2), as torch's FlopCounterMode counts them.

    Counted under the math attention backend: a fused attention kernel is one opaque op that
    FlopCounterMode counts in some torch releases and not in others (2.14 stopped), while the
    math backend is made of matrix products it always counts. The arithmetic is the same; the
    timed calls still use the fastest backend.
    """
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _precision(precision: str) -> Iterator[None]:
    if precision == "fp32":
        yield
    elif precision == "bf16-autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        raise ValueError(f"precision must be 'fp32' or 'bf16-autocast', got {precision!r}")


@dataclass(frozen=True)
class Peak:
    dtype: str
    threads: int
    gflops: float  # best wall time
    gflops_per_cpu_s: float


def matmul_peak(size: int = 2048, repeats: int = 10, dtype=torch.float32) -> Peak:
    """Practical peak: GFLOP/s of the best of ``repeats`` square ``size`` matmuls."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    with torch.inference_mode():
        timing = time_call(lambda: torch.mm(a, b), repeats)
    flops = 2 * size**3
    return Peak(
        str(dtype).removeprefix("torch."),
        torch.get_num_threads(),
        flops / timing.best_s / 1e9,
        flops / timing.best_cpu_s / 1e9,
    )


def measure_inference(
    backbone: Backbone | str,
    depth: int,
    batch: int = 128,
    img_size: tuple[int, int] = DEFAULT_SPECTROGRAM_SIZE,
    repeats: int = 10,
    precision: str = "fp32",
    compile_model: bool = False,
) -> ModelThroughput:
    """Windows/s of ``model(x)`` under ``torch.inference_mode()`` on a fixed random batch."""
    backbone = Backbone.from_name(backbone)
    torch.manual_seed(0)
    model = HybridViT(backbone=backbone, depth=depth, img_size=img_size).eval()
    x = torch.randn(batch, 3, *img_size)
    run = model
    if compile_model:
        # inductor with frozen weights: constant-folded, prepacked oneDNN/MKL kernels and fused
        # elementwise ops; compilation happens during the warm-up calls.
        import torch._inductor.config as inductor_config

        run = torch.compile(model)
        patch = inductor_config.patch(freezing=True)
    else:
        patch = contextlib.nullcontext()

    def step() -> object:
        with torch.inference_mode(), _precision(precision):
            return run(x)

    with torch.inference_mode():
        flops = count_flops(lambda: model(x))
    with patch:
        timing = time_call(step, repeats)
    return _result(model, "inference", precision, compile_model, batch, flops, timing)


def measure_training(
    backbone: Backbone | str,
    depth: int,
    batch: int = 128,
    img_size: tuple[int, int] = DEFAULT_SPECTROGRAM_SIZE,
    repeats: int = 5,
    precision: str = "fp32",
) -> ModelThroughput:
    """Samples/s of one forward + backward + AdamW step (dropout and BN in training mode)."""
    backbone = Backbone.from_name(backbone)
    torch.manual_seed(0)
    model = HybridViT(backbone=backbone, depth=depth, img_size=img_size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(batch, 3, *img_size)
    y = torch.randint(0, model.num_classes, (batch,))

    def step() -> None:
        with _precision(precision):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward_backward() -> None:
        torch.nn.functional.cross_entropy(model(x), y).backward()

    flops = count_flops(forward_backward)  # the optimizer step's elementwise work is not counted
    timing = time_call(step, repeats, warmup=1)
    return _result(model, "train", precision, False, batch, flops, timing)


def _result(
    model: HybridViT, mode, precision, compiled, batch, flops, timing: Timing
) -> ModelThroughput:
    return ModelThroughput(
        backbone=model.backbone.value,
        depth=model.depth,
        mode=mode,
        precision=precision,
        compiled=compiled,
        threads=torch.get_num_threads(),
        batch=batch,
        params=sum(p.numel() for p in model.parameters()),
        gmacs_per_window=flops / 2 / batch / 1e9,
        windows_per_s=batch / timing.median_s,
        windows_per_s_best=batch / timing.best_s,
        gflops=flops / timing.median_s / 1e9,
        gflops_best=flops / timing.best_s / 1e9,
        gflops_per_cpu_s=flops / timing.best_cpu_s / 1e9,
    )
