"""What training, classification and export all need from the machine, in one place: the
device, the precision/autocast policy (one bf16 check), torchrun's ranks and atomic file writes
(child processes that die with their parent: :mod:`quake.processes`).

Kept apart from the model, data and deployment code so that each of them, and training, use the
same rules: a CPU that emulates bf16 is treated the same way everywhere, and every output file is
replaced whole or not at all.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from quake.options import INFERENCE_PRECISIONS

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: Autocast dtype of each reduced precision.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --- device ----------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for, but torch sees no CUDA device; use 'cpu' or 'auto'"
        )
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(device)


# --- precision -------------------------------------------------------------------------------------
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere torch
    emulates it, slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_precision(precision: str, device: torch.device) -> str:
    """Training precision: ``auto`` -> ``bf16`` where the device computes it natively, else
    ``fp32``. ``fp16`` (with loss scaling) is for CUDA only. Only training forward passes use it;
    evaluation and the saved weights stay float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"optim.precision 'fp16' needs a CUDA device, got {device.type!r}; "
            "expected bf16 or fp32 on the CPU (or auto)"
        )
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype of classification's ``--amp``: bf16 on CPU and on GPUs that have it,
    else fp16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cpu":
        raise ValueError(f"mixed precision on {device.type!r}; expected a 'cpu' or 'cuda' device")
    return torch.bfloat16


def inference_amp(precision: str, device: torch.device | str) -> bool:
    """Whether a model call runs under autocast (:func:`autocast_for`): ``fp32`` never, ``bf16``
    always, ``auto`` where the device computes bf16 natively (:func:`native_bf16`; a CPU that
    emulates bf16 is slower in it than in float32)."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(
            f"precision must be one of {list(INFERENCE_PRECISIONS)}, got {precision!r}"
        )
    return native_bf16(device) if precision == "auto" else precision == "bf16"


def autocast_for(device: torch.device | str, enabled: bool):
    """``torch.autocast`` for a model call: matmuls and convolutions in :func:`amp_dtype`; the
    z-score and STFT (not autocast ops) and the softmax (cast to float32) stay float32."""
    device = torch.device(device)
    if not enabled:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=amp_dtype(device))


# --- paths ------------------------------------------------------------------------------------------
def check_outputs_apart(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, str | os.PathLike | None],
    *,
    in_place: Sequence[tuple[str, str]] = (),
) -> None:
    """ValueError naming both paths when an output is, contains or sits inside an input or
    another output: a job must never write over what it reads, nor two outputs over each other.
    ``in_place`` lists ``(output, input)`` name pairs allowed to be the same file (the caller
    keeps a backup). URLs (``http://...``) are not paths and are left alone."""

    def resolved(items):
        return {
            name: Path(path).expanduser().resolve()
            for name, path in items.items()
            if path is not None and "://" not in str(path)
        }

    outs, ins = resolved(outputs), resolved(inputs)
    allowed = set(in_place)
    others = list(ins.items()) + list(outs.items())
    for out_name, out in outs.items():
        for other_name, other in others:
            if other_name == out_name:
                continue
            if out == other and (out_name, other_name) in allowed:
                continue
            if out == other or other in out.parents or out in other.parents:
                how = (
                    "is" if out == other else "sits inside" if other in out.parents else "contains"
                )
                raise ValueError(
                    f"{out_name} {str(out)!r} {how} {other_name} {str(other)!r}; expected an "
                    "output apart from every input and every other output"
                )


def backup_path(path: str | os.PathLike) -> Path:
    """A new name beside ``path`` for a copy of it kept before it is rewritten:
    ``<name>.bak``, or ``<name>.bak2``, ... when that exists."""
    path = Path(path)
    candidate, k = path.with_name(path.name + ".bak"), 1
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.name}.bak{k}")
    return candidate


