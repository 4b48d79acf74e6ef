"""Measurement helpers behind ``scripts/bench_*.py``: kept apart from the model and data code,
importable so that tests can check the figures they print follow from what they count."""
