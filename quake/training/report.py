"""Plots and the Markdown report of a cross-validated run.

The report is what a seismologist reads first: mean +- std over folds for every metric, the deep
model beside the spectral baseline on the same folds, per-class scores, the confusion matrix of
all out-of-fold predictions, then the plots and where the data and weights came from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from quake.training.metrics import SCALAR_METRICS, reliability_bins  # noqa: E402

logger = logging.getLogger(__name__)

PLOTS = ("confusion_matrix.png", "roc.png", "pr.png", "learning_curves.png", "reliability.png")
METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
    "roc_auc": "ROC AUC (macro OvR)",
    "pr_auc": "PR AUC (macro OvR)",
    "log_loss": "log loss (lower is better)",
    "ece": "ECE, 15 bins (lower is better)",
}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """Counts, with each row's share (recall) as the colour."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.3 + 1.1 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{matrix[i, j]}\n{shares[i, j]:.0%}", ha="center", va="center", color=colour
            )
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    _save(fig, path)


def _curves(kind: str, y_true, probs, class_names, baseline_probs, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, name in enumerate(class_names):
        positive = np.asarray(y_true) == c
        if positive.all() or not positive.any():
            continue
        colour = colours[c % len(colours)]
        for p, style, who in ((probs, "-", "HybridViT"), (baseline_probs, ":", "baseline")):
            if p is None:
                continue
            if kind == "roc":
                x, y, _ = roc_curve(positive, p[:, c])
            else:
                y, x, _ = precision_recall_curve(positive, p[:, c])
            ax.plot(x, y, style, color=colour, label=f"{name} ({who})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC, one class vs rest (out-of-fold)")
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Precision-recall, one class vs rest (out-of-fold)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "lower left")
    _save(fig, path)


def plot_roc(y_true, probs, class_names, path: Path, baseline_probs=None) -> None:
    _curves("roc", y_true, probs, class_names, baseline_probs, path)


def plot_pr(y_true, probs, class_names, path: Path, baseline_probs=None) -> None:
    _curves("pr", y_true, probs, class_names, baseline_probs, path)


