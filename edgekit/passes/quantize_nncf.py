"""quantize-nncf (int8 weights + activations, optional accuracy control) and compress-weights-nncf (weight-only)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from edgekit.errors import FidelityError, MissingBackend, UserError
from edgekit.intent import Budget, QuantizeIntent, granularity_fields
from edgekit.isa import Isa
from edgekit.metrics import auto_metric, sample_score
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, Variant, muted_logs
from edgekit.passes.openvino import ir_result, read_ir, save_ir
from edgekit.schema import did_you_mean

TARGET_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}


def _nncf():
    try:
        import nncf
    except ImportError:
        raise MissingBackend("nncf", "openvino", "NNCF quantization") from None
    return nncf


@contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs through its logger and draws rich progress bars on stdout: keep both out of edgekit's output."""
    with muted_logs("nncf"), redirect_stdout(io.StringIO()):
        yield


@dataclass(frozen=True, slots=True)
class QuantizeNncfConfig:
    preset: Literal["performance", "mixed"] = "performance"  # mixed: asymmetric activations (for ELU/GELU/Swish nets)
    model_type: Literal["none", "transformer"] = "none"  # transformer: keeps LayerNorm/Softmax paths accurate
    fast_bias_correction: bool = True  # False: the slower, more accurate BiasCorrection
    subset_size: int = field(default=300, metadata={"range": (1, 100_000)})
    target_device: Literal["auto", "any", "cpu", "gpu", "npu"] = "auto"  # auto: the target's device
    ignored_names: tuple[str, ...] = ()  # node (friendly) names kept in float
    ignored_types: tuple[str, ...] = ()  # OpenVINO op types kept in float, e.g. MatMul
    # accuracy control, off while max_drop is None: measured against the float IR on the evaluation data
    # (else the calibration data); NNCF reverts the most harmful quantized ops to float until the drop fits
    max_drop: float | None = field(default=None, metadata={"range": (0.0, 1.0)})
    metric: Literal["auto", "top1", "cosine"] = "auto"  # auto: top1 for a labelled classifier, else cosine
    relative: bool = False  # max_drop as a fraction of the float model's metric
    eval_samples: int = field(default=300, metadata={"range": (1, 100_000)})
    budget: Budget | None = None  # mixed precision: each op in int8 or fp32 within the budget (passes/mixed.py)


class QuantizeNncf(Pass):
    name = "quantize-nncf"
    accepts = frozenset({Format.OPENVINO})
    produces = Format.OPENVINO
    Config = QuantizeNncfConfig
    uses_calibration = True
    uses_evaluation = True
    # NNCF's target device; accuracy control and a budget's candidates run with the options
    uses_target = ("device", "runtime", "options", "format")

    def run(self, model: Model, config: QuantizeNncfConfig, ctx: Context) -> Model:
        nncf = _nncf()
        if ctx.calibration is None:
            raise UserError("quantize-nncf needs calibration data: give --calib DATA")
        calibration = ctx.calibration.head(config.subset_size)
        params = dict(
            preset=nncf.QuantizationPreset(config.preset), subset_size=len(calibration),
            fast_bias_correction=config.fast_bias_correction,
            model_type=nncf.ModelType.TRANSFORMER if config.model_type == "transformer" else None,
            target_device=nncf.TargetDevice(_device(config.target_device, ctx)),
            ignored_scope=_ignored_scope(nncf, read_ir(model), config.ignored_names, config.ignored_types),
        )
        if config.budget is not None:
            if config.max_drop is not None:
                raise UserError("quantize-nncf: give max_drop (accuracy control) or budget (mixed precision), not both")
            config.budget.objective()
            return _mixed(nncf, model, config, params, calibration, ctx)
        ctx.progress.start("quantizing (NNCF)", None)
        with _quiet():
            quantized = nncf.quantize(read_ir(model), nncf.Dataset(list(calibration.feeds())), **params)
            report = None
            if config.max_drop is not None:
                quantized, report = _control_accuracy(nncf, model, quantized, params, config, ctx)
        ctx.progress.finish()
        files = save_ir(quantized, ctx.step_dir("quantize-nncf"))
        return ir_result(model, files, precision="int8", **({"fallback": report} if report else {}))

    def from_intent(self, intent: QuantizeIntent, config: QuantizeNncfConfig) -> dict[str, Any]:
        granularity_fields(intent, self.name, {"per-channel": {}})  # NNCF's int8 weights are per channel
        return {"subset_size": intent.calibration_samples} if intent.calibration_samples else {}

    def variants(self, config: QuantizeNncfConfig, isa: Isa) -> tuple[Variant, ...]:
        """NNCF's transformer preset (SmoothQuant, LayerNorm/Softmax kept accurate): MiniLM cosine 0.996 vs 0.63."""
        if config.model_type == "transformer":
            return ()
        return (Variant("transformer", replace(config, preset="mixed", model_type="transformer"), transformer_only=True),)


