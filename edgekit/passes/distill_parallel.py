"""The distill student across the processes of a torchrun run: DistributedDataParallel, with batch norm over the
global batch, so N processes that each take a share of every batch compute what one process computes on the whole
batch, to float rounding (torch's SyncBatchNorm does this on GPUs only; this one runs on gloo and NCCL alike)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from edgekit.distributed import world_size

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _sum_across(tensor: torch.Tensor) -> torch.Tensor:
    total = tensor.clone()
    dist.all_reduce(total)
    return total


class _GlobalBatchNormFunction(torch.autograd.Function):
    """Batch norm over the global batch: statistics from every process's sums, and SyncBatchNorm's backward (the
    sums of the gradient and of gradient × normalized input, exchanged), which keeps the one-process accuracy
    where differentiating through the exchanged sums would cancel large per-process terms. Returns the output, the
    batch mean and its unbiased variance (for the running statistics). One exchange forward, one backward; each
    process's moments are its own float32 ones (torch.var_mean), combined in float64."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        channels, dims = input.shape[1], [0, *range(2, input.dim())]
        shape = (1, channels, *[1] * (input.dim() - 2))
        values = input.float()
        own_var, own_mean = (part.double() for part in torch.var_mean(values, dims, correction=0))
        count = values.numel() // channels
        # one exchange: every process's count, sum and sum of squares (from its own, accurate, mean and variance)
        sums = _sum_across(torch.cat([own_mean * count, (own_var + own_mean.square()) * count,
                                      own_mean.new_tensor([count])]))
        samples = float(sums[-1])
        mean = sums[:channels] / samples
        var = (sums[channels:-1] / samples - mean.square()).clamp_min(0)
        invstd = torch.rsqrt(var + eps).float()
        normal = (values - mean.float().view(shape)) * invstd.view(shape)
        out = normal if weight is None else normal * weight.view(shape) + bias.view(shape)
        ctx.save_for_backward(normal, invstd if weight is None else invstd * weight)
        ctx.samples = samples
        unbiased = (var * samples / max(samples - 1, 1)).float()  # what the running variance averages
        mean = mean.float()
        ctx.mark_non_differentiable(mean, unbiased)
        return out.to(input.dtype), mean, unbiased

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                 torch.Tensor | None, None]:
        normal, scale = ctx.saved_tensors
        dims = [0, *range(2, grad.dim())]
        shape = (1, grad.shape[1], *[1] * (grad.dim() - 2))
        values = grad.float()
        local = torch.stack([values.sum(dims), (values * normal).sum(dims)])  # this process's bias and weight grads
        means = (_sum_across(local.double()) / ctx.samples).float()
        grad_input = (values - means[0].view(shape) - normal * means[1].view(shape)) * scale.view(shape)
        weighted = ctx.needs_input_grad[1]
        return grad_input.to(grad.dtype), local[1] if weighted else None, local[0] if weighted else None, None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch (every process's share together). It holds
    the very parameters and buffers of the layer it stands in for, under the same names."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
        self.weight, self.bias = layer.weight, layer.bias
        self.running_mean, self.running_var = layer.running_mean, layer.running_var
        self.num_batches_tracked = layer.num_batches_tracked
        self.train(layer.training)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        """The layer it replaces takes the same shapes (checked by it in one process)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:  # running statistics (or this share's own where the layer keeps none)
            return super().forward(input)
        out, mean, var = _GlobalBatchNormFunction.apply(input, self.weight, self.bias, self.eps)
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var, factor)
        return out


@contextmanager
def data_parallel(student: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """`student` as the training steps call it: itself in one process; across processes under DistributedDataParallel
    with its batch norm layers over the global batch (put back on leaving, with what they learned). Call the student
    itself for evaluation: its layers then use running statistics and exchange nothing."""
    if world_size() == 1:
        yield student
        return
    swapped = [(parent, name, child) for parent in student.modules() for name, child in parent.named_children()
               if type(child) in BATCH_NORMS]
    for parent, name, child in swapped:
        setattr(parent, name, GlobalBatchNorm(child))
    try:
        # find_unused_parameters: a student may hold parameters its first output does not use (a pooler)
        yield nn.parallel.DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None,
                                                  find_unused_parameters=True)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
