"""What a classification run gives a model, held against the model's card.

Every deployed model carries a card (:mod:`quake.deploy.card`, ``classifier.card``; None for a
model saved before cards) saying what it was trained on. The catalog job
(:func:`quake.classify.run.classify_events`) and ``classify(stream)`` compare their inputs with
it through one :class:`CardCheck` and say what differs once per run: one warning per kind of
difference, with its count and an example, and the counts in the run's summary
(:class:`CardCounts`):

- **training events**: an event whose id is one of the card's ``training_events`` (marked in its
  row's ``in_training`` column). The model has seen it; its probabilities are no independent
  test of the model.
- **components**: a window whose components backed by data (its quality record: ``Z`` when N and
  E were missing and filled) are a set that no training recording had (the card's
  ``components``, e.g. only ``ZNE``).
- **sampling rates**: a recording whose own rate (before resampling) lies more than an octave
  beyond every rate of training (the card's ``sampling_rates_hz``): below half the lowest or
  above twice the highest (:data:`RATE_FACTOR`, :func:`rate_range`). Below it, the resampled
  window is empty above half the recording's rate where every training window had signal;
  above it, the recording is of a kind (and decimated further than) any training recording.
- **anchor**: a window that starts from another point (P pick, origin time or first sample:
  :data:`quake.data.components.ANCHOR_KINDS`) than training's windows did, so the arrivals sit
  elsewhere in it than the model learned. The card names training's anchors in
  ``window.anchored_at`` (kind -> windows) where training recorded them; else its
  ``window.anchor`` tells ``start``/``offset`` (first sample) apart from ``p_arrival``, which is
  the P pick where a recording had one and the origin time elsewhere: such a card cannot say
  which, and the anchors are not compared (an info line gives this run's).

A model without a card is not compared; one info line says so.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from quake.classify.windows import PreparedEvent, StationResult
from quake.data import COMPONENTS, PreprocessConfig
from quake.data.components import ANCHOR_KINDS, listed_components

logger = logging.getLogger(__name__)

#: A recording's rate is far from training's beyond this factor (an octave) of the card's rates.
RATE_FACTOR = 2.0

ANCHOR_WORDS = {
    "p_pick": "the P pick",
    "origin_time": "the origin time",
    "trace_start": "the first sample",
}


def rate_range(rates_hz: Iterable[float]) -> tuple[float, float] | None:
    """``(lowest / RATE_FACTOR, highest * RATE_FACTOR)`` of training's rates: a recording
    outside it is far from training (module docstring); None without rates."""
    rates = [float(r) for r in rates_hz]
    if not rates:
        return None
    return min(rates) / RATE_FACTOR, max(rates) * RATE_FACTOR


def components_text(text: object) -> str | None:
    """A ``trace_components`` value (``"ZNE"``, ``"Z12"``, ``"EZN"``) as Z, N, E letters in
    that order (``"ZNE"``, ``"Z"``), or None when it names none."""
    listed = listed_components(text)
    return "".join(c for c in COMPONENTS if c in listed) if listed else None


def training_anchors(window: dict) -> set[str] | None:
    """The anchors of training's windows from a card's ``window`` entry; None when the card
    cannot tell (module docstring)."""
    recorded = window.get("anchored_at")
    if recorded:
        return {str(kind) for kind, n in recorded.items() if n}
    if window.get("anchor") in ("start", "offset"):
        return {"trace_start"}
    return None


@dataclass
class CardCounts:
    """What a run gave a model that its card says it was not trained on: the counts of the
    run's summary (added across the ranks of a sharded job: :meth:`add`)."""

    compared: bool = False  # the model has a card
    n_events: int = 0  # events whose ids were compared with training's
    n_windows: int = 0  # station windows compared
    training_events: int = 0
    unseen_components: Counter = field(default_factory=Counter)  # "Z" -> windows
    far_rates_hz: Counter = field(default_factory=Counter)  # "40" -> windows
    other_anchors: Counter = field(default_factory=Counter)  # "p_pick" -> windows
    anchors: Counter = field(default_factory=Counter)  # every window's anchor -> windows
    examples: dict = field(default_factory=dict)  # kind -> the first event (and station)

    def add(self, other: CardCounts) -> None:
        self.compared |= other.compared
        self.n_events += other.n_events
        self.n_windows += other.n_windows
        self.training_events += other.training_events
        for name in ("unseen_components", "far_rates_hz", "other_anchors", "anchors"):
            getattr(self, name).update(getattr(other, name))
        for kind, example in other.examples.items():
            self.examples.setdefault(kind, example)

    def to_dict(self) -> dict:
        return {
            "compared": self.compared,
            "n_events": self.n_events,
            "n_windows": self.n_windows,
            "training_events": self.training_events,
            "unseen_components": dict(self.unseen_components.most_common()),
            "far_rates_hz": dict(self.far_rates_hz.most_common()),
            "other_anchors": dict(self.other_anchors.most_common()),
            "anchors": dict(self.anchors.most_common()),
            "examples": dict(self.examples),
        }

    def describe(self) -> str:
        """One line for the command's summary: what differs from training, or that nothing does."""
        if not self.compared:
            return "the model has no card: inputs not compared with its training"
        parts = []
        if self.training_events:
            parts.append(
                f"{self.training_events} of {self.n_events} events were training events "
                "(in_training column)"
            )
        for name, what in (
            ("unseen_components", "components training never had"),
            ("far_rates_hz", "rates far from training's"),
            ("other_anchors", "another anchor than training's"),
        ):
            counts = getattr(self, name)
            if counts:
                listed = _listed(counts, " Hz" if name == "far_rates_hz" else "")
                parts.append(f"{sum(counts.values())} windows with {what} ({listed})")
        return ", ".join(parts) or "no training event, no other difference found"


