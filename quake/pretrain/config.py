"""The pretraining configuration: defaults, YAML file, command-line overrides, validation.

Built like the training configuration (:mod:`quake.training.config`, whose YAML and override
helpers it uses): ``defaults < --config file < flags``, every value checked before any data is
read, with a message naming the key, the value and what was expected. ``data.preprocess`` is a
:class:`~quake.data.PreprocessConfig` (the training keys, validated by the same code), so the
windows are cut as training cuts them; ``--preprocess-from`` copies it from a training config.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from quake.data.config import with_keys_of_before
from quake.data.readers.sds import parse_time
from quake.models import Backbone
from quake.training.config import (
    DataConfig,
    _build,
    _check,
    dotted_to_nested,
    load_config,
    load_yaml,
    merge,
)

OBJECTIVES = ("masked_spectrogram", "contrastive")
PRETRAIN_PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class PretrainDataConfig:
    """Where the unlabelled windows come from and how each is cut (``PreprocessConfig`` keys)."""

    paths: list[str] = field(default_factory=list)
    preprocess: dict = field(default_factory=dict)
    windows_per_recording: int | None = 1  # miniSEED trees, SDS crops; null: every whole window
    start: str | None = None  # SDS archives: the time range read (ISO 8601)
    end: str | None = None
    val_fraction: float = 0.05  # events (source_id) held out for the validation loss

    def validate(self) -> None:
        _check(
            isinstance(self.paths, list) and len(self.paths) > 0,
            "data.paths",
            self.paths,
            "at least one data folder (--data PATH)",
        )
        resolved = []
        for path in self.paths:
            p = Path(str(path)).expanduser()
            _check(p.exists(), "data.paths", str(path), "existing folders or catalog files")
            resolved.append(str(p.resolve()))
        self.paths = resolved
        _check(
            self.windows_per_recording is None or self.windows_per_recording >= 1,
            "data.windows_per_recording",
            self.windows_per_recording,
            "an integer >= 1 or null",
        )
        _check(
            0.0 <= self.val_fraction < 0.5,
            "data.val_fraction",
            self.val_fraction,
            "a float in [0, 0.5)",
        )
        if self.start is not None or self.end is not None:
            _check(
                self.start is not None and self.end is not None,
                "data.start / data.end",
                (self.start, self.end),
                "both times (an SDS archive is read between them), or neither",
            )
            t0, t1 = parse_time(self.start, "data.start"), parse_time(self.end, "data.end")
            _check(t1 > t0, "data.end", self.end, f"a time after data.start ({self.start})")
        self.preprocess = self.preprocess_config().to_dict()

    def preprocess_config(self):
        """The validated :class:`quake.data.PreprocessConfig` (by the training code's rules)."""
        return DataConfig(preprocess=dict(self.preprocess)).preprocess_config()


@dataclass
class PretrainModelConfig:
    backbone: str = "tiny"
    depth: int = 4
    init: str = "none"  # none | timm (ImageNet weights) | PATH (timm checkpoint or pretraining run)

    def validate(self) -> None:
        try:
            backbone = Backbone.from_name(self.backbone)
        except ValueError:
            allowed = [b.value for b in Backbone]
            raise ValueError(
                f"config value model.backbone={self.backbone!r} is invalid; expected one of "
                f"{allowed}"
            ) from None
        _check(
            1 <= self.depth <= backbone.max_depth,
            "model.depth",
            self.depth,
            f"an integer in [1, {backbone.max_depth}]",
        )
        _check(
            self.init in ("none", "timm") or Path(self.init).expanduser().exists(),
            "model.init",
            self.init,
            "'none', 'timm' or the path of a timm checkpoint or a pretraining folder",
        )

    def pretrained_argument(self) -> bool | str:
        """HybridViT's ``pretrained`` for ``init``."""
        if self.init == "none":
            return False
        if self.init == "timm":
            return True
        return str(Path(self.init).expanduser())


@dataclass
class ObjectiveConfig:
    name: str = "masked_spectrogram"
    mask_ratio: float = 0.6  # of the stem tokens, hidden from the encoder
    decoder_dim: int = 128
    decoder_depth: int = 1
    decoder_heads: int = 4
    temperature: float = 0.1  # contrastive: of the softmax over similarities
    projection_dim: int = 128  # contrastive: width of the compared embedding

    def validate(self) -> None:
        _check(self.name in OBJECTIVES, "objective.name", self.name, f"one of {list(OBJECTIVES)}")
        _check(0.0 < self.mask_ratio < 1.0, "objective.mask_ratio", self.mask_ratio, "in (0, 1)")
        _check(self.decoder_depth >= 1, "objective.decoder_depth", self.decoder_depth, ">= 1")
        _check(self.decoder_heads >= 1, "objective.decoder_heads", self.decoder_heads, ">= 1")
        _check(
            self.decoder_dim >= 1 and self.decoder_dim % self.decoder_heads == 0,
            "objective.decoder_dim",
            self.decoder_dim,
            f"a positive multiple of objective.decoder_heads ({self.decoder_heads})",
        )
        _check(self.temperature > 0, "objective.temperature", self.temperature, "> 0")
        _check(self.projection_dim >= 1, "objective.projection_dim", self.projection_dim, ">= 1")


@dataclass
class PretrainOptimConfig:
    # 25 epochs of unlabelled-pnw (2,860 windows) take about 5 minutes on 2 CPU cores
    epochs: int = 25
    batch_size: int = 64
    lr: float = 5e-4  # AdamW peak learning rate
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.05
    grad_clip_norm: float | None = 1.0
    # fp32 | bf16 | auto (bf16 where the hardware has it). fp32 by default: on a CPU with
    # native bf16, autocast made this small model's steps slower (115 vs 290 windows/s)
    precision: str = "fp32"

    def validate(self) -> None:
        _check(self.epochs >= 1, "optim.epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size >= 1, "optim.batch_size", self.batch_size, "an integer >= 1")
        _check(self.lr > 0, "optim.lr", self.lr, "a float > 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, ">= 0")
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        _check(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            "optim.grad_clip_norm",
            self.grad_clip_norm,
            "a float > 0 or null",
        )
        _check(
            self.precision in PRETRAIN_PRECISIONS,
            "optim.precision",
            self.precision,
            f"one of {list(PRETRAIN_PRECISIONS)}",
        )


@dataclass
class PretrainRunConfig:
    """How this process runs; a resumed run may change these."""

    out: str | None = None  # null: runs/<timestamp>-pretrain
    device: str = "auto"
    num_threads: int | None = None
    quiet: bool = False

    def validate(self) -> None:
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "run.device",
            self.device,
            "auto, cpu or cuda",
        )
        _check(
            self.num_threads is None or self.num_threads >= 1,
            "run.num_threads",
            self.num_threads,
            "an integer >= 1 or null",
        )


@dataclass
class PretrainConfig:
    seed: int = 0
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    run: PretrainRunConfig = field(default_factory=PretrainRunConfig)

    # Sections that decide the weights; a resumed run must match them exactly.
    RESULT_SECTIONS: typing.ClassVar[tuple[str, ...]] = (
        "seed",
        "data",
        "model",
        "objective",
        "optim",
    )

    def validate(self) -> PretrainConfig:
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict:
        full = self.to_dict()
        return {k: full[k] for k in self.RESULT_SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> PretrainConfig:
        """Build and validate; unknown keys and wrong types raise ValueError naming them."""
        return _build(cls, data, prefix="").validate()

    @classmethod
    def from_saved(cls, data: dict) -> PretrainConfig:
        """A run folder's config.yaml: preprocessing keys it lacks take the values of the time
        before they existed (:func:`quake.data.config.with_keys_of_before`)."""
        return cls.from_dict(with_keys_of_before(data))


def load_pretrain_config(
    path: str | Path | None = None,
    overrides: dict | None = None,
    *,
    preprocess_from: str | Path | None = None,
) -> PretrainConfig:
    """Defaults, then the YAML file at ``path``, then ``data.preprocess`` of the training config
    ``preprocess_from`` (resolved), then dotted ``overrides``; validated."""
    resolved = PretrainConfig().to_dict()
    if path is not None:
        resolved = merge(resolved, load_yaml(path))
    if preprocess_from is not None:
        resolved["data"]["preprocess"] = load_config(preprocess_from).data.preprocess
    if overrides:
        resolved = merge(resolved, dotted_to_nested(overrides))
    return PretrainConfig.from_dict(resolved)
