"""Grouped, stratified splits: the traces of one event (``source_id``) never sit on both sides.

The outer split is ``StratifiedGroupKFold`` over ``source_id``; inside each training fold a
second grouped split holds out a validation share for early stopping, so the test fold is
touched exactly once, after the checkpoint is chosen.
"""

from __future__ import annotations

import logging
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


def grouped_folds(
    labels: np.ndarray,
    groups: np.ndarray,
    n_folds: int,
    *,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> list[Fold]:
    """K stratified folds grouped by ``groups``, each with a grouped validation split."""
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    _validate(labels, groups, n_folds, "cross-validation")
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
