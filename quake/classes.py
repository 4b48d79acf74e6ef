"""Class names and the one mapping between class name and index.

Class names are QuakeML event types (``earthquake``, ``explosion``, ``quarry blast``, ...)
plus ``noise``, whose QuakeML event type is ``not existing`` (no seismic event happened). The
rule between the two, both ways, is :func:`class_to_event_type` / :func:`event_type_to_class`:
every writer of QuakeML and every reader of catalog types uses it, so a catalog written by
classification reads back as the same classes in training. Every model is saved with its
:class:`ClassNames`, so an index never travels without the name it stands for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

NOISE = "noise"
#: The QuakeML event type of the class ``noise``.
NOISE_EVENT_TYPE = "not existing"


def _quakeml_event_types() -> tuple[str, ...]:
    """The event types QuakeML 1.2 allows, as obspy knows them."""
    from obspy.core.event.header import EventType

    return tuple(str(v) for v in EventType.values())


def normalize_class_name(name: object) -> str:
    """Lower-case, trim and collapse whitespace/underscores: ``"Quarry_Blast "`` -> ``"quarry blast"``."""
    if not isinstance(name, str):
        raise ValueError(f"class name must be a string, got {name!r} ({type(name).__name__})")
    return " ".join(name.replace("_", " ").strip().lower().split())


def event_type_to_class(event_type: object) -> str:
    """The class name of a QuakeML event type: ``not existing`` -> ``noise``, any other type
    itself (normalized); "" stays ""."""
    name = normalize_class_name(event_type)
    return NOISE if name == NOISE_EVENT_TYPE else name


def class_to_event_type(class_name: object) -> str:
    """The QuakeML event type of a class name: ``noise`` -> ``not existing``, any other class
    itself (normalized)."""
    name = normalize_class_name(class_name)
    return NOISE_EVENT_TYPE if name == NOISE else name


def validate_class_name(name: object) -> str:
    """Return the normalized class name, or raise ValueError naming it and the allowed values.

    ``not existing`` is read as ``noise`` (:func:`event_type_to_class`), so one class never has
    two names."""
    normalized = event_type_to_class(name)
    allowed = _quakeml_event_types()
    if normalized != NOISE and normalized not in allowed:
        raise ValueError(
            f"unknown class name {name!r}: expected 'noise' or a QuakeML event type "
            f"(e.g. 'earthquake', 'explosion', 'quarry blast'; all: {', '.join(allowed)})"
        )
    return normalized


class ClassNames(Sequence[str]):
    """An ordered, immutable list of class names: ``names[i]`` is the class of index ``i``."""

    def __init__(self, names: Iterable[str]):
        normalized = [validate_class_name(n) for n in names]
        if not normalized:
            raise ValueError("ClassNames needs at least one class name, got none")
        duplicates = sorted({n for n in normalized if normalized.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate class names {duplicates} in {list(names)!r}")
        self._names = tuple(normalized)
        self._index = {n: i for i, n in enumerate(self._names)}

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> ClassNames:
        """The sorted set of the distinct labels: one canonical order for a given label set."""
        return cls(sorted({validate_class_name(label) for label in labels}))

    def index(self, name: str) -> int:  # type: ignore[override]
        """Index of a class name; ValueError naming the value and the known classes."""
        key = event_type_to_class(name)
        if key not in self._index:
            raise ValueError(f"unknown class {name!r}: this model knows {list(self._names)}")
        return self._index[key]

    def encode(self, labels: Iterable[str]) -> list[int]:
        return [self.index(label) for label in labels]

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self._names[int(i)] for i in indices]

    def __getitem__(self, i):  # type: ignore[override]
        return self._names[i]

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClassNames):
            return self._names == other._names
        if isinstance(other, (list, tuple)):
            return list(self._names) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._names)

    def __repr__(self) -> str:
        return f"ClassNames({list(self._names)!r})"

    def to_list(self) -> list[str]:
        return list(self._names)

    def to_json(self) -> str:
        return json.dumps(self.to_list())

    @classmethod
    def from_json(cls, text: str) -> ClassNames:
        return cls(json.loads(text))