class CardCheck:
    """A model card held against one run's events and windows (module docstring): mark the
    events (:meth:`mark_events`), count the windows (:meth:`add`), then :meth:`say` it once."""

    def __init__(self, card: dict | None, config: PreprocessConfig):
        self.card = card
        self.config = config
        self.counts = CardCounts(compared=card is not None)
        card = card or {}
        self.training_events = frozenset(str(e) for e in card.get("training_events") or ())
        listed = (components_text(k) for k in card.get("components") or {})
        self.components = {c for c in listed if c}
        self.rates_hz = sorted(_rates(card.get("sampling_rates_hz") or {}))
        self.rate_range = rate_range(self.rates_hz)
        self.anchors = training_anchors(card.get("window") or {})

    @classmethod
    def of(cls, classifier) -> CardCheck:
        """The check of a loaded classifier (its ``card``, None where it has none)."""
        return cls(getattr(classifier, "card", None), classifier.config)

    # ------------------------------------------------------------------ counting
    def mark_events(self, event_ids: Iterable) -> list[bool | None]:
        """Per event id: whether the model was trained on it (None for all without a card)."""
        ids = pd.Series(list(event_ids), dtype=object).astype(str)
        if self.card is None:
            return [None] * len(ids)
        marked = ids.isin(self.training_events).to_numpy()
        self.counts.n_events += len(ids)
        self.counts.training_events += int(marked.sum())
        if marked.any():
            self.counts.examples.setdefault("training_events", f"event {ids[marked].iloc[0]}")
        return [bool(m) for m in marked]

    def add(self, prepared: PreparedEvent, named: bool = True) -> None:
        """Count the windows of one finished event (``named``: its id is the caller's, worth
        naming in an example)."""
        if self.card is None:
            return
        event = f"event {prepared.event_id}, " if named else ""
        for station in prepared.stations:
            if station.used:
                self._window(station, f"{event}station {station.station_id}")

    def _window(self, station: StationResult, where: str) -> None:
        counts = self.counts
        counts.n_windows += 1
        counts.anchors[station.anchor] += 1
        if self.components and station.components not in self.components:
            counts.unseen_components[station.components or "none"] += 1
            counts.examples.setdefault("unseen_components", where)
        rate = station.sampling_rate_hz
        if self.rate_range and rate is not None and not _inside(rate, self.rate_range):
            counts.far_rates_hz[f"{rate:g}"] += 1
            counts.examples.setdefault("far_rates_hz", f"{where} at {rate:g} Hz")
        if self.anchors is not None and station.anchor not in self.anchors:
            counts.other_anchors[station.anchor] += 1
            counts.examples.setdefault("other_anchors", where)

    # ------------------------------------------------------------------ saying it
    def say(self, counts: CardCounts | None = None) -> None:
        """Log what differs from training, once: one warning per kind (``counts``: this
        check's, or those of every rank of a sharded job)."""
        counts = self.counts if counts is None else counts
        if self.card is None:
            logger.info(
                "the model has no card (card.json): its inputs are not compared with what it "
                "was trained on"
            )
            return
        said = False
        if counts.training_events:
            every = " (every event)" if counts.training_events == counts.n_events else ""
            logger.warning(
                "%d of %d events%s were training events of this model: their probabilities "
                "are not an independent test (the in_training column marks them; e.g. %s)",
                counts.training_events, counts.n_events, every,
                counts.examples.get("training_events", ""),
            )  # fmt: skip
            said = True
        if counts.unseen_components:
            logger.warning(
                "%d of %d windows hold components that no training recording had: %s "
                "(training: %s); their missing components are filled (%s), which this model "
                "never learned from; e.g. %s",
                sum(counts.unseen_components.values()), counts.n_windows,
                _listed(counts.unseen_components), ", ".join(sorted(self.components)),
                self.config.missing_component, counts.examples.get("unseen_components", ""),
            )  # fmt: skip
            said = True
        if counts.far_rates_hz:
            lo, hi = self.rate_range
            logger.warning(
                "%d of %d windows were recorded at rates far from training's: %s (training: "
                "%s Hz; far means below %g or above %g Hz, an octave beyond); e.g. %s",
                sum(counts.far_rates_hz.values()), counts.n_windows,
                _listed(counts.far_rates_hz, " Hz"), ", ".join(f"{r:g}" for r in self.rates_hz),
                lo, hi, counts.examples.get("far_rates_hz", ""),
            )  # fmt: skip
            said = True
        if counts.other_anchors:
            logger.warning(
                "%d of %d windows start from %s, while the model's training windows started "
                "from %s: the arrivals sit elsewhere in them than the model learned; e.g. %s",
                sum(counts.other_anchors.values()), counts.n_windows,
                _anchor_words(counts.other_anchors), _anchor_words(self.anchors),
                counts.examples.get("other_anchors", ""),
            )  # fmt: skip
            said = True
        if self.anchors is None and counts.n_windows:
            logger.info(
                "the model card does not say whether training's windows started at P picks or "
                "at origin times (window anchor %r): anchors not compared; this run's windows "
                "start from %s",
                (self.card.get("window") or {}).get("anchor"), _anchor_words(counts.anchors),
            )  # fmt: skip
        if not said:
            compared = [
                name
                for name, known in (
                    ("components", self.components),
                    ("rates", self.rate_range),
                    ("anchors", self.anchors is not None),
                )
                if known
            ]
            n = counts.n_events
            events = f"none of {n} events was a training event; " if n else ""
            logger.info(
                "compared with the model card: %s%s of %d windows as in training",
                events, " and ".join(compared) or "nothing else", counts.n_windows,
            )  # fmt: skip


def _rates(rates: dict) -> list[float]:
    out = []
    for key in rates:
        try:
            value = float(key)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            out.append(value)
    return out


def _inside(rate: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= rate <= bounds[1]


def _listed(counts: Counter, unit: str = "") -> str:
    return "; ".join(f"{k}{unit} x{n}" for k, n in counts.most_common())


def _anchor_words(kinds: Iterable[str] | Counter) -> str:
    if isinstance(kinds, Counter):
        return "; ".join(f"{ANCHOR_WORDS.get(k, k)} x{n}" for k, n in kinds.most_common())
    order = {k: i for i, k in enumerate(ANCHOR_KINDS)}
    return " or ".join(ANCHOR_WORDS.get(k, k) for k in sorted(kinds, key=lambda k: order.get(k, 9)))