def _mixed(nncf, model: Model, config: QuantizeNncfConfig, params: dict[str, Any], calibration, ctx: Context) -> Model:
    """The mixed-precision search (passes/mixed.py): candidates quantized with the promoted ops in the ignored scope."""
    from edgekit.passes.mixed import search
    from edgekit.passes.mixed_openvino import OpenvinoLayers

    feeds = list(calibration.feeds())

    def quantize(promoted: list[str], index: int) -> Model:
        scope = _ignored_scope(nncf, read_ir(model), (*config.ignored_names, *promoted), config.ignored_types)
        with _quiet():
            quantized = nncf.quantize(read_ir(model), nncf.Dataset(feeds), **{**params, "ignored_scope": scope})
        return ir_result(model, save_ir(quantized, ctx.step_dir(f"mixed-{index}")), precision="int8")

    chosen, record = search(model, OpenvinoLayers(model, ctx, quantize), config.budget, ctx, base="int8")
    return chosen.derive(meta={"precision_plan": record})


def _device(choice: str, ctx: Context) -> str:
    if choice != "auto":
        return choice.upper()
    if ctx.target is None:
        return "ANY"
    return TARGET_DEVICES.get(ctx.target.device, "ANY")


def _ignored_scope(nncf, ov_model, names: tuple[str, ...], types: tuple[str, ...]):
    """NNCF's IgnoredScope, after checking every name and type exists in the model."""
    if not names and not types:
        return None
    ops = ov_model.get_ordered_ops()
    known_names = {op.get_friendly_name() for op in ops}
    known_types = {op.get_type_name() for op in ops}
    for name in names:
        if name not in known_names:
            raise UserError(f"ignored_names: no node named '{name}' in the model{did_you_mean(name, known_names)}")
    for kind in types:
        if kind not in known_types:
            raise UserError(f"ignored_types: no {kind} op in the model{did_you_mean(kind, known_types)}; "
                            f"it has {', '.join(sorted(known_types))}")
    return nncf.IgnoredScope(names=list(names), types=list(types))


def quantized_ops(ov_model) -> set[str]:
    """Friendly names of the ops fed by a FakeQuantize (the ones that run in int8)."""
    return {op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() != "FakeQuantize"
            and any(value.get_node().get_type_name() == "FakeQuantize" for value in op.input_values())}


