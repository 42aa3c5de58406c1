"""tflite-to-onnx: a .tflite made elsewhere (MediaPipe, the TFLite converter) → ONNX with tflite2onnx.

The source is first made plain (litert_quantizer.plain_float_model): fp16 weights stored behind
DEQUANTIZE ops are folded to fp32 constants, old-schema operator codes get their `builtin_code`, and
MediaPipe's custom transposed conv and HARD_SWISH are spelled in ops tflite2onnx has (tflite_rewrite).
tflite2onnx turns NHWC activations into NCHW, graph inputs and outputs included; the model keeps
the source's io specs, so each graph input and output whose layout changed gets a Transpose at the
graph's edge, and every input and output is renamed to its spec's name: the ONNX model takes and
gives exactly what the .tflite did. tflite2onnx writes opset 11; it is raised to 13 here (ONNX's
version converter), since the planner inserts upgrade-onnx-opset only for ONNX sources.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UnsupportedOnTarget
from edgekit.ingest.onnx import onnx_files, opset_of
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs
from edgekit.spec import TensorSpec

BACKEND = "tflite2onnx"
OPSET = 13  # tflite2onnx writes 11; QDQ quantizers downstream need 13 and the planner upgrades only ONNX sources


def _modules():
    try:
        import onnx
        import tflite
        import tflite2onnx.model
        from tflite2onnx.op.common import OpFactory
    except ImportError:
        raise MissingBackend(BACKEND, "tflite", "converting a .tflite model to ONNX") from None
    return onnx, tflite, tflite2onnx.model, OpFactory


def _first_line(error: BaseException) -> str:
    text = " ".join(str(part) for part in error.args) if error.args else ""
    return (text.strip().splitlines() or [type(error).__name__])[0]


def _unsupported_ops(flat, tflite, registry) -> list[str]:
    """Names of the model's operators tflite2onnx has no converter for (custom ops by their custom code)."""
    graph = flat.Subgraphs(0)
    names = []
    for i in range(graph.OperatorsLength()):
        code = flat.OperatorCodes(graph.Operators(i).OpcodeIndex())
        builtin = code.BuiltinCode()
        if builtin in registry:
            continue
        if builtin == tflite.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            name = custom.decode("utf-8", "replace") if custom else "CUSTOM"
        else:
            name = tflite.opcode2name(builtin) if builtin in tflite.BUILTIN_OPCODE2NAME else f"#{builtin}"
        if name not in names:
            names.append(name)
    return names


def _refusal(error: BaseException, source: str, tflite) -> str:
    """One line: the op tflite2onnx was converting when it failed (from the traceback) and why."""
    import traceback

    from tflite2onnx.op.common import Operator

    op_name = None
    tb = error.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, Operator):
            try:
                code = candidate.model.OperatorCodes(candidate.tflite.OpcodeIndex()).BuiltinCode()
                op_name = tflite.opcode2name(code)
            except Exception:  # noqa: BLE001 - the name is a courtesy
                op_name = candidate.type
        tb = tb.tb_next
    reason = _first_line(error)
    if isinstance(error, AssertionError):
        frames = traceback.extract_tb(error.__traceback__)
        line = (frames[-1].line or "").strip() if frames else ""
        reason = f"{reason} ({line})" if error.args else line or "an assertion failed"
    else:
        reason = f"{type(error).__name__}: {reason}"
    what = f"op {op_name} of {source}" if op_name else source
    return f"tflite2onnx cannot convert {what}: {reason}"


def _rename(graph, old: str, new: str) -> None:
    """Rename value `old` to `new` everywhere in `graph` (node inputs and outputs, value infos)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def _free_name(graph, base: str) -> str:
    used = {name for node in graph.node for name in [*node.input, *node.output]}
    used |= {v.name for v in [*graph.input, *graph.output, *graph.value_info]} | {i.name for i in graph.initializer}
    name, n = base, 0
    while name in used:
        n += 1
        name = f"{base}_{n}"
    return name


def _set_shape(value, spec: TensorSpec) -> None:
    dims = value.type.tensor_type.shape.dim
    del dims[:]
    for d in spec.shape:
        dim = dims.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = str(d)


def _restore_io(proto, onnx, layouts_in, layouts_out, model: Model) -> None:
    """Give the graph the source's io names, shapes and layouts (Transposes where tflite2onnx changed them)."""
    graph = proto.graph
    helper = onnx.helper
    for side, values, specs in (("input", graph.input, model.inputs), ("output", graph.output, model.outputs)):
        if len(values) != len(specs):
            raise UnsupportedOnTarget(f"tflite-to-onnx: the ONNX model has {len(values)} {side}(s) "
                                      f"but the .tflite has {len(specs)}")
    # free the spec names first, so that renaming one port cannot capture another
    wanted = {spec.name for spec in [*model.inputs, *model.outputs]}
    for value in [*graph.input, *graph.output]:
        if value.name in wanted:
            temporary = _free_name(graph, value.name + "__t2o")
            _rename(graph, value.name, temporary)
            for same in [*graph.input, *graph.output]:
                if same.name == value.name:
                    same.name = temporary
    front, back = [], []
    for value, perm, spec in zip(graph.input, layouts_in, model.inputs):
        if perm is None:
            _rename(graph, value.name, spec.name)
        else:  # the graph wants transpose(source, perm): feed the source's layout and transpose it here
            front.append(helper.make_node("Transpose", [spec.name], [value.name], perm=list(perm),
                                          name=_free_name(graph, f"{spec.name}_to_onnx_layout")))
        value.name = spec.name
        _set_shape(value, spec)
    for value, perm, spec in zip(graph.output, layouts_out, model.outputs):
        if perm is None:
            _rename(graph, value.name, spec.name)
        else:  # the graph gives transpose(source, perm): undo it
            inverse = sorted(range(len(perm)), key=lambda axis: perm[axis])
            back.append(helper.make_node("Transpose", [value.name], [spec.name], perm=inverse,
                                         name=_free_name(graph, f"{spec.name}_to_tflite_layout")))
        value.name = spec.name
        _set_shape(value, spec)
    nodes = [*front, *graph.node, *back]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # tflite2onnx's static shapes of inner tensors; ORT infers them again


