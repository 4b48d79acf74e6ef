"""Worker processes that never outlive the process that started them.

A reader or fold worker whose parent is killed (``kill -9`` from a scheduler, an out-of-memory
kill) must not keep reading, training or writing into a run. Linux can send a process SIGKILL
when its parent dies (``prctl(PR_SET_PDEATHSIG)``); the request has to be made in the child, and
early: a spawned child first imports the modules of the functions it is handed (torch: seconds)
and receives shared tensors from its parent, and a parent killed meanwhile would leave it
waiting forever. So this module imports nothing heavy, and :func:`initialize` makes the request
before the real initializer is even unpickled.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this (child) process die as soon as its parent does, however the parent dies: Linux
    sends it SIGKILL. If the parent is already gone (``parent_pid`` given and no longer the
    parent), exit at once. Elsewhere than on Linux the request is not available (logged)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.warning("cannot ask to die with the parent: errno %d", ctypes.get_errno())
    else:
        logger.debug("die_with_parent: no PR_SET_PDEATHSIG on %s", sys.platform)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


class DieWithParent:
    """An argument whose unpickling in a spawned process calls :func:`die_with_parent` (with this
    process as the parent) before the arguments after it are unpickled; it arrives as None."""

    def __reduce__(self):
        return (die_with_parent, (os.getpid(),))


def initialize(_dies_with_parent: None, initializer: Callable[..., Any], *args: Any) -> None:
    """A process-pool initializer that dies with the parent first: pass
    ``initializer=initialize, initargs=(DieWithParent(), real_initializer, *real_args)``.
    Ctrl-C reaches every process of the terminal's group; the worker leaves it to its parent,
    which stops the workers itself (no traceback from each of them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*args)
