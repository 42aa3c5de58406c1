"""Score a model against its source: fidelity (cosine, errors, top-1 agreement) and task accuracy."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import EdgekitError, FidelityError, PassFailed, gist
from edgekit.instruments import Instrument
from edgekit.metrics import QUANTIZED_MIN_COSINE, compare, executed_tolerance
from edgekit.model import Format, Model
from edgekit.runtime import BACKENDS

if TYPE_CHECKING:
    from edgekit.target import Target

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]

# which runtime backend runs a model file of each format
RUNTIME_OF_FORMAT = {Format(backend.format): name for name, backend in BACKENDS.items()}


def runner_for(model: Model, threads: int | None = None, target: Target | None = None) -> Runner:
    """A function feed → outputs (in the order of `model.outputs`) for any model format.

    A model in the format `target` runs is opened with the target's options — measured the way
    the package will run; any other file opens with its runtime's exact defaults (f32 OpenVINO).
    The runner's `precision` attribute says what the runtime computes in.
    """
    if model.format.in_memory:
        return _torch_runner(model)
    from edgekit.runtime import open_model

    options = target.options if target is not None and target.format is model.format else {}
    session = open_model(RUNTIME_OF_FORMAT[model.format], model.files, model.inputs, model.outputs, options, threads)

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(session.run(feed).values())

    run.precision = session.execution_precision  # type: ignore[attr-defined]
    return run


def execution_precision(run: Runner) -> str:
    return getattr(run, "precision", "fp32")


def _torch_runner(model: Model) -> Runner:
    import torch

    module = model.module.module() if model.format is Format.EXPORTED else model.module

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.require(feed[spec.name], requirements="C")) for spec in model.inputs]
        with torch.no_grad():
            result = module(*tensors)
        if isinstance(result, dict):
            result = tuple(result.values())
        results = result if isinstance(result, (tuple, list)) else (result,)
        return [r.detach().cpu().numpy() for r in results]

    return run


def collect(run: Runner, feeds: Iterable[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    return [run(feed) for feed in feeds]


FIDELITY_FEEDS = 8  # samples of the evaluation data every step's fidelity is measured on
# An fp32 step over its tolerance is judged again against the model's `float_noise` (edgekit.conditioning): its fp32
# outputs' distance from the same graph in float64. Runtimes' fast kernels (MLAS's and XNNPACK's tanh/exp/sigmoid
# approximations, reordered sums) stray up to this many times farther than PyTorch's fp32 (measured on magika:
# ONNX Runtime 8.5x, LiteRT 8.8x), so two correct fp32 implementations may differ by that much.
NOISE_MARGIN = 16


def _produced(pass_name: str, model: Model, target: Target | None,
              feeds: list[dict[str, np.ndarray]] | None) -> tuple[list[list[np.ndarray]], str]:
    """A step's output opened (and run on `feeds`, if given); a model its runtime refuses or fails on is the
    pass's error, naming the runtime's complaint."""
    try:
        run = runner_for(model, target=target)
        return (collect(run, feeds) if feeds else []), execution_precision(run)
    except EdgekitError:
        raise
    except Exception as error:  # the runtime's own parse/validation error names the node
        refusal = RuntimeError(f"produced a model {RUNTIME_OF_FORMAT.get(model.format, 'torch')} refuses: {gist(error)}")
        raise PassFailed(pass_name, refusal) from None


class FidelityCheck(Instrument):
    """Instrument: a step whose pass promises a tolerance must keep outputs within it.

    Models are opened as the target runs them (`runner_for`), and the tolerance follows the
    float precision the runtime actually executed.
    """

    def __init__(self, feeds: list[dict[str, np.ndarray]], target: Target | None = None) -> None:
        self.feeds = feeds
        self.target = target
        self._last: tuple[Model, list[list[np.ndarray]], str] | None = None  # the last checked output: the next step's input
        self._noise: float | None = None  # the computed function's fp32 rounding noise, probed when a step needs it

    def _float_noise(self, *models: Model) -> float | None:
        """The fp32 rounding noise of the function the steps compute, probed once on the first model that allows it."""
        from edgekit.conditioning import float_noise

        if self._noise is None:
            for model in models:
                self._noise = float_noise(model, self.feeds)
                if self._noise is not None:
                    break
        return self._noise

    def _outputs(self, model: Model) -> tuple[list[list[np.ndarray]], str]:
        if self._last is not None and self._last[0] is model:
            return self._last[1], self._last[2]
        run = runner_for(model, target=self.target)
        return collect(run, self.feeds), execution_precision(run)

    def after_step(self, step, before: Model, after: Model, record) -> None:  # type: ignore[override]
        from edgekit.passes.base import get_pass

        tolerance = get_pass(step.step.pass_name).tolerance
        if not self.feeds:  # a cached step is measured too: its manifest entry must not lose the figures
            return
        produced, precision = _produced(step.step.pass_name, after, self.target, self.feeds if tolerance else None)
        if tolerance is None:
            return
        reference, reference_precision = self._outputs(before)
        metrics = compare(reference, produced)
        self._last = (after, produced, precision)
        metrics["executed_precision"] = precision
        record.details["fidelity"] = metrics
        if str(before.meta.get("precision", "fp32")).startswith("int"):
            # converting a quantized model swaps PyTorch's float emulation of Q/DQ for the runtime's integer
            # kernels (their rounding differs): require the outputs' direction, which a wrong graph loses
            if metrics["cosine_min"] < QUANTIZED_MIN_COSINE:
                raise FidelityError(
                    f"step '{step.step.pass_name}' turned the quantized model's outputs by cosine {metrics['cosine_min']:.4f}, "
                    f"under {QUANTIZED_MIN_COSINE}: the result would be wrong"
                )
            return
        allowed = executed_tolerance(tolerance, precision, reference_precision)
        noise = None
        if metrics["max_rel"] > allowed and precision == reference_precision == "fp32":
            noise = self._float_noise(after, before)
            if noise:
                metrics["float_noise"] = noise
                allowed = max(allowed, NOISE_MARGIN * noise)
        if metrics["max_rel"] > allowed:
            why = f", {NOISE_MARGIN}x the model's fp32 rounding noise {noise:.1e}" if noise else ""
            raise FidelityError(
                f"step '{step.step.pass_name}' changed the outputs by {metrics['max_rel']:.2e} relative "
                f"(max abs {metrics['max_abs']:.2e}, run in {precision}), over its tolerance {allowed:.0e}{why}: "
                "the result would be wrong"
            )
