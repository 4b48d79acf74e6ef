"""Choices and defaults that the ``quake`` command's options offer and the implementation
checks against, in a module that imports nothing: ``quake <command> --help`` is built from them
without importing torch, obspy or pandas, and the implementation imports them from here, so each
has one place."""

#: How event ids are made (:mod:`quake.data.catalog`). ``auto``: the ``event_id`` column of a
#: CSV, the last path segment of a QuakeML event's resource id
#: (``smi:uw.anss.org/event/uw61348817`` -> ``uw61348817``). ``last-segment`` / ``resource-id``:
#: that segment / the whole resource id (QuakeML). ``column:NAME``: a CSV column.
#: ``regex:PATTERN``: the first group (or the whole match) of PATTERN searched in the resource id
#: (QuakeML) or in the ``event_id`` column (CSV).
ID_RULES = ("auto", "last-segment", "resource-id", "column:NAME", "regex:PATTERN")

#: Where a catalog's waveforms come from (:func:`quake.data.sources.open_source`).
SOURCE_KINDS = ("auto", "folders", "sds", "seisbench", "fdsn")
#: Seconds of data an SDS archive or FDSN service is asked for around an origin time.
DEFAULT_BEFORE_S = 60.0
DEFAULT_AFTER_S = 120.0

#: What :func:`quake.deploy.export.export_classifier` can write.
EXPORT_FORMATS = ("onnx", "torchscript")
#: Largest absolute difference in probability allowed between an export and predict_proba
#: (float32 graphs; what is measured is ~1e-7).
PARITY_ATOL = 1e-5

#: The arithmetic of a model call in ``quake annotate`` (:func:`quake.runtime.inference_amp`).
#: ``auto``: bf16 autocast where the device computes bf16 natively, else float32.
INFERENCE_PRECISIONS = ("auto", "bf16", "fp32")
