"""Grouped, stratified splits: the traces of one event (``source_id``) never sit on both sides.

``cv.strategy: grouped`` (the default): the outer split is ``StratifiedGroupKFold`` over
``source_id``; inside each training fold a second grouped split holds out a validation share for
early stopping, so the test fold is touched exactly once, after the checkpoint is chosen.

``cv.strategy: predefined``: one fold from the set's own ``split`` column, SeisBench's
``train``/``dev``/``test`` (as benchmark comparisons expect): ``dev`` is the validation split.
It is refused when it would cut an event or test a class that training never sees.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from quake.training.config import CV_STRATEGIES

logger = logging.getLogger(__name__)

#: The metadata column of predefined splits and its values (SeisBench's names and values).
SPLIT_COLUMN = "split"
SPLIT_VALUES = ("train", "dev", "test")


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
    train_fraction: float = 1.0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """K stratified folds grouped by ``groups``, each with a grouped validation split.
    ``train_fraction`` < 1 keeps that share of each fold's training events (before the
    validation split; the test folds are unchanged), for label-efficiency curves.
    ``class_names`` (index -> name) makes errors name a class rather than its index."""
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    _validate(labels, groups, n_folds, "cross-validation")
    _check_events_per_class(labels, groups, n_folds, class_names)
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (train_val, test) in enumerate(outer.split(np.zeros(len(labels)), labels, groups)):
        if train_fraction < 1.0:
            train_val = subsample_events(
                train_val, labels, groups, fraction=train_fraction, seed=seed + 2000 + k
            )
        train, val = grouped_validation_split(
            train_val, labels, groups, fraction=val_fraction, seed=seed + 1000 + k
        )
        folds.append(Fold(index=k, train=np.sort(train), val=np.sort(val), test=np.sort(test)))
    check_disjoint_groups(folds, groups)
    return folds


def subsample_events(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, fraction: float, seed: int
) -> np.ndarray:
    """The traces of a random ``fraction`` of the events in ``indices``, per class (an event's
    class: its most common label), at least 2 events of each class so that the validation split
    and training both still see it. Whole events: a kept event keeps all its traces."""
    indices = np.asarray(indices)
    rng = np.random.default_rng(seed)
    frame = {}
    for i in indices:
        frame.setdefault(groups[i], []).append(labels[i])
    event_class = {g: Counter(v).most_common(1)[0][0] for g, v in sorted(frame.items())}
    kept = set()
    for c in sorted(set(event_class.values())):
        events = sorted(g for g, label in event_class.items() if label == c)
        n = min(len(events), max(2, int(round(fraction * len(events)))))
        kept.update(rng.choice(events, size=n, replace=False).tolist())
    return indices[np.isin(groups[indices], list(kept))]


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


def check_split_values(splits: Sequence | np.ndarray | None, where: str = "the set") -> np.ndarray:
    """The ``split`` values as a str array; ValueError naming the bad values (with counts) when
    the column is missing or a row holds anything but ``train``, ``dev`` or ``test``."""
    if splits is None:
        raise ValueError(
            f"cv.strategy=predefined needs a {SPLIT_COLUMN!r} column ({', '.join(SPLIT_VALUES)}, "
            f"as in SeisBench sets); {where} has none: expected one, or cv.strategy=grouped"
        )
    values = np.asarray(splits, dtype=object)
    bad = Counter(v if isinstance(v, str) else repr(v) for v in values if v not in SPLIT_VALUES)
    if bad:
        shown = ", ".join(f"{v!r} x{n}" for v, n in bad.most_common(5))
        raise ValueError(
            f"{where}: {sum(bad.values())} traces have a {SPLIT_COLUMN!r} value that is not one "
            f"of {', '.join(SPLIT_VALUES)} ({shown}); expected every trace in one of them"
        )
    return values.astype(str)


def predefined_folds(
    labels: np.ndarray,
    groups: np.ndarray,
    splits: Sequence | np.ndarray | None,
    *,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """One fold from a set's own ``split`` column: ``train`` trains, ``dev`` is the validation
    split (early stopping, checkpoint choice), ``test`` is scored once. ValueError naming the
    problem when a part is empty, a class of ``dev``/``test`` has no training trace, or an event
    (``source_id``) sits in two parts."""
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    values = check_split_values(splits)
    if not labels.shape == groups.shape == values.shape:
        raise ValueError(
            f"labels, groups and splits must have the same length, got {labels.shape}, "
            f"{groups.shape} and {values.shape}"
        )
    parts = {name: np.flatnonzero(values == name) for name in SPLIT_VALUES}
    empty = [name for name, idx in parts.items() if len(idx) == 0]
    if empty:
        counts = {name: len(idx) for name, idx in parts.items()}
        raise ValueError(
            f"the {SPLIT_COLUMN!r} column has no {' and no '.join(empty)} traces (counts "
            f"{counts}); expected train, dev and test traces"
        )
    trained = set(labels[parts["train"]].tolist())
    for name in ("dev", "test"):
        unseen = sorted(set(labels[parts[name]].tolist()) - trained)
        if unseen:
            shown = [class_names[int(u)] if class_names is not None else u for u in unseen]
            raise ValueError(
                f"classes {shown} have {name} traces but no train traces in the "
                f"{SPLIT_COLUMN!r} column; expected every class of {name} in train"
            )
    fold = Fold(index=0, train=parts["train"], val=parts["dev"], test=parts["test"])
    sets = {name: set(groups[idx].tolist()) for name, idx in parts.items()}
    for first, second in (("train", "dev"), ("train", "test"), ("dev", "test")):
        shared = sets[first] & sets[second]
        if shared:
            raise ValueError(
                f"the {SPLIT_COLUMN!r} column puts source_id {sorted(shared)[0]!r} in both "
                f"{first} and {second} ({len(shared)} events shared): a split never cuts an "
                "event; expected each source_id in one part, or cv.strategy=grouped"
            )
    logger.info(
        "predefined split: %d train, %d dev (validation), %d test traces",
        len(fold.train), len(fold.val), len(fold.test),
    )  # fmt: skip
    return [fold]


def cv_folds(
    strategy: str,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    splits: Sequence | np.ndarray | None = None,
    n_folds: int = 5,
    val_fraction: float = 0.15,
    train_fraction: float = 1.0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """The folds of ``cv.strategy``: :func:`grouped_folds` or :func:`predefined_folds`."""
    if strategy == "grouped":
        return grouped_folds(
            labels,
            groups,
            n_folds,
            val_fraction=val_fraction,
            train_fraction=train_fraction,
            seed=seed,
            class_names=class_names,
        )
    if strategy == "predefined":
        return predefined_folds(labels, groups, splits, class_names=class_names)
    raise ValueError(f"cv.strategy {strategy!r}; expected one of {', '.join(CV_STRATEGIES)}")
