"""prune-structured: remove whole channels, MLP width and attention heads with torch-pruning's dependency graph."""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Literal

from edgekit import macs
from edgekit.errors import MissingBackend, UserError
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs
from edgekit.passes.reconstruct import reconstruct_linears
from edgekit.training import batches, first_output

Importance = Literal["l1", "l2", "bn-scale", "taylor"]
MACS_TOLERANCE = 0.02  # a MACs target is met when within this fraction of the source MACs
SEARCH_ROUNDS = 12


@dataclass(frozen=True, slots=True)
class PruneStructuredConfig:
    ratio: float = field(default=0.5, metadata={"range": (0.0, 0.95)})  # fraction of each group's channels removed
    target_macs_ratio: float = field(default=0.0, metadata={"range": (0.0, 1.0)})  # MACs after/before; 0: use `ratio`
    importance: Importance = "l2"
    scope: Literal["per-layer", "global"] = "per-layer"  # global ranks channels across layers
    iterative_steps: int = field(default=1, metadata={"range": (1, 100)})
    layers: tuple[str, ...] = ()  # name patterns of the layers whose outputs may shrink; empty: every layer
    ignore: tuple[str, ...] = ()  # name patterns of layers left alone (the model's output layers always are)
    heads_ratio: float = field(default=0.0, metadata={"range": (0.0, 0.95)})  # fraction of attention heads removed
    max_layer_ratio: float = field(default=0.9, metadata={"range": (0.0, 1.0)})  # no layer loses more (global scope)
    round_to: int = field(default=1, metadata={"range": (1, 1024)})  # keep channel counts multiples of this
    calibration_batches: int = field(default=4, metadata={"range": (1, 10_000)})  # for taylor importance and reconstruct
    # refit Linear layers that lost inputs by least squares on --calib data (recovers accuracy before any training)
    reconstruct: bool = False
    batch_size: int = field(default=16, metadata={"range": (1, 65_536)})


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError:
        raise MissingBackend("torch-pruning", "prune", "structured pruning") from None
    return torch_pruning


class PruneStructured(Pass):
    name = "prune-structured"
    accepts = frozenset({Format.TORCH})
    produces = Format.TORCH
    Config = PruneStructuredConfig
    uses_calibration = True  # taylor importance reads it

    def run(self, model: Model, config: PruneStructuredConfig, ctx: Context) -> Model:
        if config.ratio == 0.0 and config.target_macs_ratio == 0.0 and config.heads_ratio == 0.0:
            raise UserError("prune-structured: ratio, target_macs_ratio and heads_ratio are all 0: nothing to prune")
        needing_data = [what for what, used in (("importance 'taylor'", config.importance == "taylor"),
                                                ("reconstruct", config.reconstruct)) if used]
        if needing_data and ctx.calibration is None:
            raise UserError(f"prune-structured: {' and '.join(needing_data)} needs data: give --calib DATA")
        examples = model.example_inputs
        before = macs.summary(model.module, examples)
        if config.target_macs_ratio:
            module, ratio = _search_ratio(model, config, ctx, before["macs"])
        else:
            module, ratio = _prune(model, config, ctx, config.ratio), config.ratio
        after = macs.summary(module, examples)
        _check_outputs(model, module)
        report = {"pass": self.name, "channel_ratio": ratio, **macs.compare(before, after)}
        if config.reconstruct:
            residuals = reconstruct_linears(model.module, module, ctx.calibration, model.inputs, config.batch_size,
                                            config.calibration_batches)
            report["reconstructed"] = {name: round(value, 5) for name, value in residuals.items()}
        ctx.logger.info("prune-structured: MACs %d → %d (%.2fx), params %d → %d", before["macs"], after["macs"],
                        before["macs"] / max(after["macs"], 1), before["params"], after["params"])
        return model.derive(module=module, meta={"reports": [*model.meta.get("reports", []), report]})


def _search_ratio(model: Model, config: PruneStructuredConfig, ctx: Context, source_macs: int) -> tuple[Any, float]:
    """Bisect the channel ratio until the pruned MACs land within MACS_TOLERANCE of the target."""
    low, high = 0.0, 0.95
    best = None
    for _ in range(SEARCH_ROUNDS):
        ratio = (low + high) / 2
        module = _prune(model, config, ctx, ratio)
        fraction = macs.count_macs(module, model.example_inputs) / source_macs
        if best is None or abs(fraction - config.target_macs_ratio) < abs(best[2] - config.target_macs_ratio):
            best = (module, ratio, fraction)
        if abs(fraction - config.target_macs_ratio) <= MACS_TOLERANCE:
            break
        low, high = (ratio, high) if fraction > config.target_macs_ratio else (low, ratio)
    module, ratio, fraction = best
    if abs(fraction - config.target_macs_ratio) > MACS_TOLERANCE:
        ctx.logger.warning("prune-structured: reached MACs ratio %.3f, not %.3f: layers left alone limit it",
                           fraction, config.target_macs_ratio)
    return module, round(ratio, 4)