def plot_learning_curves(
    histories: Sequence[Sequence[dict]], best_epochs: Sequence[int], path: Path
) -> None:
    """Per fold: training and validation loss, validation macro F1; the chosen epoch marked."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, history in enumerate(histories):
        if not history:
            continue
        colour = colours[k % len(colours)]
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], "--", color=colour, alpha=0.7)
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "-", color=colour, label=f"fold {k}")
        ax_f1.plot(
            epochs, [h["val_macro_f1"] for h in history], "-", color=colour, label=f"fold {k}"
        )
        if k < len(best_epochs) and best_epochs[k] in epochs:
            at = epochs.index(best_epochs[k])
            ax_loss.plot(epochs[at], history[at]["val_loss"], "o", color=colour)
            ax_f1.plot(epochs[at], history[at]["val_macro_f1"], "o", color=colour)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (dashed: training, solid: validation)")
    ax_loss.set_title("Loss; dot = chosen checkpoint")
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("validation macro F1")
    ax_f1.set_ylim(0, 1.02)
    ax_f1.set_title("Validation macro F1")
    ax_loss.legend(fontsize=8)
    _save(fig, path)


def plot_reliability(y_true, probs, path: Path, baseline_probs=None) -> None:
    """Top-label confidence vs accuracy (15 bins), with the share of predictions per bin."""
    fig, (ax, ax_hist) = plt.subplots(
        2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for p, style, who in ((probs, "o-", "HybridViT"), (baseline_probs, "s:", "baseline")):
        if p is None:
            continue
        bins = reliability_bins(y_true, p)
        conf, acc = np.asarray(bins["confidence"]), np.asarray(bins["accuracy"])
        keep = np.isfinite(conf)
        ax.plot(conf[keep], acc[keep], style, label=who)
        centres = (np.asarray(bins["edges"][:-1]) + np.asarray(bins["edges"][1:])) / 2
        counts = np.asarray(bins["count"], dtype=float)
        ax_hist.bar(centres, counts / counts.sum(), width=1 / len(counts), alpha=0.5, label=who)
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (top label, out-of-fold)")
    ax.legend(fontsize=8)
    ax_hist.set_xlabel("confidence")
    ax_hist.set_ylabel("share")
    ax_hist.set_xlim(0, 1)
    _save(fig, path)


def write_plots(run_dir: Path, result: dict) -> list[str]:
    """All report plots from the pooled out-of-fold predictions; returns the file names."""
    run_dir = Path(run_dir)
    names = result["class_names"]
    y, probs, base = result["y_true"], result["probs"], result.get("baseline_probs")
    plot_confusion_matrix(
        result["confusion_matrix"],
        names,
        run_dir / "confusion_matrix.png",
        "HybridViT, all test folds",
    )
    plot_roc(y, probs, names, run_dir / "roc.png", base)
    plot_pr(y, probs, names, run_dir / "pr.png", base)
    plot_learning_curves(
        result["histories"], result["best_epochs"], run_dir / "learning_curves.png"
    )
    plot_reliability(y, probs, run_dir / "reliability.png", base)
    return list(PLOTS)


def _fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render_report(metrics: dict, extra: dict) -> str:
    """The Markdown text of ``report.md`` from ``metrics.json`` content and run details."""
    names = metrics["classes"]
    k = len(metrics["folds"])
    base = metrics.get("baseline") or {}
    lines = [f"# quake training report: {extra['run_name']}", ""]
    pretrained = metrics.get("pretrained", {})
    if pretrained.get("source", "none") == "none":
        weights = "random initialisation (no pretrained weights)"
    else:
        weights = f"pretrained weights from {pretrained.get('source')}"
    lines += [
        f"{k}-fold cross-validation grouped by `source_id` (the traces of one event never sit on "
        f"both sides of a split); every figure is the mean ± standard deviation over the {k} test "
        "folds. Each fold's checkpoint was chosen on a grouped validation split of its training "
        "part; the test fold was used once.",
        "",
        f"- Data: `{extra['data_path']}` — {metrics['data']['n_traces']} traces kept, "
        f"{metrics['data']['n_events']} events; per class: "
        + ", ".join(f"{n} {c}" for c, n in metrics["data"]["class_counts"].items()),
        f"- Model: HybridViT `{extra['backbone']}`, depth {extra['depth']}, input {extra['input_shape']}; "
        f"{weights}",
        f"- Deployable model: `model/` = {extra['deploy_note']}",
        "",
        "## Results",
        "",
    ]
    has_event = bool(metrics.get("event_level"))
    header = ["metric", "HybridViT (trace)"]
    if has_event:
        header.append("HybridViT (event)")
    if base:
        header.append("baseline (trace)")
        if has_event:
            header.append("baseline (event)")
    rows = []
    for name in SCALAR_METRICS:
        row = [METRIC_LABELS[name], _fmt(metrics["aggregate"].get(name))]
        if has_event:
            row.append(_fmt(metrics["event_level"]["aggregate"].get(name)))
        if base:
            row.append(_fmt(base["aggregate"].get(name)))
            if has_event:
                row.append(_fmt(base.get("event_level", {}).get("aggregate", {}).get(name)))
        rows.append(row)
    lines += _table(header, rows)
    if has_event:
        ev = metrics["event_level"]
        lines += [
            "",
            f"Event level: {ev['n_events']} events, station probabilities combined per `source_id` "
            "(mean of log-probabilities, then softmax)."
            + (
                f" {ev['n_mixed_label_groups']} `source_id`s hold traces of different classes; "
                "those are combined per class."
                if ev.get("n_mixed_label_groups")
                else ""
            ),
        ]
    if base:
        lines += ["", f"Baseline: {base['model']} ({base['n_features']} features), same folds."]

    lines += ["", "## Per class (HybridViT, trace level, mean ± std over folds)", ""]
    rows = []
    for c in names:
        stats = metrics["per_class_aggregate"][c]
        rows.append(
            [
                c,
                _fmt(stats["precision"]),
                _fmt(stats["recall"]),
                _fmt(stats["f1"]),
                stats["support"],
            ]
        )
    lines += _table(["class", "precision", "recall", "F1", "support (all folds)"], rows)

    lines += [
        "",
        "## Confusion matrix (HybridViT, all test folds; rows true, columns predicted)",
        "",
    ]
    matrix = metrics["confusion_matrix_total"]
    lines += _table(["true \\ predicted", *names], [[c, *matrix[i]] for i, c in enumerate(names)])

    lines += ["", "## Per fold", ""]
    rows = []
    for i, fold in enumerate(metrics["folds"]):
        row = [
            fold["fold"],
            fold["n_train"],
            fold["n_val"],
            fold["n_test"],
            fold["best_epoch"],
            f"{fold['macro_f1']:.3f}",
            f"{fold['balanced_accuracy']:.3f}",
        ]
        if base:
            row.append(f"{base['folds'][i]['macro_f1']:.3f}")
        rows.append(row)
    header = ["fold", "train", "val", "test", "chosen epoch", "macro F1", "balanced acc."]
    if base:
        header.append("baseline macro F1")
    lines += _table(header, rows)

    lines += ["", "## Plots", ""]
    captions = {
        "confusion_matrix.png": "Confusion matrix",
        "roc.png": "ROC curves (solid: HybridViT, dotted: baseline)",
        "pr.png": "Precision-recall curves (solid: HybridViT, dotted: baseline)",
        "learning_curves.png": "Learning curves",
        "reliability.png": "Reliability diagram",
    }
    for plot in PLOTS:
        lines += [f"![{captions[plot]}]({plot})", ""]

    lines += ["## Data", ""]
    dropped = metrics.get("dropped", {})
    if dropped:
        lines += ["Items skipped while reading or preprocessing, by reason:", ""]
        lines += _table(["reason", "count"], [[r, n] for r, n in sorted(dropped.items())])
    else:
        lines.append("No item was skipped.")
    flagged = metrics.get("data", {}).get("quality_counts", {})
    if flagged:
        lines += [
            "",
            "Quality flags on the traces used (what was found and done per trace, and "
            "every skipped trace, is in `trace_quality.csv`):",
            "",
        ]
        lines += _table(["flag", "traces"], [[f, n] for f, n in flagged.items()])
    lines += ["", f"Preprocessing: `{extra['preprocess_summary']}`", ""]
    lines += [f"Augmentation (training batches only): {extra['augment_summary']}", ""]

    lines += ["## Pretrained weights", ""]
    lines += [
        f"- requested: `{pretrained.get('requested')}`; used: `{pretrained.get('source')}`",
        f"- {pretrained.get('note', '')}",
        f"- tensors loaded: {pretrained.get('n_loaded', 0)}; resampled: "
        f"{pretrained.get('resampled') or 'none'}; missing: {pretrained.get('missing') or 'none'}; "
        f"unexpected: {pretrained.get('unexpected') or 'none'}",
    ]
    lines += ["", "## Timings", ""]
    timings = metrics.get("timings", {})
    lines += _table(
        ["step", "seconds"],
        [[k2, f"{v:.1f}"] for k2, v in timings.items() if isinstance(v, (int, float))],
    )
    lines += [
        "",
        "Files: `metrics.json` (all numbers), `predictions.csv` / `baseline_predictions.csv` "
        "(out-of-fold probabilities), `fold_indices.json`, `config.yaml` (resolved config), "
        "`versions.json`, `model/` (deployable classifier).",
        "",
    ]
    return "\n".join(lines)
