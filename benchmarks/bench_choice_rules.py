#!/usr/bin/env python
"""The rule that chooses the deployed model, against alternatives, on runs already made.

    python benchmarks/bench_choice_rules.py [--runs runs/deploy] [--sets esec-surface pnw-eqex]
    python benchmarks/bench_choice_rules.py --sets esec-surface --variant covering-window

Reads the runs of ``benchmarks/bench_deploy.py`` (``runs/deploy/<set>/<variant>/seed<S>/``): each
fold's validation probabilities of the HybridViT (``folds/fold_<k>/val_predictions.csv``) and of
the forest fitted on the fold's training part (``baseline_val_predictions.csv``), and each part's
test probabilities. Each rule chooses, per fold, the HybridViT's weight on one of two sources:
the other folds' test (out-of-fold) predictions, as training does, or the fold's own
validation split, as training did before; the thresholds are then calibrated on the fold's
validation split as training does (``quake.training.choice.calibrate_thresholds``). A fold's
own test part only judges the rules. Prints, per set, source and rule, the event-level balanced accuracy and ROC AUC (mean over all folds of all
seeds, the worst fold's balanced accuracy in brackets), the forest alone beside it, and in how
many folds the rule deploys the forest.

Rules:

- ``current``: training's (``choose_weight``: the smallest weight within one standard error,
  of the best candidate's per-event log losses, of the best);
- ``paired``: the same, the standard error that of each candidate's per-event loss difference
  from the best (a paired comparison on the same events);
- ``paired t-test``: the smallest weight not significantly worse than the best, a one-sided
  paired t-test on the per-event losses at 5 %;
- ``smoothed forest``: the current rule on forest probabilities Laplace-smoothed by tree,
  ``(T p + 1) / (T + C)``, so that no class a station's trees never voted for vetoes it in the
  event's geometric pool.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TREES = 300  # the default forest's trees (baseline.n_estimators)


def paired_weight(validations, weights) -> float:
    """The smallest weight whose mean per-event loss exceeds the best's by at most the standard
    error of their paired differences."""
    from quake.training.choice import per_event_losses

    per_event = per_event_losses(validations, weights)
    best = min(per_event, key=lambda w: per_event[w].mean())
    n = len(per_event[best])

    def close(w: float) -> bool:
        diff = per_event[w] - per_event[best]
        return diff.mean() <= (diff.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0) + 1e-12

    return min(w for w in per_event if close(w))


def current_weight(validations, weights) -> float:
    from quake.training.choice import choose_weight

    return choose_weight(validations, weights)[0]


def paired_t_weight(validations, weights) -> float:
    """The smallest weight whose per-event losses are not significantly above the best's: a
    one-sided paired t-test at 5 %."""
    from scipy.stats import t as student_t

    from quake.training.choice import per_event_losses

    per_event = per_event_losses(validations, weights)
    best = min(per_event, key=lambda w: per_event[w].mean())
    n = len(per_event[best])

    def worse(w: float) -> bool:
        diff = per_event[w] - per_event[best]
        if n < 2 or diff.mean() <= 0.0:
            return False
        spread = diff.std(ddof=1)
        return spread == 0.0 or diff.mean() / (spread / np.sqrt(n)) > student_t.ppf(0.95, n - 1)

    return min(w for w in per_event if not worse(w))


def smoothed(probs: np.ndarray) -> np.ndarray:
    return (TREES * probs + 1.0) / (TREES + probs.shape[1])


RULES: dict[str, tuple[Callable, Callable[[np.ndarray], np.ndarray]]] = {
    "current": (current_weight, lambda p: p),
    "paired": (paired_weight, lambda p: p),
    "paired t-test": (paired_t_weight, lambda p: p),
    "smoothed forest": (current_weight, smoothed),
}


#: Which predictions a rule scores the candidate weights on, per fold.
SOURCES = ("out-of-fold", "validation split")


def fold_scores(run: Path, rule: str, source: str) -> list[tuple[float, ...]]:
    """Per fold of one run: the chosen model's and the forest alone's event balanced accuracy
    and ROC AUC on the test fold, and the chosen HybridViT weight. ``source``: the weight is
    chosen on the other folds' test predictions (training's) or on the fold's own validation
    split; the thresholds are calibrated on the fold's validation split either way."""
    from quake.deploy.combined import HYBRID_WEIGHTS
    from quake.probabilities import decide
    from quake.training.choice import Validation, calibrate_thresholds, class_priors, mix
    from quake.training.metrics import balanced_accuracy, combine_by_event, one_vs_rest_auc

    choose_weight, forest_probs = RULES[rule]
    items = pd.read_csv(run / "items.csv")
    classes = items.drop_duplicates("y_true").sort_values("y_true")["true_class"].tolist()
    columns = [f"prob_{c}".replace(" ", "_") for c in classes]
    labels = items["y_true"].to_numpy()
    groups = items["source_id"].astype(str).to_numpy()
    folds = json.loads((run / "fold_indices.json").read_text())["folds"]

    def fold_of(table: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        part = table[table["fold"] == k].sort_values("index")
        return part["index"].to_numpy(), part[columns].to_numpy()

    forest_val = pd.read_csv(run / "baseline_val_predictions.csv")
    hybrid_test = pd.read_csv(run / "hybridvit_predictions.csv")
    forest_test = pd.read_csv(run / "baseline_predictions.csv")
    validations, tests = [], []
    for k in range(len(folds)):
        val, hybrid = fold_of(pd.read_csv(run / "folds" / f"fold_{k}" / "val_predictions.csv"), k)
        val_forest, forest = fold_of(forest_val, k)
        if not np.array_equal(val, val_forest):
            raise SystemExit(f"{run}: fold {k}'s validation items differ between the parts")
        validations.append(Validation(labels[val], groups[val], hybrid, forest_probs(forest)))
        test, hybrid_t = fold_of(hybrid_test, k)
        _, forest_t = fold_of(forest_test, k)
        tests.append(Validation(labels[test], groups[test], hybrid_t, forest_probs(forest_t)))
    scores = []
    for k, fold in enumerate(folds):
        validation, test = validations[k], tests[k]
        scored_on = (
            [t for j, t in enumerate(tests) if j != k] if source == "out-of-fold" else [validation]
        )
        priors = class_priors(labels[np.concatenate([fold["train"], fold["val"]])], len(classes))
        row, chosen = [], []
        for weights in (HYBRID_WEIGHTS, (0.0,)):
            weight = choose_weight(scored_on, weights)
            chosen.append(weight)
            val_probs = mix(validation.hybrid, validation.forest, weight)
            thresholds, _ = calibrate_thresholds([val_probs], [validation], priors)
            probs = mix(test.hybrid, test.forest, weight)
            event_probs, truth, _, _ = combine_by_event(probs, test.labels, test.groups)
            auc = one_vs_rest_auc(truth, event_probs)  # the classes the test fold holds
            row += [balanced_accuracy(truth, decide(event_probs, thresholds)),
                    np.nan if auc is None else auc]  # fmt: skip
        scores.append((*row, chosen[0]))  # the rule's weight (the second: the forest alone)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "deploy")
    parser.add_argument("--sets", nargs="+", default=None, help="default: every set found")
    parser.add_argument("--variant", default="default", help="bench_deploy.py's variant")
    args = parser.parse_args(argv)
    sets = args.sets or sorted(p.parent.name for p in args.runs.glob(f"*/{args.variant}"))
    print(
        "| set | weight chosen on | rule | deployed BA (worst) | deployed ROC AUC "
        "| forest alone BA | forest ROC AUC | folds deploying the forest |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in sets:
        runs = sorted(r for r in (args.runs / name / args.variant).glob("seed*")
                      if (r / "metrics.json").is_file())  # finished runs  # fmt: skip
        if not runs:
            print(f"no runs of {name} under {args.runs}", file=sys.stderr)
            continue
        for source, rule in ((source, rule) for source in SOURCES for rule in RULES):
            s = np.array([row for run in runs for row in fold_scores(run, rule, source)])
            print(
                f"| {name} | {source} | {rule} | {s[:, 0].mean():.3f} ({s[:, 0].min():.3f}) | "
                f"{np.nanmean(s[:, 1]):.3f} | {s[:, 2].mean():.3f} | {np.nanmean(s[:, 3]):.3f} | "
                f"{int((s[:, 4] == 0.0).sum())} of {len(s)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
