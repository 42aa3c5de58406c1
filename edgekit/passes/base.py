"""The Pass interface, the Context passes run in, and the registry of pass names."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edgekit.errors import UserError
from edgekit.model import Format, Model
from edgekit.schema import did_you_mean, to_dict

if TYPE_CHECKING:
    from edgekit.data.dataset import Dataset
    from edgekit.intent import QuantizeIntent
    from edgekit.isa import Isa
    from edgekit.target import Target


@dataclass(frozen=True, slots=True)
class NoConfig:
    """For passes without parameters."""


@dataclass(frozen=True, slots=True)
class Step:
    """One pass invocation: its name and validated Config."""

    pass_name: str
    config: Any

    def to_dict(self) -> dict:
        return {"pass": self.pass_name, "with": to_dict(self.config)}


@dataclass(frozen=True, slots=True)
class Variant:
    """Another configuration of a pass that `--recipe auto` measures beside the target's own."""

    suffix: str  # appended to the candidate's name
    config: Any
    transformer_only: bool = False  # tried only when the graph is MatMul-heavy


class Pass:
    """A stateless transformation. Subclasses set the class attributes and implement run()."""

    name: ClassVar[str]
    accepts: ClassVar[frozenset[Format]]
    produces: ClassVar[Format]
    Config: ClassVar[type] = NoConfig
    version: ClassVar[int] = 1  # bump when the output for the same input and config changes
    tolerance: ClassVar[float | None] = None  # max relative error promised vs the input model
    conversion: ClassVar[bool] = False  # the planner may insert it to change format
    uses_calibration: ClassVar[bool] = False  # its output depends on ctx.calibration
    uses_evaluation: ClassVar[bool] = False  # its output may depend on ctx.evaluation (accuracy-aware choices)
    trains_across_processes: ClassVar[bool] = False  # under torchrun every process runs it and the steps before it
    min_opset: ClassVar[int] = 0  # an ONNX model below it is upgraded first (upgrade-onnx-opset)
    uses_isa: ClassVar[bool] = False  # its output depends on the target's instruction set (kernel-specific choices)
    uses_target: ClassVar[tuple[str, ...]] = ()  # Target fields its output depends on (they join the cache key)

    def run(self, model: Model, config: Any, ctx: Context) -> Model:
        raise NotImplementedError

    def from_intent(self, intent: QuantizeIntent, config: Any) -> dict[str, Any]:
        """The fields of `config` (the target's for this pass) that a recipe's quantize intent sets; a quantizer that
        a target's `quantize:` section names overrides this and refuses what it cannot do (UnsupportedOnTarget)."""
        raise UserError(f"pass {self.name} does not quantize: a target's quantize: entry cannot end with it")

    def variants(self, config: Any, isa: Isa) -> tuple[Variant, ...]:
        """Other configurations worth measuring when `config` is the target's choice (for `--recipe auto`)."""
        return ()

    @classmethod
    def takes_intents(cls) -> bool:
        return cls.from_intent is not Pass.from_intent


class Progress(Protocol):
    """Receives progress of long work: `total` units, then `advance` calls."""

    def start(self, label: str, total: int | None) -> None: ...
    def advance(self, amount: int = 1) -> None: ...
    def finish(self, note: str = "") -> None: ...


class SilentProgress:
    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def finish(self, note: str = "") -> None:
        pass


@dataclass
class Context:
    """What a pass may use besides its model and config: no global state."""

    work_dir: Path
    target: Target | None = None
    calibration: Dataset | None = None
    evaluation: Dataset | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("edgekit"))
    progress: Progress = field(default_factory=SilentProgress)
    source: Model | None = None  # the model as ingested, before any pass (the default distillation teacher)
    checkpoints: Path | None = None  # a folder that outlives the run, keyed by the step's cache identity

    def step_dir(self, name: str) -> Path:
        """A fresh empty folder for one step's output files."""
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


BUILTIN_PASSES: dict[str, str] = {
    "export-onnx": "edgekit.passes.export:ExportOnnx",
    "optimize-onnx": "edgekit.passes.optimize:OptimizeOnnx",
    "upgrade-onnx-opset": "edgekit.passes.opset:UpgradeOnnxOpset",
    "quantize-dynamic": "edgekit.passes.quantize_ort:QuantizeDynamic",
    "quantize-static": "edgekit.passes.quantize_ort:QuantizeStatic",
    "quantize-pt2e": "edgekit.passes.quantize_pt2e:QuantizePt2e",
    "quantize-inc": "edgekit.passes.quantize_inc:QuantizeInc",
    "quantize-int4": "edgekit.passes.quantize_int4:QuantizeInt4",
    "quantize-int4-gptq": "edgekit.passes.quantize_int4:QuantizeInt4Gptq",
    "convert-fp16": "edgekit.passes.convert_fp16:ConvertFp16",
    "build-tensorrt": "edgekit.passes.tensorrt:BuildTensorrt",
    "prune-structured": "edgekit.passes.prune_structured:PruneStructured",
    "prune-unstructured": "edgekit.passes.prune_sparse:PruneUnstructured",
    "prune-nm": "edgekit.passes.prune_sparse:PruneNM",
    "distill": "edgekit.passes.distill:Distill",
    "qat": "edgekit.passes.qat:Qat",
    "convert-openvino": "edgekit.passes.openvino:ConvertOpenvino",
    "compress-fp16-openvino": "edgekit.passes.openvino:CompressFp16Openvino",
    "quantize-nncf": "edgekit.passes.quantize_nncf:QuantizeNncf",
    "compress-weights-nncf": "edgekit.passes.quantize_nncf:CompressWeightsNncf",
    "convert-tflite": "edgekit.passes.tflite:ConvertTflite",
    "quantize-tflite": "edgekit.passes.tflite:QuantizeTflite",
    "tflite-to-onnx": "edgekit.passes.tflite_onnx:TfliteToOnnx",
    "onnx-to-torch": "edgekit.passes.onnx_torch:OnnxToTorch",
    "convert-executorch": "edgekit.passes.executorch:ConvertExecutorch",
    "quantize-executorch": "edgekit.passes.executorch:QuantizeExecutorch",
}


def _registered() -> dict[str, str]:
    """Pass name → import string, built-ins plus the `edgekit.passes` entry points."""
    names = dict(BUILTIN_PASSES)
    for point in entry_points(group="edgekit.passes"):
        if point.name in names:
            raise UserError(
                f"pass '{point.name}' is registered twice: {names[point.name]} and {point.value}"
            )
        names[point.name] = point.value
    return names


def pass_names() -> list[str]:
    """Every registered pass name; imports no pass module."""
    return sorted(_registered())


def get_pass(name: str) -> Pass:
    """The pass registered under `name`."""
    registered = _registered()
    if name not in registered:
        raise UserError(f"unknown pass '{name}'{did_you_mean(name, registered)}; known: {', '.join(sorted(registered))}")
    module_name, _, class_name = registered[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()


def conversions() -> list[Pass]:
    """The passes the planner may insert to change a model's format."""
    found = []
    for name in pass_names():
        candidate = get_pass(name)
        if candidate.conversion:
            found.append(candidate)
    return found


@contextmanager
def muted_logs(*names: str) -> Iterator[None]:
    """Silence chatty third-party loggers (below ERROR) while a backend works."""
    loggers = [logging.getLogger(name if name != "root" else None) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
