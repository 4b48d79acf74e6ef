"""The model card saved beside a deployed model (``card.json``): what it was trained on and how
well it did, so that what classifies a catalog can be compared with what the model learned.

Keys: ``classes`` (name -> training traces), ``training_events`` (the event ids, sorted) and
``training_events_sha256`` (of those ids, one per line), ``stations`` (``NET.STA``),
``components`` and ``sampling_rates_hz`` (value -> training traces; the rates as recorded,
before resampling), ``window`` (anchor, length, rate of the model's input, windows per recording) and
``cross_validated`` (the deployed model's figures: mean, std and worst fold over the folds, at
trace and event level). A card may also say where training's windows started,
``window.anchored_at`` (``p_pick``/``origin_time``/``trace_start`` -> training windows), which
``anchor`` alone does not tell under ``p_arrival``.

Classification holds its input against the card: :mod:`quake.classify.card_check`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from quake.runtime import read_json, write_text_atomic

CARD_FILE = "card.json"


def events_digest(event_ids: Iterable[str]) -> str:
    """SHA-256 of the distinct event ids, sorted, one per line: the same training events, the
    same digest, whatever the order or the number of traces per event."""
    return hashlib.sha256("\n".join(sorted(set(event_ids))).encode()).hexdigest()


def write_card(folder: str | os.PathLike, card: dict) -> Path:
    path = Path(folder) / CARD_FILE
    write_text_atomic(path, json.dumps(card, indent=1) + "\n")
    return path


def read_card(folder: str | os.PathLike) -> dict | None:
    """The card saved beside a model, or None for a model saved without one."""
    path = Path(folder) / CARD_FILE
    return read_json(path, "the card.json of a quake model") if path.is_file() else None
