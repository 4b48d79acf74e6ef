"""Data-parallel training under ``torchrun --nproc_per_node N scripts/train.py``.

Every rank holds the whole data set and the same grouped folds; the folds run one after the
other, and within a fold each global batch is split over the ranks and PyTorch's
``DistributedDataParallel`` averages the gradients (gloo on CPU, nccl on GPU). Validation and
test windows are split over the ranks too and their probabilities gathered, so every rank
computes the same metrics and takes the same early-stopping decision. Only rank 0 writes.

Without torchrun (no ``WORLD_SIZE`` in the environment, or 1) nothing here talks to another
process: :data:`SINGLE` stands in and every collective is the identity.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from quake.runtime import Ranks, rank_device, torchrun_ranks

T = TypeVar("T")

# Ranks wait for rank 0 while it runs the baseline or writes reports; the default of
# 30 minutes is too short for a large set.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=4)


@dataclass(frozen=True)
class DistContext(Ranks):
    """This process's place among the training processes, with the collectives training needs."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def on_main(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn`` on rank 0 only; every rank returns its result or raises its error.

        Keeps a failure on rank 0 (say, a run folder that cannot be resumed) from leaving the
        other ranks waiting in a collective until the timeout.
        """
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

    def gather_rows(self, part: np.ndarray) -> np.ndarray:
        """Concatenate every rank's rows in rank order (the inverse of :meth:`shard`)."""
        if not self.enabled:
            return part
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, part)
        return np.concatenate(parts, axis=0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over the ranks.

        DDP keeps the parameters equal, but each rank's running statistics follow its own part
        of the batches; averaged, every rank evaluates and saves the same model.
        """
        if not self.enabled:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer.data)
                buffer.data /= self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on at least one."""
        return self.sum([float(flag)])[0] > 0


SINGLE = DistContext()


def env_world(environ: Mapping[str, str] | None = None) -> DistContext:
    """The ranks torchrun describes in the environment (:func:`quake.runtime.torchrun_ranks`)."""
    return DistContext(**dataclasses.asdict(torchrun_ranks(environ)))


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun set up; one process without torchrun.

    ``device`` is the resolved device; on CUDA each rank takes the GPU of its local rank
    (see :func:`rank_device`) and the backend is nccl, else gloo.
    """
    context = env_world()
    if not context.enabled:
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(rank_device(device, context))
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return context


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
