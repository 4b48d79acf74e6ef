"""The ``quake`` command (:func:`main`), and what every quake command does around its work: one
line for an ordinary failure, a clean stop on SIGINT/SIGTERM.

An error a person can act on (a missing file, a bad value, a full disk, a read-only folder)
ends the command with ``error: <what, and what was expected>`` on stderr and exit status 2,
without a traceback; ``-v`` adds the traceback. SIGTERM (a scheduler's stop) is handled like
Ctrl-C: the work unwinds through its ``finally`` blocks (outputs flushed, locks released,
worker processes stopped), the command says how to resume, and exits with 130 or 143.

A process whose whole work is one command (the ``quake`` command, ``scripts/*.py``, through
:func:`exit_process`) answers the two signals from its start to its exit, not only while the
command works: before the command's work begins it exits with 130 or 143; once the work has
returned (every output complete) it exits at once with the command's own status, so a stop
that comes while the process exits neither kills it by the signal nor calls a finished job
stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import NoReturn

from quake.version import __version__

EXIT_ERROR = 2
_EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells do


class Stopped(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM (or SIGINT) arrives."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# the status of the command whose work has returned, its outputs complete (None: still working)
_finished_status: int | None = None


def _on_signal(signum: int, _frame: object) -> None:
    """SIGINT/SIGTERM: :class:`Stopped` while a command works; once its work has returned, an
    immediate exit with its status (there is nothing left to stop, and nothing to resume)."""
    if _finished_status is None:
        raise Stopped(signum)
    _exit_now(
        _finished_status,
        f"{signal.Signals(signum).name} after the command had finished; its outputs are complete",
    )


def _exit_now(status: int, message: str) -> NoReturn:
    """Say ``message`` and end the process with ``status`` without unwinding: the process is
    already on its way out, and a signal handler must not leave it half exited."""
    for stream, text in ((sys.stdout, ""), (sys.stderr, message + "\n")):
        with contextlib.suppress(Exception):  # a stream may be closed at interpreter exit
            stream.write(text)
            stream.flush()
    os._exit(status)


def _answer_signals() -> dict[int, object]:
    """Install :func:`_on_signal` for SIGINT and SIGTERM; return the handlers it replaces."""
    return {s: signal.signal(s, _on_signal) for s in _EXIT_SIGNAL}


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the main thread while the block runs."""
    previous = _answer_signals()
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def error_message(err: BaseException) -> str:
    """One line for an ordinary failure: an OSError says what went wrong with which file."""
    if isinstance(err, OSError) and err.strerror:
        files = [repr(str(f)) for f in (err.filename, err.filename2) if f is not None]
        return f"{err.strerror}" + (f": {' -> '.join(files)}" if files else "")
    return str(err) or type(err).__name__


#: Libraries whose errors come from a file a user can fix or a disk they can free (a full disk
#: while weights are saved, a damaged ONNX graph): matched by the module that defines the error,
#: so that the command need not import them to start.
FILE_LIBRARIES = ("safetensors", "onnxruntime", "onnx", "h5py")


def from_a_file_library(err: BaseException) -> bool:
    """Whether ``err`` is raised by one of :data:`FILE_LIBRARIES` (an ordinary failure)."""
    return type(err).__module__.split(".")[0] in FILE_LIBRARIES


def config_overrides(args, flag_keys: dict[str, str]) -> dict:
    """Dotted config overrides of a command line: its ``--set KEY=VALUE`` items, then every flag
    given (``flag_keys``: argparse destination -> dotted config key)."""
    from quake.training.config import parse_override

    overrides = dict(parse_override(item) for item in args.set)
    for attr, key in flag_keys.items():
        value = getattr(args, attr)
        if value is not None:
            overrides[key] = value
    return overrides


def run_command(
    body: Callable[[], int],
    *,
    verbose: bool = False,
    resume_hint: str | Callable[[], str] = "",
    also: tuple[type[Exception], ...] = (),
) -> int:
    """Run a command's ``body`` and turn its ordinary failures into one line and an exit status
    (module docstring). Errors that are not ordinary (bugs) keep their traceback.
    ``resume_hint`` (or a function giving it, asked when the stop comes) says how to go on;
    ``also`` names further exception types that are ordinary failures of this command."""
    global _finished_status
    _finished_status = None
    try:
        with stop_on_signals():
            status = body()
            _finished_status = status  # from here a stop ends the process with this status
        return status
    except KeyboardInterrupt as stop:
        hint = resume_hint() if callable(resume_hint) else resume_hint
        return _say_stopped(stop, hint)
    except Exception as err:
        if not (isinstance(err, (ValueError, OSError, *also)) or from_a_file_library(err)):
            raise
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (-v for the traceback)"
        print(f"error: {error_message(err)}{hint}", file=sys.stderr)
        return EXIT_ERROR


def _say_stopped(stop: KeyboardInterrupt, hint: str = "") -> int:
    """``stopped by SIGTERM; <hint>`` on stderr; the exit status of that stop (130 or 143)."""
    signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
    stopped = f"stopped by {signal.Signals(signum).name}"
    print(stopped + (f"; {hint}" if hint else ""), file=sys.stderr)
    return _EXIT_SIGNAL[signum]


def exit_process(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())`` for a process whose whole work is one command, answering SIGINT
    and SIGTERM from here to the process's exit (module docstring): a stop before the
    command's work begins exits with 130/143, one after it has returned with its status."""
    global _finished_status
    _answer_signals()
    try:
        status = main()
    except KeyboardInterrupt as stop:  # before the command's work began: nothing to resume
        status = _say_stopped(stop)
    except SystemExit as done:  # argparse: --help, or a usage error it has printed
        _finished_status = done.code if isinstance(done.code, int) else int(done.code is not None)
        raise
    _finished_status = status
    sys.exit(status)


def run() -> NoReturn:
    """The ``quake`` command's entry point: :func:`main` as the process's whole work."""
    exit_process(main)


def main(argv: list[str] | None = None) -> int:
    """``quake <command> [options]``: ``train``, ``classify``, ``annotate``, ``export`` or
    ``pretrain`` (each with ``--help``); ``quake --version``."""
    import argparse
    import importlib

    from quake.commands import COMMANDS

    # spinning OpenMP threads take the CPU other processes need on shared cores; before torch
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="quake",
        description="Classify seismic events (earthquake, explosion, quarry blast, noise) from "
        "three-component waveforms.",
        epilog="Run 'quake <command> --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"quake {__version__}")
    parser.add_argument(
        "command",
        choices=COMMANDS,
        help="train: cross-validated training; classify: label a catalog; annotate: find and "
        "classify events in continuous recordings; export: ONNX/TorchScript; "
        "pretrain: self-supervised pretraining on unlabelled recordings",
    )
    if not argv or argv[0].startswith("-"):  # quake, quake --help, quake --version
        parser.parse_args(argv or ["--help"])
        return EXIT_ERROR  # not reached: argparse exits
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    return importlib.import_module(f"quake.commands.{command}").main(rest)
