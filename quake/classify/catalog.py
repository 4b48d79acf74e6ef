"""Event catalogs for classification: catalog in (the data side's parser), predictions -> QuakeML.

Catalogs are read by :mod:`quake.data.catalog`, the parser the catalog + miniSEED dataset uses
for training, so an event has the same id, origin and P picks in both. What is specific to
classification lives here: a CSV catalog must have an origin time column (waveforms are found
and cut by time), and predictions are written back into the QuakeML.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence

import obspy
import pandas as pd
from obspy.core.event import Catalog, Comment, CreationInfo, ResourceIdentifier

from quake.classes import class_to_event_type, event_type_to_class
from quake.data import catalog as data_catalog
from quake.data.catalog import (
    CATALOG_COLUMNS,
    ID_RULES,
    is_reviewed,
    preferred_origin,
    quakeml_event_id,
    text_or_empty,
)
from quake.runtime import write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "CATALOG_COLUMNS",
    "CLASSIFY_REQUIRED_FIELDS",
    "ID_RULES",
    "annotate_catalog",
    "format_time",
    "prediction_comment",
    "quakeml_event_id",
    "read_catalog",
    "read_catalog_with_events",
    "write_quakeml",
]

#: What a CSV catalog must have for classification: origin times (to find and cut waveforms).
CLASSIFY_REQUIRED_FIELDS = ("origin_time",)


def read_catalog_with_events(
    path: str | os.PathLike | Catalog, id_rule: str = "auto"
) -> tuple[pd.DataFrame, Catalog]:
    """Read a QuakeML or CSV catalog -> (event table, obspy Catalog in the same order).

    :func:`quake.data.catalog.read_catalog_with_events` with :data:`CLASSIFY_REQUIRED_FIELDS`:
    the table has :data:`CATALOG_COLUMNS`, ids follow ``id_rule`` (:data:`ID_RULES`) and must be
    unique; a CSV catalog's obspy Catalog is built from the table.
    """
    return data_catalog.read_catalog_with_events(path, id_rule, require=CLASSIFY_REQUIRED_FIELDS)


def read_catalog(
    path: str | os.PathLike | Catalog, id_rule: str = "auto", *, compact: bool = False
) -> pd.DataFrame:
    """The event table of :func:`read_catalog_with_events`, without building obspy events;
    ``compact`` for catalogs of millions of events (:func:`quake.data.catalog.compact_table`)."""
    return data_catalog.read_catalog(
        path, id_rule, require=CLASSIFY_REQUIRED_FIELDS, compact=compact
    )


def prediction_comment(
    row: dict, class_names: Sequence[str], model_id: str, prob_columns: Sequence[str]
) -> str:
    """The text of the QuakeML comment for one prediction row."""
    if not text_or_empty(row.get("predicted_class")):
        reasons = text_or_empty(row.get("skip_reasons")) or "no waveform"
        return f"quake model {model_id}: not classified (no usable waveform: {reasons})"
    probs = ", ".join(
        f"{name}={float(row[col]):.4f}" for name, col in zip(class_names, prob_columns, strict=True)
    )
    return (
        f"quake model {model_id}: predicted {row['predicted_class']}; probabilities {probs}; "
        f"stations used {int(row['n_stations_used'])}, skipped {int(row['n_stations_skipped'])}"
    )


KNOWN_PROBABILITY = 0.95
"""A type the model sets is ``known`` from this probability of its class on, ``suspected`` below."""


def annotate_catalog(
    catalog: Catalog,
    event_ids: Sequence[str],
    predictions: pd.DataFrame,
    class_names: Sequence[str],
    prob_columns: Sequence[str],
    model_id: str,
    *,
    overwrite_reviewed: bool = False,
    overwrite_types: bool = False,
) -> dict[str, int]:
    """Write predictions into ``catalog`` in place; returns counts (set, replaced,
    kept_typed, kept_reviewed, for_review, unclassified, missing).

    Every event gets a comment with the probabilities and the model id. The type is the
    analyst's: an event that already has an ``event_type`` keeps it unless ``overwrite_types``,
    and an analyst-reviewed event (preferred origin manual, or reviewed/final) keeps it unless
    ``overwrite_reviewed``. An event marked for review (the ``review`` column: its predicted
    class is below ``--min-probability``) gets no type from the model. Otherwise it gets
    ``event_type`` = the predicted class (:func:`quake.classes.class_to_event_type`) and
    ``event_type_certainty`` = ``known`` when that class has a probability of at least
    :data:`KNOWN_PROBABILITY`, ``suspected`` below; a type it replaces is named in the comment
    (``previous type: explosion``), so it is never lost. An event without a usable waveform keeps
    its type and gets a comment saying why.
    """
    if len(event_ids) != len(catalog):
        raise ValueError(f"{len(event_ids)} event ids for a catalog of {len(catalog)} events")
    by_id = predictions.set_index("event_id", drop=False)
    counts = {"set": 0, "replaced": 0, "kept_typed": 0, "kept_reviewed": 0, "for_review": 0,
              "unclassified": 0, "missing": 0}  # fmt: skip
    for event, event_id in zip(catalog, event_ids, strict=True):
        if event_id not in by_id.index:
            counts["missing"] += 1
            logger.warning("event %s has no prediction row; QuakeML left unchanged", event_id)
            continue
        row = by_id.loc[event_id].to_dict()
        text = prediction_comment(row, class_names, model_id, prob_columns)
        predicted = text_or_empty(row.get("predicted_class"))
        previous = text_or_empty(event.event_type)
        origin = preferred_origin(event)
        reviewed = origin is not None and is_reviewed(
            origin.evaluation_mode, origin.evaluation_status
        )
        if not predicted:
            counts["unclassified"] += 1
        elif reviewed and not overwrite_reviewed:
            counts["kept_reviewed"] += 1
        elif text_or_empty(row.get("review")):
            text += f"; for review: {row['review']}, type not set"
            counts["for_review"] += 1
        elif previous and not overwrite_types:
            counts["kept_typed"] += 1
        else:
            new_type = class_to_event_type(predicted)
            if previous and previous != new_type:
                text += f"; previous type: {previous}"
                counts["replaced"] += 1
            event.event_type = new_type
            top = max(float(row[col]) for col in prob_columns)
            event.event_type_certainty = "known" if top >= KNOWN_PROBABILITY else "suspected"
            counts["set"] += 1
        event.comments.append(
            Comment(
                text=text,
                resource_id=ResourceIdentifier(f"smi:local/quake/{model_id}/{event_id}"),
                creation_info=CreationInfo(agency_id="quake", author=f"quake model {model_id}"),
            )
        )
    return counts


def agreement_table(
    events: pd.DataFrame,
    predictions: pd.DataFrame | str | os.PathLike,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """Catalog type (rows) against predicted class (columns), counted over the events that have
    both: how the model does on events an analyst already labelled. Catalog types are compared as
    class names (:func:`quake.classes.event_type_to_class`); empty when no event has a type.
    ``predictions``: the table, or the path of ``predictions.csv`` (read only when an event has a
    type, and only its two columns)."""
    types = pd.Series([text_or_empty(t) for t in events["event_type"]], dtype=object)
    typed = types != ""
    if not typed.any():
        return pd.DataFrame()
    truth = pd.DataFrame(
        {"event_id": events["event_id"][typed].to_numpy(), "truth": types[typed].to_numpy()}
    )
    if not isinstance(predictions, pd.DataFrame):
        predictions = pd.read_csv(predictions, usecols=["event_id", "predicted_class"], dtype=str,
                                  keep_default_na=False)  # fmt: skip
    predicted = pd.DataFrame(
        {
            "event_id": predictions["event_id"].to_numpy(),
            "predicted": [text_or_empty(p) for p in predictions["predicted_class"]],
        }
    )
    pairs = truth.merge(predicted[predicted["predicted"] != ""], on="event_id")
    if pairs.empty:
        return pd.DataFrame()
    counts = Counter(zip(pairs["truth"].map(event_type_to_class), pairs["predicted"], strict=True))
    rows = sorted({t for t, _ in counts} | set(class_names))
    table = pd.DataFrame(0, index=pd.Index(rows, name="catalog type"), columns=list(class_names))
    for (t, predicted_class), n in counts.items():
        table.loc[t, predicted_class] += n
    return table.loc[(table.sum(axis=1) > 0)]


def write_quakeml(catalog: Catalog, path: str | os.PathLike) -> None:
    """Write QuakeML atomically (temporary file in the same folder, then ``os.replace``)."""
    write_atomic(path, lambda tmp: catalog.write(str(tmp), format="QUAKEML"))


def format_time(value: obspy.UTCDateTime | None) -> str:
    """ISO 8601 with a Z, or "" when unknown (the CSV's origin_time column)."""
    if value is None:
        return ""
    return value.isoformat() + "Z"
