"""benchmarks/bench_annotate.py runs with the default preprocessing (filters on, so the
per-window path) and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_annotate_prints_its_table_for_the_default_model(real_data_dir):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_annotate.py"), "--hours", "0.1"],
        env={**os.environ, "QUAKE_REAL_DATA": str(real_data_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert any(row.startswith("| annotate, float32 (per-window: filtered model)") for row in rows)
    model_only = [row for row in rows if row.startswith("| model only")]
    assert len(model_only) == 1 and "windows/s" in model_only[0]
