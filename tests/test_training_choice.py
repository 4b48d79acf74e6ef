"""The deployed model is chosen on out-of-fold predictions and its decision thresholds on
validation data, never on a fold's own test part (quake.training.choice): the rules on crafted
predictions, then a real run whose HybridViT cannot learn (learning rate ~0) deploying the
forest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_run import tiny_run_config

import quake
from quake.deploy.forest import BaselineClassifier
from quake.probabilities import decide
from quake.training import train
from quake.training.choice import (
    Validation,
    calibrate_thresholds,
    choose,
    choose_models,
    choose_weight,
    class_priors,
)
from quake.training.config import DeployConfig
from quake.training.splits import Fold


def _validation(n_events: int, seed: int, hybrid_skill: float, forest_skill: float):
    """Two classes, one station per event; each part's probability of the true class drawn
    around its skill (0.5: chance)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_events)

    def probs(skill: float) -> np.ndarray:
        true_p = np.clip(rng.normal(skill, 0.1, n_events), 0.02, 0.98)
        p1 = np.where(labels == 1, true_p, 1 - true_p)
        return np.column_stack([1 - p1, p1])

    return Validation(
        labels=labels,
        groups=np.array([f"e{i}" for i in range(n_events)]),
        hybrid=probs(hybrid_skill),
        forest=probs(forest_skill),
    )


def test_the_better_part_wins_and_a_chance_hybridvit_is_not_deployed():
    forest_wins = [_validation(40, seed, 0.5, 0.85) for seed in range(3)]
    weight, losses, n_events = choose_weight(forest_wins)
    assert weight == 0.0 and n_events == 120
    assert losses[0.0] < losses[1.0]
    hybrid_wins = [_validation(40, seed, 0.9, 0.6) for seed in range(3)]
    assert choose_weight(hybrid_wins)[0] > 0.5


def _sharper(v: Validation, gain: float) -> Validation:
    """``v`` with a HybridViT that is the forest, ``gain`` surer of the true class."""
    rows = np.arange(len(v.labels))
    true_p = np.clip(v.forest[rows, v.labels] + gain, 0.0, 0.99)
    p1 = np.where(v.labels == 1, true_p, 1 - true_p)
    return Validation(v.labels, v.groups, np.column_stack([1 - p1, p1]), v.forest)


def test_a_small_difference_on_few_events_goes_to_the_forest():
    """The one-standard-error rule: on 8 events a HybridViT a little surer than the forest of
    the same answers is not deployed; on 2000 events a clearly surer one is."""
    few = [_sharper(_validation(8, 0, 0.5, 0.70), 0.02)]
    weight, losses, _ = choose_weight(few)
    assert losses[1.0] < losses[0.0] and weight == 0.0
    many = [_sharper(_validation(2000, 0, 0.5, 0.70), 0.1)]
    assert choose_weight(many)[0] > 0.0


def test_thresholds_undo_a_forest_drawn_to_the_common_class():
    """A model that ranks the rare class right but never gives it 0.5 calls every event the
    common class at argmax; thresholds from the class priors recover it."""
    rng = np.random.default_rng(1)
    labels = np.array([0] * 30 + [1] * 10)
    p1 = np.where(labels == 1, rng.uniform(0.3, 0.45, 40), rng.uniform(0.02, 0.2, 40))
    probs = np.column_stack([1 - p1, p1])
    v = Validation(labels, np.array([f"e{i}" for i in range(40)]), None, probs)
    priors = class_priors(labels, 2)
    assert (decide(probs) == 0).all()
    thresholds, power = calibrate_thresholds([probs], [v], priors)
    assert power > 0 and (decide(probs, thresholds) == labels).all()
    decision = choose([v], [v], priors, weights=(0.0,))
    assert decision.model == "forest"
    np.testing.assert_allclose(decision.thresholds, thresholds)


def test_on_few_events_the_thresholds_stay_near_the_balanced_rule():
    """Seven validation events: argmax (power 0) is best by one event, powers 0.25 and 0.5 are
    within one standard error of it, 0.75 and 1 are not: the rule takes 0.5, the nearest to
    the balanced rule (power 1) among those the events cannot tell apart from the best."""
    p1 = np.array([0.1, 0.2, 0.3, 0.45, 0.52, 0.55, 0.6])
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    probs = np.column_stack([1 - p1, p1])
    v = Validation(labels, np.array([f"e{i}" for i in range(7)]), None, probs)
    thresholds, power = calibrate_thresholds([probs], [v], np.array([0.8, 0.2]))
    assert power == 0.5
    np.testing.assert_allclose(thresholds, [2 / 3, 1 / 3])


