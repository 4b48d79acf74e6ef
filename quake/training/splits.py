"""Grouped, stratified splits: the traces of one event (``source_id``) never sit on both sides.

The outer split is ``StratifiedGroupKFold`` over ``source_id``; inside each training fold a
second grouped split holds out a validation share for early stopping, so the test fold is
touched exactly once, after the checkpoint is chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    """Indices (into the run's kept traces) of one cross-validation fold."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict:
        return {
            "fold": self.index,
            "train": self.train.tolist(),
            "val": self.val.tolist(),
            "test": self.test.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Fold:
        return cls(
            index=int(data["fold"]),
            train=np.asarray(data["train"], dtype=np.int64),
            val=np.asarray(data["val"], dtype=np.int64),
            test=np.asarray(data["test"], dtype=np.int64),
        )


def _validate(labels: np.ndarray, groups: np.ndarray, n_splits: int, what: str) -> None:
    if labels.shape != groups.shape:
        raise ValueError(
            f"labels and groups must have the same length, got {labels.shape} and {groups.shape}"
        )
    n_groups = len(np.unique(groups))
    if n_splits < 2:
        raise ValueError(f"{what} needs at least 2 splits, got {n_splits!r}")
    if n_groups < n_splits:
        raise ValueError(
            f"{what}: {n_splits} splits need at least {n_splits} distinct source_id groups, "
            f"got {n_groups}"
        )


def _check_events_per_class(
    labels: np.ndarray, groups: np.ndarray, n_folds: int, class_names: Sequence[str] | None
) -> None:
    """Every class needs events (groups) in every fold, or some fold tests a class its training
    part never saw: ValueError naming the class, its event count and the folds."""
    for label in np.unique(labels):
        n_events = len(np.unique(groups[labels == label]))
        if n_events < n_folds:
            name = class_names[int(label)] if class_names is not None else label.item()
            raise ValueError(
                f"class {name!r} has {n_events} event(s), fewer than the {n_folds} folds: some "
                f"fold would test it without having trained on it; expected at least {n_folds} "
                f"events per class (fewer folds: --folds {max(n_events, 2)}, or more events)"
            )


def grouped_folds(
    labels: np.ndarray,
    groups: np.ndarray,
    n_folds: int,
    *,
    val_fraction: float = 0.15,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """K stratified folds grouped by ``groups``, each with a grouped validation split.
    ``class_names`` (index -> name) makes errors name a class rather than its index."""
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    _validate(labels, groups, n_folds, "cross-validation")
    _check_events_per_class(labels, groups, n_folds, class_names)
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (train_val, test) in enumerate(outer.split(np.zeros(len(labels)), labels, groups)):
        train, val = grouped_validation_split(
            train_val, labels, groups, fraction=val_fraction, seed=seed + 1000 + k
        )
        folds.append(Fold(index=k, train=np.sort(train), val=np.sort(val), test=np.sort(test)))
    check_disjoint_groups(folds, groups)
    return folds


def grouped_validation_split(
    indices: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (train, validation) by group, about ``fraction`` of the groups held out.

    Stratified when every class has enough groups, otherwise a plain grouped shuffle split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    indices = np.asarray(indices)
    sub_labels, sub_groups = labels[indices], groups[indices]
    n_groups = len(np.unique(sub_groups))
    n_splits = max(2, int(round(1.0 / fraction)))
    if n_groups < 2:
        raise ValueError(
            f"a validation split needs at least 2 source_id groups in the training fold, got {n_groups}"
        )
    if n_groups >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train, val = next(splitter.split(np.zeros(len(indices)), sub_labels, sub_groups))
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train, val = next(splitter.split(np.zeros(len(indices)), sub_labels, sub_groups))
    return indices[train], indices[val]


def check_disjoint_groups(folds: list[Fold], groups: np.ndarray) -> None:
    """Raise if any group sits in two of a fold's train/val/test parts (a leaky split)."""
    groups = np.asarray(groups).astype(str)
    for fold in folds:
        parts = {"train": fold.train, "val": fold.val, "test": fold.test}
        sets = {name: set(groups[idx].tolist()) for name, idx in parts.items()}
        names = list(sets)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                shared = sets[first] & sets[second]
                if shared:
                    raise ValueError(
                        f"fold {fold.index}: source_id {sorted(shared)[0]!r} is in both "
                        f"{first} and {second} ({len(shared)} shared groups)"
                    )
