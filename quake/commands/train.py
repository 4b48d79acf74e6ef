"""quake train: cross-validated training with event-classification reports.

    quake train --backbone tiny --depth 4        (or: python scripts/train.py ...)

runs 5-fold grouped cross-validation on the embedded synthetic set and writes
``runs/<timestamp>-<backbone>-d<depth>/`` (metrics.json, report.md, plots, model/). Settings come
from the defaults (listed in ``configs/default.yaml``), then ``--config``, then the flags below; ``--set KEY=VALUE`` reaches
any other key (e.g. ``--set optim.weight_decay=0.1``). Rerun with the same ``--out`` to resume.

    torchrun --nproc_per_node 2 -m quake train --backbone tiny --depth 4

trains every fold data-parallel over 2 processes (DDP: gloo on CPU, nccl on GPUs); rank 0 writes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="quake train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config; keys it leaves out keep the defaults (configs/default.yaml lists them)",
    )
    p.add_argument(
        "--data",
        help="dataset folder (SeisBench, STEAD, or catalog + miniSEED); default: embedded synthetic set",
    )
    p.add_argument("--backbone", help="timm ViT the blocks come from: tiny, small, base")
    p.add_argument("--depth", type=int, help="number of ViT blocks")
    p.add_argument("--folds", type=int, help="cross-validation folds (default 5)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument(
        "--pretrained",
        help="auto (timm ImageNet weights if available), none, a quake pretrain folder, or a "
        "timm checkpoint file",
    )
    p.add_argument(
        "--freeze-backbone", action="store_true", default=None, help="keep the ViT blocks frozen"
    )
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--out",
        help="run folder (default runs/<timestamp>-<backbone>-d<depth>); an existing one is resumed",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--threads", type=int, help="CPU threads per process (default: the cores / processes)"
    )
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="training forward passes: auto = bf16 where the hardware has it; fp16 on CUDA only",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the training forward pass",
    )
    p.add_argument(
        "--no-baseline", action="store_true", default=None, help="skip the spectral baseline"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. optim.weight_decay=0.1",
    )
    p.add_argument(
        "--quiet", action="store_true", default=None, help="no progress bars, warnings only"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="a traceback with an error")
    return p.parse_args(argv)


FLAG_KEYS = {
    "data": "data.path",
    "backbone": "model.backbone",
    "depth": "model.depth",
    "folds": "cv.folds",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "pretrained": "model.pretrained",
    "freeze_backbone": "model.freeze_backbone",
    "seed": "seed",
    "out": "run.out",
    "device": "run.device",
    "threads": "run.num_threads",
    "precision": "optim.precision",
    "compile": "run.compile",
    "quiet": "run.quiet",
}


def overrides_from_args(args: argparse.Namespace) -> dict:
    from quake.cli import config_overrides

    overrides = config_overrides(args, FLAG_KEYS)
    if args.no_baseline:
        overrides["baseline.enabled"] = False
    return overrides


def setup_logging(quiet: bool) -> None:
    """INFO (WARNING with --quiet) on stderr; under torchrun the other ranks say only what goes
    wrong, with their rank."""
    rank = int(os.environ.get("RANK", "0") or 0)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING if quiet or rank > 0 else logging.INFO)
    prefix = f"[rank {rank}] " if rank > 0 else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING if rank > 0 else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from quake.cli import run_command

    state: dict = {}

    def resume_hint() -> str:
        config = state.get("config")
        if config is None or config.run.out is None:  # stopped before the run folder existed
            return ""
        return f"rerun with --out {config.run.out} to resume at the first unfinished fold"

    return run_command(lambda: _train(args, state), verbose=args.verbose, resume_hint=resume_hint)


def _stat(stat: dict) -> str:
    return "n/a" if stat.get("mean") is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _train(args: argparse.Namespace, state: dict) -> int:
    from quake.training import load_config, train

    config = state["config"] = load_config(args.config, overrides_from_args(args))
    setup_logging(config.run.quiet)
    if config.run.quiet:
        result = train(config)
    else:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # log lines above the progress bars
            result = train(config)
    m = result.metrics
    if m is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print(f"run folder: {result.run_dir}")
    print(f"pretrained: {m['pretrained'].get('source')} ({m['pretrained'].get('note')})")
    print(f"deployed:   {m['deploy']['model']} (chosen: deploy.strategy {m['deploy']['strategy']})")
    blocks = [("deployed", m), ("HybridViT", m.get("hybridvit")), ("forest", m.get("baseline"))]
    for name in ("macro_f1", "balanced_accuracy", "roc_auc"):
        cells = []
        for label, block in blocks:
            if block:
                trace = block["aggregate"][name]
                event = block["event_level"]["aggregate"][name]
                cells.append(f"{label} {_stat(trace)} (event {_stat(event)})")
        print(f"{name:>18}: " + "   | ".join(cells))
    print(f"report: {result.run_dir / 'report.md'}")
    print(f"model:  {result.classifier_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
