"""Windows proposed by a classic STA/LTA trigger, for a model that has no ``noise`` class.

Such a model says what an event is, not whether there is one: every window gets some event
class. So the onsets come from obspy's classic STA/LTA on the vertical component
(:func:`quake.data.onsets.sta_lta`: 2-15 Hz, STA 0.5 s, LTA 10 s, on at 4, off at 1.5, the
settings of the onset survey), and each onset's window is cut as training cuts an event's,
``pre_arrival_s`` before it, judged by the same quality rules, and classified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quake.data.onsets import LTA_S, TRIGGER_OFF, TRIGGER_ON, sta_lta
from quake.data.quality import COMPONENTS, StreamArray

#: The class name that marks "no event": a model with it is triggered by its probabilities.
NOISE_CLASS = "noise"


@dataclass
class Proposal:
    """One STA/LTA trigger of a station: its samples (of the reading), the probabilities of
    the window cut at it (None: skipped, ``skip`` says why) and that window's quality flags."""

    on: int
    off: int
    probabilities: np.ndarray | None = None
    skip: str = ""
    flags: tuple[str, ...] = field(default_factory=tuple)


def needs_proposals(class_names) -> bool:
    """Whether detections of a model with these classes come from STA/LTA proposals."""
    return NOISE_CLASS not in list(class_names)


def trigger_spans(reading: StreamArray) -> list[tuple[int, int]]:
    """``[(on, off)]`` samples of the STA/LTA triggers of the reading's vertical component (the
    first component recorded where there is no Z), none inside a stretch that was not recorded
    and none whose LTA (the ``LTA_S`` before the trigger) was not all recorded: the ratio at
    the edge of a gap, where recorded data follows zeros, is the gap's, not a signal's."""
    from obspy.signal.trigger import trigger_onset

    comps = [c for c in COMPONENTS if c in reading.channels]
    if not comps:
        return []
    row = COMPONENTS.index(comps[0])
    trace = np.nan_to_num(np.asarray(reading.data[row], dtype=np.float64))
    fs = reading.sampling_rate_hz
    if trace.size <= int(LTA_S * fs) or not np.any(trace):
        return []
    ratio = sta_lta(trace, fs, LTA_S)
    spans = [(int(on), int(off)) for on, off in trigger_onset(ratio, TRIGGER_ON, TRIGGER_OFF)]
    if reading.backed is not None:
        lta = int(LTA_S * fs)
        unrecorded = np.concatenate([[0], np.cumsum(~reading.backed[row].astype(bool))])
        spans = [(on, off) for on, off in spans
                 if on >= lta and unrecorded[on + 1] == unrecorded[on - lta]]  # fmt: skip
    return spans
