"""Training helpers: batches from a Dataset (shuffled indices, samples joined on the batch axis, split across the
processes of a torchrun run), checkpoints (written by rank 0, resumed by every process)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data.dataset import Dataset
from edgekit.distributed import gather, is_writer, rank
from edgekit.errors import UserError
from edgekit.spec import TensorSpec

log = logging.getLogger("edgekit")


def batch_count(dataset: Dataset, batch_size: int) -> int:
    return max(len(dataset) // batch_size, 1)


def part_bounds(size: int, part: tuple[int, int]) -> tuple[int, int]:
    """[start, stop) of share `part` = (index, count) of `size` items cut into `count` contiguous shares, the first
    `size % count` one item longer."""
    index, count = part
    base, extra = divmod(size, count)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def batches(dataset: Dataset, specs: tuple[TensorSpec, ...], batch_size: int, seed: int | None,
            epoch: int = 0, drop_last: bool = True, part: tuple[int, int] = (0, 1)) -> Iterator[tuple[list[Any], Any]]:
    """(input tensors, labels or None) per batch of `batch_size` samples; `drop_last` drops a partial last batch.

    A dataset sample is one whole feed ([1, ...] for a model taking batch 1); samples are
    gathered by index (only the batch is copied) and joined on the batch axis. `seed` None keeps
    the order; otherwise epoch `epoch` gets its own permutation of `seed`. `part` = (index, count):
    of each batch only share `index` of `count` (`part_bounds`), for one of `count` processes that
    split every batch; a batch whose share is empty is skipped.
    """
    import torch

    missing = [spec.name for spec in specs if spec.name not in dataset.arrays]
    if missing:
        raise UserError(f"training data {dataset.origin} has no array for input(s) {', '.join(missing)}")
    count = len(dataset)
    size = min(batch_size, count)
    order = np.arange(count) if seed is None else np.random.default_rng([seed, epoch]).permutation(count)
    for start in range(0, count - size + 1 if drop_last else count, size):
        index = np.sort(order[start:start + size])
        index = index[slice(*part_bounds(len(index), part))]
        if not len(index):
            continue
        tensors = []
        for spec in specs:
            chunk = dataset.arrays[spec.name][index]
            tensors.append(torch.from_numpy(np.ascontiguousarray(chunk.reshape(-1, *chunk.shape[2:]))))
        labels = None
        if dataset.labels is not None:
            labels = torch.from_numpy(np.asarray(dataset.labels[index]).reshape(-1).astype(np.int64))
        yield tensors, labels


def first_output(result: Any) -> Any:
    """The first tensor of a module's result (a tensor, a tuple/list, a dict or a HF ModelOutput)."""
    if isinstance(result, dict):
        result = next(iter(result.values()))
    if isinstance(result, (tuple, list)):
        result = result[0]
    return result


class Checkpoint:
    """A training run's state in `folder` (None: no checkpoints), written atomically, resumed if present.

    Under torchrun every process resumes from the file and calls `save` at the same steps (each one's random state
    is kept, exchanged through `device`); rank 0 alone writes it."""

    FILE = "checkpoint.pt"

    def __init__(self, folder: Path | None, device: Any = None) -> None:
        self.path = folder / self.FILE if folder else None
        self.device = device

    def resume(self, module: Any, optimizer: Any, schedule: Any, scaler: Any) -> dict[str, Any]:
        """Load the saved state into the objects; the progress dict (step 0 when starting afresh)."""
        import torch

        fresh = {"step": 0, "stopped": False, "losses": [], "metrics": [], "best": None, "bad": 0}
        if self.path is None or not self.path.is_file():
            return fresh
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            module.load_state_dict(saved["module"])
        except (RuntimeError, KeyError, EOFError, ValueError, OSError, pickle.UnpicklingError) as error:
            why = ("not a plain weights file" if isinstance(error, pickle.UnpicklingError)  # never loaded with pickle
                   else (str(error).strip().splitlines() or [type(error).__name__])[0])
            log.warning("checkpoint %s is corrupt or does not fit this run (%s): starting afresh", self.path, why)
            return fresh
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        states = saved["rng"]  # one row per process (an older edgekit: one state)
        if states.dim() == 1 or rank() < len(states):
            torch.set_rng_state(states if states.dim() == 1 else states[rank()].clone())  # a view crashes set_rng_state
        else:
            log.info("checkpoint %s was written by %d processes: process %d keeps its own random state",
                     self.path, len(states), rank())
        progress = saved["progress"]
        progress["resumed_from"] = progress["step"]
        log.info("resuming from %s at step %d", self.path, progress["step"])
        return progress

    def save(self, module: Any, optimizer: Any, schedule: Any, scaler: Any, progress: dict[str, Any]) -> None:
        import torch

        if self.path is None:
            return
        states = torch.stack(gather(torch.get_rng_state(), self.device or torch.device("cpu")))
        if not is_writer():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        torch.save({"module": module.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(), "rng": states, "progress": progress}, partial)
        partial.replace(self.path)
