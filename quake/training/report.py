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
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from quake.data.onsets import covering_command, several_windows_command  # noqa: E402
from quake.runtime import write_atomic  # noqa: E402
from quake.training import report_figures as F  # noqa: E402
from quake.training.metrics import (  # noqa: E402
    SCALAR_METRICS,
    expected_calibration_error,
    reliability_bins,
)

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
    """Write ``fig`` as a PNG atomically (a reader never sees half a file)."""
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
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


def _curves(
    kind: str, y_true, probs, class_names, baseline_probs, path: Path, beside: str
) -> list[str]:
    """One-vs-rest curves of every class present; each legend entry carries the pooled
    out-of-fold ROC AUC (``kind="roc"``) or average precision (``"pr"``). Returns the legend."""
    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = []
    for c, name in enumerate(class_names):
        positive = np.asarray(y_true) == c
        if positive.all() or not positive.any():
            continue
        colour = colours[c % len(colours)]
        for p, style, who in ((probs, "-", "deployed"), (baseline_probs, ":", beside)):
            if p is None:
                continue
            if kind == "roc":
                x, y, _ = roc_curve(positive, p[:, c])
                label = f"{name} ({who}) AUC {roc_auc_score(positive, p[:, c]):.3f}"
            else:
                y, x, _ = precision_recall_curve(positive, p[:, c])
                label = f"{name} ({who}) AP {average_precision_score(positive, p[:, c]):.3f}"
            ax.plot(x, y, style, color=colour, label=label)
            labels.append(label)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC, one class vs rest (pooled out-of-fold)")
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Precision-recall, one class vs rest (pooled out-of-fold)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "lower left")
    _save(fig, path)
    return labels


def plot_roc(
    y_true, probs, class_names, path: Path, baseline_probs=None, beside: str = "forest alone"
) -> list[str]:
    """ROC curves of the deployed model (and dotted, ``beside``'s), AUC in the legend;
    returns the legend entries."""
    return _curves("roc", y_true, probs, class_names, baseline_probs, path, beside)


def plot_pr(
    y_true, probs, class_names, path: Path, baseline_probs=None, beside: str = "forest alone"
) -> list[str]:
    """Precision-recall curves, average precision (AP) in the legend; returns the legend."""
    return _curves("pr", y_true, probs, class_names, baseline_probs, path, beside)


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


