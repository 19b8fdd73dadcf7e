"""One process or many: ``torchrun`` set-up, the training sampler and a few collectives.

Evaluation shards its data with ``geminifusion.engine.evaluate.build_eval_loader``.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) the process group
is created with NCCL on GPUs and Gloo on CPU; without it everything here is a cheap no-op, so the
same code path serves a laptop and a GPU node.
"""

from __future__ import annotations

import datetime
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from geminifusion.files import WriteError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, number of processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available; ``cuda`` without a GPU is an error, not a silent CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; expected auto, cpu or cuda")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a config's ``amp`` setting (``none``, ``bf16``, ``fp16``) on
    ``device``; None where mixed precision is off or not offered (the CPU)."""
    if amp == "none" or device.type != "cuda":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def setup_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the ``torchrun`` process group if there is one; always pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistContext(rank, world_size, local_rank, dev, backend)


def cleanup_distributed() -> None:
    """Leave the process group, after freeing what still holds work of it.

    Gloo's worker threads abort the process ("terminate called without an active exception")
    when a DDP reducer or a pending work object outlives the group, which was seen once at the
    end of a two-process CPU run.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the run (1 without torch.distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (in place; returned for chaining)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all processes (in place)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def all_gather_objects(obj) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, src: int = 0):
    """``obj`` of process ``src`` on every process."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 (writing files, generating data) and hand its result, or its error,
    to every process; the others must not wait forever on a rank 0 that failed."""
    result, failure, message = None, None, None
    if not is_initialized() or dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as err:
            failure, message = err, (type(err).__name__, str(err))
    if is_initialized():
        result, message = broadcast_object((result, message))
    if failure is not None:
        raise failure
    if message is not None:
        kinds = {"FileNotFoundError": FileNotFoundError, "WriteError": WriteError}
        raise kinds.get(message[0], ValueError)(message[1])
    return result


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way, where a checkpoint left it.

    The order of an epoch depends only on (seed, epoch), so skipping the first ``start`` indices
    of this process's share reproduces the rest of the interrupted epoch exactly. With one process
    it is a seeded shuffle of the whole set.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle, seed, drop_last)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip this many of this process's indices in every ``__iter__`` until set again."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"sampler start {start} outside 0..{self.num_samples}")
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
