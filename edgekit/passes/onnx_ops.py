"""ONNX operators as torch functions, for onnx-to-torch.

Each builder reads one node once — its attributes and the inputs that must be constants (a
Reshape's shape, a Slice's bounds) — and returns the function the module's forward calls with
the node's inputs (None where an optional input is absent). Shapes are static when the module
runs (torch.export specialises them), so builders may read `x.shape` as Python ints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.errors import UnsupportedOnTarget

OpFn = Callable[..., Any]
DOMAINS = ("", "ai.onnx")  # the operator sets the table covers

# ONNX TensorProto element type → torch dtype
TORCH_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
                9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


@dataclass(frozen=True, slots=True)
class Node:
    """One ONNX node as a builder sees it."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    constants: dict[str, np.ndarray]  # value name → value, for every constant of the graph
    opset: int

    def where(self) -> str:
        return f"{self.op_type} node '{self.name}'"

    def unsupported(self, why: str) -> UnsupportedOnTarget:
        return UnsupportedOnTarget(f"onnx-to-torch: {self.where()}: {why}")

    def has(self, index: int) -> bool:
        return index < len(self.inputs) and bool(self.inputs[index])

    def const(self, index: int, default: Any = None) -> Any:
        """The value of input `index` as numpy, `default` where the input is absent; refuses a computed one."""
        if not self.has(index):
            return default
        name = self.inputs[index]
        if name not in self.constants:
            raise self.unsupported(f"input {index} ('{name}') must be a constant with static shapes, "
                                   "but it is computed at run time")
        return self.constants[name]

    def ints(self, index: int, attr: str | None = None, default: Sequence[int] | None = None) -> list[int] | None:
        """An int list given as attribute `attr` (older opsets) or as constant input `index`."""
        if attr is not None and attr in self.attrs:
            return [int(v) for v in self.attrs[attr]]
        value = self.const(index)
        return default if value is None else [int(v) for v in np.asarray(value).reshape(-1)]

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value


Builder = Callable[[Node], OpFn]
OPS: dict[str, Builder] = {}
STATIC_INPUTS: dict[str, tuple[int, ...]] = {}  # op → input positions read at build time (not run-time tensors)


def op(*names: str, static: tuple[int, ...] = ()) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        for name in names:
            OPS[name] = builder
            STATIC_INPUTS[name] = static
        return builder
    return register


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- elementwise ------------------------------------------------------------------------------

UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Neg": torch.neg, "Abs": torch.abs, "Erf": torch.erf,
    "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sin": torch.sin, "Cos": torch.cos,
    "Not": torch.logical_not, "Sign": torch.sign, "Softsign": F.softsign, "Softplus": F.softplus,
    "IsNaN": torch.isnan, "Mish": F.mish, "HardSwish": F.hardswish, "Identity": lambda x: x,
}
BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow, "Equal": torch.eq, "Less": torch.lt,
    "Greater": torch.gt, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge, "And": torch.logical_and,
    "Or": torch.logical_or, "Xor": torch.logical_xor,
}


@op(*UNARY)
def _unary(node: Node) -> OpFn:
    return UNARY[node.op_type]


@op(*BINARY)
def _binary(node: Node) -> OpFn:
    return BINARY[node.op_type]


@op("Div")
def _div(node: Node) -> OpFn:
    def div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.div(a, b) if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")
    return div


@op("Mod")
def _mod(node: Node) -> OpFn:
    return torch.fmod if node.attr("fmod", 0) else torch.remainder


