"""qat: quantization-aware training. The model's Linear and Conv layers get int8 fake quantization mirroring what the
target's int8 quantizer will do (weights per-channel symmetric, inputs per-tensor from min/max observers), the model is
fine-tuned against its fp32 teacher by distill's loop (data, evaluation, checkpoints, torchrun), and the fake
quantization is removed again: a plain float module comes out whose weights lie on that per-channel int8 grid, so the
target's own `quantize: {precision: int8, scheme: static}` lowers it like any float model and keeps them exactly.

Eager fake quantization (torch.fake_quantize_per_channel_affine as a torch.nn.utils.parametrize parametrization of
each weight; a torch.ao.quantization FakeQuantize with a min/max observer in a forward pre-hook on each input) rather
than PT2E's prepare_qat_pt2e: it works on any nn.Module (PT2E export of transformers' BERT fails), keeps the module's
own structure and parameter names, and strips without mapping a graph's parameters back to the module."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from edgekit.data import Dataset
from edgekit.errors import UserError
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass
from edgekit.passes.distill import TrainingConfig, train_student, training_setup
from edgekit.training import batches

INPUT_QUANT = "input_fake_quant"  # the submodule a quantized layer holds while training


@dataclass(frozen=True, slots=True)
class QatConfig(TrainingConfig):
    """distill's training fields with fine-tuning defaults (MSE to the teacher's outputs, a few hundred steps at a
    low rate), plus the fake quantization's scheme; `auto` follows the target's int8/static quantizer."""

    kl_weight: float = field(default=0.0, metadata={"range": (0.0, 1e4)})
    mse_weight: float = field(default=1.0, metadata={"range": (0.0, 1e4)})
    lr: float = field(default=2e-5, metadata={"range": (1e-9, 10.0)})
    steps: int = field(default=300, metadata={"range": (0, 10_000_000)})
    batch_size: int = field(default=8, metadata={"range": (1, 65_536)})
    eval_every: int = field(default=100, metadata={"range": (0, 10_000_000)})
    eval_samples: int = field(default=256, metadata={"range": (1, 10_000_000)})
    checkpoint_every: int = field(default=100, metadata={"range": (0, 10_000_000)})
    weight_bits: Literal["auto", 8, 7] = "auto"  # auto: 7 where ORT's quantizer reduces the range (x86 without VNNI)
    activations: Literal["auto", "asymmetric", "symmetric"] = "auto"  # auto: as the target's quantizer calibrates
    calibration_batches: int = field(default=16, metadata={"range": (1, 100_000)})  # set the input ranges before training


@dataclass(frozen=True, slots=True)
class Scheme:
    """The int8 scheme fake quantization simulates."""

    weight_max: int  # weights on the grid {-weight_max … weight_max} × per-channel scale (absmax / weight_max)
    symmetric_activations: bool
    why: str

    def record(self) -> dict[str, Any]:
        return {"weights": f"per-channel symmetric [-{self.weight_max}, {self.weight_max}]",
                "activations": "per-tensor " + ("symmetric [-128, 127]" if self.symmetric_activations
                                                else "asymmetric [0, 255]") + ", min/max of the training data",
                "why": self.why}


class Qat(Pass):
    name = "qat"
    accepts = frozenset({Format.TORCH})
    produces = Format.TORCH
    Config = QatConfig
    uses_calibration = True
    uses_evaluation = True
    uses_isa = True  # ORT's 7-bit weights depend on it
    uses_target = ("quantize",)  # the int8/static quantizer it mirrors
    trains_across_processes = True

    def run(self, model: Model, config: QatConfig, ctx: Context) -> Model:
        teacher, data, device = training_setup(self.name, model, config, ctx)
        scheme = target_scheme(config, ctx)
        student = copy.deepcopy(model.module)
        layers = prepare(student, scheme)
        if not layers:
            raise UserError("qat: the model has no Linear or Conv layer to quantize")
        ctx.logger.info("qat: fake int8 on %d Linear/Conv layers (weights %s; inputs %s)", len(layers),
                        *list(scheme.record().values())[:2])
        calibrate(student.to(device), data, model, config, device)
        trained, report = train_student(self.name, teacher, _student_class()(student), data, model, config, ctx,
                                        device, label="quantization-aware training", score_first=True)
        strip(layers)
        evaluations = report.get("evaluations") or []
        report |= {"scheme": scheme.record(), "layers": len(layers),
                   "fake_quant_fidelity": {"before": report.pop("initial", None),
                                           "after": evaluations[-1] if evaluations else None}}
        return model.derive(module=trained.module.to("cpu").eval(),
                            meta={"reports": [*model.meta.get("reports", []), report]})


def target_scheme(config: QatConfig, ctx: Context) -> Scheme:
    """The scheme of the target's int8/static quantizer, where the config leaves it to `auto`: ORT's quantize-static
    takes 7-bit weights (reduce_range) and symmetric activations as its own config and the ISA decide; NNCF's
    performance preset quantizes activations symmetrically, its mixed preset asymmetrically."""
    steps = ctx.target.quantize.get("int8/static") if ctx.target is not None else None
    last = steps[-1] if steps else None
    reduced, symmetric, why = False, False, "no target: 8-bit weights, asymmetric activations"
    if last is not None and last.pass_name == "quantize-static":
        from edgekit.passes.quantize_ort import isa_choice

        isa, chosen = ctx.target.instruction_set, last.config
        activation = isa_choice(isa)["activation_type"] if chosen.activation_type == "auto" else chosen.activation_type
        saturates = activation == "uint8" and isa.arch == "x86-64" and not isa.int8_dot
        reduced = saturates if chosen.reduce_range is None else chosen.reduce_range
        symmetric = chosen.symmetric_activations
        why = f"target {ctx.target.name}: quantize-static on {isa.name}" + (" (7-bit weights)" if reduced else "")
    elif last is not None and last.pass_name == "quantize-nncf":
        symmetric = last.config.preset == "performance"
        why = f"target {ctx.target.name}: quantize-nncf, {last.config.preset} preset"
    elif last is not None:
        why = f"target {ctx.target.name}: {last.pass_name}, 8-bit weights, asymmetric activations"
    if config.weight_bits != "auto":
        reduced, why = config.weight_bits == 7, f"{why}; weight_bits {config.weight_bits} set"
    if config.activations != "auto":
        symmetric, why = config.activations == "symmetric", f"{why}; activations {config.activations} set"
    return Scheme(64 if reduced else 127, symmetric, why)  # ORT's 7-bit symmetric range is [-64, 64]


def prepare(module: Any, scheme: Scheme) -> list[tuple[Any, Any]]:
    """Attach fake quantization to every Linear and Conv1d/2d/3d of `module` (in place); (layer, input hook) of each."""
    import torch
    from torch.ao.quantization import FakeQuantize, MinMaxObserver
    from torch.nn.utils import parametrize

    layers = [layer for layer in module.modules()
              if type(layer) in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)]
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", _weight_class()(scheme.weight_max))
        signed = scheme.symmetric_activations
        layer.add_module(INPUT_QUANT, FakeQuantize(MinMaxObserver, quant_min=-128 if signed else 0,
                                                   quant_max=127 if signed else 255,
                                                   dtype=torch.qint8 if signed else torch.quint8,
                                                   qscheme=torch.per_tensor_symmetric if signed else torch.per_tensor_affine))
    return [(layer, layer.register_forward_pre_hook(_quantize_input)) for layer in layers]


def _quantize_input(layer: Any, args: tuple) -> tuple:
    """Fake-quantize a layer's input; its observer learns the range in training mode only (not while scoring)."""
    quant = getattr(layer, INPUT_QUANT)
    quant.enable_observer(quant.training)
    value = args[0]
    return (quant(value.float()).to(value.dtype), *args[1:])


