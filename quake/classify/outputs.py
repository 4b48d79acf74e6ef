"""Where a catalog classification writes: the rows so far, flushed atomically, read back for
``--resume``, and the one-writer lock beside the output.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from quake.classify.tables import write_csv_atomic
from quake.runtime import (
    OutputLock,
)


def _read_existing(path: Path, columns: list[str], model_id: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns) != columns:
        raise ValueError(
            f"cannot resume {path}: its columns {list(table.columns)} differ from this model's "
            f"{columns}; write to a new file or drop --resume"
        )
    incomplete = np.flatnonzero((table["model_id"] == "").to_numpy())
    if len(incomplete):
        raise ValueError(
            f"cannot resume {path}: line {incomplete[0] + 2} is incomplete (no model_id; was the "
            "file cut short?); expected complete rows of a predictions table: write to a new "
            "file or drop --resume"
        )
    other = sorted(set(table["model_id"]) - {model_id})
    if other:
        raise ValueError(
            f"cannot resume {path}: it holds predictions of model(s) {other}, not {model_id!r}; "
            "write to a new file or drop --resume"
        )
    return table.drop_duplicates("event_id", keep="first")


class Outputs:
    """Rows so far, flushed atomically (stations first, so they never lag the predictions)."""

    def __init__(self, out, stations_out, columns, station_columns, events: pd.DataFrame):
        self.out = Path(out)
        self.stations_out = Path(stations_out) if stations_out else None
        self.columns = columns
        self.station_columns = station_columns
        self.order = {eid: i for i, eid in enumerate(events["event_id"])}
        self.rows: dict[str, dict] = {}
        self.station_rows: list[dict] = []

    def load(self, model_id: str, review: Callable[[dict], str]) -> set[str]:
        if not self.out.is_file():
            return set()
        table = _read_existing(self.out, self.columns, model_id)
        table = table[table["event_id"].isin(self.order)]
        self.rows = {r["event_id"]: {**r, "review": review(r)} for r in table.to_dict("records")}
        if self.stations_out is not None and self.stations_out.is_file():
            stations = pd.read_csv(self.stations_out, dtype=str, keep_default_na=False)
            if list(stations.columns) == self.station_columns:
                keep = stations["event_id"].isin(self.rows)
                self.station_rows = stations[keep].to_dict("records")
        return set(self.rows)

    def add(self, row: dict, station_rows: list[dict]) -> None:
        self.rows[row["event_id"]] = row
        self.station_rows.extend(station_rows)

    def flush(self) -> None:
        rows = sorted(self.rows.values(), key=lambda r: self.order[r["event_id"]])
        if self.stations_out is not None:
            stations = sorted(self.station_rows, key=lambda r: self.order[r["event_id"]])
            write_csv_atomic(
                pd.DataFrame(stations, columns=self.station_columns), self.stations_out
            )
        write_csv_atomic(pd.DataFrame(rows, columns=self.columns), self.out)


@contextlib.contextmanager
def one_writer(out: str | os.PathLike, ranks) -> Iterator[None]:
    """One job per output: the lock beside ``out`` (:class:`quake.runtime.OutputLock`). A
    sharded job's rank 0 holds it for the whole job and tells the other ranks whether it got it,
    so that all of them stop when another job writes ``out``."""
    lock = OutputLock(lock_path(out), f"--out {str(out)!r}")
    if not ranks.enabled:
        with lock:
            yield
        return
    refusal = None
    if ranks.is_main:
        try:
            lock.__enter__()
        except ValueError as err:
            refusal = str(err)
    refusal = ranks.gather(refusal)[0]
    if refusal is not None:
        raise ValueError(refusal)
    try:
        yield
    finally:
        if ranks.is_main:
            lock.__exit__(None, None, None)


def lock_path(out: str | os.PathLike) -> Path:
    """The lock of a classification writing ``out``: ``.<name>.lock`` beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def agreement_path(out: str | os.PathLike) -> Path:
    """Where the catalog-type vs prediction table of ``out`` goes: ``<out stem>.agreement.csv``."""
    out = Path(out)
    return out.with_name(out.stem + ".agreement.csv")
