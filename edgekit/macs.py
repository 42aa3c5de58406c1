"""Count a PyTorch module's multiply-accumulates, parameters and per-layer widths (for pruning reports)."""

from __future__ import annotations

from typing import Any


def count_macs(module: Any, example_inputs: tuple) -> int:
    """MACs of one forward pass on `example_inputs`: PyTorch's FlopCounterMode (convolutions, matmuls, linear
    layers and attention products, each counted as 2 FLOPs per multiply-accumulate) halved."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    # the CPU's fused attention kernel is missing from PyTorch's registry (it has the CUDA ones)
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention})
    with torch.no_grad(), counter:
        module(*example_inputs)
    return counter.get_total_flops() // 2


def count_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def param_bytes(module: Any) -> int:
    """Bytes of the parameters and buffers: what a dense fp32 file of the weights holds."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def layer_widths(module: Any) -> dict[str, list[int]]:
    """Per Conv / Linear layer: [input channels, output channels]."""
    from torch import nn

    widths = {}
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            widths[name] = [layer.in_channels, layer.out_channels]
        elif isinstance(layer, nn.Linear):
            widths[name] = [layer.in_features, layer.out_features]
    return widths


def summary(module: Any, example_inputs: tuple) -> dict[str, Any]:
    """Params, MACs, weight bytes and per-layer widths in one dict."""
    return {"params": count_params(module), "macs": count_macs(module, example_inputs),
            "bytes": param_bytes(module), "widths": layer_widths(module)}


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A report of two summaries: totals with their ratios, and only the layers whose width changed."""
    changed = {name: {"before": width, "after": after["widths"].get(name)}
               for name, width in before["widths"].items() if after["widths"].get(name) != width}
    report: dict[str, Any] = {}
    for key in ("params", "macs", "bytes"):
        report[f"{key}_before"] = before[key]
        report[f"{key}_after"] = after[key]
        report[f"{key}_ratio"] = round(after[key] / before[key], 4) if before[key] else None
    report["layers"] = changed
    return report
