"""Quality control: what is wrong with a window, and what the policy does about it.

Every window, in training and in classification, carries a :class:`QualityRecord` made by the
reading layer: coverage, gaps and overlaps, components present and why one is missing, dead
channels, clipping, spikes, non-finite samples and resampling. A :class:`QualityPolicy` (saved
with the model inside :class:`~quake.data.PreprocessConfig`) decides per flag: use the window as
it is, repair it, or skip it with the reason. What was found and done is written where a person
looks (``QualityRecord.describe()``: the per-station table of classification, the training
report), never applied silently.

Detection works on each channel at its own sampling rate, before resampling, because the
anti-alias filter would smear an isolated glitch over dozens of samples:

- **spike**: a run of at most :data:`SPIKE_MAX_RUN` samples whose deviation from the channel's
  median is more than :data:`SPIKE_RATIO` times the largest deviation among the
  :data:`SPIKE_NEIGHBOURS` samples on each side (the run's closest neighbours excluded), and more
  than :data:`SPIKE_NOISE_RATIO` times the channel's noise scale (robust, and never below its
  resolution: one count of an integer record). Seismic signals are band-limited by the
  digitizer's own anti-alias filter, so one sample never towers over all of its neighbours; a
  telemetry glitch or a bit flip does.
- **clipping**: a run of samples sitting exactly at the channel's maximum or minimum, inside the
  record (a constant stretch at its start or end is a dropout, not a clip), that is either at a
  digitizer limit (+-2^11, 2^15, 2^23, 2^31: 12- to 32-bit converters) or at least
  :data:`CLIP_MIN_RUN` samples long and entered or left by a step steeper than
  :data:`CLIP_STEP_RATIO` times the noise scale. A natural peak of a band-limited signal is
  rounded (small steps around it); a saturated one is cut flat.
- **dropout**: a run of identical samples at least :data:`DROPOUT_MIN_S` (and
  :data:`DROPOUT_MIN_SAMPLES`) long that is not clipping, on a channel that is not flat
  throughout: a gap filled by whoever wrote the file (zeros, or the last value held), often
  before a recording started. A live sensor never repeats a sample for half a second, unless
  it is recorded at its resolution (a quiet station of one or two counts, whose samples repeat
  more often than not, :data:`DROPOUT_QUANTIZED`: none of its runs is a dropout); an array
  format cannot say which samples were recorded, so this is how quake finds out. Dropouts do not
  count as recorded (coverage), and a window without an anchor starts after a leading one
  (:func:`~quake.data.transforms.window_from_array`): a flat stretch followed by noise looks
  like an onset to a classifier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from obspy import UTCDateTime


class SkipTrace(ValueError):
    """A trace or item that cannot be used, with a short reason category and a detail.

    ``reason`` is the category used for counts (``"nan"``, ``"too short"``, ``"unknown channel"``,
    ...); ``str(exc)`` is ``"<reason>: <detail>"``.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def check_numeric(data: np.ndarray, what: str) -> None:
    """SkipTrace ``bad dtype`` naming ``what`` unless ``data`` holds real numbers (a stored
    string or complex array must cost its own trace, never the batch)."""
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise SkipTrace(
            "bad dtype", f"{what}: stored with dtype {data.dtype}; expected real numbers"
        )


# --- detection constants (documented in the module docstring) ------------------------------------
SPIKE_MAX_RUN = 3
SPIKE_NEIGHBOURS = 20
SPIKE_RATIO = 8.0
SPIKE_NOISE_RATIO = 20.0
CLIP_MIN_RUN = 3
CLIP_STEP_RATIO = 10.0
CLIP_STEP_SPAN = 3  # samples on each side of a run where the step is looked for
DIGITIZER_BITS = (12, 16, 24, 32)
MEDIAN_SAMPLES = 256  # samples a channel's robust statistics are estimated from
SPAN_MARGIN = 2 * SPIKE_NEIGHBOURS  # samples inspected beyond each end of a span
DROPOUT_MIN_S = 0.5
DROPOUT_MIN_SAMPLES = 10
DROPOUT_QUANTIZED = 0.5  # share of repeated samples outside the runs above which none is one

