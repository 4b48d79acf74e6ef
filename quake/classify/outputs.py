"""Where a catalog classification writes: rows appended in catalog order and flushed
atomically, read back for ``--resume``, and the one-writer lock beside the output.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from quake.classify.tables import write_csv_atomic
from quake.runtime import OutputLock, write_atomic


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


#: Rows held as dicts before they are turned into CSV text (a few hundred bytes a row).
FORMAT_EVERY = 1000
#: Rows of an output read at a time when new rows must be merged in between (a resumed run).
MERGE_CHUNK_ROWS = 100_000


class RowFile:
    """One CSV output (the predictions or the per-station table), kept in catalog order.

    Memory holds only the rows added since the last flush, as CSV text; the file holds the
    rest. A flush writes a temporary file (the current output + the new rows, or both merged in
    catalog order when a resumed run's rows lie between them) and renames it over the output,
    so the output is always a complete CSV in catalog order.
    """

    def __init__(self, path: Path, columns: list[str]):
        self.path = path
        self.columns = columns
        self.header = pd.DataFrame(columns=columns).to_csv(index=False)
        self.written = False  # by this run: else the file is absent or another run's
        self.last = -1  # catalog position of the file's last row
        self.rows: list[dict] = []
        self.positions: list[int] = []
        self.blocks: list[tuple[np.ndarray, str]] = []  # (catalog positions, CSV text)

    def add(self, rows: list[dict], position: int) -> None:
        self.rows.extend(rows)
        self.positions.extend([position] * len(rows))
        if len(self.rows) >= FORMAT_EVERY:
            self._format()

    def _format(self) -> None:
        if self.rows:
            text = pd.DataFrame(self.rows, columns=self.columns).to_csv(index=False, header=False)
            self.blocks.append((np.array(self.positions, dtype=np.int64), text))
        self.rows, self.positions = [], []

    def replace(self, table: pd.DataFrame, positions: np.ndarray) -> None:
        """Write ``table`` (rows at sorted catalog ``positions``) as the whole output."""
        write_csv_atomic(table, self.path)
        self.written, self.last = True, int(positions[-1]) if len(positions) else -1

    def flush(self, event_index: Callable[[], pd.Index]) -> None:
        """Write the rows added so far; ``event_index()`` gives catalog positions to merge."""
        self._format()
        positions = np.concatenate([p for p, _ in self.blocks] or [np.zeros(0, np.int64)])
        texts = [text for _, text in self.blocks]
        if not len(positions) or positions[0] > self.last:
            write_atomic(self.path, lambda tmp: self._append(tmp, texts))
        else:
            index = event_index()
            write_atomic(self.path, lambda tmp: self._merge(tmp, positions, texts, index))
        self.written, self.blocks = True, []
        self.last = max(self.last, int(positions[-1]) if len(positions) else -1)

    def _append(self, tmp: Path, texts: list[str]) -> None:
        if self.written:
            shutil.copyfile(self.path, tmp)
        with open(tmp, "a" if self.written else "w", encoding="utf-8", newline="") as f:
            if not self.written:
                f.write(self.header)
            f.writelines(texts)

    def _merge(self, tmp: Path, positions: np.ndarray, texts: list[str], index: pd.Index) -> None:
        new = pd.read_csv(io.StringIO("".join(texts)), names=self.columns, header=None,
                          dtype=str, keep_default_na=False)  # fmt: skip
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(self.header)
            j = 0
            for chunk in pd.read_csv(self.path, dtype=str, keep_default_na=False,
                                     chunksize=MERGE_CHUNK_ROWS):  # fmt: skip
                old = index.get_indexer(chunk["event_id"])
                k = int(np.searchsorted(positions, old[-1], side="right"))
                both = pd.concat([chunk, new.iloc[j:k]], ignore_index=True)
                order = np.argsort(np.concatenate([old, positions[j:k]]), kind="stable")
                both.iloc[order].to_csv(f, index=False, header=False)
                j = k
            new.iloc[j:].to_csv(f, index=False, header=False)


class Outputs:
    """The predictions (and per-station rows) of a run, flushed atomically (stations first, so
    they never lag the predictions), without keeping the rows written so far in memory."""

    def __init__(self, out, stations_out, columns, station_columns, event_ids: pd.Series):
        self.predictions = RowFile(Path(out), columns)
        self.stations = RowFile(Path(stations_out), station_columns) if stations_out else None
        self.event_ids = event_ids
        self.has_row = np.zeros(len(event_ids), dtype=bool)  # by catalog position
        self.n_for_review = 0
        self._index: pd.Index | None = None

    @property
    def event_index(self) -> pd.Index:
        """Event id -> catalog position (built only when rows of another run are merged)."""
        if self._index is None:
            self._index = pd.Index(self.event_ids)
        return self._index

    def load(self, model_id: str, review: Callable[[dict], str]) -> np.ndarray:
        """Keep the rows of a previous run (``--resume``): the output is rewritten in catalog
        order with this run's review column; returns which catalog events have a row."""
        out = self.predictions.path
        if not out.is_file():
            return self.has_row.copy()
        table = _read_existing(out, self.predictions.columns, model_id)
        positions = self.event_index.get_indexer(table["event_id"])
        table, positions = _in_catalog_order(table, positions)
        columns = list(table.columns)
        table["review"] = [review(dict(zip(columns, r, strict=True))) for r in table.itertuples(
            index=False, name=None)]  # fmt: skip
        if self.stations is not None and self.stations.path.is_file():
            stations = pd.read_csv(self.stations.path, dtype=str, keep_default_na=False)
            if list(stations.columns) == self.stations.columns:
                stations = stations[stations["event_id"].isin(table["event_id"])]
                at = self.event_index.get_indexer(stations["event_id"])
                self.stations.replace(*_in_catalog_order(stations, at))
        self.predictions.replace(table, positions)
        self.has_row[positions] = True
        self.n_for_review = int((table["review"] != "").sum())
        return self.has_row.copy()

    def add(self, row: dict, station_rows: list[dict], position: int) -> None:
        """One event's rows; ``position`` is its place in the catalog."""
        self.predictions.add([row], position)
        if self.stations is not None:
            self.stations.add(station_rows, position)
        self.has_row[position] = True
        self.n_for_review += bool(row["review"])

    def flush(self) -> None:
        if self.stations is not None:
            self.stations.flush(lambda: self.event_index)
        self.predictions.flush(lambda: self.event_index)


def _in_catalog_order(table: pd.DataFrame, positions: np.ndarray):
    """The rows of ``table`` that are catalog events (``positions`` >= 0), in catalog order (the
    rows of one event in their order)."""
    keep = positions >= 0
    order = np.argsort(positions[keep], kind="stable")
    return table[keep].iloc[order].reset_index(drop=True), positions[keep][order]


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
