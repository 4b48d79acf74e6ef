"""Training config: defaults, YAML files, command-line precedence and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from quake.training.config import TrainConfig, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]


def _train_script():
    from quake.commands import train

    return train


def test_default_yaml_matches_code_defaults():
    assert load_config(REPO / "configs" / "default.yaml") == TrainConfig().validate()


def test_example_configs_are_valid():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)  # raises on any bad key or value


def test_resolved_config_round_trips_through_yaml():
    config = load_config(overrides={"optim.lr": 3e-4, "data.preprocess.window_s": 10.24})
    again = TrainConfig.from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config
    # the preprocessing is stored fully resolved, not just the keys that were set
    assert again.data.preprocess["stft_nperseg"] == 64
    assert again.data.preprocess["window_s"] == 10.24


def test_precedence_cli_over_file_over_defaults(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("optim:\n  lr: 0.0005\n  epochs: 3\ncv:\n  folds: 4\n")
    script = _train_script()
    args = script.parse_args(
        ["--config", str(config_file), "--epochs", "7", "--set", "optim.weight_decay=0.2"]
    )
    config = load_config(args.config, script.overrides_from_args(args))
    assert config.optim.epochs == 7  # CLI beats the file
    assert config.optim.lr == 0.0005  # file beats the default
    assert config.cv.folds == 4  # file beats the default
    assert config.optim.weight_decay == 0.2  # --set reaches any key
    assert config.optim.batch_size == TrainConfig().optim.batch_size  # default kept


def test_cli_flags_map_to_config_keys(tmp_path):
    script = _train_script()
    args = script.parse_args(
        [
            "--backbone", "tiny", "--depth", "2", "--folds", "3", "--batch-size", "8",
            "--lr", "1e-4", "--pretrained", "none", "--freeze-backbone", "--seed", "5",
            "--out", str(tmp_path / "r"), "--device", "cpu", "--data", str(tmp_path),
        ]
    )  # fmt: skip
    config = load_config(None, script.overrides_from_args(args))
    assert (config.model.depth, config.cv.folds, config.optim.batch_size) == (2, 3, 8)
    assert config.optim.lr == pytest.approx(1e-4)
    assert config.model.pretrained == "none" and config.model.freeze_backbone is True
    assert config.seed == 5 and config.run.device == "cpu"
    assert config.run.out == str(tmp_path / "r") and config.data.path == str(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"optim.lrr": 0.1}, r"unknown config key.*optim\.lrr"),
        ({"optim.lr": -0.001}, r"optim\.lr=-0\.001.*expected a float > 0"),
        ({"cv.folds": 1}, r"cv\.folds=1.*expected an integer >= 2"),
        ({"model.backbone": "giant"}, r"model\.backbone='giant'.*expected one of"),
        ({"optim.epochs": "ten"}, r"optim\.epochs='ten'.*wrong type"),
        (
            {"optim.class_balance": "oversample"},
            r"optim\.class_balance='oversample'.*weighted_loss",
        ),
        ({"augment.noise_prob": 1.5}, r"augment\.noise_prob=1\.5.*probability"),
        ({"augment.noise_snr_db": [10, 0]}, r"augment\.noise_snr_db.*low <= high"),
        (
            {"optim.epochs": 5, "optim.frozen_epochs": 5},
            r"optim\.frozen_epochs=5.*\[0, optim\.epochs=5\)",
        ),
        ({"data.preprocess.anchor": "s_arrival"}, r"anchor.*s_arrival"),
        ({"data.preprocess.stft_hopp": 3}, r"unknown config key.*data\.preprocess\.stft_hopp"),
        ({"run.device": "tpu"}, r"run\.device='tpu'"),
        (
            {"model.pretrained": "/no/such/weights.pth"},
            r"model\.pretrained='/no/such/weights\.pth'",
        ),
        ({"seed": -1}, r"seed=-1"),
        ({"deploy.hybrid_weight": 1.5}, r"deploy\.hybrid_weight=1\.5.*from 0 .* to 1"),
    ],
)
def test_bad_values_are_rejected_with_the_value_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(overrides=overrides)


def test_bad_config_file_is_rejected(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match="does not exist"):
        load_config(missing)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(listing)
    section = tmp_path / "section.yaml"
    section.write_text("optim: 3\n")
    with pytest.raises(ValueError, match="'optim.' must be a mapping"):
        load_config(section)


def test_cli_reports_bad_values_without_traceback(capsys):
    script = _train_script()
    assert script.main(["--lr", "-1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr=-1.0" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optim.lr=1e-3", ("optim.lr", 1e-3)),
        ("optim.epochs=12", ("optim.epochs", 12)),
        ("augment.enabled=false", ("augment.enabled", False)),
        ("augment.noise_snr_db=[5, 15]", ("augment.noise_snr_db", [5, 15])),
        ("data.path=../x/y", ("data.path", "../x/y")),
        ("optim.patience=null", ("optim.patience", None)),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_parse_override_rejects_missing_equals():
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_override("optim.lr")


def test_null_augmentation_keys_follow_what_the_windows_start_at(real_data_dir, pnw):
    from quake.training.augment import Augmenter
    from quake.training.config import AUGMENT_BY_ANCHOR, AugmentConfig
    from quake.training.run import open_training_set, windows_follow_picks

    picked = AugmentConfig().resolved(windows_follow_picks=True)
    assert {k: getattr(picked, k) for k in AUGMENT_BY_ANCHOR["picks"]} == {
        "time_shift_s": 0.25, "channel_dropout_prob": 0.3, "time_mask_prob": 0.0,
        "freq_mask_prob": 0.0,
    }  # fmt: skip
    origin = AugmentConfig(time_shift_s=2.0).resolved(windows_follow_picks=False)
    assert origin.time_shift_s == 2.0 and origin.time_mask_prob == 0.5  # a set value stays
    with pytest.raises(ValueError, match=r"augment keys \['time_shift_s', .*\] are null"):
        Augmenter.from_config(AugmentConfig(), sampling_rate_hz=100.0)
    for path, expected in ((real_data_dir / "eqnoise-3c", True), (pnw, False)):
        config = load_config(None, {"data.path": str(path)})
        assert windows_follow_picks(config, open_training_set(config)) is expected


def test_hybrid_weight_has_one_default():
    import inspect

    from quake.deploy.combined import HYBRID_WEIGHT, CombinedClassifier

    default = inspect.signature(CombinedClassifier).parameters["hybrid_weight"].default
    assert default == TrainConfig().deploy.hybrid_weight == HYBRID_WEIGHT == 0.4
