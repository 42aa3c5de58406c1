"""LiteRT backend: a .tflite model on the LiteRT interpreter (ai-edge-litert, or tflite-runtime), XNNPACK on the CPU."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from edgekit.errors import MissingBackend, UnsupportedOnTarget, UserError
from edgekit.runtime.session import Session
from edgekit.spec import TensorSpec

PACKAGE = "ai-edge-litert"
EXTRA = "runtime-litert"  # what loading needs; compiling needs edgekit[tflite]


@dataclass(frozen=True, slots=True)
class Options:
    """LiteRT takes no target options (threads come from the caller)."""
SIGNATURE_PREFIX = "serving_default_"


def interpreter_class():
    """LiteRT's Interpreter, or tflite-runtime's where that is what is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise MissingBackend(PACKAGE, EXTRA, "LiteRT (.tflite) packages") from None
    return Interpreter


def probe(options: dict) -> str | None:
    """None when a LiteRT interpreter can be imported here, else the pip command that adds it."""
    try:
        interpreter_class()
    except MissingBackend as missing:
        return str(missing)
    return None


@dataclass(frozen=True, slots=True)
class Port:
    """One model input or output: its tensor index and, for int8/uint8 tensors, its quantization."""

    index: int
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"


def _port(detail: dict) -> Port:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return Port(int(detail["index"]), np.dtype(detail["dtype"]), float(scale), int(zero_point))


def detail_names(detail: dict) -> set[str]:
    """The names a tensor answers to: its own, and without the signature prefix or `:0` suffix."""
    name = str(detail["name"])
    bare = name.removeprefix(SIGNATURE_PREFIX).split(":")[0]
    return {name, bare}


def input_order(specs: tuple[TensorSpec, ...], details: list[dict]) -> list[int]:
    """For each spec, the position of its interpreter input: by name where every name matches, else by order."""
    if len(specs) != len(details):
        raise UserError(f"the .tflite model has {len(details)} input(s) but the package lists {len(specs)}")
    positions = []
    for spec in specs:
        found = [i for i, detail in enumerate(details) if spec.name in detail_names(detail)]
        if len(found) != 1:
            return list(range(len(specs)))  # litert-torch names inputs args_0 …, in forward()'s order
        positions.append(found[0])
    return positions


class TfliteSession(Session):
    """One interpreter per thread (an interpreter is not thread-safe), all made from the same model bytes.

    Inputs map to the interpreter's by name when the names match, else by position (recorded in
    `input_map`). Inputs and outputs that the model keeps in int8/uint8 while the specs say float
    are quantized and dequantized here with the model's own scale and zero point.
    """

    runtime = "tflite"

    def __init__(self, files, inputs, outputs, options, threads) -> None:
        super().__init__(files, inputs, outputs, options, threads)
        why = probe(self.options)
        if why:
            raise UnsupportedOnTarget(why)
        self._content = files[0].read_bytes()
        self._local = threading.local()
        interpreter = self._interpreter()
        details = interpreter.get_input_details()
        order = input_order(inputs, details)
        self._inputs = {spec.name: _port(details[position]) for spec, position in zip(inputs, order)}
        self.input_map = {spec.name: str(details[position]["name"]) for spec, position in zip(inputs, order)}
        out_details = interpreter.get_output_details()
        if len(out_details) != len(outputs):
            raise UserError(f"the .tflite model has {len(out_details)} output(s) but the package lists {len(outputs)}")
        self._outputs = {spec.name: _port(detail) for spec, detail in zip(outputs, out_details)}

    def _interpreter(self):
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            try:
                interpreter = interpreter_class()(model_content=self._content, num_threads=self.threads)
            except ValueError as error:
                first = (str(error).strip().splitlines() or ["unreadable"])[0]
                raise UserError(f"{self.files[0]} is not a valid .tflite model: {first}") from None
            interpreter.allocate_tensors()
            self._local.interpreter = interpreter
            # this thread's interpreter's input shapes, kept here: asking LiteRT for its details costs per call
            self._local.shapes = {detail["index"]: tuple(detail["shape"]) for detail in interpreter.get_input_details()}
        return interpreter

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self._interpreter()
        current = self._local.shapes
        values = {}
        resized = False
        for name, port in self._inputs.items():
            value = _quantize(feeds[name], port) if port.quantized and feeds[name].dtype.kind == "f" else feeds[name]
            if value.dtype.kind in "iu" and port.dtype.kind in "iu" and value.dtype != port.dtype:
                value = _narrow(name, value, port.dtype)  # LiteRT converts int64 inputs (token ids) to int32
            if tuple(value.shape) != current[port.index]:
                interpreter.resize_tensor_input(port.index, list(value.shape), strict=False)
                current[port.index] = tuple(value.shape)
                resized = True
            values[port.index] = value
        if resized:
            interpreter.allocate_tensors()
        for index, value in values.items():
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        results = {}
        for spec in self.outputs:
            port = self._outputs[spec.name]
            value = interpreter.get_tensor(port.index)
            results[spec.name] = _dequantize(value, port) if port.quantized and spec.dtype.startswith("float") else value
        return results


def _quantize(value: np.ndarray, port: Port) -> np.ndarray:
    info = np.iinfo(port.dtype)
    scaled = np.round(value / port.scale) + port.zero_point
    return np.clip(scaled, info.min, info.max).astype(port.dtype)


def _narrow(name: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """An int feed in the narrower int type the .tflite takes; values that do not fit are the caller's error."""
    info = np.iinfo(dtype)
    if value.size and (value.min() < info.min or value.max() > info.max):
        raise UserError(f"input '{name}': values {value.min()}..{value.max()} do not fit the model's {dtype}")
    return value.astype(dtype)


def _dequantize(value: np.ndarray, port: Port) -> np.ndarray:
    return ((value.astype(np.float32) - port.zero_point) * port.scale).astype(np.float32)
