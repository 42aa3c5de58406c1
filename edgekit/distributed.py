"""Several processes under torchrun: this process's rank, whether it writes, and the process group a training step
runs in.

`torchrun --nproc-per-node N -m edgekit compile …` starts N copies of the command; torchrun tells each its place in
RANK, WORLD_SIZE and LOCAL_RANK. edgekit reads environment variables in cli.py only, except here: these three are
torchrun's protocol with the process it starts, not a user's setting. Without torchrun this is rank 0 of 1.
Only rank 0 writes (cache entries, checkpoints, packages, logs); the others train with it and stop.
No torch import at module level: the CLI asks `is_writer()` before anything heavy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgekit.errors import UserError


def rank() -> int:
    """This process's index among the processes of the run (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes run together (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its machine: the CUDA device it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_writer() -> bool:
    """Whether this process writes what a run leaves behind: rank 0, or a lone process."""
    return rank() == 0


def backend_for(device: Any) -> str:
    """The collective backend for training on `device`: NCCL between CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(device: Any) -> Iterator[str | None]:
    """The default process group while inside, for training on `device`; yields its backend (None: one process).

    Made here unless the caller made one (then kept as it is). On a normal exit all processes wait for each other
    before leaving; on an error the process leaves at once (torchrun stops the others)."""
    import torch.distributed as dist

    if world_size() == 1:
        yield None
        return
    if not dist.is_available():
        raise UserError(f"{world_size()} processes asked (torchrun), but this PyTorch build has no torch.distributed; "
                        "run in one process")
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
        dist.init_process_group(backend_for(device))
    try:
        yield dist.get_backend()
        barrier(device)
    finally:
        if created:
            dist.destroy_process_group()


def barrier(device: Any) -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    import torch.distributed as dist

    if world_size() == 1:
        return
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def sum_across(tensor: Any) -> Any:
    """`tensor` summed over the processes (the same bits on every one); `tensor` itself in one process. NCCL needs it
    on the process's CUDA device."""
    import torch.distributed as dist

    if world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def gather(tensor: Any, device: Any) -> list[Any]:
    """Every process's `tensor` (one shape and dtype on all), in rank order, on the CPU; exchanged through `device`
    (the training device: NCCL exchanges CUDA tensors)."""
    import torch.distributed as dist

    if world_size() == 1:
        return [tensor.cpu()]
    sent = tensor.to(device).contiguous()
    parts = [sent.new_empty(sent.shape) for _ in range(world_size())]
    dist.all_gather(parts, sent)
    return [part.cpu() for part in parts]
