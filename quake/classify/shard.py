"""Batch classification over several processes: ``torchrun --nproc_per_node N scripts/classify.py``.

Each rank classifies one contiguous slice of the catalog (``Shard.bounds``) into its own part
file beside the output (``predictions.csv.part1-of2``, resumable like the output itself); after
a barrier, rank 0 checks that the parts hold every catalog event exactly once, writes them in
catalog order to the output in one atomic replace, and removes the parts. The merged file has
the rows a one-process run writes (probabilities can differ in the last printed digit: windows
are batched with different neighbours).

The ranks are :class:`quake.runtime.Ranks` (gloo, also on GPU machines: only the barrier, rank
and a small summary pass through it); without torchrun everything runs as one process.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from quake.classify.tables import write_csv_atomic
from quake.runtime import Ranks, torchrun_ranks

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part{rank}-of{world_size}"


@dataclass(frozen=True)
class Shard:
    """This process's share of the catalog: ``rank`` of ``world_size`` contiguous slices."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        for name in ("rank", "world_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size!r}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank!r}")

    @property
    def is_single(self) -> bool:
        return self.world_size == 1

    def bounds(self, n_events: int) -> tuple[int, int]:
        """``[start, stop)`` of this rank's slice; slice sizes differ by at most one."""
        return (
            n_events * self.rank // self.world_size,
            n_events * (self.rank + 1) // self.world_size,
        )

    def select(self, events: pd.DataFrame) -> pd.DataFrame:
        start, stop = self.bounds(len(events))
        return events.iloc[start:stop].reset_index(drop=True)

    def part_path(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        suffix = PART_SUFFIX.format(rank=self.rank, world_size=self.world_size)
        return path.with_name(path.name + suffix)

    @classmethod
    def of(cls, ranks: Ranks) -> Shard:
        """This process's share under ``ranks`` (:class:`quake.runtime.Ranks`)."""
        return cls(ranks.rank, ranks.world_size)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Shard:
        """``RANK`` / ``WORLD_SIZE`` as torchrun sets them; one process when they are absent."""
        return cls.of(torchrun_ranks(environ))


# ------------------------------------------------------------------------------------ parts
def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def seed_part(
    part: Path, out: Path, event_ids: Sequence[str], columns: list[str] | None = None
) -> int:
    """For ``--resume``: copy into ``part`` the rows of ``out`` (a previous run's output, one
    process or merged) that belong to this rank's events and are not in ``part`` yet.

    Returns the number of rows copied. A table whose columns differ is left alone (resuming
    then fails with the usual message).
    """
    if not out.is_file():
        return 0
    previous = _read_table(out)
    if columns is not None and list(previous.columns) != columns:
        return 0
    if "event_id" not in previous.columns:
        return 0
    existing = _read_table(part) if part.is_file() else previous.iloc[:0]
    if list(existing.columns) != list(previous.columns):
        return 0
    mine = previous[
        previous["event_id"].isin(set(event_ids))
        & ~previous["event_id"].isin(set(existing["event_id"]))
    ]
    if mine.empty:
        return 0
    write_csv_atomic(pd.concat([existing, mine], ignore_index=True), part)
    return len(mine)


def merge_parts(
    out: str | os.PathLike[str],
    parts: Sequence[Path],
    event_ids: Sequence[str],
    *,
    one_row_per_event: bool = True,
) -> pd.DataFrame:
    """Concatenate the ranks' part files into ``out`` (atomically), in catalog order.

    ``one_row_per_event``: the predictions table, where every catalog event must appear
    exactly once over all parts (ValueError naming the events otherwise); the per-station table
    (False) may hold several or no rows per event. The parts are removed once ``out`` is
    written.
    """
    missing_parts = [str(p) for p in parts if not p.is_file()]
    if missing_parts:
        raise ValueError(f"cannot merge: part file(s) {missing_parts} missing")
    tables = [_read_table(p) for p in parts]
    columns = list(tables[0].columns)
    for path, table in zip(parts, tables, strict=True):
        if list(table.columns) != columns:
            raise ValueError(
                f"cannot merge: {path} has columns {list(table.columns)}; expected {columns}"
            )
    merged = pd.concat(tables, ignore_index=True)
    order = {event_id: i for i, event_id in enumerate(event_ids)}
    unknown = sorted(set(merged["event_id"]) - set(order))
    if unknown:
        raise ValueError(f"cannot merge: events {unknown[:5]} are not in the catalog")
    if one_row_per_event:
        counts = Counter(merged["event_id"])
        repeated = sorted(e for e, n in counts.items() if n > 1)
        absent = [e for e in event_ids if e not in counts]
        if repeated or absent:
            raise ValueError(
                f"cannot merge: expected every catalog event exactly once; repeated "
                f"{repeated[:5]}, missing {absent[:5]}"
            )
    position = merged["event_id"].map(order)
    merged = merged.iloc[position.argsort(kind="stable")].reset_index(drop=True)
    write_csv_atomic(merged, Path(out))
    for path in parts:
        path.unlink()
    logger.info("merged %d part files (%d rows) into %s", len(parts), len(merged), out)
    return merged