#: Component order of every array: Z, N, E (rows 0, 1, 2), whatever order a file stores them in.
COMPONENTS = "ZNE"

#: Flag names, as counted in reports (``QualityRecord.flags()``).
FLAGS = (
    "spike",
    "clipping",
    "gap",
    "overlap",
    "partial window",
    "missing component",
    "dead channel",
    "dropout",
    "non-finite",
    "resampled",
)

SPIKE_ACTIONS = ("use", "repair", "skip")
CLIPPING_ACTIONS = ("use", "skip")
NONFINITE_ACTIONS = ("repair", "skip")
MISSING_ACTIONS = ("use", "skip")


@dataclass
class QualityPolicy:
    """What happens to a window per quality flag. Saved with the model (in PreprocessConfig).

    - ``spikes``: ``repair`` (default: the spike's samples are replaced by a straight line between
      its neighbours, before resampling and z-scoring), ``use`` or ``skip``.
    - ``clipping``: ``skip`` (default: the amplitudes of a saturated record are not the ground's)
      or ``use``.
    - ``non_finite``: ``skip`` (default; DROP_NAN) or ``repair`` (straight line over NaN/inf runs).
    - ``min_coverage``: the fraction of the window that must be backed by recorded samples (gaps
      and the part outside the recording do not count); below it the window is skipped
      (``too short``, or ``gap`` / ``dropout`` when a gap or a constant stretch is the larger
      loss), from it up the gap or padding is filled and named.
    - ``missing_components``: ``use`` (default: filled by ``missing_component`` of the config and
      named) or ``skip``. A component whose own coverage is below ``min_coverage`` (a truncated
      file, a late start) counts as missing (``truncated``), so it is filled by the same policy
      rather than used half empty.
    """

    spikes: str = "repair"
    clipping: str = "skip"
    non_finite: str = "skip"
    min_coverage: float = 0.8
    missing_components: str = "use"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("spikes", SPIKE_ACTIONS),
            ("clipping", CLIPPING_ACTIONS),
            ("non_finite", NONFINITE_ACTIONS),
            ("missing_components", MISSING_ACTIONS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"quality.{name} must be one of {list(allowed)}, got {value!r}")
        value = self.min_coverage
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
            raise ValueError(f"quality.min_coverage must be a number in (0, 1], got {value!r}")
        self.min_coverage = float(value)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | QualityPolicy | None) -> QualityPolicy:
        if d is None:
            return cls()
        if isinstance(d, QualityPolicy):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"quality must be a mapping of policy fields, got {d!r}")
        return from_known_keys(cls, d, "quality policy")