# --- one writer per output ---------------------------------------------------------------------------
class OutputLock:
    """One writer per output: a lock file (``lock_path``) created exclusively, holding the host,
    pid and start time of the process that writes. A second job on the same output stops at once
    with a message naming that process; a lock left by a process that is gone (same host, pid no
    longer running: a ``kill -9``, a crash) is taken over with a warning. Use as a context manager;
    the lock is removed when the block ends."""

    def __init__(self, lock_path: str | os.PathLike, what: str):
        self.path = Path(lock_path)
        self.what = what

    def __enter__(self) -> OutputLock:
        for attempt in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if attempt == 0 and self._is_stale(holder):
                    logger.warning(
                        "%s: taking over the lock %s left by process %s on %s (no longer running)",
                        self.what, self.path, holder.get("pid"), holder.get("host"),
                    )  # fmt: skip
                    self.path.unlink(missing_ok=True)
                    continue
                raise ValueError(
                    f"{self.what} is being written by another quake process (pid "
                    f"{holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}); "
                    f"expected one writer per output: wait for it, or remove {str(self.path)!r} "
                    "if that process is gone"
                ) from None
            except OSError as err:  # a read-only folder, a full disk
                raise OSError(
                    err.errno, f"cannot take the lock of {self.what} ({self.path}): {err.strerror}"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)  # fmt: skip
            return self
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        holder = self._holder()
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _is_stale(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


# --- atomic writes ---------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends
    without an error, removed otherwise. The temporary file is created exclusively under an
    unpredictable name (``mkstemp``), so a planted link cannot redirect the write, and a reader
    sees the old file or the new one, never half of one."""
    path = Path(path)
    with _naming_the_output(path):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _naming_the_output(path):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from the group
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _naming_the_output(path: Path) -> Iterator[None]:
    """An OSError while writing ``path`` (full disk, read-only folder) names ``path`` itself, not
    the temporary file nobody asked for."""
    try:
        yield
    except OSError as err:
        if err.errno is None:
            raise
        raise OSError(err.errno, f"cannot write {str(path)!r}: {err.strerror}") from err


def staging_dir(target: str | os.PathLike) -> Path:
    """A new, empty folder beside ``target`` to build it in before renaming it into place:
    created exclusively under an unpredictable name (``mkdtemp``), with the permissions a plain
    ``mkdir`` would give (not ``mkdtemp``'s 0700)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())
    return staging


def config_differences(old: object, new: object, prefix: str = "") -> list[str]:
    """``"key.sub: old -> new"`` for every leaf where two nested config dicts differ: what a
    resumed run's refusal names."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def publish_staged(staging: Path, target: str | os.PathLike) -> Path:
    """Move a folder built in :func:`staging_dir` into place, replacing what was there."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it, which would
    briefly affect files other threads create)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def read_json(path: Path, expected: str) -> dict:
    """A JSON object from ``path``; a ValueError naming the file when it is not one."""
    try:
        loaded = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); expected {expected}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{str(path)!r} holds a {type(loaded).__name__}; expected {expected}")
    return loaded


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename over ``path`` (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text))


# --- torchrun ranks --------------------------------------------------------------------------------
#: How long ranks wait for each other in a collective: rank 0 may run the baseline or write
#: reports, and a sharded catalog waits for its slowest slice (the default 30 minutes is short).
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=12)

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun job, and the collectives the jobs need: the one
    wrapper of ``torch.distributed`` for training, pretraining and classification. Without
    torchrun (:data:`SINGLE`) every collective is the identity and nothing talks to another
    process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str | torch.device) -> torch.device:
        """``device`` resolved, a GPU taken as this process's local rank's GPU."""
        return rank_device(resolve_device(device), self)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def on_main(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn`` on rank 0 only; every rank returns its result or raises its error, so a
        failure on rank 0 never leaves the others waiting in a collective until the timeout."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # handed to every rank below
                error = exc
        if self.enabled:
            box = [(result, error)]
            dist.broadcast_object_list(box, src=0)
            result, error = box[0]
        if error is not None:
            raise error
        return result

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (sizes differ by at most one)."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def gather(self, obj: object) -> list[object]:
        """Every rank's ``obj`` (small, picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather_rows(self, part: np.ndarray) -> np.ndarray:
        """Concatenate every rank's rows in rank order (the inverse of :meth:`shard`)."""
        return part if not self.enabled else np.concatenate(self.gather(part), axis=0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on at least one."""
        return self.sum([float(flag)])[0] > 0

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over the ranks: DDP
        keeps the parameters equal, the statistics follow each rank's own batches."""
        if not self.enabled:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer.data)
                buffer.data /= self.world_size


SINGLE = Ranks()


def torchrun_ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """The ranks torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``)."""
    environ = os.environ if environ is None else environ
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    try:
        world_size = int(environ.get("WORLD_SIZE", "1") or 1)
        rank = int(environ.get("RANK", "0") or 0)
        local_rank = int(environ.get("LOCAL_RANK", str(rank)) or 0)
        local_world_size = int(environ.get("LOCAL_WORLD_SIZE", str(world_size)) or 1)
    except ValueError:
        found = {n: environ.get(n) for n in names}
        raise ValueError(f"{found}: expected integers, as torchrun sets them") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world_size}: expected 0 <= RANK < WORLD_SIZE")
    return Ranks(rank, world_size, local_rank, local_world_size)


@contextlib.contextmanager
def joined_ranks(
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[Ranks]:
    """This process's :class:`Ranks` for the block: under torchrun it joins the process group
    (``backend``: nccl for a CUDA ``device``, else gloo) and leaves it after, when it was the
    one to join; without torchrun, :data:`SINGLE`."""
    ranks = torchrun_ranks(environ)
    if not ranks.enabled:
        yield SINGLE
        return
    device = resolve_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    owns = not dist.is_initialized()
    if owns:
        if backend == "nccl":
            torch.cuda.set_device(rank_device(device, ranks))
        dist.init_process_group(
            backend, rank=ranks.rank, world_size=ranks.world_size, timeout=COLLECTIVE_TIMEOUT
        )
    try:
        yield ranks
    finally:
        if owns and dist.is_initialized():
            dist.destroy_process_group()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The GPU of this process's local rank when several processes share a machine; the CPU
    stays the CPU."""
    if device.type != "cuda" or not ranks.enabled or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if ranks.local_rank >= count:
        raise ValueError(
            f"local rank {ranks.local_rank} has no GPU: torch sees {count}; "
            f"expected --nproc_per_node <= {count}"
        )
    return torch.device("cuda", ranks.local_rank)
