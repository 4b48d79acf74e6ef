"""The saved manifest of a deployable classifier (``classifier.json``): reading it with errors
that name the file, writing it into a staged folder, and the SHA-256 digests that tie a
manifest to the files it names."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from quake.runtime import publish_staged, read_json

CLASSIFIER_FILE = "classifier.json"

logger = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def saved_format(path: Path) -> str | None:
    """The ``format`` a ``classifier.json`` names, or None when it cannot be read."""
    try:
        return json.loads(path.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None  # load says what is wrong with it


def read_manifest(folder: Path, expected_format: str) -> dict:
    """``folder/classifier.json``, refused naming the file unless it has ``expected_format``."""
    manifest = read_json(folder / CLASSIFIER_FILE, "the classifier.json of a quake model")
    if manifest.get("format") != expected_format:
        raise ValueError(
            f"{str(folder / CLASSIFIER_FILE)!r} has format {manifest.get('format')!r}; "
            f"expected {expected_format!r}"
        )
    return manifest


def write_manifest(staging: Path, manifest: dict, directory: Path) -> Path:
    """Write ``classifier.json`` into the staged folder and move it into place."""
    (staging / CLASSIFIER_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return publish_staged(staging, directory)


def check_digests(
    files: dict[Path, str | None] | None, manifest_path: Path, model_id: object, what: str = "file"
) -> None:
    """ValueError naming the file when one of ``files`` is missing or differs from the SHA-256
    recorded in ``manifest_path`` when model ``model_id`` was saved: a file edited, replaced or
    cut short after saving never runs under that id. ``files`` None: the manifest was written
    before digests were recorded; the model loads with a warning."""
    if files is None:
        logger.warning(
            "%s records no %s digests (saved by an older quake): %ss not verified",
            manifest_path,
            what,
            what,
        )
        return
    for path, expected in files.items():
        if not path.is_file():
            raise ValueError(
                f"{str(path)!r} is missing; expected the file saved with model {model_id!r}"
            )
        found = file_sha256(path)
        if found != expected:
            raise ValueError(
                f"{str(path)!r} has SHA-256 {found[:16]}..., not the {str(expected)[:16]}... "
                f"recorded in {manifest_path.name} when model {model_id!r} was saved; expected "
                "the saved file (the file was changed after saving)"
            )
