"""``python -m quake``: the ``quake`` command."""

import sys

from quake.cli import main

sys.exit(main())
