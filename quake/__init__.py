"""quake: classify seismic events from three-component waveforms."""

from quake.classes import NOISE, ClassNames

__version__ = "0.1.0"

__all__ = ["ClassNames", "NOISE", "__version__"]