def _fold_predictions(n_folds: int, hybrid_skill: list[float], per_part: int = 30):
    """``n_folds`` folds of ``per_part`` one-station events in each of train, val and test; the
    HybridViT's skill on fold k's test part is ``hybrid_skill[k]``, on validation 0.9; the
    forest's 0.8 everywhere. Returns what :func:`choose_models` takes."""
    from types import SimpleNamespace

    parts, folds, outcomes, forest_val, forest_test = [], [], [], [], []
    for k in range(n_folds):
        val = _validation(per_part, 100 + k, 0.9, 0.8)
        test = _validation(per_part, 200 + k, hybrid_skill[k], 0.8)
        start = 3 * per_part * k
        train, val_idx, test_idx = (np.arange(start + i * per_part, start + (i + 1) * per_part)
                                    for i in range(3))  # fmt: skip
        parts += [np.zeros(per_part, dtype=int), val.labels, test.labels]
        folds.append(Fold(index=k, train=train, val=val_idx, test=test_idx))
        outcomes.append(SimpleNamespace(probs=test.hybrid, val_probs=val.hybrid))
        forest_val.append(val.forest)
        forest_test.append(test.forest)
    labels = np.concatenate(parts)
    data = SimpleNamespace(
        labels=labels, source_ids=np.array([f"e{i}" for i in range(len(labels))]), n_classes=2
    )
    baseline = {"probs": forest_test, "val_probs": forest_val}
    return data, folds, outcomes, baseline


def test_a_fold_chooses_on_the_other_folds_test_parts_not_its_own():
    """Three folds; the HybridViT is perfect on fold 0's test part and at chance on the others
    (on every validation split it looks good). Fold 0's choice, which may not read its own test
    part, sees only the chance HybridViT and takes the forest; model/'s choice reads all 90
    out-of-fold events. The thresholds come from each fold's own validation split."""
    data, folds, outcomes, baseline = _fold_predictions(3, [0.99, 0.5, 0.5])
    choices = choose_models(data, folds, outcomes, baseline, DeployConfig())
    first = choices.folds[0]
    assert first.model == "forest" and first.n_events == 60 and first.chosen_on == "out-of-fold"
    assert choices.deployed.n_events == 90
    assert all(d.n_events == 60 for d in choices.folds)
    val = Validation(data.labels[folds[0].val], data.source_ids[folds[0].val],
                     outcomes[0].val_probs, baseline["val_probs"][0])  # fmt: skip
    priors = class_priors(data.labels[np.concatenate([folds[0].train, folds[0].val])], 2)
    expected, _ = calibrate_thresholds([val.forest], [val], priors)
    np.testing.assert_allclose(first.thresholds, expected)


def test_with_one_fold_its_validation_split_decides():
    """``cv.strategy: predefined`` gives one fold: no other fold to score on, so the choice
    falls back to its validation split (where the HybridViT is good), and model/ takes it."""
    data, folds, outcomes, baseline = _fold_predictions(1, [0.5])
    choices = choose_models(data, folds, outcomes, baseline, DeployConfig())
    assert choices.folds[0].chosen_on == "validation" and choices.folds[0].hybrid_weight > 0.5
    assert choices.deployed is choices.folds[0]


def test_decide_names_bad_thresholds():
    with pytest.raises(ValueError, match=r"decision thresholds \[0.5\]: expected 2 positive"):
        decide(np.array([[0.2, 0.8]]), [0.5])
    with pytest.raises(ValueError, match="expected 2 positive numbers"):
        decide(np.array([[0.2, 0.8]]), [0.5, 0.0])
    assert decide(np.array([[0.6, 0.4]]), [0.9, 0.1]).tolist() == [1]


def test_a_hybridvit_that_cannot_learn_deploys_the_forest(real_data_dir, tmp_path):
    """Real eqnoise-3c; the HybridViT trains at a learning rate of 1e-12 (its random
    initialisation: chance), the forest learns: every fold and model/ take the forest, the
    report's first line says so and classify decides with the saved thresholds."""
    out = tmp_path / "run"
    run = train(tiny_run_config(real_data_dir / "eqnoise-3c", out, **{"optim.lr": 1e-12})).run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hybridvit"]["event_level"]["aggregate"]["roc_auc"]["mean"] < 0.75
    assert [f["decision"]["model"] for f in metrics["folds"]] == ["forest", "forest"]
    assert metrics["deployed_decision"]["model"] == "forest"
    report = (run / "report.md").read_text().splitlines()
    assert report[2].startswith("**On this data the HybridViT does not help")
    clf = quake.load(run)
    assert isinstance(clf, BaselineClassifier)
    np.testing.assert_allclose(clf.decision_thresholds, metrics["deployed_decision"]["thresholds"])
    assert (run / "model_hybridvit" / "classifier.json").is_file()
    # the deployed model's figures are the forest's, fold by fold
    for ours, forest in zip(metrics["folds"], metrics["baseline"]["folds"], strict=True):
        assert ours["roc_auc"] == pytest.approx(forest["roc_auc"])
        assert ours["macro_f1"] == pytest.approx(forest["macro_f1"])
