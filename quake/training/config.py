"""The training configuration: defaults, YAML files, command-line overrides, validation.

Precedence is ``defaults < config file < overrides`` (the command line). The defaults below are
the same values as ``configs/default.yaml`` (a test keeps the two in step). Every value is
checked when the config is built, so a typo or a negative learning rate fails before any data is
read, with a message that names the key, the value and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quake.data import LabelSpec, PreprocessConfig
from quake.data.config import with_keys_of_before
from quake.deploy.combined import HYBRID_WEIGHT, HYBRID_WEIGHTS
from quake.models import PRETRAINED_PATHS, Backbone, pretrained_path_problem
from quake.models.context import parse_timezone

CLASS_BALANCE_CHOICES = ("weighted_loss", "balanced_sampling", "none")
SELECTION_METRICS = ("loss", "balanced_accuracy", "macro_f1")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEPLOY_CHOICES = ("auto", "combined", "ensemble", "baseline")
THRESHOLD_CHOICES = ("calibrated", "argmax")
PRECISION_CHOICES = ("auto", "bf16", "fp16", "fp32")
WINDOW_CACHE_CHOICES = ("auto", "memory", "disk")
CV_STRATEGIES = ("grouped", "predefined")


def _check(condition: bool, key: str, value: object, expected: str) -> None:
    if not condition:
        raise ValueError(f"config value {key}={value!r} is invalid; expected {expected}")


@dataclass
class DataConfig:
    """Where the traces come from and how each is preprocessed (see ``PreprocessConfig``)."""

    path: str | None = None  # None: the embedded synthetic default set
    # SeisBench/STEAD metadata column of the labels (catalogs: event_type), and the set's own
    # names -> class names (QuakeML event types or noise), e.g. {"eq": "earthquake"}
    label_column: str = "source_type"
    label_map: dict = field(default_factory=dict)
    # PreprocessConfig fields; unset ones take PreprocessConfig's defaults
    preprocess: dict = field(default_factory=dict)

    def validate(self) -> None:
        _check(
            self.path is None or bool(str(self.path).strip()),
            "data.path",
            self.path,
            "a folder or null",
        )
        self.labels()  # a label_map target that is no class name is refused here, by its name
        # PreprocessConfig validates its own fields; store them all, resolved, so that the saved
        # config says exactly what preprocessing the run used.
        self.preprocess = self.preprocess_config().to_dict()

    def labels(self):
        """The :class:`quake.data.LabelSpec` of these settings."""
        _check(isinstance(self.label_map, dict), "data.label_map", self.label_map, "a mapping")
        return LabelSpec(str(self.label_column), self.label_map)

    def preprocess_config(self):
        """The validated :class:`quake.data.PreprocessConfig` these settings describe."""
        known = {f.name for f in dataclasses.fields(PreprocessConfig)}
        unknown = sorted(set(self.preprocess) - known)
        if unknown:
            raise ValueError(
                f"unknown config key(s) {['data.preprocess.' + k for k in unknown]}; "
                f"expected some of {sorted(known)}"
            )
        return PreprocessConfig.from_dict(dict(self.preprocess))


@dataclass
class ModelConfig:
    backbone: str = "tiny"
    depth: int = 4
    dropout: float = 0.2
    drop_path_rate: float = 0.05
    # auto | none | PATH: a timm weights file, or a pretraining folder (quake pretrain) or its
    # encoder.safetensors
    pretrained: str = "auto"
    freeze_backbone: bool = False  # keep the ViT blocks frozen for the whole run
    # the head also sees the spectrogram's band powers, envelopes and H/V (quake.models.fusion)
    fusion: bool = False

    def validate(self) -> None:
        try:
            Backbone.from_name(self.backbone)
        except (ValueError, KeyError) as error:
            allowed = [b.value for b in Backbone]
            raise ValueError(
                f"config value model.backbone={self.backbone!r} is invalid; expected one of {allowed}"
            ) from error
        _check(self.depth >= 1, "model.depth", self.depth, "an integer >= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a float in [0, 1)")
        _check(
            0.0 <= self.drop_path_rate < 1.0,
            "model.drop_path_rate",
            self.drop_path_rate,
            "a float in [0, 1)",
        )
        _check(
            self.pretrained in ("auto", "none") or bool(self.pretrained.strip()),
            "model.pretrained",
            self.pretrained,
            "'auto', 'none', the path of a weights file or of a pretraining folder",
        )
        if self.pretrained not in ("auto", "none"):
            problem = pretrained_path_problem(self.pretrained)
            if problem is not None:  # e.g. a training run's folder: refused before any data
                raise ValueError(
                    f"config value model.pretrained={self.pretrained!r} {problem}; expected "
                    f"'auto', 'none', {PRETRAINED_PATHS}"
                )


@dataclass
class OptimConfig:
    epochs: int = 60
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02  # cosine decays to lr * min_lr_ratio
    label_smoothing: float = 0.1
    grad_clip_norm: float | None = 1.0
    class_balance: str = "weighted_loss"  # weighted_loss | balanced_sampling | none
    frozen_epochs: int = 0  # two-stage schedule: this many epochs with the backbone frozen first
    patience: int | None = 15  # early stopping on the validation split; None: train all epochs
    selection_metric: str = "loss"  # validation quantity that picks the checkpoint
    # guards of the checkpoint choice (quake.training.selection): no epoch kept before
    # min_epochs; an epoch judged by the mean of the last selection_smoothing validation scores;
    # weights judged and kept are an EMA over steps with ema_decay (null: the raw weights); the
    # fold keeps the mean of the weights of its average_best best epochs (1: the best alone)
    min_epochs: int = 0
    selection_smoothing: int = 1
    ema_decay: float | None = None
    average_best: int = 3
    # training forward passes: auto (bf16 where native) | bf16 | fp16 (CUDA, loss scaling) | fp32
    precision: str = "auto"

    def validate(self) -> None:
        _check(self.epochs >= 1, "optim.epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size >= 1, "optim.batch_size", self.batch_size, "an integer >= 1")
        _check(self.lr > 0, "optim.lr", self.lr, "a float > 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a float >= 0")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "a float >= 0")
        _check(
            0.0 <= self.min_lr_ratio <= 1.0,
            "optim.min_lr_ratio",
            self.min_lr_ratio,
            "a float in [0, 1]",
        )
        _check(
            0.0 <= self.label_smoothing < 1.0,
            "optim.label_smoothing",
            self.label_smoothing,
            "a float in [0, 1)",
        )
        _check(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            "optim.grad_clip_norm",
            self.grad_clip_norm,
            "a float > 0 or null",
        )
        _check(
            self.class_balance in CLASS_BALANCE_CHOICES,
            "optim.class_balance",
            self.class_balance,
            f"one of {list(CLASS_BALANCE_CHOICES)}",
        )
        _check(
            0 <= self.frozen_epochs < self.epochs,
            "optim.frozen_epochs",
            self.frozen_epochs,
            f"an integer in [0, optim.epochs={self.epochs})",
        )
        _check(
            self.patience is None or self.patience >= 1,
            "optim.patience",
            self.patience,
            "an integer >= 1 or null",
        )
        _check(
            self.precision in PRECISION_CHOICES,
            "optim.precision",
            self.precision,
            f"one of {list(PRECISION_CHOICES)}",
        )
        _check(
            0 <= self.min_epochs <= self.epochs,
            "optim.min_epochs",
            self.min_epochs,
            f"an integer in [0, optim.epochs={self.epochs}]",
        )
        _check(
            self.selection_smoothing >= 1,
            "optim.selection_smoothing",
            self.selection_smoothing,
            "an integer >= 1",
        )
        _check(self.average_best >= 1, "optim.average_best", self.average_best, "an integer >= 1")
        _check(
            self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
            "optim.ema_decay",
            self.ema_decay,
            "a float in (0, 1) or null",
        )
        _check(
            self.selection_metric in SELECTION_METRICS,
            "optim.selection_metric",
            self.selection_metric,
            f"one of {list(SELECTION_METRICS)}",
        )


#: What ``null`` means for the augmentation keys below, by what the windows start at (chosen by
#: the recipe benchmark, benchmarks/choosing-the-recipe.md): where windows follow P picks
#: the onset sits at a known place and is the strongest cue, so it is barely moved and never
#: masked; where they follow origin times the onset's place varies anyway.
AUGMENT_BY_ANCHOR = {
    "picks": {
        "time_shift_s": 0.25,
        "channel_dropout_prob": 0.3,
        "time_mask_prob": 0.0,
        "freq_mask_prob": 0.0,
    },
    "origin": {
        "time_shift_s": 1.0,
        "channel_dropout_prob": 0.1,
        "time_mask_prob": 0.5,
        "freq_mask_prob": 0.5,
    },
}


@dataclass
class AugmentConfig:
    """Waveform and spectrogram augmentations, applied to training batches only. ``null`` for
    the four keys of :data:`AUGMENT_BY_ANCHOR`: chosen by what the windows start at."""

    enabled: bool = True
    time_shift_s: float | None = None  # window moved by up to this many seconds (circular)
    noise_prob: float = 0.5  # add a real noise window from the training fold
    noise_snr_db: list[float] = field(default_factory=lambda: [10.0, 30.0])
    amplitude_scale: list[float] | None = None  # per-channel gain range; a no-op with ZSCORE
    channel_dropout_prob: float | None = None  # zero one randomly chosen component
    time_mask_prob: float | None = None
    time_mask_max_frac: float = 0.1
    freq_mask_prob: float | None = None
    freq_mask_max_frac: float = 0.1

    def resolved(self, windows_follow_picks: bool) -> AugmentConfig:
        """A copy with every ``null`` of :data:`AUGMENT_BY_ANCHOR` replaced for these windows."""
        values = AUGMENT_BY_ANCHOR["picks" if windows_follow_picks else "origin"]
        return dataclasses.replace(
            self, **{k: v for k, v in values.items() if getattr(self, k) is None}
        )

    def validate(self) -> None:
        _check(
            self.time_shift_s is None or self.time_shift_s >= 0,
            "augment.time_shift_s",
            self.time_shift_s,
            "a float >= 0, or null (by anchoring)",
        )
        for name in ("noise_prob", "channel_dropout_prob", "time_mask_prob", "freq_mask_prob"):
            value = getattr(self, name)
            _check(
                value is None or 0.0 <= value <= 1.0,
                f"augment.{name}",
                value,
                "a probability in [0, 1]"
                + (", or null (by anchoring)" if name != "noise_prob" else ""),
            )
        for name in ("time_mask_max_frac", "freq_mask_max_frac"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"augment.{name}", value, "a fraction in [0, 1)")
        _check(
            len(self.noise_snr_db) == 2 and self.noise_snr_db[0] <= self.noise_snr_db[1],
            "augment.noise_snr_db",
            self.noise_snr_db,
            "[low, high] in dB with low <= high",
        )
        if self.amplitude_scale is not None:
            _check(
                len(self.amplitude_scale) == 2
                and 0 < self.amplitude_scale[0] <= self.amplitude_scale[1],
                "augment.amplitude_scale",
                self.amplitude_scale,
                "null or [low, high] with 0 < low <= high",
            )


@dataclass
class CVConfig:
    # grouped: StratifiedGroupKFold over source_id; predefined: the set's own `split` column
    # (SeisBench's train/dev/test: one fold, dev for early stopping; folds and val_fraction unused)
    strategy: str = "grouped"
    folds: int = 5
    val_fraction: float = 0.15  # share of each training fold's events held out for early stopping
    # share of each training fold's events used at all (per class, whole events; test folds
    # unchanged): < 1 for label-efficiency curves (grouped strategy only)
    train_fraction: float = 1.0

    def validate(self) -> None:
        _check(
            self.strategy in CV_STRATEGIES,
            "cv.strategy",
            self.strategy,
            f"one of {', '.join(CV_STRATEGIES)}",
        )
        _check(self.folds >= 2, "cv.folds", self.folds, "an integer >= 2")
        _check(
            0.0 < self.val_fraction <= 0.5,
            "cv.val_fraction",
            self.val_fraction,
            "a fraction in (0, 0.5]",
        )
        _check(
            0.0 < self.train_fraction <= 1.0
            and (self.train_fraction == 1.0 or self.strategy == "grouped"),
            "cv.train_fraction",
            self.train_fraction,
            "a fraction in (0, 1], and 1 unless cv.strategy is grouped",
        )


@dataclass
class BaselineConfig:
    """The reference model: spectral features + a random forest, on the very same folds."""

    enabled: bool = True
    n_estimators: int = 300
    max_depth: int | None = None
    min_samples_leaf: int = 1

    def validate(self) -> None:
        _check(
            self.n_estimators >= 1, "baseline.n_estimators", self.n_estimators, "an integer >= 1"
        )
        _check(
            self.max_depth is None or self.max_depth >= 1,
            "baseline.max_depth",
            self.max_depth,
            "an integer >= 1 or null",
        )
        _check(
            self.min_samples_leaf >= 1,
            "baseline.min_samples_leaf",
            self.min_samples_leaf,
            "an integer >= 1",
        )


@dataclass
class DeployConfig:
    """What the run leaves for batch classification in ``<run>/model/``."""

    # auto: chosen inside each fold on its validation split (quake.training.choice): the
    # forests alone, the HybridViTs alone or the two combined at one of the weights
    # 0.2-0.8, by event-level log loss; the deployed model is the same choice on all folds'
    # validation predictions. combined: the two at hybrid_weight; ensemble: the HybridViTs
    # alone; baseline: the forests alone. Without a baseline, auto is ensemble.
    strategy: str = "auto"
    # combined: the HybridViT's share of the vote, the forests have the rest (0.5: equal votes)
    hybrid_weight: float = HYBRID_WEIGHT
    # calibrated: per-class decision thresholds chosen on validation (the training class priors
    # to a power, quake.training.choice), saved with the model and used by classify; argmax:
    # the most probable class
    thresholds: str = "calibrated"

    def candidate_weights(self, baseline_enabled: bool) -> tuple[float, ...]:
        """The HybridViT shares of the vote the run chooses among (one: nothing to choose)."""
        if not baseline_enabled or self.strategy == "ensemble":
            return (1.0,)
        if self.strategy == "baseline":
            return (0.0,)
        if self.strategy == "combined":
            return (float(self.hybrid_weight),)
        return HYBRID_WEIGHTS

    def validate(self) -> None:
        _check(
            self.strategy in DEPLOY_CHOICES,
            "deploy.strategy",
            self.strategy,
            f"one of {list(DEPLOY_CHOICES)}",
        )
        _check(
            isinstance(self.hybrid_weight, (int, float)) and 0.0 <= self.hybrid_weight <= 1.0,
            "deploy.hybrid_weight",
            self.hybrid_weight,
            "a number from 0 (the forests alone) to 1 (the HybridViT alone)",
        )
        _check(
            self.thresholds in THRESHOLD_CHOICES,
            "deploy.thresholds",
            self.thresholds,
            f"one of {list(THRESHOLD_CHOICES)}",
        )


@dataclass
class ContextConfig:
    """Catalog context (local hour, weekday, depth, magnitude) in the event-level decision
    (quake.models.context); off: waveforms only."""

    enabled: bool = False
    # IANA name ("America/Los_Angeles"), "UTC+HH:MM", or null: solar time of each event's longitude
    timezone: str | None = None

    def validate(self) -> None:
        parse_timezone(self.timezone)  # raises naming the value


@dataclass
class RunConfig:
    """How this process runs; not part of what a resumed run must match."""

    out: str | None = None  # None: runs/<timestamp>-<backbone>-d<depth>
    device: str = "auto"
    num_threads: int | None = None  # None: all cores
    parallel_folds: int | None = None  # CPU: folds trained side by side; None: one per core
    quiet: bool = False
    eval_batch_size: int = 256
    compile: bool = False  # torch.compile the training forward pass (same results within tolerance)
    # where the checked windows live while training: memory (one array in RAM), disk (written
    # once to <run>/windows.npy and memory-mapped), auto (memory when they take under a quarter
    # of the RAM). Same windows either way, so the same results: a resumed run may change it.
    window_cache: str = "auto"

    def validate(self) -> None:
        _check(
            self.device in DEVICE_CHOICES,
            "run.device",
            self.device,
            f"one of {list(DEVICE_CHOICES)}",
        )
        _check(
            self.num_threads is None or self.num_threads >= 1,
            "run.num_threads",
            self.num_threads,
            "an integer >= 1 or null",
        )
        _check(
            self.eval_batch_size >= 1,
            "run.eval_batch_size",
            self.eval_batch_size,
            "an integer >= 1",
        )
        _check(
            self.parallel_folds is None or self.parallel_folds >= 1,
            "run.parallel_folds",
            self.parallel_folds,
            "an integer >= 1 or null",
        )
        _check(
            self.window_cache in WINDOW_CACHE_CHOICES,
            "run.window_cache",
            self.window_cache,
            f"one of {list(WINDOW_CACHE_CHOICES)}",
        )


@dataclass
class TrainConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # Sections that decide the results; a resumed run must match them exactly.
    RESULT_SECTIONS: typing.ClassVar[tuple[str, ...]] = (
        "seed",
        "data",
        "model",
        "optim",
        "augment",
        "cv",
        "baseline",
        "deploy",
        "context",
    )

    def validate(self) -> TrainConfig:
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate()
        _check(
            self.deploy.strategy in ("auto", "ensemble") or self.baseline.enabled,
            "deploy.strategy",
            self.deploy.strategy,
            "'auto' or 'ensemble' when baseline.enabled is false (the baseline is part of what it "
            "would deploy)",
        )
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict:
        """The part of the config that decides the results (everything but ``run``)."""
        full = self.to_dict()
        return {k: full[k] for k in self.RESULT_SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build and validate; unknown keys and wrong types raise ValueError naming them."""
        return _build(cls, data, prefix="").validate()

    @classmethod
    def from_saved(cls, data: dict) -> TrainConfig:
        """A run folder's config.yaml: preprocessing keys it lacks take the values of the time
        before they existed (:func:`quake.data.config.with_keys_of_before`)."""
        return cls.from_dict(with_keys_of_before(data))


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotated type ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ValueError as error:
                errors.append(error)
        raise ValueError(
            f"config value {key}={value!r} has the wrong type; expected "
            f"{' or '.join(_describe(a) for a in args)}"
        )
    if origin is list:
        (item_type,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config value {key}={value!r} has the wrong type; expected a list")
        return [_convert(v, item_type, key) for v in value]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, Path):
            return str(value)
    elif tp is dict:
        if isinstance(value, dict):
            return copy.deepcopy(value)
    else:
        return value
    raise ValueError(
        f"config value {key}={value!r} has the wrong type ({type(value).__name__}); "
        f"expected {_describe(tp)}"
    )