@functools.cache
def _weight_class() -> type:
    """WeightFakeQuant, defined on first use so importing this module loads no torch."""
    import torch

    class WeightFakeQuant(torch.nn.Module):
        """A weight parametrization: the weight rounded to its per-channel symmetric grid, the scale its current absmax
        over `weight_max` (what ORT and NNCF compute from it), the gradient passed straight through. No observer:
        an observer's running range would leave a stale scale, and its bookkeeping cost as much as the layer."""

        def __init__(self, weight_max: int) -> None:
            super().__init__()
            self.weight_max = weight_max
            self.enabled = True

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            if not self.enabled:
                return weight
            absmax = weight.detach().abs().amax(dim=tuple(range(1, weight.dim()))).float()
            scale = absmax.clamp_min(torch.finfo(torch.float32).eps) / self.weight_max
            zero = torch.zeros_like(scale, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -self.weight_max, self.weight_max)

    return WeightFakeQuant


@functools.cache
def _student_class() -> type:
    """QatStudent, defined on first use so importing this module loads no torch."""
    import torch

    class QatStudent(torch.nn.Module):
        """The fake-quantized model as the training loop sees it: training mode reaches only the input observers, so
        batch norms keep their running statistics and dropout stays off (the teacher's inference behaviour), and only
        the weights and the input ranges learn."""

        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def train(self, mode: bool = True) -> QatStudent:
            self.training = mode
            self.module.eval()
            for layer in self.module.modules():
                if hasattr(layer, INPUT_QUANT):
                    getattr(layer, INPUT_QUANT).train(mode)
            return self

        def forward(self, *args: Any) -> Any:
            return self.module(*args)

    return QatStudent


def calibrate(module: Any, data: Dataset, model: Model, config: QatConfig, device: Any) -> None:
    """Set the input ranges from the float model's activations on the first batches (as PTQ calibrates), then turn the
    fake quantization on: the model starts training as the PTQ result it improves on."""
    import torch
    from torch.ao.quantization import disable_fake_quant, enable_fake_quant

    weights = [layer.parametrizations.weight[0] for layer in module.modules() if hasattr(layer, INPUT_QUANT)]
    module.eval().apply(disable_fake_quant)
    for layer in module.modules():
        if hasattr(layer, INPUT_QUANT):
            getattr(layer, INPUT_QUANT).train()
    for weight in weights:
        weight.enabled = False
    with torch.no_grad():
        for count, (inputs, _) in enumerate(batches(data, model.inputs, config.batch_size, seed=None, drop_last=False)):
            if count == config.calibration_batches:
                break
            module(*[tensor.to(device) for tensor in inputs])
    module.apply(enable_fake_quant)
    for weight in weights:
        weight.enabled = True


def strip(prepared: list[tuple[Any, Any]]) -> None:
    """Remove what `prepare` attached (in place): each weight keeps its fake-quantized value, on the int8 grid."""
    from torch.nn.utils import parametrize

    for layer, hook in prepared:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        hook.remove()
        delattr(layer, INPUT_QUANT)