@op("Max", "Min", "Sum", "Mean")
def _variadic(node: Node) -> OpFn:
    pairwise = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}[node.op_type]

    def reduce(*xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = pairwise(out, x)
        return out / len(xs) if node.op_type == "Mean" else out
    return reduce


@op("Where")
def _where(node: Node) -> OpFn:
    return torch.where


@op("PRelu")
def _prelu(node: Node) -> OpFn:
    return lambda x, slope: torch.where(x >= 0, x, x * slope)


@op("LeakyRelu")
def _leaky_relu(node: Node) -> OpFn:
    alpha = float(node.attr("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


@op("Elu")
def _elu(node: Node) -> OpFn:
    alpha = float(node.attr("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


@op("Selu")
def _selu(node: Node) -> OpFn:
    alpha, gamma = float(node.attr("alpha", 1.67326319217681884765625)), float(node.attr("gamma", 1.05070102214813232421875))
    return lambda x: gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("HardSigmoid")
def _hard_sigmoid(node: Node) -> OpFn:
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)


@op("Gelu")
def _gelu(node: Node) -> OpFn:
    approximate = node.attr("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@op("Clip", static=(1, 2))
def _clip(node: Node) -> OpFn:
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
    else:
        low, high = node.const(1), node.const(2)
    low = None if low is None else float(np.asarray(low))
    high = None if high is None else float(np.asarray(high))
    return lambda x, *_: torch.clamp(x, low, high)


@op("Cast")
def _cast(node: Node) -> OpFn:
    dtype = TORCH_DTYPES.get(int(node.attr("to")))
    if dtype is None:
        raise node.unsupported(f"cast to ONNX element type {node.attr('to')}")
    return lambda x: x.to(dtype)


@op("CastLike")
def _cast_like(node: Node) -> OpFn:
    return lambda x, like: x.to(like.dtype)


# --- shapes and indexing -------------------------------------------------------------------------

@op("Reshape", static=(1,))
def _reshape(node: Node) -> OpFn:
    shape = node.ints(1, "shape")
    allow_zero = bool(node.attr("allowzero", 0))

    def reshape(x: torch.Tensor, *_: Any) -> torch.Tensor:
        dims = [x.shape[i] if d == 0 and not allow_zero else d for i, d in enumerate(shape)]
        return torch.reshape(x, dims)
    return reshape


@op("Flatten")
def _flatten(node: Node) -> OpFn:
    axis = int(node.attr("axis", 1))

    def flatten(x: torch.Tensor) -> torch.Tensor:
        at = _axis(axis, x.dim())
        return torch.reshape(x, (math.prod(x.shape[:at]), math.prod(x.shape[at:])))
    return flatten


@op("Squeeze", static=(1,))
def _squeeze(node: Node) -> OpFn:
    axes = node.ints(1, "axes")

    def squeeze(x: torch.Tensor, *_: Any) -> torch.Tensor:
        if axes is None:
            return torch.squeeze(x)
        return torch.squeeze(x, tuple(_axis(a, x.dim()) for a in axes))
    return squeeze


@op("Unsqueeze", static=(1,))
def _unsqueeze(node: Node) -> OpFn:
    axes = node.ints(1, "axes")
    if axes is None:
        raise node.unsupported("no axes")

    def unsqueeze(x: torch.Tensor, *_: Any) -> torch.Tensor:
        rank = x.dim() + len(axes)
        for axis in sorted(_axis(a, rank) for a in axes):
            x = torch.unsqueeze(x, axis)
        return x
    return unsqueeze


@op("Transpose")
def _transpose(node: Node) -> OpFn:
    perm = node.attr("perm")
    return lambda x: torch.permute(x, list(perm) if perm is not None else list(range(x.dim() - 1, -1, -1)))


@op("Concat")
def _concat(node: Node) -> OpFn:
    axis = int(node.attr("axis"))
    return lambda *xs: torch.cat([x for x in xs if x is not None], dim=axis)


@op("Split", static=(1,))
def _split(node: Node) -> OpFn:
    axis = int(node.attr("axis", 0))
    sizes = node.ints(1, "split")
    count = len(node.outputs)

    def split(x: torch.Tensor, *_: Any) -> tuple[torch.Tensor, ...]:
        length = x.shape[_axis(axis, x.dim())]
        chunks = sizes or [math.ceil(length / count)] * (count - 1) + [length - math.ceil(length / count) * (count - 1)]
        return tuple(torch.split(x, list(chunks), dim=axis))
    return split


@op("Slice", static=(1, 2, 3, 4))
def _slice(node: Node) -> OpFn:
    starts, ends = node.ints(1, "starts"), node.ints(2, "ends")
    axes = node.ints(3, "axes")
    steps = node.ints(4, default=None) or [1] * len(starts)

    def slice_(x: torch.Tensor, *_: Any) -> torch.Tensor:
        for axis, start, end, step in zip(axes or range(len(starts)), starts, ends, steps):
            axis = _axis(axis, x.dim())
            size = x.shape[axis]
            if step < 0:  # walk the flipped axis forwards
                start = min(max(start + size if start < 0 else start, 0), size - 1)
                end = min(max(end + size if end < 0 else end, -1), size - 1)
                x = torch.flip(x, [axis])
                start, end, step = size - 1 - start, size - 1 - end, -step
            else:
                start = min(max(start + size if start < 0 else start, 0), size)
                end = min(max(end + size if end < 0 else end, 0), size)
            index = [slice(None)] * x.dim()
            index[axis] = slice(start, max(end, start), step)
            x = x[tuple(index)]
        return x
    return slice_


@op("Gather")
def _gather(node: Node) -> OpFn:
    axis = int(node.attr("axis", 0))

    def gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        at = _axis(axis, x.dim())
        size = x.shape[at]
        flat = indices.reshape(-1).to(torch.int64)
        flat = torch.where(flat < 0, flat + size, flat)
        picked = torch.index_select(x, at, flat)
        return picked.reshape(*x.shape[:at], *indices.shape, *x.shape[at + 1:])
    return gather


@op("Expand", static=(1,))
def _expand(node: Node) -> OpFn:
    shape = node.ints(1)
    return lambda x, *_: torch.broadcast_to(x, np.broadcast_shapes(tuple(x.shape), tuple(shape)))


@op("Tile", static=(1,))
def _tile(node: Node) -> OpFn:
    repeats = node.ints(1)
    return lambda x, *_: x.repeat(*repeats)


@op("Shape")
def _shape(node: Node) -> OpFn:
    start, end = node.attr("start", 0), node.attr("end")
    return lambda x: torch.tensor(list(x.shape)[start:end], dtype=torch.int64)


@op("Size")
def _size(node: Node) -> OpFn:
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64)


@op("ConstantOfShape", static=(0,))
def _constant_of_shape(node: Node) -> OpFn:
    shape = node.ints(0)
    value = node.attr("value")
    fill = np.zeros(1, np.float32) if value is None else value
    return lambda *_: torch.from_numpy(np.full(shape, fill.reshape(-1)[0], fill.dtype))


@op("Pad", static=(1, 2, 3))
def _pad(node: Node) -> OpFn:
    pads = node.ints(1, "pads")
    value = node.attr("value", 0.0) if node.opset < 11 else float(np.asarray(node.const(2, 0.0)).reshape(-1)[0])
    axes = node.ints(3)
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(node.attr("mode", "constant"))
    if mode is None:
        raise node.unsupported(f"pad mode '{node.attr('mode')}'")

    def pad(x: torch.Tensor, *_: Any) -> torch.Tensor:
        rank = x.dim()
        chosen = [_axis(a, rank) for a in axes] if axes else list(range(rank))
        begins, ends = [0] * rank, [0] * rank
        for i, axis in enumerate(chosen):
            begins[axis], ends[axis] = pads[i], pads[len(chosen) + i]
        first = next((axis for axis in range(rank) if begins[axis] or ends[axis]), None)
        if first is None:
            return x
        flat = _torch_pad(begins[first:], ends[first:])
        if mode == "constant":
            return F.pad(x, flat, value=value)
        return F.pad(x, flat, mode=mode)
    return pad


@op("DepthToSpace", "SpaceToDepth")
def _depth_space(node: Node) -> OpFn:
    block = int(node.attr("blocksize"))
    if node.op_type == "SpaceToDepth":
        def space_to_depth(x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            x = x.reshape(n, c, h // block, block, w // block, block).permute(0, 3, 5, 1, 2, 4)
            return x.reshape(n, c * block * block, h // block, w // block)
        return space_to_depth
    crd = node.attr("mode", "DCR") == "CRD"

    def depth_to_space(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if crd:
            return F.pixel_shuffle(x, block)
        x = x.reshape(n, block, block, c // (block * block), h, w).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(n, c // (block * block), h * block, w * block)
    return depth_to_space


# --- reductions --------------------------------------------------------------------------------

REDUCTIONS: dict[str, Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]] = {
    "ReduceSum": lambda x, d, k: torch.sum(x, d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim, keepdim=keep)
    return x


@op(*REDUCTIONS, static=(1,))
def _reduce(node: Node) -> OpFn:
    axes_from_input = node.op_type == "ReduceSum" and node.opset >= 13 or node.opset >= 18
    axes = node.ints(1) if axes_from_input else node.attr("axes")
    keep = bool(node.attr("keepdims", 1))
    noop = bool(node.attr("noop_with_empty_axes", 0))
    reduce = REDUCTIONS[node.op_type]

    def reduced(x: torch.Tensor, *_: Any) -> torch.Tensor:
        if not axes and noop:
            return x
        dims = tuple(_axis(a, x.dim()) for a in axes) if axes else tuple(range(x.dim()))
        return reduce(x, dims, keep)
    return reduced


@op("ArgMax", "ArgMin")
def _arg(node: Node) -> OpFn:
    axis, keep = int(node.attr("axis", 0)), bool(node.attr("keepdims", 1))
    last = bool(node.attr("select_last_index", 0))
    pick = torch.argmax if node.op_type == "ArgMax" else torch.argmin

    def arg(x: torch.Tensor) -> torch.Tensor:
        at = _axis(axis, x.dim())
        if not last:
            return pick(x, at, keepdim=keep)
        return x.shape[at] - 1 - pick(torch.flip(x, [at]), at, keepdim=keep)
    return arg


@op("Softmax", "LogSoftmax")
def _softmax(node: Node) -> OpFn:
    legacy = node.opset < 13  # softmax over the input coerced to 2-D at `axis`
    axis = int(node.attr("axis", 1 if legacy else -1))
    apply = torch.softmax if node.op_type == "Softmax" else torch.log_softmax

    def softmax(x: torch.Tensor) -> torch.Tensor:
        if not legacy:
            return apply(x, axis)
        at = _axis(axis, x.dim())
        flat = x.reshape(math.prod(x.shape[:at]), math.prod(x.shape[at:]))
        return apply(flat, 1).reshape(x.shape)
    return softmax


@op("TopK", static=(1,))
def _topk(node: Node) -> OpFn:
    k = int(node.attr("k")) if node.opset < 10 else int(np.asarray(node.const(1)).reshape(-1)[0])
    axis, largest, ordered = int(node.attr("axis", -1)), bool(node.attr("largest", 1)), bool(node.attr("sorted", 1))
    return lambda x, *_: tuple(torch.topk(x, k, axis, largest, ordered))


@op("CumSum", static=(1,))
def _cumsum(node: Node) -> OpFn:
    axis = int(np.asarray(node.const(1)).reshape(-1)[0])
    exclusive, reverse = bool(node.attr("exclusive", 0)), bool(node.attr("reverse", 0))

    def cumsum(x: torch.Tensor, *_: Any) -> torch.Tensor:
        at = _axis(axis, x.dim())
        y = torch.flip(x, [at]) if reverse else x
        out = torch.cumsum(y, at)
        if exclusive:
            out = out - y
        return torch.flip(out, [at]) if reverse else out
    return cumsum


# --- linear algebra and normalisation ------------------------------------------------------------

@op("MatMul")
def _matmul(node: Node) -> OpFn:
    return torch.matmul


@op("Einsum")
def _einsum(node: Node) -> OpFn:
    equation = node.attr("equation")
    return lambda *xs: torch.einsum(equation, *xs)


@op("Gemm")
def _gemm(node: Node) -> OpFn:
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))

    def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        a = a.t() if trans_a else a
        if alpha == 1.0 and (beta == 1.0 or c is None):  # the linear pattern delegates recognise
            return F.linear(a, b if trans_b else b.t(), c)
        out = alpha * torch.matmul(a, b.t() if trans_b else b)
        return out if c is None else out + beta * c
    return gemm


@op("BatchNormalization")
def _batch_norm(node: Node) -> OpFn:
    eps = float(node.attr("epsilon", 1e-5))
    if len([o for o in node.outputs if o]) > 1:
        raise node.unsupported("training-mode outputs (running mean/var)")
    return lambda x, scale, bias, mean, var: F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)


@op("InstanceNormalization")
def _instance_norm(node: Node) -> OpFn:
    eps = float(node.attr("epsilon", 1e-5))
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps)


@op("LayerNormalization")
def _layer_norm(node: Node) -> OpFn:
    axis, eps = int(node.attr("axis", -1)), float(node.attr("epsilon", 1e-5))
    if len([o for o in node.outputs if o]) > 1:
        raise node.unsupported("mean / inverse std-dev outputs")

    def layer_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        shape = tuple(x.shape[_axis(axis, x.dim()):])
        return F.layer_norm(x, shape, torch.broadcast_to(scale, shape),
                            None if bias is None else torch.broadcast_to(bias, shape), eps)
    return layer_norm


# --- convolution and pooling ---------------------------------------------------------------------

def _spatial(node: Node, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(strides, dilations, pad begins, pad ends) of a conv/pool node; auto_pad SAME_* is resolved per call."""
    rank = len(kernel)
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    pads = list(node.attr("pads", [0] * (2 * rank)))
    return strides, dilations, pads[:rank], pads[rank:]


def _same_pads(node: Node, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(total - small if node.attr("auto_pad") == "SAME_LOWER" else small)
        ends.append(small if node.attr("auto_pad") == "SAME_LOWER" else total - small)
    return begins, ends


def _pads(node: Node, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
          begins: list[int], ends: list[int]) -> tuple[list[int], list[int]]:
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(node, x.shape[2:], kernel, strides, dilations)
    if auto == "VALID":
        return [0] * len(kernel), [0] * len(kernel)
    return begins, ends


def _torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX begin/end pads of the spatial axes as F.pad's list (last axis first)."""
    flat: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends)):
        flat += [begin, end]
    return flat


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@op("Conv")
def _conv(node: Node) -> OpFn:
    group = int(node.attr("group", 1))

    def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        kernel = list(weight.shape[2:])
        strides, dilations, begins, ends = _spatial(node, kernel)
        begins, ends = _pads(node, x, kernel, strides, dilations, begins, ends)
        padding: list[int] | int = begins
        if begins != ends:
            x, padding = F.pad(x, _torch_pad(begins, ends)), 0
        return CONV[len(kernel)](x, weight, bias, strides, padding, dilations, group)
    return conv


@op("ConvTranspose")
def _conv_transpose(node: Node) -> OpFn:
    group = int(node.attr("group", 1))
    auto = node.attr("auto_pad", "NOTSET")
    wanted = node.attr("output_shape")

    def pads(x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int], extra: list[int],
             begins: list[int], ends: list[int]) -> tuple[list[int], list[int]]:
        """The pads, from output_shape or auto_pad where given (ONNX's ConvTranspose rule)."""
        if wanted is None and auto not in ("SAME_UPPER", "SAME_LOWER"):
            return begins, ends
        sizes = list(x.shape[2:])
        outputs = list(wanted)[-len(kernel):] if wanted is not None else [size * s for size, s in zip(sizes, strides)]
        totals = [s * (size - 1) + e + (k - 1) * d + 1 - out
                  for size, s, e, k, d, out in zip(sizes, strides, extra, kernel, dilations, outputs)]
        if any(total < 0 for total in totals):
            raise node.unsupported(f"output_shape {list(wanted or outputs)} larger than the convolution gives")
        if auto == "SAME_UPPER":
            return [t // 2 for t in totals], [t - t // 2 for t in totals]
        return [t - t // 2 for t in totals], [t // 2 for t in totals]

    def conv_transpose(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        kernel = list(weight.shape[2:])
        strides, dilations, begins, ends = _spatial(node, kernel)
        extra = list(node.attr("output_padding", [0] * len(kernel)))
        begins, ends = pads(x, kernel, strides, dilations, extra, begins, ends)
        if begins == ends:
            return CONV_TRANSPOSE[len(kernel)](x, weight, bias, strides, begins, extra, group, dilations)
        y = CONV_TRANSPOSE[len(kernel)](x, weight, bias, strides, 0, extra, group, dilations)
        index = [slice(None), slice(None)] + [slice(b, size - e) for b, e, size in zip(begins, ends, y.shape[2:])]
        return y[tuple(index)]
    return conv_transpose


MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@op("MaxPool", "AveragePool")
def _pool(node: Node) -> OpFn:
    kernel = list(node.attr("kernel_shape"))
    ceil = bool(node.attr("ceil_mode", 0))
    include_pad = bool(node.attr("count_include_pad", 0))
    if len([o for o in node.outputs if o]) > 1:
        raise node.unsupported("the Indices output")
    strides, dilations, begins, ends = _spatial(node, kernel)
    if node.op_type == "AveragePool" and any(d != 1 for d in dilations):
        raise node.unsupported("dilated average pooling")

    def pool(x: torch.Tensor) -> torch.Tensor:
        low, high = _pads(node, x, kernel, strides, dilations, begins, ends)
        symmetric = low == high and all(2 * p <= k for p, k in zip(low, kernel))
        padding: list[int] | int = low if symmetric else 0
        if node.op_type == "MaxPool":
            if not symmetric:
                x = F.pad(x, _torch_pad(low, high), value=float("-inf"))
            return MAX_POOL[len(kernel)](x, kernel, strides, padding, dilations, ceil_mode=ceil)
        if not symmetric:
            if not include_pad:
                raise node.unsupported("asymmetric pads with count_include_pad=0")
            x = F.pad(x, _torch_pad(low, high))
        return AVG_POOL[len(kernel)](x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include_pad)
    return pool


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node: Node) -> OpFn:
    if node.op_type == "GlobalAveragePool":
        return lambda x: torch.mean(x, tuple(range(2, x.dim())), keepdim=True)
    return lambda x: torch.amax(x, tuple(range(2, x.dim())), keepdim=True)


RESIZE_MODES = {  # (mode, coordinate transformation, nearest mode) → F.interpolate's mode and align_corners
    ("nearest", "asymmetric", "floor"): ("nearest", None),
    ("linear", "half_pixel", None): ("linear", False),
    ("linear", "pytorch_half_pixel", None): ("linear", False),
    ("linear", "align_corners", None): ("linear", True),
    ("cubic", "half_pixel", None): ("bicubic", False),
    ("cubic", "align_corners", None): ("bicubic", True),
}
LINEAR_BY_RANK = {1: "linear", 2: "bilinear", 3: "trilinear"}


@op("Resize", "Upsample", static=(1, 2, 3))
def _resize(node: Node) -> OpFn:
    mode = node.attr("mode", "nearest")
    if node.op_type == "Upsample" or node.opset < 11:
        transform, nearest = "asymmetric", "floor"
        scales, sizes = node.const(1), None
    else:
        transform = node.attr("coordinate_transformation_mode", "half_pixel")
        nearest = node.attr("nearest_mode", "round_prefer_floor")
        scales, sizes = node.const(2), node.const(3)
    key = (mode, transform, nearest if mode == "nearest" else None)
    if key not in RESIZE_MODES or (mode == "cubic" and float(node.attr("cubic_coeff_a", -0.75)) != -0.75):
        raise node.unsupported(f"mode {mode}, coordinate_transformation_mode {transform}"
                               + (f", nearest_mode {nearest}" if mode == "nearest" else ""))
    if node.attr("antialias", 0) or node.attr("axes") is not None:
        raise node.unsupported("antialias / axes")
    torch_mode, align = RESIZE_MODES[key]

    def resize(x: torch.Tensor, *_: Any) -> torch.Tensor:
        if sizes is not None and np.asarray(sizes).size:
            out = [int(s) for s in np.asarray(sizes).reshape(-1)[2:]]
        else:
            factors = [float(s) for s in np.asarray(scales).reshape(-1)]
            if factors[:2] != [1.0, 1.0]:
                raise node.unsupported("scaling the batch or channel axis")
            out = [int(math.floor(size * f)) for size, f in zip(x.shape[2:], factors[2:])]
        chosen = LINEAR_BY_RANK[x.dim() - 2] if torch_mode == "linear" else torch_mode
        return F.interpolate(x, size=out, mode=chosen, align_corners=align)
    return resize


@op("Dropout")
def _dropout(node: Node) -> OpFn:
    if len([o for o in node.outputs if o]) > 1:
        raise node.unsupported("the mask output")
    return lambda x, *_: x
