"""quake export: a trained classifier to ONNX (and TorchScript) with a JSON sidecar.

    quake export --model runs/my-run --out exported/my-run      (or: python scripts/export.py ...)
    quake export --model path/to/hybrid_vit_folder --preprocess preprocess.yaml --out x

Every deployed kind exports: the HybridViT ensemble (model.onnx: trimmed Z, N, E windows
(batch, 3, window_samples) -> the mean of the members' probabilities), the baseline's fold
forests (forest_<k>.onnx, on spectral features computed beside them) and the combined model
(both); quake.load(export) runs it. See quake/deploy/export.py and docs/export.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from quake.cli import run_command
from quake.options import EXPORT_FORMATS, PARITY_ATOL

if TYPE_CHECKING:
    from quake.data import PreprocessConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quake export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        help="run folder (uses its model/), model folder (classifier.json) or one HybridViT folder",
    )
    parser.add_argument("--out", required=True, help="export folder to write")
    parser.add_argument(
        "--format",
        nargs="+",
        default=list(EXPORT_FORMATS),
        choices=EXPORT_FORMATS,
        help="what to write (default: both; TorchScript is skipped with a reason if tracing fails)",
    )
    parser.add_argument(
        "--preprocess",
        help="HybridViT folder only: YAML/JSON with the PreprocessConfig it was trained with "
        "(a training config's data.preprocess is found too); default PreprocessConfig()",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    parser.add_argument(
        "--atol",
        type=float,
        default=PARITY_ATOL,
        help="largest probability difference allowed against PyTorch",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser.parse_args(argv)


def read_preprocess(path: str) -> PreprocessConfig:
    """A PreprocessConfig from YAML/JSON: the mapping itself, or its ``preprocess`` or
    ``data.preprocess`` entry (a classifier.json or a training config)."""
    import yaml

    from quake.data import PreprocessConfig

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read preprocessing config {path!r}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path!r} holds {type(loaded).__name__}; expected a mapping")
    for key in ("preprocess", "data"):
        if isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            if key == "data":
                loaded = loaded.get("preprocess") or {}
            break
    return PreprocessConfig.from_dict(loaded)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # RuntimeError: a missing exporter package, a graph that does not match predict_proba
    return run_command(lambda: _export(args), verbose=args.verbose, also=(RuntimeError,))


def _export(args: argparse.Namespace) -> int:
    from quake.deploy.export import describe_parts, export_classifier, load_exportable

    config = read_preprocess(args.preprocess) if args.preprocess else None
    classifier = load_exportable(args.model, config)
    result = export_classifier(
        classifier,
        args.out,
        formats=args.format,
        opset=args.opset,
        verify=not args.no_verify,
        atol=args.atol,
        overwrite=args.overwrite,
        source=str(args.model),
    )
    print(f"{classifier.model_id} ({describe_parts(classifier)}) -> {result.directory}")
    for name, path in result.files.items():
        print(f"  {name}: {path.name}")
    forests = result.sidecar.get("forests")
    if forests:
        features = result.sidecar["features"]
        print(f"  forests: {', '.join(forests['files'])} on {features['function']}")
    for name, parity in result.parity.items():
        print(f"  {name} export: max |diff| vs predict_proba {parity['max_abs_diff']:.2g}")
    for name, reason in result.skipped.items():
        print(f"  {name}: not written ({reason})")
    print(
        f"  sidecar: {json.dumps(result.sidecar['input']['shape'])} -> {result.sidecar['class_names']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