def _control_accuracy(nncf, model: Model, quantized, params: dict[str, Any], config: QuantizeNncfConfig,
                      ctx: Context) -> tuple[Any, dict]:
    """Keep `quantized` if its drop fits `max_drop`; else NNCF's accuracy control reverts ops to float."""
    from edgekit.runtime.openvino import compile_for

    here = ctx.target is not None and ctx.target.runtime == "openvino" and ctx.target.availability() is None
    options = ctx.target.options if here else {}  # a device absent here: judged on this CPU
    evaluation = (ctx.evaluation or ctx.calibration).head(config.eval_samples)
    feeds = list(evaluation.feeds())
    float_model = compile_for(read_ir(model), options)  # measured as the package will run
    reference = [float_model(feed)[0] for feed in feeds]
    labels = [None] * len(feeds) if evaluation.labels is None else list(evaluation.labels)
    metric = auto_metric(reference[0], evaluation.labels is not None) if config.metric == "auto" else config.metric
    items = list(zip(feeds, reference, labels))

    def validate(compiled, data) -> tuple[float, list[float]]:
        values = [sample_score(metric, wanted, compiled(feed)[0], label) for feed, wanted, label in data]
        return float(np.mean(values)), values

    def drop(value: float) -> float:
        lost = base - value
        return lost / abs(base) if config.relative and base else lost

    base = validate(float_model, items)[0]
    first = validate(compile_for(quantized, options), items)[0]
    report = {"method": "nncf.quantize_with_accuracy_control", "metric": metric, "limit": config.max_drop,
              "relative": config.relative, "reference": base, "quantized_value": first, "value": first, "ok": True,
              "reverted": [], "data": evaluation.origin}
    if drop(first) <= config.max_drop:
        return quantized, report
    ctx.logger.info("quantize-nncf: %s dropped by %.4f (over %s); reverting the most harmful ops to float",
                    metric, drop(first), config.max_drop)
    restored = nncf.quantize_with_accuracy_control(
        read_ir(model), nncf.Dataset(list(ctx.calibration.head(params["subset_size"]).feeds())),
        nncf.Dataset(items), validation_fn=validate, max_drop=config.max_drop,
        drop_type=nncf.DropType.RELATIVE if config.relative else nncf.DropType.ABSOLUTE, **params)
    final = validate(compile_for(restored, options), items)[0]
    kinds = {op.get_friendly_name(): op.get_type_name() for op in quantized.get_ordered_ops()}
    reverted = sorted(quantized_ops(quantized) - quantized_ops(restored))
    if drop(final) > config.max_drop:
        raise FidelityError(
            f"quantize-nncf: even with {len(reverted)} ops back in float, {metric} dropped by {drop(final):.4f} "
            f"(from {base:.4f} to {final:.4f}), over max_drop {config.max_drop}; this model does not take int8 well"
        )
    ctx.logger.warning("quantize-nncf: kept in float %s; %s %.4f → %.4f (float %.4f)", ", ".join(reverted) or "nothing",
                    metric, first, final, base)
    # NNCF does not expose what each reverted op cost, only the metric before and after
    return restored, {**report, "value": final, "reverted": [{"node": name, "op_type": kinds[name]} for name in reverted]}


@dataclass(frozen=True, slots=True)
class CompressWeightsNncfConfig:
    mode: Literal["int8_asym", "int8_sym", "int4_sym", "int4_asym"] = "int8_asym"
    ratio: float = field(default=1.0, metadata={"range": (0.0, 1.0)})  # int4: share of weights in int4, the rest int8
    group_size: int = field(default=128, metadata={"range": (-1, 4096)})  # int4: weights per scale; -1 per channel
    all_layers: bool = False  # int4: also the embeddings and last layer (kept int8 by default)
    ignored_names: tuple[str, ...] = ()
    ignored_types: tuple[str, ...] = ()


class CompressWeightsNncf(Pass):
    """Weight-only compression: weights stored in int8/int4, decompressed on the fly; activations stay float."""

    name = "compress-weights-nncf"
    accepts = frozenset({Format.OPENVINO})
    produces = Format.OPENVINO
    Config = CompressWeightsNncfConfig

    def run(self, model: Model, config: CompressWeightsNncfConfig, ctx: Context) -> Model:
        nncf = _nncf()
        if config.group_size == 0:
            raise UserError("compress-weights-nncf: group_size 0 is invalid; use -1 (per channel) or a positive size")
        ov_model = read_ir(model)
        extra: dict[str, Any] = {}
        if config.mode.startswith("int4"):
            extra = {"ratio": config.ratio, "group_size": config.group_size, "all_layers": config.all_layers}
        with _quiet():
            compressed = nncf.compress_weights(
                ov_model, mode=nncf.CompressWeightsMode(config.mode),
                ignored_scope=_ignored_scope(nncf, ov_model, config.ignored_names, config.ignored_types), **extra)
        files = save_ir(compressed, ctx.step_dir("compress-weights-nncf"))
        return ir_result(model, files, precision=config.mode[:4])

    def from_intent(self, intent: QuantizeIntent, config: CompressWeightsNncfConfig) -> dict[str, Any]:
        if config.mode.startswith("int8"):  # NNCF's int8 weights are per channel
            return granularity_fields(intent, self.name, {"per-channel": {}})
        return granularity_fields(intent, self.name, {"per-group": {"group_size": intent.group_size or config.group_size},
                                                      "per-channel": {"group_size": -1}})
