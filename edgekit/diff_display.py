"""Rendering of `edgekit diff`: the layers where a package departs from its source, worst first."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from edgekit.console import out, say
from edgekit.errors import printable
from edgekit.layers import LayerDiff


def _snr(value: float) -> str:
    return "exact" if math.isinf(value) and value > 0 else f"{value:.1f}"


def _cell(text: str | None) -> str:
    """Text from a model (a module path, a tensor name): control characters escaped, brackets not markup."""
    return escape(printable(text or "-"))


def show_diff(diff: LayerDiff, top: int | None) -> None:
    """The `top` worst layers (all when None) and a line on what was compared."""
    shown = diff.layers if top is None else diff.layers[:top]
    table = Table(title=f"edgekit diff: {escape(printable(diff.package))} ({diff.target}, {diff.precision}) "
                        f"vs {escape(printable(diff.source))}")
    numbers = ("#", "SNR dB", "loses dB", "cosine mean", "cosine worst", "max abs")
    for column in ("#", "module", "op", "tensor", "precision", *numbers[1:]):
        table.add_column(column, justify="right" if column in numbers else "left")
    for rank, layer in enumerate(shown, 1):
        snr = _snr(layer.snr_db)
        loss = "-" if layer.loss_db is None else f"{layer.loss_db:.1f}"
        table.add_row(str(rank), _cell(layer.module), _cell(layer.op), _cell(layer.tensor), _cell(layer.precision),
                      f"[red]{snr}[/red]" if layer.snr_db < 20 else snr,
                      f"[red]{loss}[/red]" if layer.loss_db is not None and layer.loss_db > 10 else loss,
                      f"{layer.cosine_mean:.5f}", f"{layer.cosine_worst:.5f}", f"{layer.max_abs:.3g}")
    out.print(table)
    if top is not None and len(diff.layers) > top:
        say(f"… {len(diff.layers) - top} more layers (--all shows them)")
    by_node = f" ({diff.matched_by_node} by node name)" if diff.matched_by_node else ""
    skipped = f", {diff.skipped} left out (not float, or shapes differ)" if diff.skipped else ""
    say(f"{len(diff.layers)} layer outputs compared{by_node}{skipped}; they hold {diff.covered_layers} of the float "
        f"graph's {diff.reference_layers} layers; {diff.samples} samples of {printable(diff.data)}")
    say("SNR: of the layer's output, errors of the layers before it included; loses: its SNR below its inputs' "
        "(what the layer itself adds; - where it reads the model's inputs)")
    steps = " → ".join(diff.reference_steps) or "the source as given"
    say(f"reference: {steps} ({diff.reference_cached}/{len(diff.reference_steps)} from the step cache), "
        f"before {diff.lossy_step or 'no lossy step'}")
    if diff.exposed_cosine_worst is not None and diff.exposed_cosine_worst < 0.999:
        say(f"note: with its layers exposed the package's outputs move from how it ships (worst cosine "
            f"{diff.exposed_cosine_worst:.4f}): ONNX Runtime cannot fuse exposed nodes into its integer kernels")