def plot_reliability(
    y_true, probs, path: Path, baseline_probs=None, beside: str = "forest alone"
) -> list[str]:
    """Top-label confidence vs accuracy (15 bins), with the share of predictions per bin; the
    pooled ECE of each model in the legend. Returns the legend entries."""
    fig, (ax, ax_hist) = plt.subplots(
        2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    labels = []
    for p, style, who in ((probs, "o-", "deployed"), (baseline_probs, "s:", beside)):
        if p is None:
            continue
        bins = reliability_bins(y_true, p)
        conf, acc = np.asarray(bins["confidence"]), np.asarray(bins["accuracy"])
        keep = np.isfinite(conf)
        label = f"{who}, ECE {expected_calibration_error(y_true, p):.3f}"
        ax.plot(conf[keep], acc[keep], style, label=label)
        labels.append(label)
        centres = (np.asarray(bins["edges"][:-1]) + np.asarray(bins["edges"][1:])) / 2
        counts = np.asarray(bins["count"], dtype=float)
        ax_hist.bar(centres, counts / counts.sum(), width=1 / len(counts), alpha=0.5, label=who)
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (top label, pooled out-of-fold; ECE: 15 bins)")
    ax.legend(fontsize=8, loc="upper left")
    ax_hist.set_xlabel("confidence")
    ax_hist.set_ylabel("share")
    ax_hist.set_xlim(0, 1)
    _save(fig, path)
    return labels


def write_plots(run_dir: Path, result: dict) -> list[str]:
    """All report plots from the pooled out-of-fold predictions; returns the file names."""
    run_dir = Path(run_dir)
    names = result["class_names"]
    y, probs, base = result["y_true"], result["probs"], result.get("baseline_probs")
    beside = result.get("beside", "forest alone")
    plot_confusion_matrix(
        result["confusion_matrix"],
        names,
        run_dir / "confusion_matrix.png",
        "deployed model, all test folds (at its thresholds)",
    )
    plot_roc(y, probs, names, run_dir / "roc.png", base, beside)
    plot_pr(y, probs, names, run_dir / "pr.png", base, beside)
    plot_learning_curves(
        result["histories"], result["best_epochs"], run_dir / "learning_curves.png"
    )
    plot_reliability(y, probs, run_dir / "reliability.png", base, beside)
    return list(PLOTS)


def _fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


#: Each model a run can deploy (``quake.training.choice.Decision.model``), in the report's words.
DEPLOYED_MODEL = {
    "HybridViT": "the HybridViT ensemble alone",
    "forest": "the random forests alone",
    "combined": "the HybridViT ensemble and the random forests combined",
}
#: The figures of the headline table: (level, metric).
HEADLINE = (
    ("trace", "macro_f1"),
    ("event", "macro_f1"),
    ("event", "balanced_accuracy"),
    ("event", "roc_auc"),
)


def _with_worst(block: dict, level: str, name: str) -> str:
    """``mean ± std (worst fold)`` of one metric over the folds."""
    part = block if level == "trace" else block.get("event_level") or {}
    stat = (part.get("aggregate") or {}).get(name)
    values = [f[name] for f in part.get("folds", []) if f.get(name) is not None]
    if not values:
        return _fmt(stat)
    worst = min(values) if name != "log_loss" else max(values)
    return f"{_fmt(stat)} ({worst:.3f})"


def deploy_advice(metrics: dict) -> list[str]:
    """The report's first lines: the model in ``model/``, how it was chosen and its decision
    thresholds, then the headline table: the deployed model beside the HybridViT and the
    forest alone, on the same test folds."""
    decision = metrics.get("deployed_decision") or {}
    model = decision.get("model", "HybridViT")
    strategy = (metrics.get("deploy") or {}).get("strategy", "auto")
    what = DEPLOYED_MODEL[model]
    if model == "combined":
        what += f", the HybridViT with {decision['hybrid_weight']:g} of the vote"
    losses = decision.get("event_log_loss") or {}
    if strategy == "auto" and len(losses) > 1:
        scored = (
            f"the out-of-fold predictions of the {len(metrics['folds'])} folds"
            if decision.get("chosen_on") == "out-of-fold"
            else "the validation split"
        )
        how = (
            f"chosen on {scored} ({decision.get('n_events', 0)} events, each scored by "
            "models that never trained on it) by event-level log loss ("
            + ", ".join(f"HybridViT weight {w}: {loss:.3f}" for w, loss in losses.items())
            + "; lower is better; the smallest HybridViT weight within one standard error of the "
            "best is taken)"
        )
    elif strategy == "auto":
        how = "the only model trained (`baseline.enabled: false`)"
    else:
        how = f"as `deploy.strategy: {strategy}` asks"
    classes = metrics["classes"]
    thresholds = decision.get("thresholds")
    rule = (
        "decision: the class with the largest probability / threshold, thresholds "
        + ", ".join(f"{c} {t:.3f}" for c, t in zip(classes, thresholds, strict=True))
        + f" (the training class shares to the power {decision.get('prior_power', 0):g}, "
        "chosen on validation; saved in `model/decision.json`, used by `quake classify`)"
        if thresholds
        else "decision: the most probable class"
    )
    first = f"**Deployed model (`model/`): {what}**, {how}; {rule}."
    if model == "forest":
        first = (
            "**On this data the HybridViT does not help: the deployed model is the forest.** "
            + first
        )
    lines = [first, ""]
    rows = [["deployed (each fold's own choice)", *[
        _with_worst(metrics, level, name) for level, name in HEADLINE
    ]]]  # fmt: skip
    for label, key in (("HybridViT alone", "hybridvit"), ("forest alone", "baseline")):
        if metrics.get(key):
            rows.append([label, *[_with_worst(metrics[key], lvl, n) for lvl, n in HEADLINE]])
    lines += _table(["model", *[f"{METRIC_LABELS[n]} ({lvl})" for lvl, n in HEADLINE]], rows)
    lines += [
        "",
        f"Fold means: mean ± std over the same {len(metrics['folds'])} test folds, the worst "
        "fold in brackets; each model at its own thresholds chosen on validation. Every other "
        "table and figure of this report is the deployed model's; the ROC, PR and reliability "
        "figures pool the folds' predictions (pooled, not fold means).",
    ]
    return lines


#: Below this share of recordings with their estimated S inside the window, the report warns.
S_INSIDE_WARNING = 0.8


def _onset_lines(survey: dict | None) -> list[str]:
    """The window check of a set without P picks (quake.data.onsets)."""
    if not survey:
        return []
    line = f"- Windows: no P picks in the data, so windows follow origin times; {survey['text']}."
    covering = survey.get("covering_window")
    if covering:
        options = covering_command(covering)
        line += (
            f" **Most signals outlast the window** (90 % end by "
            f"{covering['signal_end_p90_s']:g} s after the origin time): a window that covers "
            f"them, at a rate that keeps 4096 samples (the forest reads it in stretches of about "
            f"20 s), is `{options}`; or keep the window and cut several per recording, "
            f"`{several_windows_command(covering)}`; on surface events the covering window "
            "measured better (docs/preprocessing.md, Windows for long signals)."
        )
    elif survey.get("share_s_inside", 1.0) < S_INSIDE_WARNING:
        line += (
            " **The window misses the S of many recordings**: consider a longer one, e.g. "
            "`--set data.preprocess.window_s=40.96 --set data.preprocess.stft_hop=128` (the same "
            "spectrogram grid)."
        )
    return [line]


def context_lines(metrics: dict) -> list[str]:
    """The catalog-context ablation: the deployed model's event level without and with the
    context, and the context alone, with the caution about analyst-fixed depths."""
    ctx = metrics["context"]
    waveform = metrics["event_level"]["aggregate"]
    rows = [
        [METRIC_LABELS[name], _fmt(waveform.get(name)), _fmt(ctx["event_level"]["aggregate"].get(name)),
         _fmt(ctx["context_alone"]["aggregate"].get(name))]
        for name in ("macro_f1", "balanced_accuracy", "roc_auc")
    ]  # fmt: skip
    return [
        "### Catalog context (event level)",
        "",
        *_table(
            [
                "metric",
                "deployed model (waveforms only)",
                "with catalog context",
                "catalog context alone",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"Context: local hour and weekday ({ctx['timezone']}), depth and magnitude of "
        f"{ctx['n_events']} events ({ctx['events_with_local_time']} with an origin time, "
        f"{ctx['events_with_depth']} with a depth, {ctx['events_with_magnitude']} with a "
        f"magnitude); {ctx['rule']}. `model/context.json` holds the fold models; `quake "
        "classify` applies them with the catalog's values.",
        "",
        "**Caution:** a catalog's depth for a blast is often fixed at the surface by an analyst "
        "who already knew it was a blast. Then depth carries the label rather than evidence, and "
        "the figures with context overstate what it will do for new events whose depth was "
        "computed. Compare with the waveform-only column before relying on it.",
    ]


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _operating_points_lines(points: dict) -> list[str]:
    names = list(points)
    thresholds = [p["threshold"] for p in points[names[0]]["points"]]
    rows = []
    for i, t in enumerate(thresholds):
        row = [f"{t:g}"]
        for name in names:
            p = points[name]["points"][i]
            row.append(f"{_share(p['precision'])} / {_share(p['recall'])} ({p['flagged']})")
        rows.append(row)
    return [
        "A trace is called a class when that class's probability reaches the threshold; below "
        "it the trace is left to an analyst. Each cell: precision / recall (traces flagged), "
        "pooled over the test folds, trace level.",
        "",
        *_table(["threshold", *[f"{n} (support {points[n]['support']})" for n in names]], rows),
    ]


def _breakdown_lines(explanations: dict, names: Sequence[str]) -> list[str]:
    lines = []
    for table in explanations.get("breakdowns", []):
        heading = f"### By {table['title']}"
        note = f"From `{table['source']}`; every test trace counted once."
        if table["by"] == "station":
            note = (
                f"{table['n_stations']} stations; the {F.STATION_ROWS} with most test traces "
                "listed, the others in one row."
            )
        header = [table["title"], "traces", "events", "accuracy", *[f"recall {n}" for n in names]]
        rows = []
        for r in table["rows"]:
            recall = [
                f"{r['recall'][n]['recall']:.3f} ({r['recall'][n]['n']})"
                if n in r["recall"]
                else ""
                for n in names
            ]
            rows.append([r["bin"], r["n"], r["n_events"], f"{r['accuracy']:.3f}", *recall])
        lines += [heading, "", note, "", *_table(header, rows), ""]
    missing = explanations.get("breakdowns_missing", [])
    if missing:
        lines += [
            "Not broken down, the set's metadata lack them: "
            + "; ".join("{} ({})".format(*F.BREAKDOWN_SOURCES[m]) for m in missing)
            + ".",
            "",
        ]
    if explanations.get("breakdown_plot"):
        lines += [f"![Accuracy and recall by bin]({explanations['breakdown_plot']})", ""]
    return lines


def _examples_lines(explanations: dict) -> list[str]:
    wrong = explanations["misclassified"]
    lines = ["## Examples (deployed model, out-of-fold)", ""]
    if wrong["shown"]:
        lines += [
            f"{wrong['n_misclassified']} of {wrong['n_predictions']} test traces misclassified; "
            f"the {len(wrong['shown'])} most confident mistakes (probability of the wrong class) "
            "are drawn: Z, N, E waveforms scaled together, and the Z spectrogram the model sees.",
            "",
            f"![Misclassified test traces]({wrong['file']})",
            "",
        ]
        beside = wrong.get("beside") or "baseline"
        with_baseline = all(r.get("baseline_probability") is not None for r in wrong["shown"])
        agreeing = [r for r in wrong["shown"] if (r.get("baseline_probability") or 0) > 0.5]
        lines += _table(
            ["trace", "station", "event", "true", "predicted", "probability"]
            + ([beside] if with_baseline else [])
            + ["fold"],
            [
                [
                    f"`{r['trace_name']}`",
                    r["station"],
                    f"`{r['source_id']}`",
                    r["true_class"],
                    r["predicted_class"],
                    f"{r['probability']:.3f}",
                ]
                + ([f"{r['baseline_probability']:.3f}"] if with_baseline else [])
                + [r["fold"]]
                for r in wrong["shown"]
            ],
        )
        lines.append("")
        if with_baseline:
            lines += [
                f"{beside}: its probability of the same predicted class, on the "
                f"same fold. For {len(agreeing)} of these traces it is above 0.5 as well: two "
                "models trained on different inputs agree against the label, so check the "
                "label and the window first (a noise window that holds another event, a record "
                "whose event is on one component only) before reading them as model errors.",
                "",
            ]
    else:
        lines += [f"No test trace was misclassified ({wrong['n_predictions']} predictions).", ""]
    typical = explanations["typical_correct"]
    if typical["shown"]:
        lines += [
            f"Typical correct traces: per class, the {typical['per_class']} with the highest "
            "probability of their class.",
            "",
            f"![Typical correct test traces]({typical['file']})",
            "",
        ]
    if typical["classes_without_correct"]:
        lines += [
            "No correct test trace for: " + ", ".join(typical["classes_without_correct"]) + ".",
            "",
        ]
    means = explanations["class_means"]
    lines += [
        "Class-mean spectrograms (the model input, averaged per class over "
        + ", ".join(f"{n} {c}" for c, n in means["n_traces"].items())
        + " traces):",
        "",
        f"![Class-mean spectrograms]({means['file']})",
        "",
    ]
    return lines


def render_report(metrics: dict, extra: dict) -> str:
    """The Markdown text of ``report.md`` from ``metrics.json`` content and run details."""
    lines = [f"# quake training report: {extra['run_name']}", ""]
    lines += [*deploy_advice(metrics), ""]
    lines += _overview_lines(metrics, extra)
    lines += _results_lines(metrics)
    lines += _per_class_lines(metrics)
    lines += _confusion_lines(metrics)
    lines += _per_fold_lines(metrics)
    if metrics.get("explanations"):
        lines += _explanation_lines(metrics)
    lines += _plot_lines()
    lines += _data_lines(metrics, extra)
    lines += _card_lines(metrics.get("card"))
    lines += _pretrained_lines(metrics.get("pretrained", {}))
    lines += _timing_lines(metrics)
    return "\n".join(lines)


def _overview_lines(metrics: dict, extra: dict) -> list[str]:
    """How the figures were made, then the data, the model and what was deployed."""
    k = len(metrics["folds"])
    pretrained = metrics.get("pretrained", {})
    if pretrained.get("source", "none") == "none":
        weights = "random initialisation (no pretrained weights)"
    else:
        weights = f"pretrained weights from {pretrained.get('source')}"
    return [
        f"{k}-fold cross-validation grouped by `source_id` (the traces of one event never sit on "
        f"both sides of a split); every figure is the mean ± standard deviation over the {k} test "
        "folds. Each fold's checkpoint was chosen on a grouped validation split of its training "
        "part; the test fold was used once.",
        "",
        f"- Data: `{extra['data_path']}` — {metrics['data']['n_traces']} traces kept, "
        f"{metrics['data']['n_events']} events; per class: "
        + ", ".join(f"{n} {c}" for c, n in metrics["data"]["class_counts"].items()),
        f"- Model: HybridViT `{extra['backbone']}`, depth {extra['depth']}, input "
        f"{extra['input_shape']}"
        + (
            ", fusion head (band powers, envelopes, H/V beside the CLS token)"
            if extra.get("fusion")
            else ""
        )
        + f"; {weights}",
        f"- Deployable model: `model/` = {extra['deploy_note']}",
        *_onset_lines(metrics["data"].get("onset_survey")),
        *_shortcut_lines(metrics["data"].get("shortcuts")),
        "",
    ]


def _shortcut_lines(shortcuts: list[dict] | None) -> list[str]:
    """A class told apart by its sampling rate or components (quake.training.shortcuts)."""
    return [
        f"- **Shortcut**: {s['text']}: check that the model learned the signal, e.g. by "
        "resampling or dropping components so that the classes look alike."
        for s in shortcuts or []
    ]


def _results_lines(metrics: dict) -> list[str]:
    """## Results: every scalar metric of the deployed model, trace and event level."""
    base = metrics.get("baseline") or {}
    has_event = bool(metrics.get("event_level"))
    header = ["metric", "trace level"] + (["event level"] if has_event else [])
    rows = []
    for name in SCALAR_METRICS:
        row = [METRIC_LABELS[name], _fmt(metrics["aggregate"].get(name))]
        if has_event:
            row.append(_fmt(metrics["event_level"]["aggregate"].get(name)))
        rows.append(row)
    lines = ["## Results (deployed model, mean ± std over the test folds)", ""]
    lines += _table(header, rows)
    if has_event:
        lines += ["", _event_level_note(metrics["event_level"])]
    if base:
        segments = base.get("feature_segments", 1)
        stretches = f": {segments} stretches of the window, {base['n_features'] // segments} each"
        counts = f"{base['n_features']} features{stretches if segments > 1 else ''}"
        lines += ["", f"Forest: {base['model']} ({counts}), same folds."]
    if metrics.get("context"):
        lines += ["", *context_lines(metrics)]
    return lines


def _event_level_note(ev: dict) -> str:
    """How station probabilities became event probabilities, and the mixed-label events."""
    return (
        f"Event level: {ev['n_events']} events, station probabilities combined per `source_id` "
        "(mean of log-probabilities, then softmax)."
        + (
            f" {ev['n_mixed_label_groups']} `source_id`s hold traces of different classes; "
            "those are combined per class."
            if ev.get("n_mixed_label_groups")
            else ""
        )
    )


def _per_class_lines(metrics: dict) -> list[str]:
    """## Per class: precision, recall and F1 of each class."""
    lines = ["", "## Per class (deployed model, trace level, mean ± std over folds)", ""]
    rows = []
    for c in metrics["classes"]:
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
    return lines + _table(["class", "precision", "recall", "F1", "support (all folds)"], rows)


def _confusion_lines(metrics: dict) -> list[str]:
    """## Confusion matrix over all test folds."""
    names = metrics["classes"]
    lines = [
        "",
        "## Confusion matrix (deployed model, summed over the test folds; rows true, columns "
        "predicted)",
        "",
    ]
    matrix = metrics["confusion_matrix_total"]
    return lines + _table(
        ["true \\ predicted", *names], [[c, *matrix[i]] for i, c in enumerate(names)]
    )


def _per_fold_lines(metrics: dict) -> list[str]:
    """## Per fold: sizes, the HybridViT's chosen epoch, the model chosen for the fold (on the
    other folds' out-of-fold predictions) and the deployed model's scores on its test part."""
    lines = ["", "## Per fold (deployed model)", ""]
    rows = []
    for fold in metrics["folds"]:
        decision = fold.get("decision") or {}
        chosen = decision.get("model", "")
        if chosen == "combined":
            chosen += f" ({decision['hybrid_weight']:g})"
        rows.append(
            [
                fold["fold"],
                fold["n_train"],
                fold["n_val"],
                fold["n_test"],
                fold["best_epoch"],
                chosen,
                f"{fold['macro_f1']:.3f}",
                f"{fold['balanced_accuracy']:.3f}",
            ]
        )
    header = ["fold", "train", "val", "test", "HybridViT epoch", "model chosen", "macro F1",
              "balanced acc."]  # fmt: skip
    return lines + _table(header, rows)


def _explanation_lines(metrics: dict) -> list[str]:
    """## Operating points and ## Performance by station, magnitude, distance and SNR."""
    explanations = metrics["explanations"]
    lines = ["", "## Operating points (deployed model)", ""]
    lines += _operating_points_lines(explanations["operating_points"])
    lines += ["", "## Performance by station, magnitude, distance and SNR (deployed model)", ""]
    lines += _breakdown_lines(explanations, metrics["classes"])
    return lines + _examples_lines(explanations)


def _plot_lines() -> list[str]:
    """## Plots: every figure of the run with its caption."""
    lines = ["", "## Plots", ""]
    captions = {
        "confusion_matrix.png": "Confusion matrix",
        "roc.png": "ROC curves, pooled (solid: deployed model, dotted: another model alone; AUC "
        "in the legend)",
        "pr.png": "Precision-recall curves, pooled (solid: deployed model, dotted: another model "
        "alone; AP in the legend)",
        "learning_curves.png": "Learning curves of the HybridViT folds",
        "reliability.png": "Reliability diagram (ECE in the legend)",
    }
    for plot in PLOTS:
        lines += [f"![{captions[plot]}]({plot})", ""]
    return lines


def _data_lines(metrics: dict, extra: dict) -> list[str]:
    """## Data: what was skipped and why, quality flags, preprocessing and augmentation."""
    lines = ["## Data", ""]
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
    return lines


def _card_lines(card: dict | None) -> list[str]:
    """## Model card: what ``model/card.json`` says the model learned from, which ``quake
    classify`` compares its inputs with."""
    if not card:
        return []

    def counts(values: dict) -> str:
        return ", ".join(f"{k} ({n})" for k, n in values.items()) or "n/a"

    window = card["window"]
    anchored = counts(window.get("anchored_at") or {})
    events = card["training_events"]
    return [
        "## Model card (`model/card.json`)",
        "",
        f"- classes (training traces): {counts(card['classes'])}",
        f"- training events: {len(events)}, SHA-256 of their ids "
        f"`{card['training_events_sha256'][:16]}...`; `quake classify` marks them "
        "(`in_training`)",
        f"- stations: {len(card['stations'])}; components: {counts(card['components'])}",
        f"- sampling rates as recorded, Hz (traces): {counts(card['sampling_rates_hz'])}",
        f"- window: {window['length_s']:g} s at {window['sampling_rate_hz']:g} Hz, anchor "
        f"`{window['anchor']}`, started at: {anchored}",
        "",
    ]


def _pretrained_lines(pretrained: dict) -> list[str]:
    """## Pretrained weights: what was asked for, what was used and how the tensors fitted."""
    return [
        "## Pretrained weights",
        "",
        f"- requested: `{pretrained.get('requested')}`; used: `{pretrained.get('source')}`",
        f"- {pretrained.get('note', '')}",
        f"- tensors loaded: {pretrained.get('n_loaded', 0)}; resampled: "
        f"{pretrained.get('resampled') or 'none'}; missing: {pretrained.get('missing') or 'none'}; "
        f"unexpected: {pretrained.get('unexpected') or 'none'}",
    ]


def _timing_lines(metrics: dict) -> list[str]:
    """## Timings of each step, then the list of the run's files."""
    lines = ["", "## Timings", ""]
    timings = metrics.get("timings", {})
    lines += _table(
        ["step", "seconds"],
        [[k2, f"{v:.1f}"] for k2, v in timings.items() if isinstance(v, (int, float))],
    )
    return lines + [
        "",
        "Files: `metrics.json` (all numbers), `predictions.csv` (the deployed model's "
        "out-of-fold probabilities and decided class), `hybridvit_predictions.csv` / "
        "`baseline_predictions.csv` (each part alone), `fold_indices.json`, `config.yaml` "
        "(resolved config), "
        "`versions.json`, `model/` (deployable classifier).",
        "",
    ]
