"""The run folder every job writes (training, pretraining): where a new one goes, the resolved
config that ties a folder to its settings (so a second start resumes, or is refused naming the
keys that differ), the library versions, and the log file beside the outputs."""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy
import obspy
import pandas
import sklearn
import timm
import torch
import yaml

from quake.runtime import config_differences, write_text_atomic
from quake.version import __version__

CONFIG_FILE = "config.yaml"


def default_run_dir(name: str) -> Path:
    """``runs/<timestamp>-<name>``: a new folder for each start."""
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def versions() -> dict[str, str]:
    """The versions a run's results depend on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "obspy": obspy.__version__,
        "pandas": pandas.__version__,
        "quake": __version__,
    }


def check_run_folder(folder: Path, config: Any, what: str, ignore: Iterable[str] = ()) -> bool:
    """True when ``folder`` holds a run of this ``config`` (resume), False when it is new or
    empty (files named in ``ignore`` aside). A folder saved with other settings is a ValueError
    naming the differing keys; a folder that is not a run of ``what`` is one too.

    ``config`` has ``from_saved`` (a saved config.yaml, keys it lacks at the values of the time
    before they existed), ``result_dict`` (the settings that change results) and ``to_yaml``,
    as TrainConfig and PretrainConfig do."""
    saved_path = folder / CONFIG_FILE
    if saved_path.is_file():
        saved = type(config).from_saved(yaml.safe_load(saved_path.read_text()))
        diffs = config_differences(saved.result_dict(), config.result_dict())
        if diffs:
            raise ValueError(
                f"cannot resume {str(folder)!r}: its config differs from this one in "
                + "; ".join(diffs)
                + ". Use another --out folder, or the same settings to resume."
            )
        return True
    ignored = set(ignore)
    if folder.exists() and (
        not folder.is_dir() or any(c.name not in ignored for c in folder.iterdir())
    ):
        raise ValueError(
            f"--out {str(folder)!r} exists and is not a {what} (no {CONFIG_FILE}); "
            "expected a new folder or one written by an earlier run"
        )
    return False


def start_run_folder(folder: Path, config: Any, what: str, ignore: Iterable[str] = ()) -> bool:
    """:func:`check_run_folder`, then a new folder is created with its ``config.yaml``.
    Returns True when resuming."""
    if check_run_folder(folder, config, what, ignore):
        return True
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / CONFIG_FILE, config.to_yaml())
    return False


class RunLog:
    """Copy the package's log records into a file of the run folder while the run lasts."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path)
        self.handler.setLevel(logging.INFO)
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.logger = logging.getLogger("quake")
        self.old_level = self.logger.level

    def __enter__(self) -> RunLog:
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old_level)
        self.handler.close()