def from_known_keys(cls: Any, d: dict[str, Any], what: str) -> Any:
    """``cls(**d)`` for a dataclass, a ValueError naming any key it does not have."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; expected some of {sorted(known)}")
    return cls(**d)


@dataclass
class ChannelFindings:
    """What :func:`inspect_channel` found on one channel (sample indices at its own rate)."""

    spikes: list[tuple[int, int]] = field(default_factory=list)  # [start, stop) runs
    clipped: list[tuple[int, int]] = field(default_factory=list)  # [start, stop) runs
    non_finite: int = 0


@dataclass
class QualityRecord:
    """What is known about one window. Times are seconds from the window's first sample
    (from the array's first sample until the window is cut)."""

    coverage: float = 1.0  # fraction of the window backed by recorded samples
    padded_s: float = 0.0  # window length outside the recording (zero-filled)
    gaps: list[tuple[str, float, float]] = field(default_factory=list)  # (comp, start_s, length_s)
    overlaps: list[tuple[str, float, float, bool]] = field(default_factory=list)  # + conflicting
    components: str = "ZNE"  # components backed by data
    missing: dict[str, str] = field(default_factory=dict)  # component -> reason
    missing_fill: str = ""  # how missing components were filled
    dead: str = ""  # flat channels
    spikes: list[tuple[str, float]] = field(default_factory=list)  # (comp, time_s)
    clipped: list[tuple[str, float, float]] = field(default_factory=list)  # (comp, start_s, len_s)
    dropouts: list[tuple[str, float, float]] = field(default_factory=list)  # (comp, start_s, len_s)
    non_finite: int = 0
    resampled_from_hz: float | None = None
    ignored_channels: list[str] = field(default_factory=list)  # channel letter not Z/N/E/1/2
    # segments of a channel at another rate than the one kept: (comp, count, rate_hz)
    dropped_segments: list[tuple[str, int, float]] = field(default_factory=list)
    actions: dict[str, str] = field(default_factory=dict)  # flag -> what was done

    # --- what went wrong ----------------------------------------------------------------------
    def flags(self) -> list[str]:
        """The :data:`FLAGS` raised for this window, in that order."""
        raised = {
            "spike": bool(self.spikes),
            "clipping": bool(self.clipped),
            "gap": bool(self.gaps),
            "overlap": bool(self.overlaps),
            "partial window": self.padded_s > 0,
            "missing component": bool(self.missing),
            "dead channel": bool(self.dead),
            "dropout": bool(self.dropouts),
            "non-finite": self.non_finite > 0,
            "resampled": self.resampled_from_hz is not None,
        }
        return [f for f in FLAGS if raised[f]]

    @property
    def padded(self) -> bool:
        return self.padded_s > 0

    def describe(self) -> str:
        """One readable line: ``spike repaired at 12.3 s (Z); gap 8.0 s interpolated (E)``.
        Empty for a clean window at the model's own rate."""
        parts: list[str] = []
        if self.spikes:
            times = ", ".join(f"{t:.1f} s ({c})" for c, t in self.spikes[:3])
            more = f" and {len(self.spikes) - 3} more" if len(self.spikes) > 3 else ""
            word = "spike" if len(self.spikes) == 1 else f"{len(self.spikes)} spikes"
            parts.append(f"{word} {self.actions.get('spike', 'found')} at {times}{more}")
        if self.clipped:
            c, t, n = self.clipped[0]
            more = f" and {len(self.clipped) - 1} more" if len(self.clipped) > 1 else ""
            parts.append(f"clipped at {t:.1f} s for {n:.2f} s ({c}){more}")
        if self.non_finite:
            parts.append(
                f"{self.non_finite} non-finite samples {self.actions.get('non-finite', '')}".rstrip()
            )
        for c, t, n in self.gaps[:3]:
            parts.append(f"gap {n:.1f} s at {t:.1f} s {self.actions.get('gap', 'filled')} ({c})")
        if len(self.gaps) > 3:
            parts.append(f"{len(self.gaps) - 3} more gaps")
        if self.overlaps:
            conflicting = sum(o[3] for o in self.overlaps)
            longest = max(o[2] for o in self.overlaps)
            text = f"{len(self.overlaps)} overlap(s), longest {longest:.2f} s"
            parts.append(
                text
                + (f", {conflicting} with conflicting samples (first kept)" if conflicting else "")
            )
        parts.extend(_describe_dropouts(self.dropouts))
        if self.padded_s > 0:
            parts.append(f"window {self.coverage:.0%} covered, {self.padded_s:.1f} s zero-padded")
        elif self.coverage < 1.0:
            parts.append(f"window {self.coverage:.0%} covered")
        if self.missing:
            named = ", ".join(f"{c} {r}" for c, r in sorted(self.missing.items(), key=_zne))
            parts.append(
                f"missing {named}" + (f", {self.missing_fill}" if self.missing_fill else "")
            )
        if self.dead:
            parts.append(f"dead channel {self.dead}")
        if self.resampled_from_hz is not None:
            parts.append(f"resampled from {self.resampled_from_hz:g} Hz")
        if self.ignored_channels:
            parts.append(f"ignored channel {', '.join(self.ignored_channels)} (unknown component)")
        for c, count, rate in self.dropped_segments:
            word = "segment" if count == 1 else "segments"
            parts.append(f"dropped {count} {word} at {rate:g} Hz ({c})")
        return "; ".join(parts)

    def has_events(self) -> bool:
        """Whether the record holds anything placed in time (gaps, overlaps, spikes, clips,
        dropouts)."""
        return bool(self.gaps or self.overlaps or self.spikes or self.clipped or self.dropouts)

    def shifted(self, offset_s: float, length_s: float) -> QualityRecord:
        """This record for a window starting ``offset_s`` into the array and ``length_s`` long:
        times moved to the window's clock, events outside the window dropped."""

        def inside(t: float, n: float = 0.0) -> bool:
            return t + n >= offset_s and t < offset_s + length_s

        out = self.copy()
        out.gaps = [(c, t - offset_s, n) for c, t, n in self.gaps if inside(t, n)]
        out.overlaps = [(c, t - offset_s, n, k) for c, t, n, k in self.overlaps if inside(t, n)]
        out.spikes = [(c, t - offset_s) for c, t in self.spikes if inside(t)]
        out.clipped = [(c, t - offset_s, n) for c, t, n in self.clipped if inside(t, n)]
        out.dropouts = [(c, t - offset_s, n) for c, t, n in self.dropouts if inside(t, n)]
        return out

    def copy(self) -> QualityRecord:
        """A copy whose lists and dicts are its own (a window's record may be edited)."""
        return dataclasses.replace(
            self,
            gaps=list(self.gaps),
            overlaps=list(self.overlaps),
            missing=dict(self.missing),
            spikes=list(self.spikes),
            clipped=list(self.clipped),
            dropouts=list(self.dropouts),
            ignored_channels=list(self.ignored_channels),
            dropped_segments=list(self.dropped_segments),
            actions=dict(self.actions),
        )


def _describe_dropouts(dropouts: list[tuple[str, float, float]]) -> list[str]:
    """``constant 1.2 s at 6.0 s (Z, N, E)`` per stretch (its part in the window), its components
    together; ``window starts after 3.3 s of constant samples (Z, N, E)`` for a leading stretch
    the window was moved past."""
    stretches: dict[tuple[float, float], list[str]] = {}
    for c, t, n in dropouts:
        stretches.setdefault((round(t, 1), round(t + n, 1)), []).append(c)
    parts = []
    for (t, end), cs in list(stretches.items())[:3]:
        named = ", ".join(sorted(set(cs), key=COMPONENTS.find))
        if end <= 0.0:
            parts.append(f"window starts after {end - t:.1f} s of constant samples ({named})")
        else:
            parts.append(f"constant {end - max(t, 0.0):.1f} s at {max(t, 0.0):.1f} s ({named})")
    if len(stretches) > 3:
        parts.append(f"{len(stretches) - 3} more constant stretches")
    return parts


def fill_description(missing_component: str, z_present: bool = True) -> str:
    """How a missing component is filled under the ``missing_component`` policy (for reports)."""
    if missing_component == "copy_z" and z_present:
        return "filled with a copy of Z"
    return "filled with zeros"


def _zne(item: tuple[str, Any]) -> int:
    return COMPONENTS.index(item[0]) if item[0] in COMPONENTS else len(COMPONENTS)


# --- detection ------------------------------------------------------------------------------------
def _median(x: np.ndarray) -> float:
    """Median of at most :data:`MEDIAN_SAMPLES` evenly spaced samples: robust statistics of a
    channel need no more, and a full median per channel would cost more than the spectrogram."""
    sample = x[:: max(1, x.size // MEDIAN_SAMPLES)]
    k = sample.size // 2
    return float(np.partition(sample, k)[k]) if sample.size else 0.0


def noise_scale(x: np.ndarray) -> float:
    """Noise scale of a channel: 1.4826 x the median absolute first difference (the MAD of a
    differenced record, whose median step is ~0; insensitive to a few huge samples and to a slow
    drift); a channel whose typical step is 0 (a quiet integer record) gets its resolution, its
    smallest non-zero step, so that a one-count wiggle is noise."""
    if x.size < 3:
        return 0.0
    d = np.abs(np.diff(x))
    robust = 1.4826 * _median(d)
    if robust > 0:
        return robust
    steps = d[d > 0]
    return float(steps.min()) if steps.size else 0.0


def inspect_channel(x: np.ndarray, span: tuple[int, int] | None = None) -> ChannelFindings:
    """Spikes, clipping and non-finite samples of one channel (see the module docstring).

    ``span``: ``[start, stop)`` samples that matter (a window and its neighbourhood): spikes
    and clipping are looked for there only; non-finite samples anywhere count (DROP_NAN).
    """
    x = np.asarray(x, dtype=np.float64)
    findings = ChannelFindings()
    if not np.isfinite(x.sum()):
        finite = np.isfinite(x)
        findings.non_finite = int(x.size - np.count_nonzero(finite))
        x = np.where(finite, x, 0.0)
    if span is not None:
        lo = max(span[0] - SPAN_MARGIN, 0)
        inner = inspect_channel(x[lo : max(span[1] + SPAN_MARGIN, lo)])
        findings.spikes = [(a + lo, b + lo) for a, b in inner.spikes]
        findings.clipped = [(a + lo, b + lo) for a, b in inner.clipped]
        return findings
    if x.size < 2 * SPIKE_NEIGHBOURS:
        return findings
    scale = noise_scale(x)
    if scale == 0.0:  # a constant channel: nothing towers, nothing is cut
        return findings
    y = np.abs(x - _median(x))
    candidates = np.flatnonzero(y > SPIKE_NOISE_RATIO * scale)
    if candidates.size:
        findings.spikes = _spike_runs(y, candidates)
    # a repaired spike at a digitizer limit is a spike, not clipping
    findings.clipped = _clipped_runs(
        repair_runs(x, findings.spikes) if findings.spikes else x, scale
    )
    return findings


def _spike_runs(y: np.ndarray, candidates: np.ndarray) -> list[tuple[int, int]]:
    """Runs of at most SPIKE_MAX_RUN samples among ``candidates`` (samples above the noise
    floor) that tower over their neighbours, the run's closest SPIKE_MAX_RUN excluded."""
    gap = SPIKE_MAX_RUN
    n = y.size
    # a spike towers over the nearest samples outside its run: a cheap first cut
    nearest = np.maximum(
        y[np.maximum(candidates - gap - 1, 0)], y[np.minimum(candidates + gap + 1, n - 1)]
    )
    candidates = candidates[y[candidates] > SPIKE_RATIO * nearest]
    if not candidates.size:
        return []
    offsets = np.r_[np.arange(-SPIKE_NEIGHBOURS, -gap), np.arange(gap + 1, SPIKE_NEIGHBOURS + 1)]
    around = np.clip(candidates[:, None] + offsets[None, :], 0, n - 1)
    neighbours = y[around].max(axis=1)
    towering = candidates[y[candidates] > SPIKE_RATIO * neighbours]
    mask = np.zeros(y.size, dtype=bool)
    mask[towering] = True
    return [(a, b) for a, b in _runs(mask) if b - a <= SPIKE_MAX_RUN]


def _at_digitizer_limit(value: float) -> bool:
    magnitude = abs(value)
    return any(2.0 ** (bits - 1) - 1 <= magnitude <= 2.0 ** (bits - 1) for bits in DIGITIZER_BITS)


def _clipped_runs(x: np.ndarray, scale: float) -> list[tuple[int, int]]:
    hi, lo = float(x.max()), float(x.min())
    if hi == lo:
        return []
    n = x.size
    runs: list[tuple[int, int]] = []
    for extreme in (hi, lo):
        at_limit = _at_digitizer_limit(extreme)
        at_extreme = x == extreme
        if not at_limit and np.count_nonzero(at_extreme) < CLIP_MIN_RUN:
            continue  # the usual case: a natural peak, one sample
        for start, stop in _runs(at_extreme):
            if start == 0 or stop == n:  # a constant stretch at an end: a dropout
                continue
            if at_limit:
                runs.append((start, stop))
                continue
            if stop - start < CLIP_MIN_RUN:
                continue
            around = np.r_[
                x[max(start - CLIP_STEP_SPAN, 0) : start + 1], x[stop - 1 : stop + CLIP_STEP_SPAN]
            ]
            if np.abs(np.diff(around)).max() > CLIP_STEP_RATIO * scale:
                runs.append((start, stop))
    return sorted(runs)


def dropout_runs(
    x: np.ndarray, rate_hz: float, clipped: Sequence[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of identical samples long enough to be a dropout (module
    docstring), those inside a ``clipped`` run excepted; none on a channel flat throughout."""
    x = np.asarray(x)
    min_run = max(DROPOUT_MIN_SAMPLES, int(np.ceil(DROPOUT_MIN_S * rate_hz)))
    if x.size < min_run:
        return []
    repeats = x[1:] == x[:-1]  # repeats[i]: sample i + 1 equals sample i
    n_repeats = int(np.count_nonzero(repeats))
    if n_repeats < min_run - 1:
        return []  # the usual case, decided without looking for runs
    if n_repeats == repeats.size:
        return []  # a dead channel: reported as such, not as a dropout
    edges = np.flatnonzero(np.diff(repeats.astype(np.int8), prepend=0, append=0))
    starts, stops = edges[::2], edges[1::2]  # runs [start, stop) of repeats
    long = stops - starts >= min_run - 1  # a run of k repeats is k + 1 identical samples
    in_runs = int((stops - starts)[long].sum())
    live_pairs = repeats.size - in_runs
    if live_pairs and n_repeats - in_runs > DROPOUT_QUANTIZED * live_pairs:
        return []  # recorded at its resolution (a quiet integer record): runs are its noise
    return [
        (int(a), int(b) + 1)
        for a, b in zip(starts[long], stops[long], strict=True)
        if not any(c0 <= a and b + 1 <= c1 for c0, c1 in clipped)
    ]


def repair_runs(x: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
    """``x`` with each ``[start, stop)`` run replaced by a straight line between the samples
    around it (the nearest sample at an edge)."""
    x = np.array(x, dtype=np.float64, copy=True)
    n = x.size
    for start, stop in runs:
        before = x[start - 1] if start > 0 else None
        after = x[stop] if stop < n else None
        if before is None and after is None:
            x[start:stop] = 0.0
        elif before is None or after is None:
            x[start:stop] = before if after is None else after
        else:
            x[start:stop] = np.linspace(before, after, stop - start + 2)[1:-1]
    return x


def non_finite_runs(x: np.ndarray) -> list[tuple[int, int]]:
    return _runs(~np.isfinite(x))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True."""
    if not mask.any():
        return []
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def check_channel(
    x: np.ndarray,
    component: str,
    rate_hz: float,
    policy: QualityPolicy,
    record: QualityRecord,
    *,
    t0_s: float = 0.0,
    span_s: tuple[float, float] | None = None,
) -> np.ndarray:
    """Inspect one channel at its own rate, note the findings in ``record`` (times from
    ``t0_s``, seconds of the channel's first sample on the array's clock) and return the channel
    repaired as the policy says. ``span_s``: the part that matters, on the array's clock (the
    window), where spikes and clipping are looked for. Skips are decided later, on the window
    (:func:`apply_policy`), so that a fault outside the window never costs the window."""
    span = None
    if span_s is not None:
        span = (int((span_s[0] - t0_s) * rate_hz), int(np.ceil((span_s[1] - t0_s) * rate_hz)))
    findings = inspect_channel(x, span)
    if findings.non_finite:
        record.non_finite += findings.non_finite
        if policy.non_finite == "repair":
            x = repair_runs(x, non_finite_runs(np.asarray(x, dtype=np.float64)))
            record.actions["non-finite"] = "interpolated"
    for start, _ in findings.spikes:
        record.spikes.append((component, t0_s + start / rate_hz))
    if findings.spikes:
        record.actions["spike"] = {"repair": "repaired", "use": "kept", "skip": "found"}[
            policy.spikes
        ]
        if policy.spikes == "repair":
            x = repair_runs(x, findings.spikes)
    for start, stop in findings.clipped:
        record.clipped.append((component, t0_s + start / rate_hz, (stop - start) / rate_hz))
    for start, stop in dropout_runs(x, rate_hz, findings.clipped):
        record.dropouts.append((component, t0_s + start / rate_hz, (stop - start) / rate_hz))
    return x


def apply_policy(record: QualityRecord, policy: QualityPolicy) -> None:
    """Raise :class:`~quake.data.transforms.SkipTrace` when the window's record calls for a skip
    under ``policy``; the reason names the flag and the detail says what was found."""
    if record.non_finite and policy.non_finite == "skip":
        raise SkipTrace("nan", f"{record.non_finite} NaN/inf samples")
    if record.spikes and policy.spikes == "skip":
        raise SkipTrace("spike", record.describe())
    if record.clipped and policy.clipping == "skip":
        c, t, n = record.clipped[0]
        raise SkipTrace(
            "clipping",
            f"{c} at its extreme value from {t:.1f} s for {n:.2f} s ({len(record.clipped)} run(s))",
        )
    if record.coverage < policy.min_coverage:
        longest_gap = max((length for _, _, length in record.gaps), default=0.0)
        longest_dropout = max((length for _, _, length in record.dropouts), default=0.0)
        if longest_dropout > max(longest_gap, record.padded_s):
            reason, longest = "dropout", f"longest constant stretch {longest_dropout:.1f} s"
        else:
            reason = "gap" if longest_gap > record.padded_s else "too short"
            longest = f"longest gap {longest_gap:.1f} s"
        raise SkipTrace(
            reason,
            f"{record.coverage:.0%} of the window backed by data ({record.padded_s:.1f} s outside "
            f"the recording, {longest}); need at least "
            f"{policy.min_coverage:.0%} (quality.min_coverage)",
        )
    if record.missing and policy.missing_components == "skip":
        named = ", ".join(f"{c} {r}" for c, r in sorted(record.missing.items(), key=_zne))
        raise SkipTrace("missing component", named)


def window_coverage(backed: np.ndarray, present: str) -> float:
    """Fraction of the window backed by data, over the components present (all three when none)."""
    rows = [COMPONENTS.index(c) for c in present] or [0, 1, 2]
    if backed.shape[-1] == 0:
        return 0.0
    return float(backed[rows].mean())


@dataclass
class StreamArray:
    """A stream converted to an array, with where it sits in time and what its reading found."""

    data: np.ndarray  # (3, n) float32, Z, N, E
    starttime: UTCDateTime  # time of sample 0
    sampling_rate_hz: float
    channels: dict[str, str] = field(default_factory=dict)  # component -> channel code used
    original_sampling_rate_hz: float = 0.0
    station: str = ""
    quality: QualityRecord = field(default_factory=QualityRecord)  # times from sample 0
    backed: np.ndarray | None = None  # (3, n) bool: True where a recorded sample lies

    @property
    def missing(self) -> str:
        return "".join(c for c in COMPONENTS if c not in self.channels)
