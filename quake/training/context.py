"""Catalog context in cross-validated training: per fold, a context model fit on the fold's
training events and the test events' figures with and without it (metrics.json's ``context``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from quake.models.context import FEATURES, ContextModel, context_features
from quake.probabilities import combine_models
from quake.training import metrics as M


def cross_validate_context(
    events: pd.DataFrame,
    labels: np.ndarray,
    source_ids: np.ndarray,
    folds: Sequence,
    waveform_probs: Sequence[np.ndarray],
    class_names: Sequence[str],
    timezone_name: str | None,
) -> tuple[dict, list[ContextModel]]:
    """Per fold: a context model fit on the events of its training and validation traces, and
    the test events' probabilities with it (the waveform model's event probabilities and the
    context model's, one equal vote each) and from the context alone.

    ``events``: :func:`event_table` of the run's traces; ``waveform_probs``: per fold the
    deployed model's test-trace probabilities. Returns the ``context`` block of metrics.json
    and the fold models."""
    features = context_features(events, timezone_name)
    row_of = {sid: i for i, sid in enumerate(events["source_id"].astype(str))}
    source_ids = np.asarray(source_ids).astype(str)
    with_context, alone, models = [], [], []
    for fold, probs in zip(folds, waveform_probs, strict=True):
        train = np.concatenate([fold.train, fold.val])
        train_events = pd.DataFrame({"sid": source_ids[train], "y": labels[train]})
        majority = train_events.groupby("sid")["y"].agg(lambda v: v.mode().iloc[0])
        model = ContextModel.fit(
            features[[row_of[s] for s in majority.index]],
            majority.to_numpy(),
            len(class_names),
            timezone_name,
        )
        models.append(model)
        event_probs, event_true, keys, _ = M.combine_by_event(
            probs, labels[fold.test], source_ids[fold.test]
        )
        # an id holding traces of two classes is combined per class as "<id>#<label>"
        rows = [row_of[k] if k in row_of else row_of[k.rsplit("#", 1)[0]] for k in keys]
        context_probs = model.predict_proba(features[rows])
        both = combine_models([event_probs, context_probs])
        with_context.append(
            {"fold": fold.index, **M.classification_metrics(event_true, both, class_names)}
        )
        alone.append(
            {"fold": fold.index, **M.classification_metrics(event_true, context_probs, class_names)}
        )
    block = {
        "features": list(FEATURES),
        "timezone": timezone_name or "solar time of each event's longitude",
        "n_events": len(events),
        "events_with_local_time": int((np.hypot(features[:, 0], features[:, 1]) > 0).sum()),
        "events_with_depth": int((features[:, FEATURES.index("depth_missing")] == 0).sum()),
        "events_with_magnitude": int((features[:, FEATURES.index("magnitude_missing")] == 0).sum()),
        "rule": "event probabilities of the deployed model and of a logistic regression on the "
        "catalog context (quake.models.context), normalised geometric mean, equal votes",
        "event_level": {"folds": with_context, "aggregate": M.aggregate(with_context)},
        "context_alone": {"folds": alone, "aggregate": M.aggregate(alone)},
    }
    return block, models
