"""Shared fixtures: where the real data lives (skipped cleanly where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA_ENV = "QUAKE_REAL_DATA"


def _real_data_path() -> Path:
    env = os.environ.get(REAL_DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``../shared/data/real`` (or ``$QUAKE_REAL_DATA``); the test is skipped when it is absent."""
    path = _real_data_path()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set {REAL_DATA_ENV} to point at it)")
    return path
