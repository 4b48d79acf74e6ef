"""Batch classification of event catalogs: every catalog event -> one row with probabilities.

``read_catalog`` (QuakeML/CSV -> table, event ids), ``open_source`` (per-event miniSEED folders,
SDS archive, SeisBench set, FDSN: the reading layer of :mod:`quake.data.sources`, re-exported),
``classify_events`` (the batch engine, resumable), ``combine_station_probabilities`` (stations ->
event, from :mod:`quake.probabilities`) and ``annotate_catalog`` (predictions -> QuakeML).
``scripts/classify.py`` is the command line.
"""

from quake.classify.catalog import (
    ID_RULES,
    annotate_catalog,
    read_catalog,
    read_catalog_with_events,
    write_quakeml,
)
from quake.classify.run import (
    ClassifySummary,
    classify_events,
    prediction_columns,
    read_predictions,
)
from quake.data.sources import (
    SOURCE_KINDS,
    EventFolderSource,
    FDSNSource,
    SDSSource,
    SeisBenchSource,
    WaveformSource,
    open_source,
)
from quake.probabilities import combine_station_probabilities, prob_column

__all__ = [
    "ID_RULES",
    "SOURCE_KINDS",
    "ClassifySummary",
    "EventFolderSource",
    "FDSNSource",
    "SDSSource",
    "SeisBenchSource",
    "WaveformSource",
    "annotate_catalog",
    "classify_events",
    "combine_station_probabilities",
    "open_source",
    "prediction_columns",
    "prob_column",
    "read_catalog",
    "read_catalog_with_events",
    "read_predictions",
    "write_quakeml",
]
