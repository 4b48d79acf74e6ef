"""quake: classify seismic events from three-component waveforms.

``quake.load``, ``quake.classify_catalog`` and ``quake.train`` (:mod:`quake.api`) are the
Python side of the ``quake`` command; they are imported on first use, so ``import quake`` stays
light.
"""

from quake.classes import NOISE, ClassNames
from quake.version import __version__

_API = ("load", "classify_catalog", "train")

__all__ = ["ClassNames", "NOISE", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from quake import api

        return getattr(api, name)
    raise AttributeError(f"module 'quake' has no attribute {name!r}")
