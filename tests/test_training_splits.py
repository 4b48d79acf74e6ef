"""Grouped stratified folds: no event on two sides, every trace tested once, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from quake.training.config import load_config
from quake.training.splits import (
    Fold,
    check_disjoint_groups,
    check_split_values,
    cv_folds,
    grouped_folds,
    predefined_folds,
)


def _events(n_events=60, seed=0):
    rng = np.random.default_rng(seed)
    stations = rng.integers(1, 4, n_events)
    groups = np.repeat([f"ev{i}" for i in range(n_events)], stations)
    labels = np.repeat(np.arange(n_events) % 3, stations)
    return labels, groups


def test_folds_are_grouped_complete_and_stratified():
    labels, groups = _events()
    folds = grouped_folds(labels, groups, 4, val_fraction=0.2, seed=1)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # each trace tested exactly once
    for fold in folds:
        parts = [set(groups[fold.train]), set(groups[fold.val]), set(groups[fold.test])]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(labels)
        assert len(fold.val) > 0
        assert set(labels[fold.test]) == {0, 1, 2}  # stratified: every class in every test fold


def test_a_train_fraction_keeps_whole_events_per_class_and_the_same_test_folds():
    labels, groups = _events(n_events=90)
    full = grouped_folds(labels, groups, 3, seed=2)
    quarter = grouped_folds(labels, groups, 3, seed=2, train_fraction=0.25)
    again = grouped_folds(labels, groups, 3, seed=2, train_fraction=0.25)
    for f, q, a in zip(full, quarter, again, strict=True):
        assert np.array_equal(f.test, q.test)  # the same test folds as at 100 %
        assert np.array_equal(q.train, a.train) and np.array_equal(q.val, a.val)
        kept = np.concatenate([q.train, q.val])
        assert set(kept) <= set(np.concatenate([f.train, f.val]))
        events = set(groups[kept])
        assert np.array_equal(np.sort(kept), np.flatnonzero(np.isin(groups, list(events))))
        for c in range(3):  # 20 training events per class per fold -> 5 kept
            full_events = {g for g in set(groups[np.concatenate([f.train, f.val])])
                           if labels[groups == g][0] == c}  # fmt: skip
            mine = {g for g in events if labels[groups == g][0] == c}
            assert len(mine) == round(0.25 * len(full_events))
    with pytest.raises(ValueError, match=r"cv.train_fraction=0.5 is invalid.*grouped"):
        load_config(None, {"cv.strategy": "predefined", "cv.train_fraction": 0.5})
    with pytest.raises(ValueError, match=r"cv.train_fraction=0.0 is invalid"):
        load_config(None, {"cv.train_fraction": 0.0})


def test_folds_are_reproducible_and_depend_on_seed():
    labels, groups = _events()
    a = grouped_folds(labels, groups, 3, seed=7)
    b = grouped_folds(labels, groups, 3, seed=7)
    c = grouped_folds(labels, groups, 3, seed=8)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c, strict=True))


def test_fold_round_trips_through_dict():
    labels, groups = _events()
    fold = grouped_folds(labels, groups, 3)[0]
    again = Fold.from_dict(fold.to_dict())
    assert np.array_equal(again.train, fold.train) and np.array_equal(again.test, fold.test)


def test_too_few_groups_or_folds_are_rejected():
    labels, groups = _events(n_events=3)
    with pytest.raises(ValueError, match="at least 5 distinct source_id groups, got 3"):
        grouped_folds(labels, groups, 5)
    with pytest.raises(ValueError, match="at least 2 splits, got 1"):
        grouped_folds(labels, groups, 1)


def test_leaky_split_is_detected():
    groups = np.array(["a", "a", "b", "c"])
    leaky = Fold(0, train=np.array([0, 2]), val=np.array([3]), test=np.array([1]))
    with pytest.raises(ValueError, match="source_id 'a' is in both train and test"):
        check_disjoint_groups([leaky], groups)


def test_a_class_with_fewer_events_than_folds_is_refused():
    labels, groups = _events(n_events=60)
    rare = np.isin(groups, ["ev0", "ev3", "ev6"])  # three events of class 0 become class 3
    labels = np.where(rare, 3, labels)
    with pytest.raises(
        ValueError, match=r"class 3 has 3 event\(s\), fewer than the 5 folds: .*--folds 3"
    ):
        grouped_folds(labels, groups, 5)
    folds = grouped_folds(labels, groups, 3)  # as the message suggests: every fold sees it
    for fold in folds:
        assert 3 in set(labels[fold.train]) | set(labels[fold.val])
        assert 3 in set(labels[fold.test])


# --- cv.strategy: predefined (the set's own split column, SeisBench's train/dev/test) ----------
def _split_by_event(groups, seed=0):
    """A split column that assigns whole events: about 60% train, 20% dev, 20% test."""
    events = np.unique(groups)
    part = dict(zip(events, np.random.default_rng(seed).choice(
        ["train", "dev", "test"], len(events), p=[0.6, 0.2, 0.2]), strict=True))  # fmt: skip
    return np.array([part[g] for g in groups], dtype=object)


def test_predefined_split_is_one_fold_with_dev_as_validation():
    labels, groups = _events()
    splits = _split_by_event(groups)
    (fold,) = cv_folds("predefined", labels, groups, splits=splits, n_folds=5, seed=3)
    assert fold.index == 0
    assert fold.train.tolist() == np.flatnonzero(splits == "train").tolist()
    assert fold.val.tolist() == np.flatnonzero(splits == "dev").tolist()
    assert fold.test.tolist() == np.flatnonzero(splits == "test").tolist()
    check_disjoint_groups([fold], groups)
    # the seed and the number of folds play no part: the set decides
    assert cv_folds("predefined", labels, groups, splits=splits, seed=9)[0].test.tolist() == (
        fold.test.tolist()
    )
    assert len(cv_folds("grouped", labels, groups, n_folds=3)) == 3


def test_predefined_split_refuses_a_missing_or_bad_column():
    labels, groups = _events()
    with pytest.raises(ValueError, match=r"needs a 'split' column.*cv.strategy=grouped"):
        predefined_folds(labels, groups, None)
    splits = _split_by_event(groups)
    splits[:3] = ["Train", "validation", np.nan]
    with pytest.raises(ValueError, match=r"3 traces have a 'split' value.*'Train' x1.*'nan' x1"):
        predefined_folds(labels, groups, splits)
    assert check_split_values(np.array(["dev", "test"], dtype=object)).tolist() == ["dev", "test"]


def test_predefined_split_refuses_an_empty_part_a_cut_event_or_an_unseen_class():
    labels, groups = _events()
    splits = _split_by_event(groups)
    no_dev = np.where(splits == "dev", "train", splits)
    with pytest.raises(ValueError, match=r"no dev traces"):
        predefined_folds(labels, groups, no_dev)
    cut = splits.copy()
    event = next(g for g in np.unique(groups) if (groups == g).sum() >= 2)
    rows = np.flatnonzero(groups == event)
    cut[rows] = "train"
    cut[rows[-1]] = "test"  # one station of the event on the other side
    with pytest.raises(
        ValueError, match=rf"source_id '{event}' in both train and test.*never cuts"
    ):
        predefined_folds(labels, groups, cut)
    unseen = splits.copy()
    unseen[(labels == 2) & (splits == "train")] = "dev"
    with pytest.raises(ValueError, match=r"classes \['explosion'\] have dev traces but no train"):
        predefined_folds(labels, groups, unseen, class_names=["earthquake", "noise", "explosion"])


def test_cv_strategy_is_validated_and_grouped_by_default():
    assert load_config().cv.strategy == "grouped"
    assert load_config(overrides={"cv.strategy": "predefined"}).cv.strategy == "predefined"
    with pytest.raises(ValueError, match=r"cv\.strategy='random'.*grouped, predefined"):
        load_config(overrides={"cv.strategy": "random"})
