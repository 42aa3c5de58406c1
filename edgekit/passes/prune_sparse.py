"""prune-unstructured and prune-nm: zero individual weights (magnitude, or N:M groups), made permanent."""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Literal

from edgekit import macs
from edgekit.errors import UserError
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass

DENSE_NOTE = ("zeroed weights are still stored and multiplied: dense runtimes gain no speed; the sparsity helps "
              "compressed size (zip, weight compression) and sparse kernels")
NM_NOTE = ("2:4 sparsity runs faster only on sparse tensor cores (NVIDIA Ampere or newer through TensorRT with "
           "sparse weights enabled); every other runtime runs these weights dense")


@dataclass(frozen=True, slots=True)
class PruneUnstructuredConfig:
    sparsity: float = field(default=0.5, metadata={"range": (0.01, 0.99)})  # fraction of weights set to zero
    scope: Literal["global", "per-layer"] = "global"  # global ranks weights across all chosen layers
    steps: int = field(default=1, metadata={"range": (1, 100)})  # sparsity raised over this many steps
    schedule: Literal["linear", "cubic"] = "cubic"  # cubic: big steps first (Zhu & Gupta 2017)
    ignore: tuple[str, ...] = ()  # name patterns of Conv/Linear layers left dense


@dataclass(frozen=True, slots=True)
class PruneNMConfig:
    n: int = field(default=2, metadata={"range": (1, 64)})  # weights kept per group
    m: int = field(default=4, metadata={"range": (2, 64)})  # group size, along the input dimension
    ignore: tuple[str, ...] = ()  # name patterns of Conv/Linear layers left dense


def _weighted_layers(module: Any, ignore: tuple[str, ...]) -> list[tuple[str, Any]]:
    from torch import nn

    names = [name for name, _ in module.named_modules()]
    for pattern in ignore:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise UserError(f"ignore: no layer matches '{pattern}'")
    return [(name, layer) for name, layer in module.named_modules()
            if isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear))
            and not any(fnmatch.fnmatchcase(name, p) for p in ignore)]


def sparsity_of(layers: list[tuple[str, Any]]) -> tuple[float, dict[str, float]]:
    """Overall and per-layer fraction of exactly-zero weights."""
    per_layer = {name: round(float((layer.weight == 0).float().mean()), 4) for name, layer in layers}
    total = sum(layer.weight.numel() for _, layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for _, layer in layers)
    return (zeros / total if total else 0.0), per_layer


def _report(name: str, model: Model, module: Any, layers: list[tuple[str, Any]], **extra: Any) -> dict[str, Any]:
    reached, per_layer = sparsity_of(layers)
    nonzero = sum(int((p != 0).sum()) for p in module.parameters())
    return {"pass": name, "sparsity": round(reached, 4), "layer_sparsity": per_layer,
            "params": macs.count_params(module), "nonzero_params": nonzero,
            "macs": macs.count_macs(module, model.example_inputs), **extra}


class PruneUnstructured(Pass):
    name = "prune-unstructured"
    accepts = frozenset({Format.TORCH})
    produces = Format.TORCH
    Config = PruneUnstructuredConfig

    def run(self, model: Model, config: PruneUnstructuredConfig, ctx: Context) -> Model:
        from torch.nn.utils import prune

        module = copy.deepcopy(model.module).eval()
        layers = _weighted_layers(module, config.ignore)
        if not layers:
            raise UserError("prune-unstructured: the model has no Conv or Linear layers left to prune")
        done = 0.0
        for step in range(1, config.steps + 1):
            progress = step / config.steps
            goal = config.sparsity * (progress if config.schedule == "linear" else 1 - (1 - progress) ** 3)
            amount = (goal - done) / (1 - done)  # torch prunes a fraction of what is still unpruned
            if config.scope == "global":
                prune.global_unstructured([(layer, "weight") for _, layer in layers],
                                          pruning_method=prune.L1Unstructured, amount=amount)
            else:
                for _, layer in layers:
                    prune.l1_unstructured(layer, "weight", amount=amount)
            done = goal
        for _, layer in layers:
            prune.remove(layer, "weight")
        report = _report(self.name, model, module, layers, asked=config.sparsity, note=DENSE_NOTE)
        ctx.logger.info("prune-unstructured: %.1f%% of the weights are zero (%s)", 100 * report["sparsity"], DENSE_NOTE)
        return model.derive(module=module, meta={"reports": [*model.meta.get("reports", []), report]})


class PruneNM(Pass):
    name = "prune-nm"
    accepts = frozenset({Format.TORCH})
    produces = Format.TORCH
    Config = PruneNMConfig

    def run(self, model: Model, config: PruneNMConfig, ctx: Context) -> Model:
        from torch.nn.utils import prune

        if config.n >= config.m:
            raise UserError(f"prune-nm: n ({config.n}) must be smaller than m ({config.m}), e.g. n: 2, m: 4")
        module = copy.deepcopy(model.module).eval()
        pruned, skipped = [], {}
        for name, layer in _weighted_layers(module, config.ignore):
            inputs = layer.weight.shape[1]
            if inputs % config.m:
                skipped[name] = f"input dim {inputs} is not a multiple of {config.m}"
                continue
            prune.custom_from_mask(layer, "weight", nm_mask(layer.weight.detach(), config.n, config.m))
            prune.remove(layer, "weight")
            pruned.append((name, layer))
        if not pruned:
            raise UserError(f"prune-nm: no Conv/Linear layer has an input dim that is a multiple of {config.m}")
        report = _report(self.name, model, module, pruned, pattern=f"{config.n}:{config.m}", skipped=skipped, note=NM_NOTE)
        ctx.logger.info("prune-nm: %d:%d on %d layers, %d left dense; %s", config.n, config.m, len(pruned), len(skipped), NM_NOTE)
        return model.derive(module=module, meta={"reports": [*model.meta.get("reports", []), report]})


def nm_mask(weight: Any, n: int, m: int) -> Any:
    """Keep the `n` largest |w| in every group of `m` consecutive input channels (per output, per kernel tap)."""
    import torch

    along_input = weight.movedim(1, -1)  # [out, *kernel, in]: groups run along the input channels
    groups = along_input.reshape(-1, m).abs()
    keep = groups.topk(n, dim=1).indices
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
    return mask.reshape(along_input.shape).movedim(-1, 1).contiguous()