def _prune(model: Model, config: PruneStructuredConfig, ctx: Context, ratio: float) -> Any:
    """A pruned deep copy of the model's module."""
    tp = _torch_pruning()
    module = copy.deepcopy(model.module).eval()
    examples = tuple(model.example_inputs)
    heads = _attention_heads(module) if config.heads_ratio else {}
    ignored = _ignored_layers(module, examples, config, heads)
    importance = {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn-scale": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[config.importance]()
    with muted_logs("torch_pruning"):
        pruner = tp.pruner.MetaPruner(
            module, examples, importance=importance, global_pruning=config.scope == "global",
            pruning_ratio=ratio, max_pruning_ratio=config.max_layer_ratio, iterative_steps=config.iterative_steps,
            ignored_layers=ignored, round_to=config.round_to if config.round_to > 1 else None,
            num_heads={layer: count for attention, count in heads.items() for layer in _qkv(attention)},
            prune_num_heads=bool(heads), prune_head_dims=not heads, head_pruning_ratio=config.heads_ratio,
            output_transform=lambda result: first_output(result),
        )
        for _ in range(config.iterative_steps):
            if config.importance == "taylor":
                _accumulate_gradients(module, model, config, ctx)
            pruner.step()
    for attention in heads:
        query = attention.query
        attention.num_attention_heads = query.out_features // attention.attention_head_size
        attention.all_head_size = query.out_features
    module.zero_grad(set_to_none=True)
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    return module.eval()


def _accumulate_gradients(module: Any, model: Model, config: PruneStructuredConfig, ctx: Context) -> None:
    """Gradients of the task loss (labels, else the model's own predictions) for taylor importance."""
    import torch

    module.zero_grad(set_to_none=True)
    module.eval()
    for index, (inputs, labels) in enumerate(batches(ctx.calibration, model.inputs, config.batch_size, seed=0)):
        if index == config.calibration_batches:
            break
        output = first_output(module(*inputs))
        if output.ndim == 2 and output.shape[1] > 1 and output.dtype.is_floating_point:
            target = labels if labels is not None and len(labels) == len(output) else output.detach().argmax(dim=1)
            loss = torch.nn.functional.cross_entropy(output, target)
        else:
            loss = output.float().pow(2).mean()
        loss.backward()


def _attention_heads(module: Any) -> dict[Any, int]:
    """Attention modules with query/key/value Linear layers and a head count (Hugging Face BERT-like)."""
    from torch import nn

    found = {}
    for layer in module.modules():
        if all(isinstance(getattr(layer, n, None), nn.Linear) for n in ("query", "key", "value")) \
                and hasattr(layer, "num_attention_heads") and hasattr(layer, "attention_head_size"):
            found[layer] = int(layer.num_attention_heads)
    if not found:
        raise UserError("prune-structured: heads_ratio is set, but the model has no attention with query/key/value "
                        "layers and num_attention_heads (Hugging Face BERT-like); set heads_ratio: 0")
    return found


def _qkv(attention: Any) -> tuple[Any, Any, Any]:
    return attention.query, attention.key, attention.value


def _ignored_layers(module: Any, examples: tuple, config: PruneStructuredConfig, heads: dict[Any, int]) -> list[Any]:
    """Layers whose outputs must keep their width: the output layers, `ignore`, and those outside `layers`."""
    from torch import nn

    names = {name for name, _ in module.named_modules()}
    for pattern in (*config.ignore, *config.layers):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise UserError(f"prune-structured: no layer matches '{pattern}'; layer names look like "
                            f"{', '.join(sorted(n for n in names if n)[:4])} …")
    attention_layers = {id(layer) for attention in heads for layer in _qkv(attention)}
    ignored = list(_output_layers(module, examples))
    for name, layer in module.named_modules():
        if any(fnmatch.fnmatchcase(name, p) for p in config.ignore):
            ignored.append(layer)
        elif (config.layers and isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)) and id(layer) not in attention_layers
              and not any(fnmatch.fnmatchcase(name, p) for p in config.layers)):
            ignored.append(layer)
    return ignored


def _output_layers(module: Any, examples: tuple) -> list[Any]:
    """Leaf modules whose output tensor is returned by the model as it is (the final classifier)."""
    import torch

    produced: dict[int, Any] = {}  # id of a live result tensor → the last layer that made it

    def record(layer: Any, _inputs: tuple, output: Any) -> None:
        produced[id(output)] = layer

    handles = [layer.register_forward_hook(record) for layer in module.modules() if not list(layer.children())]
    try:
        with torch.no_grad():
            result = module(*examples)
    finally:
        for handle in handles:
            handle.remove()
    results = result.values() if isinstance(result, dict) else result if isinstance(result, (tuple, list)) else (result,)
    return [produced[id(tensor)] for tensor in results if id(tensor) in produced]


def _check_outputs(model: Model, module: Any) -> None:
    """Pruning must not change what the model returns: same output shapes as the source."""
    import torch

    with torch.no_grad():
        result = module(*model.example_inputs)
    results = result.values() if isinstance(result, dict) else result if isinstance(result, (tuple, list)) else (result,)
    with torch.no_grad():
        reference = model.module(*model.example_inputs)
    references = (reference.values() if isinstance(reference, dict)
                  else reference if isinstance(reference, (tuple, list)) else (reference,))
    for index, (got, want) in enumerate(zip(results, references)):
        if tuple(got.shape) != tuple(want.shape):
            raise UserError(f"prune-structured changed output {index} from {list(want.shape)} to {list(got.shape)}: "
                            "add the layer that produces it to `ignore`, or restrict `layers`")
