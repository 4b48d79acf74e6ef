r"""quake classify: label every event of a catalog with class probabilities.

    quake classify --model runs/my-run --catalog catalog.xml --waveforms data/ \
        --out predictions.csv [--quakeml classified.xml] [--stations-out per_station.csv]

(or python scripts/classify.py ...). Sharded over processes (each rank a slice of the catalog,
rank 0 merges one output):

    torchrun --standalone --nproc_per_node 2 -m quake classify --model ... --out predictions.csv

See docs/classification.md and docs/scaling.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from quake.cli import run_command
from quake.options import (
    DEFAULT_AFTER_S,
    DEFAULT_BEFORE_S,
    ID_RULES,
    INFERENCE_PRECISIONS,
    SOURCE_KINDS,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quake classify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True, help="run folder (uses its model/) or model folder"
    )
    parser.add_argument(
        "--catalog", required=True, help="QuakeML (.xml/.quakeml/.qml) or CSV catalog"
    )
    parser.add_argument(
        "--waveforms",
        required=True,
        help="per-event miniSEED folders, an SDS archive, a SeisBench set or an FDSN URL",
    )
    parser.add_argument("--out", required=True, help="predictions CSV (one row per catalog event)")
    parser.add_argument(
        "--quakeml", help="write the catalog with event types set to the predictions"
    )
    parser.add_argument("--stations-out", help="per-station CSV (probabilities and skip reasons)")
    parser.add_argument(
        "--id-rule", default="auto", help=f"event id rule, one of {', '.join(ID_RULES)}"
    )
    parser.add_argument(
        "--overwrite-reviewed",
        action="store_true",
        help="also set the type of analyst-reviewed events in --quakeml",
    )
    parser.add_argument(
        "--overwrite-types",
        action="store_true",
        help="also set the type of events that already have one in --quakeml (the previous "
        "type goes into the comment)",
    )
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="allow --quakeml to be the --catalog file itself (the original is kept as <name>.bak)",
    )
    parser.add_argument(
        "--min-probability",
        type=float,
        default=0.0,
        metavar="P",
        help="below this probability of its predicted class an event is marked for review "
        "(review column of --out) and --quakeml sets no type for it (default 0: none)",
    )
    parser.add_argument("--resume", action="store_true", help="skip events already in --out")
    parser.add_argument("--batch-size", type=int, default=128, help="windows per model call")
    parser.add_argument(
        "--source", default="auto", choices=SOURCE_KINDS, help="waveform source kind"
    )
    parser.add_argument(
        "--window-before-s",
        type=float,
        default=DEFAULT_BEFORE_S,
        help="SDS/FDSN: seconds of data requested before the origin time",
    )
    parser.add_argument(
        "--window-after-s",
        type=float,
        default=DEFAULT_AFTER_S,
        help="SDS/FDSN: seconds of data requested after the origin time",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="reader processes preparing events ahead of the model (0: none)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "auto"],
        help="where the model runs (auto: CUDA when available)",
    )
    parser.add_argument(
        "--precision",
        choices=INFERENCE_PRECISIONS,
        default="fp32",
        help="the model's arithmetic, as quake annotate's: fp32 (default: a catalog's "
        "probabilities in float32), bf16 (autocast: bf16 on CPU, native on AVX512-BF16/AMX "
        "CPUs; bf16 or fp16 on GPU) or auto (bf16 where the CPU or GPU computes it natively)",
    )
    parser.add_argument("--amp", action="store_true", help="the same as --precision bf16")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every skipped station; a traceback with an error",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return run_command(
        lambda: _classify(args),
        verbose=args.verbose,
        resume_hint=f"rerun with --resume to keep the events already in {args.out}",
    )


def _classify(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from quake.classify.outputs import agreement_path
    from quake.runtime import joined_ranks

    # gloo: only a barrier, the rank and a small summary pass between the ranks
    with (
        joined_ranks(backend="gloo") as ranks,
        logging_redirect_tqdm(),
    ):  # log lines above the progress bar
        summary = _run(args, ranks)
    if not ranks.is_main:
        return 0
    ranks_note = f" over {ranks.world_size} processes" if ranks.enabled else ""
    print(
        f"{summary.n_events} events -> {args.out}{ranks_note}: {summary.n_classified} classified, "
        f"{summary.n_unclassified} without usable waveform, {summary.n_resumed} kept from a previous run; "
        f"{summary.n_windows} station windows, {summary.events_per_s:.1f} events/s"
    )
    if args.min_probability > 0:
        print(
            f"{summary.n_for_review} events below --min-probability {args.min_probability:g}: "
            "marked for review (review column), no type set in --quakeml"
        )
    if summary.skip_counts:
        print(
            "skipped: "
            + "; ".join(f"{reason} x{n}" for reason, n in summary.skip_counts.most_common())
        )
    if summary.quality_counts:
        print(
            "stations used with a quality flag (see the quality column of --stations-out): "
            + "; ".join(f"{flag} x{n}" for flag, n in summary.quality_counts.most_common())
        )
    print(f"compared with the model card: {summary.card_check.describe()}")
    if args.quakeml:
        print(f"QuakeML -> {args.quakeml}: {summary.quakeml_counts}")
    if summary.agreement:
        print(f"catalog type vs prediction (events; also in {agreement_path(args.out)}):")
        classes = sorted({p for row in summary.agreement.values() for p in row})
        print("  " + " | ".join(["catalog type", *classes]))
        for truth, row in summary.agreement.items():
            print("  " + " | ".join([truth, *(str(row.get(c, 0)) for c in classes)]))
    return 0


def _run(args: argparse.Namespace, ranks):
    from quake.classify.run import run_classification
    from quake.deploy import load
    from quake.runtime import inference_amp

    device = ranks.device(args.device)
    return run_classification(
        load(args.model, device=device),
        args.catalog,
        args.waveforms,
        args.out,
        quakeml=args.quakeml,
        stations_out=args.stations_out,
        id_rule=args.id_rule,
        overwrite_reviewed=args.overwrite_reviewed,
        overwrite_types=args.overwrite_types,
        in_place=args.in_place,
        min_probability=args.min_probability,
        resume=args.resume,
        batch_size=args.batch_size,
        source=args.source,
        before_s=args.window_before_s,
        after_s=args.window_after_s,
        workers=args.workers,
        progress=not args.no_progress,
        amp=args.amp or inference_amp(args.precision, device),
        ranks=ranks,
        model_path=args.model,
    )


if __name__ == "__main__":
    sys.exit(main())
