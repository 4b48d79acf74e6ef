"""quake pretrain: self-supervised pretraining of the HybridViT on unlabelled recordings.

    quake pretrain --data /data/unlabelled-pnw --out runs/pretrain-pnw
    quake train --pretrained runs/pretrain-pnw ...        (every fold starts from it)

reads every --data path (SeisBench set, catalog + miniSEED folder with or without event types,
or a plain folder tree of miniSEED files; labels ignored), cuts the windows as training does
(the same preprocessing keys; --preprocess-from takes them from a training config), trains the
encoder with masked spectrogram modelling (or --objective contrastive: two stations of one
event as the positive pair) and writes DIR/: encoder.safetensors, pretrain.json,
loss.json, loss.png, skipped.csv (each file or recording skipped, with its reason). Rerun with
the same --out to resume after the last finished epoch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="quake pretrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="PATH",
        help="unlabelled data (repeat to pool several): SeisBench set, catalog + miniSEED "
        "folder (or the catalog file), a folder tree of miniSEED files, or an SDS archive "
        "(with --start and --end)",
    )
    p.add_argument(
        "--out", help="output folder (default runs/<timestamp>-pretrain); an existing one resumes"
    )
    p.add_argument("--config", type=Path, help="YAML pretraining config (keys as in pretrain.json)")
    p.add_argument(
        "--preprocess-from",
        type=Path,
        metavar="TRAIN_CONFIG",
        help="take data.preprocess from this training config (e.g. configs/pnw-eqex.yaml), so "
        "the windows are those the fine-tuning will see",
    )
    p.add_argument("--backbone", help="timm ViT the blocks come from: tiny, small, base")
    p.add_argument("--depth", type=int, help="number of ViT blocks (as in the later training)")
    p.add_argument(
        "--init",
        help="start from: none (random, default), timm (ImageNet weights, cached or downloaded), "
        "or PATH (a timm checkpoint file or another pretraining folder)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument(
        "--objective",
        choices=["masked_spectrogram", "contrastive"],
        help="masked_spectrogram (default): redraw hidden spectrogram cells; contrastive: two "
        "stations of one event (or two views of one window) as the positive pair",
    )
    p.add_argument("--mask-ratio", type=float, help="fraction of the tokens masked (default 0.6)")
    p.add_argument(
        "--windows-per-recording",
        type=int,
        help="plain miniSEED trees: consecutive windows per recording; SDS archives: random "
        "crops per station-day (default 1)",
    )
    p.add_argument("--start", help="SDS archives: the first time read (ISO 8601)")
    p.add_argument("--end", help="SDS archives: the time reading stops (ISO 8601)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="default fp32")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. objective.decoder_depth=2",
    )
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="a traceback with an error")
    return p.parse_args(argv)


FLAG_KEYS = {
    "data": "data.paths",
    "out": "run.out",
    "backbone": "model.backbone",
    "depth": "model.depth",
    "init": "model.init",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "objective": "objective.name",
    "mask_ratio": "objective.mask_ratio",
    "windows_per_recording": "data.windows_per_recording",
    "start": "data.start",
    "end": "data.end",
    "seed": "seed",
    "device": "run.device",
    "threads": "run.num_threads",
    "precision": "optim.precision",
    "quiet": "run.quiet",
}


def overrides_from_args(args: argparse.Namespace) -> dict:
    from quake.cli import config_overrides

    return config_overrides(args, FLAG_KEYS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from quake.cli import run_command

    state: dict = {}

    def resume_hint() -> str:
        config = state.get("config")
        if config is None or config.run.out is None:
            return ""
        return f"rerun with --out {config.run.out} to resume after the last finished epoch"

    return run_command(
        lambda: _pretrain(args, state), verbose=args.verbose, resume_hint=resume_hint
    )


def _pretrain(args: argparse.Namespace, state: dict) -> int:
    from quake.commands.train import setup_logging
    from quake.pretrain import load_pretrain_config, pretrain
    from quake.pretrain.run import default_out

    config = load_pretrain_config(
        args.config, overrides_from_args(args), preprocess_from=args.preprocess_from
    )
    if config.run.out is None:
        config.run.out = str(default_out())
    state["config"] = config
    setup_logging(config.run.quiet)
    if config.run.quiet:
        result = pretrain(config)
    else:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # log lines above the progress bar
            result = pretrain(config)
    s = result.summary
    if s is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    p, t = s["progress"], s["timings"]
    print(f"pretraining folder: {result.out}")
    print(
        f"windows: {s['data']['n_windows']} ({s['data']['hours']:.1f} h), "
        f"seen {p['windows_seen']} over {p['epochs_done']} epochs ({p['hours_seen']:.1f} h)"
    )
    dropped = s["data"]["dropped"]
    if dropped:
        counts = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
        print(f"skipped: {counts} (each named in {result.out / s['files']['skipped']})")
    print(
        f"loss: {p['first_loss']:.4f} -> {p['final_loss']:.4f} (held-out "
        f"{_fmt(p['first_val_loss'])} -> {_fmt(p['final_val_loss'])}); "
        f"{t['training_s'] / 60:.1f} min training, {_fmt(t['windows_per_s'], '.0f')} windows/s"
    )
    print(f"fine-tune: quake train --pretrained {result.out} --backbone "
          f"{s['model']['backbone']} --depth {s['model']['depth']} ...")  # fmt: skip
    return 0


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
