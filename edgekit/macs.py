"""Count a PyTorch module's multiply-accumulates, parameters and per-layer widths (for pruning reports)."""

from __future__ import annotations

from typing import Any


def count_macs(module: Any, example_inputs: tuple) -> int:
    """MACs of one forward pass on `example_inputs`, over Conv, Linear and attention products.

    Convolutions and Linear layers are counted from their output size (forward hooks);
    `scaled_dot_product_attention` and explicit matmuls are not seen by module hooks, so
    attention score products are left out: for transformers the count covers the projections
    and the MLP, which is what pruning heads and MLP width shrinks.
    """
    import torch
    from torch import nn

    total = [0]

    def conv_hook(layer: nn.modules.conv._ConvNd, _inputs: tuple, output: torch.Tensor) -> None:
        kernel = 1
        for size in layer.kernel_size:
            kernel *= size
        total[0] += output.numel() * (layer.in_channels // layer.groups) * kernel

    def linear_hook(layer: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        total[0] += output.numel() * layer.in_features

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            handles.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


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
