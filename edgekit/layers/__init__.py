"""Layer by layer: the numeric gap a package adds at each layer against its source's float graph."""

from edgekit.layers.gap import LayerDiff, LayerGap, diff_layers, layer_gap

__all__ = ["LayerDiff", "LayerGap", "diff_layers", "layer_gap"]
