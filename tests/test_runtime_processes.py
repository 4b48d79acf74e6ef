"""No process outlives its parent, and a stopped job resumes to the result of an uninterrupted
one: reader and fold worker processes die within seconds when the main process of
``classify.py`` or ``train.py`` is killed with SIGKILL; SIGTERM stops either cleanly (lock
released, the rows or folds done so far kept); a rerun finishes the job with the same output as
a run never stopped (real processes, real pnw-eqex and eqnoise-3c recordings; skipped where they
are absent)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

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


def _classify_command(model_dir: Path, catalog: Path, waveforms: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "classify.py"), "--model", str(model_dir),
            "--catalog", str(catalog), "--waveforms", str(waveforms), "--out", str(out),
            "--workers", "1", "--batch-size", "8", "--no-progress"]  # fmt: skip


def _assert_same_as_the_original_events(out: Path, reference: Path, n_copies: int) -> None:
    """Every copy of a pnw-eqex event in ``out`` has the row the event itself has in
    ``reference`` (a run over pnw-eqex never stopped), and every copy is there once."""
    rows = pd.read_csv(out, dtype=str, keep_default_na=False)
    expected = pd.read_csv(reference, dtype=str, keep_default_na=False).set_index("event_id")
    assert len(rows) == len(expected) * n_copies and rows["event_id"].is_unique
    original = rows["event_id"].str.rsplit("x", n=1).str[0]
    pd.testing.assert_frame_equal(
        rows.drop(columns="event_id").reset_index(drop=True),
        expected.loc[original].reset_index(drop=True),
    )


@pytest.fixture(scope="module")
def reference_predictions(model_dir, real_data_dir, tmp_path_factory) -> Path:
    """The predictions of a classification of pnw-eqex itself, never stopped."""
    pnw = real_data_dir / "pnw-eqex"
    out = tmp_path_factory.mktemp("reference") / "predictions.csv"
    subprocess.run(_classify_command(model_dir, pnw / "catalog.csv", pnw, out),
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return out


def _wait_for(condition, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, "the job ended before it could be stopped"
        assert time.monotonic() < deadline, f"nothing to stop after {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_killing_classify_kills_its_reader_and_a_rerun_resumes(
    model_dir, big_catalog, reference_predictions, tmp_path
):
    out = tmp_path / "predictions.csv"
    command = _classify_command(model_dir, big_catalog / "catalog.csv", big_catalog, out)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = _kill_when_children_appear(process, at_least=1, timeout_s=120)
    _assert_all_gone(children)

    rerun = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same_as_the_original_events(out, reference_predictions, n_copies=20)


class _Stderr:
    """The stderr of a running process, read as it comes (a thread drains the pipe, so the
    process never blocks on it): ``events_done()`` is the count its progress bar last showed."""

    def __init__(self, process: subprocess.Popen):
        self.chunks: list[str] = []
        self.thread = threading.Thread(target=self._drain, args=(process.stderr,), daemon=True)
        self.thread.start()

    def _drain(self, pipe) -> None:
        for chunk in iter(lambda: pipe.read(256), ""):
            self.chunks.append(chunk)

    def events_done(self) -> int:
        counts = re.findall(r"\| *(\d+)/\d+ \[", "".join(self.chunks))
        return int(counts[-1]) if counts else 0

    def text(self) -> str:
        self.thread.join(timeout=30)
        return "".join(self.chunks)


@pytest.mark.slow
def test_sigterm_stops_classify_cleanly_and_a_rerun_resumes(
    model_dir, big_catalog, reference_predictions, tmp_path
):
    """The stop is sent once the job's progress bar shows 24 of its 960 events done (three
    batches): mid-way whatever the machine's speed, the job being far from its end."""
    out = tmp_path / "predictions.csv"
    command = _classify_command(model_dir, big_catalog / "catalog.csv", big_catalog, out)
    with_bar = [c for c in command if c != "--no-progress"]
    process = subprocess.Popen(with_bar, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = _Stderr(process)
    _wait_for(lambda: stderr.events_done() >= 24, process, timeout_s=300)
    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    err = stderr.text()
    assert process.returncode == 143, err
    assert f"stopped by SIGTERM; rerun with --resume to keep the events already in {out}" in err
    assert "Traceback" not in err
    _assert_all_gone(children)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # no lock, no temp
    kept = len(pd.read_csv(out))
    # rows were kept and the job was far from its end; once in four runs fewer rows were kept
    # than the bar had shown done (17 of 24): the rerun below still ends with every row
    assert 0 < kept < 960

    rerun = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{kept} kept from a previous run" in rerun.stdout
    _assert_same_as_the_original_events(out, reference_predictions, n_copies=20)


# the classify command with a SIGTERM sent to itself at one of its last steps
SIGTERM_AT = """
import atexit, os, signal, sys
import quake.commands.classify as command
from quake.cli import exit_process

def sigterm():
    os.kill(os.getpid(), signal.SIGTERM)

work = command._classify

def work_then(args):
    status = work(args)
    {end_of_work}
    return status

def main():
    command._classify = work_then
    status = command.main(sys.argv[1:])
    {returned}
    return status

exit_process(main)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "when, expected",
    [("end_of_work", 143), ("returned", 0), ("interpreter_exit", 0)],
)
def test_a_sigterm_during_the_last_steps_of_classify(
    model_dir, pnw, reference_predictions, tmp_path, when, expected
):
    """A stop at the end of the command's work (summary printed, the work not yet returned)
    is a stop: 143 and the resume hint; once the work has returned, while the process exits,
    the job is done: exit 0. Never a process killed by the signal (-15), and the predictions
    are complete either way."""
    hooks = {"end_of_work": "pass", "returned": "pass"}
    if when == "interpreter_exit":
        hooks["returned"] = "atexit.register(sigterm)"
    else:
        hooks[when] = "sigterm()"
    out = tmp_path / "out" / "predictions.csv"
    command = _classify_command(model_dir, pnw / "catalog.csv", pnw, out)
    command[1:2] = ["-c", SIGTERM_AT.format(**hooks)]  # in place of scripts/classify.py
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == expected, result.stderr
    assert "Traceback" not in result.stderr
    assert "48 events -> " in result.stdout  # the summary, printed before the stop
    last = result.stderr.strip().splitlines()[-1]
    if expected == 143:
        assert last.startswith("stopped by SIGTERM; rerun with --resume")
    else:
        assert last == "SIGTERM after the command had finished; its outputs are complete"
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(reference_predictions))
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # lock, temp


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


def _train_command(data: Path, run: Path) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--backbone", "tiny",
            "--depth", "1", "--data", str(data), "--out", str(run), "--epochs", "3",
            "--folds", "4", "--threads", "1", "--pretrained", "none", "--no-baseline",
            "--set", "run.parallel_folds=2", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_a_stopped_then_killed_training_resumes_to_the_uninterrupted_result(
    real_data_dir, tmp_path
):
    data = real_data_dir / "eqnoise-3c"
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    subprocess.run(_train_command(data, tmp_path / "whole"), check=True, capture_output=True,
                   timeout=600)  # fmt: skip

    run = tmp_path / "run"
    command = _train_command(data, run)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(run.glob("folds/fold_*/fold.json")), process, timeout_s=300)
    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert f"stopped by SIGTERM; rerun with --out {run} to resume" in stderr
    assert "Traceback" not in stderr
    _assert_all_gone(children)
    assert not (run / "run.lock").exists()
    done = {p.parent.name for p in run.glob("folds/fold_*/fold.json")}
    assert 0 < len(done) < 4

    # the rerun is killed with SIGKILL while its fold workers train, then run once more
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _assert_all_gone(_kill_when_children_appear(process, at_least=1, timeout_s=180))
    last = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stderr
    assert "taking over the lock" in last.stderr  # left by the killed process

    whole = pd.read_csv(tmp_path / "whole" / "predictions.csv")
    resumed = pd.read_csv(run / "predictions.csv")
    pd.testing.assert_frame_equal(resumed, whole)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (run, tmp_path / "whole")]
    assert metrics[0]["aggregate"] == metrics[1]["aggregate"]
    assert set(metrics[0]["resumed_folds"]) >= {int(f.split("_")[1]) for f in done}
