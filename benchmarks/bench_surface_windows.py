#!/usr/bin/env python
"""Surface events outlast the window: does a forest see more of them with several windows per
recording, combined per event? esec-surface, the forest alone (features + 300 trees, the
training run's baseline), 5 folds grouped by event, seeds 0-2, event level, decided at the
training class priors (the balanced rule).

    python benchmarks/bench_surface_windows.py [--data ../shared/data/real/esec-surface]

Windows of the default 20.48 s at 100 Hz, starting at offsets after the recording's start (the
esec-surface recordings start about 70 s before the catalogue time: offset 68 s is the default
window, 2 s before it); each recording's windows are all on the same side of a split; an
event's probabilities combine all its stations' windows by the station-to-event rule
(quake.probabilities). Then the window the report proposes, 128 s at 32 Hz from the same
start, its features taken over the whole window at once and stretch by stretch (the forest's
own rule, quake.models.forest.feature_segments: six stretches of 21.3 s side by side).
Prints one line per choice of windows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: window starts after the recording's start (s): the default window, then tiled after it
OFFSETS = (68.0, 88.48, 108.96, 129.44, 149.92)
CHOICES = {"one window (the default)": 1, "two windows": 2, "five windows": 5}


COVERING = {"data.preprocess.window_s": 128.0, "data.preprocess.sampling_rate_hz": 32.0}


def features_at(path: Path, offset_s: float, settings: dict | None = None, segments: int = 1):
    """Spectral features (of ``segments`` stretches), labels, events and trace names of every
    kept recording's window ``offset_s`` after its start, the default window or ``settings``'."""
    from quake.data import WaveformDataAdapter, open_dataset
    from quake.models.forest import spectral_features
    from quake.training import load_config

    config = load_config(overrides={"data.path": str(path), **(settings or {})})
    preprocess = dataclasses.replace(
        config.data.preprocess_config(), anchor="offset", offset_s=offset_s
    )
    adapter = WaveformDataAdapter(
        open_dataset(path, preprocess, config.data.labels()), config=preprocess
    )
    windows = np.asarray(adapter.load_waveforms(progress=False))
    meta = adapter.metadata
    order = np.argsort(meta["trace_name"].astype(str).to_numpy())
    return (
        spectral_features(windows, preprocess.sampling_rate_hz, segments=segments)[order],
        np.asarray(adapter.labels)[order],
        meta["source_id"].astype(str).to_numpy()[order],
        meta["trace_name"].astype(str).to_numpy()[order],
    )


def event_scores(parts: list, seed: int) -> tuple[list[float], list[float]]:
    """Per fold, the event balanced accuracy and ROC AUC of a forest on ``parts`` (one
    ``features_at`` result per window offset, the same recordings in the same order)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    from quake.probabilities import combine_groups, decide

    _, y, events, _ = parts[0]
    n_classes = int(y.max()) + 1
    bas, aucs = [], []
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=seed)
    for train, test in folds.split(parts[0][0], y, events):
        forest = RandomForestClassifier(300, random_state=seed, n_jobs=-1)
        forest.fit(np.concatenate([p[0][train] for p in parts]), np.tile(y[train], len(parts)))
        probs = np.zeros((len(test) * len(parts), n_classes))
        probs[:, forest.classes_] = forest.predict_proba(
            np.concatenate([p[0][test] for p in parts])
        )
        names, codes = np.unique(np.tile(events[test], len(parts)), return_inverse=True)
        event_probs = combine_groups(probs, codes, len(names))
        truth = np.array([y[test][events[test] == name][0] for name in names])
        priors = np.maximum(np.bincount(y[train], minlength=n_classes) / len(train), 1e-3)
        bas.append(balanced_accuracy_score(truth, decide(event_probs, priors)))
        if len(set(truth)) == n_classes:
            aucs.append(roc_auc_score(truth, event_probs, multi_class="ovr"))
    return bas, aucs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(os.environ.get("QUAKE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
    parser.add_argument("--data", type=Path, default=default / "esec-surface")
    args = parser.parse_args(argv)
    from quake.models.forest import feature_segments

    parts = [features_at(args.data, offset) for offset in OFFSETS]
    if any(not np.array_equal(p[3], parts[0][3]) for p in parts):
        raise SystemExit("the windows at different offsets kept different recordings")
    choices = {label: parts[:n] for label, n in CHOICES.items()}
    stretches = feature_segments(COVERING["data.preprocess.window_s"])
    for label, segments in (("128 s at 32 Hz, whole", 1), ("128 s at 32 Hz, stretches", stretches)):
        choices[label] = [features_at(args.data, OFFSETS[0], COVERING, segments)]
    for label, choice in choices.items():
        bas, aucs = [], []
        for seed in (0, 1, 2):
            b, a = event_scores(choice, seed)
            bas += b
            aucs += a
        print(
            f"{label}: event balanced accuracy {np.mean(bas):.3f} (worst fold {np.min(bas):.3f}),"
            f" event ROC AUC {np.mean(aucs):.3f} ({len(aucs)} folds with every class)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
