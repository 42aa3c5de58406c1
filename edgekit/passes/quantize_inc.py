"""quantize-inc: Intel Neural Compressor 3.x (`neural_compressor.torch`) on a PyTorch module.

Methods: weight-only `rtn`, `gptq`, `awq` (int4/int8 weights in groups, float activations)
and `static` (int8 weights and activations through INC's PT2E path). With `tolerance`, INC's
autotune tries candidate configs (the given one, then finer groups, then 8 bits) and keeps
the first whose relative loss of edgekit's metric (cosine to the float model on the
evaluation data) is within it.

Weight-only modules keep packed int weights only in PyTorch; the ONNX exporter folds them
back into float weights (int4 accuracy, fp32 size and speed). A target that runs a file
format therefore refuses weight-only output unless `export_dequantized: true`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from edgekit.errors import MissingBackend, UnsupportedOnTarget, UserError
from edgekit.metrics import sample_score
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs
from edgekit.passes.pt2e import calibrate
from edgekit.passes.quantize_pt2e import export_program

WEIGHT_ONLY = ("rtn", "gptq", "awq")
TUNING_FEEDS = 32


@dataclass(frozen=True, slots=True)
class QuantizeIncConfig:
    method: Literal["rtn", "gptq", "awq", "static"] = "rtn"
    bits: Literal[4, 8] = 4  # weight-only bits (static is always int8)
    group_size: int = field(default=32, metadata={"range": (-1, 8192)})  # -1: one group per output channel
    symmetric: bool = True
    activation_type: Literal["int8", "uint8"] = "int8"  # static only; int8 suits ONNX Runtime on AVX2
    calibration_samples: int = field(default=128, metadata={"range": (1, 100_000)})  # gptq, awq, static
    tolerance: float | None = field(default=None, metadata={"range": (0.0, 1.0)})  # autotune: max relative loss
    export_dequantized: bool = False  # let weight-only output reach ONNX/IR targets as float weights


def _inc():
    try:
        from neural_compressor.torch import quantization
    except ImportError as error:
        raise MissingBackend("neural-compressor[pt]", "inc", f"Intel Neural Compressor ({error.name} is missing)") from None
    return quantization


def inc_config(config: QuantizeIncConfig, work_dir: str) -> Any:
    """The INC config object for one edgekit config (`work_dir`: an existing folder INC's GPTQ insists on)."""
    q = _inc()
    if config.method == "static":
        return q.StaticQuantConfig(act_dtype=config.activation_type, act_sym=False, w_dtype="int8", w_sym=True)
    common = {"bits": config.bits, "group_size": config.group_size, "use_sym": config.symmetric}
    if config.method == "rtn":
        return q.RTNConfig(use_layer_wise=False, **common)
    if config.method == "gptq":
        return q.GPTQConfig(use_layer_wise=False, model_path=work_dir, **common)  # "" makes INC try a download
    return q.AWQConfig(**common)


def candidates(config: QuantizeIncConfig) -> list[QuantizeIncConfig]:
    """What autotune tries, most compressed first: the config, finer groups, then 8-bit weights."""
    if config.method == "static":
        return [config, replace(config, symmetric=not config.symmetric)]
    found = [config]
    group = config.group_size
    while group > 32:
        group //= 2
        found.append(replace(config, group_size=group))
    if config.bits == 4:
        found.append(replace(config, bits=8, group_size=-1))
    return found


class QuantizeInc(Pass):
    name = "quantize-inc"
    accepts = frozenset({Format.TORCH, Format.EXPORTED})
    produces = Format.EXPORTED
    Config = QuantizeIncConfig
    uses_calibration = True
    uses_evaluation = True
    uses_target = ("format",)  # weight-only methods refuse (or export dequantized) for file-format targets

    def run(self, model: Model, config: QuantizeIncConfig, ctx: Context) -> Model:
        _check_target(config, ctx)
        q = _inc()
        float_module = model.module.module() if model.format is Format.EXPORTED else model.module

        def quantize_with(chosen: Any) -> Any:
            return _quantize(q, float_module, chosen, config, model, ctx)

        chosen = config
        with muted_logs("neural_compressor", "torch.export", "torchao", "root"):
            if config.tolerance is None:
                quantized = quantize_with(inc_config(config, str(ctx.work_dir)))
            else:
                quantized, chosen = _autotune(q, quantize_with, float_module, config, model, ctx)
            _recover_weights(quantized, model)
            program = export_program(model, quantized)
        bits = 8 if chosen.method == "static" else chosen.bits
        precision = f"int{bits}" if chosen.method == "static" else f"int{bits}-weights"
        if chosen.method in WEIGHT_ONLY and not _runs_torch(ctx):
            precision = "fp32"  # what the exported file holds; the weights are int-rounded floats
        return model.derive(format=Format.EXPORTED, module=program, files=(), example_inputs=model.example_inputs,
                            meta={"precision": precision, "inc": {"method": chosen.method, "bits": bits,
                                                                  "group_size": chosen.group_size, "symmetric": chosen.symmetric}})


def _runs_torch(ctx: Context) -> bool:
    return ctx.target is None or ctx.target.format.in_memory


def _check_target(config: QuantizeIncConfig, ctx: Context) -> None:
    if config.method in WEIGHT_ONLY and not _runs_torch(ctx) and not config.export_dequantized:
        raise UnsupportedOnTarget(
            f"quantize-inc {config.method}: target {ctx.target.name} runs {ctx.target.format.value} files, and exporting "
            "INC's weight-only modules folds their int weights back into float (no size or speed gain); use "
            "the target's own int4 weight pass, or set export_dequantized: true to keep only the accuracy effect"
        )


def _quantize(q: Any, float_module: Any, chosen: Any, config: QuantizeIncConfig, model: Model, ctx: Context) -> Any:
    """One INC prepare → calibrate → convert on a copy of the float module."""
    examples = tuple(model.example_inputs or ())
    if config.method == "rtn":
        return q.convert(q.prepare(copy.deepcopy(float_module), chosen))
    if config.method == "static":
        from neural_compressor.torch.export import export

        shapes = tuple({axis: _dynamic() for axis, dim in enumerate(spec.shape) if isinstance(dim, str)} or None
                       for spec in model.inputs)
        module = export(copy.deepcopy(float_module), examples, dynamic_shapes=shapes)
    else:
        module = copy.deepcopy(float_module)
    example_inputs = _awq_examples(examples) if config.method == "awq" else examples
    try:
        prepared = q.prepare(module, chosen, example_inputs=example_inputs)
    except IndexError as error:  # INC's static path is torchao's x86 quantizer, which fails on BERT graphs
        raise UnsupportedOnTarget(f"quantize-inc {config.method}: INC cannot annotate this graph (IndexError: {error}); "
                                  "use quantize-dynamic or quantize-static on ONNX, or quantize-nncf") from None
    calibrate(prepared, model, ctx, config.calibration_samples, "quantize-inc")
    return q.convert(prepared)


def _awq_examples(examples: tuple) -> Any:
    """AWQ moves its example inputs with `.to(device)`: a tensor, not a tuple."""
    if len(examples) != 1:
        raise UnsupportedOnTarget("quantize-inc awq: INC's AWQ takes models with one input; use rtn or gptq")
    return examples[0]


def _recover_weights(quantized: Any, model: Model) -> None:
    """Run once: INC weight-only modules unpack (with numpy, which torch.export cannot trace) and cache float weights."""
    import torch

    with torch.no_grad():
        quantized(*tuple(model.example_inputs or ()))


def _dynamic() -> Any:
    import torch

    return torch.export.Dim.DYNAMIC


def _autotune(q: Any, quantize_with: Any, float_module: Any, config: QuantizeIncConfig, model: Model,
              ctx: Context) -> tuple[Any, QuantizeIncConfig]:
    """INC's autotune over `candidates(config)`, scored by cosine to the float model on the evaluation data."""
    import numpy as np
    import torch

    data = ctx.evaluation or ctx.calibration
    if data is None:
        raise UserError("quantize-inc with tolerance needs evaluation data: give --eval DATA")
    feeds = [[torch.from_numpy(np.require(feed[spec.name], requirements="C")) for spec in model.inputs]
             for feed in data.feeds(TUNING_FEEDS)]
    with torch.no_grad():
        reference = [_flat(float_module(*feed)) for feed in feeds]

    def cosine(module: Any) -> float:
        with torch.no_grad():
            got = [_flat(module(*feed)) for feed in feeds]
        return float(np.mean([sample_score("cosine", want[None], have[None]) for want, have in zip(reference, got)]))

    tried = candidates(config)
    configs = [inc_config(c, str(ctx.work_dir)) for c in tried]
    scores: dict[int, float] = {}

    def evaluate(module: Any) -> float:  # INC calls it on the float model first, then on each trial
        scores[len(scores)] = cosine(module)
        return scores[len(scores) - 1]

    tuning = q.TuningConfig(config_set=configs, tolerable_loss=config.tolerance, max_trials=len(configs))
    run = (lambda prepared: calibrate(prepared, model, ctx, config.calibration_samples, "quantize-inc")) if config.method != "rtn" else None
    if config.method == "static":  # autotune cannot export; tune by hand over the same candidates
        for candidate in tried:
            quantized = quantize_with(inc_config(candidate, str(ctx.work_dir)))
            if 1.0 - cosine(quantized) <= config.tolerance:
                return quantized, candidate
        raise UserError(f"quantize-inc static: no candidate kept cosine within {config.tolerance} of the float model")
    best = q.autotune(copy.deepcopy(float_module), tune_config=tuning, eval_fn=evaluate, run_fn=run,
                      example_inputs=tuple(model.example_inputs or ()))
    index = _winner(scores, config.tolerance)
    if best is None or index is None:
        raise UserError(f"quantize-inc {config.method}: no candidate kept cosine within {config.tolerance} of the float model "
                        f"(tried {len(configs)}; best {max(list(scores.values())[1:], default=0.0):.4f})")
    return best, tried[index]


def _winner(scores: dict[int, float], tolerance: float) -> int | None:
    """The first trial (scores[0] is the float baseline) within tolerance, as an index into the candidates."""
    for trial in range(1, len(scores)):
        if 1.0 - scores[trial] <= tolerance:
            return trial - 1
    return None


def _flat(result: Any) -> Any:
    if isinstance(result, (tuple, list)):
        result = result[0]
    return result.detach().cpu().numpy().reshape(-1).astype("float64")
