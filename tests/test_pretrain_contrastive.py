"""quake pretrain's contrastive objective: partners from the same event, the loss learns, and a
run on real catalog + miniSEED recordings writes an encoder a HybridViT loads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from quake.models import HybridViT
from quake.models.encoder import ENCODER_FILE, PRETRAIN_FILE
from quake.pretrain import load_pretrain_config, pretrain
from quake.pretrain.contrastive import ContrastiveModel, PartnerIndex, view_masks
from tests.test_pretrain import SMALL_IMG, _pretrain_config, _spectrograms, fit_on_a_tiny_set


def test_partners_are_other_windows_of_the_same_event():
    groups = np.array(["a", "b", "a", "c", "a", "b"])
    index = PartnerIndex(groups)
    rows = np.arange(len(groups))
    seen = {r: set() for r in rows}
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        partners = index.draw(rows, generator)
        for row, partner in zip(rows, partners, strict=True):
            seen[row].add(int(partner))
    assert seen[0] == {2, 4} and seen[2] == {0, 4} and seen[4] == {0, 2}
    assert seen[1] == {5} and seen[5] == {1}
    assert seen[3] == {3}  # alone in its event: paired with itself
    again = [PartnerIndex(groups).draw(rows, torch.Generator().manual_seed(7)) for _ in range(2)]
    np.testing.assert_array_equal(again[0], again[1])


def test_view_masks_hide_one_band_and_one_run_at_most_a_fifth():
    masks = view_masks(64, (33, 32), torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, 33, 32)
    rows_hidden = masks[:, 0].all(dim=2).sum(dim=1)  # frequency bins hidden at every frame
    cols_hidden = masks[:, 0].all(dim=1).sum(dim=1)
    assert rows_hidden.max() <= 0.2 * 33 and cols_hidden.max() <= 0.2 * 32
    assert (rows_hidden > 0).any() and (cols_hidden > 0).any()


def test_the_contrastive_objective_learns_on_a_tiny_set():
    torch.manual_seed(0)
    model = ContrastiveModel(HybridViT(depth=1, img_size=SMALL_IMG), temperature=0.2)
    spec = _spectrograms(32)
    groups = torch.arange(32)  # every window its own event: the two views are the positives

    before, after = fit_on_a_tiny_set(
        model,
        lambda: model(spec, spec, groups, torch.Generator().manual_seed(9)).loss,
        lambda generator: model(spec, spec, groups, generator).loss,
        steps=30,
    )
    assert after < 0.8 * before, (before, after)
    # windows of one event other than the pair are not negatives
    out = model(spec[:4], spec[:4], torch.tensor([0, 0, 1, 2]))
    assert torch.isinf(out.logits[0, 1]) and torch.isinf(out.logits[1, 0])
    assert torch.isfinite(out.logits.diagonal()).all() and torch.isfinite(out.logits[0, 2])


@pytest.fixture(scope="module")
def small_catalog(real_data_dir, tmp_path_factory):
    """Five unlabelled-pnw events (catalog.csv + their miniSEED folders, several stations each)."""
    source = real_data_dir / "unlabelled-pnw"
    if not (source / "catalog.csv").is_file():
        pytest.skip(f"{source} not found")
    catalog = pd.read_csv(source / "catalog.csv")
    events = [e for e in catalog["event_id"] if (source / "waveforms" / e).is_dir()][:5]
    root = tmp_path_factory.mktemp("catalog")
    catalog[catalog["event_id"].isin(events)].to_csv(root / "catalog.csv", index=False)
    for event in events:
        shutil.copytree(source / "waveforms" / event, root / "waveforms" / event)
    return root


def test_a_contrastive_run_on_real_recordings_writes_a_loadable_encoder(small_catalog, tmp_path):
    config = _pretrain_config(small_catalog, tmp_path / "run", **{"objective.name": "contrastive"})
    result = pretrain(config)
    info = json.loads((result.out / PRETRAIN_FILE).read_text())
    objective = info["objective"]
    assert objective["name"] == "contrastive" and objective["temperature"] == 0.1
    assert objective["events"] == 5 and objective["events_with_several_windows"] >= 3
    history = json.loads((result.out / "loss.json").read_text())["history"]
    assert len(history) == 2
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in history)
    model = HybridViT(depth=1, img_size=SMALL_IMG, pretrained=str(result.out / ENCODER_FILE))
    assert set(model.pretrained_info["loaded"]) | set(model.pretrained_info["not_pretrained"]) == (
        set(model.state_dict())
    )
    assert model.pretrained_info["not_pretrained"] == ["head.weight", "head.bias"]
    with pytest.raises(ValueError, match=r"objective\.temperature.*> 0"):
        load_pretrain_config(
            overrides={"data.paths": [str(small_catalog)], "objective.temperature": 0.0}
        )
