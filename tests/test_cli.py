"""Errors a person can act on: every ordinary failure of a quake command ends with one line
naming the file or value and what was expected, a non-zero exit and no traceback (the traceback
with ``-v``); SIGTERM stops a command like Ctrl-C. Real commands in real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from quake.cli import EXIT_ERROR, Stopped, run_command
from quake.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


# --- run_command in this process ---------------------------------------------------------------
def _fails(error: BaseException):
    def body() -> int:
        raise error

    return body


def test_an_ordinary_error_is_one_line_and_exit_2(capsys):
    assert run_command(_fails(ValueError("--lr -1: expected > 0"))) == EXIT_ERROR
    assert capsys.readouterr().err == "error: --lr -1: expected > 0 (-v for the traceback)\n"


def test_errors_of_the_file_libraries_are_one_line(tmp_path, capsys):
    """A real safetensors error (here: a damaged weights file; a full disk while saving raises
    the same class) and a real onnxruntime error (a truncated graph) end as one line, exit 2."""
    import onnxruntime
    from safetensors.numpy import load_file

    damaged = tmp_path / "model.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    assert run_command(lambda: load_file(str(damaged))) == EXIT_ERROR
    assert capsys.readouterr().err.startswith("error: Error while deserializing header")

    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\x08\x07\x12")  # cut short
    assert run_command(lambda: onnxruntime.InferenceSession(str(graph))) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_verbose_adds_the_traceback(capsys):
    assert run_command(_fails(ValueError("bad value")), verbose=True) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("error: bad value\n")


def test_an_os_error_names_the_file(capsys):
    error = PermissionError(13, "Permission denied", "/data/out.csv")
    assert run_command(_fails(error)) == EXIT_ERROR
    assert "error: Permission denied: '/data/out.csv'" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        run_command(_fails(KeyError("x")))


def test_a_stop_says_how_to_resume(capsys):
    assert run_command(_fails(Stopped(signal.SIGTERM)), resume_hint=lambda: "rerun it") == 143
    assert capsys.readouterr().err == "stopped by SIGTERM; rerun it\n"
    assert run_command(_fails(KeyboardInterrupt())) == 130


def test_sigterm_raises_in_the_command_and_the_handler_is_restored(capsys):
    before = signal.getsignal(signal.SIGTERM)

    def body() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        return 0  # not reached: the handler raises first

    assert run_command(body) == 143
    assert signal.getsignal(signal.SIGTERM) is before


# --- a process answers a stop from its start to its exit -----------------------------------------
ONE_COMMAND_PROCESS = """
import atexit, os, signal
from quake.cli import exit_process, run_command

def sigterm():
    os.kill(os.getpid(), signal.SIGTERM)

def body():
    print("outputs written", flush=True)
    return {status}

def main():
    {before}
    status = run_command(body, resume_hint="rerun it")
    {after}
    return status

exit_process(main)
"""


def _one_command_process(status=0, before="", after="") -> subprocess.CompletedProcess:
    """A process whose whole work is one command (``exit_process``), the statements ``before``
    and ``after`` it run around the command's work (the SIGTERM sent to itself there)."""
    code = ONE_COMMAND_PROCESS.format(status=status, before=before or "pass", after=after or "pass")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


@pytest.mark.parametrize(
    "after", ["sigterm()", "atexit.register(sigterm)"], ids=["returned", "interpreter-exit"]
)
@pytest.mark.parametrize("status", [0, EXIT_ERROR])
def test_a_sigterm_once_the_command_has_finished_exits_with_its_status(after, status):
    """The command's work has returned (its outputs complete) and the process is exiting: the
    stop neither kills the process by the signal (-15) nor calls the finished job stopped."""
    result = _one_command_process(status, after=after)
    assert result.returncode == status, result.stderr
    assert result.stdout == "outputs written\n"
    assert result.stderr == ("SIGTERM after the command had finished; its outputs are complete\n")


def test_a_sigterm_before_the_command_works_is_a_stop():
    result = _one_command_process(before="sigterm()")
    assert result.returncode == 143, result.stderr
    assert result.stdout == "" and result.stderr == "stopped by SIGTERM\n"


def test_a_sigterm_while_the_command_works_is_a_stop_with_its_resume_hint():
    result = _one_command_process(status="sigterm() or 0")
    assert result.returncode == 143, result.stderr
    assert result.stdout == "outputs written\n"
    assert result.stderr == "stopped by SIGTERM; rerun it\n"