def _spatial_output_shapes(proto, onnx) -> None:
    """tflite2onnx writes a ConvTranspose's output_shape as the whole NCHW shape; ONNX wants the spatial dims."""
    for node in proto.graph.node:
        if node.op_type != "ConvTranspose":
            continue
        attributes = {a.name: a for a in node.attribute}
        shape, kernel = attributes.get("output_shape"), attributes.get("kernel_shape")
        if shape is not None and kernel is not None and len(shape.ints) == len(kernel.ints) + 2:
            node.attribute.remove(shape)
            node.attribute.append(onnx.helper.make_attribute("output_shape", list(shape.ints)[2:]))


def _check_dtypes(proto, onnx, model: Model) -> None:
    import numpy as np

    for side, values, specs in (("input", proto.graph.input, model.inputs),
                                ("output", proto.graph.output, model.outputs)):
        for value, spec in zip(values, specs):
            got = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
            if got != spec.dtype:
                raise UnsupportedOnTarget(f"tflite-to-onnx: tflite2onnx made {side} '{spec.name}' {got}, "
                                          f"the .tflite has it {spec.dtype}")


def convert_tflite_to_onnx(model: Model, out: Path, ctx: Context) -> dict:
    """Write `model` (a .tflite) as ONNX at `out` with the source's io specs; returns meta for the result."""
    from edgekit.passes.litert_quantizer import plain_float_model

    onnx, tflite, t2o_model, OpFactory = _modules()
    source = model.path.name
    try:
        plain, folded = plain_float_model(model.path.read_bytes(), for_tflite2onnx=True)
    except (MissingBackend, UnsupportedOnTarget):
        raise
    except Exception as error:  # a flatbuffer the schema cannot read
        raise UnsupportedOnTarget(f"tflite-to-onnx cannot read {source}: {_first_line(error)}") from None
    plain_path = out.parent / "plain.tflite"
    plain_path.write_bytes(plain)
    flat = tflite.Model.GetRootAsModel(plain, 0)
    if flat.SubgraphsLength() != 1:
        raise UnsupportedOnTarget(f"tflite2onnx cannot convert {source}: it has {flat.SubgraphsLength()} "
                                  "subgraphs (control flow); ONNX gets one graph")
    missing = _unsupported_ops(flat, tflite, OpFactory.registry)
    if missing:
        raise UnsupportedOnTarget(f"tflite2onnx cannot convert op{'s' if len(missing) > 1 else ''} "
                                  f"{', '.join(missing)} of {source}")
    converter = t2o_model.Model(flat)
    try:
        with muted_logs("tflite2onnx"):
            converter.convert({})
    except Exception as error:  # asserts and NotImplementedErrors from its op converters
        raise UnsupportedOnTarget(_refusal(error, source, tflite)) from None
    graph = converter.graphes[0]

    def perm(tensor):
        layout = getattr(tensor, "layout", None)
        if layout is None or layout.source == layout.target:
            return None
        return tuple(layout.perm)

    proto = converter.onnx
    _spatial_output_shapes(proto, onnx)
    _restore_io(proto, onnx, [perm(t) for t in graph.inputs], [perm(t) for t in graph.outputs], model)
    _check_dtypes(proto, onnx, model)
    try:
        proto = _upgraded(proto, onnx, ctx)
        onnx.checker.check_model(proto)
    except Exception as error:
        raise UnsupportedOnTarget(f"tflite2onnx made an invalid ONNX model of {source}: {_first_line(error)}") from None
    onnx.save(proto, str(out))
    plain_path.unlink()
    return {"opset": opset_of(proto), "converter": f"{BACKEND} {_version()}", "fp16_weights_folded": folded}


def _upgraded(proto, onnx, ctx: Context):
    """`proto` at opset OPSET, or as it is (opset 11) where ONNX's version converter cannot adapt an op."""
    from onnx import version_converter

    if opset_of(proto) >= OPSET:
        return proto
    try:
        upgraded = version_converter.convert_version(proto, OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as error:
        ctx.logger.warning("tflite-to-onnx: kept opset %d, the version converter failed: %s",
                           opset_of(proto), _first_line(error))
        return proto
    return upgraded


def _version() -> str:
    from importlib.metadata import version

    return version(BACKEND)


class TfliteToOnnx(Pass):
    name = "tflite-to-onnx"
    accepts = frozenset({Format.TFLITE})
    produces = Format.ONNX
    tolerance = 1e-4
    conversion = True

    def run(self, model: Model, config: object, ctx: Context) -> Model:
        out = ctx.step_dir("tflite-to-onnx") / "model.onnx"
        meta = convert_tflite_to_onnx(model, out, ctx)
        files = onnx_files(out)
        return model.derive(format=Format.ONNX, files=files, meta={"content_hash": files_sha256(files), **meta})
