"""No process outlives its parent: reader and fold worker processes die within seconds when the
main process of ``classify.py`` or ``train.py`` is killed with SIGKILL (real processes, real
pnw-eqex and eqnoise-3c recordings; skipped where they are absent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from quake.data import PreprocessConfig
from quake.inference import EventClassifier
from quake.models import HybridViT

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has died; only its exit status is left


def _kill_when_children_appear(process: subprocess.Popen, at_least: int, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    children: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None:
        children = _children(process.pid)
        if len(children) >= at_least:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the job ended before its workers could be seen"
    assert len(children) >= at_least, f"saw {len(children)} child processes, expected {at_least}"
    time.sleep(1.0)  # let the workers get to work
    children = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return children


def _assert_all_gone(children: set[int], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.2)
    survivors = [p for p in children if _alive(p)]
    for p in survivors:  # do not leave them behind for the rest of the suite
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"child processes {survivors} outlived their parent"


@pytest.fixture(scope="module")
def big_catalog(real_data_dir, tmp_path_factory) -> Path:
    """pnw-eqex's events 20 times over (new ids, folders of links to the real files), so that
    a classification runs long enough to be killed in the middle."""
    pnw = real_data_dir / "pnw-eqex"
    if not pnw.is_dir():
        pytest.skip(f"{pnw} not found")
    root = tmp_path_factory.mktemp("big")
    events = pd.read_csv(pnw / "catalog.csv")
    rows = []
    for k in range(20):
        for event in events.to_dict("records"):
            event_id = f"{event['event_id']}x{k}"
            folder = root / "waveforms" / event_id
            folder.mkdir(parents=True)
            for f in (pnw / "waveforms" / event["event_id"]).iterdir():
                (folder / f.name).symlink_to(f)
            rows.append({**event, "event_id": event_id})
    pd.DataFrame(rows).to_csv(root / "catalog.csv", index=False)
    return root


@pytest.mark.slow
def test_killing_classify_kills_its_reader(big_catalog, tmp_path):
    torch.manual_seed(0)
    config = PreprocessConfig()
    model = HybridViT(depth=1, img_size=config.spectrogram_shape[1:],
                      class_names=["earthquake", "explosion"])  # fmt: skip
    model_dir = EventClassifier([model], config).save(tmp_path / "model")
    out = tmp_path / "predictions.csv"
    command = [sys.executable, str(ROOT / "scripts" / "classify.py"), "--model", str(model_dir),
               "--catalog", str(big_catalog / "catalog.csv"), "--waveforms", str(big_catalog),
               "--out", str(out), "--workers", "1", "--batch-size", "8"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = _kill_when_children_appear(process, at_least=1, timeout_s=120)
    _assert_all_gone(children)


@pytest.mark.slow
def test_killing_train_kills_its_fold_workers(real_data_dir, tmp_path):
    data = real_data_dir / "eqnoise-3c"
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--backbone", "tiny",
               "--depth", "1", "--data", str(data), "--out", str(run), "--epochs", "50",
               "--pretrained", "none", "--set", "run.parallel_folds=2", "--set",
               "baseline.enabled=false", "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = _kill_when_children_appear(process, at_least=2, timeout_s=180)
    _assert_all_gone(children)
    time.sleep(2.0)
    assert not list(run.glob("folds/fold_*/fold.json")), "a fold worker wrote after its parent died"