# --- --help imports nothing heavy ------------------------------------------------------------------
HEAVY_MODULES = ("torch", "timm", "obspy", "pandas", "sklearn", "quake.training", "quake.deploy")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_imports_no_heavy_module(command):
    """The parser of a command is built from light modules only, so ``--help`` answers at once;
    the implementation is imported when the command runs."""
    probe = (
        "import sys\n"
        "from quake.cli import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    *help_lines, imported = result.stdout.strip().splitlines()
    assert help_lines[0].startswith(f"usage: quake {command} [-h]")
    assert imported == "[]", f"quake {command} --help imported {imported}"


# --- the scripts ---------------------------------------------------------------------------------


def _script(name: str, *args: object, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, str(ROOT / "scripts" / name), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _classify(model, pnw: Path, out, *extra, prefix=()) -> subprocess.CompletedProcess:
    return _script("classify.py", "--model", model, "--catalog", pnw / "catalog.csv",
                   "--waveforms", pnw, "--out", out, "--no-progress", *extra,
                   prefix=prefix)  # fmt: skip


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == EXIT_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last, last


def test_out_that_is_a_folder(model_dir, pnw, tmp_path):
    result = _classify(model_dir, pnw, tmp_path)
    _assert_one_line_error(result, f"--out {str(tmp_path)!r} is a folder")


def test_a_damaged_model_folder_is_named_and_v_gives_the_traceback(model_dir, pnw, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    config_path = model / "members" / "member_0" / "model.json"
    config = json.loads(config_path.read_text())
    config["init_kwargs"]["depth"] = 2
    config_path.write_text(json.dumps(config))
    result = _classify(model, pnw, tmp_path / "p.csv")
    _assert_one_line_error(result, "model.safetensors' does not fit", "missing blocks.1")
    assert not (tmp_path / "p.csv").exists()
    verbose = _classify(model, pnw, tmp_path / "p.csv", "-v")
    assert verbose.returncode == EXIT_ERROR and "Traceback" in verbose.stderr

    (model / "classifier.json").write_text("{")
    _assert_one_line_error(
        _script("export.py", "--model", model, "--out", tmp_path / "export"),
        f"{str(model / 'classifier.json')!r} is not valid JSON",
    )


def test_train_refuses_a_pickled_pretrained_file_and_a_set_without_labels(real_data_dir, tmp_path):
    pickled = tmp_path / "weights.pth"
    torch.save({"model": ValueError("not a tensor"), "w": torch.zeros(2)}, pickled)
    data = real_data_dir / "eqnoise-3c"
    result = _script("train.py", "--depth", "1", "--data", data, "--out", tmp_path / "run",
                     "--pretrained", pickled, "--epochs", "1", "--no-baseline",
                     "--quiet")  # fmt: skip
    _assert_one_line_error(result, f"cannot read checkpoint {str(pickled)!r}", "state dict")
    assert not list((tmp_path / "run").glob("folds/*"))  # refused before any fold trained

    unlabelled = real_data_dir / "unlabelled-pnw"
    if unlabelled.is_dir():
        result = _script("train.py", "--depth", "1", "--data", unlabelled,
                         "--out", tmp_path / "run2", "--quiet")  # fmt: skip
        _assert_one_line_error(result, "has no 'event_type' column")
        assert not (tmp_path / "run2").exists()  # refused before the run folder is made

    typo = _script("train.py", "--data", real_data_dir / "eqnoise3c", "--out", tmp_path / "run3")
    _assert_one_line_error(typo, "eqnoise3c' does not exist")
    assert not (tmp_path / "run3").exists()


def test_train_refuses_a_pretrained_path_of_the_wrong_kind_before_reading_data(pnw, tmp_path):
    """A training run folder (or a config file) passed as --pretrained is refused when the
    config is checked: before the data are read, and without a run folder that would then
    refuse the corrected command."""
    run = tmp_path / "earlier-run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "model" / "classifier.json").write_text("{}")
    for pretrained, what in [
        (run, "is a quake training run folder (config.yaml + model/)"),
        (run / "config.yaml", "is a .yaml file"),
    ]:
        out = tmp_path / "run"
        result = _script("train.py", "--data", pnw, "--out", out, "--pretrained", pretrained,
                         "--depth", "1", "--epochs", "1")  # fmt: skip
        _assert_one_line_error(result, f"model.pretrained={str(pretrained)!r} {what}",
                               "expected 'auto', 'none', a folder written by quake pretrain")  # fmt: skip
        assert len(result.stderr.strip().splitlines()) == 1  # nothing read, nothing logged
        assert not out.exists()


# --- a full disk and a read-only folder: a small tmpfs in a private mount namespace --------------
def _private_tmpfs_prefix(folder: Path, options: str) -> tuple[str, ...]:
    """A command prefix that runs the command with a tmpfs (``options``) mounted over ``folder``,
    in a user and mount namespace of its own (no privileges needed, nothing left mounted)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare for a private tmpfs")
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs",
         "-o", options, "tmpfs", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow a private tmpfs: {probe.stderr.strip()}")
    script = f'mount -t tmpfs -o {options} tmpfs "{folder}" && exec "$@"'
    return ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh")


def test_a_full_disk_is_one_line_naming_the_output(model_dir, pnw, tmp_path):
    out_dir = tmp_path / "small"
    out_dir.mkdir()
    prefix = _private_tmpfs_prefix(out_dir, "size=8k")
    result = _classify(model_dir, pnw, out_dir / "p.csv", prefix=prefix)
    _assert_one_line_error(result, f"cannot write {str(out_dir / 'p.csv')!r}",
                           "No space left on device")  # fmt: skip


def test_a_read_only_folder_is_one_line_naming_the_output(model_dir, pnw, tmp_path):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    prefix = _private_tmpfs_prefix(out_dir, "ro,size=64k")
    result = _classify(model_dir, pnw, out_dir / "p.csv", prefix=prefix)
    _assert_one_line_error(result, str(out_dir / "p.csv"), "Read-only file system")


# --- the installed command -------------------------------------------------------------------------
def test_the_wheel_holds_every_quake_package_and_nothing_else():
    """pyproject's package discovery, as setuptools runs it: the benchmark scripts and their
    helpers (benchmarks/), scripts/ and tests/ are not shipped."""
    from setuptools import find_namespace_packages

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = set(find_namespace_packages(str(ROOT), **found["find"]))
    expected = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "quake").rglob("__init__.py")
    }
    assert packages == expected and not [p for p in packages if "bench" in p]


@pytest.mark.slow
def test_pip_install_gives_a_quake_command_that_runs_anywhere(tmp_path):
    """quake's wheel installed into a new virtual environment (its dependencies taken from this
    one's site-packages, so nothing is downloaded), then the command from an unrelated folder."""
    import site
    import venv
    import zipfile

    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(fresh)
    python = fresh / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # the wheel `pip install .` builds, built here (this environment has the build backend)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheels"), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "wheels").glob("quake_seismic-*.whl")
    with zipfile.ZipFile(wheel) as shipped:
        assert not [
            n for n in shipped.namelist() if "/bench_" in n or "benchmarks/" in n
        ]  # in the repo
    # away from the clone: there `python -m pip` would take the build's egg-info as installed
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path,
                             env=alone)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, timeout=120,
                              env=alone)  # fmt: skip

    version = run(str(fresh / "bin" / "python"), "-m", "quake", "--version")
    assert version.returncode == 0 and version.stdout.strip() == "quake 0.1.0"
    helped = run(str(fresh / "bin" / "quake"), "--help")
    assert helped.returncode == 0 and "{" + ",".join(COMMANDS) + "}" in helped.stdout
    assert {"train", "classify", "export", "pretrain"} <= set(COMMANDS)
    for command in COMMANDS:
        helped = run(str(fresh / "bin" / "quake"), command, "--help")
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith(f"usage: quake {command} [-h]")
    dist = run(
        str(python), "-c", "import importlib.metadata as m; print(m.version('quake-seismic'))"
    )
    assert dist.stdout.strip() == "0.1.0", dist.stderr  # the distribution's name on PyPI
    located = run(str(python), "-c", "import quake; print(quake.__file__)")
    assert str(fresh) in located.stdout  # the installed copy, not this checkout


def test_verbose_lines_name_the_event_and_the_station(model_dir, pnw, tmp_path):
    import re

    result = _classify(
        model_dir, pnw, tmp_path / "p.csv", "-v", "--stations-out", tmp_path / "s.csv"
    )
    assert result.returncode == 0, result.stderr
    stations = pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False)
    skipped = stations[stations["status"] == "skipped"]
    assert len(skipped)
    for row in skipped.to_dict("records"):
        line = f"event {row['event_id']}, station {row['station_id']} skipped: "
        assert line in result.stderr, line
    assert len(re.findall(r"event \S+, station \S+ skipped: ", result.stderr)) == len(skipped)
