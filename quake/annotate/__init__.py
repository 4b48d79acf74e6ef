"""Continuous recordings: class probabilities over days of data, detections, station-day jobs.

``annotate_stream`` / ``annotate_station`` (:mod:`quake.annotate.engine`): sliding windows of
the model's own length -> probability traces per station (SeisBench's ``annotate``
convention); :mod:`quake.annotate.spectrogram`: the windows' spectrograms cut from one STFT of
the recording; :mod:`quake.annotate.detect`: the detections table (probability triggers, or STA/LTA
proposals classified for a model without a ``noise`` class, :mod:`quake.annotate.propose`);
:mod:`quake.annotate.events`: detections of several stations associated into events, classified
by the station-to-event rule of ``quake classify``, as a table or QuakeML.
"""

from quake.annotate.detect import (
    DETECTION_COLUMNS,
    class_thresholds,
    detection_columns,
    detections,
)
from quake.annotate.engine import (
    CHANNEL_PREFIX,
    StationAnnotation,
    annotate_station,
    annotate_stream,
    channel_code,
    default_stride_s,
)
from quake.annotate.events import associate, event_columns, write_events

__all__ = [
    "CHANNEL_PREFIX",
    "DETECTION_COLUMNS",
    "StationAnnotation",
    "annotate_station",
    "associate",
    "annotate_stream",
    "channel_code",
    "class_thresholds",
    "default_stride_s",
    "detection_columns",
    "detections",
    "event_columns",
    "write_events",
]
