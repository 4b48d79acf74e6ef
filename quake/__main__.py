"""``python -m quake``: the ``quake`` command."""

from quake.cli import run

run()
