"""Shared fixtures: where the real data lives (skipped cleanly where it is absent)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REAL_DATA_ENV = "QUAKE_REAL_DATA"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _real_data_path() -> Path:
    env = os.environ.get(REAL_DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture
def bench_helper(monkeypatch):
    """``bench_helper("model_throughput")``: a helper module of ``benchmarks/``, imported as the
    benchmark scripts import it (that folder is not part of the package)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``../shared/data/real`` (or ``$QUAKE_REAL_DATA``); the test is skipped when it is absent."""
    path = _real_data_path()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set {REAL_DATA_ENV} to point at it)")
    return path


@pytest.fixture(scope="session")
def pnw(real_data_dir) -> Path:
    """``pnw-eqex``: 48 catalogued PNSN events, vertical-component miniSEED per event folder."""
    path = real_data_dir / "pnw-eqex"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A random-init TINY depth-1 classifier (earthquake, explosion) saved as a model folder
    (what ``--model`` takes): plumbing, not accuracy."""
    import torch

    from quake.data import PreprocessConfig
    from quake.deploy.ensemble import EventClassifier
    from quake.models import HybridViT

    torch.manual_seed(0)
    config = PreprocessConfig()
    model = HybridViT(depth=1, img_size=config.spectrogram_shape[1:],
                      class_names=["earthquake", "explosion"])  # fmt: skip
    return EventClassifier([model], config).save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="session")
def pnw_run(pnw, tmp_path_factory) -> Path:
    """A tiny run on pnw-eqex (:mod:`tiny_run`) deploying the combined model
    (``deploy.strategy: combined``) with its card and thresholds. Plumbing, not accuracy; read
    it, never change it (copy its ``model`` folder first)."""
    from tiny_run import tiny_run_config

    from quake.training import train

    out = tmp_path_factory.mktemp("pnw-run") / "run"
    return train(tiny_run_config(pnw, out, **{"deploy.strategy": "combined"})).run_dir


@pytest.fixture(scope="session")
def damaged_eqnoise(real_data_dir, tmp_path_factory) -> dict:
    """A copy of ``eqnoise-3c`` with the same ``metadata.csv``: the waveform of one trace of the
    second event absent from ``waveforms.hdf5``, one trace of the third event stored 1-D.
    Keys: ``damaged`` (the copy), ``intact``, ``source_ids`` (the first four events),
    ``missing`` and ``bad_shape`` (the two trace names)."""
    import h5py
    import pandas as pd

    intact = real_data_dir / "eqnoise-3c"
    if not intact.is_dir():
        pytest.skip(f"{intact} not found")
    metadata = pd.read_csv(intact / "metadata.csv")
    source_ids = list(metadata["source_id"].drop_duplicates()[:4])
    traces = metadata.groupby("source_id")["trace_name"]
    missing, bad_shape = traces.first()[source_ids[1]], traces.last()[source_ids[2]]
    root = tmp_path_factory.mktemp("damaged-eqnoise")
    (root / "metadata.csv").write_bytes((intact / "metadata.csv").read_bytes())
    with (
        h5py.File(intact / "waveforms.hdf5", "r") as src,
        h5py.File(root / "waveforms.hdf5", "w") as dst,
    ):
        dst.create_group("data_format").attrs.update(dict(src["data_format"].attrs))
        for name, dataset in src["data"].items():
            if name != missing:
                data = dataset[()]
                dst.create_dataset(f"data/{name}", data=data[0] if name == bad_shape else data)
    return {"damaged": root, "intact": intact, "source_ids": source_ids, "missing": missing,
            "bad_shape": bad_shape}  # fmt: skip
