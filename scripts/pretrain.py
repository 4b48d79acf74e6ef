#!/usr/bin/env python
"""Self-supervised pretraining: ``quake pretrain`` from a clone (see ``python scripts/pretrain.py --help``)."""

import os

# OpenMP threads that spin while waiting burn the CPU other processes need on shared cores; set
# before torch is imported, as the quake command does.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from quake.cli import exit_process  # noqa: E402
from quake.commands.pretrain import main  # noqa: E402

if __name__ == "__main__":
    exit_process(main)
