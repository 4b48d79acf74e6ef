r"""quake annotate: find and classify events in days of continuous recordings.

    quake annotate --model runs/my-run --waveforms archive/ --start 2021-03-01 --end 2021-03-08 \
        --out detections.csv [--events-out events.xml] [--probabilities-out probs/] \
        [--stations 'UW.*'] [--resume]

The work is split into station-day tasks, each writing its own part beside --out
(<out>.parts/); --resume after a stop (even kill -9) skips the finished ones. See
docs/annotation.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from quake.cli import run_command
from quake.options import INFERENCE_PRECISIONS

#: The environment variable that names a Dask scheduler when ``--scheduler`` is not given.
SCHEDULER_ENV = "QUAKE_DASK_SCHEDULER"


def _threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected CLASS=PROBABILITY, e.g. earthquake=0.6"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quake annotate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True, help="run folder (uses its model/) or model folder"
    )
    parser.add_argument(
        "--waveforms",
        required=True,
        help="an SDS archive (YEAR/NET/STA/CHAN.D/ files), a folder of miniSEED files, or an "
        "FDSN service URL (with --stations)",
    )
    parser.add_argument("--out", required=True, help="detections CSV (one row per detection)")
    parser.add_argument("--start", help="first time annotated (date or ISO time; SDS: required)")
    parser.add_argument("--end", help="end of the time annotated (date or ISO time; SDS: required)")
    parser.add_argument(
        "--stations",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="NET.STA.LOC shell patterns (e.g. 'UW.*' 'CC.JRO.*'); default: every station",
    )
    parser.add_argument(
        "--stride",
        type=float,
        help="seconds between windows (default: 8 STFT hops, 5.12 s for a 100 Hz model)",
    )
    parser.add_argument(
        "--probabilities-out",
        metavar="DIR",
        help="write the class probabilities per station-day as miniSEED into DIR",
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        action="append",
        default=[],
        metavar="CLASS=P",
        help="detection threshold of a class (default: the model's decision thresholds, else "
        "0.5); repeat for several classes",
    )
    parser.add_argument(
        "--min-duration",
        type=float,
        metavar="SECONDS",
        help="shortest detection kept (default: two windows, twice the stride)",
    )
    parser.add_argument(
        "--events-out",
        metavar="PATH",
        help="events associated across stations: a table (CSV), or QuakeML when PATH ends in .xml",
    )
    parser.add_argument(
        "--min-stations",
        type=int,
        help="stations that must detect an event (default 2)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="SECONDS",
        help="most seconds from the first station onset of an event to its others (default 30: "
        "first arrivals across a regional network)",
    )
    parser.add_argument("--resume", action="store_true", help="skip finished station-days")
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (default 0: this process)"
    )
    parser.add_argument(
        "--scheduler",
        default=os.environ.get(SCHEDULER_ENV),
        metavar="ADDRESS",
        help=f"run the station-days on the Dask distributed scheduler at ADDRESS (default: "
        f"${SCHEDULER_ENV}, else local); its workers must see the same paths",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="windows per model call")
    parser.add_argument(
        "--precision",
        choices=INFERENCE_PRECISIONS,
        default="auto",
        help="the model's arithmetic: auto (default: bf16 autocast where the CPU or GPU computes "
        "bf16 natively, else float32), bf16 or fp32",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(
        lambda: _annotate(args),
        verbose=args.verbose,
        resume_hint="run the same command with --resume to go on",
    )


def _annotate(args: argparse.Namespace) -> int:
    import logging

    from quake.annotate.tasks import annotate_days
    from quake.deploy import load

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def progress(summary) -> None:
        if not args.no_progress:
            done = summary.finished + summary.resumed + len(summary.failed)
            print(f"\rstation-days {done}/{summary.tasks}", end="", file=sys.stderr, flush=True)

    summary = annotate_days(
        load(args.model, device=args.device),
        args.waveforms,
        args.out,
        start=args.start,
        end=args.end,
        stations=args.stations,
        resume=args.resume,
        workers=args.workers,
        loader=load,
        model_path=args.model,
        scheduler=args.scheduler,
        progress=progress,
        stride_s=args.stride,
        batch_size=args.batch_size,
        precision=args.precision,
        thresholds=dict(args.threshold) or None,
        min_duration_s=args.min_duration,
        probabilities=args.probabilities_out,
        events_out=args.events_out,
        min_stations=args.min_stations,
        tolerance_s=args.tolerance,
    )
    if not args.no_progress and summary.finished:
        print(file=sys.stderr)
    print(
        f"{summary.tasks} station-days: {summary.finished} annotated, {summary.resumed} "
        f"finished before (--resume), {len(summary.failed)} failed; {summary.windows} windows, "
        f"{summary.detections} detections -> {args.out}"
    )
    if summary.events is not None:
        print(f"{summary.events} events -> {args.events_out}")
    if summary.skipped:
        print(
            "skipped windows: " + "; ".join(f"{r} x{n}" for r, n in summary.skipped.most_common())
        )
    for key, error in summary.failed.items():
        print(f"failed: {key}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
