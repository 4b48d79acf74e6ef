"""The saved manifest of a deployable classifier (``classifier.json``): reading it with errors
that name the file, writing it into a staged folder, and the SHA-256 digests that tie a
manifest to the files it names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from quake.runtime import publish_staged, read_json

CLASSIFIER_FILE = "classifier.json"


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
