#!/usr/bin/env python
"""Benchmark training throughput: samples/s of ``train_fold``, 1 vs 2 processes, AMP on/off.

    python benchmarks/bench_train.py                    # the five cases below, 3 rounds: ~3 min on 2 cores
    python benchmarks/bench_train.py --quick            # one round of fewer steps, ~1 min
    python benchmarks/bench_train.py --compile          # also case 2 under torch.compile (+~1 min)
    python benchmarks/bench_train.py --device cuda --precision fp16 --json bench.json

Cases (defaults: the default config's model and input, TINY depth 4, batch 16):

    1   1 process,  1 thread,  fp32
    2   1 process,  1 thread,  AMP (--precision: bf16 autocast by default)
    2c  as 2, under torch.compile (only with --compile)
    3   1 process,  2 threads, AMP
    4   2 processes x 1 thread, AMP, the same global batch (half per process; DDP, gloo)
    5   2 processes x 1 thread, AMP, the batch per process (twice the global batch)

Each case runs in fresh processes started here (torch.multiprocessing spawn; the 2-process
cases join a process group through the torchrun environment variables and
``joined_ranks``) and trains one epoch through the real ``train_fold`` path: augmentation,
spectrograms, model, loss, AdamW, gradient clipping and the DDP all-reduce. A step lasts from
the start of one training step to the start of the next (the augmenter is the first thing a
step calls); the first ``--warmup-steps`` are left out, and so is the validation pass after the
epoch. samples/s counts global samples (all processes), so the ratios compare like with like;
samples per CPU-second (CPU time of all processes of the case) is disturbed far less by other
load on the machine. The cases run in ``--rounds`` rounds, in alternating order; a case's
figure is its median over the rounds. Figures and ratios always come from one run.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting take the CPU a sibling process needs; the worker
# processes inherit this. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from quake.classes import ClassNames  # noqa: E402
from quake.runtime import (  # noqa: E402
    joined_ranks,  # noqa: E402
    resolve_device,
    resolve_precision,
)
from quake.training.augment import Augmenter, build_noise_bank  # noqa: E402
from quake.training.config import TrainConfig  # noqa: E402
from quake.training.config import load_config as load_train_config  # noqa: E402
from quake.training.cross_validation import pre_event_samples  # noqa: E402
from quake.training.loop import build_model, train_fold  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
RANDOM_CLASSES = ("earthquake", "explosion", "noise")  # labels of the --data random set
RANDOM_WINDOWS = 1024
VAL_WINDOWS = 32


def machine_busy_s() -> float:
    """CPU-seconds all processes on this machine have used since boot (``/proc/stat``); NaN
    where there is no such file."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class TimedAugmenter(Augmenter):
    """An :class:`Augmenter` that notes when each training step begins (its first call):
    wall time, this process's CPU time (all its threads) and the whole machine's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.machine: list[float] = []

    def waveforms(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.machine.append(machine_busy_s())
        return super().waveforms(x)


@dataclass(frozen=True)
class Case:
    key: str
    processes: int
    threads: int
    precision: str  # fp32 | bf16 | fp16
    global_batch: int
    compile: bool = False

    def describe(self) -> str:
        text = f"{self.processes} proc x {self.threads} thr, {self.precision}, batch {self.global_batch}"
        if self.processes > 1:
            text += f" ({self.global_batch // self.processes}/proc)"
        return text + (", compiled" if self.compile else "")


CASE_KEYS = ("1", "2", "2c", "3", "4", "5")

RATIOS = (
    ("2 / 1", "2", "1", "AMP on / off"),
    ("2c / 2", "2c", "2", "torch.compile on / off"),
    ("4 / 3", "4", "3", "2 processes / 2 threads, same global batch"),
    ("4 / 2", "4", "2", "2 processes / 1 process, same global batch"),
    ("5 / 2", "5", "2", "2 processes / 1 process, same batch per process"),
)


def build_cases(args: argparse.Namespace, batch: int) -> list[Case]:
    amp = args.precision
    cases = [
        Case("1", 1, 1, "fp32", batch),
        Case("2", 1, 1, amp, batch),
        Case("2c", 1, 1, amp, batch, compile=True),
        Case("3", 1, 2, amp, batch),
        Case("4", 2, 1, amp, batch),
        Case("5", 2, 1, amp, 2 * batch),
    ]
    if args.cases:
        return [c for c in cases if c.key in args.cases]
    return [c for c in cases if args.compile or not c.compile]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="model, input and optimiser settings"
    )
    parser.add_argument("--backbone", default=None, help="default: the config's (tiny)")
    parser.add_argument("--depth", type=int, default=None, help="default: the config's (4)")
    parser.add_argument(
        "--batch", type=int, default=None, help="global batch of cases 1-4 (default: config, 16)"
    )
    parser.add_argument("--steps", type=int, default=60, help="timed steps per case and round")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps before")
    parser.add_argument("--rounds", type=int, default=3, help="every case this many times")
    parser.add_argument("--quick", action="store_true", help="1 round of 30 steps after 5")
    parser.add_argument(
        "--precision",
        default="bf16",
        choices=("bf16", "fp16"),
        help="autocast type of the AMP cases (default bf16; fp16, loss-scaled, on CUDA only)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--data",
        default="synthetic",
        choices=("synthetic", "random"),
        help="the embedded synthetic set (default), or random windows and labels",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also case 2 under torch.compile (slow to build)"
    )
    parser.add_argument(
        "--cases", nargs="+", default=None, choices=CASE_KEYS, metavar="KEY", help="e.g. 1 2 4"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup_steps = 1, 30, 5
    if args.steps < 2 or args.warmup_steps < 0 or args.rounds < 1:
        parser.error("expected --steps >= 2, --warmup-steps >= 0 and --rounds >= 1")
    if args.precision == "fp16" and args.device != "cuda":
        parser.error("--precision fp16 needs --device cuda (loss-scaled fp16 is for CUDA only)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(
            f"--device cuda: torch {torch.__version__} (CUDA build "
            f"{torch.version.cuda or 'none'}) sees no CUDA device on this machine; "
            "run without --device for the CPU figures"
        )
    if args.device == "cuda" and args.precision == "bf16" and not torch.cuda.is_bf16_supported():
        parser.error("--precision bf16: this GPU has no bfloat16; use --precision fp16")
    return args


def load_config(args: argparse.Namespace) -> TrainConfig:
    overrides = {"optim.patience": None, "optim.epochs": 1, "model.pretrained": "none"}
    if args.backbone:
        overrides["model.backbone"] = args.backbone
    if args.depth:
        overrides["model.depth"] = args.depth
    if args.batch:
        overrides["optim.batch_size"] = args.batch
    return load_train_config(args.config, overrides)


def prepare_data(args: argparse.Namespace, config: TrainConfig, path: Path) -> dict:
    """The windows every worker trains on, loaded once and saved to ``path``."""
    preprocess = config.data.preprocess_config()
    if args.data == "synthetic":
        from quake.training.run import load_data, open_training_set

        data, summary, _ = load_data(config, open_training_set(config), progress=False)
        payload = {
            "waveforms": data.waveforms,
            "labels": data.labels,
            "class_names": list(data.class_names),
            "pre_event_samples": data.pre_event_samples,
            "source": summary["path"],
        }
    else:
        rng = np.random.default_rng(args.seed)
        shape = (RANDOM_WINDOWS, 3, preprocess.window_samples)
        payload = {
            "waveforms": torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)),
            "labels": rng.integers(0, len(RANDOM_CLASSES), RANDOM_WINDOWS),
            "class_names": list(RANDOM_CLASSES),
            "pre_event_samples": pre_event_samples(preprocess),
            "source": "random windows",
        }
    torch.save(payload, path)
    return {"source": payload["source"], "windows": len(payload["labels"])}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, job: dict) -> None:
    """One training process of one case (spawned); writes its step times to a JSON file."""
    case = Case(**job["case"])
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(case.processes),
            "LOCAL_WORLD_SIZE": str(case.processes),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(job["port"]),
        }
    )
    torch.set_num_threads(case.threads)
    config = TrainConfig.from_dict(job["config"])
    config.optim.precision = case.precision
    config.optim.batch_size = case.global_batch
    preprocess = config.data.preprocess_config()
    device = resolve_device(job["device"])
    with joined_ranks(device) as dist:
        device = dist.device(device)
        data = torch.load(job["data"], weights_only=False)
        waveforms, labels = data["waveforms"], np.asarray(data["labels"], dtype=np.int64)
        class_names = ClassNames(data["class_names"])
        seed, warmup = job["seed"], job["warmup_steps"]
        rng = np.random.default_rng(seed)  # the same on every rank
        steps = warmup + job["steps"] + 1  # the last step's end is not seen
        # one epoch of `steps` global batches; indices repeat where the set is smaller
        train_idx = np.resize(rng.permutation(len(labels)), steps * case.global_batch)
        val_idx = rng.choice(len(labels), size=VAL_WINDOWS, replace=False)
        torch.manual_seed(seed)
        model = build_model(
            config.model,
            pretrained=False,
            class_names=class_names,
            img_size=tuple(preprocess.spectrogram_shape[1:]),
        )
        noise_bank = build_noise_bank(
            waveforms,
            labels,
            train_idx,
            class_names.index("noise") if "noise" in class_names else None,
            pre_event_samples=data["pre_event_samples"],
            seed=seed,
        )
        augmenter = TimedAugmenter.from_config(
            config.augment.resolved(windows_follow_picks=True),  # the synthetic set has picks
            sampling_rate_hz=preprocess.sampling_rate_hz,
            missing_component=preprocess.missing_component,
            noise_bank=noise_bank,
        )
        dist.barrier()
        fit = train_fold(
            waveforms,
            labels,
            train_idx,
            val_idx,
            model=model,
            optim=config.optim,
            preprocess=preprocess,
            augmenter=augmenter,
            seed=seed,
            device=device,
            dist=dist,
            compile_model=case.compile,
        )
        if len(augmenter.wall) != steps:
            raise RuntimeError(f"expected {steps} training steps, saw {len(augmenter.wall)}")
        result = {
            "step_s": np.diff(augmenter.wall)[warmup:].tolist(),
            "cpu_s": float(augmenter.cpu[-1] - augmenter.cpu[warmup]),
            "machine_cpu_s": float(augmenter.machine[-1] - augmenter.machine[warmup]),
            "warmup_s": augmenter.wall[warmup] - augmenter.wall[0],
            "fold_samples_per_s": fit.samples_per_s,
            "params": sum(p.numel() for p in model.parameters()),
            "precision": resolve_precision(case.precision, device),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "train_loss": fit.history[-1]["train_loss"],
            "skipped_steps": fit.history[-1]["skipped_steps"],
        }
        Path(job["out"].format(rank=rank)).write_text(json.dumps(result))
        # Leave together: a rank that tears the process group down while another is still in
        # the last all-reduce can abort that rank (gloo, seen on a loaded machine).
        dist.barrier()


def run_case(case: Case, args: argparse.Namespace, config: TrainConfig, data: Path, tmp: Path):
    """One round of one case in fresh processes; rank 0's wall clock, every rank's CPU time."""
    out = tmp / f"case-{case.key}-rank{{rank}}.json"
    job = {
        "case": asdict(case),
        "config": config.to_dict(),
        "device": args.device,
        "data": str(data),
        "seed": args.seed,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "port": free_port(),
        "out": str(out),
    }
    t = time.perf_counter()
    torch.multiprocessing.spawn(_worker, args=(job,), nprocs=case.processes, join=True)
    ranks = [json.loads(Path(str(out).format(rank=r)).read_text()) for r in range(case.processes)]
    result = ranks[0]
    step_s = result["step_s"]
    samples = case.global_batch * len(step_s)
    cpu_s = sum(r["cpu_s"] for r in ranks)
    result.update(
        wall_s=time.perf_counter() - t,
        # cores other processes kept busy while the timed steps ran (rank 0's view)
        other_cpu=max(0.0, result["machine_cpu_s"] - cpu_s) / sum(step_s),
        samples_per_s=samples / sum(step_s),
        samples_per_cpu_s=samples / cpu_s,
        step_ms_median=1000 * statistics.median(step_s),
        cpu_s_per_rank=[r["cpu_s"] for r in ranks],
    )
    return result


COLUMNS = (
    ("case", 4),
    ("setting", 42),
    ("samples/s", 9),
    ("best", 6),
    ("step ms", 7),
    ("samples/CPU-s", 13),
    ("CPU use", 7),
    ("others' CPU", 11),
    ("warm-up s", 9),
)


def _row(values) -> str:
    pairs = enumerate(zip(list(values), COLUMNS, strict=True))
    return (
        "| " + " | ".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, (v, (_, w)) in pairs) + " |"
    )


def summarise(case: Case, rounds: list[dict]) -> dict:
    rates = [r["samples_per_s"] for r in rounds]
    return {
        "case": asdict(case),
        "samples_per_s": statistics.median(rates),
        "samples_per_s_best": max(rates),
        "samples_per_s_rounds": rates,
        "samples_per_cpu_s": statistics.median(r["samples_per_cpu_s"] for r in rounds),
        "step_ms_median": statistics.median(r["step_ms_median"] for r in rounds),
        # CPU-seconds per wall second: how many cores the case kept busy
        "cpu_use": statistics.median(r["samples_per_s"] / r["samples_per_cpu_s"] for r in rounds),
        "other_cpu": statistics.median(r["other_cpu"] for r in rounds),
        "warmup_s": statistics.median(r["warmup_s"] for r in rounds),
        "skipped_steps": sum(r["skipped_steps"] for r in rounds),
        "params": rounds[0]["params"],
        "precision": rounds[0]["precision"],
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args)
    cases = build_cases(args, config.optim.batch_size)
    preprocess = config.data.preprocess_config()
    gpu = f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else ""
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start; device {args.device}{gpu}",
        flush=True,
    )
    print(
        f"model {config.model.backbone} depth {config.model.depth}, input "
        f"{tuple(preprocess.spectrogram_shape)}, batch {config.optim.batch_size}; "
        f"{args.rounds} round(s) of {args.steps} timed steps after {args.warmup_steps} per case",
        flush=True,
    )
    skipped = {}
    if args.device == "cuda":
        gpus = torch.cuda.device_count()
        skipped = {
            c.key: f"{c.processes} processes need {c.processes} GPUs, torch sees {gpus}"
            for c in cases
            if c.processes > gpus
        }
    runnable = [c for c in cases if c.key not in skipped]
    rounds: dict[str, list[dict]] = {c.key: [] for c in runnable}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quake-bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        data_path = tmp / "data.pt"
        data_info = prepare_data(args, config, data_path)
        print(f"data: {data_info['source']} ({data_info['windows']} windows)", flush=True)
        for k in range(args.rounds):
            order = runnable if k % 2 == 0 else runnable[::-1]
            for case in order:
                r = run_case(case, args, config, data_path, tmp)
                rounds[case.key].append(r)
                print(
                    f"  round {k + 1}/{args.rounds} case {case.key:<2}: "
                    f"{r['samples_per_s']:7.1f} samples/s, {r['samples_per_cpu_s']:6.1f} per CPU-s, "
                    f"others' CPU {r['other_cpu']:.2f} ({r['wall_s']:.0f} s)",
                    flush=True,
                )
    results = {c.key: summarise(c, rounds[c.key]) for c in runnable}
    print()
    print(_row(name for name, _ in COLUMNS))
    print("|" + "|".join("-" * (w + 2) for _, w in COLUMNS) + "|")
    for case in cases:
        if case.key in skipped:
            print(_row((case.key, case.describe(), *["-"] * (len(COLUMNS) - 2))))
            continue
        r = results[case.key]
        print(
            _row(
                (
                    case.key,
                    case.describe(),
                    f"{r['samples_per_s']:.1f}",
                    f"{r['samples_per_s_best']:.0f}",
                    f"{r['step_ms_median']:.1f}",
                    f"{r['samples_per_cpu_s']:.1f}",
                    f"{r['cpu_use']:.2f}",
                    f"{r['other_cpu']:.2f}",
                    f"{r['warmup_s']:.1f}",
                )
            )
        )
    for key, why in skipped.items():
        print(f"case {key} skipped: {why}")
    for key, r in results.items():
        if r["skipped_steps"]:
            print(f"case {key}: {r['skipped_steps']} steps skipped with a non-finite loss")
    busy = [k for k, r in results.items() if r["other_cpu"] > 0.25]
    if busy:
        print(
            f"other processes kept {max(results[k]['other_cpu'] for k in busy):.1f} of "
            f"{os.cpu_count()} cores busy during case(s) {' '.join(busy)}: those figures are "
            "disturbed (run again on a quiet machine)"
        )
    ratios = {}
    print()
    for name, a, b, meaning in RATIOS:
        if a not in results or b not in results:
            continue
        ra, rb = results[a], results[b]
        ratio = ratios[name] = {
            "meaning": meaning,
            "samples_per_s": ra["samples_per_s"] / rb["samples_per_s"],
            "best": ra["samples_per_s_best"] / rb["samples_per_s_best"],
            "samples_per_cpu_s": ra["samples_per_cpu_s"] / rb["samples_per_cpu_s"],
        }
        print(
            f"ratio {name:<6} {ratio['samples_per_s']:5.2f}  (best {ratio['best']:4.2f}, "
            f"per CPU-s {ratio['samples_per_cpu_s']:4.2f})  {meaning}"
        )
    print(
        f"\nload average {os.getloadavg()[0]:.1f} at the end; "
        f"{time.perf_counter() - start:.0f} s in all",
        flush=True,
    )
    if args.json:
        document = {
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "device": args.device + gpu,
            "model": {"backbone": config.model.backbone, "depth": config.model.depth},
            "input_shape": list(preprocess.spectrogram_shape),
            "batch": config.optim.batch_size,
            "data": data_info,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "rounds": args.rounds,
            "results": results,
            "skipped": skipped,
            "ratios": ratios,
        }
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