def _build(cls: type, data: Any, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<top>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {[prefix + str(k) for k in unknown]}; "
            f"expected some of {[prefix + k for k in fields]}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, prefix=key + ".")
        else:
            kwargs[name] = _convert(value, tp, key)
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and key != "preprocess":
            result[key] = merge(result[key], value)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **copy.deepcopy(value)}
        else:
            result[key] = copy.deepcopy(value)
    return result


def dotted_to_nested(overrides: dict[str, Any]) -> dict:
    """``{"optim.lr": 1e-3}`` -> ``{"optim": {"lr": 1e-3}}``."""
    nested: dict = {}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ValueError(
                f"config override key {dotted!r} is malformed; expected e.g. 'optim.lr'"
            )
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"config override {dotted!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 0.0003)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is malformed; expected KEY=VALUE, e.g. optim.lr=3e-4")
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):
        # YAML reads "1e-3" as a string; accept plain numbers written that way.
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.strip(), value


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist; expected a YAML file")
    with path.open() as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}"
        )
    return data


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any), then dotted ``overrides``; validated."""
    resolved = TrainConfig().to_dict()
    if path is not None:
        resolved = merge(resolved, load_yaml(path))
    if overrides:
        resolved = merge(resolved, dotted_to_nested(overrides))
    return TrainConfig.from_dict(resolved)
